"""The CNN of Lindholm, Wahlström, Lindsten & Schön, *Machine Learning*, Example 6.3."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import _validate
from jaxcnn.models._blocks import model_conv_block
from jaxcnn.nn import AvgPool, Dense, Dropout, Flatten, MaxBlurPool, MaxPool

#: ``downsample`` -> the pool after a stride-1 conv2/conv3 (``"stride"``: the strided conv itself).
POOLS = {
    "max": lambda name: MaxPool(2, name=name),
    "avg": lambda name: AvgPool(2, name=name),
    "blur": lambda name: MaxBlurPool(2, 3, 2, name=name),
}


class LWLSCNN(nn.Module):
    """The digit classifier of LWLS Example 6.3: three conv layers, two dense layers.

    For ``(N, 28, 28, 1)`` digits (every layer ReLU but the last, all convs SAME):

    ========  ==============================  ===========  ==========
    layer     what                            output       parameters
    ========  ==============================  ===========  ==========
    conv1     4 filters 5x5x1, stride 1       28x28x4         104
    conv2     8 filters 5x5x4, stride 2       14x14x8         808
    conv3     12 filters 4x4x8, stride 2      7x7x12         1548
    flatten                                   588
    dense1    588 -> 200                      200          117800
    dense2    200 -> 10 (logits)              10             2010
    ========  ==============================  ===========  ==========

    122270 parameters in all. Input channels come from ``x`` (no option needed);
    other input sizes work, and change dense1's size.

    Attributes:
      num_classes: outputs of dense2 (10).
      filters: filters of conv1-3, ``(4, 8, 12)``.
      hidden: width of dense1 (200).
      dropout_rate: dropout before dense2 (0: none, the book's network).
      batch_norm: BatchNorm after every conv (the convs then have no bias).
      dtype: compute dtype (``None``: float32 parameters decide).
      downsample: how conv2 and conv3 halve the size: "stride" (the book's
        stride-2 convs), or a stride-1 conv (+BN, ReLU) then "max" (2x2 max
        pool), "avg" (2x2 average pool) or "blur" (Zhang's MaxBlurPool: 2x2
        max at stride 1, then a 3-tap binomial blur at stride 2). Same
        parameters and hidden shapes in all four.
      axis_name: the pmap/shard_map batch axis name for data-parallel training:
        BatchNorm averages its statistics and Dropout draws the global batch's
        mask over it, so the step equals single-device training on the global
        batch (give every device the same "dropout" key). ``None``: per device.

    Returns (``__call__(x, *, train=False)``): logits ``(N, num_classes)``.

    Reference: A. Lindholm, N. Wahlström, F. Lindsten, T. B. Schön, *Machine
    Learning: A First Course for Engineers and Scientists*, 2022, Example 6.3.
    """

    num_classes: int = 10
    filters: Sequence[int] = (4, 8, 12)
    hidden: int = 200
    dropout_rate: float = 0.0
    batch_norm: bool = False
    dtype: Any = None
    axis_name: Any = None
    downsample: str = "stride"
    head_name: ClassVar[str] = "dense2"

    @nn.compact
    def __call__(self, x: Any, *, train: bool = False) -> jnp.ndarray:
        pool = _validate.check_choice(self.downsample, "downsample", ("stride", *POOLS))
        for i, (f, k, s) in enumerate(zip(self.filters, (5, 5, 4), (1, 2, 2)), start=1):
            x = model_conv_block(self, x, i, f, k, train=train, strides=s if pool == "stride" else 1)
            if s > 1 and pool != "stride":
                x = POOLS[pool](name=f"pool{i}")(x)
        x = Flatten(name="flatten")(x)
        x = jax.nn.relu(Dense(self.hidden, dtype=self.dtype, name="dense1")(x))
        x = Dropout(self.dropout_rate, axis_name=self.axis_name, name="dropout")(x, deterministic=not train)
        return Dense(self.num_classes, dtype=self.dtype, name="dense2")(x)
