"""VGG (Simonyan & Zisserman 2015): stacks of 3x3 convs and 2x2 max pools, with or without BatchNorm."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models._blocks import conv_block
from jaxcnn.nn import AdaptiveAvgPool, Dense, Dropout, Flatten, MaxPool

#: Configurations of the paper's Table 1: filters of each 3x3 conv, "M" a 2x2 max pool.
CONFIGS: dict[str, tuple[int | str, ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),  # VGG-11
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),  # VGG-16
    "tiny": (8, "M", 16, "M"),
}


class VGG(nn.Module):
    """VGG: ``config`` 3x3 convs (padding 1, ReLU) and 2x2 max pools, then three dense layers.

    Layer names follow the paper's stages: ``conv{stage}_{i}`` (and ``bn{stage}_{i}``),
    ``pool{stage}``; then ``avgpool`` (adaptive, to ``pool_size``), ``flatten``,
    ``dense1``, ``dense2`` (``hidden`` wide, ReLU, dropout after each) and
    ``head``. With 1000 classes: VGG-11 132,863,336 parameters, VGG-11-BN
    132,868,840, VGG-16 138,357,544, VGG-16-BN 138,365,992 (as torchvision; the
    convs keep their bias under BatchNorm, as there).

    Attributes:
      config: filters per conv and "M" for a pool (see ``CONFIGS``).
      num_classes: outputs (1000).
      batch_norm: BatchNorm after every conv.
      hidden: dense1/dense2 width (4096).
      dropout_rate: dropout after dense1 and dense2 (0.5).
      pool_size: adaptive average pool output (7: 224x224 inputs give 7x7 maps).
      dtype: compute dtype.
      axis_name: the data-parallel batch axis name: BatchNorm and Dropout act on the global
        batch (see :class:`~jaxcnn.models.AlexNet`).

    Returns (``__call__(x, *, train=False)``): logits ``(N, num_classes)``.

    Reference: Simonyan & Zisserman, "Very Deep Convolutional Networks for
    Large-Scale Image Recognition", ICLR 2015.
    """

    config: Sequence[int | str] = CONFIGS["A"]
    num_classes: int = 1000
    batch_norm: bool = False
    hidden: int = 4096
    dropout_rate: float = 0.5
    pool_size: Any = 7
    dtype: Any = None
    axis_name: Any = None
    head_name: ClassVar[str] = "head"

    @nn.compact
    def __call__(self, x: Any, *, train: bool = False) -> jnp.ndarray:
        stage, i = 1, 1
        for item in self.config:
            if item == "M":
                x = MaxPool(2, name=f"pool{stage}")(x)
                stage, i = stage + 1, 1
                continue
            x = conv_block(
                x,
                cast(int, item),
                3,
                padding=1,
                name=f"conv{stage}_{i}",
                bn_name=f"bn{stage}_{i}",
                batch_norm=self.batch_norm,
                train=train,
                dtype=self.dtype,
                axis_name=self.axis_name,
            )
            i += 1
        x = AdaptiveAvgPool(self.pool_size, name="avgpool")(x)
        x = Flatten(name="flatten")(x)
        for j in (1, 2):
            x = jax.nn.relu(Dense(self.hidden, dtype=self.dtype, name=f"dense{j}")(x))
            x = Dropout(self.dropout_rate, axis_name=self.axis_name, name=f"dropout{j}")(x, deterministic=not train)
        return Dense(self.num_classes, dtype=self.dtype, name="head")(x)
