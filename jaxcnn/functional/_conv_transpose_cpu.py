r"""Strided transposed convolution as one stride-1 convolution and a depth-to-space ("subpixel").

A transposed convolution with stride ``s`` scatters every input value ``y[i]``
times the kernel into the output at ``s * i``; XLA writes it as a convolution
of ``y`` dilated by ``s`` (``s - 1`` zeros between values), so ``(s^d - 1) /
s^d`` of its multiply-adds meet an inserted zero, and XLA:CPU runs it far
slower than PyTorch (jax#23783, jax#31662; cpu-rules.md, "transpose"). Per spatial dim, split the
(uncropped) output position ``q = s j + p`` by its phase ``p in [0, s)``: only
the taps ``t = s m + p`` reach it, from ``y[j - m]``, so

.. math::

    x_{full}[s \mathbf{j} + \mathbf{p}, c_i] = \sum_{\mathbf{m}} \sum_{c_o \in g(c_i)}
        y[\mathbf{j} - \mathbf{m}, c_o]\, w[\mathbf{s} \odot \mathbf{m} + \mathbf{p}, c_i, c_o]

with the kernel zero-padded to ``s * ceil(k / s)`` taps per dim: for each of
the ``s^d`` phases, an ordinary stride-1 (full, flipped) convolution of the
*undilated* ``y`` with the sub-kernel ``w[p::s]``. All phases' sub-kernels are
stacked on the output-channel axis (``C_in * s^d`` outputs, window
``ceil(k / s)``), so the whole op is one stride-1 convolution -- ``1 / s^d`` of
XLA's work -- followed by one transpose that interleaves the phases into space
(depth-to-space) and crops the padding. Its tangent is PyTorch's form of the
op (:mod:`jaxcnn.functional._conv_transpose_cols`: matrix products and col2im,
in batch chunks), so both gradients are im2col of the output gradient and two
matrix products with exactly the op's multiply-adds: XLA:CPU's derivative
convolutions of these shapes are slower, the kernel gradient by orders of
magnitude.

Only for ``dilation == 1`` (the caller keeps XLA's path otherwise); any number
of spatial dims, per-dim strides (a stride-1 dim has one phase), any kernel
size, padding, output padding and groups.

Reference: Shi et al., "Is the deconvolution layer the same as a convolutional
layer?", arXiv:1609.07009, 2016; Dumoulin & Visin, "A guide to convolution
arithmetic for deep learning", 2016, sec. 4.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn.functional._conv_transpose_cols import conv_transpose_tangent
from jaxcnn.functional._geometry import dimension_numbers

Pads = tuple[tuple[int, int], ...]


def _phase_kernel(kernel: Any, strides: tuple[int, ...], groups: int) -> jnp.ndarray:
    """``(*k, C_in/G, C_out)`` -> the stacked flipped sub-kernels ``(*ceil(k/s), C_out/G, G * prod(s) * C_in/G)``.

    Output channels are ordered ``(group, *phase, c)``: with
    ``feature_group_count=G`` each group's block reads its own ``C_out / G``
    channels of ``y``.
    """
    nd = len(strides)
    window, c_in_g, c_out = kernel.shape[:nd], kernel.shape[-2], kernel.shape[-1]
    taps = tuple(math.ceil(k / s) for k, s in zip(window, strides))
    w = jnp.pad(kernel, [(0, m * s - k) for m, s, k in zip(taps, strides, window)] + [(0, 0), (0, 0)])
    # (m1, s1, m2, s2, ..., C_in/G, G, C_out/G): tap t = s * m + p
    w = w.reshape(tuple(d for m, s in zip(taps, strides) for d in (m, s)) + (c_in_g, groups, c_out // groups))
    w = jnp.flip(w, axis=tuple(2 * i for i in range(nd)))
    m_axes = tuple(2 * i for i in range(nd))
    p_axes = tuple(2 * i + 1 for i in range(nd))
    w = w.transpose(m_axes + (2 * nd + 2, 2 * nd + 1) + p_axes + (2 * nd,))
    return w.reshape(taps + (c_out // groups, groups * math.prod(strides) * c_in_g))


def _depth_to_space(z: Any, strides: tuple[int, ...], groups: int) -> jnp.ndarray:
    """``(N, *J, G * prod(s) * c)`` with channels ``(group, *phase, c)`` -> ``(N, *(J * s), G * c)``."""
    nd = len(strides)
    n, sizes = z.shape[0], z.shape[1 : 1 + nd]
    c = z.shape[-1] // (groups * math.prod(strides))
    z = z.reshape((n, *sizes, groups, *strides, c))
    # (N, J1, s1, J2, s2, ..., G, c)
    order = (0,) + tuple(a for i in range(nd) for a in (1 + i, 2 + nd + i)) + (1 + nd, 2 + 2 * nd)
    z = z.transpose(order)
    return z.reshape((n, *(j * s for j, s in zip(sizes, strides)), groups * c))


def _conv(y, w, pads: Pads, groups: int) -> jnp.ndarray:
    """Stride-1 correlation, accumulated in float32 or wider, returned in ``y``'s dtype.

    3-D: a sum over the depth taps of 2-D convolutions with the depth folded
    into the batch (XLA:CPU's 2-D convolution is faster than its 3-D one;
    cpu-rules.md, "transpose").
    """
    nd = y.ndim - 2
    acc = jnp.promote_types(y.dtype, jnp.float32)
    conv = functools.partial(
        lax.conv_general_dilated,
        feature_group_count=groups,
        preferred_element_type=None if acc == y.dtype else acc,
    )
    if nd != 3:
        return conv(y, w, (1,) * nd, pads, dimension_numbers=dimension_numbers(nd)).astype(y.dtype)
    (lo, hi), kd = pads[0], w.shape[0]
    yp = lax.pad(y, jnp.zeros((), y.dtype), [(0, 0, 0), (lo, hi, 0)] + [(0, 0, 0)] * 3)
    depth = yp.shape[1] - kd + 1
    terms = [
        conv(
            yp[:, m : m + depth].reshape((-1, *yp.shape[2:])),
            w[m],
            (1, 1),
            pads[1:],
            dimension_numbers=dimension_numbers(2),
        )
        for m in range(kd)
    ]
    z = functools.reduce(lax.add, terms)
    return z.reshape((y.shape[0], depth, *z.shape[1:])).astype(y.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def conv_transpose_subpixel(
    y: Any, kernel: Any, strides: tuple[int, ...], pads: Pads, extra: tuple[int, ...], groups: int
) -> jnp.ndarray:
    """The transposed convolution of ``y`` with ``kernel``, dilation 1, through the phase decomposition.

    Computes what :func:`jaxcnn.functional.conv_transpose` defines: the
    uncropped output ``x_full`` of size ``(n - 1) * s + k + extra`` per
    spatial dim, with ``pads[i] = (lo, hi)`` cropped off, i.e. output positions
    ``lo .. lo + out - 1`` of ``x_full`` with ``out = (n - 1) * s - lo - hi + k
    + extra``. Only the output blocks ``j`` that this window meets are
    computed; positions past the last tap are zeros. The derivatives (both
    modes) come from :func:`~jaxcnn.functional._conv_transpose_cols.conv_transpose_tangent`.

    Args:
      y: ``(N, *spatial, C_out)``.
      kernel: ``(*window, C_in // groups, C_out)``, the forward convolution's.
      strides: one int >= 1 per spatial dim.
      pads: ``(lo, hi)`` cropped from each spatial dim of the uncropped output.
      extra: size added at the high end of each spatial dim (output padding).
      groups: channel groups.

    Returns:
      ``(N, *out, C_in)`` in ``y``'s dtype (bfloat16 and float16 accumulate in
      float32).

    Example:
      >>> import jax.numpy as jnp
      >>> conv_transpose_subpixel(jnp.ones((1, 3, 1)), jnp.ones((2, 1, 1)), (2,), ((0, 0),), (0,), 1)[0, :, 0]
      Array([1., 1., 1., 1., 1., 1.], dtype=float32)
    """
    nd = len(strides)
    sizes = y.shape[1 : 1 + nd]
    window = kernel.shape[:nd]
    taps = tuple(math.ceil(k / s) for k, s in zip(window, strides))
    outs = tuple((n - 1) * s - lo - hi + k + e for n, s, (lo, hi), k, e in zip(sizes, strides, pads, window, extra))
    first = tuple(lo // s for (lo, _), s in zip(pads, strides))  # first output block j met by the crop
    last = tuple(-(-(lo + o) // s) for (lo, _), o, s in zip(pads, outs, strides))  # one past the last
    # Block j of the full correlation with the flipped sub-kernels reads y[j - m_taps + 1 .. j]:
    # pad y by m_taps - 1 - first below and up to row last - 1 above. A negative pad crops y
    # first: XLA:CPU's convolution returns garbage for negative padding with several channels.
    conv_pads = [(m - 1 - j0, j1 - n) for m, j0, j1, n in zip(taps, first, last, sizes)]
    crop_lo = [max(0, -lo) for lo, _ in conv_pads]
    crop_hi = [n - max(0, -hi) for n, (_, hi) in zip(sizes, conv_pads)]
    y = lax.slice(y, (0, *crop_lo, 0), (y.shape[0], *crop_hi, y.shape[-1]))
    conv_pads = [(max(0, lo), max(0, hi)) for lo, hi in conv_pads]
    w = _phase_kernel(kernel, strides, groups)
    z = _conv(y, w, tuple(conv_pads), groups)
    x = _depth_to_space(z, strides, groups)
    start = (0, *(lo - j0 * s for (lo, _), j0, s in zip(pads, first, strides)), 0)
    x = lax.slice(x, start, (x.shape[0], *(b + o for b, o in zip(start[1:], outs)), x.shape[-1]))
    return x.astype(y.dtype)


def _subpixel_jvp(strides, pads, extra, groups, primals, tangents):
    y, kernel = primals
    dy, dkernel = tangents
    x = conv_transpose_subpixel(y, kernel, strides, pads, extra, groups)
    return x, conv_transpose_tangent(y, kernel, dy, dkernel, strides, pads, extra, groups)


conv_transpose_subpixel.defjvp(_subpixel_jvp, symbolic_zeros=True)
