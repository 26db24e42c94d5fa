"""The ``jaxcnn`` command: ``train | eval | summary | bench | visualize``.

``jaxcnn train`` with no options trains the LWLS Example 6.3 CNN on the embedded
scikit-learn digits (upsampled to 28x28) and prints the held-out accuracy. Every
run directory gets a ``config.json`` so ``eval`` and ``visualize`` rebuild the
same model and data from it.

Errors in what the user asked for (unknown model, missing data, impossible
shapes, an existing run) end the command with one line on stderr and exit code
2, never a traceback: those are the errors jaxcnn raises on purpose (a ``raise``
statement in a ``jaxcnn`` module, see :func:`is_user_error`). Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import linecache
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

def _batch_split(text: str) -> int | str:
    """``--batch-split``: "auto" or a positive int (checked again by make_train_step)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive int, got {text!r}") from None


#: The exception types jaxcnn raises for bad input (ValueError and TypeError above all).
USER_ERRORS = (ValueError, TypeError, OSError, LookupError, ImportError)
CONFIG = "config.json"


class CLIError(Exception):
    """An error to show as one line (the user's input, not a bug)."""


def is_user_error(err: BaseException) -> bool:
    """True when jaxcnn raised ``err`` on purpose, about the user's input: show it as one line.

    That is a :class:`CLIError`, or one of :data:`USER_ERRORS` whose innermost
    traceback frame is a ``raise`` statement in a ``jaxcnn`` module (jaxcnn's
    argument checks name the argument and the value). The same types raised
    anywhere else (by Python on a bad operation, by JAX, NumPy or Flax) are bugs:
    their traceback is shown.

    Args:
      err: the exception a command raised.

    Returns:
      Whether to print it as one line.
    """
    if isinstance(err, CLIError):
        return True
    if not isinstance(err, USER_ERRORS) or err.__traceback__ is None:
        return False
    tb = err.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno).strip()
    return (module == "jaxcnn" or module.startswith("jaxcnn.")) and line.startswith("raise ")


# ----------------------------------------------------------------------------- arguments


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="lwls_cnn", help="model name (see `jaxcnn summary --list`); default lwls_cnn")
    parser.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE",
        help="extra model option, e.g. --model-arg stem='cifar' --model-arg width=32 (repeatable)",
    )
    parser.add_argument("--dropout", type=float, default=None, help="dropout rate, for models with one")
    parser.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None, help="BatchNorm on/off, for models with the option")


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="digits", help="digits | mnist | mnist1d | cifar10 | synthetic (default digits)")
    parser.add_argument("--data-dir", default=None, help="folder of the data files (mnist, cifar10)")
    parser.add_argument("--image-size", type=int, default=28, help="digits: resize 8x8 to this size (default 28, the LWLS input)")
    parser.add_argument("--seed", type=int, default=0, help="seed of init, data order and dropout (default 0)")


