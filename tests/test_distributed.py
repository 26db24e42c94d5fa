"""Several processes on JAX's own runtime (jax.distributed over gloo on the loopback address).

The end-to-end tests start two local `jaxcnn train` processes with two CPU devices
each (one configured by flags, one by environment variables), let them train one
model over the four devices, and compare the checkpoint they wrote with the same
training run in a single process on one device (the oracle). Every subprocess has a
deadline, is killed if it overruns or if its partner dies, and is always reaped.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcnn import cli
from jaxcnn.train import distributed
from jaxcnn.train.distributed import DistributedConfig, resolve_config

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 240


# ----------------------------------------------------------------------------- configuration


def test_nothing_set_means_one_process():
    assert resolve_config(environ={}) is None
    assert distributed.initialize(environ={}) is False


def test_arguments_beat_jaxcnn_variables_which_beat_jax_variables():
    env = {
        "JAXCNN_COORDINATOR": "10.0.0.1:99",
        "JAX_COORDINATOR_ADDRESS": "10.0.0.2:98",
        "JAX_NUM_PROCESSES": "4",
        "JAXCNN_PROCESS_ID": "3",
        "JAX_PROCESS_ID": "1",
    }
    assert resolve_config(environ=env) == DistributedConfig("10.0.0.1:99", 4, 3)
    assert resolve_config("127.0.0.1:5", process_id=0, environ=env) == DistributedConfig("127.0.0.1:5", 4, 0)
    only_jax = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert resolve_config(environ=only_jax) == DistributedConfig("h:1", 2, 1)


def test_auto_lets_jax_detect_the_rest():
    assert resolve_config(auto=True, environ={}) == DistributedConfig(None, None, None, True)
    assert resolve_config(environ={"JAXCNN_DISTRIBUTED": "1"}) == DistributedConfig(None, None, None, True)


@pytest.mark.parametrize(
    "kwargs, env, message",
    [
        (
            {"coordinator": "127.0.0.1:1234"},
            {},
            (
                r"missing: num_processes \(--num-processes or \$JAXCNN_NUM_PROCESSES\), "
                r"process_id \(--process-id or \$JAXCNN_PROCESS_ID\)"
            ),
        ),
        ({"coordinator": "localhost"}, {}, r"coordinator must look like HOST:PORT .* got 'localhost'"),
        (
            {"coordinator": "h:1", "num_processes": 2, "process_id": 2},
            {},
            r"process_id must be in \[0, num_processes\) = \[0, 2\), got 2",
        ),
        ({"coordinator": "h:1", "num_processes": 0, "process_id": 0}, {}, r"num_processes must be >= 1, got 0"),
        ({}, {"JAXCNN_NUM_PROCESSES": "two"}, r"JAXCNN_NUM_PROCESSES must be an integer, got 'two'"),
    ],
)
def test_bad_set_ups_are_named(kwargs, env, message):
    with pytest.raises(ValueError, match=message):
        resolve_config(**kwargs, environ=env)


def test_cli_flags_parse():
    args = cli.build_parser().parse_args(
        ["train", "--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "1", "--max-steps", "5"]
    )
    assert (args.coordinator, args.num_processes, args.process_id, args.distributed, args.max_steps) == (
        "127.0.0.1:1",
        2,
        1,
        False,
        5,
    )


def test_process_rows_of_one_process_is_the_whole_batch():
    from jaxcnn.models import get_model
    from jaxcnn.train import make_train_step

    step = make_train_step(get_model("lwls_cnn"), "cross_entropy", "sharded")
    assert step.process_rows(64) == slice(0, 64)
    with pytest.raises(ValueError, match=r"batch size 12 must be divisible .* \(8\)"):
        step.process_rows(12)


# ----------------------------------------------------------------------------- two local processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_processes(commands: list[tuple[list[str], dict[str, str]]], logs: Path) -> None:
    """Start every ``(argv, extra_env)`` as ``python -m jaxcnn.cli ...``; wait for all, bounded.

    If one process fails the others would wait for it until JAX's own timeouts, so
    they are killed at once; past ``DEADLINE_S`` all are killed. Always reaped.
    """
    procs, files = [], []
    try:
        for i, (argv, extra) in enumerate(commands):
            env = {k: v for k, v in os.environ.items() if not k.startswith(("JAXCNN_", "JAX_COORDINATOR"))}
            env.update({"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu", **extra})
            f = open(logs / f"process{i}.log", "w")  # noqa: SIM115 (closed in the finally below, after the processes)
            files.append(f)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "jaxcnn.cli", *argv], env=env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT
                )
            )
        deadline = time.monotonic() + DEADLINE_S
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for f in files:
            f.close()
    codes = [p.returncode for p in procs]
    if codes != [0] * len(procs):
        tails = "\n".join(
            f"--- process {i} (exit {c}):\n" + (logs / f"process{i}.log").read_text()[-3000:]
            for i, c in enumerate(codes)
        )
        pytest.fail(f"multi-process training failed or overran {DEADLINE_S} s, exit codes {codes}\n{tails}")


def _two_process_train(out: Path, args: list[str]) -> None:
    """Process 0 configured by flags, process 1 by jaxcnn's environment variables."""
    port = _free_port()
    common = ["train", *args, "--out", str(out), "--no-progress"]
    _run_processes(
        [
            (common + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "0"], {}),
            (
                common,
                {"JAXCNN_COORDINATOR": f"127.0.0.1:{port}", "JAXCNN_NUM_PROCESSES": "2", "JAXCNN_PROCESS_ID": "1"},
            ),
        ],
        out.parent,
    )


