"""MobileNetV2 (Sandler et al. 2018): inverted residual blocks of depthwise-separable convolutions.

The layout and parameter names are torchvision's ``mobilenet_v2``, so a
torchvision ``state_dict`` key ``features.3.conv.1.0.weight`` is the Flax path
``params["features"]["3"]["conv"]["1"]["0"]["kernel"]`` (kernels in
``(*window, I, O)`` layout): ``features.0`` the stem (conv 3x3 stride 2 ->
BN -> ReLU6), ``features.1``-``features.17`` the inverted residual blocks,
``features.18`` the 1x1 conv to ``last_channel`` -> BN -> ReLU6, then global
average pooling and ``classifier`` (``0`` dropout, ``1`` the dense head). With
``num_classes=1000``: 3,504,872 parameters, torchvision's number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import _validate
from jaxcnn.models._blocks import conv_block
from jaxcnn.nn import Dropout, GlobalAvgPool

#: torchvision's setting: (expansion t, output channels c, repeats n, first stride s) per stage.
SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # torchvision's kaiming_normal_(fan_out)


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of ``divisor``, never more than 10% down."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn(
    module: nn.Module,
    x: Any,
    features: int,
    kernel: int,
    *,
    train: bool,
    strides: int = 1,
    groups: int = 1,
    act: bool = True,
    names: tuple[str, str] = ("0", "1"),
) -> jnp.ndarray:
    """torchvision's conv (no bias, padding ``kernel // 2``, its init) -> BatchNorm -> ReLU6 (if ``act``).

    The conv and the BatchNorm are :func:`~jaxcnn.models._blocks.conv_block`'s,
    named ``names`` inside ``module`` (call it in ``module``'s ``@nn.compact``
    method), with ``module``'s ``dtype`` and ``axis_name``. Returns
    ``(N, H / strides, W / strides, features)``.
    """
    return conv_block(
        x,
        features,
        kernel,
        strides=strides,
        padding=kernel // 2,
        groups=groups,
        use_bias=False,
        kernel_init=conv_init,
        batch_norm=True,
        train=train,
        activation=jax.nn.relu6 if act else None,
        dtype=module.dtype,
        axis_name=module.axis_name,
        name=names[0],
        bn_name=names[1],
    )


class ConvBNAct(nn.Module):
    """torchvision's ``Conv2dNormActivation``: ``0`` conv (no bias, padding k // 2) -> ``1`` BatchNorm -> ReLU6 (if ``act``)."""

    features: int
    kernel: int = 3
    strides: int = 1
    groups: int = 1
    act: bool = True
    dtype: Any = None
    axis_name: Any = None

    @nn.compact
    def __call__(self, x: Any, *, train: bool) -> jnp.ndarray:
        return _conv_bn(
            self, x, self.features, self.kernel, train=train, strides=self.strides, groups=self.groups, act=self.act
        )


class _BlockFields(nn.Module):
    """The fields an inverted residual block and its ``conv`` body share (one list)."""

    features: int
    strides: int
    expand: int
    dtype: Any = None
    axis_name: Any = None


class InvertedResidual(_BlockFields):
    """Expand 1x1 (``conv.0``, skipped when ``expand == 1``) -> depthwise 3x3 -> project 1x1 -> BN, + identity.

    Names as torchvision: with expansion, ``conv.0`` (expand), ``conv.1``
    (depthwise), ``conv.2`` (project conv), ``conv.3`` (its BN); without,
    ``conv.0`` (depthwise), ``conv.1``, ``conv.2``. The identity is added when
    the stride is 1 and the channel count is kept.

    Fields: ``features``, ``strides``, ``expand`` (hidden channels = input
    channels x ``expand``), ``dtype``, ``axis_name``.

    Returns (``__call__(x, *, train)``): ``(N, H / s, W / s, features)``.
    """

    @nn.compact
    def __call__(self, x: Any, *, train: bool) -> jnp.ndarray:
        body = _Body(self.features, self.strides, self.expand, self.dtype, self.axis_name, name="conv")
        return body(x, train=train) + (x if self.strides == 1 and x.shape[-1] == self.features else 0)


