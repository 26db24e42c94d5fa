"""The channels-last convolution primitive (``functional/_conv_canonical.py``) that the CPU conv paths use.

Its value and derivatives (first and second order, both modes, ``vmap``) are
checked against ``lax.conv_general_dilated`` with JAX's own derivatives and
against PyTorch; what it is for is checked on the compiled program: inside a
``lax.scan`` every convolution of a gradient is channels-last
(``b01f_01io->b01f``), the form XLA:CPU runs in its library kernels, where
JAX's own derivatives leave a ``f01b_i01o->01bf`` weight gradient there.
"""

from __future__ import annotations

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import lax

import jaxcnn.functional as F
from jaxcnn.functional._conv_canonical import conv_channels_last
from jaxcnn.functional._geometry import dimension_numbers
from tests.oracles import from_torch, kernel_to_torch, to_torch

# (x shape, kernel shape, strides, pads, rhs dilation)
CASES = [
    ((2, 9, 3), (3, 3, 4), (2,), ((1, 1),), (1,)),
    ((2, 8, 8, 3), (3, 3, 3, 5), (2, 2), ((0, 0), (0, 0)), (1, 1)),  # unread last row: negative pad in dW
    ((2, 8, 8, 3), (3, 3, 3, 5), (1, 2), ((4, 3), (2, 0)), (1, 1)),  # pads wider than the kernel
    ((2, 10, 9, 2), (3, 2, 2, 4), (2, 1), ((1, 2), (0, 1)), (2, 3)),  # dilated kernel
    ((1, 5, 6, 4, 2), (2, 3, 2, 2, 3), (1, 2, 2), ((1, 0), (1, 1), (0, 1)), (1, 1, 2)),  # 3-D
    ((2, 7, 7, 3), (3, 3, 3, 4), (2, 2), ((-1, 0), (0, -1)), (1, 1)),  # negative (cropping) pads
    # 1 x 1 kernels: the kernel gradient is one matrix product (_pointwise_kernel_gradient)
    ((2, 8, 8, 3), (1, 1, 3, 5), (2, 2), ((0, 0), (0, 0)), (1, 1)),  # ResNet's downsample: unread last row
    ((2, 7, 6, 6), (1, 1, 6, 2), (1, 1), ((0, 0), (0, 0)), (1, 1)),  # pointwise, C_in > C_out
    ((2, 7, 7, 2), (1, 1, 2, 4), (2, 3), ((1, 0), (-1, 2)), (1, 1)),  # strides, pads of both signs
    ((2, 9, 3), (1, 3, 4), (3,), ((2, 1),), (2,)),  # 1-D, a (meaningless) kernel dilation
]

#: (lo, hi) padding pairs for the shape test: none, positive, one-sided crops, crops past the kernel
PAD_PAIRS = ((0, 0), (2, 1), (-1, 0), (0, -2), (-4, -4))


def _pair(strides, pads, dilation):
    """``lax.conv_general_dilated`` (JAX's derivatives) and the primitive, at the highest precision."""

    def ref(x, w):
        dn = dimension_numbers(len(strides))
        return lax.conv_general_dilated(
            x, w, strides, pads, rhs_dilation=dilation, dimension_numbers=dn, precision="highest"
        )

    def new(x, w):
        return conv_channels_last(x, w, strides, pads, None, dilation, "highest")

    return ref, new


def _close(a, b, tol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(b, a, rtol=tol, atol=tol * max(1.0, float(np.max(np.abs(a)))))


@pytest.mark.parametrize("xs, ws, strides, pads, dilation", CASES)
def test_value_and_derivatives_equal_lax(rng, xs, ws, strides, pads, dilation):
    x = jnp.asarray(rng.standard_normal(xs), jnp.float32)
    w = jnp.asarray(rng.standard_normal(ws), jnp.float32)
    ref, new = _pair(strides, pads, dilation)
    y = ref(x, w)
    _close(y, new(x, w))
    ct = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    for a, b in zip(jax.vjp(ref, x, w)[1](ct), jax.vjp(new, x, w)[1](ct)):
        _close(a, b)
    _close(jax.jvp(ref, (x, w), (x, w))[1], jax.jvp(new, (x, w), (x, w))[1])

    def scalar(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w)))

    # second order: forward-over-reverse (Hessian-vector product) and reverse-over-reverse
    hvp = [jax.jvp(jax.grad(scalar(c), (0, 1)), (x, w), (x, w))[1] for c in (ref, new)]
    rr = [
        jax.grad(lambda x, w, c=c: jnp.sum(jax.grad(scalar(c), (0, 1))(x, w)[1] ** 2), (0, 1))(x, w) for c in (ref, new)
    ]
    for a, b in zip((*hvp[0], *rr[0]), (*hvp[1], *rr[1])):
        _close(a, b, 1e-4)
    # vmap over the input only, and over both operands
    _close(jax.vmap(ref, (0, None))(x[:, None], w), jax.vmap(new, (0, None))(x[:, None], w))
    ws2 = jnp.stack([w, 2 * w])
    _close(jax.vmap(ref, (None, 0))(x, ws2), jax.vmap(new, (None, 0))(x, ws2))


