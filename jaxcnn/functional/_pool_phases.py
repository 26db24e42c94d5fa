r"""Stride phases (space-to-depth) of a padded array: every strided tap becomes a contiguous slice of one phase.

A window tap at offset :math:`d t` reads, for output :math:`o`, the padded
position :math:`s o + d t = s (o + \lfloor d t / s \rfloor) + (d t \bmod s)`
per spatial dim. After splitting ``x_p`` into its :math:`\prod s` phases

.. math::

    x^{(r)}[q] = x_p[s \odot q + r], \qquad 0 \le r < s,

the tap is the contiguous slice ``x^{(d t mod s)}[o + d t // s]`` of one
output-sized window. Written this way, JAX's automatic transpose of a sum of
tap slices is cheap: each tap's slice transposes to a plain pad (no interior
padding) into its own phase (phase-sized), the split transposes to one
concatenate and the space-to-depth reshape/transpose to one depth-to-space.
The strided-slice form instead transposes every tap to an interior-padded
array of the full input size. The sub-pixel decomposition of transposed
convolutions (Shi et al., "Real-Time Single Image and Video Super-Resolution
Using an Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016) is the
same idea.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax


class PhaseLayout(NamedTuple):
    """Where each tap lives after the phase split (all static)."""

    strides: tuple[int, ...]
    lengths: tuple[int, ...]  # P per spatial dim: each phase is (N, *P, C)
    pads: tuple[tuple[int, int], ...]  # (low, high) padding so that the padded size is s * P
    phase: list[int]  # per tap (scan order): the flat phase index, row-major over (r_1, ..., r_nd)
    start: list[tuple[int, ...]]  # per tap: the offset d t // s of its slice inside the phase


def phase_layout(sizes, window, strides, pads, dilation, out) -> PhaseLayout:
    """The phase layout of a window ``(window, strides, pads, dilation)`` over ``sizes`` giving ``out``.

    Args:
      sizes, window, strides, dilation, out: one int per spatial dim.
      pads: ``(low, high)`` per spatial dim, >= 0.

    Returns:
      A :class:`PhaseLayout`; its ``pads`` keep ``low`` and grow or shrink ``high``
      so that the padded size is ``s * P`` with ``P >= out + d (k - 1) // s``
      (every tap's slice fits) and ``s * P >= low + n`` (every input element has a phase).

    Example:
      >>> phase_layout((112,), (3,), (2,), ((1, 1),), (1,), (56,)).lengths
      (57,)
    """
    lengths = tuple(
        max(o + d * (k - 1) // s, -(-(lo + n) // s))
        for n, (lo, _), k, s, d, o in zip(sizes, pads, window, strides, dilation, out)
    )
    new_pads = tuple((lo, p * s - lo - n) for n, (lo, _), s, p in zip(sizes, pads, strides, lengths))
    phase, start = [], []
    for tap in np.ndindex(*window):
        r = [(d * t) % s for t, d, s in zip(tap, dilation, strides)]
        phase.append(int(np.ravel_multi_index(r, strides)) if r else 0)
        start.append(tuple((d * t) // s for t, d, s in zip(tap, dilation, strides)))
    return PhaseLayout(tuple(strides), lengths, new_pads, phase, start)


def split_phases(x, layout: PhaseLayout, fill) -> list[jnp.ndarray]:
    """Pad ``x`` ``(N, *spatial, C)`` with ``fill`` and split it into its phases, ``prod(s)`` arrays ``(N, *P, C)``.

    One reshape + transpose (space-to-depth) and one ``lax.split``; transposed
    (reverse mode), one concatenate + transpose (depth-to-space) + slice.

    Example:
      >>> lay = phase_layout((4,), (2,), (2,), ((0, 0),), (1,), (2,))
      >>> [p[0, :, 0].tolist() for p in split_phases(jnp.arange(4.).reshape(1, 4, 1), lay, 0.)]
      [[0.0, 2.0], [1.0, 3.0]]
    """
    n, c = x.shape[0], x.shape[-1]
    nd = len(layout.strides)
    xp = lax.pad(x, np.array(fill, x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in layout.pads), (0, 0, 0)])
    if all(s == 1 for s in layout.strides):
        return [xp]
    interleaved = [v for p, s in zip(layout.lengths, layout.strides) for v in (p, s)]
    xr = xp.reshape(n, *interleaved, c)  # (N, P_1, s_1, ..., P_nd, s_nd, C)
    perm = (*(2 + 2 * i for i in range(nd)), 0, *(1 + 2 * i for i in range(nd)), 2 * nd + 1)
    count = math.prod(layout.strides)
    stacked = xr.transpose(perm).reshape(count, n, *layout.lengths, c)
    return [part.reshape(n, *layout.lengths, c) for part in lax.split(stacked, (1,) * count, axis=0)]


def phase_tap(phases, layout: PhaseLayout, k: int, out) -> jnp.ndarray:
    """Tap number ``k``'s window values ``(N, *out, C)``: a contiguous slice of its phase."""
    part = phases[layout.phase[k]]
    begin = layout.start[k]
    return lax.slice(part, (0, *begin, 0), (part.shape[0], *(b + o for b, o in zip(begin, out)), part.shape[-1]))
