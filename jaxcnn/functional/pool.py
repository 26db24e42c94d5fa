"""Pooling for 1, 2 and 3 spatial dims, channels-last: max, average, global, adaptive, unpool.

Window geometry (sizes, padding, ``ceil_mode``, dilation, unbatched inputs) is
in :mod:`jaxcnn.functional._pool_geometry`; the index-returning max pools in
:mod:`jaxcnn.functional._pool_indices`.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn import _validate
from jaxcnn.functional._pool_geometry import (  # noqa: F401  (PoolGeometry, adaptive_bins: public helpers)
    PoolGeometry,
    adaptive_bins,
    adaptive_sizes,
    full_axes,
    lowest,
    pool_geometry,
    pool_rank,
    unbatch,
    window_counts,
)
from jaxcnn.functional._pool_indices import (  # noqa: F401
    adaptive_max_pool_with_indices,
    max_pool_with_indices,
    max_taps,
)
from jaxcnn.functional._pool_vjp import max_pool_argmax


def max_pool(
    x: Any, window: Any, strides: Any = None, padding: Any = "VALID", ceil_mode: bool = False, dilation: Any = 1
) -> jnp.ndarray:
    r"""Max pooling: ``y[n, o, c] = max_{k in window} x_p[n, s * o + d * k, c]``.

    Padding is ``-inf`` (never selected). The gradient reaches only the arg-max
    of each window (``d y / d x`` is 1 there and 0 elsewhere); with ties, the
    first maximum in window scan order, as PyTorch, computed without a scatter
    (deterministic on every backend; see :mod:`jaxcnn.functional._pool_vjp`).

    Args:
      x: ``(N, *spatial, C)``, 1-3 spatial dims; or unbatched ``(*spatial, C)``
        when a tuple ``window`` pins the spatial rank (``window=(3, 3)`` and an
        ``(H, W, C)`` image), as PyTorch accepts ``(C, H, W)``. An int window
        pins nothing: ``x`` is then batched (rank 3 is ``(N, L, C)``).
      window: int or one int per spatial dim.
      strides: int or one per spatial dim; ``None`` (default) means ``window``.
      padding: any spec of :func:`jaxcnn.functional.conv` ("VALID" by default).
      ceil_mode: output size ``ceil((n + lo + hi - k_eff) / s) + 1`` instead of
        ``floor``, as PyTorch (the last window may hang over the high edge).
      dilation: spacing ``d`` of the window's taps, int or one per spatial dim
        (PyTorch's ``dilation``); the window spans ``k_eff = (k - 1) d + 1``.

    Returns:
      ``(N, *out_spatial, C)`` (no ``N`` for an unbatched ``x``), same dtype as ``x``.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> F.max_pool(jnp.arange(16.).reshape(1, 4, 4, 1), 2)[0, ..., 0]
      Array([[ 5.,  7.],
             [13., 15.]], dtype=float32)

    Reference: Goodfellow et al., *Deep Learning*, 2016, sec. 9.3.
    """
    x, unbatched = pool_rank(x, window)
    g = pool_geometry(x, window, strides, padding, ceil_mode, dilation)
    if jnp.issubdtype(x.dtype, jnp.floating):  # arg-max derivative, PyTorch's ties, no scatter: _pool_vjp
        return unbatch(max_pool_argmax(x, g.window, g.strides, g.total_pads, g.dilation), unbatched)
    w, s, p, wd = full_axes(g)
    # The init value must be a concrete NumPy scalar, not a jnp array: under jit a jnp
    # constant is a tracer, lax.reduce_window then falls back to its generic form,
    # which has no derivative (jax.jit(jax.grad(max_pool)) would fail).
    return unbatch(
        lax.reduce_window(x, np.array(lowest(x.dtype), x.dtype), lax.max, w, s, p, window_dilation=wd), unbatched
    )


def _accumulation_dtype(dtype) -> Any:
    """float32 for 16-bit floats (sums of bf16 lose digits fast), else ``dtype`` itself."""
    return jnp.promote_types(dtype, jnp.float32)


def avg_pool(
    x: Any,
    window: Any,
    strides: Any = None,
    padding: Any = "VALID",
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> jnp.ndarray:
    r"""Average pooling: ``y[n, o, c] = (1 / |W_o|) * sum_{k in W_o} x_p[n, s * o + k, c]``.

    The gradient of each output is split equally, ``1 / |W_o|``, over its window.

    Args:
      x: ``(N, *spatial, C)`` floating point, 1-3 spatial dims, or unbatched
        ``(*spatial, C)`` as in :func:`max_pool`.
      window, strides, padding, ceil_mode: as :func:`max_pool`.
      count_include_pad: divide by the window size including zero padding
        (default, as PyTorch) or only by the number of real input elements.
        The ``ceil_mode`` overhang is never counted.
      divisor_override: divide every window's sum by this positive int
        instead (PyTorch's ``divisor_override``); ``None``: the count above.

    Returns:
      ``(N, *out_spatial, C)``, same dtype as ``x`` (16-bit floats are summed in
      float32 and rounded once at the end).

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> F.avg_pool(jnp.ones((1, 3, 1)), 2, strides=1, padding=1, count_include_pad=False)[0, :, 0]
      Array([1., 1., 1., 1.], dtype=float32)
    """
    x, unbatched = pool_rank(x, window)
    _validate.check_floating(x, "x")
    count_include_pad = _validate.check_bool(count_include_pad, "count_include_pad")
    if divisor_override is not None:
        divisor_override = _validate.as_int(divisor_override, "divisor_override")
        if divisor_override < 1:
            raise ValueError(f"divisor_override must be a positive int or None, got {divisor_override}")
    g = pool_geometry(x, window, strides, padding, ceil_mode)
    w, s, p, _ = full_axes(g)
    acc = _accumulation_dtype(x.dtype)
    sums = lax.reduce_window(x.astype(acc), np.array(0, acc), lax.add, w, s, p)  # concrete init: see max_pool
    counts = window_counts(x.shape[1:-1], g, count_include_pad, divisor_override)
    return unbatch((sums / jnp.asarray(counts, acc)).astype(x.dtype), unbatched)


def max_unpool(values: Any, indices: Any, output_size: Any) -> jnp.ndarray:
    """The partial inverse of :func:`max_pool_with_indices`: scatter maxima back, zeros elsewhere.

    ``out[n, idx[n, o, c], c] = values[n, o, c]`` on the flattened spatial plane
    of size ``prod(output_size)``, as PyTorch's ``max_unpool{1,2,3}d``. Indices
    are traced values and cannot be range-checked at trace time: an index
    outside ``[0, prod(output_size))`` is dropped.

    Args:
      values: ``(N, *spatial, C)``.
      indices: integer array of the same shape, from :func:`max_pool_with_indices`.
      output_size: the spatial size of the unpooled output, an int or one per
        spatial dim (the input size of the pooling that made the indices), or
        the whole output shape ``(N, *spatial, C)`` (as PyTorch also accepts).

    Returns:
      ``(N, *output_size, C)``.
    """
    values, nd = _validate.spatial_input(values, "values")
    indices = _validate.check_array(indices, "indices")
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"indices must be an integer array, got {_validate.fmt(indices)}")
    if tuple(indices.shape) != tuple(values.shape):
        raise ValueError(f"indices must have the shape of values {tuple(values.shape)}, got {tuple(indices.shape)}")
    n, c = values.shape[0], values.shape[-1]
    if isinstance(output_size, (tuple, list)) and len(output_size) == nd + 2:
        if (output_size[0], output_size[-1]) != (n, c):
            raise ValueError(
                f"output_size {tuple(output_size)} as a full shape must start with N={n} and end "
                f"with C={c} (values has shape {tuple(values.shape)})"
            )
        output_size = output_size[1:-1]
    output_size = _validate.tuple_arg(output_size, nd, "output_size")
    flat_v = values.reshape(n, -1, c)
    flat_i = indices.reshape(n, -1, c)
    rows = jnp.arange(n).reshape(n, 1, 1)
    cols = jnp.arange(c).reshape(1, 1, c)
    out = jnp.zeros((n, math.prod(output_size), c), values.dtype)
    # wrap_negative_indices=False: a negative index is out of range and dropped, not
    # read Python-style from the end of the plane.
    out = out.at[rows, flat_i, cols].set(flat_v, mode="drop", wrap_negative_indices=False)
    return out.reshape((n, *output_size, c))


def global_avg_pool(x: Any) -> jnp.ndarray:
    """Mean over all spatial axes: ``(N, *spatial, C) -> (N, C)``."""
    x, nd = _validate.spatial_input(x, "x")
    _validate.check_floating(x, "x")
    return jnp.mean(x, axis=tuple(range(1, nd + 1)))


def global_max_pool(x: Any) -> jnp.ndarray:
    """Maximum over all spatial axes: ``(N, *spatial, C) -> (N, C)``."""
    x, nd = _validate.spatial_input(x, "x")
    return jnp.max(x, axis=tuple(range(1, nd + 1)))


def adaptive_avg_pool(x: Any, output_size: Any) -> jnp.ndarray:
    """Average pooling to a fixed output size, with PyTorch's bins (see :func:`adaptive_bins`).

    Averaging over a box is separable, so each spatial axis is reduced in turn by
    an ``(o, n)`` averaging matrix.

    Args:
      x: ``(N, *spatial, C)`` floating point, or unbatched ``(*spatial, C)``
        when a tuple ``output_size`` pins the spatial rank (see :func:`max_pool`).
      output_size: int or one per spatial dim (``None`` keeps that dim's size).

    Returns:
      ``(N, *output_size, C)``, same dtype as ``x`` (16-bit floats are averaged in
      float32).
    """
    x, unbatched = pool_rank(x, output_size, arg="output_size")
    _validate.check_floating(x, "x")
    nd, output_size = adaptive_sizes(x, output_size)
    dtype, acc = x.dtype, _accumulation_dtype(x.dtype)
    x = x.astype(acc)
    for axis, o in zip(range(1, nd + 1), output_size):
        n = x.shape[axis]
        m = np.zeros((o, n), np.float64)
        for i, (a, b) in enumerate(adaptive_bins(n, o)):
            m[i, a:b] = 1.0 / (b - a)
        y = jnp.tensordot(jnp.asarray(m, acc), x, axes=((1,), (axis,)), precision=lax.Precision.HIGHEST)
        x = jnp.moveaxis(y, 0, axis)
    return unbatch(x.astype(dtype), unbatched)


def adaptive_max_pool(x: Any, output_size: Any, return_indices: bool = False) -> Any:
    """Max pooling to a fixed output size, with PyTorch's bins (see :func:`adaptive_bins`).

    A max over a box is separable: each axis is gathered into ``(o, L)`` bins
    (short bins repeat their last element, which leaves the max unchanged) and
    reduced in turn.

    Args:
      x: ``(N, *spatial, C)``, or unbatched ``(*spatial, C)`` with a tuple
        ``output_size`` (see :func:`max_pool`).
      output_size: int or one per spatial dim (``None`` keeps that dim's size).
      return_indices: also return where each maximum came from, as PyTorch's
        ``return_indices=True`` (see :func:`adaptive_max_pool_with_indices`).

    Returns:
      ``(N, *output_size, C)``; with ``return_indices``, ``(values, indices)``.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> F.adaptive_max_pool(jnp.array([1., 5, 2, 0, 7]).reshape(1, 5, 1), (2,))[0, :, 0]
      Array([5., 7.], dtype=float32)
    """
    if _validate.check_bool(return_indices, "return_indices"):
        return adaptive_max_pool_with_indices(x, output_size)
    x, unbatched = pool_rank(x, output_size, arg="output_size")
    nd, output_size = adaptive_sizes(x, output_size)
    for axis, o in zip(range(1, nd + 1), output_size):
        bins = adaptive_bins(x.shape[axis], o)
        width = max(b - a for a, b in bins)
        idx = np.asarray([[min(a + j, b - 1) for j in range(width)] for a, b in bins], np.int32)
        x = jnp.max(jnp.take(x, jnp.asarray(idx), axis=axis), axis=axis + 1)
    return unbatch(x, unbatched)
