"""fit for research runs: validation never the test set, the best state, continuation, predict, freezing, weights,
logs, any batch on any device count, the NaN guard and gradient accumulation -- each against an independent oracle."""

from __future__ import annotations

import csv
import json
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcnn
import jaxcnn.data as D
import jaxcnn.nn as jnn
from jaxcnn.train import (
    Checkpointer,
    EarlyStopping,
    TensorBoard,
    TrainingDiverged,
    create_train_state,
    fit,
    make_optimizer,
    make_train_step,
    predict,
)


class Net(nn.Module):
    """Conv + BatchNorm + dropout + dense: every kind of layer the engine treats specially."""

    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = jnn.Conv(6, 3, use_bias=False, name="conv")(x)
        x = jax.nn.relu(jnn.BatchNorm(use_running_average=not train, axis_name=self.axis_name, name="bn")(x))
        x = jnn.Dropout(0.2, axis_name=self.axis_name, name="drop")(jnn.MaxPool(2)(x), deterministic=not train)
        return nn.Dense(10, name="head")(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def ds():
    full = D.digits()
    return D.Dataset(
        full.x_train[:400],
        full.y_train[:400],
        full.x_test[:120],
        full.y_test[:120],
        10,
        "digits-400",
        "first 400/120 of the embedded digits",
    )


def _leaves(state):
    return [np.asarray(a) for a in jax.tree.leaves((state.params, state.batch_stats, state.opt_state, state.step))]


def _same(a, b):
    for u, v in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(u, v)


def _run(ds, **kw):
    kw = {"epochs": 2, "batch_size": 32, "strategy": "jit", "seed": 3, "progress": False, **kw}
    return fit(kw.pop("model", Net()), ds, kw.pop("tx", make_optimizer("adam", 3e-3)), **kw)


def test_the_test_labels_cannot_influence_training(ds):
    shuffled = D.Dataset(
        ds.x_train,
        ds.y_train,
        ds.x_test,
        np.random.default_rng(0).permutation(ds.y_test),
        10,
        "digits-400",
        "test labels shuffled",
    )
    kw = {"epochs": 6, "validation": 0.25, "callbacks": [], "early_stopping": 2}
    a, b = _run(ds, **kw), _run(shuffled, **kw)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in h]  # noqa: E731
    assert strip(a.history) == strip(b.history) and a.best == b.best and a.stop_reason == b.stop_reason
    _same(a.state, b.state)
    assert a.test["accuracy"] != b.test["accuracy"]  # the labels did change: only the final report sees them
    assert all("test_loss" not in r for r in a.history)


def test_returned_best_state_is_the_best_epoch_by_hand(ds, tmp_path):
    result = _run(
        ds,
        epochs=5,
        validation=0.25,
        early_stopping=EarlyStopping("val_loss", patience=5),
        out_dir=tmp_path / "run",
        tx=make_optimizer("adam", 2e-2),
    )
    losses = [r["val_loss"] for r in result.history]
    best = int(np.argmin(losses))
    assert result.best["epoch"] == best and result.best["value"] == losses[best]
    # the best epoch's state, rebuilt independently: a run of best + 1 epochs (training is deterministic)
    _same(result.state, _run(ds, epochs=best + 1, validation=0.25, tx=make_optimizer("adam", 2e-2)).state)
    kept = Checkpointer(tmp_path / "run" / "best")
    assert kept.steps() == [int(result.state.step)]
    _same(result.state, kept.restore(result.state)[0])


def test_training_on_from_a_state_equals_an_uninterrupted_run(ds):
    whole = _run(ds, epochs=3)
    first = _run(ds, epochs=1)
    more = _run(ds, epochs=2, state=first.state, tx=None)  # None: the state's own optimizer and moments
    assert len(more.history) == 2 and [r["epoch"] for r in more.history] == [1, 2]
    _same(whole.state, more.state)


