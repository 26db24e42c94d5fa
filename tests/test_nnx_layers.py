"""jaxcnn.nnx layers: every jaxcnn.nn module has an NNX twin with equal outputs and statistics (registry-driven)."""

from __future__ import annotations

import dataclasses
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxcnn.functional as F
import jaxcnn.nn as jnn
import jaxcnn.nnx as jnnx
from jaxcnn.nnx import twins

KEY = jax.random.key(0)
CASES = [(cls, i, case) for cls, twin in twins.TWINS.items() for i, case in enumerate(twin.cases)]


def _linen_modules():
    return [
        getattr(jnn, n)
        for n in jnn.__all__
        if inspect.isclass(getattr(jnn, n)) and issubclass(getattr(jnn, n), nn.Module)
    ]


def test_every_public_linen_module_has_a_twin_with_test_cases():
    modules = _linen_modules()
    assert len(modules) >= 17
    missing = [m.__name__ for m in modules if m not in twins.TWINS or not twins.TWINS[m].cases]
    assert not missing, f"jaxcnn.nn modules without an NNX twin in jaxcnn.nnx.twins.TWINS: {missing}"


@pytest.mark.parametrize("cls", [c for c in twins.TWINS if c.__module__.startswith("jaxcnn")], ids=lambda c: c.__name__)
def test_every_linen_option_reaches_the_nnx_constructor(cls):
    twin = twins.TWINS[cls]
    accepted = set(inspect.signature(twin.nnx.__init__).parameters)
    case = twin.cases[0]
    inputs = case.inputs(KEY)
    derived = set(twin.derive(case.linen, inputs)) if twin.derive is not twins.Twin.derive else set()
    for f in dataclasses.fields(cls):
        if f.name in ("parent", "name"):
            continue
        if f.name in twin.defaults_only:  # declared Linen-only: a non-default value must be refused, naming it
            with pytest.raises(ValueError, match=f"{cls.__name__}.{f.name}=.*no counterpart"):
                twins.build(case.linen.clone(**{f.name: object()}), inputs, nnx.Rngs(0))
            continue
        assert twin.renamed.get(f.name, f.name) in accepted | derived, f"{cls.__name__}.{f.name} is not mirrored"


def _calls(case, inputs):
    for kw in case.calls:
        kw = dict(kw)
        if kw.get("mask") == "half":
            kw["mask"] = jnp.arange(inputs[0].shape[0]) % 2 == 0
        yield kw


@pytest.mark.parametrize("cls, index, case", CASES, ids=[f"{c.__name__}-{i}" for c, i, _ in CASES])
def test_twin_equals_linen_given_the_linen_variables(cls, index, case):
    inputs = case.inputs(jax.random.fold_in(KEY, index))
    first = {k: v for k, v in case.calls[0].items() if k != "mask"}
    variables = case.linen.init({"params": KEY, "dropout": KEY}, *inputs, **first)
    layer = twins.build(case.linen, inputs, nnx.Rngs(params=jax.random.key(1, impl="rbg")))
    if variables:
        layer = jnnx.from_linen(layer, variables)
    assert jax.tree.map(np.shape, jnnx.to_linen(layer)) == jax.tree.map(np.shape, {"params": {}, **variables})
    stats = sorted(c for c in variables if c != "params")  # batch_stats, spectral_stats: updated in training
    for kw in _calls(case, inputs):
        dropout_key = jax.random.key(7)
        want, updates = case.linen.apply(
            variables, *inputs, **kw, rngs={"dropout": dropout_key}, mutable=stats or ["batch_stats"]
        )
        run = nnx.clone(layer)
        got = case.linen.apply(
            {}, method=lambda m, run=run, kw=kw: twins.call(run, m, inputs, kw), rngs={"dropout": dropout_key}
        )
        jax.tree.map(np.testing.assert_array_equal, want, got)
        new_stats = {c: v for c, v in jnnx.to_linen(run).items() if c != "params"}
        assert sorted(new_stats) == stats
        jax.tree.map(np.testing.assert_array_equal, {c: dict(updates).get(c, variables[c]) for c in stats}, new_stats)


