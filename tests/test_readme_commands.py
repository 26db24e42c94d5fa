"""Every `jaxcnn ...` command in the README's bash blocks runs as written (train: with --quick added).

Left out, as the README itself says they need other hosts: the multi-host and cloud examples
(``--coordinator``, ``--distributed``, ``gcloud``, ``JAXCNN_COORDINATOR``). ``jaxcnn bench`` runs in the
slow suite.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jaxcnn.cli import main

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
OTHER_HOSTS = ("--coordinator", "--distributed", "gcloud", "JAXCNN_COORDINATOR")


def readme_commands() -> list[str]:
    """The ``jaxcnn`` command lines of the README's bash blocks, comments stripped, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [
        line for line in lines if re.match(r"^([A-Z_]+=\S+ )*jaxcnn ", line) and not any(h in line for h in OTHER_HOSTS)
    ]


def _as_run(line: str) -> tuple[dict[str, str], list[str]]:
    """``(environment, argv)``; train commands get ``--quick --no-progress`` unless they resume."""
    words = shlex.split(line)
    env = dict(w.split("=", 1) for w in words[: words.index("jaxcnn")])
    argv = words[words.index("jaxcnn") + 1 :]
    if argv[0] == "train":
        argv += ["--no-progress"] + ([] if "--resume" in argv else ["--quick"])
    return env, argv


def test_the_readme_has_the_commands_this_test_runs():
    commands = readme_commands()
    assert any(c.startswith("jaxcnn train") for c in commands) and any("--resume" in c for c in commands)
    assert any(c.startswith("jaxcnn eval") for c in commands)


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JAXCNN_MNIST_DIR", str(MNIST))
    ran = 0
    for line in readme_commands():
        env, argv = _as_run(line)
        if argv[0] == "bench" or ("mnist" in argv and not MNIST.is_dir()):
            continue
        if env:  # an environment the process must start with (XLA_FLAGS): a new process
            proc = subprocess.run(
                [sys.executable, "-m", "jaxcnn.cli", *argv],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert proc.returncode == 0, f"{line}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        else:
            assert main(argv) == 0, line
        ran += 1
    assert ran >= 6


@pytest.mark.slow
def test_readme_bench_command_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    for line in readme_commands():
        env, argv = _as_run(line)
        if argv[0] == "bench":  # the benchmarks' peers broadcast as NumPy does (the suite raises on it)
            with jax.numpy_rank_promotion("allow"):
                assert main([*argv, "--out", str(tmp_path)]) == 0, line
