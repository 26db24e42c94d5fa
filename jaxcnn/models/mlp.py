"""A fully connected baseline: flatten, then dense layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.nn import BatchNorm, Dense, Dropout, Flatten


class MLP(nn.Module):
    """Multi-layer perceptron on flattened input: ``dense1 ... denseK`` (ReLU), then ``head``.

    Each hidden layer: Dense -> (BatchNorm) -> ReLU -> (Dropout). For 28x28x1
    digits and ``widths=(200,)``: 784*200+200 + 200*10+10 = 159010 parameters,
    more than LWLS's CNN (122270) with no weight sharing.

    Attributes:
      widths: hidden layer widths, ``(200,)``; ``()`` is logistic regression.
      num_classes: outputs of the head.
      dropout_rate: dropout after every hidden layer (0: none).
      batch_norm: BatchNorm before every hidden ReLU.
      dtype: compute dtype.
      axis_name: the pmap/shard_map batch axis name for data-parallel training:
        BatchNorm averages its statistics and Dropout draws the global batch's
        mask over it, so the step equals single-device training on the global
        batch (give every device the same "dropout" key). ``None``: per device.

    Returns (``__call__(x, *, train=False)``): ``(N, ...) -> (N, num_classes)``.
    """

    widths: Sequence[int] = (200,)
    num_classes: int = 10
    dropout_rate: float = 0.0
    batch_norm: bool = False
    dtype: Any = None
    axis_name: Any = None
    head_name: ClassVar[str] = "head"

    @nn.compact
    def __call__(self, x: Any, *, train: bool = False) -> jnp.ndarray:
        x = Flatten(name="flatten")(x)
        for i, w in enumerate(self.widths, start=1):
            x = Dense(w, dtype=self.dtype, name=f"dense{i}")(x)
            if self.batch_norm:
                bn = BatchNorm(use_running_average=not train, axis_name=self.axis_name, dtype=self.dtype, name=f"bn{i}")
                x = bn(x)
            x = jax.nn.relu(x)
            x = Dropout(self.dropout_rate, axis_name=self.axis_name, name=f"dropout{i}")(x, deterministic=not train)
        return Dense(self.num_classes, dtype=self.dtype, name="head")(x)
