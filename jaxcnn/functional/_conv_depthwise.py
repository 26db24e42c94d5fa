r"""Depthwise convolution (``groups == C_in``) as a sum over kernel taps, for CPU.

XLA:CPU computes a grouped convolution with one group per channel one to two
orders of magnitude slower than PyTorch (jax#23713), and its weight gradient
slower still. In channels-last layout a depthwise convolution with channel
multiplier ``m`` (``C_out = m * C_in``) is a short sum of shifted slices, each
scaled per channel:

.. math::

    y[n, \mathbf{o}, c] = \sum_{\mathbf{t}} x_p[n, \mathbf{s} \odot \mathbf{o} + \mathbf{d} \odot \mathbf{t},
        \lfloor c / m \rfloor]\, w[\mathbf{t}, 0, c]

XLA fuses the whole sum into one loop vectorized over the channels. The
derivatives come from a ``custom_jvp`` whose tangent is the same sum, linear in
each argument:

.. math::

    \dot y = \mathrm{taps}(\dot x, w) + \sum_{k} \mathrm{taps}(x_{[k]}, \dot w)

The first term is JAX's transpose of the slices in reverse mode (the input
gradient: a fused sum of ``lax.pad`` with interior padding). The second is
computed over batch chunks ``x_[k]`` of
:func:`~jaxcnn.functional.cpu_rules.depthwise_chunk` examples under
``jax.checkpoint``; its transpose is the weight gradient

.. math::

    \frac{\partial L}{\partial w[\mathbf{t}, 0, c]} = \sum_k \sum_{n \in k, \mathbf{o}}
        g[n, \mathbf{o}, c]\, x_p[n, \mathbf{s} \odot \mathbf{o} + \mathbf{d} \odot \mathbf{t}, \lfloor c / m \rfloor]

one loop over the chunks whose per-tap reductions read a chunk that stays in
cache, and whose only saved residual is ``x`` itself (without the checkpoint,
JAX would save every tap's slice: ``prod(window)`` copies of the input). No
grouped convolution, no scatter.

``x`` and the output gradient are each read once per tap. Both sums run inside
a data-dependent ``lax.cond``
(:func:`~jaxcnn.functional._conv_cpu.behind_cond`), so that XLA computes
each of them once into a buffer, instead of recomputing their producers
(BatchNorm, ReLU6) in every tap, and reads a buffer that already exists (a
parameter, a saved residual) without copying it. In reverse mode JAX
transposes the tangent's cond, so the input and weight gradients read the
output gradient the same way.

Where the zero padding goes: with every stride 1 the input is padded once
(one copy, then slices of it); with a stride > 1, where the output is a
fraction of the input, each tap reads only the valid part of ``x`` and is
padded by itself inside the fused sum (:func:`_taps_sum_unpadded`), which
spares the padded copy of the whole input. Exact up to float summation order, and forward
mode (``jax.jvp``) and ``vmap`` work as for any JAX function. Sums are in
float32 (or wider) for 16-bit inputs.

When it is used, and the chunk rule: :mod:`jaxcnn.functional.cpu_rules`; the
measurements: ``benchmarks/results/cpu-rules.md`` ("depthwise").
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jaxcnn.functional import cpu_rules
from jaxcnn.functional._conv_cpu import behind_cond
from jaxcnn.functional._geometry import kernel_positions, out_sizes, tap_slice

Pads = tuple[tuple[int, int], ...]


def _operand(x: Any, w: Any) -> tuple[jnp.ndarray, Any]:
    """``x`` in the accumulation dtype (float32 or wider), its channels repeated ``m`` times; and that dtype."""
    acc = jnp.promote_types(x.dtype, jnp.float32)
    xa = x.astype(acc)
    multiplier = w.shape[-1] // x.shape[-1]
    if multiplier > 1:  # output channel o reads input channel o // m, as XLA's grouping
        xa = jnp.repeat(xa, multiplier, axis=-1)
    return xa, acc


def _taps_sum_padded(x: Any, w: Any, strides: tuple[int, ...], pads: Pads, dilation: tuple[int, ...]) -> jnp.ndarray:
    """The sum over taps on one padded copy of ``x``: ``(N, *out, m * C)`` in float32 or wider."""
    nd = x.ndim - 2
    window = tuple(w.shape[:nd])
    xa, acc = _operand(x, w)
    xp = lax.pad(xa, np.array(0, acc), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
    out = out_sizes(x.shape[1:-1], window, strides, pads, dilation)
    wa = w.astype(acc)
    terms = [
        tap_slice(xp, tap, strides, dilation, out) * wa[tap].reshape((1,) * (nd + 1) + (-1,))
        for tap in kernel_positions(window)
    ]
    return functools.reduce(operator.add, terms)


def valid_outputs(t: int, n: int, n_out: int, s: int, d: int, lo: int) -> tuple[int, int]:
    """The outputs ``[first, last]`` of one spatial dim whose input ``s * o + d * t - lo`` lies in ``[0, n)``.

    Output ``o`` of kernel position ``t`` reads padded position ``s * o + d * t``,
    i.e. input ``s * o + d * t - lo``. ``first > last`` when the tap meets padding only.
    """
    first = max(0, -((d * t - lo) // s))  # ceil((lo - d t) / s)
    last = min(n_out - 1, (n - 1 + lo - d * t) // s)
    return first, last


def _taps_sum_unpadded(x: Any, w: Any, strides: tuple[int, ...], pads: Pads, dilation: tuple[int, ...]) -> jnp.ndarray:
    """The sum over taps, each the valid slice of ``x`` padded by itself: no padded copy of ``x``.

    Tap ``t`` contributes ``x[s * o + d * t - lo] * w[t]`` for the outputs ``o``
    of :func:`valid_outputs` and zero elsewhere (a ``lax.pad`` of its slice,
    which XLA fuses into the sum); a tap that meets only padding is left out.
    """
    nd = x.ndim - 2
    window = tuple(w.shape[:nd])
    xa, acc = _operand(x, w)
    sizes = x.shape[1:-1]
    out = out_sizes(sizes, window, strides, pads, dilation)
    wa = w.astype(acc)
    terms = []
    for tap in kernel_positions(window):
        spans = [
            valid_outputs(t, n, o, s, d, lo) for t, n, o, s, d, (lo, _) in zip(tap, sizes, out, strides, dilation, pads)
        ]
        if any(first > last for first, last in spans):
            continue
        offsets = [d * t - lo for t, d, (lo, _) in zip(tap, dilation, pads)]
        start = (0, *(s * first + off for (first, _), s, off in zip(spans, strides, offsets)), 0)
        limit = (xa.shape[0], *(s * last + off + 1 for (_, last), s, off in zip(spans, strides, offsets)), xa.shape[-1])
        piece = lax.slice(xa, start, limit, (1, *strides, 1))
        config = [(0, 0, 0), *((first, o - 1 - last, 0) for (first, last), o in zip(spans, out)), (0, 0, 0)]
        piece = lax.pad(piece, np.array(0, acc), config)
        terms.append(piece * wa[tap].reshape((1,) * (nd + 1) + (-1,)))
    if not terms:
        return jnp.zeros((x.shape[0], *out, w.shape[-1]), acc)
    return functools.reduce(operator.add, terms)


def _taps_sum(x: Any, w: Any, strides: tuple[int, ...], pads: Pads, dilation: tuple[int, ...]) -> jnp.ndarray:
    """The sum over taps of the module docstring, in float32 or wider: ``(N, *out, m * C)``.

    Padded once (every stride 1) or per tap (some stride > 1); see the module
    docstring and cpu-rules.md ("depthwise").
    """
    if any(s > 1 for s in strides):
        return _taps_sum_unpadded(x, w, strides, pads, dilation)
    return _taps_sum_padded(x, w, strides, pads, dilation)


def _chunked_taps_sum(x: Any, w: Any, strides: tuple[int, ...], pads: Pads, dilation: tuple[int, ...]) -> jnp.ndarray:
    """:func:`_taps_sum` over batch chunks, each under ``jax.checkpoint`` (see the module docstring)."""
    n = x.shape[0]
    itemsize = jnp.dtype(jnp.promote_types(x.dtype, jnp.float32)).itemsize
    chunk = cpu_rules.depthwise_chunk(n, math.prod(x.shape[1:]) * itemsize)
    body = jax.checkpoint(lambda xc: _taps_sum(xc, w, strides, pads, dilation))
    if chunk == n:
        return body(x)
    ys = lax.map(body, x.reshape((n // chunk, chunk) + x.shape[1:]))
    return ys.reshape((n,) + ys.shape[2:])


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _depthwise(x: Any, w: Any, strides: tuple[int, ...], pads: Pads, dilation: tuple[int, ...]) -> jnp.ndarray:
    taps = lambda x, w: _taps_sum(x, w, strides, pads, dilation)
    return behind_cond(taps, jnp.isfinite(jnp.sum(w)), x, w)


def _depthwise_jvp(strides, pads, dilation, primals, tangents):
    x, w = primals
    dx, dw = tangents
    finite = jnp.isfinite(jnp.sum(w))
    y = behind_cond(lambda x, w: _taps_sum(x, w, strides, pads, dilation), finite, x, w)
    linear = []  # (tangent, its term): x and w enter each branch as residuals, the tangents as operands
    if not isinstance(dx, SymbolicZero):
        linear.append((dx, lambda dx: _taps_sum(dx, w, strides, pads, dilation)))
    if not isinstance(dw, SymbolicZero):
        linear.append((dw, lambda dw: _chunked_taps_sum(x, dw, strides, pads, dilation)))
    if not linear:
        return y, jnp.zeros_like(y)
    terms = [term for _, term in linear]
    tangent = lambda *ts: functools.reduce(operator.add, [term(t) for term, t in zip(terms, ts)])
    return y, behind_cond(tangent, finite, *(t for t, _ in linear))


_depthwise.defjvp(_depthwise_jvp, symbolic_zeros=True)


def depthwise_conv(x: Any, w: Any, strides: tuple[int, ...], pads: Pads, dilation: tuple[int, ...]) -> jnp.ndarray:
    """Cross-correlation of ``x`` ``(N, *S, C)`` with a depthwise ``w`` ``(*window, 1, m * C)``, channels-last.

    The same function as ``lax.conv_general_dilated(..., feature_group_count=C)``
    with explicit ``pads`` (negative pads crop). Returns ``(N, *out, m * C)``
    in ``x``'s dtype.
    """
    return _depthwise(x, w, strides, pads, dilation).astype(x.dtype)
