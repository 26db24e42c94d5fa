"""F.conv and F.conv_transpose against PyTorch, SciPy, NumPy loops and hand-worked lecture numbers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as tF
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import conv_loops, from_torch, kernel_to_torch, padding_from_spec, to_torch

import jaxcnn.functional as F

TORCH_CONV = {1: tF.conv1d, 2: tF.conv2d, 3: tF.conv3d}
TORCH_CONV_T = {1: tF.conv_transpose1d, 2: tF.conv_transpose2d, 3: tF.conv_transpose3d}


def _data(rng, nd, size, c_in, c_out, k, groups=1):
    x = rng.standard_normal((2, *(size,) * nd, c_in)).astype(np.float32)
    w = rng.standard_normal((*(k,) * nd, c_in // groups, c_out)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    return x, w, b


# (strides, padding, dilation, groups) against torch's (stride, padding, dilation, groups)
TORCH_CASES = [
    (1, 0, 1, 1),
    (2, 1, 1, 1),
    (1, 2, 2, 1),
    (3, 1, 1, 2),
    (2, 0, 2, 4),
]


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("case", TORCH_CASES, ids=str)
def test_conv_matches_torch_forward_and_backward(rng, nd, case):
    s, p, d, g = case
    x, w, b = _data(rng, nd, 7 if nd == 3 else 10, 4, 8, 3, g)
    xt, wt, bt = to_torch(x).requires_grad_(), kernel_to_torch(w).requires_grad_(), torch.tensor(b).requires_grad_()
    yt = TORCH_CONV[nd](xt, wt, bt, stride=s, padding=p, dilation=d, groups=g)
    cot = rng.standard_normal(yt.shape).astype(np.float32)
    (yt * torch.tensor(cot)).sum().backward()

    def f(x, w, b):
        return F.conv(x, w, b, strides=s, padding=p, dilation=d, groups=g)

    y, vjp = jax.vjp(f, x, w, b)
    np.testing.assert_allclose(y, from_torch(yt), rtol=1e-5, atol=1e-4)
    gx, gw, gb = vjp(jnp.asarray(np.moveaxis(cot, 1, -1)))
    np.testing.assert_allclose(gx, from_torch(xt.grad), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gw, np.transpose(wt.grad.numpy(), (*range(2, nd + 2), 1, 0)), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_depthwise_conv_matches_torch(rng, nd):
    x, w, b = _data(rng, nd, 6, 3, 6, 3, groups=3)  # groups == C_in, C_out = 2 * C_in
    ref = TORCH_CONV[nd](to_torch(x), kernel_to_torch(w), torch.tensor(b), padding=1, groups=3)
    np.testing.assert_allclose(F.conv(x, w, b, padding=1, groups=3), from_torch(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("k, d", [(3, 1), (4, 1), (2, 1), (3, 2), (4, 3)])
def test_same_equals_torch_same_at_stride_one(rng, nd, k, d):
    """XLA's SAME split equals PyTorch's padding='same', even kernels included."""
    x, w, _ = _data(rng, nd, 6 if nd == 3 else 9, 2, 3, k)
    ref = TORCH_CONV[nd](to_torch(x), kernel_to_torch(w), padding="same", dilation=d)
    y = F.conv(x, w, padding="same", dilation=d)
    assert y.shape == x.shape[:-1] + (3,)
    np.testing.assert_allclose(y, from_torch(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, 2, "same"])
def test_padding_modes_match_torch(rng, nd, mode, padding):
    x, w, b = _data(rng, nd, 5, 2, 3, 3)
    conv_cls = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[nd]
    m = conv_cls(2, 3, 3, padding=padding, padding_mode=mode)
    with torch.no_grad():
        m.weight.copy_(kernel_to_torch(w))
        m.bias.copy_(torch.tensor(b))
        ref = from_torch(m(to_torch(x)))
    y = F.conv(x, w, b, padding=padding, padding_mode=mode)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_padding_mode_with_stride_matches_torch(rng):
    x, w, b = _data(rng, 2, 9, 2, 3, 3)
    m = torch.nn.Conv2d(2, 3, 3, stride=2, padding=(1, 2), padding_mode="reflect")
    with torch.no_grad():
        m.weight.copy_(kernel_to_torch(w))
        m.bias.copy_(torch.tensor(b))
        ref = from_torch(m(to_torch(x)))
    y = F.conv(x, w, b, strides=2, padding=(1, 2), padding_mode="Reflect")
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scipy_mode, padding", [("valid", "VALID"), ("same", "SAME"), ("full", "FULL")])
@pytest.mark.parametrize("shape, kshape", [((11,), (3,)), ((9, 8), (3, 5)), ((6, 5, 7), (3, 3, 1))])
def test_correlate_and_convolve_match_scipy(rng, scipy_mode, padding, shape, kshape):
    """Default = scipy.signal.correlate, flip=True = scipy.signal.convolve, in all three modes."""
    x = rng.standard_normal(shape)
    k = rng.standard_normal(kshape)
    xj = x.reshape(1, *shape, 1).astype(np.float32)
    kj = k.reshape(*kshape, 1, 1).astype(np.float32)
    corr = F.conv(xj, kj, padding=padding)[0, ..., 0]
    conv = F.conv(xj, kj, padding=padding, flip=True)[0, ..., 0]
    np.testing.assert_allclose(corr, scipy.signal.correlate(x, k, mode=scipy_mode), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(conv, scipy.signal.convolve(x, k, mode=scipy_mode), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scipy_mode, padding", [("valid", "VALID"), ("full", "FULL")])
def test_even_kernels_match_scipy_valid_and_full(rng, scipy_mode, padding):
    x, k = rng.standard_normal((10, 9)), rng.standard_normal((4, 2))
    y = F.conv(
        x.reshape(1, 10, 9, 1).astype(np.float32), k.reshape(4, 2, 1, 1).astype(np.float32), padding=padding, flip=True
    )
    np.testing.assert_allclose(y[0, ..., 0], scipy.signal.convolve(x, k, mode=scipy_mode), rtol=1e-5, atol=1e-5)


def test_even_kernel_same_differs_from_scipy_by_one_shift(rng):
    """Documented: for even kernels SAME follows XLA/PyTorch (extra pad after); scipy centres the
    other way, so the two are the same numbers shifted by one position."""
    x, k = rng.standard_normal(12), rng.standard_normal(4)
    ours = np.asarray(
        F.conv(x.reshape(1, 12, 1).astype(np.float32), k.reshape(4, 1, 1).astype(np.float32), padding="SAME")
    )[0, :, 0]
    full = scipy.signal.correlate(x, k, mode="full")
    np.testing.assert_allclose(ours, full[2:14], rtol=1e-5, atol=1e-5)  # ceil(3/2) = 2: ours
    np.testing.assert_allclose(scipy.signal.correlate(x, k, mode="same"), full[1:13])  # scipy: 3 // 2


def test_flip_is_kernel_reversal_identity(rng):
    x, w, _ = _data(rng, 2, 8, 3, 2, 3)
    np.testing.assert_allclose(F.conv(x, w, flip=True), F.conv(x, w[::-1, ::-1]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("padding", ["VALID", "SAME", "FULL", "CAUSAL", "valid", "Same"])
@pytest.mark.parametrize("strides, dilation", [(1, 1), (2, 1), (3, 2), ((1, 2), (2, 1))])
def test_string_paddings_match_numpy_loops(rng, padding, strides, dilation):
    x, w, _ = _data(rng, 2, 7, 2, 3, 3)
    s = (strides,) * 2 if isinstance(strides, int) else strides
    d = (dilation,) * 2 if isinstance(dilation, int) else dilation
    pads = [padding_from_spec(padding.upper(), 7, (3 - 1) * di + 1, si) for si, di in zip(s, d)]
    ref = conv_loops(x, w, s, pads, d)
    y = F.conv(x, w, strides=strides, padding=padding, dilation=dilation)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    if padding.upper() == "SAME":
        assert y.shape[1:3] == tuple(-(-7 // si) for si in s)


def test_explicit_pairs_and_per_dim_ints(rng):
    x, w, _ = _data(rng, 2, 6, 2, 2, 3)
    np.testing.assert_allclose(
        F.conv(x, w, padding=((2, 0), (1, 3))), conv_loops(x, w, (1, 1), [(2, 0), (1, 3)], (1, 1)), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        F.conv(x, w, padding=(0, 2)), conv_loops(x, w, (1, 1), [(0, 0), (2, 2)], (1, 1)), rtol=1e-5, atol=1e-5
    )


def test_edge_kernel_on_step_image_by_hand():
    """Lecture: the [-1, 1] kernel responds only where the intensity steps."""
    step = jnp.array([0.0, 0, 1, 1, 1]).reshape(1, 5, 1)
    y = F.conv(step, jnp.array([-1.0, 1]).reshape(2, 1, 1), padding="VALID")
    np.testing.assert_array_equal(y[0, :, 0], [0, 1, 0, 0])
    image = jnp.tile(jnp.array([0.0, 0, 1, 1, 1]), (4, 1)).reshape(1, 4, 5, 1)  # vertical edge
    vertical = F.conv(image, jnp.array([-1.0, 1]).reshape(1, 2, 1, 1), padding="VALID")[0, ..., 0]
    np.testing.assert_array_equal(vertical, np.tile([0, 1, 0, 0], (4, 1)))
    horizontal = F.conv(image, jnp.array([-1.0, 1]).reshape(2, 1, 1, 1), padding="VALID")[0, ..., 0]
    np.testing.assert_array_equal(horizontal, np.zeros((3, 5)))


def test_one_d_example_is_banded_toeplitz_matrix():
    """Lecture: 5 inputs, a 3-tap kernel (w1, w2, w3), zero padding 1: y = M x with M banded."""
    w1, w2, w3 = 2.0, -3.0, 5.0
    m = np.array(
        [
            [w2, w3, 0, 0, 0],
            [w1, w2, w3, 0, 0],
            [0, w1, w2, w3, 0],
            [0, 0, w1, w2, w3],
            [0, 0, 0, w1, w2],
        ]
    )
    x = np.array([1.0, 4.0, -2.0, 0.5, 3.0])
    y = F.conv(x.reshape(1, 5, 1), jnp.array([w1, w2, w3]).reshape(3, 1, 1), padding="SAME")
    np.testing.assert_allclose(y[0, :, 0], m @ x, rtol=1e-6)
    # 3 shared weights (+1 bias) instead of 5 * 5 (+5) for a dense layer


@settings(max_examples=20, deadline=None)
@given(
    k=st.integers(1, 4),
    d=st.integers(1, 3),
    n=st.integers(8, 14),
    t=st.integers(0, 13),
)
def test_causal_output_ignores_the_future(k, d, n, t):
    t = min(t, n - 1)
    w = jnp.asarray(np.random.default_rng(k * 7 + d).standard_normal((k, 1, 1)), jnp.float32)
    x = jnp.asarray(np.random.default_rng(n).standard_normal((1, n, 1)), jnp.float32)
    y = F.conv(x, w, padding="CAUSAL", dilation=d)
    assert y.shape == x.shape
    g = jax.grad(lambda x: F.conv(x, w, padding="CAUSAL", dilation=d)[0, t, 0])(x)[0, :, 0]
    np.testing.assert_array_equal(g[t + 1 :], 0.0)  # nothing after t reaches y[t]
    np.testing.assert_allclose(g[t], w[-1, 0, 0])  # the newest tap sees x[t]


PAD_CHOICES = st.one_of(st.sampled_from(["VALID", "SAME", "FULL", "CAUSAL"]), st.integers(0, 2))


@settings(max_examples=30, deadline=None)
@given(
    nd=st.integers(1, 2),
    n=st.integers(3, 9),
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    d=st.integers(1, 2),
    padding=PAD_CHOICES,
    groups=st.sampled_from([1, 2]),
)
def test_random_shapes_match_numpy_loops(nd, n, k, s, d, padding, groups):
    k_eff = (k - 1) * d + 1
    pads = [padding_from_spec(padding, n, k_eff, s) if isinstance(padding, str) else (padding, padding)] * nd
    if n + sum(pads[0]) < k_eff:
        with pytest.raises(ValueError, match="larger than the padded input"):
            F.conv(
                jnp.zeros((1, *(n,) * nd, 2)),
                jnp.zeros((*(k,) * nd, 2 // groups, 2)),
                padding=padding,
                dilation=d,
                groups=groups,
            )
        return
    rng = np.random.default_rng(n * 100 + k * 10 + s)
    x, w, _ = _data(rng, nd, n, 2, 4, k, groups)
    y = F.conv(x, w, strides=s, padding=padding, dilation=d, groups=groups)
    np.testing.assert_allclose(y, conv_loops(x, w, (s,) * nd, pads, (d,) * nd, groups), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- conv_transpose

TRANSPOSE_CASES = [
    # strides, padding, output_padding, dilation, groups
    (1, 0, 0, 1, 1),
    (2, 1, 1, 1, 1),
    (2, 0, 1, 2, 2),
    (3, 2, 2, 1, 1),
    (1, 1, 1, 2, 1),  # output_padding < dilation suffices
    (2, 1, 0, 3, 4),
]


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("case", TRANSPOSE_CASES, ids=str)
def test_conv_transpose_matches_torch(rng, nd, case):
    s, p, op, d, g = case
    c_in, c_out = 4, 8
    y = rng.standard_normal((2, *(5,) * nd, c_out)).astype(np.float32)
    w = rng.standard_normal((*(3,) * nd, c_in // g, c_out)).astype(np.float32)
    b = rng.standard_normal(c_in).astype(np.float32)
    # torch's ConvTranspose weight is (in=c_out, out/g=c_in/g, *window): our kernel with O and I as (O, I)
    wt = kernel_to_torch(w)
    ref = TORCH_CONV_T[nd](
        to_torch(y), wt, torch.tensor(b), stride=s, padding=p, output_padding=op, groups=g, dilation=d
    )
    out = F.conv_transpose(y, w, b, strides=s, padding=p, output_padding=op, dilation=d, groups=g)
    n_out = (5 - 1) * s - 2 * p + d * (3 - 1) + op + 1
    assert out.shape == (2, *(n_out,) * nd, c_in)
    np.testing.assert_allclose(out, from_torch(ref), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("padding", [0, 2, (1, 0), ((2, 1), (0, 1)), "VALID", "SAME", "FULL", "CAUSAL"])
@pytest.mark.parametrize("strides", [1, 2, 3])
def test_conv_transpose_is_the_vjp_of_conv(rng, padding, strides):
    """<conv(x), y> == <x, conv_transpose(y)> for the x size conv_transpose produces."""
    w = rng.standard_normal((3, 2, 4, 6)).astype(np.float32)
    y = rng.standard_normal((2, 4, 5, 6)).astype(np.float32)
    xt = F.conv_transpose(y, w, strides=strides, padding=padding)
    x_shape = xt.shape[:-1] + (4,)
    forward = lambda x: F.conv(x, w, strides=strides, padding=padding)  # noqa: E731
    assert jax.eval_shape(forward, jax.ShapeDtypeStruct(x_shape, jnp.float32)).shape == y.shape
    (vjp_x,) = jax.vjp(forward, jnp.zeros(x_shape))[1](y)
    np.testing.assert_allclose(xt, vjp_x, rtol=1e-5, atol=1e-4)
    if padding == "SAME":
        assert xt.shape[1:3] == (4 * strides, 5 * strides)


def test_conv_transpose_grouped_is_the_vjp(rng):
    w = rng.standard_normal((3, 3, 2, 6)).astype(np.float32)  # groups=3: C_in = 6
    y = rng.standard_normal((1, 4, 4, 6)).astype(np.float32)
    xt = F.conv_transpose(y, w, strides=2, padding=1, output_padding=1, groups=3)
    forward = lambda x: F.conv(x, w, strides=2, padding=1, groups=3)  # noqa: E731
    (vjp_x,) = jax.vjp(forward, jnp.zeros(xt.shape))[1](y)
    np.testing.assert_allclose(xt, vjp_x, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------- transformations and dtypes


def test_jit_grad_vmap(rng):
    x, w, b = _data(rng, 2, 8, 3, 4, 3)
    f = lambda x, w: F.conv(x, w, b, strides=2, padding="SAME", dilation=1)  # noqa: E731
    np.testing.assert_allclose(jax.jit(f)(x, w), f(x, w), rtol=1e-6, atol=1e-6)
    xs = np.stack([x, 2 * x, -x])
    np.testing.assert_allclose(jax.vmap(f, (0, None))(xs, w), np.stack([f(xi, w) for xi in xs]), rtol=1e-5, atol=1e-5)
    ws = np.stack([w, -w])
    np.testing.assert_allclose(jax.vmap(f, (None, 0))(x, ws), np.stack([f(x, wi) for wi in ws]), rtol=1e-5, atol=1e-5)
    # the gradient of a linear function of w is the input patch sum: check against finite differences
    g = jax.grad(lambda w: jnp.sum(f(x, w) ** 2))(w)
    e = np.zeros_like(w)
    e[1, 2, 0, 3] = 1e-2
    fd = (jnp.sum(f(x, w + e) ** 2) - jnp.sum(f(x, w - e) ** 2)) / 2e-2
    np.testing.assert_allclose(g[1, 2, 0, 3], fd, rtol=1e-3)


def test_dtypes_kept_and_promoted(rng):
    x, w, _ = _data(rng, 2, 6, 2, 3, 3)
    y16 = F.conv(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(y16.astype(np.float32), F.conv(x, w), rtol=5e-2, atol=1e-1)
    assert F.conv(x.astype(jnp.bfloat16), w).dtype == jnp.float32  # promoted as jnp does
    assert F.conv_transpose(x.astype(jnp.bfloat16), np.zeros((3, 3, 4, 2), jnp.bfloat16)).dtype == jnp.bfloat16


def test_precision_argument_is_passed(rng):
    x, w, _ = _data(rng, 2, 6, 2, 3, 3)
    hi = F.conv(x, w, precision=jax.lax.Precision.HIGHEST)
    np.testing.assert_allclose(hi, conv_loops(x, w, (1, 1), [(1, 1), (1, 1)], (1, 1)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="precision must be None, a jax.lax.Precision.*'not-a-precision'"):
        F.conv(x, w, precision="not-a-precision")
    np.testing.assert_allclose(F.conv(x, w, precision="highest"), hi, rtol=1e-6)


# ---------------------------------------------------------------- algorithms


@pytest.mark.parametrize("algorithm", ["taps", "chunked"])
@pytest.mark.parametrize(
    "nd, strides, padding, dilation, k, n",
    [
        (1, 1, "SAME", 1, 3, 6),
        (2, 2, 1, 1, 3, 6),
        (2, 3, "VALID", 2, 3, 5),
        (3, 2, "CAUSAL", 1, 2, 4),
        (2, 2, "SAME", 1, 4, 256),
        (1, 1, 0, 1, 2, 320),
        (2, 3, "FULL", 1, 2, 3),
    ],
)
def test_algorithms_agree_with_xla_in_value_grad_and_jvp(rng, algorithm, nd, strides, padding, dilation, k, n):
    """The CPU paths (taps forward; XLA derivatives in batch chunks, n=256/320 chunked) compute the same
    function as lax.conv_general_dilated, with the same reverse- and forward-mode derivatives."""
    x = jnp.asarray(rng.standard_normal((n,) + (7,) * nd + (2,)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k,) * nd + (2, 4)), jnp.float32)

    def f(alg):
        return lambda x, w: jnp.sum(
            jnp.sin(F.conv(x, w, strides=strides, padding=padding, dilation=dilation, algorithm=alg))
        )

    ref_val, ref_grad = jax.value_and_grad(f("xla"), argnums=(0, 1))(x, w)
    val, grad = jax.value_and_grad(f(algorithm), argnums=(0, 1))(x, w)
    np.testing.assert_allclose(val, ref_val, rtol=1e-5, atol=1e-4)
    for g, r in zip(grad, ref_grad):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-4)
    tangents = (0.3 * x, 0.2 * w)
    np.testing.assert_allclose(
        jax.jvp(f(algorithm), (x, w), tangents)[1], jax.jvp(f("xla"), (x, w), tangents)[1], rtol=1e-5, atol=1e-4
    )


def test_default_algorithm_rule_on_cpu():
    from jaxcnn.functional.conv import choose_algorithm

    assert choose_algorithm((8, 28, 28, 1), (5, 5, 1, 4), (1, 1), 1) == "taps"  # 4 channel pairs
    assert choose_algorithm((8, 28, 28, 4), (5, 5, 4, 8), (2, 2), 1) == "taps"  # 32
    assert choose_algorithm((8, 14, 14, 8), (4, 4, 8, 12), (2, 2), 1) == "chunked"  # 96
    assert choose_algorithm((8, 14, 14, 8), (3, 3, 1, 8), (1, 1), 8) == "depthwise"  # groups == C_in
    assert choose_algorithm((8, 14, 14, 8), (3, 3, 2, 8), (1, 1), 4) == "xla"  # other grouped


def test_algorithm_errors():
    x, w = jnp.zeros((2, 6, 6, 4)), jnp.zeros((3, 3, 2, 4))
    with pytest.raises(
        ValueError, match="algorithm must be one of 'xla', 'taps', 'chunked', 'depthwise', got 'winograd'"
    ):
        F.conv(x, jnp.zeros((3, 3, 4, 4)), algorithm="winograd")
    with pytest.raises(ValueError, match="algorithm='taps' supports groups=1 only, got groups=2"):
        F.conv(x, w, groups=2, algorithm="taps")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_taps_with_non_finite_weights_equals_the_convolution(bad):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 5, 1)), jnp.float32)
    w = jnp.ones((3, 3, 1, 2)).at[0, 0, 0, 0].set(bad)
    np.testing.assert_array_equal(F.conv(x, w, algorithm="taps"), F.conv(x, w, algorithm="xla"))


def test_default_conv_algorithm_scopes_the_rule():
    x, w = jnp.ones((2, 8, 8, 1)), jnp.ones((3, 3, 1, 4))

    def primitives():  # a fresh function each time: the context acts when a function is traced
        return {e.primitive.name for e in jax.make_jaxpr(lambda x, w: F.conv(x, w))(x, w).jaxpr.eqns}

    assert "conv_general_dilated" not in primitives()  # CPU, 1 x 4 channels: the taps loop
    with F.default_conv_algorithm("xla"):
        assert "conv_general_dilated" in primitives()
        with F.default_conv_algorithm(None):
            assert "conv_general_dilated" not in primitives()
        assert "conv_general_dilated" in primitives()
    assert "conv_general_dilated" not in primitives()
    with pytest.raises(ValueError, match="algorithm must be one of"), F.default_conv_algorithm("fast"):
        pass
