"""fit/evaluate: bit-identical resume, checkpoint safety, logs, evaluation counts."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest
from flax import linen as nn

import jaxcnn.data as D
import jaxcnn.nn as jnn
from jaxcnn.train import Checkpointer, CheckpointError, evaluate, fit, make_optimizer, read_records


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = jnn.Conv(8, 3, use_bias=False)(x)
        x = jax.nn.relu(jnn.BatchNorm(use_running_average=not train)(x))
        x = jnn.Dropout(0.2, deterministic=not train)(jnn.MaxPool(2)(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def small_digits():
    full = D.digits()
    return D.Dataset(
        full.x_train[:320],
        full.y_train[:320],
        full.x_test[:100],
        full.y_test[:100],
        10,
        "digits-small",
        "first 320/100 of digits",
    )


def _fit(ds, out, **kw):
    kw.setdefault("epochs", 3)
    return fit(
        Net(),
        ds,
        make_optimizer("adam", 3e-3),
        batch_size=32,
        strategy="jit",
        seed=4,
        out_dir=out,
        progress=False,
        **kw,
    )


def _leaves(state):
    return [
        np.asarray(a)
        for a in jax.tree.leaves((state.params, state.batch_stats, state.opt_state, state.rng, state.step))
    ]


def test_interrupted_and_resumed_run_is_bit_identical(small_digits, tmp_path):
    whole = _fit(small_digits, tmp_path / "whole")  # 3 epochs of 10 steps
    _fit(small_digits, tmp_path / "part", max_steps=14, checkpoint_every=6)  # stops inside epoch 2
    assert Checkpointer(tmp_path / "part" / "checkpoints").steps() == [6, 12, 14]
    # a crash right after step 12's checkpoint: the step-14 checkpoint never got written
    shutil.copytree(tmp_path / "part", tmp_path / "crash")
    shutil.rmtree(tmp_path / "crash" / "checkpoints" / "14")
    for name in ("part", "crash"):
        resumed = _fit(small_digits, tmp_path / name, resume=True)
        for a, b in zip(_leaves(whole.state), _leaves(resumed.state)):
            np.testing.assert_array_equal(a, b)
        assert int(resumed.state.step) == 30
        assert resumed.test == whole.test
    events = [r["event"] for r in read_records(tmp_path / "crash" / "metrics.jsonl") if r["kind"] == "event"]
    assert events == ["start", "resume"]


def test_existing_checkpoints_are_never_overwritten(small_digits, tmp_path):
    _fit(small_digits, tmp_path, epochs=1)
    before = {p: p.read_bytes() for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"already holds checkpoints \(latest step 10\); pass resume=True"):
        _fit(small_digits, tmp_path, epochs=1)
    ckpt = Checkpointer(tmp_path / "checkpoints")
    from jaxcnn.train.checkpoint import tree_to_state  # noqa: F401  (the restore path used below)

    state, meta = ckpt.restore(_fit(small_digits, tmp_path / "other", epochs=1).state)
    with pytest.raises(CheckpointError, match="a checkpoint for step 10 already exists"):
        ckpt.save(state, meta)
    after = {p: p.read_bytes() for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()}
    assert before == after


def test_corrupt_checkpoint_gives_a_clear_error_and_harms_nothing(small_digits, tmp_path):
    result = _fit(small_digits, tmp_path, epochs=2, checkpoint_every=10)
    ckpt = Checkpointer(tmp_path / "checkpoints")
    assert ckpt.steps() == [10, 20]
    data_files = [p for p in (tmp_path / "checkpoints" / "20").rglob("*") if p.is_file() and p.stat().st_size > 64]
    for p in data_files:
        p.write_bytes(b"\0garbage" * 8)
    intact = {p: p.read_bytes() for p in (tmp_path / "checkpoints" / "10").rglob("*") if p.is_file()}
    with pytest.raises(
        CheckpointError, match=r"checkpoint of step 20 .* could not be restored.*Other checkpoints: \[10\]"
    ):
        ckpt.restore(result.state, step=20)
    state, _ = ckpt.restore(result.state)  # the newest that verifies: the older one still loads
    assert int(state.step) == 10 and ckpt.last_restore.skipped[0][0] == 20
    assert intact == {p: p.read_bytes() for p in (tmp_path / "checkpoints" / "10").rglob("*") if p.is_file()}


def test_missing_checkpoints_are_clear_errors(tmp_path, small_digits):
    template = _fit(small_digits, None, epochs=1).state
    with pytest.raises(FileNotFoundError, match="no complete checkpoints in"):
        Checkpointer(tmp_path / "empty").restore(template)
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        c = Checkpointer(tmp_path / "gone")
        shutil.rmtree(tmp_path / "gone")
        c.restore(template)


def test_keep_last_k_checkpoints(small_digits, tmp_path):
    _fit(small_digits, tmp_path, epochs=2, checkpoint_every=4, keep_checkpoints=2)
    assert Checkpointer(tmp_path / "checkpoints").steps() == [16, 20]


def test_log_and_curves(small_digits, tmp_path):
    result = _fit(small_digits, tmp_path, epochs=2)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 21))
    assert [r["epoch"] for r in evals] == [0, 1]
    assert evals[-1]["train_loss"] == result.history[-1]["train_loss"]
    tests = [r for r in records if r["kind"] == "test"]  # the test split: read once, after training
    assert len(tests) == 1 and tests[0]["accuracy"] == result.test["accuracy"] and "test_loss" not in evals[-1]
    assert evals[0]["train_loss"] == pytest.approx(np.mean([r["loss"] for r in train[:10]]))
    png = tmp_path / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_evaluate_counts_every_example_once(small_digits):
    state = _fit(small_digits, None, epochs=1).state
    x, y = small_digits.x_test[:77], small_digits.y_test[:77]  # 77 = 2 * 32 + 13: a padded last batch
    logits = np.asarray(Net().apply(state.variables(), x, train=False))
    log_p = (
        logits
        - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
        - logits.max(1, keepdims=True)
    )
    out = evaluate(Net(), state, x, y, batch_size=32)
    assert out["count"] == 77
    assert out["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))
    assert out["loss"] == pytest.approx(-np.mean(log_p[np.arange(77), y]), rel=1e-5)


def test_early_stopping_stops(small_digits):
    result = fit(
        Net(),
        small_digits,
        make_optimizer("sgd", 1e-9),
        epochs=6,
        batch_size=32,
        early_stopping=1,
        validation=0.2,
        progress=False,
    )
    assert result.stopped_early and len(result.history) < 6
    with pytest.raises(ValueError, match="early_stopping needs validation"):
        fit(Net(), small_digits, make_optimizer("sgd", 0.1), early_stopping=1, progress=False)


def test_steps_per_call_in_fit_matches_single_steps(small_digits):
    one = _fit(small_digits, None, epochs=1)
    four = _fit(small_digits, None, epochs=1, steps_per_call=4)  # 10 steps: 4 + 4 + 1 + 1
    for a, b in zip(jax.tree.leaves(one.state.params), jax.tree.leaves(four.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_fit_argument_errors(small_digits):
    with pytest.raises(ValueError, match="batch_size=999 is larger than the training set"):
        fit(Net(), small_digits, make_optimizer("sgd", 0.1), batch_size=999, progress=False)
    with pytest.raises(ValueError, match="checkpoint_every needs out_dir"):
        fit(Net(), small_digits, make_optimizer("sgd", 0.1), checkpoint_every=5, progress=False)


def test_evaluate_does_not_retrace_for_another_optimizer(small_digits):
    from jaxcnn.train import create_train_state, make_eval_step

    step = make_eval_step(Net(), "cross_entropy", "jit")  # shared with other tests (compiled steps are cached)
    sizes = []
    for tx in (make_optimizer("adam", 1e-3), make_optimizer("sgd", 0.1), make_optimizer("rmsprop", 1e-3)):
        state = create_train_state(Net(), tx, jax.ShapeDtypeStruct((1, 8, 8, 1), np.float32))
        evaluate(Net(), state, small_digits.x_test, small_digits.y_test, batch_size=50, step=step)
        sizes.append(step.fn._cache_size())
    assert sizes[0] == sizes[1] == sizes[2]  # no new trace for another optimizer