def test_round_trip_and_linen_apply_of_nnx_values():
    x = jax.random.normal(KEY, (2, 9, 9, 4))
    layer = jnnx.Conv(4, 6, (3, 3), strides=2, groups=2, rngs=nnx.Rngs(3))
    variables = jnnx.to_linen(layer)
    np.testing.assert_array_equal(jnn.Conv(6, 3, strides=2, groups=2).apply(variables, x), layer(x))
    back = jnnx.from_linen(jnnx.Conv(4, 6, (3, 3), strides=2, groups=2, rngs=nnx.Rngs(4)), variables)
    np.testing.assert_array_equal(back(x), layer(x))


def test_from_linen_names_missing_extra_and_misshaped_entries():
    layer = jnnx.Conv(1, 4, (3, 3), rngs=nnx.Rngs(0))
    params = jnnx.to_linen(layer)["params"]
    with pytest.raises(ValueError, match="missing \\['bias'\\]"):
        jnnx.from_linen(layer, {"params": {"kernel": params["kernel"]}})
    with pytest.raises(ValueError, match="kernel has shape \\(3, 3, 1, 5\\)"):
        jnnx.from_linen(layer, {"params": {**params, "kernel": jnp.zeros((3, 3, 1, 5))}})
    with pytest.raises(ValueError, match="collections \\['cache'\\]"):
        jnnx.from_linen(layer, {"params": params, "cache": {}})
    with pytest.raises(TypeError, match="flax.nnx.Module"):
        jnnx.to_linen(jnn.Conv(4, 3))


def test_nnx_dropout_with_linen_key_draws_the_linen_mask_for_every_mode():
    x = jax.random.normal(KEY, (4, 6, 6, 3))
    key = jax.random.key(11)
    for mode, axes in (("inverted", ()), ("scaled", (1, 2))):
        want = jnn.Dropout(0.4, mode=mode, broadcast_axes=axes).apply({}, x, deterministic=False, rngs={"dropout": key})
        got = jnnx.Dropout(0.4, mode=mode, broadcast_axes=axes)(x, rngs=jnnx.linen_key(key))
        np.testing.assert_array_equal(want, got)
        np.testing.assert_array_equal(
            jnnx.Dropout(0.4, mode=mode, deterministic=True)(x), F.dropout(x, 0.4, training=False, mode=mode)
        )


def test_nnx_dropout_streams_and_modes():
    drop = jnnx.Dropout(0.5, rngs=nnx.Rngs(dropout=3))
    x = jnp.ones((64,))
    a, b = drop(x), drop(x)
    assert not np.array_equal(a, b)  # a new key per call from the stored stream
    drop.eval()
    np.testing.assert_array_equal(drop(x), x)
    with pytest.raises(ValueError, match="needs a key"):
        jnnx.Dropout(0.5)(x)
    with pytest.raises(TypeError, match="rngs must be"):
        jnnx.Dropout(0.5, rngs=3)


def test_nnx_batchnorm_trains_in_place_and_evaluates_with_running_stats():
    x = jax.random.normal(KEY, (8, 3)) * 2 + 1
    bn = jnnx.BatchNorm(3, momentum=0.5, rngs=nnx.Rngs(0))
    bn(x)
    mean, var = jnp.mean(x, 0), jnp.var(x, 0)
    np.testing.assert_allclose(bn.mean[...], 0.5 * mean, rtol=1e-6)
    np.testing.assert_allclose(bn.var[...], 0.5 + 0.5 * var, rtol=1e-6)
    bn.eval()
    np.testing.assert_allclose(
        bn(x), (x - bn.mean[...][None]) / jnp.sqrt(bn.var[...][None] + 1e-5), rtol=1e-5, atol=1e-6
    )
    assert isinstance(bn.mean, nnx.BatchStat) and isinstance(bn.scale, nnx.Param)


