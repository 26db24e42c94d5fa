"""Anti-aliased downsampling modules: :class:`BlurPool` and :class:`MaxBlurPool`, thin wrappers of F.blur."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.functional.blur import blur_pool, max_blur_pool


class BlurPool(nn.Module):
    r"""Binomial low-pass filter per channel, then subsampling; wraps :func:`jaxcnn.functional.blur_pool`.

    .. math::

        y = \operatorname{subsample}_s\big(x \star w_m\big), \qquad w_m = \text{binomial\_filter}(m)

    No parameters: the filter is fixed.

    Attributes:
      filter_size: taps per dim, 1-7 (3 default).
      strides: int or one per spatial dim (2).
      padding: ``None`` (Zhang's ``((m-1)//2, m//2)``) or a padding spec of ``F.conv``.
      padding_mode: "reflect" (default), "replicate", "zeros" or "circular".

    Returns (``__call__``):
      ``(N, *out_spatial, C)``, ``ceil(n / s)`` per dim with the default padding.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nn as jnn
      >>> jnn.BlurPool().apply({}, jnp.ones((1, 28, 28, 4))).shape
      (1, 14, 14, 4)

    Reference: R. Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019.
    """

    filter_size: int = 3
    strides: Any = 2
    padding: Any = None
    padding_mode: str = "reflect"

    def __call__(self, x: Any) -> jnp.ndarray:
        return blur_pool(x, self.filter_size, self.strides, padding=self.padding, padding_mode=self.padding_mode)


class MaxBlurPool(nn.Module):
    r"""Max pooling at stride 1, then BlurPool; wraps :func:`jaxcnn.functional.max_blur_pool`.

    .. math::

        y = \text{blur\_pool}_{m, s}\big(\text{max\_pool}_{k, 1}(x)\big)

    Zhang's anti-aliased replacement of ``MaxPool(k, s)``.

    Attributes:
      window: max-pool window (2).
      filter_size, strides, padding_mode: as :class:`BlurPool`.

    Returns (``__call__``):
      ``(N, *out_spatial, C)``, ``ceil((n - k + 1) / s)`` per dim.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.nn as jnn
      >>> jnn.MaxBlurPool().apply({}, jnp.ones((1, 28, 28, 4))).shape
      (1, 14, 14, 4)

    Reference: R. Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019, fig. 2.
    """

    window: Any = 2
    filter_size: int = 3
    strides: Any = 2
    padding_mode: str = "reflect"

    def __call__(self, x: Any) -> jnp.ndarray:
        return max_blur_pool(x, self.window, self.filter_size, self.strides, padding_mode=self.padding_mode)