@pytest.mark.parametrize("strategy", ["jit", "sharded", "pmap", "shard_map"])
def test_predict_equals_apply_batch_by_batch(ds, strategy):
    model = Net(axis_name="data")
    state = create_train_state(model, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32), seed=1)
    state = state.replace(batch_stats=jax.tree.map(lambda a: a + 0.3, state.batch_stats))
    x = ds.x_test[:77]  # 77 = 4 x 16 + 13: a short last batch
    want = np.asarray(model.apply(state.variables(), x, train=False))
    got = predict(model, state, x, batch_size=16, strategy=strategy)
    assert got.shape == (77, 10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    probs = predict(model, state.variables(), x, batch_size=16, strategy=strategy, probabilities=True)
    np.testing.assert_allclose(probs, np.exp(want) / np.exp(want).sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_frozen_layers_keep_their_batch_norm_statistics(ds):
    start = _run(ds, epochs=1).state
    mask = jaxcnn.models.freeze_mask(start.params, trainable="head")
    tuned = _run(ds, epochs=1, state=start, trainable=mask, tx=optax.sgd(0.05)).state
    for name in ("mean", "var"):
        np.testing.assert_array_equal(tuned.batch_stats["bn"][name], start.batch_stats["bn"][name])
    np.testing.assert_array_equal(tuned.params["conv"]["kernel"], start.params["conv"]["kernel"])
    assert not np.array_equal(tuned.params["head"]["kernel"], start.params["head"]["kernel"])
    updated = _run(ds, epochs=1, state=start, trainable=mask, tx=optax.sgd(0.05), update_frozen_stats=True).state
    assert not np.array_equal(updated.batch_stats["bn"]["mean"], start.batch_stats["bn"]["mean"])


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::FutureWarning", "ignore:The inplace keyword:Warning"
)  # tbparse's own use of pandas
def test_logs_csv_equals_jsonl_and_tensorboard_holds_the_numbers(ds, tmp_path):
    tbparse = pytest.importorskip("tbparse")
    result = _run(ds, validation=0.25, out_dir=tmp_path / "run", callbacks=[TensorBoard(tmp_path / "tb")])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(evals) == 2
    for row, rec in zip(rows, evals):
        assert set(row) == set(rec) - {"kind"}
        for k, v in row.items():
            assert (v == "" and rec[k] is None) or float(v) == pytest.approx(rec[k], rel=1e-12)
    scalars = tbparse.SummaryReader(str(tmp_path / "tb")).scalars
    val = scalars[scalars.tag == "epoch/val_loss"].sort_values("step")
    np.testing.assert_allclose(val.value.to_numpy(), [r["val_loss"] for r in result.history], rtol=1e-6)
    train = scalars[scalars.tag == "train/loss"].sort_values("step")
    steps = [r for r in records if r["kind"] == "train"]
    assert train.step.tolist() == [r["step"] for r in steps]
    np.testing.assert_allclose(train.value.to_numpy(), [r["loss"] for r in steps], rtol=1e-6)


def test_class_and_sample_weights_equal_a_hand_weighted_numpy_loss(ds, tmp_path):
    model = nn.Dense(10)  # a linear model: the first step's loss is computed in NumPy from the initial weights
    flat = D.Dataset(ds.x_train.reshape(400, -1), ds.y_train, ds.x_test.reshape(120, -1), ds.y_test, 10, "flat", "-")
    state = create_train_state(model, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 64), jnp.float32), seed=0)
    cw = np.linspace(0.5, 2.0, 10)
    sw = np.random.default_rng(1).uniform(0, 3, 400)
    fit(
        model,
        flat,
        optax.sgd(0.1),
        epochs=1,
        batch_size=400,
        state=state,
        class_weight=cw,
        sample_weight=sw,
        strategy="jit",
        progress=False,
        out_dir=tmp_path / "w",
    )
    first = [
        json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines() if '"train"' in line
    ][0]
    w_, b_ = (np.asarray(state.params[k], np.float64) for k in ("kernel", "bias"))
    logits = flat.x_train.astype(np.float64) @ w_ + b_
    logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    nll = logz - logits[np.arange(400), flat.y_train]
    weights = cw[flat.y_train] * sw
    assert first["loss"] == pytest.approx(np.sum(weights * nll) / np.sum(weights), rel=1e-6)
    with pytest.raises(ValueError, match="class_weight"):
        _run(ds, class_weight=[1.0] * 9)
    with pytest.raises(ValueError, match="sample_weight"):
        _run(ds, sample_weight=-np.ones(400))


