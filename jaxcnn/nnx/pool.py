"""NNX pooling and reshaping layers (no parameters), each one call of one function of F.pool.

The NNX twins of :mod:`jaxcnn.nn.pool` and :mod:`jaxcnn.nn.unpool`, with the
same options; shapes and the math are those of the functional docstrings.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
from flax import nnx

from jaxcnn import _validate
from jaxcnn.functional import pool as P


class MaxPool(nnx.Module):
    """Max pooling; wraps :func:`jaxcnn.functional.max_pool` (twin of :class:`jaxcnn.nn.MaxPool`).

    Args:
      window, strides, padding, ceil_mode, dilation: as :class:`jaxcnn.nn.MaxPool`
        (``strides=None`` is ``window``; padding is ``-inf``, "VALID" by default).

    ``__call__(x)``: ``(N, *spatial, C)`` -> ``(N, *out_spatial, C)``,
    ``floor((n + lo + hi - k_eff) / s) + 1`` per dim, ``k_eff = (k - 1) * dilation + 1``.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nnx as jnnx
      >>> jnnx.MaxPool(2)(jnp.ones((1, 28, 28, 4))).shape
      (1, 14, 14, 4)
    """

    def __init__(
        self, window: Any, strides: Any = None, padding: Any = "VALID", ceil_mode: bool = False, dilation: Any = 1
    ):
        self.window, self.strides, self.padding, self.ceil_mode = window, strides, padding, ceil_mode
        self.dilation = dilation

    def __call__(self, x: Any) -> jnp.ndarray:
        return P.max_pool(x, self.window, self.strides, self.padding, self.ceil_mode, self.dilation)


class AvgPool(nnx.Module):
    """Average pooling; wraps :func:`jaxcnn.functional.avg_pool` (twin of :class:`jaxcnn.nn.AvgPool`).

    Args:
      window, strides, padding, ceil_mode: as :class:`MaxPool` (padding is zeros).
      count_include_pad: divide by the full window including padding (default,
        as PyTorch) or by the number of real input elements.
      divisor_override: divide every window's sum by this int instead (``None``: off).

    ``__call__(x)``: ``(N, *spatial, C)`` -> ``(N, *out_spatial, C)``, sizes as :class:`MaxPool`.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nnx as jnnx
      >>> jnnx.AvgPool(3, strides=1, padding=1, count_include_pad=False)(jnp.ones((1, 5, 5, 1)))[0, 0, 0, 0]
      Array(1., dtype=float32)
    """

    def __init__(
        self,
        window: Any,
        strides: Any = None,
        padding: Any = "VALID",
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: Any = None,
    ):
        self.window, self.strides, self.padding, self.ceil_mode = window, strides, padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def __call__(self, x: Any) -> jnp.ndarray:
        return P.avg_pool(
            x, self.window, self.strides, self.padding, self.ceil_mode, self.count_include_pad, self.divisor_override
        )


class GlobalAvgPool(nnx.Module):
    """Mean over all spatial axes; wraps :func:`jaxcnn.functional.global_avg_pool`.

    ``__call__(x)``: ``(N, *spatial, C)`` -> ``(N, C)``.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nnx as jnnx
      >>> jnnx.GlobalAvgPool()(jnp.ones((2, 7, 7, 3))).shape
      (2, 3)
    """

    def __call__(self, x: Any) -> jnp.ndarray:
        return P.global_avg_pool(x)


class GlobalMaxPool(nnx.Module):
    """Maximum over all spatial axes; wraps :func:`jaxcnn.functional.global_max_pool`.

    ``__call__(x)``: ``(N, *spatial, C)`` -> ``(N, C)``.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nnx as jnnx
      >>> jnnx.GlobalMaxPool()(jnp.arange(8.).reshape(1, 4, 2)).tolist()
      [[6.0, 7.0]]
    """

    def __call__(self, x: Any) -> jnp.ndarray:
        return P.global_max_pool(x)


class AdaptiveAvgPool(nnx.Module):
    """Average pooling to a fixed size with PyTorch's bins; wraps :func:`jaxcnn.functional.adaptive_avg_pool`.

    Args:
      output_size: int or one per spatial dim (``None`` keeps that dim).

    ``__call__(x)``: ``(N, *spatial, C)`` -> ``(N, *output_size, C)``.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nnx as jnnx
      >>> jnnx.AdaptiveAvgPool((2, 3))(jnp.ones((1, 7, 9, 5))).shape
      (1, 2, 3, 5)
    """

    def __init__(self, output_size: Any):
        self.output_size = output_size

    def __call__(self, x: Any) -> jnp.ndarray:
        return P.adaptive_avg_pool(x, self.output_size)


class AdaptiveMaxPool(nnx.Module):
    """Max pooling to a fixed size with PyTorch's bins; wraps :func:`jaxcnn.functional.adaptive_max_pool`.

    Args:
      output_size: int or one per spatial dim (``None`` keeps that dim).

    ``__call__(x)``: ``(N, *spatial, C)`` -> ``(N, *output_size, C)``.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nnx as jnnx
      >>> jnnx.AdaptiveMaxPool(1)(jnp.ones((1, 7, 9, 5))).shape
      (1, 1, 1, 5)
    """

    def __init__(self, output_size: Any):
        self.output_size = output_size

    def __call__(self, x: Any) -> jnp.ndarray:
        return P.adaptive_max_pool(x, self.output_size)


class MaxPoolWithIndices(nnx.Module):
    """Max pooling returning the arg-max positions too; wraps :func:`jaxcnn.functional.max_pool_with_indices`.

    Args:
      window, strides, padding: as :class:`MaxPool`.

    ``__call__(x)``: ``(N, *spatial, C)`` -> ``(values, indices)``, both
    ``(N, *out_spatial, C)``; indices are flat positions in each ``(n, c)``
    spatial plane (PyTorch's ``return_indices=True`` numbers).

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nnx as jnnx
      >>> _, indices = jnnx.MaxPoolWithIndices(2)(jnp.arange(16.).reshape(1, 4, 4, 1))
      >>> indices[0, :, :, 0].tolist()
      [[5, 7], [13, 15]]
    """

    def __init__(self, window: Any, strides: Any = None, padding: Any = "VALID"):
        self.window, self.strides, self.padding = window, strides, padding

    def __call__(self, x: Any) -> tuple[jnp.ndarray, jnp.ndarray]:
        return P.max_pool_with_indices(x, self.window, self.strides, self.padding)


class MaxUnpool(nnx.Module):
    """Scatter pooled maxima back to their positions; wraps :func:`jaxcnn.functional.max_unpool`.

    Args:
      output_size: spatial size of the output, an int or one per spatial dim.

    ``__call__(values, indices)``: both ``(N, *spatial, C)`` -> ``(N, *output_size, C)``.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nnx as jnnx
      >>> v, i = jnnx.MaxPoolWithIndices(2)(jnp.arange(16.).reshape(1, 4, 4, 1))
      >>> jnnx.MaxUnpool((4, 4))(v, i)[0, 1, :, 0].tolist()
      [0.0, 5.0, 0.0, 7.0]
    """

    def __init__(self, output_size: Any):
        self.output_size = output_size

    def __call__(self, values: Any, indices: Any) -> jnp.ndarray:
        return P.max_unpool(values, indices, self.output_size)


class Flatten(nnx.Module):
    """Flatten all but the batch axis, ``(N, d1, ..., dk) -> (N, d1 * ... * dk)``; ``jnp.reshape``.

    Channels-last, so a flattened ``(N, H, W, C)`` map is ordered ``h, w, c``
    (twin of :class:`jaxcnn.nn.Flatten`).

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nnx as jnnx
      >>> jnnx.Flatten()(jnp.ones((2, 7, 7, 12))).shape
      (2, 588)
    """

    def __call__(self, x: Any) -> jnp.ndarray:
        x = _validate.check_array(x, "x")
        if x.ndim < 1:
            raise ValueError(f"x must have a batch axis, got shape {tuple(x.shape)}")
        return jnp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))
