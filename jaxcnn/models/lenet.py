"""LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, for 28x28 or 32x32 images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import _validate
from jaxcnn.models._blocks import conv_block
from jaxcnn.nn import AvgPool, Dense, Flatten, MaxPool


class LeNet5(nn.Module):
    """LeNet-5: conv 6@5x5, pool 2, conv 16@5x5, pool 2, dense 120, 84, classes.

    ============  ========================  ==========  ==========
    layer         what                      output      parameters
    ============  ========================  ==========  ==========
    conv1         6 filters 5x5             28x28x6        156
    pool1         2x2 stride 2              14x14x6
    conv2         16 filters 5x5, VALID     10x10x16      2416
    pool2         2x2 stride 2              5x5x16
    dense1        400 -> 120                120          48120
    dense2        120 -> 84                 84           10164
    head          84 -> 10                  10             850
    ============  ========================  ==========  ==========

    61706 parameters (1-channel input, 10 classes).

    Padding choice: the network was designed for 32x32 inputs with VALID convs.
    With ``conv1_padding=None`` (default) conv1 pads each spatial dim of size
    ``n < 32`` by ``(32 - n) // 2`` on both sides, so 28x28 MNIST digits
    (padded by 2, as in the paper's preprocessing) and 32x32 images both reach
    5x5x16 = 400 features; any padding spec can be given instead. conv2 is VALID.

    Modern defaults instead of the 1998 ones: ReLU (``activation``) and max
    pooling (``pool="avg"`` for the original subsampling, without its
    trainable coefficients); the C3 partial connection table is a full one.

    Attributes:
      num_classes: outputs (10).
      conv1_padding: ``None`` (the rule above) or a padding spec.
      activation: ``jax.nn.relu`` (``jnp.tanh`` for the original).
      pool: "max" or "avg".
      dtype: compute dtype.
      axis_name: accepted so every zoo model takes the same data-parallel
        option; unused (no BatchNorm or Dropout here).

    Returns (``__call__(x, *, train=False)``): logits ``(N, num_classes)``.

    Reference: LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied
    to document recognition", Proc. IEEE 86(11), 1998.
    """

    num_classes: int = 10
    conv1_padding: Any = None
    activation: Callable[[Any], Any] = jax.nn.relu
    pool: str = "max"
    dtype: Any = None
    axis_name: Any = None
    head_name: ClassVar[str] = "head"

    @nn.compact
    def __call__(self, x: Any, *, train: bool = False) -> jnp.ndarray:
        x, _ = _validate.spatial_input(x, "x")
        pool = {"max": MaxPool, "avg": AvgPool}[_validate.check_choice(self.pool, "pool", ("max", "avg"))]
        padding = self.conv1_padding
        if padding is None:
            padding = tuple(max(32 - n, 0) // 2 for n in x.shape[1:-1])
        act = dict(activation=self.activation, dtype=self.dtype)
        x = conv_block(x, 6, 5, padding=padding, name="conv1", bn_name="bn1", **act)
        x = pool(2, name="pool1")(x)
        x = conv_block(x, 16, 5, padding="VALID", name="conv2", bn_name="bn2", **act)
        x = pool(2, name="pool2")(x)
        x = Flatten(name="flatten")(x)
        x = self.activation(Dense(120, dtype=self.dtype, name="dense1")(x))
        x = self.activation(Dense(84, dtype=self.dtype, name="dense2")(x))
        return Dense(self.num_classes, dtype=self.dtype, name="head")(x)