def test_any_batch_size_on_eight_devices_equals_one_device(ds):
    """50 does not divide over 8 devices: padded to 56 with weight-0 rows, exact (masked BatchNorm)."""
    one = _run(ds, batch_size=50, strategy="jit", devices=jax.devices()[:1])
    eight = _run(ds, batch_size=50, strategy="sharded")
    for a, b in zip(_leaves(one.state), _leaves(eight.state)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    per_device = _run(ds, batch_size=50, strategy="shard_map", model=Net(axis_name="data"))
    for a, b in zip(_leaves(one.state), _leaves(per_device.state)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_any_linen_module_trains_sequential_included(ds):
    model = jnn.Sequential([jnn.Conv(4, 3), jax.nn.relu, jnn.Flatten(), nn.Dense(10)])
    result = _run(ds, model=model, epochs=3)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] and result.test["accuracy"] > 0.5


def test_nan_guard_stops_at_the_first_bad_step_and_keeps_good_checkpoints(ds, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"non-finite loss or update at step \d+.*") as err:
        _run(ds, epochs=3, tx=optax.sgd(1e6), out_dir=out, checkpoint_every=1, keep_checkpoints=50)
    bad = int(re.search(r"at step (\d+)", str(err.value)).group(1))
    records = [
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))
        for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    stop = [r for r in records if r.get("event") == "stop"][0]
    assert f"at step {bad}" in stop["reason"] and bad > 1
    # the guard's verdict, checked by hand: step bad's update is the first with a non-finite gradient
    template = create_train_state(Net(), optax.sgd(1e6), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32))
    ckpt = Checkpointer(out / "checkpoints")
    assert ckpt.steps() == list(range(1, bad))  # every good step kept, nothing after
    restored, _ = ckpt.restore(template)
    assert all(np.isfinite(a).all() for a in jax.tree.leaves(restored.params))
    step = make_train_step(Net(), "cross_entropy", "jit", batch_split=1)
    order = D.batches(ds.x_train, ds.y_train, 32, seed=3, epoch=0)
    batch = next(b for i, b in enumerate(order) if i == bad - 1)
    new, _ = step(step.place_state(restored), step.place_batch(batch))
    grads = jax.tree.map(lambda a, b: (np.asarray(a) - np.asarray(b)) / -1e6, new.params, restored.params)
    assert not all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def _batch(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 8, 8, 1)).astype(np.float32), "y": rng.integers(0, 10, n).astype(np.int32)}