@pytest.mark.parametrize(
    "xs, ws, strides, pads, dilation", [c for c in CASES if len(c[2]) == 2 and min(map(min, c[3])) >= 0]
)
def test_gradients_equal_pytorch(rng, xs, ws, strides, pads, dilation):
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    _, new = _pair(strides, pads, dilation)
    y, vjp = jax.vjp(new, jnp.asarray(x), jnp.asarray(w))
    ct = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw = vjp(jnp.asarray(ct))

    tx, tw = to_torch(x).requires_grad_(), kernel_to_torch(w).requires_grad_()
    (lo0, hi0), (lo1, hi1) = pads
    ty = torch.nn.functional.conv2d(torch.nn.functional.pad(tx, (lo1, hi1, lo0, hi0)), tw, None, strides, 0, dilation)
    ty.backward(to_torch(ct))
    _close(from_torch(ty), y, 1e-4)
    _close(from_torch(tx.grad), dx, 1e-4)
    _close(np.transpose(tw.grad.numpy(), (2, 3, 1, 0)), dw, 1e-4)


def test_bfloat16_gradients_keep_operand_dtypes(rng):
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 3)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 4)), jnp.bfloat16)
    ref, new = _pair((2, 2), ((1, 1), (1, 1)), (1, 1))
    dx, dw = jax.grad(lambda x, w: jnp.sum(new(x, w).astype(jnp.float32)), (0, 1))(x, w)
    assert (dx.dtype, dw.dtype) == (jnp.bfloat16, jnp.bfloat16)
    rx, rw = (a.astype(jnp.float32) for a in (x, w))
    ex, ew = jax.grad(lambda x, w: jnp.sum(ref(x, w)), (0, 1))(rx, rw)
    _close(ex, dx.astype(jnp.float32), 5e-2)
    _close(ew, dw.astype(jnp.float32), 5e-2)


def test_output_shape_equals_lax():
    """The primitive's abstract evaluation (a formula, not a trace of ``lax``) against ``lax``'s shape rule.

    Sizes, kernels, strides, lhs and rhs dilations, pads of both signs, empty outputs included.
    """
    dn = dimension_numbers(2)
    checked = 0
    for n, k, s, pads, a, d in itertools.product((1, 5, 8), (1, 3), (1, 2, 3), PAD_PAIRS, (1, 2), (1, 2)):
        if 1 + a * (n - 1) + sum(pads) < 0:  # lax's rule: the padded input may not be negative
            continue
        x = jax.ShapeDtypeStruct((2, n, n + 1, 3), jnp.float32)
        w = jax.ShapeDtypeStruct((k, 2, 3, 4), jnp.float32)
        geometry = ((s, 1), (pads, (1, 0)), (a, 1), (d, 1))

        def ref(x, w, g=geometry):
            return lax.conv_general_dilated(x, w, *g, dimension_numbers=dn)

        want = jax.eval_shape(ref, x, w)
        got = jax.eval_shape(lambda x, w, g=geometry: conv_channels_last(x, w, *g), x, w)
        assert (got.shape, got.dtype) == (want.shape, want.dtype), (n, k, geometry)
        checked += 1
    assert checked > 250
    x, w = jax.ShapeDtypeStruct((2, 5, 5, 3), jnp.bfloat16), jax.ShapeDtypeStruct((3, 3, 3, 4), jnp.float32)
    with pytest.raises(TypeError, match="same dtypes"):  # two dtypes: lax's own rule and error
        jax.eval_shape(lambda x, w: conv_channels_last(x, w, (1, 1), ((0, 0), (0, 0))), x, w)


def _conv_labels(fn, *args) -> list[str]:
    text = jax.jit(fn).lower(*args).compile().as_text()
    return [m.group(1) for m in re.finditer(r" convolution\(.*?dim_labels=([^,\s]+)", text)]


@pytest.mark.parametrize("algorithm", ["chunked", "taps"])
def test_gradient_in_a_scan_is_channels_last(rng, algorithm):
    """XLA:CPU leaves convolutions inside a loop body as JAX wrote them; these must be channels-last there."""
    xs = jnp.asarray(rng.standard_normal((3, 4, 14, 14, 8)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((4, 4, 8, 12)) / 10, jnp.float32)

    def loss(w, x):
        y = F.conv(x, w, strides=2, padding=1, algorithm=algorithm)
        return jnp.sum(jnp.sin(F.conv(y, jnp.ones((3, 3, 12, 2)), padding=1, algorithm=algorithm)))

    grad = jax.grad(loss, (0, 1))

    def scanned(w, xs):
        def body(acc, x):
            gw, gx = grad(w, x)
            return acc + gw, gx

        return lax.scan(body, jnp.zeros_like(w), xs)

    if jax.default_backend() == "cpu":
        labels = _conv_labels(scanned, w, xs)
        assert labels and set(labels) <= {"b01f_01io->b01f"}, labels
    gw, gx = jax.jit(scanned)(w, xs)
    top = [jax.jit(grad)(w, x) for x in xs]  # each example's gradient at the top level
    for (_, ex), got in zip(top, gx):
        _close(ex, got, 1e-4)
    _close(sum(ew for ew, _ in top), gw, 1e-4)
