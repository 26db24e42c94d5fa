"""benchmarks/gpu_check.sh: its CPU dry run end to end (slow), and its pieces (fast).

The GPU run itself needs a GPU machine; here the same script runs with ``--dry-run``
(CPU, batch 4, the LWLS CNN standing in for ResNet-18 and MobileNetV2) and the result
file is checked for its rows and its ratio column. The end-to-end run takes ~40-55 s
on 2 busy cores (six jaxcnn compilations, two Python start-ups with jax and torch), so
it is marked slow; the fast tests check the test selection and the table writer.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import gpu_env, gpu_table  # noqa: E402

MODELS = ("LWLS CNN", "ResNet-18 CIFAR", "MobileNetV2 CIFAR")


def _check_table(md: str) -> None:
    header = [ln for ln in md.splitlines() if ln.startswith("| model")]
    assert len(header) == 1 and "| jaxcnn / PyTorch |" in header[0], md
    for model in MODELS:
        for dtype in ("float32", "bfloat16"):
            rows = [ln for ln in md.splitlines() if ln.startswith(f"| {model}") and f"| {dtype} |" in ln]
            assert len(rows) == 1, (model, dtype, md)
            assert re.search(r"\| \d+\.\d\dx \|", rows[0]), rows[0]


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("JAX_PLATFORMS", None)
    env.pop("XLA_FLAGS", None)  # conftest's 8 forced devices are not the script's business
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    mds = list(tmp_path.glob("*-dry-run.md"))
    assert len(mds) == 1, list(tmp_path.iterdir())
    assert mds[0].with_suffix(".json").exists()
    _check_table(mds[0].read_text())
    for step in ("1/3", "2/3", "3/3", "done in"):
        assert step in proc.stdout


def test_bad_argument_fails():
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and "unknown argument '--nope'" in proc.stderr


def test_test_selection_imports_and_deselects_multi_device():
    args = gpu_env.test_args(dry_run=False)
    assert args[-2] == "-k" and "pmap" in args[-1]
    assert set(args[:-2]) <= set(gpu_env.TEST_FILES)
    assert gpu_env.missing_imports("tests/test_train_core.py") == []  # torch, numpy, optax, jax: all here


def test_markdown_has_every_row_and_the_ratio():
    head = {
        "device": "NVIDIA Test GPU",
        "date_utc": "now",
        "git": "abc",
        "jax_devices": ["cuda:0"],
        "jax_default_matmul_precision": None,
        "torch_cudnn_allow_tf32": True,
        "torch_matmul_allow_tf32": False,
        "versions": {"jax": "x"},
        "torch_cuda": "12",
    }
    stats = {"first_call_s": 1.0}
    records = [
        {
            "row": label,
            "dtype": dtype,
            "batch": 128,
            "images_per_s": {"jaxcnn": 2.0, "torch": 1.0},
            "ratio": 2.0,
            "stats": {"jaxcnn": stats, "torch": stats},
        }
        for label, *_ in gpu_table.ROWS
        for dtype in gpu_table.DTYPES
    ]
    _check_table(gpu_table.markdown(head, records, dry_run=False))
    assert gpu_table.slug("NVIDIA H200") == "nvidia-h200"
