"""The "subpixel" transposed convolution (functional/_conv_transpose_cpu.py) against plain XLA, PyTorch and NumPy."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as tF

import jaxcnn.functional as F
from jaxcnn.functional import cpu_rules
from jaxcnn.functional.cpu_rules import choose_transpose_algorithm
from tests.oracles import from_torch, kernel_to_torch, to_torch

TORCH_CONV_T = {1: tF.conv_transpose1d, 2: tF.conv_transpose2d, 3: tF.conv_transpose3d}

# (nd, strides, window, padding, output_padding, groups, bias, batch): PyTorch's symmetric paddings
TORCH_CASES = [
    (1, 2, 4, 1, 0, 1, True, 3),
    (1, 3, 5, 2, 2, 1, False, 1),
    (1, 2, 1, 0, 1, 2, True, 3),
    (1, 3, 2, 0, 0, 1, True, 1),  # kernel shorter than the stride: gaps of zeros
    (2, 2, 4, 1, 0, 1, True, 3),  # DCGAN's upsampling
    (2, 2, 3, 1, 1, 1, False, 1),  # kernel not divisible by the stride
    (2, (2, 1), (3, 2), (1, 0), (1, 0), 2, True, 3),  # per-dim strides
    (2, 3, 5, 2, 1, 2, False, 3),
    (2, 1, 3, 1, 0, 1, True, 1),  # stride 1: one phase
    (3, 2, 4, 1, 0, 1, True, 1),
    pytest.param(3, 2, 3, 1, 1, 2, True, 3, marks=pytest.mark.slow),
    pytest.param(3, (1, 2, 3), (2, 3, 4), (0, 1, 2), (0, 1, 2), 1, False, 3, marks=pytest.mark.slow),
]


def _operands(rng, nd, strides, window, groups, batch, size=5, c_in=4, c_out=6):
    window = (window,) * nd if isinstance(window, int) else window
    y = rng.standard_normal((batch, *(size,) * nd, c_out)).astype(np.float32)
    w = rng.standard_normal((*window, c_in // groups, c_out)).astype(np.float32)
    b = rng.standard_normal(c_in).astype(np.float32)
    return y, w, b


def _value_and_grads(fn, y, w, b, g):
    """``fn(y, w, b)`` and the gradients of ``<fn(y, w, b), g>`` w.r.t. y, w and b."""
    out, pull = jax.vjp(fn, y, w, b)
    return out, pull(jnp.asarray(g))


@pytest.mark.parametrize("nd, strides, window, padding, output_padding, groups, bias, batch", TORCH_CASES)
def test_equals_xla_and_torch_in_value_and_gradients(
    rng, nd, strides, window, padding, output_padding, groups, bias, batch
):
    y, w, b = _operands(rng, nd, strides, window, groups, batch)
    kw = dict(strides=strides, padding=padding, output_padding=output_padding, groups=groups)

    def fn(alg):
        return jax.jit(lambda y, w, b: F.conv_transpose(y, w, b if bias else None, algorithm=alg, **kw))

    shape = jax.eval_shape(fn("xla"), y, w, b).shape
    g = rng.standard_normal(shape).astype(np.float32)
    out, grads = _value_and_grads(fn("subpixel"), y, w, b, g)
    ref, ref_grads = _value_and_grads(fn("xla"), y, w, b, g)

    ty, tw = to_torch(y).requires_grad_(True), kernel_to_torch(w).requires_grad_(True)
    tb = torch.tensor(b, requires_grad=True)
    t_out = TORCH_CONV_T[nd](ty, tw, tb if bias else None, **_torch_kw(kw))
    t_out.backward(to_torch(g))
    t_grads = (
        from_torch(ty.grad),
        np.transpose(tw.grad.numpy(), (*range(2, 2 + nd), 1, 0)),  # (O, I, *window) -> (*window, I, O)
        tb.grad.numpy() if bias else np.zeros_like(b),
    )
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out, from_torch(t_out.detach()), rtol=1e-5, atol=1e-4)
    for name, got, want, torch_want in zip("ywb", grads, ref_grads, t_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3, err_msg=f"d{name} vs xla")
        np.testing.assert_allclose(got, torch_want, rtol=1e-5, atol=1e-3, err_msg=f"d{name} vs torch")


def _torch_kw(kw):
    return dict(stride=kw["strides"], padding=kw["padding"], output_padding=kw["output_padding"], groups=kw["groups"])


def _scatter(y, w, strides, pads, extra, groups):
    """The definition, by loops (NumPy, float64): ``full[s i + t] += w[t] y[i]``, then crop ``pads``."""
    nd = len(strides)
    window, c_in_g, c_out = w.shape[:nd], w.shape[-2], w.shape[-1]
    c_out_g = c_out // groups
    full_sizes = [(n - 1) * s + k + e for n, s, k, e in zip(y.shape[1:-1], strides, window, extra)]
    full = np.zeros((y.shape[0], *full_sizes, c_in_g * groups))
    for gi in range(groups):
        ys, cs = slice(gi * c_out_g, (gi + 1) * c_out_g), slice(gi * c_in_g, (gi + 1) * c_in_g)
        for i in itertools.product(*(range(n) for n in y.shape[1:-1])):
            for t in itertools.product(*(range(k) for k in window)):
                q = tuple(s * a + b for s, a, b in zip(strides, i, t))
                full[(slice(None), *q, cs)] += y[(slice(None), *i, ys)] @ w[(*t, slice(None), ys)].T.astype(np.float64)
    crop = tuple(slice(lo, n - hi) for (lo, hi), n in zip(pads, full_sizes))
    return full[(slice(None), *crop, slice(None))]


# (strides, window, pads, output_padding, groups): asymmetric paddings PyTorch has no form for,
# including paddings past k - 1, which crop the input side of XLA's formulation
PAIR_CASES = [
    ((2, 2), (4, 3), ((1, 2), (0, 1)), (1, 0), 1),
    ((3, 2), (2, 5), ((0, 0), (2, 0)), (0, 1), 2),
    ((2, 1), (3, 2), ((4, 1), (2, 0)), (0, 0), 1),
    ((1, 1), (2, 2), ((2, 0), (2, 0)), (0, 0), 1),
]


@pytest.mark.parametrize("alg", ["subpixel", "xla"])
@pytest.mark.parametrize("strides, window, pads, output_padding, groups", PAIR_CASES)
def test_padding_pairs_equal_the_scatter_loops(rng, alg, strides, window, pads, output_padding, groups):
    y, w, _ = _operands(rng, 2, strides, window, groups, batch=2, size=4)
    out = F.conv_transpose(
        y, w, strides=strides, padding=pads, output_padding=output_padding, groups=groups, algorithm=alg
    )
    ref = _scatter(y, w, strides, pads, output_padding, groups)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "padding, strides, window",
    [
        ("SAME", 2, 3),
        ("SAME", 3, 2),  # kernel shorter than the stride: SAME lifts the size to n * s
        ("SAME", (2, 3), (4, 4)),
        ("VALID", 3, 2),
        ("FULL", (2, 3), (4, 4)),
        (2, 2, 3),
        ((1, 0), (2, 3), (4, 4)),
    ],
)
def test_string_and_per_dim_paddings_equal_xla(rng, padding, strides, window):
    y, w, b = _operands(rng, 2, strides, window, 1, batch=2)
    kw = dict(strides=strides, padding=padding)
    out = F.conv_transpose(y, w, b, algorithm="subpixel", **kw)
    np.testing.assert_allclose(out, F.conv_transpose(y, w, b, algorithm="xla", **kw), rtol=1e-5, atol=1e-4)


def test_unbatched_jvp_and_vmap_equal_xla(rng):
    y, w, b = _operands(rng, 2, 2, 3, 1, batch=3)
    kw = dict(strides=2, padding=1, output_padding=1)

    def fn(alg):
        return lambda y, w: F.conv_transpose(y, w, b, algorithm=alg, **kw)

    np.testing.assert_allclose(fn("subpixel")(y[0], w), fn("xla")(y, w)[0], rtol=1e-5, atol=1e-4)
    tangents = (0.3 * y, 0.2 * w)
    np.testing.assert_allclose(
        jax.jvp(fn("subpixel"), (y, w), tangents)[1], jax.jvp(fn("xla"), (y, w), tangents)[1], rtol=1e-5, atol=1e-4
    )
    per_example = jax.vmap(fn("subpixel"), (0, None))(y, w)
    np.testing.assert_allclose(per_example, fn("xla")(y, w), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_equals_the_float32_result_cast(rng, dtype):
    y, w, b = _operands(rng, 2, 2, 4, 1, batch=2, c_out=32)
    y16, w16 = jnp.asarray(y, dtype), jnp.asarray(w, dtype)
    out = F.conv_transpose(y16, w16, strides=2, padding=1, algorithm="subpixel")
    ref = F.conv_transpose(y16.astype(jnp.float32), w16.astype(jnp.float32), strides=2, padding=1, algorithm="xla")
    assert out.dtype == dtype
    # accumulated in float32 then rounded once: at most one unit in the last place of the cast
    ulp = np.spacing(np.abs(np.asarray(ref.astype(dtype).astype(np.float32))).astype(dtype)).astype(np.float32)
    np.testing.assert_array_less(np.abs(np.asarray(out, np.float32) - np.asarray(ref)), ulp + 1e-6)


@pytest.mark.parametrize(
    "strides, dilation, scoped, want",
    [
        ((2, 2), (1, 1), None, "subpixel"),
        ((1, 2, 1), (1, 1, 1), None, "subpixel"),
        ((1, 1), (1, 1), None, "xla"),
        ((2, 2), (2, 1), None, "xla"),
        ((2, 2), (1, 1), "xla", "xla"),
    ],
)
def test_the_rule(strides, dilation, scoped, want):
    assert jax.default_backend() == "cpu"
    with F.default_conv_algorithm(scoped):
        assert choose_transpose_algorithm(strides, dilation) == want


def _zero_inserting(fn, *args) -> bool:
    """Whether the lowered ``fn`` convolves an input dilated by the stride (XLA's transposed convolution)."""
    text = jax.jit(fn).lower(*args).as_text()
    convolutions = [line for line in text.splitlines() if "stablehlo.convolution" in line]
    assert len(convolutions) == 1
    return "lhs_dilate = [1, 1]" not in convolutions[0]


def test_the_default_traces_no_zero_inserted_input(rng):
    y, w, _ = _operands(rng, 2, 2, 4, 1, batch=2)
    assert not _zero_inserting(lambda y, w: F.conv_transpose(y, w, strides=2, padding=1), y, w)
    assert _zero_inserting(lambda y, w: F.conv_transpose(y, w, strides=2, algorithm="xla"), y, w)
    with F.default_conv_algorithm("xla"):
        assert _zero_inserting(lambda y, w: F.conv_transpose(y, w, strides=2), y, w)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(algorithm="fft"), "algorithm.*'fft'"),
        (dict(algorithm="taps"), "algorithm.*'taps'"),
        (dict(algorithm="subpixel", dilation=2), "subpixel.*dilation"),
    ],
)
def test_bad_algorithm_is_a_value_error(rng, kw, match):
    y, w, _ = _operands(rng, 2, 2, 3, 1, batch=1)
    with pytest.raises(ValueError, match=match):
        F.conv_transpose(y, w, strides=2, **kw)


