"""jit, sharded, pmap and shard_map train steps compute the same training run (8 forced CPU devices).

The oracle of every multi-device run is the one-device "jit" run on the same global
batches: after 20 steps parameters, BatchNorm statistics and per-step losses agree to
1e-5. Also: model (parameter) sharding over a ("data", "model") mesh equals the
replicated run, and a padded final batch trains exactly like its real rows alone.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from jax.sharding import PartitionSpec as P

import jaxcnn
import jaxcnn.nn as jnn
from jaxcnn.train import CompiledStep, create_train_state, fit, make_eval_step, make_train_step

STEPS = 20


class SmallNet(nn.Module):
    """Conv -> BatchNorm -> ReLU -> Dropout -> MaxPool -> Dense: every stateful/stochastic kind."""

    axis_name: str | None = None
    batch_norm: bool = True
    dropout: float = 0.3

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = jnn.Conv(6, (3, 3), use_bias=not self.batch_norm)(x)  # a bias before BN only collects noise
        if self.batch_norm:
            x = jnn.BatchNorm(use_running_average=not train, axis_name=self.axis_name)(x)
        x = jax.nn.relu(x)
        x = jnn.Dropout(self.dropout, deterministic=not train, axis_name=self.axis_name)(x)
        x = jnn.MaxPool(2)(x)
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def _data(steps=STEPS, batch=32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps, batch, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, (steps, batch)).astype(np.int32)
    return x, y


def _train(strategy, *, steps_per_call=1, devices=None, axis_name=None, steps=STEPS, **model_kw):
    model = SmallNet(axis_name=axis_name, **model_kw)
    x, y = _data(steps)
    state = create_train_state(model, optax.adam(3e-3), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32), seed=1)
    step = make_train_step(model, "cross_entropy", strategy, steps_per_call=steps_per_call, devices=devices)
    placed = step.place_state(state)
    losses = []
    k = steps_per_call
    for i in range(0, steps, k):
        batch = {"x": x[i], "y": y[i]} if k == 1 else {"x": x[i : i + k], "y": y[i : i + k]}
        placed, m = step(placed, step.place_batch(batch))
        losses.extend(np.atleast_1d(step.fetch_metrics(m)["loss"]).tolist())
    final = jax.device_get(step.fetch_state(placed))
    return final, np.asarray(losses)


def _assert_states_close(a, b, atol):
    for tree in ("params", "batch_stats"):
        for (path, u), v in zip(
            jax.tree_util.tree_leaves_with_path(getattr(a, tree)), jax.tree.leaves(getattr(b, tree))
        ):
            np.testing.assert_allclose(
                np.asarray(u), np.asarray(v), atol=atol, rtol=0, err_msg=f"{tree}{jax.tree_util.keystr(path)}"
            )
    assert int(a.step) == int(b.step)


@pytest.fixture(scope="module")
def reference():
    assert jax.device_count() == 8, "conftest.py forces 8 CPU devices"
    return _train("jit")


@pytest.mark.parametrize("n_devices", [2, 4, 8])
def test_sharded_equals_single_device(reference, n_devices):
    state, losses = _train("sharded", devices=jax.devices()[:n_devices])
    _assert_states_close(reference[0], state, 1e-5)
    np.testing.assert_allclose(losses, reference[1], atol=1e-5)


@pytest.mark.parametrize("n_devices", [2, 8])
def test_pmap_equals_single_device(reference, n_devices):
    """Gradients psum'd, BatchNorm statistics and dropout masks global through axis_name."""
    state, losses = _train("pmap", devices=jax.devices()[:n_devices], axis_name="data")
    _assert_states_close(reference[0], state, 1e-5)
    np.testing.assert_allclose(losses, reference[1], atol=1e-5)


def test_training_actually_moves_the_parameters(reference):
    init = create_train_state(SmallNet(), optax.adam(3e-3), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32), seed=1)
    moved = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(init.params), jax.tree.leaves(reference[0].params))
    )
    assert moved > 1e-2  # so the equality above is not the equality of untouched weights
    assert not np.allclose(reference[0].batch_stats["BatchNorm_0"]["mean"], 0.0)


@pytest.mark.parametrize("n_devices", [pytest.param(2, marks=pytest.mark.slow), 8])
def test_shard_map_equals_single_device(reference, n_devices):
    """jit(shard_map(body)): the per-device program of pmap with jit's global arrays."""
    state, losses = _train("shard_map", devices=jax.devices()[:n_devices], axis_name="data")
    _assert_states_close(reference[0], state, 1e-5)
    np.testing.assert_allclose(losses, reference[1], atol=1e-5)


