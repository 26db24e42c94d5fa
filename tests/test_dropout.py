"""Tests of ``jaxcnn.functional.dropout``.

Oracles: binomial statistics of the mask, NumPy formulas for the kept values
(``x * float32(1 / (1 - rate))``, within a relative ``2**-23`` of ``x / (1 - rate)``), and
hand-worked cases. The library is never compared with itself except where the
property *is* self-consistency (same key -> same mask, jit == eager).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxcnn.functional as F

RATES = [0.1, 0.3, 0.5, 0.7, 0.9]


def nonzero_data(rng, shape, dtype=np.float32):
    """Normal data with |x| >= 0.1, so ``y != 0`` identifies the kept units."""
    x = rng.normal(size=shape)
    x = np.where(np.abs(x) < 0.1, 0.1 * np.sign(x) + 0.1 * (x == 0), x)
    return x.astype(dtype)


def kept_reference(x, factor):
    """``x * factor`` as the contract specifies it: the factor rounded once to float32,
    one float32 multiply, then rounded to ``x``'s dtype (NumPy, round to nearest even)."""
    x32 = np.asarray(x).astype(np.float32)
    return (x32 * np.float32(factor)).astype(np.asarray(x).dtype)


def within_two_roundings(y, exact):
    """``|y - exact| <= 2**-23 |exact|`` elementwise (``exact`` computed in float64): the
    error of rounding the factor to float32 plus that of the float32 product."""
    return np.all(np.abs(np.asarray(y, np.float64) - exact) <= 2.0**-23 * np.abs(exact))


# ---------------------------------------------------------------- the mask ---


@pytest.mark.parametrize("rate", RATES)
def test_keep_fraction_is_binomial(rate):
    n = 400 * 500
    y = F.dropout(jnp.ones((400, 500)), rate, key=jax.random.key(17))
    kept = np.asarray(y) != 0
    p = 1.0 - rate
    # 5 binomial standard deviations: a false failure has probability < 1e-6.
    assert abs(kept.mean() - p) < 5 * np.sqrt(p * (1 - p) / n), kept.mean()
    # no structure along either axis: rows and columns keep about p each
    assert abs(kept.mean(axis=0).mean() - p) < 0.01 and kept.mean(axis=0).std() < 0.1
    assert abs(kept.mean(axis=1).mean() - p) < 0.01 and kept.mean(axis=1).std() < 0.1


@pytest.mark.parametrize("rate", RATES + [0.37, 0.999])
def test_inverted_scaling_of_kept_values(rng, rate):
    x = nonzero_data(rng, (64, 50))
    y = np.asarray(F.dropout(x, rate, key=jax.random.key(1)))
    assert y.dtype == np.float32
    kept = y != 0
    assert kept.any() or rate > 0.99
    # dropped units are exactly 0 (not -0.0 or tiny), kept ones exactly x * float32(1/(1-rate))
    np.testing.assert_array_equal(y[~kept], 0.0)
    np.testing.assert_array_equal(y[kept], kept_reference(x, 1.0 / (1.0 - rate))[kept])
    assert within_two_roundings(y[kept], x[kept].astype(np.float64) / (1.0 - rate))


def test_inverted_scaling_hand_worked():
    # rate 0.5 and 0.75: factors 2 and 4, exact in any float format.
    for rate, factor in [(0.5, 2.0), (0.75, 4.0)]:
        y = np.asarray(F.dropout(jnp.full((1000,), 1.5), rate, key=jax.random.key(0)))
        assert set(np.unique(y).tolist()) == {0.0, 1.5 * factor}


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_scaled_mode(rng, rate):
    x = nonzero_data(rng, (64, 50))
    y = np.asarray(F.dropout(x, rate, key=jax.random.key(2), mode="scaled"))
    kept = y != 0
    np.testing.assert_array_equal(y[kept], x[kept])  # no scaling while training
    np.testing.assert_array_equal(y[~kept], 0.0)
    yi = np.asarray(F.dropout(x, rate, training=False, mode="scaled"))
    np.testing.assert_array_equal(yi, x * np.float32(1.0 - rate))  # weight scaling at inference
    # mode is case-insensitive
    np.testing.assert_array_equal(np.asarray(F.dropout(x, rate, key=jax.random.key(2), mode="Scaled")), y)


