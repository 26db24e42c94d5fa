"""The train step's batch split (jaxcnn.train.split): same step as the unsplit one, dropout masks included."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcnn
import jaxcnn.functional as F
import jaxcnn.nn as jnn
from jaxcnn.train import create_train_state, make_train_step
from jaxcnn.train.split import auto_parts

STEPS, BATCH = 4, 64
TX = optax.sgd(0.05, momentum=0.9)


@pytest.mark.parametrize(
    "batch, parts",
    # the most parts of >= 32 examples (at most 16) dividing the batch; no split below 64
    [(1, 1), (32, 1), (63, 1), (64, 2), (96, 3), (100, 2), (128, 4), (160, 5), (512, 16), (1000, 10), (4096, 16)],
)
def test_auto_parts(batch, parts):
    assert auto_parts(batch) == parts


@pytest.mark.parametrize("broadcast_axes", [(), (1,), (0,)])
def test_dropout_parts_keep_the_rows_of_the_whole_batch_mask(broadcast_axes):
    """A part given the per-example keys of its rows (F.row_keys) is masked as those rows of the whole batch."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((12, 5, 3)), jnp.float32)
    key = jax.random.key(3)
    whole = F.dropout(x, 0.4, key=key, broadcast_axes=broadcast_axes)
    part_key = (lambda k: key) if 0 in broadcast_axes else (lambda k: F.row_keys(key, 4, 4 * k))
    parts = [F.dropout(x[4 * k : 4 * k + 4], 0.4, key=part_key(k), broadcast_axes=broadcast_axes) for k in range(3)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert 0 < int(jnp.sum(whole == 0)) < whole.size  # a real mask, not all kept or all dropped


def test_dropout_row_masks_are_drawn_from_fold_in_of_the_row():
    """The rule written out by hand: row i keeps exactly bernoulli(fold_in(key, i)) of its units."""
    x = jnp.ones((6, 7, 2), jnp.float32)
    key = jax.random.key(11)
    y = np.asarray(F.dropout(x, 0.3, key=key))
    for i in range(6):
        keep = np.asarray(jax.random.bernoulli(jax.random.fold_in(key, i), 0.7, (7, 2)))
        np.testing.assert_array_equal(y[i] != 0, keep)
    # a row's mask does not depend on the rows around it
    np.testing.assert_array_equal(np.asarray(F.dropout(x[3:], 0.3, key=F.row_keys(key, 3, 3))), y[3:])


def test_dropout_per_device_rows_are_global_rows():
    """Under pmap each device's shard is split again: device d, part k holds global rows d * 8 + 4 k + i."""
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 6)), jnp.float32)  # 2 devices x 8 rows
    key = jax.random.key(5)
    whole = F.dropout(x.reshape(16, 6), 0.5, key=key)

    def per_device(xd):
        first = jax.lax.axis_index("d") * 8
        return jnp.concatenate(
            [F.dropout(xd[4 * k : 4 * k + 4], 0.5, key=F.row_keys(key, 4, first + 4 * k)) for k in range(2)]
        )

    def unsplit(xd):
        return F.dropout(xd, 0.5, key=key, axis_name="d")

    for fn in (per_device, unsplit):
        out = jax.pmap(fn, axis_name="d", devices=jax.devices()[:2])(x)
        np.testing.assert_array_equal(np.asarray(out).reshape(16, 6), whole)


@pytest.mark.parametrize("bad", [jax.random.split(jax.random.key(0), 3), jax.random.split(jax.random.key(0), (4, 1))])
def test_dropout_per_example_key_errors(bad):
    with pytest.raises(TypeError, match="one typed key per example"):
        F.dropout(jnp.ones((4, 2)), 0.5, key=bad)
    with pytest.raises(ValueError, match="broadcast_axes"):
        F.dropout(jnp.ones((3, 2)), 0.5, key=jax.random.split(jax.random.key(0), 3), broadcast_axes=(0,))


@functools.cache
def _data():
    ds = jaxcnn.data.digits(size=28)
    n = STEPS * BATCH
    return ds.x_train[:n].reshape(STEPS, BATCH, 28, 28, 1), ds.y_train[:n].reshape(STEPS, BATCH)


def _run(model, strategy="jit", n_devices=1, weight=None, **kw):
    x, y = _data()
    state = create_train_state(model, TX, jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32), seed=0)
    step = make_train_step(model, "cross_entropy", strategy, devices=jax.devices()[:n_devices], **kw)
    placed, losses = step.place_state(state), []
    for i in range(STEPS):
        batch = {"x": x[i], "y": y[i]} if weight is None else {"x": x[i], "y": y[i], "weight": weight}
        placed, m = step(placed, step.place_batch(batch))
        losses.append(step.fetch_metrics(m))
    return jax.device_get(step.fetch_state(placed)), losses, step


