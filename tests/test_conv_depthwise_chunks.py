"""The depthwise path's chunked weight gradient (``cpu_rules.depthwise_chunk``) against plain XLA and PyTorch.

The chunk budget is lowered so that these small shapes split into batch
chunks, which is what the weight gradient of a real-sized layer does; the
tables of ``test_conv_depthwise.py`` are run again that way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn.functional as F
from jaxcnn.functional import cpu_rules
from tests import test_conv_depthwise


@pytest.fixture
def small_chunks(monkeypatch):
    """A 16-byte budget: every case below runs its weight gradient in chunks of one example."""
    monkeypatch.setattr(cpu_rules, "DEPTHWISE_CHUNK_BYTES", 16)


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


def _operands(rng, nd, n, c, m, window, size=7):
    window = (window,) * nd if isinstance(window, int) else window
    x = jnp.asarray(rng.standard_normal((n,) + (size,) * nd + (c,)), jnp.float32)
    w = jnp.asarray(rng.standard_normal(window + (1, c * m)), jnp.float32)
    return x, w


# test_conv_depthwise.py's tables again, each batch of 3 now in 3 chunks of one example.
@pytest.mark.parametrize("nd, c, m, window, strides, padding, dilation", test_conv_depthwise.CASES)
def test_chunked_gradient_equals_xla(small_chunks, rng, nd, c, m, window, strides, padding, dilation):
    assert cpu_rules.depthwise_chunk(3, c * 4) == 1
    test_conv_depthwise.test_equals_xla_in_value_gradients_and_jvp(rng, nd, c, m, window, strides, padding, dilation)


@pytest.mark.parametrize(
    "dtype, tol, m, strides, padding, dilation",
    [
        (jnp.float32, 1e-5, 1, 1, 1, 1),
        (jnp.float32, 1e-5, 2, 2, 1, 1),
        (jnp.float32, 1e-5, 1, 1, 2, 2),
        (jnp.bfloat16, 3e-2, 2, 2, 1, 1),
    ],
)
def test_chunked_gradient_equals_pytorch(small_chunks, rng, dtype, tol, m, strides, padding, dilation):
    test_conv_depthwise.test_equals_pytorch_values_and_gradients(rng, dtype, tol, m, strides, padding, dilation)


def test_one_argument_gradients_and_vmap(small_chunks, rng):
    x, w = _operands(rng, 2, 6, 3, 2, 3)

    def loss(alg):
        return lambda x, w: jnp.sum(jnp.sin(F.conv(x, w, strides=2, groups=3, algorithm=alg)))

    ref_dx, ref_dw = jax.grad(loss("xla"), argnums=(0, 1))(x, w)
    # the weight alone (the input's tangent is a symbolic zero) and the input alone
    np.testing.assert_allclose(jax.grad(loss("depthwise"), argnums=1)(x, w), ref_dw, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(jax.grad(loss("depthwise"), argnums=0)(x, w), ref_dx, rtol=1e-5, atol=1e-4)
    # per-example weight gradients: vmap over the batch of a one-example gradient
    per_example = jax.vmap(jax.grad(lambda x1, w: loss("depthwise")(x1[None], w), argnums=1), (0, None))(x, w)
    np.testing.assert_allclose(per_example.sum(0), ref_dw, rtol=1e-4, atol=1e-4)


def test_weight_gradient_loops_over_chunks_and_saves_only_the_input(small_chunks, rng):
    x, w = _operands(rng, 2, 8, 4, 1, 3)
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
