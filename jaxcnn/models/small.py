"""Small 1D and 3D classifiers: MNIST-1D sequences and volumes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.models._blocks import model_conv_block, positive_ints, with_channel_axis
from jaxcnn.nn import Dense, Dropout, Flatten, GlobalAvgPool, MaxPool


class CNN1D(nn.Module):
    """A small 1D CNN: ``conv1..convK`` (ReLU, SAME), flatten, ``head``.

    Defaults for MNIST-1D (length-40 sequences, 10 classes): three convs of 32
    filters of size 5 with strides 1, 2, 2: ``40 -> 40 -> 20 -> 10`` steps,
    320 features, 13,706 parameters.

    Attributes:
      num_classes: outputs (10).
      features: filters per conv, ``(32, 32, 32)``.
      strides: stride per conv, ``(1, 2, 2)``.
      kernel_size: 5.
      dropout_rate: dropout before the head (0).
      batch_norm: BatchNorm after every conv (the convs then have no bias).
      dtype: compute dtype.
      axis_name: the pmap/shard_map batch axis name for data-parallel training:
        BatchNorm averages its statistics and Dropout draws the global batch's
        mask over it, so the step equals single-device training on the global
        batch (give every device the same "dropout" key). ``None``: per device.

    Returns (``__call__(x, *, train=False)``): ``(N, L)`` or ``(N, L, C)`` ->
    logits ``(N, num_classes)``.
    """

    num_classes: int = 10
    features: Sequence[int] = (32, 32, 32)
    strides: Sequence[int] = (1, 2, 2)
    kernel_size: int = 5
    dropout_rate: float = 0.0
    batch_norm: bool = False
    dtype: Any = None
    axis_name: Any = None
    head_name: ClassVar[str] = "head"

    @nn.compact
    def __call__(self, x: Any, *, train: bool = False) -> jnp.ndarray:
        x = with_channel_axis(x, 1)
        features = positive_ints(self.features, "features")
        strides = positive_ints(self.strides, "strides")
        if len(strides) != len(features):
            raise ValueError(f"strides must have one entry per conv ({len(features)}), got {self.strides!r}")
        for i, (f, s) in enumerate(zip(features, strides), start=1):
            x = model_conv_block(self, x, i, f, self.kernel_size, train=train, strides=s)
        x = Flatten(name="flatten")(x)
        x = Dropout(self.dropout_rate, axis_name=self.axis_name, name="dropout")(x, deterministic=not train)
        return Dense(self.num_classes, dtype=self.dtype, name="head")(x)


class CNN3D(nn.Module):
    """A small 3D CNN for volumes: ``conv{i}`` (3x3x3, ReLU) and ``pool{i}`` (2x2x2) per entry of
    ``features``, then global average pooling and ``head``.

    Attributes:
      num_classes: outputs (10).
      features: filters per conv, ``(8, 16)``.
      kernel_size: 3.
      dropout_rate: dropout before the head (0).
      batch_norm: BatchNorm after every conv (the convs then have no bias).
      dtype: compute dtype.
      axis_name: batch axis name for data-parallel BatchNorm and Dropout (see :class:`CNN1D`).

    Returns (``__call__(x, *, train=False)``): ``(N, D, H, W)`` or
    ``(N, D, H, W, C)`` -> logits ``(N, num_classes)``; every spatial size must
    be at least ``2 ** len(features)``.
    """

    num_classes: int = 10
    features: Sequence[int] = (8, 16)
    kernel_size: int = 3
    dropout_rate: float = 0.0
    batch_norm: bool = False
    dtype: Any = None
    axis_name: Any = None
    head_name: ClassVar[str] = "head"

    @nn.compact
    def __call__(self, x: Any, *, train: bool = False) -> jnp.ndarray:
        x = with_channel_axis(x, 3)
        for i, f in enumerate(positive_ints(self.features, "features"), start=1):
            x = model_conv_block(self, x, i, f, self.kernel_size, train=train)
            x = MaxPool(2, name=f"pool{i}")(x)
        x = GlobalAvgPool(name="avgpool")(x)
        x = Dropout(self.dropout_rate, axis_name=self.axis_name, name="dropout")(x, deterministic=not train)
        return Dense(self.num_classes, dtype=self.dtype, name="head")(x)