def _torch_grads(nd, y, w, g, kw):
    """PyTorch's gradients of ``<conv_transpose(y, w), g>`` w.r.t. ``y`` and ``w``, channels-last."""
    ty, tw = to_torch(y).requires_grad_(True), kernel_to_torch(w).requires_grad_(True)
    TORCH_CONV_T[nd](ty, tw, None, **_torch_kw(kw)).backward(to_torch(g))
    return from_torch(ty.grad), np.transpose(tw.grad.numpy(), (*range(2, 2 + nd), 1, 0))


# (nd, strides, window, padding, output_padding, groups, batch, chunk budget in bytes): the derivatives
# go through the batch in chunks of im2col columns; a 1-byte budget makes every example its own chunk
CHUNK_CASES = [
    (2, 2, 4, 1, 0, 1, 4, 1),
    (2, (2, 3), (3, 5), (1, 2), (1, 0), 2, 6, 1),
    (2, 2, 3, 0, 1, 1, 6, 2 * 25 * 64 * 4),  # 25 blocks x 64 columns x 4 bytes per example: chunks of 2
    (1, 3, 4, 2, 1, 2, 3, 1),
    (3, 2, 3, 1, 1, 1, 2, 1),
]


@pytest.mark.parametrize("nd, strides, window, padding, output_padding, groups, batch, budget", CHUNK_CASES)
def test_gradients_in_batch_chunks_equal_torch(
    rng, monkeypatch, nd, strides, window, padding, output_padding, groups, batch, budget
):
    monkeypatch.setattr(cpu_rules, "TRANSPOSE_CHUNK_BYTES", budget)
    y, w, _ = _operands(rng, nd, strides, window, groups, batch, size=5 if nd < 3 else 3)
    kw = dict(strides=strides, padding=padding, output_padding=output_padding, groups=groups)
    fn = jax.jit(lambda y, w: F.conv_transpose(y, w, algorithm="subpixel", **kw))
    g = rng.standard_normal(jax.eval_shape(fn, y, w).shape).astype(np.float32)
    grads = jax.vjp(fn, y, w)[1](jnp.asarray(g))
    for name, got, want in zip("yw", grads, _torch_grads(nd, y, w, g, kw)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3, err_msg=f"d{name}")