def _distributed_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "several processes (jax.distributed)",
        "Run the same command once per process (host); every process joins process 0's coordinator, "
        "reads its own rows of each global batch, and process 0 writes logs and checkpoints to --out, "
        "which all processes must share. Each flag may also come from an environment variable "
        "(JAXCNN_COORDINATOR, JAXCNN_NUM_PROCESSES, JAXCNN_PROCESS_ID, JAXCNN_DISTRIBUTED=1; "
        "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID are read too).",
    )
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="address of process 0's coordination service")
    g.add_argument("--num-processes", type=int, default=None, help="number of processes in the run")
    g.add_argument("--process-id", type=int, default=None, help="this process's index, 0 .. num-processes - 1")
    g.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize even without the three values above "
                        "(JAX detects them on TPU pods and SLURM/MPI/Kubernetes clusters)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxcnn", description="Convolutional networks in JAX: train, evaluate, inspect, benchmark.")
    sub = p.add_subparsers(dest="command", metavar="{train,eval,summary,bench,visualize}")
    sub.required = True

    t = sub.add_parser("train", help="train a model (default: LWLS CNN on the embedded digits)")
    _model_args(t)
    _data_args(t)
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--optimizer", default="adam", help="sgd | momentum | nesterov | adam | adamw | adagrad | rmsprop")
    t.add_argument("--lr", type=float, default=2e-3, help="(peak) learning rate, default 2e-3")
    t.add_argument("--schedule", default="cosine", help="constant | cosine | warmup_cosine | step (default cosine)")
    t.add_argument("--warmup-steps", type=int, default=0)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--clip-norm", type=float, default=None)
    t.add_argument("--loss", default="cross_entropy", help="cross_entropy | mse")
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--strategy", default=None, help="jit | pmap | sharded | shard_map (default: sharded on several devices, else jit)")
    t.add_argument("--steps-per-call", type=int, default=1, help="training steps per compiled dispatch")
    t.add_argument("--batch-split", type=_batch_split, default="auto",
                   help="each step's gradient summed over this many parts of the batch, which XLA:CPU runs "
                        "concurrently; 'auto' (default): parts of ~32 examples on CPU for models without BatchNorm")
    t.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16: bfloat16 compute, float32 params and optimizer")
    t.add_argument("--augment", action="store_true", help="random crop (pad 2) and horizontal flip while training")
    t.add_argument("--out", default=None, help="run directory (default runs/<model>-<data>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--checkpoint-every", type=int, default=None, help="also checkpoint every N steps")
    t.add_argument("--keep", type=int, default=3, help="checkpoints to keep (default 3)")
    t.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE")
    t.add_argument("--quick", action="store_true", help="a smoke run: 1 epoch on at most 512 training examples")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--remainder", default="drop", choices=("drop", "pad"),
                   help="the last partial batch of an epoch: drop it, or pad it and mask the padding (exact, BatchNorm too)")
    t.add_argument("--model-parallel", type=int, default=1, metavar="K",
                   help="strategy sharded: split large kernels' output channels over K devices (a data x model mesh)")
    t.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in all (smoke tests); the schedule still spans --epochs")
    _distributed_args(t)

    e = sub.add_parser("eval", help="evaluate a run's checkpoint on its test set")
    e.add_argument("--checkpoint", required=True, help="run directory (or its checkpoints/ folder)")
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    e.add_argument("--data", default=None, help="evaluate on another data set than the run's")
    e.add_argument("--data-dir", default=None)

    s = sub.add_parser("summary", help="per-layer table: output shape, parameters, MACs")
    _model_args(s)
    s.add_argument("--input-shape", default="28,28,1", help="one example's shape, e.g. 32,32,3 (default 28,28,1)")
    s.add_argument("--num-classes", type=int, default=None)
    s.add_argument("--markdown", action="store_true", help="print a markdown table")
    s.add_argument("--list", action="store_true", help="list the model names and exit")

    b = sub.add_parser("bench", help="benchmarks against PyTorch and plain Flax (benchmarks.run, from a checkout's "
                                 "root); results in the current folder or --out")
    b.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for benchmarks.run, e.g. --quick")

    v = sub.add_parser("visualize", help="plot a run's filters, feature maps or training curves")
    v.add_argument("--checkpoint", required=True, help="run directory")
    v.add_argument("--what", required=True, choices=("filters", "feature-maps", "curves"))
    v.add_argument("--layer", default=None, help="feature-maps: layer name (default: first conv)")
    v.add_argument("--index", type=int, default=0, help="feature-maps: which test example")
    v.add_argument("--output", default=None, help="PNG path (default <run>/<what>.png)")
    return p


# ----------------------------------------------------------------------------- helpers


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string: --model-arg stem=cifar


