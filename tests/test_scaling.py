"""benchmarks/scaling.py: the efficiency arithmetic (numbers worked by hand) and the report; no timings asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import scaling  # noqa: E402

RUNS = [
    {"devices": 1, "per_device_batch": 256, "images_per_s": [900.0, 1000.0, 1300.0], "first_step_s": 2.0},
    {"devices": 2, "per_device_batch": 128, "images_per_s": [1500.0, 1600.0, 1400.0], "first_step_s": 2.5},
    {"devices": 8, "per_device_batch": 32, "images_per_s": [2000.0, 2000.0], "first_step_s": 3.0},
]
META = {
    "model": "lwls_cnn",
    "batch_size": 256,
    "strategy": "sharded",
    "steps": 20,
    "repeats": 3,
    "real_devices": False,
    "jax": "0",
    "python": "3",
    "machine": "x",
    "cpus": 2,
    "date": "today",
    "command": "python -m benchmarks.scaling",
    "load_before": [3.0, 2.0, 1.0],
    "load_after": [3.0, 2.0, 1.0],
}


def test_efficiency_is_throughput_over_n_times_one_device():
    rows = scaling.summarize(RUNS)
    # medians 1000, 1500, 2000; speed-ups 1, 1.5, 2; efficiencies 1, 0.75, 0.25
    assert [(r["median"], r["speedup"], r["efficiency"]) for r in rows] == [
        (1000.0, 1.0, 1.0),
        (1500.0, 1.5, 0.75),
        (2000.0, 2.0, 0.25),
    ]
    assert (rows[0]["low"], rows[0]["high"]) == (900.0, 1300.0)


def test_without_a_one_device_run_there_is_no_efficiency():
    rows = scaling.summarize(RUNS[1:])
    assert rows[0]["speedup"] is None and rows[0]["efficiency"] is None
    assert "| 2 | 128 | 1,500 | 1,400-1,600 | n/a | n/a | 2.5 |" in scaling.to_markdown(rows, META)


def test_report_has_the_table_the_conditions_and_the_caveat():
    text = scaling.to_markdown(scaling.summarize(RUNS), META)
    assert "| 1 | 256 | 1,000 | 900-1,300 | 1.00 | 1.00 | 2.0 |" in text
    assert "| 8 | 32 | 2,000 | 2,000-2,000 | 2.00 | 0.25 | 3.0 |" in text
    assert "load average (1, 5, 15 min) [3.0, 2.0, 1.0]" in text
    assert "pretend devices sharing those same cores" in text and "shared with other jobs" in text
    real = scaling.to_markdown(scaling.summarize(RUNS), {**META, "real_devices": True})
    assert "pretend devices" not in real and "real devices" in real


@pytest.mark.slow
def test_quick_run_writes_a_table_for_one_and_two_devices(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.scaling", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads((tmp_path / "scaling.json").read_text())
    assert [r["devices"] for r in data["rows"]] == [1, 2]
    assert all(v > 0 for r in data["rows"] for v in r["images_per_s"])
    assert data["rows"][1]["per_device_batch"] == 128
    assert "| 2 | 128 |" in (tmp_path / "scaling.md").read_text()