@pytest.mark.parametrize("strides, window, pads, output_padding, groups", PAIR_CASES)
def test_padding_pair_gradients_equal_xla(rng, strides, window, pads, output_padding, groups):
    """Asymmetric paddings, paddings past ``k - 1`` and output padding: the crop's transpose pads ``g``."""
    y, w, _ = _operands(rng, 2, strides, window, groups, batch=2, size=4)
    kw = dict(strides=strides, padding=pads, output_padding=output_padding, groups=groups)

    def grads(alg):
        fn = lambda y, w: F.conv_transpose(y, w, algorithm=alg, **kw)  # noqa: E731
        g = np.random.default_rng(1).standard_normal(jax.eval_shape(fn, y, w).shape).astype(np.float32)
        return jax.jit(lambda y, w: jax.vjp(fn, y, w)[1](jnp.asarray(g)))(y, w)

    for name, got, want in zip("yw", grads("subpixel"), grads("xla")):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3, err_msg=f"d{name}")


@pytest.mark.parametrize("check", ["grad y", "per-example grad w", "second order"])
def test_one_sided_per_example_and_second_order_gradients_equal_xla(rng, check):
    """Gradients w.r.t. ``y`` or ``w`` alone (a symbolic-zero tangent), under ``vmap``, and a second derivative."""
    y, w, b = _operands(rng, 2, 2, 3, 1, batch=2, size=4)
    kw = dict(strides=2, padding=1, output_padding=1)

    def loss(alg):
        return lambda y, w: jnp.sum(jnp.tanh(F.conv_transpose(y, w, b, algorithm=alg, **kw)) ** 2)

    fn = {
        "grad y": lambda alg: jax.grad(loss(alg), 0)(y, w),
        "per-example grad w": lambda alg: jax.vmap(jax.grad(loss(alg), 1), (0, None))(y[:, None], w),
        "second order": lambda alg: jax.grad(lambda y, w: jnp.sum(jax.grad(loss(alg), 1)(y, w) ** 2), 0)(y, w),
    }[check]
    np.testing.assert_allclose(fn("subpixel"), fn("xla"), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_gradients_track_float32(rng, dtype):
    y, w, _ = _operands(rng, 2, 2, 4, 1, batch=2, c_out=32)
    g = rng.standard_normal((2, 10, 10, 4)).astype(np.float32)

    def grads(dt, alg):
        fn = lambda y, w: F.conv_transpose(y, w, strides=2, padding=1, algorithm=alg)  # noqa: E731
        return jax.vjp(fn, jnp.asarray(y, dt), jnp.asarray(w, dt))[1](jnp.asarray(g, dt))

    for got, want in zip(grads(dtype, "subpixel"), grads(jnp.float32, "xla")):
        assert got.dtype == dtype
        # each gradient entry sums 4-32 products; float32 accumulation leaves the final rounding
        np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=2e-2, atol=0.25)


def test_the_reverse_pass_is_matrix_products_not_convolutions(rng):
    """The derivatives are im2col and dots: no XLA derivative convolution (cpu-rules.md, "transpose")."""
    y, w, _ = _operands(rng, 2, 2, 4, 1, batch=2)
    g = jnp.ones((2, 10, 10, 4))
    text = (
        jax.jit(lambda y, w: jax.vjp(lambda y, w: F.conv_transpose(y, w, strides=2, padding=1), y, w)[1](g))
        .lower(y, w)
        .as_text()
    )
    assert "stablehlo.convolution" not in text
    assert text.count("stablehlo.dot_general") == 2