@pytest.mark.parametrize("rate", [0.2, 0.6])
def test_inverted_and_scaled_share_the_mask(rng, rate):
    x = nonzero_data(rng, (30, 40))
    key = jax.random.key(5)
    yi = np.asarray(F.dropout(x, rate, key=key))
    ys = np.asarray(F.dropout(x, rate, key=key, mode="scaled"))
    np.testing.assert_array_equal(yi != 0, ys != 0)
    assert 0 < (yi != 0).mean() < 1


def test_same_key_same_mask_different_key_different_mask(rng):
    x = nonzero_data(rng, (32, 32))
    a = np.asarray(F.dropout(x, 0.5, key=jax.random.key(0)))
    b = np.asarray(F.dropout(x, 0.5, key=jax.random.key(0)))
    c = np.asarray(F.dropout(x, 0.5, key=jax.random.key(1)))
    np.testing.assert_array_equal(a, b)
    assert ((a != 0) != (c != 0)).mean() > 0.3  # independent masks differ in about half the units
    # the mask does not depend on x's values
    a2 = np.asarray(F.dropout(2 * x + 1, 0.5, key=jax.random.key(0)))
    np.testing.assert_array_equal(a2 != 0, a != 0)


def test_typed_and_raw_keys(rng):
    x = nonzero_data(rng, (20, 30))
    typed = np.asarray(F.dropout(x, 0.4, key=jax.random.key(3)))
    raw = np.asarray(F.dropout(x, 0.4, key=jax.random.PRNGKey(3)))
    # a raw PRNGKey is the key data of the default (threefry) typed key: same mask
    np.testing.assert_array_equal(typed, raw)
    wrapped = np.asarray(F.dropout(x, 0.4, key=jax.random.wrap_key_data(jax.random.PRNGKey(3))))
    np.testing.assert_array_equal(wrapped, raw)
    split = jax.random.split(jax.random.key(3))[1]
    assert not np.array_equal(np.asarray(F.dropout(x, 0.4, key=split)), typed)


# ------------------------------------------------------------ rate 0 and 1 ---


@pytest.mark.parametrize("mode", ["inverted", "scaled"])
def test_rate_zero_is_identity(rng, mode):
    x = nonzero_data(rng, (8, 9))
    np.testing.assert_array_equal(np.asarray(F.dropout(x, 0.0, key=jax.random.key(0), mode=mode)), x)
    np.testing.assert_array_equal(np.asarray(F.dropout(x, 0, training=False, mode=mode)), x)
    g = jax.grad(lambda x: jnp.sum(F.dropout(x, 0.0, key=jax.random.key(0), mode=mode)))(x)
    np.testing.assert_array_equal(np.asarray(g), 1.0)


@pytest.mark.parametrize("mode", ["inverted", "scaled"])
def test_rate_one_is_zeros_without_nan(rng, mode):
    x = nonzero_data(rng, (8, 9))
    y = np.asarray(F.dropout(x, 1.0, key=jax.random.key(0), mode=mode))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, 0.0)
    assert not np.signbit(y).any()
    g = jax.grad(lambda x: jnp.sum(F.dropout(x, 1, key=jax.random.key(0), mode=mode)))(x)
    assert np.isfinite(np.asarray(g)).all()
    np.testing.assert_array_equal(np.asarray(g), 0.0)
    # under jit with a traced key too
    gj = jax.jit(jax.grad(lambda x, k: jnp.sum(F.dropout(x, 1.0, key=k, mode=mode))))(x, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(gj), 0.0)
    if mode == "scaled":  # inference: x * 0
        np.testing.assert_array_equal(np.asarray(F.dropout(x, 1.0, training=False, mode=mode)), 0.0)


def test_rate_near_one_stays_finite(rng):
    x = nonzero_data(rng, (100, 100))
    g = jax.grad(lambda x: jnp.sum(F.dropout(x, 0.9999, key=jax.random.key(0))))(x)
    assert np.isfinite(np.asarray(g)).all()
    assert set(np.unique(np.asarray(g)).tolist()) <= {0.0, float(np.float32(1 / (1 - 0.9999)))}


# --------------------------------------------------------------- inference ---


def test_inference_is_identity(rng):
    x = nonzero_data(rng, (4, 5, 6))
    for rate in [0.0, 0.3, 1.0]:
        y = F.dropout(x, rate, training=False)  # no key needed
        np.testing.assert_array_equal(np.asarray(y), x)
        y = F.dropout(x, rate, key=jax.random.key(0), training=False)
        np.testing.assert_array_equal(np.asarray(y), x)
    xj = jnp.asarray(x)
    assert F.dropout(xj, 0.5, training=False) is xj


