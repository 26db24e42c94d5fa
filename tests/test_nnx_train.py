"""NNX models in the training engine through jaxcnn.nnx.as_linen_like: equal to the Linen run, every strategy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxcnn
import jaxcnn.data as D
import jaxcnn.nnx as jnnx
from jaxcnn import train

TX = optax.sgd(0.05, momentum=0.9)


def _batches(steps, batch, shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, batch, *shape)).astype(np.float32)
    y = rng.integers(0, 10, (steps, batch)).astype(np.int32)
    return x, y


def _run(model, p0, b0, strategy, x, y, **kw):
    state = train.create_train_state(model, TX, x[0], seed=0, params=p0, batch_stats=b0)
    step = train.make_train_step(model, "cross_entropy", strategy, batch_split=1, **kw)
    state = step.place_state(state)
    for i in range(len(x)):
        state, _ = step(state, step.place_batch({"x": x[i], "y": y[i]}))
    return step.fetch_state(state)


def _same_run(name, strategy, steps, batch, shape, **options):
    """The same run in Linen and NNX (via the adapter) from the same initial values; max |difference|."""
    if strategy in train.PER_DEVICE:
        options["axis_name"] = "data"
    linen = jaxcnn.get_model(name, **options)
    nnx_model = jnnx.as_linen_like(
        nnx.eval_shape(
            lambda: jaxcnn.get_model(name, api="nnx", rngs=nnx.Rngs(params=0), input_shape=(1, *shape), **options)
        )
    )
    x, y = _batches(steps, batch, shape)
    init = train.create_train_state(linen, TX, x[0], seed=0)
    p0, b0 = jax.tree.map(np.asarray, (init.params, init.batch_stats))  # host copies: the steps donate
    nnx_model = jnnx.as_linen_like(nnx_model.merge({"params": p0, "batch_stats": b0} if b0 else {"params": p0}))
    a, b = (_run(m, p0, b0, strategy, x, y) for m in (linen, nnx_model))
    diffs = jax.tree.map(
        lambda u, v: float(jnp.max(jnp.abs(u - v))), (a.params, a.batch_stats), (b.params, b.batch_stats)
    )
    return max(jax.tree.leaves(diffs))


def test_twenty_lwls_steps_with_dropout_equal_linen():
    assert _same_run("lwls_cnn", "jit", 20, 16, (28, 28, 1), dropout_rate=0.5) <= 1e-6


@pytest.mark.parametrize(
    "strategy",
    ["sharded", pytest.param("pmap", marks=pytest.mark.slow), pytest.param("shard_map", marks=pytest.mark.slow)],
)
def test_batchnorm_dropout_model_equals_linen_on_8_devices(strategy):
    assert jax.device_count() == 8
    assert _same_run("lwls_cnn", strategy, 3, 16, (28, 28, 1), dropout_rate=0.5, batch_norm=True) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("strategy", train.STRATEGIES)
@pytest.mark.parametrize(
    "name, shape, options",
    [
        ("lwls_cnn", (28, 28, 1), {"dropout_rate": 0.5, "batch_norm": True}),
        ("resnet_tiny", (8, 8, 3), {}),
    ],
)
def test_twenty_steps_equal_linen_under_every_strategy(strategy, name, shape, options):
    assert _same_run(name, strategy, 20, 16, shape, **options) <= 1e-6


def test_adapter_apply_matches_linen_with_batch_mask_and_part_keys():
    x = jax.random.normal(jax.random.key(0), (6, 8, 8, 3))
    linen = jaxcnn.get_model("resnet_tiny")
    variables = jax.jit(lambda k: linen.init(k, x))(jax.random.key(1, impl="rbg"))
    model = jnnx.as_linen_like(
        jnnx.from_linen(
            nnx.eval_shape(
                lambda: jaxcnn.get_model("resnet_tiny", api="nnx", rngs=nnx.Rngs(params=0), input_shape=x.shape)
            ),
            variables,
        )
    )
    mask = jnp.array([True, True, False, True, True, False])
    from jaxcnn.train.hooks import layer_hooks

    def masked_linen(v):
        with layer_hooks(None, mask):
            return linen.apply(v, x, train=True, mutable=["batch_stats"])

    want, wu = jax.jit(masked_linen)(variables)
    got, gu = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"], batch_mask=mask))(variables)
    np.testing.assert_array_equal(want, got)
    jax.tree.map(np.testing.assert_array_equal, dict(wu), gu)
    assert model.mixing_layers()[0].startswith("bn1 (jaxcnn.nnx.norm.BatchNorm)")
    with pytest.raises(ValueError, match="axis_name='data'"):
        model.check_axis_name("data")

    drop = jaxcnn.get_model("lwls_cnn", dropout_rate=0.5)
    xs = jnp.ones((4, 28, 28, 1))
    dv = jax.jit(lambda k: drop.init(k, xs))(jax.random.key(2, impl="rbg"))
    dm = jnnx.as_linen_like(
        jnnx.from_linen(
            nnx.eval_shape(lambda: jaxcnn.get_model("lwls_cnn", api="nnx", rngs=nnx.Rngs(params=0), dropout_rate=0.5)),
            dv,
        )
    )
    key = jax.random.key(5)
    whole = drop.apply(dv, xs, train=True, rngs={"dropout": key})
    from jaxcnn.train.split import part_keys

    with part_keys(2):  # the engine's split: a part of a batch, its rows 2..3
        part = dm.apply(dv, xs[2:], train=True, rngs={"dropout": key})
    np.testing.assert_allclose(part, whole[2:], rtol=1e-5, atol=1e-5)  # same masks; matmuls of 2 vs 4 rows
    assert dm.mixing_layers() == []
    assert dm.apply(dv, xs, train=False, mutable=["batch_stats"])[1] == {}


def test_fit_trains_an_nnx_model_and_the_result_converts_back(tmp_path):
    full = D.digits()
    ds = D.Dataset(
        full.x_train[:256],
        full.y_train[:256],
        full.x_test[:100],
        full.y_test[:100],
        10,
        "digits-small",
        "first 256/100 of digits",
    )
    module = jaxcnn.get_model("lwls_cnn", api="nnx", rngs=0, input_shape=(1, *ds.x_train.shape[1:]), batch_norm=True)
    model = jnnx.as_linen_like(module)
    result = train.fit(
        model,
        ds,
        train.make_optimizer("adam", 3e-3),
        epochs=2,
        batch_size=32,
        strategy="jit",
        out_dir=tmp_path,
        progress=False,
        checkpoint_every=4,
    )
    assert result.test["accuracy"] > 0.3
    trained = model.merge(result.state.variables())
    np.testing.assert_array_equal(trained.conv1.kernel[...], result.state.params["conv1"]["kernel"])
    np.testing.assert_array_equal(trained.bn1.mean[...], result.state.batch_stats["bn1"]["mean"])
    assert float(jnp.max(jnp.abs(module.conv1.kernel[...]))) > 0  # the wrapped module's arrays were not donated
