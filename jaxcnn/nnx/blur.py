"""NNX anti-aliased downsampling: :class:`BlurPool` and :class:`MaxBlurPool`, each one call of F.blur.

The NNX twins of :mod:`jaxcnn.nn.blur`, with the same options; the filter is
fixed, so neither layer has state.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx

from jaxcnn.functional.blur import blur_pool, max_blur_pool


class BlurPool(nnx.Module):
    r"""Binomial low-pass filter per channel, then subsampling; wraps :func:`jaxcnn.functional.blur_pool`.

    The NNX twin of :class:`jaxcnn.nn.BlurPool` (the formula is there),
    ``subsample_s(x * binomial_filter(m))``. No parameters: the filter is fixed.

    Args:
      filter_size, strides, padding, padding_mode: as :class:`jaxcnn.nn.BlurPool`
        (3 taps, stride 2, Zhang's padding, "reflect").

    ``__call__(x)``: ``(N, *spatial, C)`` -> ``(N, *out_spatial, C)``,
    ``ceil(n / s)`` per dim with the default padding.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nnx as jnnx
      >>> jnnx.BlurPool()(jnp.ones((1, 28, 28, 4))).shape
      (1, 14, 14, 4)

    Reference: R. Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019.
    """

    def __init__(self, filter_size: int = 3, strides: Any = 2, padding: Any = None, padding_mode: str = "reflect"):
        self.filter_size, self.strides, self.padding, self.padding_mode = filter_size, strides, padding, padding_mode

    def __call__(self, x: Any) -> jnp.ndarray:
        return blur_pool(x, self.filter_size, self.strides, padding=self.padding, padding_mode=self.padding_mode)


class MaxBlurPool(nnx.Module):
    r"""Max pooling at stride 1, then BlurPool; wraps :func:`jaxcnn.functional.max_blur_pool`.

    The NNX twin of :class:`jaxcnn.nn.MaxBlurPool` (the formula is there),
    ``blur_pool(max_pool(x, k, stride 1))``: Zhang's anti-aliased replacement
    of ``MaxPool(k, s)``.

    Args:
      window: max-pool window (2).
      filter_size, strides, padding_mode: as :class:`BlurPool`.

    ``__call__(x)``: ``(N, *spatial, C)`` -> ``(N, *out_spatial, C)``,
    ``ceil((n - k + 1) / s)`` per dim.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nnx as jnnx
      >>> jnnx.MaxBlurPool()(jnp.ones((1, 28, 28, 4))).shape
      (1, 14, 14, 4)

    Reference: R. Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019, fig. 2.
    """

    def __init__(self, window: Any = 2, filter_size: int = 3, strides: Any = 2, padding_mode: str = "reflect"):
        self.window, self.filter_size, self.strides, self.padding_mode = window, filter_size, strides, padding_mode

    def __call__(self, x: Any) -> jnp.ndarray:
        return max_blur_pool(x, self.window, self.filter_size, self.strides, padding_mode=self.padding_mode)
