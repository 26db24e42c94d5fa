"""How :func:`jaxcnn.functional.conv` runs on CPU: a fused "taps" forward and a batch-chunked backward.

XLA:CPU lowers ``lax.conv_general_dilated`` to a library convolution that is
fast for many channels and slow for few. With few channels the convolution is
faster written as

.. math::

    y[b, o, \\mathbf{p}, n] = \\sum_{\\mathbf{t}} \\sum_i w[\\mathbf{t}, i, o]\\,
        x_{pad}[b, i, \\mathbf{s} \\odot \\mathbf{p} + \\mathbf{d} \\odot \\mathbf{t}, n]

in a *tiled batch-last* layout ``(N / T, C, *spatial, T)``: each term is a
strided slice of the padded input times one weight, XLA fuses the whole sum
into one loop vectorized over the ``T`` examples of a tile, and small tiles
(:data:`~jaxcnn.functional.cpu_rules.TILE`) keep the rows that loop re-reads
for every output channel in cache. The sum sits behind a data-dependent
``lax.cond`` so that XLA computes it once instead of copying it into each of
its consumers (see :func:`_materialized`).

Derivatives come from a ``custom_jvp`` whose tangent is XLA's own convolution
of the tangents, computed in chunks of
:func:`~jaxcnn.functional.cpu_rules.chunk_size` examples. JAX transposes that
linear map for reverse mode, which gives XLA's input and weight gradients (dW
summed over chunks): forward mode (``jax.jvp``, ``jacfwd``) works as for any
JAX function, and each chunk's operands stay in cache. The convolutions are
:mod:`jaxcnn.functional._conv_canonical`'s, whose transposes are written
channels-last, so the gradients run in XLA:CPU's library kernels inside a
loop body too (a ``grad_accum`` scan, ``steps_per_call`` as a loop).
Chunking changes no number beyond float summation order. The input and the
output gradient that the weight gradient reads are each computed once, into
one buffer (:func:`computed_once`), not recomputed inside XLA's layout
transposes, in wide layers
(:func:`~jaxcnn.functional.cpu_rules.gradient_operands_once`). Written as taps, the
backward passes (a col2im of ``W^T g``, a stride-phase decomposition) were
slower than XLA's, so only the forward is rewritten.

When each path is chosen, and the measurements behind it:
:mod:`jaxcnn.functional.cpu_rules` and ``benchmarks/results/cpu-rules.md``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jaxcnn.functional._conv_canonical import conv_channels_last
from jaxcnn.functional._geometry import kernel_positions, out_sizes
from jaxcnn.functional.cpu_rules import chunk_size, gradient_operands_once, tile_size

Pads = tuple[tuple[int, int], ...]


def _acc_dtype(dtype) -> Any:
    """Accumulate in at least float32 (bf16/f16 sums of many terms lose digits)."""
    return jnp.promote_types(dtype, jnp.float32)


def to_tiles(x: Any, t: int) -> jnp.ndarray:
    """``(N, *S, C) -> (N / t, C, *S, t)``: batch-last within tiles of ``t`` examples."""
    nd = x.ndim - 2
    return x.reshape((x.shape[0] // t, t) + x.shape[1:]).transpose((0, nd + 2) + tuple(range(2, nd + 2)) + (1,))


def from_tiles(y: Any) -> jnp.ndarray:
    """``(N / t, C, *S, t) -> (N, *S, C)``, the inverse of :func:`to_tiles`."""
    nd = y.ndim - 3
    z = y.transpose((0, nd + 2) + tuple(range(2, nd + 2)) + (1,))
    return z.reshape((z.shape[0] * z.shape[1],) + z.shape[2:])


def taps_sum(xt: Any, w: Any, strides, dilation, out) -> jnp.ndarray:
    """The fused loop on a padded tiled input ``(N/t, C_in, *S_pad, t)`` -> ``(N/t, C_out, *out, t)``."""
    nd = xt.ndim - 3
    window, c_in, c_out = w.shape[:nd], w.shape[-2], w.shape[-1]
    acc = None
    for tap in kernel_positions(window):
        start = (0, 0, *(k * d for k, d in zip(tap, dilation)), 0)
        limit = (
            xt.shape[0],
            c_in,
            *(k * d + (o - 1) * s + 1 for k, d, o, s in zip(tap, dilation, out, strides)),
            xt.shape[-1],
        )
        sl = lax.slice(xt, start, limit, (1, 1, *strides, 1))
        for i in range(c_in):
            term = w[tap + (i,)].reshape((1, c_out) + (1,) * (nd + 1)) * sl[:, i : i + 1]
            acc = term if acc is None else acc + term
    assert acc is not None  # a kernel has at least one tap and one input channel
    return acc


def taps_forward(x: Any, w: Any, strides, pads: Pads, dilation) -> jnp.ndarray:
    """Cross-correlation of ``x`` ``(N, *S, C_in)`` with ``w`` ``(*window, C_in, C_out)`` by the taps loop.

    The sum is computed in float32 (or wider) whatever ``x``'s dtype, i.e. at
    the highest precision: there is no ``precision`` to choose.

    The layout changes happen *outside* the loop's conditional (see
    :func:`_materialized`), so XLA can fuse them with neighbouring elementwise
    work: two taps layers in a row with a ReLU between exchange tiles with no
    transpose at all. ``pads`` may be negative (cropping). Returns
    ``(N, *out, C_out)`` in ``x``'s dtype.
    """
    nd = x.ndim - 2
    window = w.shape[:nd]
    out = out_sizes(x.shape[1:-1], window, strides, pads, dilation)
    acc_dtype = _acc_dtype(x.dtype)
    xt = to_tiles(x.astype(acc_dtype), tile_size(x.shape[0]))
    xt = lax.pad(xt, jnp.zeros((), acc_dtype), [(0, 0, 0)] * 2 + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)])
    yt = _materialized(xt, x.astype(acc_dtype), w.astype(acc_dtype), strides, pads, dilation, out)
    return from_tiles(yt).astype(x.dtype)


def _materialized(xt, x, w, strides, pads, dilation, out):
    """:func:`taps_sum` of the tiled input ``xt``, computed once: behind a data-dependent ``lax.cond``.

    XLA treats the fused sum as cheap elementwise work and copies it into every
    consumer (a ReLU, the ReLU's gradient mask, the next layer's transposed
    input), recomputing all its terms in each, in the consumer's loop order
    (three copies, each slower than the one sum; cpu-rules.md, "cond"). XLA:CPU
    strips ``optimization_barrier``, but it cannot fuse across a conditional
    whose predicate it cannot evaluate. The predicate is "all weights finite";
    the other branch is XLA's own convolution of ``x`` (laid out as tiles), so
    the result is the convolution's whatever the weights hold.
    """
    finite = jnp.isfinite(jnp.sum(w))
    t = xt.shape[-1]
    return lax.cond(
        finite,
        lambda xt, x, w: taps_sum(xt, w, strides, dilation, out),
        lambda xt, x, w: to_tiles(_lax_conv(x, w, strides, pads, dilation, None), t),
        xt,
        x,
        w,
    )


def _lax_conv(x, w, strides, pads, dilation, precision):
    """XLA's convolution, whose derivatives stay library convolutions inside loops (:mod:`._conv_canonical`)."""
    return conv_channels_last(x, w, strides, pads, None, dilation, precision)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def conv_cpu(
    x, w, strides: tuple[int, ...], pads: Pads, dilation: tuple[int, ...], precision: Any = None, forward: str = "taps"
):
    """Cross-correlation of ``x`` ``(N, *spatial, C_in)`` with ``w`` ``(*window, C_in, C_out)`` (groups 1).

    The same function as ``lax.conv_general_dilated`` with explicit ``pads``.
    ``forward="taps"`` computes the value with the taps loop, ``"xla"`` with
    XLA's convolution (at ``precision``; the taps sum is always float32 or
    wider); derivatives are XLA's at ``precision``, in batch chunks (module
    docstring).
    """
    return _forward(x, w, strides, pads, dilation, precision, forward)


