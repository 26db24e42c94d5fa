"""AlexNet (Krizhevsky, Sutskever & Hinton 2012), single-tower, with a width multiplier."""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import _validate
from jaxcnn.models._blocks import conv_block, scaled
from jaxcnn.nn import AdaptiveAvgPool, Dense, Dropout, Flatten, MaxPool

#: The paper's filters per conv (one tower): the default of :attr:`AlexNet.channels`.
PAPER_CHANNELS: tuple[int, int, int, int, int] = (96, 256, 384, 384, 256)
#: torchvision's ``alexnet`` (Krizhevsky 2014, "One weird trick..."): 61,100,840 parameters with 1000 classes.
TORCHVISION_CHANNELS: tuple[int, int, int, int, int] = (64, 192, 384, 256, 256)


def check_channels(channels: Any) -> tuple[int, ...]:
    """``channels`` as a tuple of 5 positive ints (conv1 ... conv5), or a ValueError/TypeError naming it."""
    if isinstance(channels, (str, bytes)) or not isinstance(channels, (tuple, list)):
        raise TypeError(
            f"channels must be a sequence of 5 ints (conv1 ... conv5 filters), got {_validate.fmt(channels)}"
        )
    if len(channels) != 5:
        raise ValueError(
            f"channels must have 5 entries (conv1 ... conv5 filters), got {_validate.fmt(channels)} with "
            f"{len(channels)}"
        )
    out = tuple(_validate.as_int(c, f"channels[{i}]") for i, c in enumerate(channels))
    if min(out) < 1:
        raise ValueError(f"channels must be positive filter counts, got {_validate.fmt(channels)}")
    return out


class AlexNet(nn.Module):
    """AlexNet as one tower: the first layer has 96 filters of 11x11x3 with stride 4.

    ==========  =====================================  ===========  ===========
    layer       what                                   224x224x3    parameters
    ==========  =====================================  ===========  ===========
    conv1       96 @ 11x11, stride 4, padding 2, ReLU  55x55x96          34944
    pool1       max 3x3 stride 2                       27x27x96
    conv2       256 @ 5x5, padding 2, ReLU             27x27x256        614656
    pool2       max 3x3 stride 2                       13x13x256
    conv3       384 @ 3x3, padding 1, ReLU             13x13x384        885120
    conv4       384 @ 3x3, padding 1, ReLU             13x13x384       1327488
    conv5       256 @ 3x3, padding 1, ReLU             13x13x256        884992
    pool5       max 3x3 stride 2                       6x6x256
    avgpool     adaptive average to 6x6                6x6x256
    dense1      dropout, 9216 -> 4096, ReLU            4096          37752832
    dense2      dropout, 4096 -> 4096, ReLU            4096          16781312
    head        4096 -> num_classes                    1000           4097000
    ==========  =====================================  ===========  ===========

    62,378,344 parameters with 1000 classes. The paper's two GPU towers are
    merged into one (the grouped conv2/4/5 become full convs) and its local
    response normalization is left out (``batch_norm=True`` puts BatchNorm
    after every conv instead). Padding follows torchvision (224x224 inputs;
    the paper's 224 only works out with 227 and no padding). The adaptive
    pool fixes dense1's input size whatever the image size.

    ``channels=TORCHVISION_CHANNELS`` (64, 192, 384, 256, 256) is torchvision's
    ``alexnet`` layer for layer, the same kernels, strides, paddings and
    classifier with narrower convs (61,100,840 parameters with 1000 classes):
    ``jaxcnn.interop.torch.from_torch("alexnet", sd, model_kwargs={"channels":
    TORCHVISION_CHANNELS})`` loads its checkpoints.

    ``small_inputs=True`` (CIFAR-size images): conv1 becomes 3x3, stride 1,
    padding 1, and the adaptive pool goes to 3x3 (32x32 inputs reach 3x3 after
    pool5 on their own).

    Attributes:
      num_classes: outputs (1000).
      width: multiplier of every conv's filters and of the hidden dense widths.
      channels: filters of conv1 ... conv5 before ``width``
        (:data:`PAPER_CHANNELS`; :data:`TORCHVISION_CHANNELS` for torchvision's).
      hidden: hidden dense width before ``width`` (4096).
      dropout_rate: dropout before dense1 and dense2 (0.5).
      batch_norm: BatchNorm after each conv.
      small_inputs: the small-image stem above.
      pool_size: output of the adaptive pool (``None``: 6, or 3 with small_inputs).
      dtype: compute dtype.
      axis_name: the pmap/shard_map batch axis name for data-parallel training:
        BatchNorm averages its statistics and Dropout draws the global batch's
        mask over it, so the step equals single-device training on the global
        batch (give every device the same "dropout" key). ``None``: per device.

    Returns (``__call__(x, *, train=False)``): logits ``(N, num_classes)``.

    Reference: Krizhevsky, Sutskever & Hinton, "ImageNet Classification with
    Deep Convolutional Neural Networks", NeurIPS 2012.
    """

    num_classes: int = 1000
    width: float = 1.0
    channels: tuple[int, ...] = PAPER_CHANNELS
    hidden: int = 4096
    dropout_rate: float = 0.5
    batch_norm: bool = False
    small_inputs: bool = False
    pool_size: Any = None
    dtype: Any = None
    axis_name: Any = None
    head_name: ClassVar[str] = "head"

    @nn.compact
    def __call__(self, x: Any, *, train: bool = False) -> jnp.ndarray:
        kw = dict(batch_norm=self.batch_norm, train=train, dtype=self.dtype, axis_name=self.axis_name)
        c = lambda n: scaled(n, self.width)  # noqa: E731
        c1, c2, c3, c4, c5 = check_channels(self.channels)
        if self.small_inputs:
            x = conv_block(x, c(c1), 3, padding=1, name="conv1", bn_name="bn1", **kw)
        else:
            x = conv_block(x, c(c1), 11, strides=4, padding=2, name="conv1", bn_name="bn1", **kw)
        x = MaxPool(3, strides=2, name="pool1")(x)
        x = conv_block(x, c(c2), 5, padding=2, name="conv2", bn_name="bn2", **kw)
        x = MaxPool(3, strides=2, name="pool2")(x)
        x = conv_block(x, c(c3), 3, padding=1, name="conv3", bn_name="bn3", **kw)
        x = conv_block(x, c(c4), 3, padding=1, name="conv4", bn_name="bn4", **kw)
        x = conv_block(x, c(c5), 3, padding=1, name="conv5", bn_name="bn5", **kw)
        x = MaxPool(3, strides=2, name="pool5")(x)
        pool_size = self.pool_size if self.pool_size is not None else (3 if self.small_inputs else 6)
        x = AdaptiveAvgPool(pool_size, name="avgpool")(x)
        x = Flatten(name="flatten")(x)
        for i in (1, 2):
            x = Dropout(self.dropout_rate, axis_name=self.axis_name, name=f"dropout{i}")(x, deterministic=not train)
            x = jax.nn.relu(Dense(c(self.hidden), dtype=self.dtype, name=f"dense{i}")(x))
        return Dense(self.num_classes, dtype=self.dtype, name="head")(x)