def model_kwargs(name: str, args: argparse.Namespace, num_classes: int | None, strategy: str | None, precision: str) -> dict[str, Any]:
    """The options for ``get_model(name, ...)`` from the command line, checked against the model."""
    from jaxcnn.models import registry

    accepted = registry.options(name)
    kw: dict[str, Any] = {}
    for item in args.model_arg:
        if "=" not in item:
            raise CLIError(f"--model-arg must look like KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        kw[key.strip().replace("-", "_")] = _parse_value(value.strip())
    if num_classes is not None and "num_classes" in accepted:
        kw.setdefault("num_classes", num_classes)
    for flag, option in ((args.dropout, "dropout_rate"), (args.batch_norm, "batch_norm")):
        if flag is not None:
            if option not in accepted:
                raise CLIError(f"model {name!r} has no {option} option (it accepts: {', '.join(sorted(accepted))})")
            kw[option] = flag
    if strategy in ("pmap", "shard_map") and "axis_name" in accepted:
        from jaxcnn.data.sharding import DATA_AXIS

        kw["axis_name"] = DATA_AXIS
    if precision == "bf16":
        if "dtype" not in accepted:
            raise CLIError(f"model {name!r} has no dtype option, so --precision bf16 cannot apply")
        kw["dtype"] = "bfloat16"
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise CLIError(f"model {name!r} does not accept {unknown}; its options: {', '.join(sorted(accepted))}")
    return kw


def build_model(name: str, kw: dict[str, Any]):
    from jaxcnn.models import get_model

    kw = dict(kw)
    if kw.get("dtype") == "bfloat16":
        import jax.numpy as jnp

        kw["dtype"] = jnp.bfloat16
    return get_model(name, **kw)


#: How ``--data-dir`` and ``--image-size`` become the options of each loader of :func:`jaxcnn.data.load`.
DATA_OPTIONS = {
    "digits": lambda data_dir, image_size: {"size": image_size},
    "mnist": lambda data_dir, image_size: {"path": data_dir},
    "cifar10": lambda data_dir, image_size: {"path": data_dir},
    "mnist1d": lambda data_dir, image_size: {},
    "synthetic": lambda data_dir, image_size: {"input_shape": (image_size, image_size, 1)},
}


def load_data(name: str, data_dir: str | None, image_size: int):
    """The data set by name through :func:`jaxcnn.data.load`; its train/test split is fixed (not ``--seed``)."""
    from jaxcnn import data as D

    if name.lower() == "cifar10" and data_dir is None:
        raise CLIError("--data cifar10 needs --data-dir (a folder with data_batch_1..5 and test_batch)")
    options = DATA_OPTIONS.get(name.lower(), lambda data_dir, image_size: {})
    return D.load(name, **options(data_dir, image_size))


def _augmenter(dataset):
    """Random crop (pad 2) + horizontal flip for 2-D images; an error for other inputs."""
    from jaxcnn import data as D

    if len(dataset.input_shape) != 3:
        raise CLIError(f"--augment needs 2-D images, but {dataset.name} examples have shape {dataset.input_shape}")

    def augment(key, x):
        import jax

        k1, k2 = jax.random.split(key)
        return D.random_flip(k2, D.random_crop(k1, x, 2))

    return augment


def _run_dir(args: argparse.Namespace) -> Path:
    if args.out:
        return Path(args.out)
    return Path("runs") / f"{args.model}-{args.data}-{time.strftime('%Y%m%d-%H%M%S')}"


def _read_config(run: Path) -> dict[str, Any]:
    run = run.parent if run.name == "checkpoints" else run
    path = run / CONFIG
    if not path.is_file():
        raise CLIError(f"{str(run)!r} is not a jaxcnn run directory (no {CONFIG}); pass the --out folder of `jaxcnn train`")
    try:
        return {**json.loads(path.read_text()), "run": str(run)}
    except json.JSONDecodeError as e:
        raise CLIError(f"{str(path)!r} is not valid JSON ({e})") from None


def build_optimizer(cfg: dict[str, Any], num_train: int):
    """The run's optax optimizer from its config (train and eval must build the same one)."""
    from jaxcnn.train import make_optimizer, make_schedule

    steps = max(cfg["epochs"] * (num_train // cfg["batch_size"]), 1)
    sched = make_schedule(cfg["schedule"], cfg["lr"], total_steps=steps, warmup_steps=cfg.get("warmup_steps", 0),
                          decay_steps=max(steps // 3, 1))
    return make_optimizer(cfg["optimizer"], sched, weight_decay=cfg["weight_decay"], clip_norm=cfg["clip_norm"])


def _restore(cfg: dict[str, Any], step: int | None = None):
    """Model, data set and the restored state of a run directory."""
    import jax
    import jax.numpy as jnp

    from jaxcnn.train import Checkpointer, create_train_state

    model = build_model(cfg["model"], cfg["model_kwargs"])
    ds = load_data(cfg["data"], cfg.get("data_dir"), cfg["image_size"])
    tx = build_optimizer(cfg, ds.num_train)
    template = create_train_state(model, tx, jax.ShapeDtypeStruct((1, *ds.input_shape), jnp.float32))
    state, meta = Checkpointer(Path(cfg["run"]) / "checkpoints").restore(template, step)
    return model, ds, state, meta


# ----------------------------------------------------------------------------- commands


def _join_processes(args: argparse.Namespace) -> bool:
    """``jax.distributed.initialize`` from the flags/environment, before any other JAX call.

    Returns whether this is a multi-process run.
    """
    from jaxcnn.train import distributed

    if not distributed.initialize(args.coordinator, args.num_processes, args.process_id, auto=args.distributed):
        return False
    import jax

    if jax.process_count() > 1 and not args.out:
        raise CLIError("a multi-process run needs --out: the same run directory for every process, on a file "
                       "system they all share (process 0 writes it)")
    return True


def cmd_train(args: argparse.Namespace) -> int:
    multi = _join_processes(args)
    from jaxcnn.train import default_strategy, fit
    from jaxcnn.train.distributed import barrier, is_primary

    ds = load_data(args.data, args.data_dir, args.image_size)
    if args.quick:
        n = min(512, ds.num_train)
        ds = type(ds)(ds.x_train[:n], ds.y_train[:n], ds.x_test, ds.y_test, ds.num_classes, ds.name,
                      ds.description + f"; --quick: first {n} training examples")
        args.epochs = 1
    strategy = args.strategy or default_strategy()
    kw = model_kwargs(args.model, args, ds.num_classes, strategy, args.precision)
    model = build_model(args.model, kw)
    loss: Any = args.loss
    if args.label_smoothing:
        from jaxcnn.train import get_loss

        loss = get_loss(args.loss, label_smoothing=args.label_smoothing)
    out = _run_dir(args)
    config = {
        "model": args.model, "model_kwargs": kw, "data": args.data, "data_dir": args.data_dir,
        "image_size": args.image_size, "seed": args.seed, "optimizer": args.optimizer, "lr": args.lr,
        "schedule": args.schedule, "warmup_steps": args.warmup_steps, "weight_decay": args.weight_decay,
        "clip_norm": args.clip_norm,
        "loss": args.loss, "label_smoothing": args.label_smoothing, "epochs": args.epochs,
        "batch_size": args.batch_size, "strategy": strategy, "precision": args.precision,
    }
    if (out / CONFIG).is_file() and not args.resume:
        raise CLIError(f"{str(out)!r} already holds a run; pass --resume to continue it or choose another --out")
    if args.resume:
        old = _read_config(out)
        changed = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v}
        if changed:
            raise CLIError(f"--resume with settings that differ from the run's {CONFIG}: {changed}")
    tx = build_optimizer(config, ds.num_train)
    if multi:
        barrier("jaxcnn-train-config-checked")  # every process has checked --out before process 0 writes it
    if is_primary():
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        print(f"jaxcnn train: {args.model} on {ds.name} ({ds.num_train} train / {ds.num_test} test), "
              f"{strategy} on {_device_summary()}; run directory {out}")
        print(f"  data: {ds.description}")
    t0 = time.perf_counter()
    result = fit(
        model, ds, tx, loss=loss, epochs=args.epochs, batch_size=args.batch_size, strategy=strategy, seed=args.seed,
        out_dir=out, checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep, resume=args.resume,
        early_stopping=args.early_stopping, steps_per_call=args.steps_per_call,
        augment=_augmenter(ds) if args.augment else None, progress=not args.no_progress, max_steps=args.max_steps,
        remainder=args.remainder, model_parallel=args.model_parallel, batch_split=args.batch_split,
    )
    final = result.final
    if not result.history:  # a resumed run that had already finished: evaluate its checkpoint
        from jaxcnn.train import evaluate

        res = evaluate(model, result.state, ds.x_test, ds.y_test, loss=loss)
        final = {"test_accuracy": res.get("accuracy"), "test_loss": res["loss"]}
    acc = final.get("test_accuracy")
    acc_text = "n/a" if acc is None else f"{100 * acc:.2f}%"
    if not is_primary():
        return 0
    print(f"final test accuracy: {acc_text} (test loss {final.get('test_loss', float('nan')):.4f}, "
          f"{int(result.state.step)} steps, {time.perf_counter() - t0:.1f} s)")
    print(f"  logs: {out / 'metrics.jsonl'}, curves: {out / 'curves.png'}, checkpoints: {out / 'checkpoints'}")
    return 0


def _device_summary() -> str:
    import jax

    devs = jax.devices()
    text = f"{len(devs)} {devs[0].platform.upper()} device{'s' if len(devs) > 1 else ''}"
    if jax.process_count() > 1:
        text += f" in {jax.process_count()} processes"
    return text


def cmd_eval(args: argparse.Namespace) -> int:
    from jaxcnn.train import evaluate

    cfg = _read_config(Path(args.checkpoint))
    if args.data:
        cfg["data"], cfg["data_dir"] = args.data, args.data_dir
    model, ds, state, meta = _restore(cfg, args.step)
    res = evaluate(model, state, ds.x_test, ds.y_test, loss=cfg["loss"])
    acc = res.get("accuracy")
    print(f"{cfg['model']} step {int(state.step)} on {ds.name} test ({res['count']} examples): "
          f"loss {res['loss']:.4f}" + ("" if acc is None else f", accuracy {100 * acc:.2f}%"))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from jaxcnn.analysis import summary
    from jaxcnn.models import list_models

    if args.list:
        print("\n".join(list_models()))
        return 0
    try:
        shape = tuple(int(s) for s in args.input_shape.replace("x", ",").split(","))
    except ValueError:
        raise CLIError(f"--input-shape must be comma-separated ints such as 28,28,1, got {args.input_shape!r}") from None
    kw = model_kwargs(args.model, args, args.num_classes, None, "fp32")
    table = summary(build_model(args.model, kw), shape)
    print(table.to_markdown() if args.markdown else table.to_text())
    return 0


BENCH_HOWTO = (
    "the benchmarks live in a source checkout of jaxcnn (benchmarks/run.py), not in the installed "
    "package; from the checkout's root run `python -m benchmarks.run ARGS` (or `python -m jaxcnn.cli bench ARGS`)"
)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run ``benchmarks.run`` (importable from a checkout's root); results go to ``--out``, default the current folder."""
    try:
        bench_run = importlib.import_module("benchmarks.run")
    except ModuleNotFoundError as err:
        if err.name not in ("benchmarks", "benchmarks.run"):
            raise  # a module the benchmarks need is missing: not the user's mistake
        raise CLIError(BENCH_HOWTO) from None
    bench_args = args.bench_args[1:] if args.bench_args[:1] == ["--"] else list(args.bench_args)
    if not any(a == "--out" or a.startswith("--out=") or a == "--render" or a.startswith("--render=")
               for a in bench_args):
        bench_args += ["--out", os.getcwd()]  # never into the checkout or the installed package
    return int(bench_run.main(bench_args) or 0)


def conv_kernels(params: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """``(layer path, kernel)`` of every convolution in a parameter tree, in the tree's own order.

    A convolution is a module whose ``"kernel"`` has rank 3 or more (``(*window,
    C_in, C_out)``); the path is the module's, ``"/"``-joined (``"conv1"``,
    ``"layer1_block1/conv1"``), as :func:`jaxcnn.analysis.plot_feature_maps` takes it.
    """
    for key, value in params.items():
        if isinstance(value, Mapping):
            yield from conv_kernels(value, (*prefix, str(key)))
        elif key == "kernel" and len(getattr(value, "shape", ())) >= 3:
            yield "/".join(prefix), value


def cmd_visualize(args: argparse.Namespace) -> int:
    import numpy as np

    from jaxcnn import analysis

    run = Path(args.checkpoint)
    cfg = _read_config(run)
    run = Path(cfg["run"])
    output = Path(args.output) if args.output else run / f"{args.what}.png"
    if args.what == "curves":
        analysis.plot_curves(run / "metrics.jsonl", output, title=run.name)
    else:
        model, ds, state, _ = _restore(cfg)
        kernels = list(conv_kernels(state.params))
        if not kernels:
            raise CLIError(f"model {cfg['model']!r} has no convolution kernels to show")
        if args.what == "filters":
            name, kernel = kernels[0]
            kernel = np.asarray(kernel)
            if kernel.ndim == 4 and kernel.shape[-2] not in (1, 3):
                kernel = kernel[..., :1, :]  # the first input channel of each filter
            analysis.plot_filters(kernel, output, layer=name, scale="shared",
                                  title=f"{cfg['model']} {name}: {kernel.shape[-1]} filters "
                                        f"{'x'.join(map(str, kernel.shape[:-1]))}")
        else:
            layer = args.layer or kernels[0][0]
            if not 0 <= args.index < ds.num_test:
                raise CLIError(f"--index must be in [0, {ds.num_test}), got {args.index}")
            analysis.plot_feature_maps(model, state.variables(), ds.x_test[args.index], layer=layer, path=output)
    print(f"wrote {output}")
    return 0


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "summary": cmd_summary, "bench": cmd_bench, "visualize": cmd_visualize}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxcnn`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after "bench" belongs to benchmarks.run, options included
        argv = ["bench", "--", *argv[1:]] if len(argv) > 1 and argv[1] != "--" else argv
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CLIError as e:
        print(f"jaxcnn {args.command}: error: {e}", file=sys.stderr)
    except USER_ERRORS as e:
        if os.environ.get("JAXCNN_DEBUG") or not is_user_error(e):
            raise
        print(f"jaxcnn {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"jaxcnn {args.command}: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
