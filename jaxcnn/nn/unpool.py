"""Max pooling with indices and max unpooling (Linen), thin wrappers of F.max_pool_with_indices / F.max_unpool."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.functional import pool as P


class MaxPoolWithIndices(nn.Module):
    """Max pooling that also returns the arg-max positions; wraps :func:`jaxcnn.functional.max_pool_with_indices`.

    Indices are flat positions in the input's spatial plane for each ``(n, c)``
    (``h * W + w`` in 2D), PyTorch's ``return_indices=True`` numbers, ready for
    :class:`MaxUnpool`.

    Attributes:
      window: int or one int per spatial dim.
      strides: int, one per spatial dim, or ``None`` (= ``window``).
      padding: any padding spec ("VALID" default); padding is never selected.

    Returns (``__call__(x)``, ``x`` ``(N, *spatial, C)``):
      ``(values, indices)``, both ``(N, *out_spatial, C)``, sizes as :class:`jaxcnn.nn.MaxPool`.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nn as jnn
      >>> values, indices = jnn.MaxPoolWithIndices(2).apply({}, jnp.arange(16.).reshape(1, 4, 4, 1))
      >>> indices[0, :, :, 0].tolist()
      [[5, 7], [13, 15]]
    """

    window: Any
    strides: Any = None
    padding: Any = "VALID"

    def __call__(self, x: Any) -> tuple[jnp.ndarray, jnp.ndarray]:
        return P.max_pool_with_indices(x, self.window, self.strides, self.padding)


class MaxUnpool(nn.Module):
    """Scatter pooled maxima back to their positions, zeros elsewhere; wraps :func:`jaxcnn.functional.max_unpool`.

    Attributes:
      output_size: the spatial size of the output (the input size of the
        pooling that made the indices), an int or one per spatial dim.

    Returns (``__call__(values, indices)``, both ``(N, *spatial, C)``):
      ``(N, *output_size, C)``.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nn as jnn
      >>> x = jnp.arange(16.).reshape(1, 4, 4, 1)
      >>> v, i = jnn.MaxPoolWithIndices(2).apply({}, x)
      >>> jnn.MaxUnpool((4, 4)).apply({}, v, i)[0, :, :, 0].tolist()[1]
      [0.0, 5.0, 0.0, 7.0]
    """

    output_size: Any

    def __call__(self, values: Any, indices: Any) -> jnp.ndarray:
        return P.max_unpool(values, indices, self.output_size)
