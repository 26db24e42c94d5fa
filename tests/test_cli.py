"""The `jaxcnn` command: the README's main job, eval/summary/visualize, one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from jaxcnn.cli import main

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def _final_accuracy(out: str) -> float:
    m = re.search(r"final test accuracy: ([\d.]+)%", out)
    assert m, out
    return float(m.group(1)) / 100


def test_default_train_reaches_97_percent_on_digits(tmp_path, capsys):
    """`jaxcnn train` with no options: LWLS CNN on the embedded digits, >= 97% held out."""
    assert main(["train", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    acc = _final_accuracy(out)
    assert acc >= 0.97
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last_eval = [r for r in records if r["kind"] == "eval"][-1]
    test = [r for r in records if r["kind"] == "test"]  # read once, after training
    assert len(test) == 1 and test[0]["accuracy"] == pytest.approx(acc, abs=5e-5)
    assert last_eval["epoch"] == 9 and "test_accuracy" not in last_eval  # the default: 10 epochs
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (cfg["model"], cfg["data"], cfg["image_size"]) == ("lwls_cnn", "digits", 28)

    # eval re-reads the checkpoint and gives the same number
    assert main(["eval", "--checkpoint", str(tmp_path / "run")]) == 0
    assert f"accuracy {100 * acc:.2f}%" in capsys.readouterr().out


@pytest.mark.skipif(not MNIST.is_dir(), reason="the MNIST test files are not at ../shared/data/mnist")
@pytest.mark.slow
def test_lwls_on_mnist_split_reaches_97_percent(tmp_path, capsys):
    argv = ["train", "--data", "mnist", "--data-dir", str(MNIST), "--batch-size", "64", "--out", str(tmp_path / "m"), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "split 8000/2000" in out
    assert _final_accuracy(out) >= 0.97


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("quick") / "run"
    assert main(["train", "--quick", "--out", str(run), "--no-progress", "--checkpoint-every", "5"]) == 0
    return run


def test_quick_run_layout(quick_run):
    assert {p.name for p in quick_run.iterdir()} >= {"config.json", "metrics.jsonl", "curves.png", "checkpoints"}


@pytest.mark.parametrize("what", ["filters", "feature-maps", "curves"])
def test_visualize_writes_png(quick_run, tmp_path, what, capsys):
    out = tmp_path / f"{what}.png"
    assert main(["visualize", "--checkpoint", str(quick_run), "--what", what, "--output", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_summary_prints_the_lecture_table(capsys):
    assert main(["summary", "--model", "lwls_cnn", "--markdown"]) == 0
    out = capsys.readouterr().out
    for n in ("104", "808", "1,548", "117,800", "2,010", "122,270", "28x28x4", "14x14x8", "7x7x12"):
        assert n in out, n
    assert main(["summary", "--list"]) == 0
    assert "resnet18" in capsys.readouterr().out.split()


def test_resume_of_a_finished_run_reports_its_accuracy(quick_run, capsys):
    assert main(["train", "--quick", "--out", str(quick_run), "--no-progress", "--checkpoint-every", "5", "--resume"]) == 0
    assert 0.0 < _final_accuracy(capsys.readouterr().out) <= 1.0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "nope"], "unknown model 'nope'; available models: alexnet"),
        (["train", "--data", "mnist", "--data-dir", "/nonexistent"], "MNIST folder '/nonexistent'"),
        (["train", "--data", "imagenet"], "unknown data set 'imagenet'"),
        (["train", "--model-arg", "width=3"], "model 'lwls_cnn' does not accept ['width']"),
        (["train", "--model-arg", "width"], "--model-arg must look like KEY=VALUE"),
        (["train", "--optimizer", "lbfgs", "--quick"], "optimizer must be one of"),
        (["train", "--batch-size", "5000"], "batch_size=5000 is larger than the training set"),
        (["summary", "--input-shape", "a,b"], "--input-shape must be comma-separated ints"),
        (["eval", "--checkpoint", "/nonexistent"], "is not a jaxcnn run directory"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_existing_run_is_not_overwritten(quick_run, capsys):
    before = (quick_run / "metrics.jsonl").read_bytes()
    assert main(["train", "--quick", "--out", str(quick_run)]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (quick_run / "metrics.jsonl").read_bytes() == before


def test_bench_passes_its_options_through(monkeypatch):
    """`jaxcnn bench --quick` reaches benchmarks.run.main(["--quick"]) (argparse alone would reject it)."""
    import benchmarks.run as bench_run

    seen = []
    monkeypatch.setattr(bench_run, "main", lambda argv: seen.append(list(argv)) or 0)
    assert main(["bench", "--quick", "--only", "primitives"]) == 0
    assert main(["bench", "--", "--quick"]) == 0
    assert seen == [["--quick", "--only", "primitives"], ["--quick"]]
