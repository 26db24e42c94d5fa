r"""The tangent of a strided transposed convolution as batch-chunked matrix products and col2im.

The transposed convolution is linear in ``y`` and in the kernel ``w``, so its
tangent is the op itself on ``(dy, w) + (y, dw)``. Written here as PyTorch
writes the op: per example, one matrix product ``Z = y W^T`` with the
``prod(k)`` taps on the columns, then col2im (every tap's column block added
at its stride-shifted position), then the crop. With the kernel zero-padded to
``T * s`` taps per dim (``T = ceil(k / s)``), tap ``t = s m + p`` of block
``i`` lands on block ``i + m``, phase ``p``, so col2im is ``prod(T)``
block-shifted copies with no stride:

.. math::

    x_{full}[\mathbf{s} \odot (\mathbf{i} + \mathbf{m}) + \mathbf{p}]
        \mathrel{+}= Z[\mathbf{i}, (\mathbf{m}, \mathbf{p})], \qquad
    Z = dy\, W^T + y\, dW^T .

What matters is the transpose JAX takes of it for reverse mode: the pad of
the output gradient ``g`` (the crop's transpose), im2col ``P[i, t] = g_full[s
i + t]`` (the shifted slices, concatenated in one fusion: ``lax.split``'s
transpose), and two matrix products with the op's multiply-adds (exactly,
when ``s`` divides ``k``), ``dy = P W`` and ``dW^T = y^T P``. Nothing else:
no output blocks past the crop, no separate transpose of ``g``. The batch goes through in chunks (:func:`lax.scan`) whose ``P`` holds
at most :data:`~jaxcnn.functional.cpu_rules.TRANSPOSE_CHUNK_BYTES`: XLA:CPU
allocates its temporary buffer on every call, and past glibc's 32 MiB mmap
threshold the kernel maps it afresh, one page fault per 4 KiB, which cost more
than the whole im2col (cpu-rules.md, "transpose").

Reference: Dumoulin & Visin, "A guide to convolution arithmetic for deep
learning", 2016, sec. 4 (transposed convolution as the adjoint of im2col).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from jaxcnn.functional.cpu_rules import transpose_chunk

Pads = tuple[tuple[int, int], ...]


def _kernel_operand(w: Any, taps: tuple[int, ...], strides: tuple[int, ...], groups: int, acc: Any) -> jnp.ndarray:
    """``(*k, C_in/G, C_out)`` zero-padded to ``T * s`` taps, as :func:`_columns` reads it, in ``acc``.

    ``groups == 1``: the matrix ``W^T`` ``(C_out, prod(T s) * C_in)``, formed
    outside the batch loop so that the kernel gradient accumulates in this
    orientation (``y^T P``, XLA:CPU's faster one; cpu-rules.md, "transpose").
    Else ``(prod(T s), C_in/G, G, C_out/G)``.
    """
    nd = len(strides)
    pad = [(0, m * s - k) for m, s, k in zip(taps, strides, w.shape[:nd])] + [(0, 0), (0, 0)]
    w = jnp.pad(w.astype(acc), pad)
    c_in_g, c_out = w.shape[-2:]
    # (T1, s1, T2, s2, ...) -> (T1, T2, ..., s1, s2, ...): the block taps first, as _col2im splits them
    w = w.reshape(tuple(d for t, s in zip(taps, strides) for d in (t, s)) + (c_in_g, c_out))
    w = w.transpose(tuple(range(0, 2 * nd, 2)) + tuple(range(1, 2 * nd, 2)) + (2 * nd, 2 * nd + 1))
    if groups == 1:
        return w.reshape((-1, c_out)).T
    return w.reshape((-1, c_in_g, groups, c_out // groups))


def _columns(v: Any, wk: Any, groups: int) -> jnp.ndarray:
    """``Z = v W^T``: ``v`` ``(M, C_out)``, ``wk`` from :func:`_kernel_operand` -> ``(M, T * C_in)``, taps major."""
    if groups == 1:  # one matrix product (a size-1 group axis makes XLA transpose the operands)
        return jnp.dot(v, wk)
    z = jnp.einsum("mgo,tcgo->mtgc", v.reshape((v.shape[0], groups, -1)), wk)
    return z.reshape((v.shape[0], -1))


def _col2im(z: Any, sizes: tuple[int, ...], taps: tuple[int, ...], strides: tuple[int, ...]) -> jnp.ndarray:
    """``(B, *n, prod(T), *s, C)`` columns -> the uncropped output ``(B, *((n + T - 1) * s), C)``.

    The ``prod(T)`` block taps' parts (``lax.split``) are shifted by their
    block offset ``m`` (one pad) and summed; then the phases interleave into
    space.
    """
    nd = len(sizes)
    b, c = z.shape[0], z.shape[-1]
    parts = lax.split(z, (1,) * math.prod(taps), axis=1 + nd)
    shifted = []
    for m, part in zip(itertools.product(*(range(t) for t in taps)), parts):
        config = [(0, 0, 0)] + [(o, t - 1 - o, 0) for o, t in zip(m, taps)] + [(0, 0, 0)] * (nd + 2)
        shifted.append(lax.pad(part, jnp.zeros((), z.dtype), config))
    x = sum(shifted[1:], shifted[0])  # (B, *J, 1, *s, C)
    perm = (0,) + tuple(a for i in range(nd) for a in (1 + i, 1 + nd + i)) + (1 + 2 * nd,)
    x = x.reshape((b, *x.shape[1 : 1 + nd], *strides, c)).transpose(perm)
    return x.reshape((b, *((n + t - 1) * s for n, t, s in zip(sizes, taps, strides)), c))


def conv_transpose_tangent(
    y: Any,
    w: Any,
    dy: Any,
    dw: Any,
    strides: tuple[int, ...],
    pads: Pads,
    extra: tuple[int, ...],
    groups: int,
) -> jnp.ndarray:
    """The transposed convolution's tangent at ``(y, w)`` along ``(dy, dw)`` (either a ``SymbolicZero``).

    ``conv_transpose(dy, w) + conv_transpose(y, dw)``, with the geometry of
    :func:`jaxcnn.functional._conv_transpose_cpu.conv_transpose_subpixel`:
    the uncropped output of size ``(n - 1) * s + k + extra`` per spatial dim,
    ``pads[i] = (lo, hi)`` cropped off.

    Args:
      y, dy: ``(N, *n, C_out)``.
      w, dw: ``(*k, C_in // groups, C_out)``.
      strides, pads, extra, groups: as for ``conv_transpose_subpixel``.

    Returns:
      ``(N, *out, C_in)`` in ``y``'s dtype, ``out = (n - 1) * s - lo - hi + k
      + extra`` (accumulated in float32 or wider).

    Example:
      >>> import jax.numpy as jnp
      >>> y, w = jnp.ones((1, 3, 1)), jnp.ones((2, 1, 1))
      >>> conv_transpose_tangent(y, w, y, w, (2,), ((0, 0),), (0,), 1)[0, :, 0]
      Array([2., 2., 2., 2., 2., 2.], dtype=float32)
    """
    nd = len(strides)
    batch, sizes, c_out = y.shape[0], tuple(y.shape[1 : 1 + nd]), y.shape[-1]
    window = tuple(w.shape[:nd])
    c_in = w.shape[-2] * groups
    taps = tuple(math.ceil(k / s) for k, s in zip(window, strides))
    acc = jnp.promote_types(y.dtype, jnp.float32)
    cols = math.prod(taps) * math.prod(strides) * c_in
    chunk = transpose_chunk(batch, math.prod(sizes) * cols * jnp.dtype(acc).itemsize)
    rows = chunk * math.prod(sizes)

    def stack(v):  # (N, *n, C_out) -> (N / chunk, chunk * prod(n), C_out) in acc
        return v.astype(acc).reshape((batch // chunk, rows, c_out))

    terms = []  # (operand chunks, kernel matrix) pairs of Z = v W^T
    if not isinstance(dy, SymbolicZero):
        terms.append((stack(dy), _kernel_operand(w, taps, strides, groups, acc)))
    if not isinstance(dw, SymbolicZero):
        terms.append((stack(y), _kernel_operand(dw, taps, strides, groups, acc)))
    if not terms:
        return jnp.zeros(_out_shape(y, window, strides, pads, extra, c_in), y.dtype)

    def body(carry, vs):
        z = _columns(vs[0], terms[0][1], groups)
        for v, (_, wk) in zip(vs[1:], terms[1:]):
            z = z + _columns(v, wk, groups)
        block = (chunk, *sizes, math.prod(taps), *strides, c_in)
        return carry, _col2im(z.reshape(block), sizes, taps, strides)

    _, x = lax.scan(body, None, tuple(v for v, _ in terms))
    x = x.reshape((batch, *x.shape[2:]))
    full = [(n + t - 1) * s for n, t, s in zip(sizes, taps, strides)]
    outs = _out_shape(y, window, strides, pads, extra, c_in)[1:-1]
    crop = [(0, 0, 0)] + [(-lo, lo + o - f, 0) for (lo, _), o, f in zip(pads, outs, full)] + [(0, 0, 0)]
    return lax.pad(x, jnp.zeros((), acc), crop).astype(y.dtype)


def _out_shape(y, window, strides, pads, extra, c_in) -> tuple[int, ...]:
    """``(N, *((n - 1) * s - lo - hi + k + extra), C_in)``."""
    nd = len(strides)
    sizes = y.shape[1 : 1 + nd]
    outs = tuple((n - 1) * s - lo - hi + k + e for n, s, (lo, hi), k, e in zip(sizes, strides, pads, window, extra))
    return (y.shape[0], *outs, c_in)