# ------------------------------------------------------ spatial dropout ---


def test_broadcast_axes_drops_whole_feature_maps(rng):
    x = nonzero_data(rng, (4, 6, 5, 8))
    y = np.asarray(F.dropout(x, 0.5, key=jax.random.key(4), broadcast_axes=(1, 2)))
    kept = y != 0
    # one decision per (n, c): constant over H and W
    per_map = kept[:, :1, :1, :]
    np.testing.assert_array_equal(kept, np.broadcast_to(per_map, kept.shape))
    assert 0 < per_map.mean() < 1  # 32 maps at rate 0.5: both outcomes occur
    np.testing.assert_array_equal(y[kept], kept_reference(x, 2.0)[kept])
    # negative axes mean the same axes
    y_neg = np.asarray(F.dropout(x, 0.5, key=jax.random.key(4), broadcast_axes=(-3, -2)))
    np.testing.assert_array_equal(y_neg, y)
    # a single int: one decision per (n, h, w) position, shared by all channels
    yc = np.asarray(F.dropout(x, 0.5, key=jax.random.key(4), broadcast_axes=3)) != 0
    np.testing.assert_array_equal(yc, np.broadcast_to(yc[..., :1], yc.shape))


def test_broadcast_axes_map_drop_rate():
    y = np.asarray(F.dropout(jnp.ones((256, 3, 3, 128)), 0.3, key=jax.random.key(9), broadcast_axes=(1, 2)))
    per_map = (y[:, 0, 0, :] != 0).ravel()
    n = per_map.size
    assert abs(per_map.mean() - 0.7) < 5 * np.sqrt(0.7 * 0.3 / n)


# ------------------------------------------------------------- expectation ---


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_expectation_over_keys(rng, rate):
    x = nonzero_data(rng, (64,))
    k = 4000
    keys = jax.random.split(jax.random.key(11), k)
    ys = np.asarray(jax.vmap(lambda key: F.dropout(x, rate, key=key))(keys), np.float64)
    p = 1 - rate
    # each y is x/p with probability p, else 0: mean x, std |x| sqrt(rate / p)
    sem = np.abs(x) * np.sqrt(rate / p) / np.sqrt(k)
    z = (ys.mean(axis=0) - x) / sem
    assert np.all(np.abs(z) < 5.5), np.abs(z).max()
    assert abs(z.mean()) < 5 / np.sqrt(x.size)  # no systematic bias
    # scaled mode: training mean equals the inference output p * x
    ys = np.asarray(jax.vmap(lambda key: F.dropout(x, rate, key=key, mode="scaled"))(keys), np.float64)
    z = (ys.mean(axis=0) - p * x) / (np.abs(x) * np.sqrt(rate * p) / np.sqrt(k))
    assert np.all(np.abs(z) < 5.5), np.abs(z).max()


# -------------------------------------------------------------- low precision ---


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_kept_values_unbiased(rng, dtype):
    x = jnp.asarray(nonzero_data(rng, (300, 200)), dtype)
    rate = 0.1
    y = F.dropout(x, rate, key=jax.random.key(6))
    assert y.dtype == dtype
    yn, xn = np.asarray(y), np.asarray(x)
    kept = yn != 0
    np.testing.assert_array_equal(yn[kept], kept_reference(xn, 1 / 0.9)[kept])
    # the mean ratio y / x over 54000 kept units is 1/0.9 up to averaged rounding
    # errors; a factor rounded to bf16 first (1 / bf16(0.9)) would be 0.2% off.
    ratio = yn[kept].astype(np.float64) / xn[kept].astype(np.float64)
    assert abs(ratio.mean() * 0.9 - 1.0) < 2e-4, ratio.mean() * 0.9
    yi = F.dropout(x, rate, training=False, mode="scaled")
    assert yi.dtype == dtype
    np.testing.assert_array_equal(np.asarray(yi), kept_reference(xn, 0.9))


# -------------------------------------------------------- jit / grad / vmap ---


