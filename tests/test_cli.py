"""The `jaxcnn` command: the README's main job, eval/summary/visualize, one-line errors."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxcnn import cli
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
    argv = [
        "train",
        "--data",
        "mnist",
        "--data-dir",
        str(MNIST),
        "--batch-size",
        "64",
        "--out",
        str(tmp_path / "m"),
        "--no-progress",
    ]
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
    assert (
        main(["train", "--quick", "--out", str(quick_run), "--no-progress", "--checkpoint-every", "5", "--resume"]) == 0
    )
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
    here = os.getcwd()  # results go to the current folder, never into the checkout or the package
    assert seen == [["--quick", "--only", "primitives", "--out", here], ["--quick", "--out", here]]


def test_bench_writes_where_the_user_says(monkeypatch, tmp_path):
    import benchmarks.run as bench_run

    seen = []
    monkeypatch.setattr(bench_run, "main", lambda argv: seen.append(list(argv)) or 0)
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    assert main(["bench", "--render", str(tmp_path / "r.json")]) == 0
    assert seen == [["--quick", "--out", str(tmp_path)], ["--render", str(tmp_path / "r.json")]]


def test_bench_outside_a_checkout_says_how_to_run_it(monkeypatch, capsys):
    """No sys.path edits: where `benchmarks` is not importable, one line says how to run it from a checkout."""
    monkeypatch.setitem(sys.modules, "benchmarks", None)
    monkeypatch.delitem(sys.modules, "benchmarks.run", raising=False)
    path_before = list(sys.path)
    assert main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "python -m benchmarks.run" in err and len(err.strip().splitlines()) == 1
    assert sys.path == path_before


def test_bugs_keep_their_traceback(monkeypatch):
    """Only jaxcnn's own `raise` of a bad-input error is one line; the same types from a bug propagate."""
    from jaxcnn import _figures

    monkeypatch.setitem(cli.COMMANDS, "summary", lambda args: _figures.grid(None, 2))  # Python's TypeError in jaxcnn
    with pytest.raises(TypeError):
        main(["summary"])

    def foreign(args):
        raise KeyError("raised outside jaxcnn")

    monkeypatch.setitem(cli.COMMANDS, "summary", foreign)
    with pytest.raises(KeyError):
        main(["summary"])
    monkeypatch.setitem(cli.COMMANDS, "summary", lambda args: _figures.grid(4, 0))  # jaxcnn's own check
    assert main(["summary"]) == 2


def test_is_user_error_reads_the_raising_frame():
    from jaxcnn import _validate

    with pytest.raises(ValueError) as own:
        _validate.check_choice("x", "scale", ("a", "b"))
    assert cli.is_user_error(own.value)
    with pytest.raises(ValueError) as foreign:
        int("not a number")
    assert not cli.is_user_error(foreign.value)
    assert cli.is_user_error(cli.CLIError("bad flag"))


def test_conv_kernels_come_from_the_parameter_tree():
    params = {
        "conv1": {"kernel": np.zeros((5, 5, 1, 4)), "bias": np.zeros(4)},
        "dense": {"kernel": np.zeros((8, 2))},
        "block": {"conv": {"kernel": np.zeros((3, 4, 8))}, "bn": {"scale": np.zeros(8)}},
    }
    assert [(name, k.shape) for name, k in cli.conv_kernels(params)] == [
        ("conv1", (5, 5, 1, 4)),
        ("block/conv", (3, 4, 8)),
    ]


def test_load_data_goes_through_the_data_registry(monkeypatch):
    import jaxcnn.data as D

    calls = []
    monkeypatch.setattr(D, "load", lambda name, **kw: calls.append((name, kw)) or "dataset")
    assert cli.load_data("synthetic", None, 8) == "dataset"
    assert cli.load_data("Digits", None, 28) == "dataset"
    assert cli.load_data("mnist", "/data/mnist", 28) == "dataset"
    assert calls == [
        ("synthetic", {"input_shape": (8, 8, 1)}),
        ("Digits", {"size": 28}),
        ("mnist", {"path": "/data/mnist"}),
    ]


def test_visualize_plots_are_labelled(quick_run, tmp_path, monkeypatch):
    from jaxcnn import analysis

    figures = {}
    for name in ("plot_filters", "plot_curves"):
        real = getattr(analysis, name)
        monkeypatch.setattr(
            analysis, name, lambda *a, _real=real, _name=name, **k: figures.setdefault(_name, _real(*a, **k))
        )
    assert (
        main(["visualize", "--checkpoint", str(quick_run), "--what", "filters", "--output", str(tmp_path / "f.png")])
        == 0
    )
    assert (
        main(["visualize", "--checkpoint", str(quick_run), "--what", "curves", "--output", str(tmp_path / "c.png")])
        == 0
    )
    filters = figures["plot_filters"]
    assert filters.get_suptitle() == "lwls_cnn conv1: 4 filters 5x5x1" and filters.axes[-1].get_ylabel() == "weight"
    curves = figures["plot_curves"]
    assert curves.get_suptitle() == f"{quick_run.name}: training curves"
    assert all(ax.get_ylabel() and ax.get_xlabel() for ax in curves.axes)


