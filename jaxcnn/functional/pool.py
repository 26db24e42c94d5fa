"""Pooling for 1, 2 and 3 spatial dims, channels-last: max, average, global, adaptive, unpool."""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn import _validate
from jaxcnn.functional._pool_vjp import max_pool_argmax


class PoolGeometry(NamedTuple):
    """Where every pooling window of one call lies.

    Attributes:
      window: window size per spatial dim.
      strides: stride per spatial dim.
      pads: the user's ``(low, high)`` padding per spatial dim.
      extra: extra high padding that ``ceil_mode`` adds per spatial dim.
      out: output size per spatial dim.
    """

    window: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    extra: tuple[int, ...]
    out: tuple[int, ...]

    @property
    def total_pads(self) -> tuple[tuple[int, int], ...]:
        return tuple((lo, hi + e) for (lo, hi), e in zip(self.pads, self.extra))


def pool_geometry(x: Any, window: Any, strides: Any, padding: Any, ceil_mode: bool = False) -> PoolGeometry:
    """Validate pooling arguments against ``x`` ``(N, *spatial, C)`` and lay out the windows.

    ``strides=None`` means ``strides = window``. Every window must overlap the
    input (and, with ``ceil_mode``, the last one must start inside the input or
    the low padding, as PyTorch); a window seeing only padding is an error.
    """
    _, nd = _validate.spatial_input(x, "x")
    window = _validate.tuple_arg(window, nd, "window")
    strides = window if strides is None else _validate.tuple_arg(strides, nd, "strides")
    ceil_mode = _validate.check_bool(ceil_mode, "ceil_mode")
    sizes = tuple(x.shape[1:-1])
    pads = _validate.padding_pairs(padding, sizes, window, strides)
    _validate.check_pad_fits(sizes, pads, window, what=f"pooling window {window}")
    out = tuple(_validate.out_size(n, p, k, s, ceil_mode) for n, p, k, s in zip(sizes, pads, window, strides))
    for i, (n, (lo, hi), k, s, o) in enumerate(zip(sizes, pads, window, strides, out)):
        if lo >= k or (o - 1) * s - lo >= n:
            raise ValueError(
                f"padding {pads} with window {window} and strides {strides} leaves a window that "
                f"sees only padding along spatial dim {i} (input size {n}); use a padding smaller "
                f"than the window"
            )
    extra = tuple(max((o - 1) * s + k - (n + lo + hi), 0) for n, (lo, hi), k, s, o in zip(sizes, pads, window, strides, out))
    return PoolGeometry(window, strides, pads, extra, out)


def _full(g: PoolGeometry) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...]]:
    """Window, strides and padding over all axes of ``(N, *spatial, C)`` for ``lax.reduce_window``."""
    return (1, *g.window, 1), (1, *g.strides, 1), ((0, 0), *g.total_pads, (0, 0))


def _lowest(dtype) -> Any:
    if jnp.issubdtype(dtype, jnp.floating):
        return -jnp.inf
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.iinfo(dtype).min
    raise TypeError(f"x must have a numeric dtype for max pooling, got dtype {dtype}")


def max_pool(x: Any, window: Any, strides: Any = None, padding: Any = "VALID", ceil_mode: bool = False) -> jnp.ndarray:
    r"""Max pooling: ``y[n, o, c] = max_{k in window} x_p[n, s * o + k, c]``.

    Padding is ``-inf`` (never selected). The gradient reaches only the arg-max
    of each window (``d y / d x`` is 1 there and 0 elsewhere); with ties, the
    first maximum in window scan order, as PyTorch, computed without a scatter
    (deterministic on every backend; see :mod:`jaxcnn.functional._pool_vjp`).

    Args:
      x: ``(N, *spatial, C)``, 1-3 spatial dims.
      window: int or one int per spatial dim.
      strides: int or one per spatial dim; ``None`` (default) means ``window``.
      padding: any spec of :func:`jaxcnn.functional.conv` ("VALID" by default).
      ceil_mode: output size ``ceil((n + lo + hi - k) / s) + 1`` instead of
        ``floor``, as PyTorch (the last window may hang over the high edge).

    Returns:
      ``(N, *out_spatial, C)``, same dtype as ``x``.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> F.max_pool(jnp.arange(16.).reshape(1, 4, 4, 1), 2)[0, ..., 0]
      Array([[ 5.,  7.],
             [13., 15.]], dtype=float32)

    Reference: Goodfellow et al., *Deep Learning*, 2016, sec. 9.3.
    """
    x = _validate.check_array(x, "x")
    g = pool_geometry(x, window, strides, padding, ceil_mode)
    if jnp.issubdtype(x.dtype, jnp.floating):  # arg-max derivative, PyTorch's ties, no scatter: _pool_vjp
        return max_pool_argmax(x, g.window, g.strides, g.total_pads, (1,) * len(g.window))
    w, s, p = _full(g)
    # The init value must be a concrete NumPy scalar, not a jnp array: under jit a jnp
    # constant is a tracer, lax.reduce_window then falls back to its generic form,
    # which has no derivative (jax.jit(jax.grad(max_pool)) would fail).
    return lax.reduce_window(x, np.array(_lowest(x.dtype), x.dtype), lax.max, w, s, p)


