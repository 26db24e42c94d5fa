"""Depthwise convolution's CPU path (functional/_conv_depthwise.py) against plain XLA and PyTorch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import lax

import jaxcnn.functional as F
from jaxcnn.functional._conv_depthwise import depthwise_conv, valid_outputs
from tests.oracles import from_torch, kernel_to_torch, to_torch

# (nd, channels, multiplier, window, strides, padding, dilation)
CASES = [
    (2, 5, 1, 3, 1, "SAME", 1),
    (2, 4, 2, 3, 2, 1, 1),
    (2, 3, 1, (3, 2), (2, 1), "VALID", (1, 2)),
    (1, 6, 1, 4, 1, "CAUSAL", 2),
    (1, 3, 3, 3, 2, "FULL", 1),
    pytest.param(3, 2, 1, 3, (1, 2, 2), ((1, 0), (1, 1), (0, 2)), 1, marks=pytest.mark.slow),
]


def _operands(rng, nd, c, m, window, n=3, size=7):
    window = (window,) * nd if isinstance(window, int) else window
    x = jnp.asarray(rng.standard_normal((n,) + (size,) * nd + (c,)), jnp.float32)
    w = jnp.asarray(rng.standard_normal(window + (1, c * m)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((c * m,)), jnp.float32)
    return x, w, b


@pytest.mark.parametrize("nd, c, m, window, strides, padding, dilation", CASES)
def test_equals_xla_in_value_gradients_and_jvp(rng, nd, c, m, window, strides, padding, dilation):
    x, w, b = _operands(rng, nd, c, m, window)

    def f(alg):
        return lambda x, w, b: jnp.sum(
            jnp.sin(F.conv(x, w, b, strides=strides, padding=padding, dilation=dilation, groups=c, algorithm=alg))
        )

    ref_val, ref_grad = jax.value_and_grad(f("xla"), argnums=(0, 1, 2))(x, w, b)
    val, grad = jax.jit(jax.value_and_grad(f("depthwise"), argnums=(0, 1, 2)))(x, w, b)
    np.testing.assert_allclose(val, ref_val, rtol=1e-5, atol=1e-4)
    for g, r in zip(grad, ref_grad):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-4)
    tangents = (0.3 * x, 0.2 * w, 0.1 * b)
    np.testing.assert_allclose(
        jax.jvp(f("depthwise"), (x, w, b), tangents)[1], jax.jvp(f("xla"), (x, w, b), tangents)[1], rtol=1e-5, atol=1e-4
    )
    per_example = jax.vmap(
        lambda x: F.conv(
            x[None], w, strides=strides, padding=padding, dilation=dilation, groups=c, algorithm="depthwise"
        )[0]
    )(x)
    ref = F.conv(x, w, strides=strides, padding=padding, dilation=dilation, groups=c, algorithm="xla")
    np.testing.assert_allclose(per_example, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
@pytest.mark.parametrize("m, strides, padding, dilation", [(1, 1, 1, 1), (2, 2, 1, 1), (1, 1, 2, 2)])
def test_equals_pytorch_values_and_gradients(rng, dtype, tol, m, strides, padding, dilation):
    c = 4
    x, w, b = _operands(rng, 2, c, m, 3, size=8)
    y_ref = torch.nn.functional.conv2d(
        tx := to_torch(x).requires_grad_(True),
        tw := kernel_to_torch(w).requires_grad_(True),
        tb := torch.tensor(np.asarray(b)).requires_grad_(True),
        strides,
        padding,
        dilation,
        c,
    )
    g = rng.standard_normal(from_torch(y_ref).shape).astype(np.float32)
    y_ref.backward(to_torch(g))
    conv = lambda x, w, b: F.conv(x, w, b, strides=strides, padding=padding, dilation=dilation, groups=c)
    assert F.choose_algorithm(x.shape, w.shape, (strides, strides), c) == "depthwise"  # the rule on CPU
    y, pull = jax.vjp(jax.jit(conv), *(a.astype(dtype) for a in (x, w, b)))
    dx, dw, db = pull(jnp.asarray(g, dtype))
    scale = lambda r: tol * max(1.0, float(np.max(np.abs(r))))
    for ours, ref in ((y, from_torch(y_ref)), (dx, from_torch(tx.grad)), (db, tb.grad.numpy())):
        np.testing.assert_allclose(np.asarray(ours, np.float32), ref, atol=scale(ref), rtol=tol)
    dw_ref = np.transpose(tw.grad.numpy(), (2, 3, 1, 0))
    np.testing.assert_allclose(np.asarray(dw, np.float32), dw_ref, atol=scale(dw_ref), rtol=tol)


def test_no_grouped_convolution_in_the_compiled_step(rng):
    x, w, _ = _operands(rng, 2, 6, 1, 3)
    f = jax.jit(jax.grad(lambda x, w: jnp.sum(F.conv(x, w, groups=6) ** 2), argnums=(0, 1)))
    text = f.lower(x, w).as_text()
    assert "convolution" not in text and "scatter" not in text
    with F.default_conv_algorithm("xla"):
        assert "conv_general_dilated" in str(jax.make_jaxpr(lambda x, w: F.conv(x, w, groups=6))(x, w))


def test_depthwise_algorithm_errors():
    with pytest.raises(ValueError, match="algorithm='depthwise' supports groups == C_in, got groups=2 with C_in=4"):
        F.conv(jnp.zeros((1, 5, 5, 4)), jnp.zeros((3, 3, 2, 4)), groups=2, algorithm="depthwise")


@pytest.mark.parametrize(
    "t, n, n_out, s, d, lo, expected",
    [
        (0, 7, 4, 2, 1, 1, (1, 3)),  # o = 0 reads input -1 (padding); o = 3 reads 5
        (2, 7, 4, 2, 1, 1, (0, 2)),  # o = 3 reads input 7 (padding)
        (1, 1, 2, 2, 1, 2, (1, 0)),  # reads inputs -1 and 1 of a size-1 input: padding only
        (2, 6, 3, 3, 2, -1, (0, 0)),  # cropped by 1: o reads input 3 o + 5, so only o = 0 (input 5)
    ],
)
def test_valid_outputs_by_hand(t, n, n_out, s, d, lo, expected):
    assert valid_outputs(t, n, n_out, s, d, lo) == expected


@pytest.mark.parametrize(
    "size, strides, pads",
    [
        ((1, 5), (2, 1), ((2, 2), (1, 1))),  # rows: the middle tap meets padding only (left out of the sum)
        ((8, 9), (2, 3), ((-1, 1), (1, -2))),  # negative pads crop
        ((6, 7), (3, 2), ((4, 4), (0, 3))),  # pads wider than the kernel's reach
    ],
)
def test_strided_taps_read_only_the_valid_input(rng, size, strides, pads):
    """The per-tap padding of strided depthwise convolutions (``_taps_sum_unpadded``) against XLA's grouped conv."""
    c = 3
    x = jnp.asarray(rng.standard_normal((2, *size, c)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 1, c)), jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC")
    ours = lambda x, w: jnp.sum(jnp.sin(depthwise_conv(x, w, strides, pads, (1, 1))))
    ref = lambda x, w: jnp.sum(
        jnp.sin(lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=dn, feature_group_count=c))
    )
    ref_val, ref_grad = jax.value_and_grad(ref, argnums=(0, 1))(x, w)
    val, grad = jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))(x, w)
    np.testing.assert_allclose(val, ref_val, rtol=1e-5, atol=1e-4)
    for g, r in zip(grad, ref_grad):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-4)
    assert "convolution" not in jax.jit(ours).lower(x, w).as_text()


def test_a_window_that_meets_only_padding_gives_zeros(rng):
    """Size-1 input, window 2 dilated by 2, stride 2, pads (1, 1): both taps read odd padded positions, all padding."""
    x = jnp.asarray(rng.standard_normal((2, 1, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((2, 1, 3)), jnp.float32)
    y = depthwise_conv(x, w, (2,), ((1, 1),), (2,))
    ref = lax.conv_general_dilated(
        x, w, (2,), ((1, 1),), rhs_dilation=(2,), dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=3
    )
    assert y.shape == ref.shape == (2, 1, 3)
    np.testing.assert_array_equal(y, np.zeros((2, 1, 3), np.float32))
    np.testing.assert_array_equal(ref, y)