@pytest.fixture(scope="module")
def quick_run_1d(tmp_path_factory):
    pytest.importorskip("mnist1d")
    run = tmp_path_factory.mktemp("quick1d") / "run"
    assert main(["train", "--quick", "--model", "cnn1d", "--data", "mnist1d", "--out", str(run), "--no-progress"]) == 0
    return run


@pytest.mark.parametrize("what", ["filters", "feature-maps"])
def test_visualize_a_1d_model(quick_run_1d, tmp_path, what):
    out = tmp_path / f"{what}.png"
    assert main(["visualize", "--checkpoint", str(quick_run_1d), "--what", what, "--output", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_resume_takes_the_runs_settings_and_refuses_contradicting_flags(tmp_path, capsys):
    run = str(tmp_path / "r")
    assert main(["train", "--out", run, "--no-progress", "--max-steps", "5", "--lr", "3e-3", "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", run, "--resume", "--lr", "0.1", "--no-progress"]) == 2
    assert "--lr 0.1 contradicts the run's config.json (lr=0.003)" in capsys.readouterr().err
    assert main(["train", "--out", run, "--resume", "--no-progress"]) == 0  # the README's command, as written
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == sorted(set(steps))  # resuming does not duplicate step records


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
        (["--val-split", "1.5"], "--val-split must be in [0, 1)"),
        (["--early-stopping", "2", "--val-split", "0"], "--early-stopping needs"),
        (["--batch-size", "5000"], "batch_size=5000 is larger than the training set"),
    ],
)
def test_a_train_that_fails_validation_writes_nothing(tmp_path, capsys, flags, message):
    assert main(["train", "--out", str(tmp_path / "r"), "--no-progress", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_eval_prints_top_k_and_the_confusion_matrix(tmp_path, capsys):
    run = str(tmp_path / "r")
    assert main(["train", "--out", run, "--quick", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", run, "--top-k", "3", "--confusion"]) == 0
    out = capsys.readouterr().out
    rows = [list(map(int, line.split())) for line in out.splitlines()[2:12]]
    assert "top-3" in out and len(rows) == 10 and sum(map(sum, rows)) == 359  # every test image counted once


@pytest.mark.slow
def test_train_api_nnx_reaches_the_linen_runs_accuracy(tmp_path, capsys):
    """The NNX twin starts from the Linen initialization and is trained by the same engine: the same numbers."""
    accs = []
    for api in ("linen", "nnx"):
        assert main(["train", "--api", api, "--epochs", "2", "--out", str(tmp_path / api), "--no-progress"]) == 0
        accs.append(_final_accuracy(capsys.readouterr().out))
    assert accs[1] == pytest.approx(accs[0], abs=1e-6) and accs[0] > 0.8
    assert main(["eval", "--checkpoint", str(tmp_path / "nnx")]) == 0
    assert f"accuracy {100 * accs[1]:.2f}%" in capsys.readouterr().out


def test_init_from_and_eval_weights_read_pytorch_checkpoints(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp
    import optax

    import jaxcnn
    from jaxcnn.interop.torch import to_torch
    from jaxcnn.train import create_train_state

    model = jaxcnn.get_model("lenet5", num_classes=10)
    state = create_train_state(model, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32), seed=7)
    torch.save(to_torch("lenet5", state.variables(), model_kwargs={"num_classes": 10}), tmp_path / "lenet.pt")
    assert main(["eval", "--weights", str(tmp_path / "lenet.pt"), "--model", "lenet5"]) == 0
    out = capsys.readouterr().out
    want = jaxcnn.train.evaluate(model, state, *(lambda d: (d.x_test, d.y_test))(jaxcnn.data.digits(size=28)))
    assert f"accuracy {100 * want['accuracy']:.2f}%" in out
    run = str(tmp_path / "r")
    assert (
        main(
            [
                "train",
                "--model",
                "lenet5",
                "--init-from",
                str(tmp_path / "lenet.pt"),
                "--quick",
                "--out",
                run,
                "--no-progress",
            ]
        )
        == 0
    )
    assert "init from" in capsys.readouterr().out