@pytest.mark.parametrize(
    "strategy, axis_name",
    [
        ("jit", None),
        ("sharded", None),
        ("pmap", "data"),
        pytest.param("shard_map", "data", marks=pytest.mark.slow),
    ],
)
def test_steps_per_call_equals_single_steps(reference, strategy, axis_name):
    state, losses = _train(strategy, steps_per_call=4, axis_name=axis_name)
    _assert_states_close(reference[0], state, 1e-5)
    np.testing.assert_allclose(losses, reference[1], atol=1e-5)


@pytest.mark.parametrize("strategy", ["pmap", "shard_map"])
def test_per_device_strategies_refuse_layers_without_the_axis_name(strategy):
    model = SmallNet(axis_name=None)
    state = create_train_state(model, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32))
    step = make_train_step(model, "cross_entropy", strategy, devices=jax.devices()[:2])
    x, y = _data(1)
    with pytest.raises(
        ValueError, match=r"need every BatchNorm layer built with axis_name='data', but layer 'BatchNorm_0'"
    ):
        step(step.place_state(state), step.place_batch({"x": x[0], "y": y[0]}))


def test_batch_size_must_divide_over_devices():
    step = make_train_step(SmallNet(), "cross_entropy", "sharded")
    with pytest.raises(
        ValueError, match=r"batch size 30 must be divisible by the number of devices along the data axis \(8\)"
    ):
        step.place_batch({"x": np.zeros((30, 8, 8, 1)), "y": np.zeros(30, np.int32)})


def test_zero_weight_padding_does_not_change_the_step():
    """A padded batch (weight 0 rows) trains exactly like the real rows alone (no BN/dropout)."""
    model = SmallNet(batch_norm=False, dropout=0.0)
    x, y = _data(1, batch=24)
    state = create_train_state(model, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32))
    step = make_train_step(model, "cross_entropy", "sharded", donate=False)
    real, m_real = step(step.place_state(state), step.place_batch({"x": x[0], "y": y[0]}))
    xp = np.concatenate([x[0], np.full((8, 8, 8, 1), 7.0, np.float32)])
    yp = np.concatenate([y[0], np.zeros(8, np.int32)])
    w = np.concatenate([np.ones(24), np.zeros(8)]).astype(np.float32)
    padded, m_pad = step(step.place_state(state), step.place_batch({"x": xp, "y": yp, "weight": w}))
    _assert_states_close(jax.device_get(real), jax.device_get(padded), 1e-6)
    assert float(m_real["loss"]) == pytest.approx(float(m_pad["loss"]), abs=1e-6)


def test_eval_step_sums_agree_across_strategies():
    model = SmallNet()
    x, y = _data(1)
    state = create_train_state(model, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32))
    logits = model.apply(state.variables(), x[0], train=False)
    ref_loss = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), y[0][:, None], 1).sum()
    for strategy, kw in [
        ("jit", {}),
        ("sharded", {}),
        ("pmap", {}),
        ("shard_map", {}),
        ("sharded", {"model_parallel": 2, "min_shard_size": 0}),
    ]:
        step = make_eval_step(model, "cross_entropy", strategy, **kw)
        sums = step.fetch_metrics(step(step.place_state(state), step.place_batch({"x": x[0], "y": y[0]})))
        assert float(sums["count"]) == 32
        assert float(sums["loss"]) == pytest.approx(ref_loss, rel=1e-5)
        assert float(sums["accuracy"]) == float(np.sum(np.argmax(logits, 1) == y[0]))


# ----------------------------------------------------------------------------- zoo models
# lwls_cnn (with dropout, so the global-batch dropout masks are checked too) on 28x28
# digits and resnet_tiny (BatchNorm everywhere) on 8x8 digits, 20 steps of batch 32 with
# SGD + momentum. Every multi-device run is compared with the one-device run of the same
# batches. (Not Adam: its update g / sqrt(v) turns the last-bit rounding differences of
# near-zero gradient entries -- a sum over 32 rows split over devices adds in another
# order -- into differences of up to lr; with Adam(1e-3) the same runs agree to ~1e-5.)

ZOO = {"lwls_cnn": (28, {"dropout_rate": 0.3}), "resnet_tiny": (8, {})}
TX = optax.sgd(0.02, momentum=0.9)


@functools.cache
def _digits(size):
    ds = jaxcnn.data.digits(size=size)
    n = STEPS * 32
    return ds.x_train[:n].reshape(STEPS, 32, size, size, 1), ds.y_train[:n].reshape(STEPS, 32)


