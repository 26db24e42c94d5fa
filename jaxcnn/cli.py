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
import dataclasses
import importlib
import json
import linecache
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxcnn._cli_parser import build_parser, given_options
from jaxcnn._cli_runs import (
    CONFIG,
    RUN_FLAGS,
    CLIError,
    augmenter,
    build_model,
    build_optimizer,
    check_train_flags,
    conv_kernels,
    initial_state,
    load_data,
    model_kwargs,
    read_config,
    remove_unstarted_run,
    restore,
    resume_settings,
    run_dir,
    train_examples,
)

#: The earlier private names (tests/test_distributed.py restores a run with them).
_read_config, _restore = read_config, restore

__all__ = ["CLIError", "build_parser", "conv_kernels", "is_user_error", "load_data", "main"]


#: The exception types jaxcnn raises for bad input (ValueError and TypeError above all).
USER_ERRORS = (ValueError, TypeError, OSError, LookupError, ImportError)


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
        raise CLIError(
            "a multi-process run needs --out: the same run directory for every process, on a file "
            "system they all share (process 0 writes it)"
        )
    return True


def cmd_train(args: argparse.Namespace) -> int:
    multi = _join_processes(args)
    from jaxcnn.train import TensorBoard, default_strategy, fit
    from jaxcnn.train.distributed import barrier, is_primary

    out = run_dir(args)
    resuming = args.resume or args.resume_from is not None
    recorded_kw = None
    if resuming:
        recorded_kw = resume_settings(args, read_config(out), getattr(args, "given", set()))
    elif (out / CONFIG).is_file():
        raise CLIError(f"{str(out)!r} already holds a run; pass --resume to continue it or choose another --out")
    check_train_flags(args)
    ds = load_data(args.data, args.data_dir, args.image_size)
    if args.quick:
        n = min(512, ds.num_train)
        ds = dataclasses.replace(
            ds,
            x_train=ds.x_train[:n],
            y_train=ds.y_train[:n],
            description=ds.description + f"; --quick: first {n} training examples",
        )
        args.epochs = 1
    strategy = args.strategy or default_strategy()
    kw = model_kwargs(args.model, args, ds.num_classes, strategy, args.precision)
    if recorded_kw is not None:
        kw = recorded_kw
    model = build_model(args.model, kw, args.api, ds.input_shape, args.seed)
    loss: Any = args.loss
    if args.label_smoothing:
        from jaxcnn.train import get_loss

        loss = get_loss(args.loss, label_smoothing=args.label_smoothing)
    config = {key: getattr(args, dest) for key, dest in RUN_FLAGS.items()}
    config.update(model_kwargs=kw, strategy=strategy)
    if resuming:
        old = read_config(out)
        changed = {k: (old.get(k), v) for k, v in config.items() if k in old and old[k] != v}
        if changed:
            raise CLIError(f"--resume with settings that differ from the run's {CONFIG}: {changed}")
    tx = build_optimizer(config, train_examples(config, ds))
    state = None if resuming else initial_state(model, tx, ds.input_shape, args.seed, args.init_from)
    if multi:
        barrier("jaxcnn-train-config-checked")  # every process has checked --out before process 0 writes it
    created: list[Path] = []
    if is_primary():
        if not resuming:
            out.mkdir(parents=True, exist_ok=True)
            (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
            created.append(out / CONFIG)
        print(
            f"jaxcnn train: {args.model} on {ds.name} ({ds.num_train} train / {ds.num_test} test), "
            f"{strategy} on {_device_summary()}; run directory {out}"
        )
        print(f"  data: {ds.description}")
    max_steps = args.max_steps
    if resuming and max_steps is not None:  # --max-steps counts from step 0 of the run, fit's from where it starts
        from jaxcnn.train import Checkpointer

        start = args.resume_from or Checkpointer(out / "checkpoints").latest_verified_step() or 0
        if max_steps <= start:
            raise CLIError(f"--max-steps {max_steps}: the run in {str(out)!r} is already at step {start}")
        max_steps -= start
    t0 = time.perf_counter()
    try:
        result = fit(
            model,
            ds,
            tx,
            state=state,
            loss=loss,
            epochs=args.epochs,
            batch_size=args.batch_size,
            strategy=strategy,
            seed=args.seed,
            out_dir=out,
            checkpoint_every=args.checkpoint_every,
            keep_checkpoints=args.keep,
            resume=args.resume,
            resume_from=args.resume_from,
            early_stopping=args.early_stopping,
            validation=args.val_split or None,
            steps_per_call=args.steps_per_call,
            augment=augmenter(ds) if args.augment else None,
            progress=not args.no_progress,
            max_steps=max_steps,
            remainder=args.remainder,
            model_parallel=args.model_parallel,
            batch_split=args.batch_split,
            grad_accum=args.grad_accum,
            callbacks=[TensorBoard(out / "tb")] if args.tensorboard and is_primary() else [],
        )
    except BaseException:
        if is_primary() and not resuming:
            remove_unstarted_run(out, created)
        raise
    if not is_primary():
        return 0
    test = result.test or {}
    acc = "n/a" if test.get("accuracy") is None else f"{100 * test['accuracy']:.2f}%"
    best = "" if result.best is None else f"; returned the best epoch, {result.best['epoch'] + 1}"
    print(
        f"final test accuracy: {acc} (test loss {test.get('loss', float('nan')):.4f}, "
        f"{int(result.state.step)} steps, {time.perf_counter() - t0:.1f} s{best})"
    )
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

    if (args.checkpoint is None) == (args.weights is None):
        raise CLIError("give exactly one of --checkpoint RUN_DIR and --weights FILE (with --model)")
    if args.weights is not None:
        model, ds, state, cfg = weights_to_evaluate(args)
    else:
        cfg = read_config(Path(args.checkpoint))
        if args.data:
            cfg["data"], cfg["data_dir"] = args.data, args.data_dir
        model, ds, state, _ = restore(cfg, args.step)
    top_k = (args.top_k,) if 0 < args.top_k < ds.num_classes else ()
    res = evaluate(model, state, ds.x_test, ds.y_test, loss=cfg["loss"], top_k=top_k, confusion=args.confusion)
    acc = res.get("accuracy")
    extra = "".join(f", top-{k} {100 * res[f'top{k}_accuracy']:.2f}%" for k in top_k)
    step = f" step {int(state.step)}" if hasattr(state, "step") else ""
    print(
        f"{cfg['model']}{step} on {ds.name} test ({res['count']} examples): "
        f"loss {res['loss']:.4f}" + ("" if acc is None else f", accuracy {100 * acc:.2f}%") + extra
    )
    if args.confusion:
        print("confusion matrix (rows: true class, columns: predicted class):")
        for row in res["confusion"]:
            print("  " + " ".join(f"{int(v):5d}" for v in row))
    return 0


def weights_to_evaluate(args: argparse.Namespace):
    """``jaxcnn eval --weights FILE --model NAME``: the model, data and variables (strict: every key must fit)."""
    from jaxcnn.interop.torch import load_variables

    if args.model is None:
        raise CLIError("--weights needs --model, the zoo model the file is for (e.g. --model resnet18)")
    ds = load_data(args.data or "digits", args.data_dir, args.image_size)
    args.dropout = args.batch_norm = None
    kw = model_kwargs(args.model, args, ds.num_classes, None, "fp32")
    model = build_model(args.model, kw)
    variables = load_variables(args.weights, model, strict=True)
    return model, ds, variables, {"model": args.model, "loss": "cross_entropy"}


def cmd_summary(args: argparse.Namespace) -> int:
    from jaxcnn.analysis import summary
    from jaxcnn.models import list_models

    if args.list:
        print("\n".join(list_models()))
        return 0
    try:
        shape = tuple(int(s) for s in args.input_shape.replace("x", ",").split(","))
    except ValueError:
        raise CLIError(
            f"--input-shape must be comma-separated ints such as 28,28,1, got {args.input_shape!r}"
        ) from None
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
    if not any(
        a == "--out" or a.startswith("--out=") or a == "--render" or a.startswith("--render=") for a in bench_args
    ):
        bench_args += ["--out", os.getcwd()]  # never into the checkout or the installed package
    return int(bench_run.main(bench_args) or 0)


def cmd_visualize(args: argparse.Namespace) -> int:
    import numpy as np

    from jaxcnn import analysis

    run = Path(args.checkpoint)
    cfg = read_config(run)
    run = Path(cfg["run"])
    output = Path(args.output) if args.output else run / f"{args.what}.png"
    if args.what == "curves":
        analysis.plot_curves(run / "metrics.jsonl", output, title=run.name)
    else:
        model, ds, state, _ = restore(cfg)
        kernels = list(conv_kernels(state.params))
        if not kernels:
            raise CLIError(f"model {cfg['model']!r} has no convolution kernels to show")
        if args.what == "filters":
            name, kernel = kernels[0]
            kernel = np.asarray(kernel)
            if kernel.ndim == 4 and kernel.shape[-2] not in (1, 3):
                kernel = kernel[..., :1, :]  # the first input channel of each filter
            analysis.plot_filters(
                kernel,
                output,
                layer=name,
                scale="shared",
                title=f"{cfg['model']} {name}: {kernel.shape[-1]} filters {'x'.join(map(str, kernel.shape[:-1]))}",
            )
        else:
            layer = args.layer or kernels[0][0]
            if not 0 <= args.index < ds.num_test:
                raise CLIError(f"--index must be in [0, {ds.num_test}), got {args.index}")
            analysis.plot_feature_maps(model, state.variables(), ds.x_test[args.index], layer=layer, path=output)
    print(f"wrote {output}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "summary": cmd_summary,
    "bench": cmd_bench,
    "visualize": cmd_visualize,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxcnn`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after "bench" belongs to benchmarks.run, options included
        argv = ["bench", "--", *argv[1:]] if len(argv) > 1 and argv[1] != "--" else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    args.given = given_options(parser, argv)
    from jaxcnn.train.callbacks.control import TrainingDiverged
    from jaxcnn.train.oom import OutOfMemoryError

    try:
        return COMMANDS[args.command](args)
    except CLIError as e:
        print(f"jaxcnn {args.command}: error: {e}", file=sys.stderr)
    except TrainingDiverged as e:
        print(f"jaxcnn {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OutOfMemoryError as e:
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
