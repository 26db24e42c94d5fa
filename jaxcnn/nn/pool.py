"""Pooling and reshaping modules (no parameters), each a thin wrapper of one function of F.pool."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn import _validate
from jaxcnn.functional import pool as P


class MaxPool(nn.Module):
    """Max pooling; wraps :func:`jaxcnn.functional.max_pool`.

    Attributes:
      window: int or one int per spatial dim.
      strides: int, one per spatial dim, or ``None`` (= ``window``).
      padding: any padding spec ("VALID" default); padding is ``-inf``.
      ceil_mode: ``ceil`` instead of ``floor`` in the output size, as PyTorch.
      dilation: spacing of the window's taps (PyTorch's ``dilation``), int or per dim.

    Returns (``__call__``):
      ``(N, *out_spatial, C)`` with ``floor((n + lo + hi - k_eff) / s) + 1`` per
      dim, ``k_eff = (k - 1) * dilation + 1``.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nn as jnn
      >>> jnn.MaxPool(2).apply({}, jnp.ones((1, 28, 28, 4))).shape
      (1, 14, 14, 4)
    """

    window: Any
    strides: Any = None
    padding: Any = "VALID"
    ceil_mode: bool = False
    dilation: Any = 1

    def __call__(self, x: Any) -> jnp.ndarray:
        return P.max_pool(x, self.window, self.strides, self.padding, self.ceil_mode, self.dilation)


class AvgPool(nn.Module):
    """Average pooling; wraps :func:`jaxcnn.functional.avg_pool`.

    Attributes:
      window, strides, padding, ceil_mode: as :class:`MaxPool`.
      count_include_pad: divide by the full window including zero padding
        (default, as PyTorch) or by the number of real input elements.
      divisor_override: divide every window's sum by this int instead (``None``).

    Returns (``__call__``):
      ``(N, *out_spatial, C)``, sizes as :class:`MaxPool`.
    """

    window: Any
    strides: Any = None
    padding: Any = "VALID"
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: Any = None

    def __call__(self, x: Any) -> jnp.ndarray:
        return P.avg_pool(
            x, self.window, self.strides, self.padding, self.ceil_mode, self.count_include_pad, self.divisor_override
        )


class GlobalAvgPool(nn.Module):
    """Mean over all spatial axes; wraps :func:`jaxcnn.functional.global_avg_pool`.

    Returns (``__call__``): ``(N, *spatial, C) -> (N, C)``.
    """

    def __call__(self, x: Any) -> jnp.ndarray:
        return P.global_avg_pool(x)


class GlobalMaxPool(nn.Module):
    """Maximum over all spatial axes; wraps :func:`jaxcnn.functional.global_max_pool`.

    Returns (``__call__``): ``(N, *spatial, C) -> (N, C)``.
    """

    def __call__(self, x: Any) -> jnp.ndarray:
        return P.global_max_pool(x)


class AdaptiveAvgPool(nn.Module):
    """Average pooling to a fixed size with PyTorch's bins; wraps :func:`jaxcnn.functional.adaptive_avg_pool`.

    Attributes:
      output_size: int or one per spatial dim (``None`` keeps that dim).

    Returns (``__call__``): ``(N, *output_size, C)``.
    """

    output_size: Any

    def __call__(self, x: Any) -> jnp.ndarray:
        return P.adaptive_avg_pool(x, self.output_size)


class AdaptiveMaxPool(nn.Module):
    """Max pooling to a fixed size with PyTorch's bins; wraps :func:`jaxcnn.functional.adaptive_max_pool`.

    Attributes:
      output_size: int or one per spatial dim (``None`` keeps that dim).

    Returns (``__call__``): ``(N, *output_size, C)``.
    """

    output_size: Any

    def __call__(self, x: Any) -> jnp.ndarray:
        return P.adaptive_max_pool(x, self.output_size)


class Flatten(nn.Module):
    """Flatten everything but the batch axis: ``(N, d1, ..., dk) -> (N, d1 * ... * dk)``.

    Channels-last, so a flattened ``(N, H, W, C)`` map is ordered ``h, w, c``
    (PyTorch's ``nn.Flatten`` on ``(N, C, H, W)`` orders ``c, h, w``: permute the
    rows of the next dense layer's weight when copying it).
    """

    def __call__(self, x: Any) -> jnp.ndarray:
        x = _validate.check_array(x, "x")
        if x.ndim < 1:
            raise ValueError(f"x must have a batch axis, got shape {tuple(x.shape)}")
        return jnp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))