def _params(run: Path):
    _, _, state, _ = cli._restore(cli._read_config(run))
    return jax.device_get(state)


def _assert_same_params(a, b, atol=1e-5):
    for (path, u), v in zip(
        jax.tree_util.tree_leaves_with_path((a.params, a.batch_stats)), jax.tree.leaves((b.params, b.batch_stats))
    ):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


def _train_records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "train"]


COMMON = [
    "--quick",
    "--val-split",
    "0",
    "--batch-size",
    "64",
    "--optimizer",
    "momentum",
    "--lr",
    "0.02",
]  # 512 rows: 8 steps


def test_two_processes_train_like_one(tmp_path):
    """lwls_cnn, "sharded" over 2 processes x 2 CPU devices, 8 steps; oracle: one process, one device."""
    multi = tmp_path / "multi" / "run"
    multi.parent.mkdir()
    _two_process_train(multi, COMMON)

    single = tmp_path / "single"
    assert cli.main(["train", *COMMON, "--strategy", "jit", "--out", str(single), "--no-progress"]) == 0
    config = json.loads((multi / "config.json").read_text())
    assert config["strategy"] == "sharded"
    a, b = _params(multi), _params(single)
    assert int(a.step) == int(b.step) == 8
    _assert_same_params(a, b)
    # written once: one checkpoint, one log record per step (process 1 wrote nothing of its own)
    assert sorted(p.name for p in (multi / "checkpoints").iterdir()) == ["8"]
    assert [r["step"] for r in _train_records(multi)] == list(range(1, 9))
    np.testing.assert_allclose(
        [r["loss"] for r in _train_records(multi)], [r["loss"] for r in _train_records(single)], atol=1e-5
    )
    log0 = (multi.parent / "process0.log").read_text()
    assert "sharded on 4 CPU devices in 2 processes" in log0
    assert "final test accuracy" not in (multi.parent / "process1.log").read_text()


@pytest.mark.slow
def test_two_processes_resume_a_checkpoint_together(tmp_path):
    """resnet_tiny (BatchNorm) under shard_map: 10 steps, then all processes restore and go on to 20."""
    args = [
        "--model",
        "resnet_tiny",
        "--image-size",
        "8",
        "--batch-size",
        "32",
        "--optimizer",
        "momentum",
        "--lr",
        "0.02",
        "--strategy",
        "shard_map",
    ]
    multi = tmp_path / "multi" / "run"
    multi.parent.mkdir()
    _two_process_train(multi, args + ["--max-steps", "10"])
    assert sorted(p.name for p in (multi / "checkpoints").iterdir()) == ["10"]
    _two_process_train(multi, args + ["--max-steps", "20", "--resume"])

    single = tmp_path / "single"
    single_args = [a if a != "shard_map" else "jit" for a in args]
    assert cli.main(["train", *single_args, "--max-steps", "20", "--out", str(single), "--no-progress"]) == 0
    a, b = _params(multi), _params(single)
    assert int(a.step) == int(b.step) == 20
    _assert_same_params(a, b)
    assert not np.allclose(a.batch_stats["bn1"]["mean"], 0.0)