def test_layer_defaults_mask_reaches_batchnorm_and_row_keys_reach_dropout():
    x = jax.random.normal(KEY, (6, 4))
    mask = jnp.array([True, True, False, True, False, True])
    bn = jnnx.BatchNorm(4, rngs=nnx.Rngs(0))
    with jnnx.layer_defaults(batch_mask=mask):
        y = nnx.clone(bn)(x)
    np.testing.assert_array_equal(y, nnx.clone(bn)(x, mask=mask))
    key = jax.random.key(2)
    whole = jnnx.Dropout(0.5)(x, rngs=key)
    part = jnnx.Dropout(0.5)(x[3:], rngs=F.row_keys(key, 3, 3))  # rows 3..5 of the batch
    np.testing.assert_array_equal(part, whole[3:])


def test_nnx_layers_under_nnx_jit_and_grad():
    model = nnx.Sequential(
        jnnx.Conv(1, 4, (3, 3), rngs=nnx.Rngs(0)), jnnx.MaxPool(2), jnnx.Flatten(), nnx.Linear(64, 2, rngs=nnx.Rngs(1))
    )
    x = jnp.ones((2, 8, 8, 1))

    @nnx.jit
    def loss_and_grad(m, x):
        return nnx.value_and_grad(lambda m: jnp.sum(m(x) ** 2))(m)

    loss, grads = loss_and_grad(model, x)
    assert np.isfinite(float(loss)) and grads["layers"][0]["kernel"].shape == (3, 3, 1, 4)


@pytest.mark.slow
def test_spectral_norm_conv_steps_and_modes_match_linen():
    x = jax.random.normal(KEY, (2, 9, 9, 3))
    linen = jnn.SpectralNormConv(5, 3, strides=2)
    variables = linen.init(KEY, x, train=False)
    layer = jnnx.from_linen(jnnx.SpectralNormConv(3, 5, (3, 3), (9, 9), strides=2, rngs=nnx.Rngs(1)), variables)
    assert isinstance(layer.u, jnnx.SpectralStat) and isinstance(layer.sigma, jnnx.SpectralStat)
    for train in (True, True, False, True):  # state carried across calls, the NNX mode set by train()/eval()
        want, stats = linen.apply(variables, x, train=train, mutable=["spectral_stats"])
        variables = {"params": variables["params"], **stats}
        layer.train() if train else layer.eval()
        np.testing.assert_array_equal(want, layer(x))
        jax.tree.map(np.testing.assert_array_equal, variables["spectral_stats"], jnnx.to_linen(layer)["spectral_stats"])
    layer.eval()
    frozen = jnnx.to_linen(layer)["spectral_stats"]
    layer(x)
    jax.tree.map(np.testing.assert_array_equal, frozen, jnnx.to_linen(layer)["spectral_stats"])
    grads = nnx.grad(lambda m: jnp.sum(m(x, train=True) ** 2))(layer)
    assert np.isfinite(grads["kernel"][...]).all() and "u" not in grads


def test_as_linen_like_carries_the_spectral_state_under_jit():
    x = jax.random.normal(KEY, (2, 8, 8, 1))
    wrapped = jnnx.as_linen_like(jnnx.SpectralNormConv(1, 3, (3, 3), (8, 8), rngs=nnx.Rngs(0)))
    variables = wrapped.init(None, x)
    assert sorted(variables) == ["params", "spectral_stats"]
    got, updates = jax.jit(lambda v: wrapped.apply(v, x, train=True, mutable=True))(variables)
    want, stats = jnn.SpectralNormConv(3, 3).apply(variables, x, train=True, mutable=["spectral_stats"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # jit vs eager: rounding may differ
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), dict(stats), updates)
    assert not np.allclose(updates["spectral_stats"]["u"], variables["spectral_stats"]["u"])


