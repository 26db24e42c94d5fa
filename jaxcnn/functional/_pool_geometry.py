"""Where the windows of one pooling call lie: argument checks, output sizes, unbatched inputs.

One helper per rule, shared by every pooling function of :mod:`jaxcnn.functional.pool`:

- :func:`pool_rank` decides how many spatial dims ``x`` has and whether it
  carries a batch axis (PyTorch accepts unbatched ``(C, *spatial)``; here an
  unbatched input is ``(*spatial, C)``);
- :func:`pool_geometry` validates window, strides, dilation, padding and
  ``ceil_mode`` against the (batched) input and lays the windows out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxcnn import _validate


def pool_rank(x: Any, window: Any, name: str = "x", arg: str = "window") -> tuple[Any, bool]:
    """``(x, unbatched)``: ``x`` with a batch axis, and whether one was added.

    A window given as a sequence pins the spatial rank (``window=(3, 3)``
    means 2 spatial dims): then ``x`` may be batched ``(N, *spatial, C)`` or
    unbatched ``(*spatial, C)``, as PyTorch's ``max_pool2d`` accepts
    ``(C, H, W)``. An int window pins nothing, and ``x`` is read as batched,
    the library's convention: a rank-3 ``x`` is ``(N, L, C)``, rank 4
    ``(N, H, W, C)``. (An unbatched image with an int window would silently
    be read as a batch of 1-D signals, so give an unbatched input a tuple
    window, or add the batch axis with ``x[None]``.)

    Args:
      x: the input.
      window: the argument that may pin the rank (``output_size`` for the
        adaptive pools).
      name: the input's name in error messages.
      arg: the pinning argument's name in error messages.
    """
    x = _validate.check_array(x, name)
    if not (isinstance(window, Sequence) and not isinstance(window, (str, bytes))):
        return _validate.spatial_input(x, name)[0], False
    nd = len(window)
    if nd not in _validate.SPATIAL_DIMS:
        raise ValueError(f"{arg} must be an int or 1, 2 or 3 ints (one per spatial dim), got {window!r}")
    if x.ndim == nd + 2:
        return x, False
    if x.ndim == nd + 1:
        return jnp.expand_dims(x, 0), True
    raise ValueError(
        f"{arg} must be an int or a sequence of {x.ndim - 2} ints (one per spatial dim of {name} of shape "
        f"{tuple(x.shape)}), or of {x.ndim - 1} ints if {name} is unbatched (*spatial, C); got "
        f"{tuple(window)!r} with {nd} entries"
    )


def unbatch(y: Any, unbatched: bool) -> Any:
    """Drop the batch axis :func:`pool_rank` added."""
    return y[0] if unbatched else y


class PoolGeometry(NamedTuple):
    """Where every pooling window of one call lies.

    Attributes:
      window: window size per spatial dim.
      strides: stride per spatial dim.
      pads: the user's ``(low, high)`` padding per spatial dim.
      extra: extra high padding that ``ceil_mode`` adds per spatial dim.
      out: output size per spatial dim.
      dilation: spacing of the window's taps per spatial dim (1: dense).
    """

    window: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    extra: tuple[int, ...]
    out: tuple[int, ...]
    dilation: tuple[int, ...] = ()

    @property
    def total_pads(self) -> tuple[tuple[int, int], ...]:
        return tuple((lo, hi + e) for (lo, hi), e in zip(self.pads, self.extra))

    @property
    def k_eff(self) -> tuple[int, ...]:
        """Effective window extent ``(k - 1) * d + 1`` per spatial dim."""
        return _validate.effective_size(self.window, self.dilation or (1,) * len(self.window))


def pool_geometry(
    x: Any, window: Any, strides: Any, padding: Any, ceil_mode: bool = False, dilation: Any = 1
) -> PoolGeometry:
    """Validate pooling arguments against ``x`` ``(N, *spatial, C)`` and lay out the windows.

    ``strides=None`` means ``strides = window``. With ``dilation`` ``d`` the
    window's taps are ``d`` apart and it spans ``k_eff = (k - 1) d + 1``, which
    replaces ``k`` in every size rule. Every window must overlap the input
    (and, with ``ceil_mode``, the last one must start inside the input or the
    low padding, as PyTorch); a window seeing only padding is an error.
    """
    _, nd = _validate.spatial_input(x, "x")
    window = _validate.tuple_arg(window, nd, "window")
    strides = window if strides is None else _validate.tuple_arg(strides, nd, "strides")
    dilation = _validate.tuple_arg(dilation, nd, "dilation")
    ceil_mode = _validate.check_bool(ceil_mode, "ceil_mode")
    k_eff = _validate.effective_size(window, dilation)
    sizes = tuple(x.shape[1:-1])
    pads = _validate.padding_pairs(padding, sizes, k_eff, strides)
    _validate.check_pad_fits(sizes, pads, k_eff, what=f"pooling window {window} with dilation {dilation}")
    out = tuple(_validate.out_size(n, p, k, s, ceil_mode) for n, p, k, s in zip(sizes, pads, k_eff, strides))
    for i, (n, (lo, _), k, s, o) in enumerate(zip(sizes, pads, k_eff, strides, out)):
        if lo >= k or (o - 1) * s - lo >= n:
            raise ValueError(
                f"padding {pads} with window {window} and strides {strides} leaves a window that "
                f"sees only padding along spatial dim {i} (input size {n}); use a padding smaller "
                f"than the window"
            )
    extra = tuple(
        max((o - 1) * s + k - (n + lo + hi), 0) for n, (lo, hi), k, s, o in zip(sizes, pads, k_eff, strides, out)
    )
    return PoolGeometry(window, strides, pads, extra, out, dilation)


def full_axes(g: PoolGeometry) -> tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...], tuple[int, ...]]:
    """Window, strides, padding and window dilation over all axes of ``(N, *spatial, C)`` for ``lax.reduce_window``."""
    dilation = g.dilation or (1,) * len(g.window)
    return (1, *g.window, 1), (1, *g.strides, 1), ((0, 0), *g.total_pads, (0, 0)), (1, *dilation, 1)


def lowest(dtype) -> Any:
    """The value max pooling pads with: ``-inf`` for floats, the minimum for integers."""
    if jnp.issubdtype(dtype, jnp.floating):
        return -jnp.inf
    if jnp.issubdtype(dtype, jnp.integer):
        return jnp.iinfo(dtype).min
    raise TypeError(f"x must have a numeric dtype for max pooling, got dtype {dtype}")


def window_counts(sizes, g: PoolGeometry, include_pad: bool, divisor_override: int | None = None) -> np.ndarray:
    """The divisor of each average-pooling window, ``(1, *out, 1)`` (static, NumPy).

    ``divisor_override``: that number for every window (PyTorch's option of
    the same name). Else ``include_pad``: count the user's padding (never the
    ``ceil_mode`` overhang), as PyTorch's ``count_include_pad=True``; or only
    real input elements.
    """
    if divisor_override is not None:
        return np.full((1, *g.out, 1), float(divisor_override))
    per_dim = []
    for n, (lo, hi), k, s, o in zip(sizes, g.pads, g.window, g.strides, g.out):
        a, b = (-lo, n + hi) if include_pad else (0, n)
        start = np.arange(o) * s - lo
        per_dim.append(np.minimum(start + k, b) - np.maximum(start, a))
    counts = per_dim[0]
    for c in per_dim[1:]:
        counts = np.multiply.outer(counts, c)
    return counts.reshape((1, *g.out, 1))


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive-pool bins: bin ``i`` is ``[floor(i n / o), ceil((i + 1) n / o))``."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def adaptive_sizes(x: Any, output_size: Any) -> tuple[int, tuple[int, ...]]:
    """``(num_spatial_dims, output_size)`` for adaptive pooling of batched ``x`` (``None`` keeps a dim)."""
    x, nd = _validate.spatial_input(x, "x")
    if isinstance(output_size, (tuple, list)):
        output_size = tuple(n if o is None else o for o, n in zip(output_size, x.shape[1:-1])) + tuple(output_size[nd:])
    return nd, _validate.tuple_arg(output_size, nd, "output_size")