def test_grad_accum_equals_the_whole_batch_without_batch_norm():
    model = jaxcnn.get_model("lwls_cnn", dropout_rate=0.3)
    x = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    rng = np.random.default_rng(0)
    batch = {
        "x": rng.standard_normal((64, 28, 28, 1)).astype(np.float32),
        "y": rng.integers(0, 10, 64).astype(np.int32),
    }
    out = []
    for k in (1, 4):
        step = make_train_step(model, "cross_entropy", "jit", grad_accum=k, batch_split=1)
        state = step.place_state(create_train_state(model, optax.adam(1e-3), x, seed=0))
        for _ in range(2):
            state, m = step(state, step.place_batch(batch))
        out.append((step.fetch_state(state), float(m["loss"])))
    for a, b in zip(jax.tree.leaves(out[0][0].params), jax.tree.leaves(out[1][0].params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    assert out[0][1] == pytest.approx(out[1][1], abs=1e-5)
    with pytest.raises(ValueError, match="grad_accum"):
        make_train_step(model, grad_accum=0)


def test_grad_accum_with_batch_norm_equals_a_pytorch_accumulation_loop():
    torch = pytest.importorskip("torch")
    batch, k = _batch(), 4
    step = make_train_step(_NoDropout(), "cross_entropy", "jit", grad_accum=k)
    state = create_train_state(_NoDropout(), optax.sgd(0.1), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32), seed=2)
    p = jax.tree.map(np.asarray, state.params)
    new, _ = step(step.place_state(state), step.place_batch(batch))
    new = jax.device_get(step.fetch_state(new))

    conv = torch.nn.Conv2d(1, 6, 3, padding=1, bias=False)
    head = torch.nn.Linear(6 * 4 * 4, 10)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(p["conv"]["kernel"]).permute(3, 2, 0, 1))
        head.weight.copy_(torch.tensor(p["head"]["kernel"]).T)
        head.bias.copy_(torch.tensor(p["head"]["bias"]))
    scale = torch.tensor(p["bn"]["scale"], requires_grad=True)
    bias = torch.tensor(p["bn"]["bias"], requires_grad=True)
    run_mean, run_var = torch.zeros(6), torch.ones(6)
    params = [conv.weight, head.weight, head.bias, scale, bias]
    opt = torch.optim.SGD(params, lr=0.1)
    opt.zero_grad()
    x = torch.tensor(batch["x"]).permute(0, 3, 1, 2)
    y = torch.tensor(batch["y"]).long()
    for part in range(k):  # the PyTorch loop: backward per micro-batch, one optimizer step
        xs, ys = x[16 * part : 16 * part + 16], y[16 * part : 16 * part + 16]
        h = conv(xs)
        mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=False)
        with torch.no_grad():  # running statistics per micro-batch (jaxcnn's biased-variance convention)
            run_mean.mul_(0.9).add_(0.1 * mean)
            run_var.mul_(0.9).add_(0.1 * var)
        h = (h - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + 1e-5)
        h = torch.relu(h * scale[None, :, None, None] + bias[None, :, None, None])
        h = torch.nn.functional.max_pool2d(h, 2).permute(0, 2, 3, 1).reshape(16, -1)
        loss = torch.nn.functional.cross_entropy(head(h), ys, reduction="sum") / 64
        loss.backward()
    opt.step()
    np.testing.assert_allclose(
        new.params["conv"]["kernel"], conv.weight.detach().permute(2, 3, 1, 0).numpy(), atol=1e-4
    )
    np.testing.assert_allclose(new.params["head"]["kernel"], head.weight.detach().numpy().T, atol=1e-4)
    np.testing.assert_allclose(new.params["bn"]["scale"], scale.detach().numpy(), atol=1e-4)
    np.testing.assert_allclose(new.batch_stats["bn"]["mean"], run_mean.numpy(), atol=1e-4)
    np.testing.assert_allclose(new.batch_stats["bn"]["var"], run_var.numpy(), atol=1e-4)


