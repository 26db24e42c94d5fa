"""Anti-aliased downsampling (BlurPool): a binomial low-pass filter per channel, then the stride."""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxcnn import _validate
from jaxcnn.functional.conv import conv
from jaxcnn.functional.pool import max_pool

BLUR_PADDING_MODES = ("reflect", "replicate", "zeros", "circular")
MAX_FILTER_SIZE = 7


def binomial_filter(filter_size: int, nd: int) -> np.ndarray:
    r"""The normalized binomial low-pass filter of ``filter_size`` taps in ``nd`` dims.

    .. math::

        a_j = \binom{m - 1}{j} \Big/ 2^{m-1},\quad j = 0..m-1, \qquad
        w = a \otimes \dots \otimes a \ (\text{nd times}), \quad \textstyle\sum w = 1

    ``m = 1`` is ``[1]`` (plain subsampling), 2 ``[1, 1] / 2`` (box), 3
    ``[1, 2, 1] / 4`` (triangle), 5 ``[1, 4, 6, 4, 1] / 16``.

    Args:
      filter_size: taps ``m`` per dim, 1 to 7 (as Zhang's ``filt_size``).
      nd: spatial dims, 1-3.

    Returns:
      float64 array ``(m,) * nd`` summing to 1.

    Example:
      >>> binomial_filter(3, 1)
      array([0.25, 0.5 , 0.25])

    Reference: Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019, sec. 3.3.
    """
    m = _validate.as_int(filter_size, "filter_size")
    if not 1 <= m <= MAX_FILTER_SIZE:
        raise ValueError(f"filter_size must be an int from 1 to {MAX_FILTER_SIZE}, got {m}")
    a = np.array([math.comb(m - 1, j) for j in range(m)], np.float64) / 2.0 ** (m - 1)
    w = a
    for _ in range(nd - 1):
        w = np.multiply.outer(w, a)
    return w


def blur_pool(
    x: Any,
    filter_size: int = 3,
    strides: Any = 2,
    *,
    padding: _validate.PaddingLike | None = None,
    padding_mode: str = "reflect",
) -> jnp.ndarray:
    r"""BlurPool: low-pass filter every channel with a binomial kernel, then subsample.

    .. math::

        y[n, \mathbf{o}, c] = \sum_{\mathbf{k}} w[\mathbf{k}]\,
            x_p[n, \mathbf{s} \odot \mathbf{o} + \mathbf{k}, c],
        \qquad w = \text{binomial\_filter}(m)

    A depthwise :func:`jaxcnn.functional.conv` (``groups = C``) with the
    fixed filter of :func:`binomial_filter`. The default padding is Zhang's:
    ``((m - 1) // 2, ceil((m - 1) / 2))`` per dim, filled by reflection, so the
    output has ``ceil(n / s)`` positions per dim.

    Args:
      x: ``(N, *spatial, C)``, 1-3 spatial dims, floating dtype.
      filter_size: taps per dim, 1-7 (1: subsampling only; 3 or 5 common).
      strides: subsampling factor, int or one per spatial dim.
      padding: ``None`` (Zhang's, above) or any padding spec of :func:`conv`.
      padding_mode: "reflect" (default, as Zhang), "replicate", "zeros" or "circular".

    Returns:
      ``(N, *out_spatial, C)`` in ``x``'s dtype; ``ceil(n / s)`` per dim by default.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> F.blur_pool(jnp.ones((1, 28, 28, 4))).shape
      (1, 14, 14, 4)

    Reference: R. Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019.
    """
    x, nd = _validate.spatial_input(x, "x")
    _validate.check_floating(x, "x")
    w = binomial_filter(filter_size, nd)
    m = w.shape[0]
    padding_mode = _validate.check_choice(padding_mode, "padding_mode", BLUR_PADDING_MODES)
    if padding is None:
        padding = (((m - 1) // 2, m // 2),) * nd
    c = x.shape[-1]
    kernel = jnp.asarray(np.broadcast_to(w[..., None, None], w.shape + (1, c)), x.dtype)
    return conv(x, kernel, strides=strides, padding=padding, groups=c, padding_mode=padding_mode)


def max_blur_pool(
    x: Any,
    window: Any = 2,
    filter_size: int = 3,
    strides: Any = 2,
    *,
    padding_mode: str = "reflect",
) -> jnp.ndarray:
    r"""MaxBlurPool: max pooling at stride 1, then :func:`blur_pool` with the stride.

    .. math::

        y = \text{blur\_pool}_{m, s}\big(\text{max\_pool}_{k, 1}(x)\big)

    Zhang's anti-aliased replacement of ``max_pool(x, k, s)``: the max is
    evaluated densely (it stays shift-equivariant) and only the low-passed
    signal is subsampled.

    Args:
      x: ``(N, *spatial, C)``, floating dtype.
      window: max-pool window, int or one per spatial dim (2 as Zhang).
      filter_size, strides, padding_mode: as :func:`blur_pool`.

    Returns:
      ``(N, *out_spatial, C)`` with ``ceil((n - k + 1) / s)`` per dim (28 -> 14 for k = s = 2).

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> F.max_blur_pool(jnp.ones((1, 28, 28, 4))).shape
      (1, 14, 14, 4)

    Reference: R. Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019, fig. 2.
    """
    return blur_pool(max_pool(x, window, 1), filter_size, strides, padding_mode=padding_mode)
