"""Checkpoints that cannot eat each other: checksums, fallback on restore, safe rotation, SIGKILL during saves."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.models import get_model
from jaxcnn.train import (
    Checkpointer,
    CheckpointError,
    checksum,
    create_train_state,
    make_optimizer,
)


@pytest.fixture(scope="module")
def state0():
    model = get_model("mlp", widths=(8,), num_classes=3)
    return create_train_state(model, make_optimizer("adam", 1e-2), jnp.zeros((1, 4, 4, 1)), seed=1)


def _at(state, step):
    """A distinct state per step: params shifted by the step number."""
    return state.replace(step=step, params=jax.tree.map(lambda p: p + step, state.params))


def _files(directory: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _flip_bytes(step_dir: Path, n: int = 16) -> Path:
    """Flip ``n`` bytes in the middle of the largest array-data file of a checkpoint."""
    data = [p for p in step_dir.rglob("*") if p.is_file() and "/d/" in p.as_posix()]
    target = max(data, key=lambda p: p.stat().st_size)
    raw = bytearray(target.read_bytes())
    mid = len(raw) // 2
    for i in range(mid, min(mid + n, len(raw))):
        raw[i] ^= 0xFF
    target.write_bytes(bytes(raw))
    return target


def test_checksum_is_written_and_detects_every_kind_of_change(state0, tmp_path):
    ckpt = Checkpointer(tmp_path, keep=5)
    ckpt.save(_at(state0, 1))
    d = ckpt.path(1)
    assert (d / checksum.CHECKSUM_FILE).is_file() and ckpt.verify(1) is None
    target = _flip_bytes(d, 1)
    assert "bytes changed" in ckpt.verify(1) and target.relative_to(d).as_posix() in ckpt.verify(1)
    _flip_bytes(d, 1)  # flipped back
    assert ckpt.verify(1) is None
    (d / "extra").write_text("x")
    assert "was added" in ckpt.verify(1)
    (d / "extra").unlink()
    target.write_bytes(target.read_bytes()[:-3])
    assert "bytes, the checksum recorded" in ckpt.verify(1)
    target.unlink()
    assert "is missing" in ckpt.verify(1)
    (d / checksum.CHECKSUM_FILE).write_text("{not json")
    assert "unreadable checksum file" in ckpt.verify(1)
    (d / checksum.CHECKSUM_FILE).unlink()
    assert "no checksum file" in ckpt.verify(1)


def test_flipped_middle_checkpoint_is_refused_and_restore_falls_back(state0, tmp_path, caplog):
    ckpt = Checkpointer(tmp_path, keep=3)
    for s in (10, 20, 30):
        ckpt.save(_at(state0, s), {"step": s})
    _flip_bytes(ckpt.path(20))
    good = {s: _files(ckpt.path(s)) for s in (10, 30)}
    with pytest.raises(
        CheckpointError, match=r"checkpoint of step 20 in .*20' could not be restored: file .* bytes changed"
    ):
        ckpt.restore(state0, step=20)
    state, meta = ckpt.restore(state0)  # the newest one is fine
    assert int(state.step) == 30 and meta == {"step": 30} and ckpt.last_restore.skipped == ()
    _flip_bytes(ckpt.path(30))  # now the newest is corrupt too: fall back past both, saying so
    with caplog.at_level(logging.WARNING, logger="jaxcnn.train.checkpoint"):
        state, meta = ckpt.restore(state0)
    assert int(state.step) == 10 and meta == {"step": 10}
    np.testing.assert_array_equal(state.params["head"]["bias"], np.asarray(state0.params["head"]["bias"]) + 10)
    assert [s for s, _ in ckpt.last_restore.skipped] == [30, 20]
    assert "the newest that verifies; skipped step 30" in caplog.text
    # rotation after the fallback: new good checkpoints never delete the last verified (10) too early
    ckpt.save(_at(state0, 11))
    assert ckpt.steps() == [10, 11, 20, 30]  # 2 verified of keep=3: nothing deleted
    assert _files(ckpt.path(10)) == good[10]
    ckpt.save(_at(state0, 12))  # 3 verified: everything older than the oldest kept (10) -- nothing
    ckpt.save(_at(state0, 13))  # 4 verified: 10 goes; the corrupt 20 and 30 are newer and stay
    assert ckpt.steps() == [11, 12, 13, 20, 30]


def test_all_corrupt_is_a_clear_error_listing_every_reason(state0, tmp_path):
    ckpt = Checkpointer(tmp_path, keep=2)
    for s in (1, 2):
        ckpt.save(_at(state0, s))
        _flip_bytes(ckpt.path(s))
    with pytest.raises(CheckpointError, match=r"no checkpoint .* verifies and restores: step 2: file .*; step 1: file"):
        ckpt.restore(state0)
    state, _ = ckpt.restore(state0, step=2, verify=False)  # the escape hatch reads it anyway
    assert int(state.step) == 2


def test_non_finite_state_is_never_saved_and_rotation_keeps_the_good_ones(state0, tmp_path):
    ckpt = Checkpointer(tmp_path, keep=2)
    ckpt.save(_at(state0, 1))
    ckpt.save(_at(state0, 2))
    bad = _at(state0, 3)
    bad = bad.replace(
        params={
            **bad.params,
            "dense1": {**bad.params["dense1"], "kernel": bad.params["dense1"]["kernel"].at[2, 5].set(jnp.nan)},
        }
    )
    before = _files(tmp_path)
    with pytest.raises(
        CheckpointError,
        match=r"refusing to save .* step 3 .*params/dense1/kernel \(NaN at \(2, 5\)\); the last verified checkpoint is step 2",
    ):
        ckpt.save(bad)
    assert _files(tmp_path) == before
    ckpt.save(bad, require_finite=False)  # asked for explicitly: written, and it is still a verified file set
    assert ckpt.steps() == [2, 3]


def test_existing_step_is_never_overwritten_but_a_corrupt_one_is_quarantined(state0, tmp_path):
    ckpt = Checkpointer(tmp_path, keep=3)
    ckpt.save(_at(state0, 5))
    with pytest.raises(CheckpointError, match="a checkpoint for step 5 already exists"):
        ckpt.save(_at(state0, 5))
    _flip_bytes(ckpt.path(5))
    corrupt = _files(ckpt.path(5))
    ckpt.save(_at(state0, 5))  # a resumed run reaching step 5 again replaces the corrupt one ...
    assert ckpt.verify(5) is None
    moved = list((tmp_path / "quarantine").iterdir())  # ... which is kept aside, not deleted
    assert len(moved) == 1 and sorted(p.read_bytes() for p in moved[0].rglob("*") if p.is_file()) == sorted(
        corrupt.values()
    )
    assert ckpt.steps() == [5]


def test_keep_is_reapplied_when_a_directory_is_opened_and_readers_delete_nothing(state0, tmp_path):
    ckpt = Checkpointer(tmp_path, keep=10)
    for s in range(1, 6):
        ckpt.save(_at(state0, s))
    assert Checkpointer(tmp_path).steps() == [1, 2, 3, 4, 5]  # a reader (keep not given) prunes nothing
    assert Checkpointer(tmp_path, keep=2).steps() == [4, 5]  # a writer re-applies its keep at once
    with pytest.raises(ValueError, match="keep must be >= 1, got 0"):
        Checkpointer(tmp_path, keep=0)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 7 .* available: \[4, 5\]"):
        Checkpointer(tmp_path).restore(state0, step=7)


_SAVER = textwrap.dedent(
    """
    import sys, jax, jax.numpy as jnp
    from jaxcnn.models import get_model
    from jaxcnn.train import Checkpointer, create_train_state, make_optimizer
    state = create_train_state(get_model("mlp", widths=(64,), num_classes=3), make_optimizer("adam", 1e-2),
                               jnp.zeros((1, 16, 16, 1)), seed=1)
    ckpt = Checkpointer(sys.argv[1], keep=2)
    start = ckpt.latest_step() or 0
    print("ready", flush=True)
    for s in range(start + 1, start + 1000):
        ckpt.save(state.replace(step=s,
                                params=jax.tree.map(lambda p: p + s, state.params)))
    """
)


@pytest.mark.slow
def test_sigkill_during_saves_always_leaves_a_verified_checkpoint_that_restores(state0, tmp_path):
    model = get_model("mlp", widths=(64,), num_classes=3)
    template = create_train_state(model, make_optimizer("adam", 1e-2), jnp.zeros((1, 16, 16, 1)), seed=1)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "JAX_PLATFORMS": "cpu"}
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(12):
        with subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path)], env=env, stdout=subprocess.PIPE) as proc:
            assert proc.stdout.readline().strip() == b"ready"
            time.sleep(rng.uniform(0.05, 1.5))  # somewhere inside a save, a checksum write or a prune
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        ckpt = Checkpointer(tmp_path)
        state, _ = ckpt.restore(template)
        s = int(state.step)
        assert ckpt.last_restore.step == s and ckpt.verify(s) is None
        np.testing.assert_array_equal(state.params["head"]["kernel"], np.asarray(template.params["head"]["kernel"]) + s)
    assert kills >= 10
    assert len(Checkpointer(tmp_path).steps()) <= 2 + 1  # keep=2, plus at most one a kill left unverified