def _forward(x, w, strides, pads, dilation, precision, forward):
    if forward == "taps":
        return taps_forward(x, w, strides, pads, dilation)
    return _lax_conv(x, w, strides, pads, dilation, precision)


def _conv_cpu_jvp(strides, pads, dilation, precision, forward, primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = _forward(x, w, strides, pads, dilation, precision, forward)
    zero_x, zero_w = isinstance(dx, SymbolicZero), isinstance(dw, SymbolicZero)
    if zero_x and zero_w:
        return y, jnp.zeros_like(y)
    n = x.shape[0]
    chunk = chunk_size(n)
    once = gradient_operands_once(w.shape[-2], w.shape[-1])
    finite = jnp.isfinite(jnp.sum(w)) if once else None
    if once and not zero_w:
        x = computed_once(x, finite)
    parts = []
    for i in range(0, n, chunk):
        part = None
        if not zero_x:
            part = _lax_conv(dx[i : i + chunk], w, strides, pads, dilation, precision)
        if not zero_w:
            term = _lax_conv(x[i : i + chunk], dw, strides, pads, dilation, precision)
            part = term if part is None else part + term
        parts.append(part)
    dy = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=0)
    dy = dy.astype(y.dtype)
    return y, computed_once(dy, finite) if once else dy


def computed_once(v, finite):
    """``v`` itself, behind a data-dependent ``lax.cond`` so that XLA computes it once, into one buffer.

    The weight gradient's convolution reads ``x`` and the output gradient in a
    transposed layout (batch last). Without this, XLA fuses their producers
    (the BatchNorm backward, ReLU masks, the residual sums of several blocks)
    into that transposing loop and recomputes them there in a cache-hostile
    order: 1-2 s per ResNet-18 step in ``transpose_copy_fusion`` (cpu-rules.md,
    "cond-grad"). The other branch (``v * 1``) computes the same values; the
    predicate is "all weights finite", which XLA cannot evaluate. Linear in
    ``v``, so JAX transposes it (the output gradient, in reverse mode).
    """
    return behind_cond(lambda v: v, finite, v)


def behind_cond(fn, finite, *operands):
    """``fn(*operands)`` behind a data-dependent ``lax.cond``: its operands are buffers, computed once.

    XLA cannot fuse an operand's producers across a conditional whose
    predicate it cannot evaluate (``finite``, "all weights finite"), so each
    operand is computed once into a buffer (or passed as the buffer it already
    is) however often ``fn`` reads it. The other branch computes the same
    values (``fn`` of ``operand * 1``). JAX differentiates and transposes the
    cond like any other: the branches are linear where ``fn`` is.
    :func:`computed_once` is ``fn`` the identity, which copies ``v`` into the
    cond's output; putting the reader inside the cond (the depthwise sums)
    spares that copy.
    """
    return lax.cond(finite, fn, lambda *ops: fn(*(op * 1 for op in ops)), *operands)


conv_cpu.defjvp(_conv_cpu_jvp, symbolic_zeros=True)
