r"""Depthwise convolution (``groups == C_in``) as a sum over kernel taps, for CPU.

XLA:CPU computes a grouped convolution with one group per channel one to two
orders of magnitude slower than PyTorch (jax#23713), and its weight gradient
slower still. In channels-last layout a depthwise convolution with channel
multiplier ``m`` (``C_out = m * C_in``) is a short sum of shifted slices, each
scaled per channel:

.. math::

    y[n, \mathbf{o}, c] = \sum_{\mathbf{t}} x_p[n, \mathbf{s} \odot \mathbf{o} + \mathbf{d} \odot \mathbf{t},
        \lfloor c / m \rfloor]\, w[\mathbf{t}, 0, c]

XLA fuses the whole sum into one loop vectorized over the channels. Its
derivatives are JAX's transposes of the same slices, written by hand nowhere
and exact: the input gradient is a fused sum of ``lax.pad`` with interior
padding (slice -> pad), the weight gradient one reduction per tap of the
output gradient times that tap's slice (no grouped convolution anywhere, no
scatter). Sums are in float32 (or wider) for 16-bit inputs.

When it is used: :func:`jaxcnn.functional.cpu_rules.choose_algorithm`; the
measurements: ``benchmarks/results/`` (primitives, ``depthwise`` rows).
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.functional._geometry import kernel_positions, out_sizes, tap_slice

Pads = tuple[tuple[int, int], ...]


def depthwise_conv(x: Any, w: Any, strides: tuple[int, ...], pads: Pads, dilation: tuple[int, ...]) -> jnp.ndarray:
    """Cross-correlation of ``x`` ``(N, *S, C)`` with a depthwise ``w`` ``(*window, 1, m * C)``, channels-last.

    The same function as ``lax.conv_general_dilated(..., feature_group_count=C)``
    with explicit ``pads`` (negative pads crop). Returns ``(N, *out, m * C)``
    in ``x``'s dtype.
    """
    nd = x.ndim - 2
    window, c = tuple(w.shape[:nd]), x.shape[-1]
    multiplier = w.shape[-1] // c
    acc = jnp.promote_types(x.dtype, jnp.float32)
    xa = x.astype(acc)
    if multiplier > 1:  # output channel o reads input channel o // m, as XLA's grouping
        xa = jnp.repeat(xa, multiplier, axis=-1)
    xp = lax.pad(xa, np.array(0, acc), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
    out = out_sizes(x.shape[1:-1], window, strides, pads, dilation)
    wa = w.astype(acc)
    terms = [
        tap_slice(xp, tap, strides, dilation, out) * wa[tap].reshape((1,) * (nd + 1) + (-1,))
        for tap in kernel_positions(window)
    ]
    return functools.reduce(operator.add, terms).astype(x.dtype)