class _NoDropout(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = jnn.Conv(6, 3, use_bias=False, name="conv")(x)
        x = jax.nn.relu(jnn.BatchNorm(use_running_average=not train, name="bn")(x))
        return nn.Dense(10, name="head")(jnn.MaxPool(2)(x).reshape(x.shape[0], -1))


def test_reduce_lr_on_plateau_scales_the_injected_learning_rate(ds):
    from jaxcnn.train import ReduceLROnPlateau

    plateau = ReduceLROnPlateau("val_loss", factor=0.5, patience=1, min_delta=10.0)  # nothing counts as better
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    result = _run(ds, epochs=3, validation=0.25, tx=tx, callbacks=[plateau])
    # epoch 0 sets the first best; epochs 1 and 2 do not beat it by 10: halve, then halve again
    assert [e for e, _ in plateau.reductions] == [1, 2]
    assert [lr for _, lr in plateau.reductions] == pytest.approx([0.05, 0.025])  # float32 hyperparameters
    assert float(result.state.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.025)
    assert [r.get("lr") for r in result.history] == [None, *(lr for _, lr in plateau.reductions)]
    with pytest.raises(ValueError, match="inject_hyperparams"):
        _run(ds, epochs=2, validation=0.25, tx=optax.sgd(0.1), callbacks=[ReduceLROnPlateau(patience=1, min_delta=10)])
    with pytest.raises(ValueError, match="test set"):
        ReduceLROnPlateau("test_loss")


def test_callback_hooks_run_in_order_and_can_stop_training(ds):
    from jaxcnn.train import Callback

    class Recorder(Callback):
        def __init__(self):
            self.calls = []

        def on_train_begin(self, run):
            self.calls.append(("train_begin", run.step))

        def on_epoch_begin(self, run, epoch):
            self.calls.append(("epoch_begin", epoch))

        def on_step_end(self, run, step, metrics):
            self.calls.append(("step", step))
            if step == 15:
                run.stop("enough")

        def on_epoch_end(self, run, epoch, record):
            self.calls.append(("epoch_end", epoch))

        def on_train_end(self, run):
            self.calls.append(("train_end", run.step))

    rec = Recorder()
    result = _run(ds, epochs=3, callbacks=[rec])  # 12 steps per epoch
    assert rec.calls[:3] == [("train_begin", 0), ("epoch_begin", 0), ("step", 1)]
    assert rec.calls[13:17] == [("step", 12), ("epoch_end", 0), ("epoch_begin", 1), ("step", 13)]
    # metrics are read one step late, so step 16 was already running when step 15's hook said stop
    assert rec.calls[-3:] == [("step", 15), ("step", 16), ("train_end", 16)]
    assert result.stopped_early and result.stop_reason == "enough" and int(result.state.step) == 16


def test_the_guard_reports_labels_that_are_not_classes_and_padding_is_exempt():
    model = _NoDropout()
    step = make_train_step(model, "cross_entropy", "jit")
    state = step.place_state(create_train_state(model, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)))
    batch = _batch(8)
    batch["y"][3] = 10  # 10 classes: 10 is not one
    _, m = step(state, step.place_batch(batch))
    assert not bool(step.fetch_metrics(m)["labels_ok"])
    state = step.place_state(create_train_state(model, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)))
    _, m = step(state, step.place_batch({**batch, "weight": np.where(np.arange(8) == 3, 0.0, 1.0).astype(np.float32)}))
    assert bool(step.fetch_metrics(m)["labels_ok"])  # a padding row's label does not count
    with pytest.raises(ValueError, match="validation y"):
        _run(D.digits(), validation=(D.digits().x_test, np.full(len(D.digits().x_test), 11, np.int32)))


@pytest.mark.parametrize("dtype", [np.float32, np.float16, jnp.bfloat16])
def test_the_guard_probe_is_numpys_all_isfinite_per_leaf_under_jit(dtype):
    from jaxcnn.train.step import finite_leaves

    big = float(jnp.finfo(dtype).max)
    leaves = {
        "a_ok": np.full((3, 4), big, np.float32),  # sums of huge finite values overflow; the probe must not
        "b_inf": np.array([1.0, np.inf, 2.0], np.float32),
        "c_ninf": np.array([[-np.inf]], np.float32),
        "d_nan": np.array([0.0, np.nan], np.float32),
        "e_zero": np.zeros((5,), np.float32),
        "f_mixed": np.array([-big, big, 0.0], np.float32),
    }
    tree = {k: jnp.asarray(v, dtype) for k, v in leaves.items()}
    got = np.asarray(jax.jit(finite_leaves)(tree))
    expected = [bool(np.isfinite(np.asarray(v, np.float64)).all()) for v in jax.tree.leaves(tree)]
    assert got.tolist() == expected == [True, False, False, False, True, True]


@pytest.mark.parametrize("strategy", ["jit", "sharded", "pmap", "shard_map"])
def test_placing_a_state_never_lets_a_step_delete_the_callers_arrays(strategy):
    model = jaxcnn.get_model("lwls_cnn", axis_name="data" if strategy in ("pmap", "shard_map") else None)
    state = create_train_state(model, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32))
    step = make_train_step(model, "cross_entropy", strategy)
    rng = np.random.default_rng(0)
    batch = {
        "x": rng.standard_normal((16, 28, 28, 1)).astype(np.float32),
        "y": rng.integers(0, 10, 16).astype(np.int32),
    }
    step(step.place_state(state), step.place_batch(batch))  # donates the placed copy
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(state.params))  # still readable
