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
grouped convolution, no scatter. ``x`` and the output gradient, each read
once per tap, are computed once into a buffer
(:func:`~jaxcnn.functional._conv_cpu.computed_once`), not recomputed from
their producers (BatchNorm, ReLU6) in every tap. Exact up to float summation order, and forward
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
from jaxcnn.functional._conv_cpu import computed_once
from jaxcnn.functional._geometry import kernel_positions, out_sizes, tap_slice

Pads = tuple[tuple[int, int], ...]


def _taps_sum(x: Any, w: Any, strides: tuple[int, ...], pads: Pads, dilation: tuple[int, ...]) -> jnp.ndarray:
    """The sum over taps of the module docstring, in float32 or wider: ``(N, *out, m * C)``."""
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
    return functools.reduce(operator.add, terms)


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
    return _taps_sum(computed_once(x, jnp.isfinite(jnp.sum(w))), w, strides, pads, dilation)


def _depthwise_jvp(strides, pads, dilation, primals, tangents):
    x, w = primals
    dx, dw = tangents
    finite = jnp.isfinite(jnp.sum(w))
    x = computed_once(x, finite)  # read by every tap: not its producers recomputed per tap
    y = _taps_sum(x, w, strides, pads, dilation)
    parts = []
    if not isinstance(dx, SymbolicZero):
        parts.append(_taps_sum(dx, w, strides, pads, dilation))
    if not isinstance(dw, SymbolicZero):
        parts.append(_chunked_taps_sum(x, dw, strides, pads, dilation))
    if not parts:
        return y, jnp.zeros_like(y)
    # the output gradient, read by every tap of the input gradient, is computed once too
    return y, computed_once(functools.reduce(operator.add, parts), finite)


_depthwise.defjvp(_depthwise_jvp, symbolic_zeros=True)


def depthwise_conv(x: Any, w: Any, strides: tuple[int, ...], pads: Pads, dilation: tuple[int, ...]) -> jnp.ndarray:
    """Cross-correlation of ``x`` ``(N, *S, C)`` with a depthwise ``w`` ``(*window, 1, m * C)``, channels-last.

    The same function as ``lax.conv_general_dilated(..., feature_group_count=C)``
    with explicit ``pads`` (negative pads crop). Returns ``(N, *out, m * C)``
    in ``x``'s dtype.
    """
    return _depthwise(x, w, strides, pads, dilation).astype(x.dtype)