def _zoo_run(name, strategy, n_devices=1, **step_kw):
    size, model_kw = ZOO[name]
    axis = "data" if strategy in ("pmap", "shard_map") else None
    model = jaxcnn.get_model(name, axis_name=axis, **model_kw)
    x, y = _digits(size)
    state = create_train_state(model, TX, jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32), seed=0)
    step = make_train_step(model, "cross_entropy", strategy, devices=jax.devices()[:n_devices], **step_kw)
    placed = step.place_state(state)
    losses = []
    for i in range(STEPS):
        placed, m = step(placed, step.place_batch({"x": x[i], "y": y[i]}))
        losses.append(float(step.fetch_metrics(m)["loss"]))
    return jax.device_get(step.fetch_state(placed)), np.asarray(losses), placed


@functools.cache
def _zoo_reference(name):
    state, losses, _ = _zoo_run(name, "jit")
    size, model_kw = ZOO[name]
    init = create_train_state(
        jaxcnn.get_model(name, **model_kw), TX, jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32)
    )
    moved = max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(init.params), jax.tree.leaves(state.params))
    )
    assert moved > 1e-2 and losses[-1] < losses[0] - 0.2  # it trained: equal parameters are not untouched ones
    return state, losses


def _max_diff(a, b):
    pairs = zip(jax.tree.leaves((a.params, a.batch_stats)), jax.tree.leaves((b.params, b.batch_stats)))
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in pairs)


_slow = pytest.mark.slow
ZOO_CASES = [
    # the default run covers every strategy and every device count once; -m slow the rest
    ("lwls_cnn", "sharded", 8),
    ("lwls_cnn", "shard_map", 4),
    ("resnet_tiny", "pmap", 2),
    ("resnet_tiny", "shard_map", 8),
    *[
        pytest.param(m, s, n, marks=_slow)
        for m, s, n in [
            ("lwls_cnn", "sharded", 2),
            ("lwls_cnn", "sharded", 4),
            ("lwls_cnn", "pmap", 2),
            ("lwls_cnn", "pmap", 4),
            ("lwls_cnn", "pmap", 8),
            ("lwls_cnn", "shard_map", 2),
            ("lwls_cnn", "shard_map", 8),
            ("resnet_tiny", "sharded", 2),
            ("resnet_tiny", "sharded", 4),
            ("resnet_tiny", "sharded", 8),
            ("resnet_tiny", "pmap", 4),
            ("resnet_tiny", "pmap", 8),
            ("resnet_tiny", "shard_map", 2),
            ("resnet_tiny", "shard_map", 4),
        ]
    ],
]


@pytest.mark.parametrize("name, strategy, n_devices", ZOO_CASES)
def test_zoo_model_on_many_devices_equals_one_device(name, strategy, n_devices):
    """Synchronized BatchNorm (resnet_tiny) and global dropout masks (lwls_cnn) included."""
    ref_state, ref_losses = _zoo_reference(name)
    state, losses, _ = _zoo_run(name, strategy, n_devices)
    assert _max_diff(ref_state, state) <= 1e-5
    np.testing.assert_allclose(losses, ref_losses, atol=1e-5)
    if name == "resnet_tiny":
        assert not np.allclose(state.batch_stats["bn1"]["mean"], 0.0)


# ----------------------------------------------------------------------------- model parallelism