def test_batchnorm_without_running_stats_always_uses_the_batch():
    x = jax.random.normal(KEY, (8, 3)) * 2 + 1
    bn = jnnx.BatchNorm(3, track_running_stats=False, rngs=nnx.Rngs(0))
    assert bn.mean is None and "batch_stats" not in jnnx.to_linen(bn)
    want = (x - jnp.mean(x, 0, keepdims=True)) / jnp.sqrt(jnp.var(x, 0, keepdims=True) + 1e-5)
    bn.eval()
    np.testing.assert_allclose(bn(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: jnnx.Conv(1, 4, 3, rngs=nnx.Rngs(0)), ValueError, "kernel_size=3 is an int"),
        (lambda: jnnx.Conv(1, 4, 3, spatial_dims=4, rngs=nnx.Rngs(0)), ValueError, "spatial_dims must be 1, 2 or 3"),
        (lambda: jnnx.Conv(0, 4, (3, 3), rngs=nnx.Rngs(0)), ValueError, "in_features must be >= 1, got 0"),
        (lambda: jnnx.Conv(3, 4, (3, 3), groups=2, rngs=nnx.Rngs(0)), ValueError, "groups=2 must divide"),
        (lambda: jnnx.Conv(1, 4, (3, 3), rngs=0), TypeError, "rngs must be a flax.nnx.Rngs"),
        (lambda: jnnx.ConvTranspose(2, "4", (3,), rngs=nnx.Rngs(0)), TypeError, "out_features"),
        (lambda: jnnx.BatchNorm(3, momentum=1.5, rngs=nnx.Rngs(0)), ValueError, "momentum"),
        (lambda: jnnx.Dropout(1.5), ValueError, "rate"),
        (lambda: jnnx.Dropout(0.5, mode="soft"), ValueError, "mode"),
        (lambda: jnnx.LayerNorm((4, 3), rngs=nnx.Rngs(0))(jnp.ones((2, 3, 4))), ValueError, "normalized_shape"),
        (lambda: jnnx.GroupNorm(6, num_groups=4, rngs=nnx.Rngs(0))(jnp.ones((2, 6))), ValueError, "num_groups"),
        (lambda: jnnx.MaxPool(3)(jnp.ones((2, 2, 2, 1))), ValueError, "window"),
        (lambda: jnnx.linen_key(KEY, "drop"), TypeError, "path must be a tuple"),
        (lambda: twins.build(nn.Conv(4, (3, 3)), (), nnx.Rngs(0)), TypeError, "has no NNX twin"),
        (lambda: jnnx.BatchNorm(3, track_running_stats=1, rngs=nnx.Rngs(0)), TypeError, "track_running_stats"),
        (lambda: jnnx.SpectralNormConv(1, 4, (3, 3), 8, rngs=nnx.Rngs(0)), TypeError, "input_shape"),
        (lambda: jnnx.SpectralNormConv(1, 4, (3,), (8, 8), rngs=nnx.Rngs(0)), ValueError, "spatial_dims=2"),
        (lambda: jnnx.SpectralNormConv(1, 4, 3, (8,), collection="cache", rngs=nnx.Rngs(0)), ValueError, "collection"),
        (
            lambda: jnnx.SpectralNormConv(1, 4, 3, (8,), rngs=nnx.Rngs(0))(jnp.ones((2, 9, 1))),
            ValueError,
            "input_shape",
        ),
        (lambda: jnnx.MaxPool(2, dilation=0)(jnp.ones((1, 8, 8, 1))), ValueError, "dilation"),
        (lambda: jnnx.AvgPool(2, divisor_override=0)(jnp.ones((1, 8, 8, 1))), ValueError, "divisor_override"),
        (lambda: jnnx.BlurPool(9)(jnp.ones((1, 8, 8, 1))), ValueError, "filter_size"),
    ],
)
def test_bad_arguments_are_named(build, error, match):
    with pytest.raises(error, match=match):
        build()
