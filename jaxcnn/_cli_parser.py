"""The ``jaxcnn`` command line: every subcommand's flags (:func:`build_parser`); the commands are in :mod:`jaxcnn.cli`."""

from __future__ import annotations

import argparse


def _batch_split(text: str) -> int | str:
    """``--batch-split``: "auto" or a positive int (checked again by make_train_step)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive int, got {text!r}") from None


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="lwls_cnn", help="model name (see `jaxcnn summary --list`); default lwls_cnn"
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra model option, e.g. --model-arg stem='cifar' --model-arg width=32 (repeatable)",
    )
    parser.add_argument("--dropout", type=float, default=None, help="dropout rate, for models with one")
    parser.add_argument(
        "--batch-norm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="BatchNorm on/off, for models with the option",
    )


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", default="digits", help="digits | mnist | mnist1d | cifar10 | synthetic (default digits)"
    )
    parser.add_argument("--data-dir", default=None, help="folder of the data files (mnist, cifar10)")
    parser.add_argument(
        "--image-size", type=int, default=28, help="digits: resize 8x8 to this size (default 28, the LWLS input)"
    )
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
    g.add_argument(
        "--coordinator", default=None, metavar="HOST:PORT", help="address of process 0's coordination service"
    )
    g.add_argument("--num-processes", type=int, default=None, help="number of processes in the run")
    g.add_argument("--process-id", type=int, default=None, help="this process's index, 0 .. num-processes - 1")
    g.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize even without the three values above "
        "(JAX detects them on TPU pods and SLURM/MPI/Kubernetes clusters)",
    )


def given_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The ``dest`` of every option written on the command line ``argv`` (``--lr 0.1`` or ``--lr=0.1``)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sub = subparsers[0].choices.get(command) if subparsers and command else None
    by_flag = {flag: action.dest for action in (sub or parser)._actions for flag in action.option_strings}
    return {by_flag[a.split("=", 1)[0]] for a in argv if a.split("=", 1)[0] in by_flag}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxcnn", description="Convolutional networks in JAX: train, evaluate, inspect, benchmark."
    )
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
    t.add_argument(
        "--strategy",
        default=None,
        help="jit | pmap | sharded | shard_map (default: sharded on several devices, else jit)",
    )
    t.add_argument("--steps-per-call", type=int, default=1, help="training steps per compiled dispatch")
    t.add_argument(
        "--batch-split",
        type=_batch_split,
        default="auto",
        help="each step's gradient summed over this many parts of the batch, which XLA:CPU runs "
        "concurrently; 'auto' (default): parts of ~32 examples on CPU for models without BatchNorm",
    )
    t.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="bf16: bfloat16 compute, float32 params and optimizer",
    )
    t.add_argument("--augment", action="store_true", help="random crop (pad 2) and horizontal flip while training")
    t.add_argument("--out", default=None, help="run directory (default runs/<model>-<data>-<time>)")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest checkpoint that verifies, with the settings of its "
        "config.json (flags that contradict them are an error)",
    )
    t.add_argument("--resume-from", type=int, default=None, metavar="STEP", help="resume from this step's checkpoint")
    t.add_argument(
        "--val-split",
        type=float,
        default=0.1,
        help="fraction of the training set held out (stratified, seeded) for per-epoch validation and early "
        "stopping; 0 for none. The test set is evaluated once, after training (default 0.1)",
    )
    t.add_argument(
        "--grad-accum",
        type=int,
        default=1,
        metavar="K",
        help="accumulate gradients over K micro-batches per step (the batch's update in the memory of a K-th)",
    )
    t.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files to <out>/tb")
    t.add_argument(
        "--init-from",
        default=None,
        metavar="FILE",
        help="start from a PyTorch checkpoint (.pt/.pth/.safetensors, torchvision key names); layers it lacks "
        "or whose shape differs (a new head) keep their initialization, and are listed",
    )
    t.add_argument(
        "--api",
        default="linen",
        choices=("linen", "nnx"),
        help="build the model as a Flax Linen module (default) or as its Flax NNX twin (jaxcnn.nnx)",
    )
    t.add_argument("--checkpoint-every", type=int, default=None, help="also checkpoint every N steps")
    t.add_argument("--keep", type=int, default=3, help="checkpoints to keep (default 3)")
    t.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE")
    t.add_argument("--quick", action="store_true", help="a smoke run: 1 epoch on at most 512 training examples")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument(
        "--remainder",
        default="drop",
        choices=("drop", "pad"),
        help="the last partial batch of an epoch: drop it, or pad it and mask the padding (exact, BatchNorm too)",
    )
    t.add_argument(
        "--model-parallel",
        type=int,
        default=1,
        metavar="K",
        help="strategy sharded: split large kernels' output channels over K devices (a data x model mesh)",
    )
    t.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop after this many steps in all (smoke tests); the schedule still spans --epochs",
    )
    _distributed_args(t)

    e = sub.add_parser("eval", help="evaluate a run's checkpoint on its test set")
    e.add_argument("--checkpoint", default=None, help="run directory (or its checkpoints/ folder)")
    e.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="instead of a run: a PyTorch checkpoint for --model (torchvision key names), evaluated on --data",
    )
    e.add_argument("--model", default=None, help="with --weights: the zoo model the file is for")
    e.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="with --weights")
    e.add_argument("--image-size", type=int, default=28, help="with --weights and --data digits")
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    e.add_argument("--data", default=None, help="evaluate on another data set than the run's")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--top-k", type=int, default=5, help="also report top-K accuracy (default 5; 0 for none)")
    e.add_argument("--confusion", action="store_true", help="print the confusion matrix (rows: true class)")

    s = sub.add_parser("summary", help="per-layer table: output shape, parameters, MACs")
    _model_args(s)
    s.add_argument("--input-shape", default="28,28,1", help="one example's shape, e.g. 32,32,3 (default 28,28,1)")
    s.add_argument("--num-classes", type=int, default=None)
    s.add_argument("--markdown", action="store_true", help="print a markdown table")
    s.add_argument("--list", action="store_true", help="list the model names and exit")

    b = sub.add_parser(
        "bench",
        help="benchmarks against PyTorch and plain Flax (benchmarks.run, from a checkout's "
        "root); results in the current folder or --out",
    )
    b.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments for benchmarks.run, e.g. --quick")

    v = sub.add_parser("visualize", help="plot a run's filters, feature maps or training curves")
    v.add_argument("--checkpoint", required=True, help="run directory")
    v.add_argument("--what", required=True, choices=("filters", "feature-maps", "curves"))
    v.add_argument("--layer", default=None, help="feature-maps: layer name (default: first conv)")
    v.add_argument("--index", type=int, default=0, help="feature-maps: which test example")
    v.add_argument("--output", default=None, help="PNG path (default <run>/<what>.png)")
    return p