class _Body(_BlockFields):
    """An :class:`InvertedResidual`'s ``conv`` (torchvision's ``Sequential``): its layers, with its fields."""

    @nn.compact
    def __call__(self, x: Any, *, train: bool) -> jnp.ndarray:
        kw = {"dtype": self.dtype, "axis_name": self.axis_name}
        hidden, i = round(x.shape[-1] * self.expand), 0
        if self.expand != 1:
            x = ConvBNAct(hidden, 1, name="0", **kw)(x, train=train)
            i = 1
        x = ConvBNAct(hidden, 3, self.strides, groups=hidden, name=str(i), **kw)(x, train=train)
        return _conv_bn(self, x, self.features, 1, train=train, act=False, names=(str(i + 1), str(i + 2)))


class _Features(nn.Module):
    """``features``: the stem, the inverted residual blocks and the last 1x1 conv, named ``0``, ``1``, ..."""

    setting: Sequence[tuple[int, int, int, int]]
    width_mult: float
    last_channel: int
    stem_strides: tuple[int, int]
    dtype: Any = None
    axis_name: Any = None

    @nn.compact
    def __call__(self, x: Any, *, train: bool) -> jnp.ndarray:
        kw = {"dtype": self.dtype, "axis_name": self.axis_name}
        x = ConvBNAct(make_divisible(32 * self.width_mult), 3, self.stem_strides[0], name="0", **kw)(x, train=train)
        i = 1
        for stage, (t, c, n, s) in enumerate(self.setting):
            if stage == 1:
                s = min(s, self.stem_strides[1])  # CIFAR stem: the first downsampling stage keeps the size
            for j in range(n):
                x = InvertedResidual(make_divisible(c * self.width_mult), s if j == 0 else 1, t, name=str(i), **kw)(
                    x, train=train
                )
                i += 1
        return ConvBNAct(self.last_channel, 1, name=str(i), **kw)(x, train=train)


class MobileNetV2(nn.Module):
    """MobileNetV2: ``features`` (stem, 17 inverted residual blocks, 1x1 conv), global pool, ``classifier``.

    Attributes:
      num_classes: outputs (1000).
      width_mult: channel multiplier (1.0); widths rounded as torchvision.
      stem: "imagenet" (stride 2 in the stem and in stage 2: 224 -> 7) or
        "cifar" (stride 1 in both, as the common CIFAR variant: 32 -> 4);
        the parameters are the same.
      dropout_rate: dropout before the head (0.2).
      setting: ``(t, c, n, s)`` per stage (torchvision's :data:`SETTING`).
      last_channel: channels of the last 1x1 conv (``None``: torchvision's
        ``make_divisible(1280 * max(1, width_mult))``).
      dtype: compute dtype.
      axis_name: batch axis for synchronized BatchNorm and global-batch dropout.

    Returns (``__call__(x, *, train=False)``): logits ``(N, num_classes)``.

    Reference: Sandler, Howard, Zhu, Zhmoginov & Chen, "MobileNetV2: Inverted
    Residuals and Linear Bottlenecks", CVPR 2018.
    """

    num_classes: int = 1000
    width_mult: float = 1.0
    stem: str = "imagenet"
    dropout_rate: float = 0.2
    setting: Sequence[tuple[int, int, int, int]] = SETTING
    last_channel: int | None = None
    dtype: Any = None
    axis_name: Any = None
    head_name: ClassVar[str] = "classifier"

    @nn.compact
    def __call__(self, x: Any, *, train: bool = False) -> jnp.ndarray:
        stem = _validate.check_choice(self.stem, "stem", ("imagenet", "cifar"))
        last = self.last_channel or make_divisible(1280 * max(1.0, self.width_mult))
        x = _Features(
            tuple(self.setting),
            self.width_mult,
            last,
            (2, 2) if stem == "imagenet" else (1, 1),
            dtype=self.dtype,
            axis_name=self.axis_name,
            name="features",
        )(x, train=train)
        x = GlobalAvgPool(name="avgpool")(x)
        return _Classifier(self.num_classes, self.dropout_rate, self.dtype, self.axis_name, name="classifier")(
            x, train=train
        )


class _Classifier(nn.Module):
    num_classes: int
    dropout_rate: float
    dtype: Any = None
    axis_name: Any = None

    @nn.compact
    def __call__(self, x: Any, *, train: bool) -> jnp.ndarray:
        x = Dropout(self.dropout_rate, axis_name=self.axis_name, name="0")(x, deterministic=not train)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="1")(x)
