"""The CPU conv paths ("taps", "chunked") compute the gradient's layout-changed operands once (``computed_once``)
in wide layers (``C_in * C_out >= cpu_rules.ONCE_MIN_CHANNEL_PAIRS``), and let XLA fuse them in narrow ones.

Checked against plain XLA and PyTorch: a conv whose input is a BatchNorm-like
normalization, ReLU and residual sum of an earlier conv (the chain XLA would
otherwise recompute inside the weight gradient's transposes), values and
gradients w.r.t. the input, both kernels and the bias.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxcnn.functional as F
from jaxcnn.functional import cpu_rules
from tests.oracles import kernel_to_torch, to_torch

# (algorithm, channels in, channels out, strides, padding, dilation, dtype, tol)
CASES = [
    ("chunked", 16, 8, 2, 1, 1, jnp.float32, 1e-4),  # wide: computed once
    ("chunked", 6, 8, 2, 1, 1, jnp.float32, 1e-4),  # narrow: fused
    pytest.param("chunked", 4, 6, 1, 2, 2, jnp.float32, 1e-4, marks=pytest.mark.slow),
    ("taps", 2, 4, 1, 1, 1, jnp.float32, 1e-4),
    pytest.param("chunked", 6, 8, 2, 1, 1, jnp.bfloat16, 5e-2, marks=pytest.mark.slow),
]


def _block(x, w1, conv2d):
    """conv -> normalize over (N, H, W) -> ReLU -> + x -> conv: a ResNet-like chain (the same for jax and torch)."""
    h = conv2d(x, w1, None, 1, 1, 1)
    axes = (0, 2, 3) if isinstance(h, torch.Tensor) else (0, 1, 2)
    mean = h.mean(axes, keepdims=True)
    var = ((h - mean) ** 2).mean(axes, keepdims=True)
    h = (h - mean) / (var + 1e-5) ** 0.5
    h = torch.relu(h) if isinstance(h, torch.Tensor) else jnp.maximum(h, 0)
    return h + x


@pytest.mark.parametrize("algorithm, c_in, c_out, strides, padding, dilation, dtype, tol", CASES)
def test_gradients_equal_xla_and_pytorch(rng, algorithm, c_in, c_out, strides, padding, dilation, dtype, tol):
    x = rng.standard_normal((4, 9, 9, c_in)).astype(np.float32)
    w1 = (rng.standard_normal((3, 3, c_in, c_in)) / 5).astype(np.float32)
    w2 = (rng.standard_normal((3, 3, c_in, c_out)) / 5).astype(np.float32)
    b2 = rng.standard_normal((c_out,)).astype(np.float32)

    def jconv(alg):
        def conv2d(x, w, b, s, p, d):
            return F.conv(x, w, b, strides=s, padding=p, dilation=d, algorithm=alg)

        def loss(x, w1, w2, b2):
            h = _block(x, w1, conv2d)
            y = conv2d(h, w2, b2, strides, padding, dilation)
            return jnp.sum(jnp.sin(y.astype(jnp.float32)))

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))

    args = [jnp.asarray(a, dtype) for a in (x, w1, w2, b2)]
    val, grads = jconv(algorithm)(*args)
    ref_val, ref_grads = jconv("xla")(*args)

    tx, tw1, tw2 = (t.requires_grad_(True) for t in (to_torch(x), kernel_to_torch(w1), kernel_to_torch(w2)))
    tb2 = torch.tensor(b2).requires_grad_(True)
    th = _block(tx, tw1, lambda x, w, b, s, p, d: torch.nn.functional.conv2d(x, w, b, s, p, d))
    tval = torch.sin(torch.nn.functional.conv2d(th, tw2, tb2, strides, padding, dilation)).sum()
    tval.backward()
    tval = tval.detach()
    torch_grads = (
        np.moveaxis(tx.grad.numpy(), 1, -1),
        np.transpose(tw1.grad.numpy(), (2, 3, 1, 0)),
        np.transpose(tw2.grad.numpy(), (2, 3, 1, 0)),
        tb2.grad.numpy(),
    )
    scale = lambda r: tol * max(1.0, float(np.max(np.abs(r))))
    np.testing.assert_allclose(float(val), float(ref_val), rtol=tol, atol=scale(float(ref_val)))
    np.testing.assert_allclose(float(val), tval.item(), rtol=tol, atol=scale(tval.item()))
    for ours, ref, tref in zip(grads, ref_grads, torch_grads):
        ours, ref = np.asarray(ours, np.float32), np.asarray(ref, np.float32)
        np.testing.assert_allclose(ours, ref, rtol=tol, atol=scale(ref))
        np.testing.assert_allclose(ours, tref, rtol=tol, atol=scale(tref))


@pytest.mark.parametrize("c_in, c_out, conditionals", [(16, 8, 2), (6, 8, 0)])
def test_gradient_operands_are_computed_once_in_wide_layers(rng, c_in, c_out, conditionals):
    assert (c_in * c_out >= cpu_rules.ONCE_MIN_CHANNEL_PAIRS) == (conditionals > 0)
    x = jnp.asarray(rng.standard_normal((4, 9, 9, c_in)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, c_in, c_out)), jnp.float32)
    loss = lambda x, w: jnp.sum(jnp.maximum(F.conv(jnp.maximum(x * 2.0 + 1.0, 0.0), w, algorithm="chunked"), 0.0))
    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()
    # wide: the input (forward) and the output gradient (backward) behind a cond; narrow: none
    assert hlo.count("conditional(") == conditionals
    # jvp and the forward value are unchanged by the barrier
    tangents = (0.1 * x, 0.2 * w)
    ours = jax.jvp(lambda x, w: F.conv(x, w, algorithm="chunked"), (x, w), tangents)
    ref = jax.jvp(lambda x, w: F.conv(x, w, algorithm="xla"), (x, w), tangents)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