def _accumulation_dtype(dtype) -> Any:
    """float32 for 16-bit floats (sums of bf16 lose digits fast), else ``dtype`` itself."""
    return jnp.promote_types(dtype, jnp.float32)


def _window_counts(sizes, g: PoolGeometry, include_pad: bool) -> np.ndarray:
    """Number of elements each window averages over, ``(1, *out, 1)`` (static, NumPy).

    ``include_pad``: count the user's padding (never the ``ceil_mode`` overhang),
    as PyTorch's ``count_include_pad=True``; else only real input elements.
    """
    per_dim = []
    for n, (lo, hi), k, s, o in zip(sizes, g.pads, g.window, g.strides, g.out):
        a, b = (-lo, n + hi) if include_pad else (0, n)
        start = np.arange(o) * s - lo
        per_dim.append(np.minimum(start + k, b) - np.maximum(start, a))
    counts = per_dim[0]
    for c in per_dim[1:]:
        counts = np.multiply.outer(counts, c)
    return counts.reshape((1, *g.out, 1))


def avg_pool(
    x: Any,
    window: Any,
    strides: Any = None,
    padding: Any = "VALID",
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> jnp.ndarray:
    r"""Average pooling: ``y[n, o, c] = (1 / |W_o|) * sum_{k in W_o} x_p[n, s * o + k, c]``.

    The gradient of each output is split equally, ``1 / |W_o|``, over its window.

    Args:
      x: ``(N, *spatial, C)`` floating point, 1-3 spatial dims.
      window, strides, padding, ceil_mode: as :func:`max_pool`.
      count_include_pad: divide by the window size including zero padding
        (default, as PyTorch) or only by the number of real input elements.
        The ``ceil_mode`` overhang is never counted.

    Returns:
      ``(N, *out_spatial, C)``, same dtype as ``x`` (16-bit floats are summed in
      float32 and rounded once at the end).

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> F.avg_pool(jnp.ones((1, 3, 1)), 2, strides=1, padding=1, count_include_pad=False)[0, :, 0]
      Array([1., 1., 1., 1.], dtype=float32)
    """
    x = _validate.check_array(x, "x")
    _validate.check_floating(x, "x")
    count_include_pad = _validate.check_bool(count_include_pad, "count_include_pad")
    g = pool_geometry(x, window, strides, padding, ceil_mode)
    w, s, p = _full(g)
    acc = _accumulation_dtype(x.dtype)
    sums = lax.reduce_window(x.astype(acc), np.array(0, acc), lax.add, w, s, p)  # concrete init: see max_pool
    counts = _window_counts(x.shape[1:-1], g, count_include_pad)
    return (sums / jnp.asarray(counts, acc)).astype(x.dtype)


def max_pool_with_indices(x: Any, window: Any, strides: Any = None, padding: Any = "VALID") -> tuple[jnp.ndarray, jnp.ndarray]:
    """Max pooling that also returns where each maximum came from.

    Indices are flat positions in the input's spatial plane for each ``(n, c)``
    (``h * W + w`` in 2D), the same numbers as PyTorch's
    ``max_pool2d(..., return_indices=True)``; ties go to the first position in
    scan order, and a window whose real entries all equal the padding value
    (``-inf``, or the integer minimum) points at its first real element, never
    into the padding. ``values`` is differentiable (the gradient reaches the arg-max).

    Args:
      x, window, strides, padding: as :func:`max_pool`.

    Returns:
      ``(values, indices)``, both ``(N, *out_spatial, C)``; indices are int32.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> v, i = F.max_pool_with_indices(jnp.array([[3., 1, 2, 5]]).reshape(1, 4, 1), 2)
      >>> i[0, :, 0]
      Array([0, 3], dtype=int32)
    """
    x = _validate.check_array(x, "x")
    g = pool_geometry(x, window, strides, padding)
    nd = len(g.window)
    sizes = x.shape[1:-1]
    xp = jnp.pad(x, ((0, 0), *g.total_pads, (0, 0)), constant_values=_lowest(x.dtype))
    taps = list(itertools.product(*(range(k) for k in g.window)))
    slices = [
        lax.slice(
            xp,
            (0, *tap, 0),
            (x.shape[0], *((o - 1) * s + t + 1 for o, s, t in zip(g.out, g.strides, tap)), x.shape[-1]),
            (1, *g.strides, 1),
        )
        for tap in taps
    ]
    stacked = jnp.stack(slices)  # (K, N, *out, C)
    which = jnp.argmax(stacked, axis=0)  # tap number, first max wins
    values = jnp.take_along_axis(stacked, which[None], axis=0)[0]
    # flat input index = sum_i (o_i * s_i - lo_i + tap_i) * prod(sizes[i+1:])
    taps_arr = np.asarray(taps, np.int32).reshape(len(taps), nd)
    place = np.asarray([math.prod(sizes[i + 1 :]) for i in range(nd)], np.int32)
    tap_offset = jnp.asarray(taps_arr @ place)[which]
    base = np.zeros(g.out, np.int32)
    for i, (o, s, (lo, _)) in enumerate(zip(g.out, g.strides, g.pads)):
        shape = [1] * nd
        shape[i] = o
        base = base + ((np.arange(o) * s - lo) * place[i]).reshape(shape)
    indices = tap_offset + jnp.asarray(base.reshape((1, *g.out, 1)))
    # A window whose real entries all equal the padding value (-inf, or the integer
    # minimum) may have picked a padding tap, i.e. a position outside the input.
    # PyTorch reports the window's first real element then; so do we.
    first_real = np.zeros(g.out, np.int32)
    for i, (o, s, (lo, _)) in enumerate(zip(g.out, g.strides, g.pads)):
        shape = [1] * nd
        shape[i] = o
        first_real = first_real + (np.maximum(np.arange(o) * s - lo, 0) * place[i]).reshape(shape)
    lowest = jnp.asarray(_lowest(x.dtype), x.dtype)
    indices = jnp.where(values == lowest, jnp.asarray(first_real.reshape((1, *g.out, 1))), indices)
    return values, indices.astype(jnp.int32)


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
        raise ValueError(
            f"indices must have the shape of values {tuple(values.shape)}, got {tuple(indices.shape)}"
        )
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


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive-pool bins: bin ``i`` is ``[floor(i n / o), ceil((i + 1) n / o))``."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _adaptive_sizes(x: Any, output_size: Any) -> tuple[int, tuple[int, ...]]:
    x, nd = _validate.spatial_input(x, "x")
    if isinstance(output_size, (tuple, list)):
        output_size = tuple(n if o is None else o for o, n in zip(output_size, x.shape[1:-1])) + tuple(
            output_size[nd:]
        )
    return nd, _validate.tuple_arg(output_size, nd, "output_size")


def adaptive_avg_pool(x: Any, output_size: Any) -> jnp.ndarray:
    """Average pooling to a fixed output size, with PyTorch's bins (see :func:`adaptive_bins`).

    Averaging over a box is separable, so each spatial axis is reduced in turn by
    an ``(o, n)`` averaging matrix.

    Args:
      x: ``(N, *spatial, C)`` floating point.
      output_size: int or one per spatial dim (``None`` keeps that dim's size).

    Returns:
      ``(N, *output_size, C)``, same dtype as ``x`` (16-bit floats are averaged in
      float32).
    """
    x = _validate.check_array(x, "x")
    _validate.check_floating(x, "x")
    nd, output_size = _adaptive_sizes(x, output_size)
    dtype, acc = x.dtype, _accumulation_dtype(x.dtype)
    x = x.astype(acc)
    for axis, o in zip(range(1, nd + 1), output_size):
        n = x.shape[axis]
        m = np.zeros((o, n), np.float64)
        for i, (a, b) in enumerate(adaptive_bins(n, o)):
            m[i, a:b] = 1.0 / (b - a)
        y = jnp.tensordot(jnp.asarray(m, acc), x, axes=((1,), (axis,)), precision=lax.Precision.HIGHEST)
        x = jnp.moveaxis(y, 0, axis)
    return x.astype(dtype)


def adaptive_max_pool(x: Any, output_size: Any) -> jnp.ndarray:
    """Max pooling to a fixed output size, with PyTorch's bins (see :func:`adaptive_bins`).

    A max over a box is separable: each axis is gathered into ``(o, L)`` bins
    (short bins repeat their last element, which leaves the max unchanged) and
    reduced in turn.

    Args:
      x: ``(N, *spatial, C)``.
      output_size: int or one per spatial dim (``None`` keeps that dim's size).

    Returns:
      ``(N, *output_size, C)``.
    """
    x = _validate.check_array(x, "x")
    nd, output_size = _adaptive_sizes(x, output_size)
    for axis, o in zip(range(1, nd + 1), output_size):
        bins = adaptive_bins(x.shape[axis], o)
        width = max(b - a for a, b in bins)
        idx = np.asarray([[min(a + j, b - 1) for j in range(width)] for a, b in bins], np.int32)
        x = jnp.max(jnp.take(x, jnp.asarray(idx), axis=axis), axis=axis + 1)
    return x
