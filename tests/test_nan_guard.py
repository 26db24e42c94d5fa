"""The NaN guard's probes (an unsplit step's gradients, a split step's input parameters) and how TerminateOnNaN reads them.

Oracles: NumPy's ``isfinite`` on the parameters, and step numbers worked out by hand.
"""

from __future__ import annotations

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxcnn.nn as jnn
from jaxcnn.train import TerminateOnNaN, create_train_state, make_train_step
from jaxcnn.train.callbacks import Run


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = jax.nn.relu(jnn.Conv(4, 3, name="conv")(x))
        return nn.Dense(10, name="head")(x.reshape(x.shape[0], -1))


def _batch(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 8, 8, 1)).astype(np.float32), "y": rng.integers(0, 10, n).astype(np.int32)}


def _state(tx):
    return create_train_state(_Net(), tx, jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32), seed=0)


def test_a_split_step_probes_numpys_isfinite_of_the_parameters_it_starts_from():
    state = _state(optax.sgd(0.1))
    params = jax.tree.map(np.asarray, state.params)
    params["head"]["bias"] = params["head"]["bias"].copy()
    params["head"]["bias"][3] = np.inf
    state = state.replace(params=params)
    for batch_split in (2, 4):
        step = make_train_step(_Net(), "cross_entropy", "jit", batch_split=batch_split)
        _, m = step(step.place_state(state), step.place_batch(_batch()))
        expected = [bool(np.isfinite(leaf).all()) for leaf in jax.tree.leaves(params)]
        assert step.fetch_metrics(m)["params_finite"].tolist() == expected and "finite" not in m
        assert expected.count(False) == 1


def test_an_unsplit_step_probes_its_gradients():
    def sqrt_loss(outputs, y):  # d/du sqrt(u) at u = 0 is inf; times the 0 of u = 0 * out: NaN
        return jnp.sqrt(outputs[:, 0] * 0.0)

    for loss, expected in (("cross_entropy", True), (sqrt_loss, False)):
        step = make_train_step(_Net(), loss, "jit", batch_split=1)
        _, m = step(step.place_state(_state(optax.sgd(0.1))), step.place_batch(_batch()))
        got = step.fetch_metrics(m)["finite"]
        # every leaf feeds output 0, so the NaN reaches every gradient (NumPy: isnan(inf * 0))
        assert got.tolist() == [expected] * 4 and "params_finite" not in m


def test_a_non_finite_update_shows_in_the_next_split_steps_probe():
    step = make_train_step(_Net(), "cross_entropy", "jit", batch_split=2)
    state = step.place_state(_state(optax.sgd(float("nan"))))  # every update is NaN
    state, m1 = step(state, step.place_batch(_batch()))
    _, m2 = step(state, step.place_batch(_batch(seed=1)))
    assert step.fetch_metrics(m1)["params_finite"].all()  # step 1 started from finite parameters
    assert not step.fetch_metrics(m2)["params_finite"].any()  # step 2 from step 1's NaN update
    assert np.isfinite(float(step.fetch_metrics(m1)["loss"]))


def _run(step, state=None):
    run = Run("run", None, True, 1, 10, 10, step=step, param_paths=("params/a", "params/b"))
    if state is not None:
        run.fetch_state = lambda: types.SimpleNamespace(params=state)
    return run


def test_terminate_on_nan_blames_the_step_before_the_first_non_finite_input():
    guard, run = TerminateOnNaN(), _run(step=9)
    guard.on_step_end(run, 4, {"loss": 1.5, "params_finite": np.array([True, True])})
    assert not run.stopped
    guard.on_step_end(run, 5, {"loss": float("nan"), "params_finite": np.array([True, False])})
    assert run.diverged == {"step": 4, "loss": 1.5, "path": "params/b"}
    assert run.stop_reason.startswith("non-finite loss or update at step 4 (loss 1.5)")
    assert "params/b (1 leaves)" in run.stop_reason


def test_terminate_on_nan_stops_at_a_non_finite_loss_or_gradient_at_its_own_step():
    guard, run = TerminateOnNaN(), _run(step=9)
    guard.on_step_end(run, 3, {"loss": float("inf"), "params_finite": np.array([True, True])})
    assert run.diverged == {"step": 3, "loss": float("inf"), "path": None}
    guard, run = TerminateOnNaN(), _run(step=9)
    guard.on_step_end(run, 2, {"loss": 0.25, "finite": np.array([True, True])})
    guard.on_step_end(run, 3, {"loss": 0.25, "finite": np.array([False, True])})
    assert run.diverged == {"step": 3, "loss": 0.25, "path": "params/a"}


def test_terminate_on_nan_checks_the_state_other_callbacks_are_about_to_read():
    good = {"a": np.ones(2, np.float32), "b": np.zeros(3, np.float32)}
    guard, run = TerminateOnNaN(), _run(step=6, state=good)
    guard.on_step_end(run, 6, {"loss": 0.5, "params_finite": np.array([True, True])})
    assert not run.stopped
    bad = {"a": np.array([1.0, np.nan], np.float32), "b": np.zeros(3, np.float32)}
    guard, run = TerminateOnNaN(), _run(step=6, state=bad)
    guard.on_step_end(run, 5, {"loss": 0.5, "params_finite": np.array([True, True])})
    assert not run.stopped  # step 5's state is gone (step 6 ran): its check is step 6's probe
    guard.on_step_end(run, 6, {"loss": 0.5, "params_finite": np.array([True, True])})
    assert run.diverged == {"step": 6, "loss": 0.5, "path": "params/a"}


def test_the_guards_state_check_reads_bfloat16_and_skips_integer_leaves():
    def run_with(a):
        state = {"a": a, "b": np.arange(3, dtype=np.int32), "c": np.ones(1, np.float32)}
        run = Run("run", None, True, 1, 10, 10, step=2, param_paths=("params/a", "params/b", "params/c"))
        run.fetch_state = lambda: types.SimpleNamespace(params=state)
        TerminateOnNaN().on_step_end(run, 2, {"loss": 0.5, "finite": np.array([True, True, True])})
        return run

    assert not run_with(jnp.ones(2, jnp.bfloat16)).stopped
    assert run_with(jnp.array([1.0, jnp.inf], jnp.bfloat16)).diverged == {"step": 2, "loss": 0.5, "path": "params/a"}
