"""Convolution and pooling geometry shared by conv, pool and their CPU paths: layouts, kernel positions, sizes."""

from __future__ import annotations

import itertools

from jax import lax


def dimension_numbers(nd: int) -> lax.ConvDimensionNumbers:
    """Channels-last dimension numbers: ``(N, *spatial, C)`` inputs, ``(*window, I, O)`` kernels."""
    spatial = "DHW"[-nd:]
    lhs = "N" + spatial + "C"
    return lax.conv_dimension_numbers((1,) * (nd + 2), (1,) * (nd + 2), (lhs, spatial + "IO", lhs))


def kernel_positions(window: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every position in a window, in the row-major (scan) order of its axes: ``(0, 0), (0, 1), ...``."""
    return list(itertools.product(*(range(k) for k in window)))


def out_sizes(sizes, window, strides, pads, dilation) -> tuple[int, ...]:
    """``floor((n + lo + hi - k_eff) / s) + 1`` per spatial dim, ``k_eff = (k - 1) * d + 1``."""
    return tuple(
        (n + lo + hi - ((k - 1) * d + 1)) // s + 1
        for n, (lo, hi), k, s, d in zip(sizes, pads, window, strides, dilation)
    )


def tap_slice(xp, tap, strides, dilation, out):
    """The strided slice of padded ``xp`` ``(N, *S_pad, C)`` that kernel position ``tap`` meets: ``(N, *out, C)``.

    Element ``o`` of the slice is ``xp[s * o + d * tap]`` per spatial dim.
    """
    start = (0, *(t * d for t, d in zip(tap, dilation)), 0)
    limit = (xp.shape[0], *(t * d + (o - 1) * s + 1 for t, d, o, s in zip(tap, dilation, out, strides)), xp.shape[-1])
    return lax.slice(xp, start, limit, (1, *strides, 1))