def _max_diff(a, b):
    return max(
        float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


LWLS = jaxcnn.get_model("lwls_cnn", dropout_rate=0.3)


@functools.cache
def _unsplit():
    state, metrics, _ = _run(LWLS, batch_split=1)
    init = create_train_state(LWLS, TX, jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32), seed=0)
    assert _max_diff(init.params, state.params) > 1e-2  # it trained
    return state, metrics


@pytest.mark.parametrize("batch_split", ["auto", 2, 4, 8, 16])  # 8 and 16: groups of 4 parts in a loop
def test_split_step_equals_unsplit_step_with_dropout(batch_split):
    ref, ref_metrics = _unsplit()
    state, metrics, _ = _run(LWLS, batch_split=batch_split)
    assert _max_diff(ref.params, state.params) <= 1e-5
    for m, r in zip(metrics, ref_metrics):
        assert float(m["loss"]) == pytest.approx(float(r["loss"]), abs=1e-5)
        assert float(m["accuracy"]) == float(r["accuracy"])


def test_split_step_with_padded_rows_and_steps_per_call():
    """Weights travel with their rows; k steps per call split each step."""
    weight = np.ones(BATCH, np.float32)
    weight[-7:] = 0.0
    ref, _, _ = _run(LWLS, weight=weight, batch_split=1)
    state, _, _ = _run(LWLS, weight=weight, batch_split=4)
    assert _max_diff(ref.params, state.params) <= 1e-5
    x, y = _data()
    init = create_train_state(LWLS, TX, jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32), seed=0)
    step = make_train_step(LWLS, "cross_entropy", "jit", steps_per_call=STEPS, batch_split=2)
    out, m = step(step.place_state(init), step.place_batch({"x": x, "y": y}))
    assert m["loss"].shape == (STEPS,)
    assert _max_diff(_unsplit()[0].params, step.fetch_state(out).params) <= 1e-5


@pytest.mark.parametrize("batch_split", [2, 8])
def test_split_per_device_under_pmap_equals_one_device(batch_split):
    model = jaxcnn.get_model("lwls_cnn", dropout_rate=0.3, axis_name="data")
    state, _, _ = _run(model, "pmap", 2, batch_split=batch_split)
    assert _max_diff(_unsplit()[0].params, state.params) <= 1e-5


def _parts(step, model):
    """How many parts the traced step splits the batch into: the calls of the split's one-part gradient
    (a nested jit, printed once in the jaxpr and called once per part); 1 when the step is not split."""
    x, y = _data()
    state = step.place_state(create_train_state(model, TX, jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)))
    text = str(jax.make_jaxpr(step.fn)(state, step.place_batch({"x": x[0], "y": y[0]})))
    return max(1, text.count("name=one_part"))


def test_auto_splits_only_where_it_changes_nothing():
    assert _parts(make_train_step(LWLS, batch_split=1), LWLS) == 1
    assert _parts(make_train_step(LWLS, batch_split="auto"), LWLS) == 2  # batch 64: 2 parts
    # BatchNorm (batch statistics) and flax's own Dropout (per-call masks): never split automatically
    bn = jaxcnn.get_model("lwls_cnn", batch_norm=True)
    assert _parts(make_train_step(bn, batch_split="auto"), bn) == 1
    fd = _FlaxDropoutNet()
    assert _parts(make_train_step(fd, batch_split="auto"), fd) == 1
    # not on other strategies
    sharded = make_train_step(LWLS, "cross_entropy", "sharded", devices=jax.devices()[:1])
    assert _parts(sharded, LWLS) == 1


class _FlaxDropoutNet(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        x = nn.Dropout(0.2, deterministic=not train)(jnn.Conv(4, 3)(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize(
    "model, kw, err, match",
    [
        (LWLS, {"batch_split": 3}, ValueError, "batch_split=3 must divide"),
        (LWLS, {"batch_split": 0}, ValueError, "batch_split"),
        (LWLS, {"batch_split": "fast"}, ValueError, "batch_split"),
        (LWLS, {"batch_split": 1.5}, TypeError, "batch_split"),
        (jaxcnn.get_model("lwls_cnn", batch_norm=True), {"batch_split": 2}, ValueError, "BatchNorm"),
        (_FlaxDropoutNet(), {"batch_split": 2}, ValueError, "flax.linen"),
    ],
)
def test_batch_split_errors(model, kw, err, match):
    with pytest.raises(err, match=match):
        _run(model, **kw)


def test_fit_and_cli_pass_batch_split_through(tmp_path, capsys):
    from jaxcnn.cli import main
    from jaxcnn.train import fit

    ds = jaxcnn.data.digits(size=28)
    with pytest.raises(ValueError, match="flax.linen"):
        fit(_FlaxDropoutNet(), ds, optax.sgd(0.1), epochs=1, batch_size=64, progress=False, batch_split=2)
    with pytest.raises(SystemExit):
        main(["train", "--batch-split", "many", "--out", str(tmp_path / "r")])
    assert "--batch-split" in capsys.readouterr().err
    assert (
        main(["train", "--batch-split", "3", "--batch-size", "64", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    )
    assert "batch_split=3 must divide" in capsys.readouterr().err
