"""jit, sharded and pmap train steps compute the same training run (8 forced CPU devices)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

import jaxcnn.nn as jnn
from jaxcnn.train import create_train_state, make_eval_step, make_train_step

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
        for (path, u), v in zip(jax.tree_util.tree_leaves_with_path(getattr(a, tree)), jax.tree.leaves(getattr(b, tree))):
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=atol, rtol=0, err_msg=f"{tree}{jax.tree_util.keystr(path)}")
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
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(jax.tree.leaves(init.params), jax.tree.leaves(reference[0].params)))
    assert moved > 1e-2  # so the equality above is not the equality of untouched weights
    assert not np.allclose(reference[0].batch_stats["BatchNorm_0"]["mean"], 0.0)


@pytest.mark.parametrize("strategy, axis_name", [("jit", None), ("sharded", None), ("pmap", "data")])
def test_steps_per_call_equals_single_steps(reference, strategy, axis_name):
    state, losses = _train(strategy, steps_per_call=4, axis_name=axis_name)
    _assert_states_close(reference[0], state, 1e-5)
    np.testing.assert_allclose(losses, reference[1], atol=1e-5)


def test_pmap_refuses_layers_without_the_axis_name():
    model = SmallNet(axis_name=None)
    state = create_train_state(model, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32))
    step = make_train_step(model, "cross_entropy", "pmap", devices=jax.devices()[:2])
    x, y = _data(1)
    with pytest.raises(ValueError, match=r"strategy='pmap' needs every BatchNorm layer built with axis_name='data'"):
        step(step.place_state(state), step.place_batch({"x": x[0], "y": y[0]}))


def test_batch_size_must_divide_over_devices():
    step = make_train_step(SmallNet(), "cross_entropy", "sharded")
    with pytest.raises(ValueError, match=r"batch size 30 must be divisible by the number of devices \(8\)"):
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
    for strategy, kw in [("jit", {}), ("sharded", {}), ("pmap", {})]:
        step = make_eval_step(model, "cross_entropy", strategy, **kw)
        sums = step.fetch_metrics(step(step.place_state(state), step.place_batch({"x": x[0], "y": y[0]})))
        assert float(sums["count"]) == 32
        assert float(sums["loss"]) == pytest.approx(ref_loss, rel=1e-5)
        assert float(sums["accuracy"]) == float(np.sum(np.argmax(logits, 1) == y[0]))
