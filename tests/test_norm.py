"""Tests of ``jaxcnn.functional.batch_norm``, ``group_norm`` and ``layer_norm``.

Oracles (never the library itself): PyTorch CPU ``torch.nn.functional`` in
float64 with NCHW <-> NHWC transposes, NumPy formulas written out below, and
hand-worked numbers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxcnn.functional as F

torch.set_num_threads(1)

EPS = 1e-5
# float32 computation vs a float64 oracle on O(1) data.
TOL = dict(rtol=1e-4, atol=1e-5)

SHAPES = {
    "NC": (6, 5),
    "1d": (3, 7, 4),
    "2d": (2, 5, 4, 3),
    "3d": (2, 3, 4, 2, 3),
}


# ---------------------------------------------------------------- oracles ---


def to_torch(x, requires_grad=False):
    """Channels-last NumPy ``(N, *spatial, C)`` -> float64 torch ``(N, C, *spatial)``."""
    t = torch.tensor(np.moveaxis(np.asarray(x, np.float64), -1, 1).copy())
    return t.requires_grad_(requires_grad)


def from_torch(t):
    """Torch ``(N, C, *spatial)`` -> channels-last NumPy ``(N, *spatial, C)``."""
    return np.moveaxis(t.detach().numpy(), 1, -1)


def vec(v, requires_grad=False):
    return None if v is None else torch.tensor(np.asarray(v, np.float64)).requires_grad_(requires_grad)


def np_batch_stats(x):
    """Per-channel mean and *biased* variance over every axis but the last (float64)."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    var = ((x - mean) ** 2).mean(axis=axes)
    return mean, var