def test_jit(rng):
    x = nonzero_data(rng, (16, 20))
    f = jax.jit(functools.partial(F.dropout, rate=0.3))
    key = jax.random.key(8)
    y = np.asarray(f(x, key=key))
    kept = y != 0
    np.testing.assert_array_equal(y[kept], kept_reference(x, 1 / 0.7)[kept])
    np.testing.assert_array_equal(y, np.asarray(F.dropout(x, 0.3, key=key)))  # jit == eager
    # rate as a static argument
    g = jax.jit(F.dropout, static_argnames=("rate", "mode"))
    np.testing.assert_array_equal(np.asarray(g(x, rate=0.3, key=key)), y)
    np.testing.assert_array_equal(np.asarray(g(x, rate=0.3, key=key, mode="scaled")) != 0, kept)


def test_grad(rng):
    x = nonzero_data(rng, (16, 20))
    g = rng.normal(size=x.shape).astype(np.float32)
    key = jax.random.key(8)
    y = np.asarray(F.dropout(x, 0.3, key=key))
    mask = y != 0
    dx = np.asarray(jax.jit(jax.grad(lambda x: jnp.sum(F.dropout(x, 0.3, key=key) * g)))(x))
    np.testing.assert_array_equal(dx, np.where(mask, kept_reference(g, 1 / 0.7), 0.0))
    ds = np.asarray(jax.grad(lambda x: jnp.sum(F.dropout(x, 0.3, key=key, mode="scaled") * g))(x))
    np.testing.assert_array_equal(ds, np.where(mask, g, 0.0))


@pytest.mark.parametrize("make_keys", [jax.random.key, jax.random.PRNGKey], ids=["typed", "raw"])
def test_vmap_over_keys_gives_different_masks(rng, make_keys):
    x = nonzero_data(rng, (20, 30))
    keys = jax.random.split(make_keys(0), 6)
    ys = np.asarray(jax.jit(jax.vmap(lambda k: F.dropout(x, 0.5, key=k)))(keys))
    masks = ys != 0
    for i in range(6):
        np.testing.assert_array_equal(ys[i][masks[i]], kept_reference(x, 2.0)[masks[i]])
        assert abs(masks[i].mean() - 0.5) < 0.1
        for j in range(i):
            assert (masks[i] != masks[j]).mean() > 0.3
    # each vmapped row is what that key gives on its own
    np.testing.assert_array_equal(ys[2], np.asarray(F.dropout(x, 0.5, key=keys[2])))


def test_vmap_over_data_and_keys(rng):
    x = nonzero_data(rng, (4, 10, 10))
    keys = jax.random.split(jax.random.key(1), 4)
    ys = np.asarray(jax.vmap(lambda xi, k: F.dropout(xi, 0.5, key=k, broadcast_axes=0))(x, keys))
    kept = ys != 0
    for i in range(4):  # broadcast_axes refers to the unbatched (10, 10) array: rows share a mask
        np.testing.assert_array_equal(kept[i], np.broadcast_to(kept[i][:1], (10, 10)))
    assert not all(np.array_equal(kept[0], kept[i]) for i in range(1, 4))


# ------------------------------------------------- data-parallel (axis_name) ---


def _global_and_shards(rng, ndev=8):
    x = nonzero_data(rng, (ndev * 3, 4, 5))
    return x, x.reshape(ndev, 3, 4, 5)


@pytest.mark.parametrize("broadcast_axes", [(), (1,), (0, 2)])
def test_axis_name_pmap_equals_single_device(rng, broadcast_axes):
    assert jax.device_count() == 8
    x, shards = _global_and_shards(rng)
    key = jax.random.key(21)
    want = np.asarray(F.dropout(x, 0.4, key=key, broadcast_axes=broadcast_axes))
    kept = want != 0
    np.testing.assert_array_equal(want[kept], kept_reference(x, 1 / 0.6)[kept])
    got = jax.pmap(
        lambda xs, k: F.dropout(xs, 0.4, key=k, broadcast_axes=broadcast_axes, axis_name="b"),
        axis_name="b",
        in_axes=(0, None),
    )(shards, key)
    np.testing.assert_array_equal(np.asarray(got).reshape(x.shape), want)
    # without axis_name every device draws the same shard-sized mask: not the global one
    local = np.asarray(jax.pmap(lambda xs, k: F.dropout(xs, 0.4, key=k), in_axes=(0, None))(shards, key))
    assert all(np.array_equal(local[0] != 0, local[i] != 0) for i in range(8))


