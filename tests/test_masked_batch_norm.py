"""Masked batch norm (F.batch_norm(mask=...), jnn.BatchNorm(mask=...)) equals batch norm of the real rows alone.

Oracles: PyTorch's batch_norm (float64) and NumPy moments computed on the unmasked
rows only; under shard_map, the same on the global batch with the masked rows of
every device removed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

import jaxcnn.functional as F
import jaxcnn.nn as jnn

EPS = 1e-5


def _torch_bn(x_real: np.ndarray) -> np.ndarray:
    """PyTorch training-mode batch norm (biased variance normalizes), channels-last in and out."""
    t = torch.from_numpy(np.moveaxis(x_real.astype(np.float64), -1, 1))
    y = torch.nn.functional.batch_norm(t, None, None, training=True, eps=EPS)
    return np.moveaxis(y.numpy(), 1, -1)


def _stats(x_real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = x_real.astype(np.float64).reshape(-1, x_real.shape[-1])
    return flat.mean(0), flat.var(0)


def test_row_mask_equals_real_rows_alone(rng):
    x = rng.normal(2.0, 3.0, (10, 4, 5, 3)).astype(np.float32)
    mask = np.array([1, 1, 0, 1, 1, 1, 0, 0, 1, 1], bool)
    x[~mask] = 1e3  # padding far from the data: any leak into the statistics would show
    mean0, var0 = np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32)
    y, (m, v) = F.batch_norm(x, mean0, var0, training=True, momentum=0.8, epsilon=EPS, mask=mask)
    np.testing.assert_allclose(np.asarray(y)[mask], _torch_bn(x[mask]), atol=2e-5)
    bm, bv = _stats(x[mask])
    np.testing.assert_allclose(m, 0.8 * mean0 + 0.2 * bm, rtol=1e-5)
    np.testing.assert_allclose(v, 0.8 * var0 + 0.2 * bv, rtol=1e-5)


def test_position_mask_and_2d_input(rng):
    x = rng.normal(size=(6, 7, 2)).astype(np.float32)
    mask = rng.random((6, 7)) > 0.4
    _, (m, v) = F.batch_norm(x, np.zeros(2), np.ones(2), training=True, momentum=0.0, mask=mask)
    np.testing.assert_allclose(m, x[mask].mean(0), rtol=1e-5)
    np.testing.assert_allclose(v, x[mask].astype(np.float64).var(0), rtol=1e-5)
    x2 = rng.normal(size=(5, 3)).astype(np.float32)  # (N, C): the (N,) mask is also x.shape[:-1]
    y2, _ = F.batch_norm(x2, np.zeros(3), np.ones(3), training=True, mask=np.array([1, 0, 1, 1, 0]))
    np.testing.assert_allclose(np.asarray(y2)[[0, 2, 3]], _torch_bn(x2[[0, 2, 3]]), atol=2e-5)


def test_all_ones_mask_is_plain_batch_norm(rng):
    x = rng.normal(size=(8, 3, 3, 4)).astype(np.float32)
    y, _ = F.batch_norm(x, np.zeros(4), np.ones(4), training=True, mask=np.ones(8, bool))
    np.testing.assert_allclose(np.asarray(y), _torch_bn(x), atol=2e-5)


def test_inference_ignores_the_mask(rng):
    x = rng.normal(size=(4, 2)).astype(np.float32)
    y, (m, v) = F.batch_norm(x, np.ones(2), np.full(2, 4.0), training=False, epsilon=0.0, mask=np.array([1, 0, 0, 0]))
    np.testing.assert_allclose(np.asarray(y), (x - 1.0) / 2.0, rtol=1e-6)
    np.testing.assert_array_equal(m, np.ones(2))
    np.testing.assert_array_equal(v, np.full(2, 4.0))


def test_gradient_of_real_rows_is_torch_gradient_and_padding_gets_none(rng):
    x = rng.normal(size=(6, 3, 2)).astype(np.float32)
    mask = np.array([1, 0, 1, 1, 0, 1], bool)
    r = rng.normal(size=x.shape).astype(np.float32)

    def loss(x):
        y, _ = F.batch_norm(x, jnp.zeros(2), jnp.ones(2), training=True, epsilon=EPS, mask=mask)
        return jnp.sum(y * r * mask.reshape(6, 1, 1))

    g = np.asarray(jax.grad(loss)(x))
    t = torch.from_numpy(np.moveaxis(x[mask].astype(np.float64), -1, 1)).requires_grad_(True)
    out = torch.nn.functional.batch_norm(t, None, None, training=True, eps=EPS)
    (out * torch.from_numpy(np.moveaxis(r[mask].astype(np.float64), -1, 1))).sum().backward()
    np.testing.assert_allclose(g[mask], np.moveaxis(t.grad.numpy(), 1, -1), atol=1e-5)
    np.testing.assert_array_equal(g[~mask], 0.0)


def test_synchronized_masked_statistics_are_exact_with_uneven_shards(rng):
    """psum of sums and counts, not a mean of per-device means: shards with 0..4 real rows."""
    x = rng.normal(1.0, 2.0, (16, 3, 3, 2)).astype(np.float32)
    mask = np.array([0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0], bool)
    mesh = Mesh(np.asarray(jax.devices()[:4]), ("data",))

    def body(x, mask):
        y, stats = F.batch_norm(
            x, jnp.zeros(2), jnp.ones(2), training=True, momentum=0.0, epsilon=EPS, axis_name="data", mask=mask
        )
        return y, stats

    fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P("data"), P("data")), out_specs=(P("data"), P())))
    y, (m, v) = fn(x, mask)
    bm, bv = _stats(x[mask])
    np.testing.assert_allclose(m, bm, rtol=1e-5)
    np.testing.assert_allclose(v, bv, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(y)[mask], _torch_bn(x[mask]), atol=2e-5)


def test_module_running_statistics_follow_the_real_rows(rng):
    x = rng.normal(3.0, 1.5, (6, 4, 4, 3)).astype(np.float32)
    mask = np.array([1, 1, 1, 0, 1, 0], bool)
    bn = jnn.BatchNorm(momentum=0.5)
    variables = bn.init(jax.random.key(0), x, use_running_average=False)
    _, upd = bn.apply(variables, x, use_running_average=False, mask=mask, mutable=["batch_stats"])
    bm, bv = _stats(x[mask])
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.5 * bm, rtol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.5 + 0.5 * bv, rtol=1e-5)


def test_mask_shape_is_checked():
    x = jnp.zeros((4, 3, 3, 2))
    with pytest.raises(ValueError, match=r"mask must have shape \(N,\) = \(4,\) .* got shape \(3,\)"):
        F.batch_norm(x, jnp.zeros(2), jnp.ones(2), training=True, mask=jnp.ones(3))
    with pytest.raises(TypeError, match="mask must be an array"):
        F.batch_norm(x, jnp.zeros(2), jnp.ones(2), training=False, mask="rows")
