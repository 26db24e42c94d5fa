"""Every experiment runs in its --quick form and every claim it checks holds (slow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from experiments._common import MNIST_DIR  # noqa: E402
from experiments.run_all import discover  # noqa: E402


def test_there_are_experiments():
    assert discover(), "no experiments/NN_*.py scripts found"


@pytest.mark.slow
@pytest.mark.parametrize("name", discover())
def test_experiment_quick(name, tmp_path):
    if "MNIST_DIR" in (ROOT / "experiments" / f"{name}.py").read_text() and not MNIST_DIR.is_dir():
        pytest.skip(f"{name} needs the MNIST test images: {MNIST_DIR} is absent (set JAXCNN_MNIST_DIR)")
    proc = subprocess.run(
        [sys.executable, "-m", f"experiments.{name}", "--quick", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = (tmp_path / f"{name}.md").read_text()
    assert "**FAIL**" not in result and "- PASS:" in result