def test_axis_name_shard_map_and_vmap_equal_single_device(rng):
    x, shards = _global_and_shards(rng)
    key = jax.random.key(22)
    want = np.asarray(F.dropout(x, 0.5, key=key, mode="scaled"))
    mesh = Mesh(np.array(jax.devices()), ("b",))
    f = jax.jit(
        jax.shard_map(
            lambda xs, k: F.dropout(xs, 0.5, key=k, mode="scaled", axis_name="b"),
            mesh=mesh,
            in_specs=(P("b"), P()),
            out_specs=P("b"),
        )
    )
    got = f(jax.device_put(x, NamedSharding(mesh, P("b"))), key)
    np.testing.assert_array_equal(np.asarray(got), want)
    got_v = jax.vmap(lambda xs: F.dropout(xs, 0.5, key=key, mode="scaled", axis_name="b"), axis_name="b")(shards)
    np.testing.assert_array_equal(np.asarray(got_v).reshape(x.shape), want)


def test_axis_name_needs_a_batch_axis():
    with pytest.raises(ValueError, match="axis_name"):
        jax.vmap(lambda s: F.dropout(s, 0.5, key=jax.random.key(0), axis_name="b"), axis_name="b")(jnp.ones(4))


# ------------------------------------------------------------------ errors ---


def test_training_without_key():
    with pytest.raises(ValueError, match="key"):
        F.dropout(jnp.ones(3), 0.5)
    with pytest.raises(ValueError, match="key"):
        F.dropout(jnp.ones(3), 0.0, training=True)


@pytest.mark.parametrize(
    "rate, exc",
    [
        (-0.1, ValueError),
        (1.5, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("0.5", TypeError),
        (None, TypeError),
        (True, TypeError),
        ([0.5], TypeError),
    ],
)
def test_bad_rate(rate, exc):
    with pytest.raises(exc, match="rate"):
        F.dropout(jnp.ones(3), rate, key=jax.random.key(0))
    with pytest.raises(exc, match="rate"):
        F.dropout(jnp.ones(3), rate, training=False)


def test_traced_rate_rejected():
    with pytest.raises(TypeError, match="rate"):
        jax.jit(lambda r: F.dropout(jnp.ones(3), r, key=jax.random.key(0)))(0.5)


@pytest.mark.parametrize(
    "mode, exc", [("dropconnect", ValueError), ("", ValueError), (1, TypeError), (None, TypeError)]
)
def test_bad_mode(mode, exc):
    with pytest.raises(exc, match="mode"):
        F.dropout(jnp.ones(3), 0.5, key=jax.random.key(0), mode=mode)


@pytest.mark.parametrize(
    "axes, exc",
    [
        ((4,), ValueError),
        ((1, -5), ValueError),
        (4, ValueError),
        ((1, 1), ValueError),
        ((1, -3), ValueError),
        ("1", TypeError),
        (None, TypeError),
        ((1.0,), TypeError),
    ],
)
def test_bad_broadcast_axes(axes, exc):
    with pytest.raises(exc, match="broadcast_axes"):
        F.dropout(jnp.ones((2, 3, 4, 5)), 0.5, key=jax.random.key(0), broadcast_axes=axes)


@pytest.mark.parametrize(
    "key",
    [
        0,
        1.5,
        "key",
        jnp.zeros(2, jnp.float32),
        jnp.zeros(2, jnp.int32),
        jnp.zeros((2, 2), jnp.uint32),
        jax.random.split(jax.random.key(0), 2),
    ],
    ids=["int", "float", "str", "float-array", "int32-array", "uint32-matrix", "batch-of-typed-keys"],
)
def test_bad_key(key):
    for rate in (0.5, 0.0):  # checked even where no mask is drawn
        with pytest.raises(TypeError, match="key"):
            F.dropout(jnp.ones(3), rate, key=key)
    with pytest.raises(TypeError, match="key"):
        F.dropout(jnp.ones(3), 0.5, key=key, training=False)


@pytest.mark.parametrize("training", [1, 0, "True", None, jnp.array(True)])
def test_training_not_a_bool(training):
    with pytest.raises(TypeError, match="training"):
        F.dropout(jnp.ones(3), 0.5, key=jax.random.key(0), training=training)


def test_bad_x():
    with pytest.raises(TypeError, match="x"):
        F.dropout(jnp.ones(3, jnp.int32), 0.5, key=jax.random.key(0))
    with pytest.raises(TypeError, match="x"):
        F.dropout("abc", 0.5, key=jax.random.key(0))
