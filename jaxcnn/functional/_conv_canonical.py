r"""A channels-last convolution whose derivatives are channels-last convolutions too, in loops as well.

XLA:CPU runs a convolution in its library kernels (Eigen, YNNPACK) only when
the operands are laid out ``(N, *spatial, C)`` and ``(*window, I, O)``. JAX's
derivatives of ``lax.conv_general_dilated`` are convolutions in other layouts:
the weight gradient reads the input as ``(C, *spatial, N)`` (dimension labels
``f01b_i01o->01bf``), and the input gradient reads the kernel as ``(*window,
O, I)``. XLA:CPU's ``ConvCanonicalization`` pass inserts the transposes that
make them library convolutions, but only in the entry computation: inside a
``lax.scan``/``while`` body, a ``lax.cond`` branch or a non-inlined call they
stay as they are and run through XLA's naive loop emitter, several times
slower (cpu-rules.md, "loops").

This primitive is ``lax.conv_general_dilated`` with channels-last dimension
numbers and a transpose rule that writes both derivatives as the same
primitive with the transposes explicit, exactly as XLA's pass would:

.. math::

    \frac{\partial L}{\partial x} = \operatorname{conv}\big(g,\ \operatorname{flip}(w)^{\top_{io}}\big)
        \quad (\text{lhs dilation } s,\ \text{rhs dilation } d),
    \qquad
    \frac{\partial L}{\partial w}[\mathbf{k}, i, o] = \operatorname{conv}\big(x^{\top_{nc}},\ g^{\top}\big)[i, \mathbf{k}, o]
        \quad (\text{window stride } d,\ \text{rhs dilation } s),

where ``x^{T_nc}`` swaps the batch and channel axes of ``x`` and ``g^T`` is
the output gradient as a ``(*out, N, C_out)`` kernel. Both are again this
primitive, so derivatives of any order stay channels-last. A ``1 x ... x 1``
kernel's gradient is one matrix product instead, of the input at the positions
the outputs read with ``g``, both in their own layout. Padding pairs are
JAX's (``_conv_general_vjp_*_padding``); a negative pad is applied to the
operand (``lax.pad``) instead of being passed to the convolution. The numbers
are the ones XLA computes for the canonicalized convolution in the entry
computation (tests compare with ``lax.conv_general_dilated`` and PyTorch).
``vmap`` falls back to ``lax.conv_general_dilated`` (JAX's batching rule).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jaxcnn.functional._geometry import dimension_numbers

Pairs = tuple[tuple[int, int], ...]

conv_p = Primitive("jaxcnn_conv_channels_last")


def conv_channels_last(
    x: Any,
    w: Any,
    strides: tuple[int, ...],
    pads: Pairs,
    lhs_dilation: tuple[int, ...] | None = None,
    rhs_dilation: tuple[int, ...] | None = None,
    precision: Any = None,
) -> jnp.ndarray:
    """``lax.conv_general_dilated(x, w, ...)`` for ``x`` ``(N, *S, C_in)``, ``w`` ``(*K, C_in, C_out)``, groups 1.

    Same value, same dtype rules; only the derivatives' form differs (module
    docstring). ``pads`` are explicit ``(lo, hi)`` pairs, any sign.
    """
    nd = x.ndim - 2
    params = {
        "strides": tuple(int(s) for s in strides),
        "pads": tuple((int(lo), int(hi)) for lo, hi in pads),
        "lhs_dilation": tuple(lhs_dilation) if lhs_dilation is not None else (1,) * nd,
        "rhs_dilation": tuple(rhs_dilation) if rhs_dilation is not None else (1,) * nd,
        "precision": precision,
    }
    return conv_p.bind(x, w, **params)


def _lax(x, w, *, strides, pads, lhs_dilation, rhs_dilation, precision):
    x, pads, lhs_dilation = _apply_negative_pads(x, pads, lhs_dilation)
    return lax.conv_general_dilated(
        x,
        w,
        strides,
        pads,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers(x.ndim - 2),
        precision=precision,
    )


def _apply_negative_pads(x, pads, lhs_dilation):
    """Negative pads (crops) applied to ``x`` itself, dilated explicitly where it is dilated; the rest unchanged.

    The convolution then sees only non-negative padding (XLA:CPU's returned
    garbage for some negative paddings; cpu-rules.md, "transpose").
    """
    if all(lo >= 0 and hi >= 0 for lo, hi in pads):
        return x, pads, lhs_dilation
    config = [(0, 0, 0)]
    new_pads, new_dilation = [], []
    for (lo, hi), d in zip(pads, lhs_dilation):
        if lo >= 0 and hi >= 0:
            config.append((0, 0, 0))
            new_pads.append((lo, hi))
            new_dilation.append(d)
        else:
            config.append((min(lo, 0), min(hi, 0), d - 1))
            new_pads.append((max(lo, 0), max(hi, 0)))
            new_dilation.append(1)
    config.append((0, 0, 0))
    x = lax.pad(x, jnp.zeros((), x.dtype), config)
    return x, tuple(new_pads), tuple(new_dilation)


def _dilated(size: int, d: int) -> int:
    """The extent of ``size`` elements with ``d - 1`` zeros between neighbours: ``1 + d (size - 1)``, 0 if empty."""
    return 0 if size == 0 else 1 + d * (size - 1)


def _abstract_eval(x, w, *, strides, pads, lhs_dilation, rhs_dilation, precision):
    """The output's shape and dtype: those of ``lax.conv_general_dilated`` on the same operands.

    Per spatial dim ``max(0, (dilated(n, a) + lo + hi - dilated(k, d)) // s + 1)``,
    the batch of ``x`` and the output channels of ``w``, in their common dtype;
    operands of two dtypes ask ``lax`` itself (``jax.eval_shape``).
    """
    if x.dtype != w.dtype:
        params = dict(strides=strides, pads=pads, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation)
        out = jax.eval_shape(functools.partial(_lax, precision=precision, **params), x, w)
        return x.update(shape=out.shape, dtype=out.dtype, weak_type=False)
    nd = len(strides)
    spatial = []
    for n, k, s, (lo, hi), a, d in zip(x.shape[1:-1], w.shape[:nd], strides, pads, lhs_dilation, rhs_dilation):
        extent = _dilated(n, a) + lo + hi - _dilated(k, d)
        spatial.append(max(0, extent // s + 1))
    return x.update(shape=(x.shape[0], *spatial, w.shape[-1]), weak_type=False)


def _transpose_lhs(g, x, w, *, strides, pads, lhs_dilation, rhs_dilation, precision):
    """The input gradient: ``g`` (lhs dilated by the strides) with the flipped kernel, ``I`` and ``O`` swapped."""
    nd = len(strides)
    sizes, window, out = x.aval.shape[1:-1], w.shape[:nd], g.shape[1:-1]
    t_pads = []
    for n, k, o, (lo, _), s, a, d in zip(sizes, window, out, pads, strides, lhs_dilation, rhs_dilation):
        before = _dilated(k, d) - lo - 1
        t_pads.append((before, _dilated(n, a) + _dilated(k, d) - 1 - _dilated(o, s) - before))
    wt = jnp.swapaxes(lax.rev(w, tuple(range(nd))), -1, -2).astype(g.dtype)
    dx = conv_channels_last(g, wt, lhs_dilation, tuple(t_pads), strides, rhs_dilation, precision)
    return dx.astype(x.aval.dtype)


def _transpose_rhs(g, x, w, *, strides, pads, lhs_dilation, rhs_dilation, precision):
    """The kernel gradient: ``x`` as ``(C_in, *S, N)`` with ``g`` as a ``(*out, N, C_out)`` kernel, then back.

    A ``1 x ... x 1`` kernel instead: the input at the positions the outputs
    read (:func:`_pointwise_kernel_gradient`).
    """
    nd = len(strides)
    sizes, window, out = x.shape[1:-1], w.aval.shape[:nd], g.shape[1:-1]
    if all(k == 1 for k in window):
        return _pointwise_kernel_gradient(g, x, w, strides, pads, lhs_dilation, precision)
    w_pads = []
    for n, k, o, (lo, _), s, a, d in zip(sizes, window, out, pads, strides, lhs_dilation, rhs_dilation):
        w_pads.append((lo, _dilated(o, s) - _dilated(n, a) + _dilated(k, d) - lo - 1))
    spatial = tuple(range(1, nd + 1))
    lhs = x.transpose((nd + 1, *spatial, 0))
    rhs = g.transpose((*spatial, 0, nd + 1)).astype(x.dtype)
    dw = conv_channels_last(lhs, rhs, rhs_dilation, tuple(w_pads), lhs_dilation, strides, precision)
    return dw.transpose((*spatial, 0, nd + 1)).astype(w.aval.dtype)


def _pointwise_kernel_gradient(g, x, w, strides, pads, lhs_dilation, precision):
    r"""The gradient of a ``1 x ... x 1`` kernel as one matrix product, no transposed copies of ``x`` or ``g``.

    Output position ``o`` reads position ``s o`` of the dilated, padded input
    ``x_p``, so :math:`\partial L / \partial w[i, o] = \sum_{n, \mathbf{o}}
    x_p[n, \mathbf{s} \odot \mathbf{o}, i]\, g[n, \mathbf{o}, o]`: a strided
    slice of ``x_p`` (``x`` itself for stride 1, no padding) contracted with
    ``g`` over the batch and space, ``x`` first (XLA:CPU's faster orientation
    here, whichever channel count is larger; cpu-rules.md, "pointwise").
    """
    nd = len(strides)
    out = g.shape[1:-1]
    if 0 in out:  # no output position reads the input
        return jnp.zeros(w.aval.shape, w.aval.dtype)
    config = [(0, 0, 0), *((lo, hi, a - 1) for (lo, hi), a in zip(pads, lhs_dilation)), (0, 0, 0)]
    xp = lax.pad(x, jnp.zeros((), x.dtype), config) if any(c != (0, 0, 0) for c in config) else x
    limit = (xp.shape[0], *(s * (o - 1) + 1 for s, o in zip(strides, out)), xp.shape[-1])
    if limit != xp.shape or any(s != 1 for s in strides):
        xp = lax.slice(xp, (0,) * (nd + 2), limit, (1, *strides, 1))
    space = tuple(range(nd + 1))
    dw = lax.dot_general(xp, g.astype(x.dtype), ((space, space), ((), ())), precision=precision)
    return dw.reshape(w.aval.shape).astype(w.aval.dtype)


def _batch(args, dims, **params):
    """Under ``vmap``: ``lax.conv_general_dilated`` and JAX's batching rule for it."""
    return jax.vmap(functools.partial(_lax, **params), in_axes=dims)(*args), 0


conv_p.def_impl(_lax)
conv_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(conv_p, mlir.lower_fun(_lax, multiple_results=False))
ad.defbilinear(conv_p, _transpose_lhs, _transpose_rhs)
batching.primitive_batchers[conv_p] = _batch
