"""The depthwise path's chunked weight gradient (``cpu_rules.depthwise_chunk``) against plain XLA and PyTorch.

The chunk budget is lowered so that these small shapes split into several
batch chunks, which is what the weight gradient of a real-sized layer does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxcnn.functional as F
from jaxcnn.functional import cpu_rules
from tests.oracles import from_torch, kernel_to_torch, to_torch


@pytest.fixture
def small_chunks(monkeypatch):
    """A 1 KiB budget: every case below runs its weight gradient in several chunks."""
    monkeypatch.setattr(cpu_rules, "DEPTHWISE_CHUNK_BYTES", 1024)


@pytest.mark.parametrize(
    "n, example_bytes, budget, expected",
    [
        (32, 28 * 28 * 256 * 4, 4 * 2**20, 4),  # 802816 B per example: 5 fit, 4 divides 32
        (128, 16 * 16 * 192 * 4, 4 * 2**20, 16),  # 196608 B: 21 fit, 16 divides 128
        (6, 100, 1000, 6),  # all fit
        (7, 100, 500, 1),  # 5 fit, but 7 is prime
        (12, 10**9, 1024, 1),  # one example over the budget: chunks of one
    ],
)
def test_chunk_rule_by_hand(monkeypatch, n, example_bytes, budget, expected):
    monkeypatch.setattr(cpu_rules, "DEPTHWISE_CHUNK_BYTES", budget)
    assert cpu_rules.depthwise_chunk(n, example_bytes) == expected


# (nd, n, channels, multiplier, window, strides, padding, dilation)
CASES = [
    (2, 6, 4, 1, 3, 1, "SAME", 1),
    (2, 4, 3, 2, 3, 2, 1, 1),
    (2, 6, 2, 1, (3, 2), (2, 1), ((2, 0), (0, 1)), (1, 2)),
    (1, 8, 5, 3, 4, 1, "CAUSAL", 2),
    pytest.param(3, 4, 2, 2, 3, (1, 2, 2), ((1, 0), (1, 1), (0, 2)), 1, marks=pytest.mark.slow),
]


def _operands(rng, nd, n, c, m, window, size=7):
    window = (window,) * nd if isinstance(window, int) else window
    x = jnp.asarray(rng.standard_normal((n,) + (size,) * nd + (c,)), jnp.float32)
    w = jnp.asarray(rng.standard_normal(window + (1, c * m)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((c * m,)), jnp.float32)
    return x, w, b


@pytest.mark.parametrize("nd, n, c, m, window, strides, padding, dilation", CASES)
def test_chunked_gradient_equals_xla(small_chunks, rng, nd, n, c, m, window, strides, padding, dilation):
    x, w, b = _operands(rng, nd, n, c, m, window)
    assert cpu_rules.depthwise_chunk(n, x[0].size * 4) < n  # the case is really chunked

    def f(alg):
        conv = lambda x, w, b: F.conv(
            x, w, b, strides=strides, padding=padding, dilation=dilation, groups=c, algorithm=alg
        )
        return lambda x, w, b: jnp.sum(jnp.sin(conv(x, w, b)))

    ref_val, ref_grad = jax.value_and_grad(f("xla"), argnums=(0, 1, 2))(x, w, b)
    val, grad = jax.jit(jax.value_and_grad(f("depthwise"), argnums=(0, 1, 2)))(x, w, b)
    np.testing.assert_allclose(val, ref_val, rtol=1e-5, atol=1e-4)
    for ours, ref in zip(grad, ref_grad):
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)
    tangents = (0.3 * x, 0.2 * w, 0.1 * b)
    np.testing.assert_allclose(
        jax.jvp(f("depthwise"), (x, w, b), tangents)[1], jax.jvp(f("xla"), (x, w, b), tangents)[1], rtol=1e-5, atol=1e-4
    )


def test_one_argument_gradients_and_vmap(small_chunks, rng):
    x, w, _ = _operands(rng, 2, 6, 3, 2, 3)

    def loss(alg):
        return lambda x, w: jnp.sum(jnp.sin(F.conv(x, w, strides=2, groups=3, algorithm=alg)))

    ref_dx, ref_dw = jax.grad(loss("xla"), argnums=(0, 1))(x, w)
    # the weight alone (the input's tangent is a symbolic zero) and the input alone
    np.testing.assert_allclose(jax.grad(loss("depthwise"), argnums=1)(x, w), ref_dw, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(jax.grad(loss("depthwise"), argnums=0)(x, w), ref_dx, rtol=1e-5, atol=1e-4)
    # per-example weight gradients: vmap over the batch of a one-example gradient
    per_example = jax.vmap(jax.grad(lambda x1, w: loss("depthwise")(x1[None], w), argnums=1), (0, None))(x, w)
    np.testing.assert_allclose(per_example.sum(0), ref_dw, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "dtype, tol, m, strides, padding, dilation",
    [
        (jnp.float32, 1e-5, 1, 1, 1, 1),
        (jnp.float32, 1e-5, 2, 2, 1, 1),
        (jnp.float32, 1e-5, 1, 1, 2, 2),
        (jnp.bfloat16, 3e-2, 2, 2, 1, 1),
        (jnp.bfloat16, 3e-2, 1, 1, 2, 2),
    ],
)
def test_chunked_gradient_equals_pytorch(small_chunks, rng, dtype, tol, m, strides, padding, dilation):
    c, n = 4, 6
    x, w, b = _operands(rng, 2, n, c, m, 3, size=8)
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
    y, pull = jax.vjp(jax.jit(conv), *(a.astype(dtype) for a in (x, w, b)))
    dx, dw, db = pull(jnp.asarray(g, dtype))
    assert y.dtype == dw.dtype == dtype
    scale = lambda r: tol * max(1.0, float(np.max(np.abs(r))))
    dw_ref = np.transpose(tw.grad.numpy(), (2, 3, 1, 0))
    pairs = ((y, from_torch(y_ref)), (dx, from_torch(tx.grad)), (dw, dw_ref), (db, tb.grad.numpy()))
    for ours, ref in pairs:
        np.testing.assert_allclose(np.asarray(ours, np.float32), ref, atol=scale(ref), rtol=tol)


def test_weight_gradient_loops_over_chunks_and_saves_only_the_input(small_chunks, rng):
    x, w, _ = _operands(rng, 2, 8, 4, 1, 3)
    loss = lambda x, w: jnp.sum(F.conv(x, w, groups=4, algorithm="depthwise") ** 2)
    text = jax.jit(jax.grad(loss, argnums=1)).lower(x, w).as_text()
    assert "while" in text and "convolution" not in text and "scatter" not in text
    # x (read by every tap) and the output gradient (read by every tap of dx) are computed once
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()
    assert compiled.count("conditional(") >= 2
    # the forward keeps x (and y for the square) as residuals, not one slice per tap
    _, residuals = jax.linearize(lambda w: F.conv(x, w, groups=4, algorithm="depthwise"), w)
    sizes = sorted(leaf.size for leaf in jax.tree.leaves(residuals) if hasattr(leaf, "size"))
    assert sum(s for s in sizes if s >= x.size) <= 2 * x.size, sizes