def np_batch_norm(x, mean, var, scale=None, bias=None, eps=EPS):
    x = np.asarray(x, np.float64)
    y = (x - np.asarray(mean, np.float64)) / np.sqrt(np.asarray(var, np.float64) + eps)
    if scale is not None:
        y = y * np.asarray(scale, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y


def np_layer_norm(x, scale=None, bias=None, eps=EPS):
    """Per sample over all non-batch axes; ``scale``/``bias`` broadcast NumPy-style."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(1, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    if scale is not None:
        y = y * np.asarray(scale, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y


def np_group_norm(x, groups, scale=None, bias=None, eps=EPS):
    x = np.asarray(x, np.float64)
    n, c = x.shape[0], x.shape[-1]
    g = x.reshape(n, -1, groups, c // groups)
    mu = g.mean(axis=(1, 3), keepdims=True)
    var = ((g - mu) ** 2).mean(axis=(1, 3), keepdims=True)
    y = ((g - mu) / np.sqrt(var + eps)).reshape(x.shape)
    if scale is not None:
        y = y * np.asarray(scale, np.float64)
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y


def data(rng, shape, offset=True):
    """float32 data with a different mean and spread per channel."""
    c = shape[-1]
    x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, size=c)
    if offset:
        x = x + rng.uniform(-4.0, 4.0, size=c)
    return x.astype(np.float32)


def params(rng, c):
    return (
        rng.uniform(-1, 1, c).astype(np.float32),  # running mean
        rng.uniform(0.5, 2, c).astype(np.float32),  # running var
        rng.uniform(0.5, 1.5, c).astype(np.float32),  # scale
        rng.normal(size=c).astype(np.float32),  # bias
    )


# ------------------------------------------------------------- batch norm ---


def test_batch_norm_hand_worked():
    # x = [1, 3]: mean 2, biased var 1 -> y = [-1, 1]; new mean 0.9*0 + 0.1*2, new var 0.9*1 + 0.1*1.
    y, (m, v) = F.batch_norm(jnp.array([[1.0], [3.0]]), jnp.zeros(1), jnp.ones(1), training=True, epsilon=0.0)
    np.testing.assert_allclose(np.asarray(y)[:, 0], [-1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(m, [0.2], rtol=1e-6)
    np.testing.assert_allclose(v, [1.0], rtol=1e-6)
    # two channels, spatial axis: channel 0 = [0, 2, 4, 6] (mean 3, var 5), channel 1 constant 7.
    x = np.array([[[0.0, 7.0], [2.0, 7.0]], [[4.0, 7.0], [6.0, 7.0]]], np.float32)  # (N=2, L=2, C=2)
    y, (m, v) = F.batch_norm(
        x,
        jnp.array([1.0, 1.0]),
        jnp.array([2.0, 2.0]),
        jnp.array([2.0, 1.0]),
        jnp.array([0.0, -1.0]),
        training=True,
        momentum=0.5,
        epsilon=1e-5,
    )
    expect0 = 2.0 * (np.array([0.0, 2.0, 4.0, 6.0]) - 3.0) / np.sqrt(5.0 + 1e-5)
    np.testing.assert_allclose(np.asarray(y)[..., 0].ravel(), expect0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(y)[..., 1], -1.0, atol=1e-6)  # (7 - 7) * 1 - 1
    np.testing.assert_allclose(m, [0.5 * 1 + 0.5 * 3, 0.5 * 1 + 0.5 * 7], rtol=1e-6)
    np.testing.assert_allclose(v, [0.5 * 2 + 0.5 * 5, 0.5 * 2 + 0.5 * 0], rtol=1e-6)


@pytest.mark.parametrize("layout", list(SHAPES))
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_training_matches_torch(rng, layout, affine):
    x = data(rng, SHAPES[layout])
    c = x.shape[-1]
    mean, var, scale, bias = params(rng, c)
    if not affine:
        scale = bias = None
    y, (new_mean, new_var) = F.batch_norm(x, mean, var, scale, bias, training=True)

    rm, rv = vec(mean), vec(var)
    ty = TF.batch_norm(to_torch(x), rm, rv, vec(scale), vec(bias), training=True, momentum=0.1, eps=EPS)
    assert y.shape == x.shape and y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), from_torch(ty), **TOL)
    # The same against the NumPy formula.
    bm, bv = np_batch_stats(x)
    np.testing.assert_allclose(np.asarray(y), np_batch_norm(x, bm, bv, scale, bias), **TOL)

    # Running mean: torch momentum 0.1 == ours 0.9; both use the batch mean.
    assert new_mean.shape == (c,) and new_mean.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(new_mean), rm.numpy(), **TOL)
    # Running variance: ours uses the BIASED batch variance (NumPy formula) ...
    assert new_var.shape == (c,) and new_var.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(new_var), 0.9 * var.astype(np.float64) + 0.1 * bv, **TOL)
    # ... torch the UNBIASED one: rescale torch's batch term by (m - 1) / m.
    m = x.size // c
    torch_batch_var = (rv.numpy() - 0.9 * var.astype(np.float64)) / 0.1
    np.testing.assert_allclose(torch_batch_var * (m - 1) / m, bv, rtol=1e-9)
    np.testing.assert_allclose(
        np.asarray(new_var), 0.9 * var.astype(np.float64) + 0.1 * torch_batch_var * (m - 1) / m, **TOL
    )


@pytest.mark.parametrize("momentum", [0.0, 0.3, 0.99, 1.0])
def test_batch_norm_momentum_conversion(rng, momentum):
    x = data(rng, SHAPES["2d"])
    mean, var, _, _ = params(rng, x.shape[-1])
    _, (new_mean, new_var) = F.batch_norm(x, mean, var, training=True, momentum=momentum)
    rm, rv = vec(mean), vec(var)
    TF.batch_norm(to_torch(x), rm, rv, training=True, momentum=1.0 - momentum, eps=EPS)
    np.testing.assert_allclose(np.asarray(new_mean), rm.numpy(), **TOL)
    bm, bv = np_batch_stats(x)
    np.testing.assert_allclose(np.asarray(new_var), momentum * var.astype(np.float64) + (1 - momentum) * bv, **TOL)
    if momentum == 1.0:  # statistics frozen
        np.testing.assert_array_equal(np.asarray(new_mean), mean)
        np.testing.assert_array_equal(np.asarray(new_var), var)


@pytest.mark.parametrize("layout", ["NC", "1d", "2d", "3d"])
def test_batch_norm_training_grads_match_torch(rng, layout):
    x = data(rng, SHAPES[layout])
    c = x.shape[-1]
    mean, var, scale, bias = params(rng, c)
    g = rng.normal(size=x.shape).astype(np.float32)

    def loss(x, scale, bias):
        y, _ = F.batch_norm(x, mean, var, scale, bias, training=True)
        return jnp.sum(y * g)

    dx, ds, db = jax.grad(loss, argnums=(0, 1, 2))(x, scale, bias)

    tx, ts, tb = to_torch(x, True), vec(scale, True), vec(bias, True)
    ty = TF.batch_norm(tx, vec(mean), vec(var), ts, tb, training=True, momentum=0.1, eps=EPS)
    (ty * to_torch(g)).sum().backward()
    np.testing.assert_allclose(np.asarray(dx), from_torch(tx.grad), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(ds), ts.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(db), tb.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", ["NC", "2d", "3d"])
def test_batch_norm_inference_matches_torch_eval(rng, layout):
    x = data(rng, SHAPES[layout])
    mean, var, scale, bias = params(rng, x.shape[-1])
    mean_j, var_j = jnp.asarray(mean), jnp.asarray(var)
    y, (m2, v2) = F.batch_norm(x, mean_j, var_j, scale, bias, training=False, momentum=0.5)
    # Inference returns the very same running statistics, untouched.
    assert m2 is mean_j and v2 is var_j
    rm, rv = vec(mean), vec(var)
    ty = TF.batch_norm(to_torch(x), rm, rv, vec(scale), vec(bias), training=False, eps=EPS)
    np.testing.assert_allclose(np.asarray(y), from_torch(ty), **TOL)
    np.testing.assert_allclose(np.asarray(y), np_batch_norm(x, mean, var, scale, bias), **TOL)
    np.testing.assert_array_equal(rm.numpy(), mean)  # torch eval leaves them too

    # Gradients in inference mode: d/dx = scale / sqrt(var + eps), d/dscale, d/dbias.
    g = rng.normal(size=x.shape).astype(np.float32)
    dx, ds, db = jax.grad(
        lambda x, s, b: jnp.sum(F.batch_norm(x, mean_j, var_j, s, b, training=False)[0] * g), argnums=(0, 1, 2)
    )(x, scale, bias)
    tx, ts, tb = to_torch(x, True), vec(scale, True), vec(bias, True)
    (TF.batch_norm(tx, vec(mean), vec(var), ts, tb, training=False, eps=EPS) * to_torch(g)).sum().backward()
    np.testing.assert_allclose(np.asarray(dx), from_torch(tx.grad), **TOL)
    np.testing.assert_allclose(np.asarray(ds), ts.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(db), tb.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_batch_norm_inference_returns_numpy_stats_unchanged(rng):
    x = data(rng, SHAPES["NC"])
    mean, var, _, _ = params(rng, x.shape[-1])
    _, (m2, v2) = F.batch_norm(x, mean, var, training=False)
    assert m2 is mean and v2 is var


@pytest.mark.parametrize("which", ["scale", "bias"])
def test_batch_norm_scale_or_bias_only(rng, which):
    x = data(rng, SHAPES["1d"])
    mean, var, scale, bias = params(rng, x.shape[-1])
    kw = {which: scale if which == "scale" else bias}
    y, _ = F.batch_norm(x, mean, var, **kw, training=True)
    ty = TF.batch_norm(to_torch(x), None, None, vec(kw.get("scale")), vec(kw.get("bias")), training=True, eps=EPS)
    np.testing.assert_allclose(np.asarray(y), from_torch(ty), **TOL)


def test_batch_norm_training_output_is_standardized(rng):
    x = data(rng, (64, 3, 5))
    mean, var, _, _ = params(rng, 5)
    y, _ = F.batch_norm(x, mean, var, training=True, epsilon=0.0)
    y = np.asarray(y, np.float64)
    np.testing.assert_allclose(y.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 1)), 1.0, rtol=1e-5)


def test_batch_norm_bfloat16_statistics_in_float32(rng):
    # A large common offset: bf16 (8 mantissa bits) statistics would be off by ~0.5.
    x32 = (rng.normal(size=(8, 4, 4, 3)) * 2.0 + 300.0).astype(np.float32)
    xb = jnp.asarray(x32, jnp.bfloat16)
    xq = np.asarray(xb.astype(jnp.float32))  # the exact values the bf16 input holds
    mean, var, scale, bias = params(rng, 3)
    y, (new_mean, new_var) = F.batch_norm(xb, mean, var, scale, bias, training=True)
    assert y.dtype == jnp.bfloat16 and y.shape == x32.shape
    assert new_mean.dtype == jnp.float32 and new_var.dtype == jnp.float32
    bm, bv = np_batch_stats(xq)
    np.testing.assert_allclose(np.asarray(new_mean), 0.9 * mean + 0.1 * bm, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new_var), 0.9 * var + 0.1 * bv, rtol=1e-5)
    y_ref = np_batch_norm(xq, bm, bv, scale, bias)
    # Only the final rounding to bf16 (relative 2^-9) separates y from the float64 result.
    np.testing.assert_allclose(np.asarray(y.astype(jnp.float32)), y_ref, rtol=2**-8, atol=1e-2)
    # Close to the float32 computation on the same values.
    y32, (m32, v32) = F.batch_norm(xq, mean, var, scale, bias, training=True)
    np.testing.assert_allclose(np.asarray(y.astype(jnp.float32)), np.asarray(y32), rtol=2**-8, atol=1e-2)
    np.testing.assert_allclose(np.asarray(new_mean), np.asarray(m32), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(new_var), np.asarray(v32), rtol=1e-5)
    # Inference with bf16 input: bf16 out.
    yi, _ = F.batch_norm(xb, jnp.asarray(bm, jnp.float32), jnp.asarray(bv, jnp.float32), training=False)
    assert yi.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(yi.astype(jnp.float32)), np_batch_norm(xq, bm, bv), rtol=2**-8, atol=1e-2)


def test_batch_norm_jit_vmap(rng):
    x = data(rng, (4, 6, 5, 3))  # vmapped over the first axis: 4 independent batches of 6
    mean, var, scale, bias = params(rng, 3)
    f = jax.jit(functools.partial(F.batch_norm, training=True, momentum=0.8))
    y, (m, v) = f(x[0], mean, var, scale, bias)
    bm, bv = np_batch_stats(x[0])
    np.testing.assert_allclose(np.asarray(y), np_batch_norm(x[0], bm, bv, scale, bias), **TOL)
    np.testing.assert_allclose(np.asarray(m), 0.8 * mean + 0.2 * bm, **TOL)
    np.testing.assert_allclose(np.asarray(v), 0.8 * var + 0.2 * bv, **TOL)

    ys, (ms, vs) = jax.jit(jax.vmap(f, in_axes=(0, None, None, None, None)))(x, mean, var, scale, bias)
    assert ys.shape == x.shape and ms.shape == (4, 3)
    for i in range(4):
        bm, bv = np_batch_stats(x[i])
        np.testing.assert_allclose(np.asarray(ys[i]), np_batch_norm(x[i], bm, bv, scale, bias), **TOL)
        np.testing.assert_allclose(np.asarray(ms[i]), 0.8 * mean + 0.2 * bm, **TOL)
        np.testing.assert_allclose(np.asarray(vs[i]), 0.8 * var + 0.2 * bv, **TOL)

    # grad under jit of the inference path
    gi = jax.jit(jax.grad(lambda x: jnp.sum(F.batch_norm(x, mean, var, scale, bias, training=False)[0])))(x[0])
    np.testing.assert_allclose(np.asarray(gi), np.broadcast_to(scale / np.sqrt(var + EPS), x[0].shape), **TOL)


# ------------------------------------------------- synchronized batch norm ---

NDEV = 8


def _sync_data(rng):
    # Each shard has its own offset, so per-shard statistics differ from the global ones.
    x = data(rng, (NDEV * 3, 4, 2, 3))
    x = x + np.repeat(np.arange(NDEV, dtype=np.float32), 3)[:, None, None, None]
    mean, var, scale, bias = params(rng, 3)
    return x, mean, var, scale, bias


def _global_reference(x, mean, var, scale, bias, momentum=0.9):
    bm, bv = np_batch_stats(x)
    y = np_batch_norm(x, bm, bv, scale, bias)
    return y, momentum * mean + (1 - momentum) * bm, momentum * var + (1 - momentum) * bv


def test_eight_cpu_devices():
    assert jax.device_count() == NDEV, "conftest must force 8 host devices"


def test_sync_batch_norm_pmap(rng):
    x, mean, var, scale, bias = _sync_data(rng)
    y1, (m1, v1) = F.batch_norm(x, mean, var, scale, bias, training=True)
    y_ref, m_ref, v_ref = _global_reference(x, mean, var, scale, bias)
    np.testing.assert_allclose(np.asarray(y1), y_ref, **TOL)

    def step(xs, mean, var, scale, bias, axis_name):
        return F.batch_norm(xs, mean, var, scale, bias, training=True, axis_name=axis_name)

    shards = x.reshape(NDEV, -1, *x.shape[1:])
    pstep = jax.pmap(functools.partial(step, axis_name="b"), axis_name="b", in_axes=(0, None, None, None, None))
    ys, (ms, vs) = pstep(shards, mean, var, scale, bias)
    assert ys.shape == shards.shape and ms.shape == (NDEV, 3)
    np.testing.assert_allclose(np.asarray(ys).reshape(x.shape), np.asarray(y1), rtol=1e-5, atol=1e-5)
    for i in range(NDEV):  # every device holds the same, global, new statistics
        np.testing.assert_allclose(np.asarray(ms[i]), np.asarray(m1), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(vs[i]), np.asarray(v1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ms[0]), m_ref, **TOL)
    np.testing.assert_allclose(np.asarray(vs[0]), v_ref, **TOL)

    # Without axis_name each device uses its own shard's statistics: different (the test can tell).
    ys_local, (ms_local, _) = jax.pmap(functools.partial(step, axis_name=None), in_axes=(0, None, None, None, None))(
        shards, mean, var, scale, bias
    )
    assert not np.allclose(np.asarray(ys_local).reshape(x.shape), np.asarray(y1), atol=1e-3)
    assert not np.allclose(np.asarray(ms_local[0]), np.asarray(m1), atol=1e-3)

    # The usual training step: grad of each device's local loss inside pmap. Through the
    # collective, d(local loss)/d(x shard) is the gradient of the global loss (torch on the
    # whole batch); the per-device scale/bias gradients sum to the global ones.
    g = rng.normal(size=x.shape).astype(np.float32)

    def local_loss(xs, gs, scale, bias):
        return jnp.sum(step(xs, mean, var, scale, bias, "b")[0] * gs)

    dx, ds, db = jax.pmap(jax.grad(local_loss, argnums=(0, 2, 3)), axis_name="b", in_axes=(0, 0, None, None))(
        shards, g.reshape(shards.shape), scale, bias
    )
    tx, ts, tb = to_torch(x, True), vec(scale, True), vec(bias, True)
    (TF.batch_norm(tx, None, None, ts, tb, training=True, eps=EPS) * to_torch(g)).sum().backward()
    np.testing.assert_allclose(np.asarray(dx).reshape(x.shape), from_torch(tx.grad), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(ds).sum(axis=0), ts.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(db).sum(axis=0), tb.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_sync_batch_norm_shard_map(rng):
    x, mean, var, scale, bias = _sync_data(rng)
    y1, (m1, v1) = F.batch_norm(x, mean, var, scale, bias, training=True)
    mesh = Mesh(np.array(jax.devices()), ("b",))

    def step(xs, mean, var, scale, bias):
        return F.batch_norm(xs, mean, var, scale, bias, training=True, axis_name="b")

    sharded = jax.jit(
        jax.shard_map(step, mesh=mesh, in_specs=(P("b"), P(), P(), P(), P()), out_specs=(P("b"), (P(), P())))
    )
    xg = jax.device_put(x, NamedSharding(mesh, P("b")))
    y, (m, v) = sharded(xg, mean, var, scale, bias)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(m), np.asarray(m1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(v), np.asarray(v1), rtol=1e-5, atol=1e-5)

    # Gradient through the sharded op == gradient of batch norm on the global batch (torch).
    g = rng.normal(size=x.shape).astype(np.float32)

    def loss(x, scale, bias):
        return jnp.sum(sharded(x, mean, var, scale, bias)[0] * g)

    dx, ds, db = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(xg, scale, bias)
    tx, ts, tb = to_torch(x, True), vec(scale, True), vec(bias, True)
    (TF.batch_norm(tx, None, None, ts, tb, training=True, eps=EPS) * to_torch(g)).sum().backward()
    np.testing.assert_allclose(np.asarray(dx), from_torch(tx.grad), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(ds), ts.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(db), tb.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_sync_batch_norm_vmap_axis_name(rng):
    # A named vmap axis is a collective axis too: the same global statistics.
    x, mean, var, scale, bias = _sync_data(rng)
    y_ref, m_ref, v_ref = _global_reference(x, mean, var, scale, bias)
    shards = x.reshape(NDEV, -1, *x.shape[1:])
    ys, (ms, vs) = jax.vmap(
        lambda xs: F.batch_norm(xs, mean, var, scale, bias, training=True, axis_name="b"), axis_name="b"
    )(shards)
    np.testing.assert_allclose(np.asarray(ys).reshape(x.shape), y_ref, **TOL)
    np.testing.assert_allclose(np.asarray(ms), np.broadcast_to(m_ref, ms.shape), **TOL)
    np.testing.assert_allclose(np.asarray(vs), np.broadcast_to(v_ref, vs.shape), **TOL)


# ------------------------------------------------------------- group norm ---


def test_group_norm_hand_worked():
    # groups [1, 2] and [3, 4]: means 1.5 / 3.5, biased var 0.25 -> [-1, 1, -1, 1].
    y = F.group_norm(jnp.array([[1.0, 2.0, 3.0, 4.0]]), 2, epsilon=0.0)
    np.testing.assert_allclose(y, [[-1.0, 1.0, -1.0, 1.0]], rtol=1e-6)
    y = F.group_norm(
        jnp.array([[1.0, 2.0, 3.0, 4.0]]),
        2,
        jnp.array([1.0, 2.0, 3.0, 4.0]),
        jnp.array([0.0, 0.0, 1.0, 1.0]),
        epsilon=0.0,
    )
    np.testing.assert_allclose(y, [[-1.0, 2.0, -2.0, 5.0]], rtol=1e-6)


@pytest.mark.parametrize("layout", ["NC", "1d", "2d", "3d"])
@pytest.mark.parametrize("groups", [1, 2, 6])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_matches_torch(rng, layout, groups, affine):
    shape = SHAPES[layout][:-1] + (6,)
    x = data(rng, shape)
    _, _, scale, bias = params(rng, 6)
    if not affine:
        scale = bias = None
    y = F.group_norm(x, groups, scale, bias)
    assert y.shape == x.shape and y.dtype == jnp.float32
    ty = TF.group_norm(to_torch(x), groups, vec(scale), vec(bias), eps=EPS)
    np.testing.assert_allclose(np.asarray(y), from_torch(ty), **TOL)
    np.testing.assert_allclose(np.asarray(y), np_group_norm(x, groups, scale, bias), **TOL)


@pytest.mark.parametrize("groups", [1, 3, 6])
def test_group_norm_grads_match_torch(rng, groups):
    x = data(rng, (2, 4, 3, 6))
    _, _, scale, bias = params(rng, 6)
    g = rng.normal(size=x.shape).astype(np.float32)
    dx, ds, db = jax.jit(jax.grad(lambda x, s, b: jnp.sum(F.group_norm(x, groups, s, b) * g), argnums=(0, 1, 2)))(
        x, scale, bias
    )
    tx, ts, tb = to_torch(x, True), vec(scale, True), vec(bias, True)
    (TF.group_norm(tx, groups, ts, tb, eps=EPS) * to_torch(g)).sum().backward()
    np.testing.assert_allclose(np.asarray(dx), from_torch(tx.grad), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(ds), ts.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(db), tb.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_group_norm_jit_vmap_bf16(rng):
    x = data(rng, (3, 2, 5, 4))
    _, _, scale, bias = params(rng, 4)
    f = jax.jit(F.group_norm, static_argnums=1)
    np.testing.assert_allclose(np.asarray(f(x[0], 2, scale, bias)), np_group_norm(x[0], 2, scale, bias), **TOL)
    ys = jax.vmap(lambda xi: F.group_norm(xi, 2, scale, bias))(x)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(ys[i]), np_group_norm(x[i], 2, scale, bias), **TOL)
    xb = jnp.asarray(x[0] + 200.0, jnp.bfloat16)
    yb = F.group_norm(xb, 2, scale, bias)
    assert yb.dtype == jnp.bfloat16
    ref = np_group_norm(np.asarray(xb.astype(jnp.float32)), 2, scale, bias)
    np.testing.assert_allclose(np.asarray(yb.astype(jnp.float32)), ref, rtol=2**-8, atol=1e-2)


# ------------------------------------------------------------- layer norm ---


def test_layer_norm_hand_worked():
    # mean 2.5, biased var 1.25
    y = F.layer_norm(jnp.array([[1.0, 2.0, 3.0, 4.0]]), epsilon=0.0)
    np.testing.assert_allclose(y, [(np.array([1.0, 2.0, 3.0, 4.0]) - 2.5) / np.sqrt(1.25)], rtol=1e-6)


@pytest.mark.parametrize("layout", ["NC", "1d", "2d", "3d"])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_elementwise_affine_matches_torch(rng, layout, affine):
    x = data(rng, SHAPES[layout])
    feat = x.shape[1:]
    scale = rng.uniform(0.5, 1.5, feat).astype(np.float32) if affine else None
    bias = rng.normal(size=feat).astype(np.float32) if affine else None
    y = F.layer_norm(x, scale, bias)
    assert y.shape == x.shape and y.dtype == jnp.float32
    # layer norm is layout-free: torch gets the channels-last array as it is.
    ty = TF.layer_norm(torch.tensor(x.astype(np.float64)), feat, vec(scale), vec(bias), eps=EPS)
    np.testing.assert_allclose(np.asarray(y), ty.numpy(), **TOL)


@pytest.mark.parametrize("layout", ["1d", "2d", "3d"])
def test_layer_norm_per_channel_affine(rng, layout):
    x = data(rng, SHAPES[layout])
    c = x.shape[-1]
    _, _, scale, bias = params(rng, c)
    y = F.layer_norm(x, scale, bias)
    np.testing.assert_allclose(np.asarray(y), np_layer_norm(x, scale, bias), **TOL)
    # per-channel affine == group_norm with one group (torch as the oracle)
    ty = TF.group_norm(to_torch(x), 1, vec(scale), vec(bias), eps=EPS)
    np.testing.assert_allclose(np.asarray(y), from_torch(ty), **TOL)
    # a trailing part (W, C) of the feature shape
    s2 = rng.uniform(0.5, 1.5, x.shape[-2:]).astype(np.float32)
    np.testing.assert_allclose(np.asarray(F.layer_norm(x, s2)), np_layer_norm(x, s2), **TOL)


def test_layer_norm_grads_match_torch(rng):
    x = data(rng, SHAPES["2d"])
    feat = x.shape[1:]
    scale = rng.uniform(0.5, 1.5, feat).astype(np.float32)
    bias = rng.normal(size=feat).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    dx, ds, db = jax.jit(jax.grad(lambda x, s, b: jnp.sum(F.layer_norm(x, s, b) * g), argnums=(0, 1, 2)))(
        x, scale, bias
    )
    tx, ts, tb = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, scale, bias))
    (TF.layer_norm(tx, feat, ts, tb, eps=EPS) * torch.tensor(g.astype(np.float64))).sum().backward()
    np.testing.assert_allclose(np.asarray(dx), tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(ds), ts.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(db), tb.grad.numpy(), rtol=1e-4, atol=1e-4)

    # per-channel (C,) affine: gradient w.r.t. scale/bias sums over samples and positions
    _, _, sc, bc = params(rng, x.shape[-1])
    dsc, dbc = jax.grad(lambda s, b: jnp.sum(F.layer_norm(x, s, b) * g), argnums=(0, 1))(sc, bc)
    xhat = np_layer_norm(x)
    np.testing.assert_allclose(np.asarray(dsc), (xhat * g).sum(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dbc), g.astype(np.float64).sum(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)


def test_layer_norm_jit_vmap_bf16(rng):
    x = data(rng, (3, 2, 4, 3))
    _, _, scale, bias = params(rng, 3)
    np.testing.assert_allclose(
        np.asarray(jax.jit(F.layer_norm)(x[0], scale, bias)), np_layer_norm(x[0], scale, bias), **TOL
    )
    ys = jax.vmap(lambda xi: F.layer_norm(xi, scale, bias))(x)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(ys[i]), np_layer_norm(x[i], scale, bias), **TOL)
    xb = jnp.asarray(x[0] + 200.0, jnp.bfloat16)
    yb = F.layer_norm(xb)
    assert yb.dtype == jnp.bfloat16
    ref = np_layer_norm(np.asarray(xb.astype(jnp.float32)))
    np.testing.assert_allclose(np.asarray(yb.astype(jnp.float32)), ref, rtol=2**-8, atol=1e-2)


# ------------------------------------------------------------------ errors ---


def _bn_args(c=3):
    return jnp.ones((2, 4, c)), jnp.zeros(c), jnp.ones(c)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(mean=jnp.zeros(4)), ValueError, "mean"),
        (dict(mean=jnp.zeros((1, 3))), ValueError, "mean"),
        (dict(var=jnp.ones(2)), ValueError, "var"),
        (dict(mean=None), TypeError, "mean"),
        (dict(scale=jnp.ones(4)), ValueError, "scale"),
        (dict(bias=jnp.ones((3, 1))), ValueError, "bias"),
        (dict(momentum=-0.1), ValueError, "momentum"),
        (dict(momentum=1.5), ValueError, "momentum"),
        (dict(momentum=float("nan")), ValueError, "momentum"),
        (dict(momentum="0.9"), TypeError, "momentum"),
        (dict(epsilon=-1e-5), ValueError, "epsilon"),
        (dict(epsilon=float("nan")), ValueError, "epsilon"),
        (dict(epsilon=None), TypeError, "epsilon"),
        (dict(training=1), TypeError, "training"),
        (dict(training="yes"), TypeError, "training"),
        (dict(training=None), TypeError, "training"),
        (dict(x=jnp.ones(3)), ValueError, "x"),
        (dict(x=jnp.ones((2, 3), jnp.int32)), TypeError, "x"),
        (dict(x="abc"), TypeError, "x"),
    ],
)
def test_batch_norm_errors(kwargs, exc, match):
    x, mean, var = _bn_args()
    args = dict(x=x, mean=mean, var=var, training=True)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        F.batch_norm(**args)


def test_batch_norm_training_is_required():
    x, mean, var = _bn_args()
    with pytest.raises(TypeError, match="training"):
        F.batch_norm(x, mean, var)


def test_batch_norm_traced_training_or_momentum_rejected():
    x, mean, var = _bn_args()
    with pytest.raises(TypeError, match="training"):
        jax.jit(lambda t: F.batch_norm(x, mean, var, training=t))(True)
    with pytest.raises(TypeError, match="momentum"):
        jax.jit(lambda m: F.batch_norm(x, mean, var, training=True, momentum=m))(0.9)


@pytest.mark.parametrize(
    "groups, kwargs, exc, match",
    [
        (4, {}, ValueError, "num_groups"),  # does not divide C=6
        (0, {}, ValueError, "num_groups"),
        (-2, {}, ValueError, "num_groups"),
        (12, {}, ValueError, "num_groups"),
        (2.0, {}, TypeError, "num_groups"),
        (True, {}, TypeError, "num_groups"),
        (2, dict(scale=jnp.ones(3)), ValueError, "scale"),
        (2, dict(bias=jnp.ones(7)), ValueError, "bias"),
        (2, dict(epsilon=-1.0), ValueError, "epsilon"),
    ],
)
def test_group_norm_errors(groups, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        F.group_norm(jnp.ones((2, 5, 6)), groups, **kwargs)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(scale=jnp.ones(4)), ValueError, "scale"),  # C = 3
        (dict(scale=jnp.ones((4, 3, 1))), ValueError, "scale"),
        (dict(scale=jnp.ones((2, 5, 4, 3))), ValueError, "scale"),  # includes the batch axis
        (dict(bias=jnp.ones((5, 3))), ValueError, "bias"),  # not a trailing part of (5, 4, 3)
        (dict(epsilon=-0.5), ValueError, "epsilon"),
        (dict(scale="s"), TypeError, "scale"),
    ],
)
def test_layer_norm_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        F.layer_norm(jnp.ones((2, 5, 4, 3)), **kwargs)


def test_layer_norm_needs_a_feature_axis():
    with pytest.raises(ValueError, match="x"):
        F.layer_norm(jnp.ones(4))
    with pytest.raises(TypeError, match="x"):
        F.layer_norm(jnp.ones((2, 4), jnp.int32))


@pytest.mark.parametrize("masked", [False, True])
def test_batch_norm_gradient_through_the_returned_statistics(rng, masked):
    """The hand-written VJP also carries cotangents of new_mean/new_var: compare with autodiff of
    the textbook formulas written here in plain jnp (weighted by the mask)."""
    x = jnp.asarray(rng.normal(2.0, 3.0, size=(6, 5, 4, 3)), jnp.float32)
    scale = jnp.asarray(rng.uniform(0.5, 2, 3), jnp.float32)
    bias = jnp.asarray(rng.normal(size=3), jnp.float32)
    mask = jnp.asarray([1, 1, 0, 1, 0, 1] if masked else [1] * 6, jnp.float32)
    cy = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    cm, cv = jnp.asarray(rng.normal(size=3), jnp.float32), jnp.asarray(rng.normal(size=3), jnp.float32)

    def ours(x, scale, bias):
        y, (m, v) = F.batch_norm(
            x, jnp.zeros(3), jnp.ones(3), scale, bias, training=True, momentum=0.5, mask=mask if masked else None
        )
        return jnp.sum(y * cy) + jnp.sum(m * cm) + jnp.sum(v * cv)

    def reference(x, scale, bias):
        w = mask.reshape(6, 1, 1, 1)
        n = jnp.sum(w) * 5 * 4
        mu = jnp.sum(w * x, axis=(0, 1, 2), keepdims=True) / n
        var = jnp.sum(w * (x - mu) ** 2, axis=(0, 1, 2), keepdims=True) / n
        y = (x - mu) / jnp.sqrt(var + 1e-5) * scale.reshape(1, 1, 1, 3) + bias.reshape(1, 1, 1, 3)
        return jnp.sum(y * cy) + jnp.sum(0.5 * mu.ravel() * cm) + jnp.sum((0.5 + 0.5 * var.ravel()) * cv)

    got = jax.grad(ours, argnums=(0, 1, 2))(x, scale, bias)
    want = jax.grad(reference, argnums=(0, 1, 2))(x, scale, bias)
    for g, r in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=2e-4, atol=2e-4)