@pytest.mark.parametrize("data, model_size", [(4, 2), (2, 4)])
def test_model_parallel_equals_replicated(data, model_size):
    """Kernels of >= 1000 elements split by output channel over "model"; same numbers as one device."""
    ref_state, ref_losses = _zoo_reference("lwls_cnn")
    state, losses, placed = _zoo_run("lwls_cnn", "sharded", 8, model_parallel=model_size, min_shard_size=1000)
    assert _max_diff(ref_state, state) <= 1e-5
    np.testing.assert_allclose(losses, ref_losses, atol=1e-5)
    assert dict(placed.params["dense1"]["kernel"].sharding.mesh.shape) == {"data": data, "model": model_size}
    specs = {f"{layer}/{k}": v.sharding.spec for layer, d in placed.params.items() for k, v in d.items()}
    split = P(None, "model")
    assert specs["dense1/kernel"] == split  # 588 x 200: 200 splits over 2 and 4
    assert specs["conv3/kernel"] == P(None, None, None, "model")  # 4x4x8x12 = 1536 elements
    assert specs["conv2/kernel"] == P()  # 5x5x4x8 = 800 < 1000: replicated
    assert specs["dense1/bias"] == P()  # vectors stay replicated
    assert specs["dense2/kernel"] == (split if model_size == 2 else P())  # 10 outputs do not split over 4
    momentum = placed.opt_state[0].trace["dense1"]["kernel"]
    assert momentum.sharding.spec == split  # optimizer state follows its kernel
    shard_shapes = {s.data.shape for s in placed.params["dense1"]["kernel"].addressable_shards}
    assert shard_shapes == {(588, 200 // model_size)}


def test_model_parallel_needs_sharded_and_a_divisor():
    model = SmallNet()
    with pytest.raises(ValueError, match=r"model_parallel=2 needs strategy='sharded'"):
        make_train_step(model, "cross_entropy", "pmap", model_parallel=2)
    with pytest.raises(ValueError, match=r"model_parallel must be >= 1 and divide the number of devices \(8\), got 3"):
        make_train_step(model, "cross_entropy", "sharded", model_parallel=3)


# ----------------------------------------------------------------------------- uneven final batch


def test_padded_final_batch_trains_exactly_like_its_real_rows():
    """fit(remainder="pad"): 108 examples in batches of 32 = 3 full + 12 real rows padded to 32.

    BatchNorm + dropout model under shard_map on 4 devices, where the last batch puts
    8, 4, 0, 0 real rows on the devices. Oracle: the one-device step on the same
    batches with the last one *short* (its 12 real rows only, no padding, no weights).
    """
    size, n = 8, 108
    full = jaxcnn.data.digits(size=size)
    ds = jaxcnn.data.Dataset(
        full.x_train[:n], full.y_train[:n], full.x_test[:40], full.y_test[:40], 10, "digits-108", ""
    )
    kw = {"batch_norm": True, "dropout_rate": 0.3}
    tx = optax.adam(1e-3)
    res = fit(
        jaxcnn.get_model("lwls_cnn", axis_name="data", **kw),
        ds,
        tx,
        strategy="shard_map",
        devices=jax.devices()[:4],
        epochs=1,
        batch_size=32,
        remainder="pad",
        progress=False,
        eval_batch_size=40,
    )
    assert int(res.state.step) == 4

    model = jaxcnn.get_model("lwls_cnn", **kw)
    state = create_train_state(model, tx, jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32), seed=0)
    step = make_train_step(model, "cross_entropy", "jit")
    placed, losses = step.place_state(state), []
    batches = list(jaxcnn.data.batches(ds.x_train, ds.y_train, 32, seed=0, epoch=0, drop_remainder=False))
    assert [len(b["y"]) for b in batches] == [32, 32, 32, 12]
    for b in batches:
        placed, m = step(placed, step.place_batch(b))
        losses.append(float(step.fetch_metrics(m)["loss"]))
    assert _max_diff(jax.device_get(placed), res.state) <= 1e-5
    assert res.history[0]["train_loss"] == pytest.approx(np.mean(losses), abs=1e-6)  # the mean of the 4 step losses


class FlaxBNNet(nn.Module):
    """A model built on flax.linen.BatchNorm: the step masks it too (its ``mask`` argument)."""

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = jax.nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.8)(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def test_padding_is_exact_for_flax_batch_norm_too():
    model = FlaxBNNet()
    x, y = _data(1, batch=24)
    state = create_train_state(model, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32))
    step = make_train_step(model, "cross_entropy", "jit", donate=False)
    real, _ = step(step.place_state(state), step.place_batch({"x": x[0][:20], "y": y[0][:20]}))
    xp = np.concatenate([x[0][:20], np.full((4, 8, 8, 1), 9.0, np.float32)])
    w = np.concatenate([np.ones(20), np.zeros(4)]).astype(np.float32)
    padded, _ = step(step.place_state(state), step.place_batch({"x": xp, "y": y[0], "weight": w}))
    _assert_states_close(jax.device_get(real), jax.device_get(padded), 1e-6)
    assert not np.allclose(jax.device_get(padded).batch_stats["BatchNorm_0"]["mean"], 0.0)


def test_unroll_spellings_compile_what_they_say():
    """``unroll=True`` inlines the k steps, ``unroll=1`` (the default) is a loop: two programs, though ``True == 1``."""
    model = SmallNet(batch_norm=False, dropout=0.0)
    x, y = _data(steps=2, batch=8)
    state = create_train_state(model, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32), seed=1)
    batch = {"x": x, "y": y}
    loops = []
    for unroll in (True, 2, 1, False, None):  # not dict keys: True == 1 there too; None: the default
        kw = {} if unroll is None else {"unroll": unroll}
        step = make_train_step(model, "cross_entropy", "jit", steps_per_call=2, guard=False, **kw)
        placed = step.place_state(state)
        loops.append(" while(" in step.fn_for(placed).lower(placed, step.place_batch(batch)).compile().as_text())
    # 2 of 2 steps inlined: no loop; one step per iteration (the default): a loop
    assert loops == [False, False, True, True, True]
    # the public CompiledStep keeps the step count itself, whoever builds it
    assert [CompiledStep(step.body_key, step.placement, unroll=u).unroll for u in (True, 1, False, 2)] == [2, 1, 1, 2]
    for bad, err in (("yes", TypeError), (0, ValueError), (1.5, TypeError)):
        with pytest.raises(err, match="unroll"):
            make_train_step(model, "cross_entropy", "jit", steps_per_call=2, unroll=bad)
