"""Max pooling that says where each maximum came from: PyTorch's ``return_indices=True``.

Both functions stack the window's taps (strided slices of the padded input),
take the first arg-max in scan order and gather the values from it, so the
gradient reaches exactly the element PyTorch's does (the first maximum), and
the indices are flat positions in the input's spatial plane for each
``(n, c)``, the same numbers as PyTorch's.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn import _validate
from jaxcnn.functional._pool_geometry import (
    PoolGeometry,
    adaptive_bins,
    adaptive_sizes,
    lowest,
    pool_geometry,
    pool_rank,
    unbatch,
)


def _axis_grid(values: list[np.ndarray], nd: int) -> np.ndarray:
    """``sum_i values[i]`` broadcast over an ``nd``-dim grid (``values[i]`` along axis ``i``)."""
    total = np.zeros([len(v) for v in values], np.int64)
    for i, v in enumerate(values):
        shape = [1] * nd
        shape[i] = len(v)
        total = total + v.reshape(shape)
    return total


def max_taps(x: Any, g: PoolGeometry) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(values, indices)`` of max pooling batched ``x`` over the windows ``g`` (dilation included)."""
    nd = len(g.window)
    dilation = g.dilation or (1,) * nd
    sizes = x.shape[1:-1]
    xp = jnp.pad(x, ((0, 0), *g.total_pads, (0, 0)), constant_values=lowest(x.dtype))
    taps = list(itertools.product(*(range(k) for k in g.window)))
    slices = [
        lax.slice(
            xp,
            (0, *(t * d for t, d in zip(tap, dilation)), 0),
            (
                x.shape[0],
                *((o - 1) * s + t * d + 1 for o, s, t, d in zip(g.out, g.strides, tap, dilation)),
                x.shape[-1],
            ),
            (1, *g.strides, 1),
        )
        for tap in taps
    ]
    stacked = jnp.stack(slices)  # (K, N, *out, C)
    which = jnp.argmax(stacked, axis=0)  # tap number, first max wins
    values = jnp.take_along_axis(stacked, which[None], axis=0)[0]
    # flat input index = sum_i (o_i * s_i - lo_i + tap_i * d_i) * prod(sizes[i+1:])
    place = np.asarray([math.prod(sizes[i + 1 :]) for i in range(nd)], np.int64)
    taps_arr = np.asarray(taps, np.int64).reshape(len(taps), nd) * np.asarray(dilation, np.int64)
    tap_offset = jnp.asarray((taps_arr @ place).astype(np.int32))[which]
    starts = [np.arange(o) * s - lo for o, s, (lo, _) in zip(g.out, g.strides, g.pads)]
    base = _axis_grid([st * p for st, p in zip(starts, place)], nd)
    indices = tap_offset + jnp.asarray(base.reshape((1, *g.out, 1)).astype(np.int32))
    # A window whose real entries all equal the padding value (-inf, or the integer
    # minimum) may have picked a padding tap, i.e. a position outside the input.
    # PyTorch reports the window's first real element then; so do we.
    first = [np.where(st >= 0, st, st + (-st + d - 1) // d * d) for st, d in zip(starts, dilation)]
    first_real = _axis_grid([f * p for f, p in zip(first, place)], nd)
    low = jnp.asarray(lowest(x.dtype), x.dtype)
    indices = jnp.where(values == low, jnp.asarray(first_real.reshape((1, *g.out, 1)).astype(np.int32)), indices)
    return values, indices.astype(jnp.int32)


def max_pool_with_indices(
    x: Any, window: Any, strides: Any = None, padding: Any = "VALID", ceil_mode: bool = False, dilation: Any = 1
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Max pooling that also returns where each maximum came from.

    ``y[n, o, c] = max_k x_p[n, s o + d k, c]`` and ``i[n, o, c]`` its flat
    position in the input's spatial plane (``h * W + w`` in 2D), the same
    numbers as PyTorch's ``max_pool2d(..., return_indices=True)``; ties go to
    the first position in scan order, and a window whose real entries all
    equal the padding value (``-inf``, or the integer minimum) points at its
    first real element, never into the padding. ``values`` is differentiable
    (the gradient reaches the arg-max).

    Args:
      x: ``(N, *spatial, C)``, or unbatched ``(*spatial, C)`` when a tuple
        argument pins the spatial rank (see :func:`jaxcnn.functional.max_pool`).
      window, strides, padding, ceil_mode, dilation: as :func:`jaxcnn.functional.max_pool`.

    Returns:
      ``(values, indices)``, both ``(N, *out_spatial, C)`` (no ``N`` for an
      unbatched input); indices are int32.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> v, i = F.max_pool_with_indices(jnp.array([[3., 1, 2, 5]]).reshape(1, 4, 1), (2,))
      >>> i[0, :, 0]
      Array([0, 3], dtype=int32)
    """
    x, unbatched = pool_rank(x, window)
    g = pool_geometry(x, window, strides, padding, ceil_mode, dilation)
    values, indices = max_taps(x, g)
    return unbatch(values, unbatched), unbatch(indices, unbatched)


def adaptive_max_pool_with_indices(x: Any, output_size: Any) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Adaptive max pooling with PyTorch's bins and its ``return_indices=True`` indices.

    Bin ``i`` of a dim of size ``n`` is ``[floor(i n / o), ceil((i + 1) n / o))``
    (see :func:`jaxcnn.functional.pool.adaptive_bins`); ``y`` is the max over
    the box of bins, ``i`` its flat position in the input's spatial plane
    (first maximum in scan order, as PyTorch). The gradient reaches that element.

    Args:
      x: ``(N, *spatial, C)``, or unbatched ``(*spatial, C)`` with a tuple
        ``output_size``.
      output_size: int or one per spatial dim (``None`` keeps that dim).

    Returns:
      ``(values, indices)``, ``(N, *output_size, C)``; indices int32.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> v, i = F.adaptive_max_pool_with_indices(jnp.array([1., 5, 2, 0, 7]).reshape(1, 5, 1), (2,))
      >>> v[0, :, 0], i[0, :, 0]
      (Array([5., 7.], dtype=float32), Array([1, 4], dtype=int32))
    """
    x = _validate.check_array(x, "x")
    x, unbatched = pool_rank(x, output_size, arg="output_size")
    nd, output_size = adaptive_sizes(x, output_size)
    sizes = x.shape[1:-1]
    place = [math.prod(sizes[i + 1 :]) for i in range(nd)]
    gathered, flat = x, []
    for d, (n, o) in enumerate(zip(sizes, output_size)):
        bins = adaptive_bins(n, o)
        width = max(b - a for a, b in bins)
        idx = np.asarray([[min(a + j, b - 1) for j in range(width)] for a, b in bins], np.int64)
        gathered = jnp.take(gathered, jnp.asarray(idx.reshape(-1)), axis=1 + 2 * d)
        gathered = gathered.reshape(gathered.shape[: 1 + 2 * d] + (o, width) + gathered.shape[2 + 2 * d :])
        flat.append(idx * place[d])
    # gathered: (N, o1, L1, o2, L2, ..., C) -> (N, o1, o2, ..., L1 * L2 * ..., C)
    perm = (0, *range(1, 2 * nd, 2), *range(2, 2 * nd + 1, 2), 2 * nd + 1)
    boxes = jnp.transpose(gathered, perm).reshape((x.shape[0], *output_size, -1, x.shape[-1]))
    which = jnp.argmax(boxes, axis=-2)  # first max in row-major scan order: repeats come after their original
    values = jnp.take_along_axis(boxes, which[..., None, :], axis=-2)[..., 0, :]
    # flat index table (o1, ..., L1 * L2 * ...) of every tap of every box
    table: Any = np.zeros(tuple(output_size) + tuple(f.shape[1] for f in flat), np.int64)
    for d, f in enumerate(flat):
        shape = [1] * (2 * nd)
        shape[d], shape[nd + d] = f.shape
        table = table + f.reshape(shape)
    table = jnp.asarray(table.reshape(tuple(output_size) + (-1,)).astype(np.int32))
    n_idx = jnp.moveaxis(which, -1, 1)  # (N, C, *out)
    grid = tuple(
        jnp.arange(o).reshape((1, 1) + tuple(o if i == j else 1 for j in range(nd))) for i, o in enumerate(output_size)
    )
    indices = jnp.moveaxis(table[grid + (n_idx,)], 1, -1)
    return unbatch(values, unbatched), unbatch(indices.astype(jnp.int32), unbatched)
