"""What the ``jaxcnn`` commands build from flags and run directories: model, data, optimizer, restored state.

A run directory holds ``config.json`` (the settings of ``jaxcnn train``), so
``eval`` and ``visualize`` rebuild the same model, data set and optimizer from it.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

CONFIG = "config.json"


class CLIError(Exception):
    """An error to show as one line (the user's input, not a bug)."""


def parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string: --model-arg stem=cifar


def model_kwargs(
    name: str, args: argparse.Namespace, num_classes: int | None, strategy: str | None, precision: str
) -> dict[str, Any]:
    """The options for ``get_model(name, ...)`` from the command line, checked against the model."""
    from jaxcnn.models import registry

    accepted = registry.options(name)
    kw: dict[str, Any] = {}
    for item in args.model_arg:
        if "=" not in item:
            raise CLIError(f"--model-arg must look like KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        kw[key.strip().replace("-", "_")] = parse_value(value.strip())
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


def build_model(name: str, kw: dict[str, Any], api: str = "linen", input_shape: Any = None, seed: int = 0):
    """``jaxcnn.get_model(name, **kw)``; with ``api="nnx"`` its NNX twin built for ``(1, *input_shape)``."""
    from jaxcnn import get_model

    kw = dict(kw)
    if kw.get("dtype") == "bfloat16":
        import jax.numpy as jnp

        kw["dtype"] = jnp.bfloat16
    if api != "nnx":
        return get_model(name, **kw)
    # The NNX twin starts from the Linen model's initial values for this seed, so
    # `--api nnx` and `--api linen` train the same numbers.
    import jax
    import jax.numpy as jnp
    import optax

    from jaxcnn.nnx import from_linen
    from jaxcnn.train import create_train_state

    sample = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    variables = create_train_state(get_model(name, **kw), optax.identity(), sample, seed=seed).variables()
    return from_linen(get_model(name, api="nnx", rngs=seed, input_shape=(1, *input_shape), **kw), variables)


def initial_state(model: Any, tx: Any, input_shape: tuple, seed: int, init_from: str | None):
    """A fresh train state, or (``init_from``) one whose layers come from a PyTorch checkpoint file.

    Non-strict: the layers the file lacks, or holds with another shape (a new
    head), keep their initialization and are printed.
    """
    if init_from is None:
        return None
    import jax
    import jax.numpy as jnp

    from jaxcnn.interop.torch import load_variables
    from jaxcnn.train import create_train_state

    fresh = create_train_state(model, tx, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32), seed=seed)
    variables, report = load_variables(init_from, model, strict=False, variables=fresh.variables())
    print(f"  init from {init_from}: {report}")
    return create_train_state(
        model,
        tx,
        jax.ShapeDtypeStruct((1, *input_shape), jnp.float32),
        seed=seed,
        params=variables["params"],
        batch_stats=variables.get("batch_stats"),
    )


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


def augmenter(dataset):
    """Random crop (pad 2) + horizontal flip for 2-D images; an error for other inputs."""
    from jaxcnn import data as D

    if len(dataset.input_shape) != 3:
        raise CLIError(f"--augment needs 2-D images, but {dataset.name} examples have shape {dataset.input_shape}")

    def augment(key, x):
        import jax

        k1, k2 = jax.random.split(key)
        return D.random_flip(k2, D.random_crop(k1, x, 2))

    return augment


def run_dir(args: argparse.Namespace) -> Path:
    if args.out:
        return Path(args.out)
    return Path("runs") / f"{args.model}-{args.data}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_config(run: Path) -> dict[str, Any]:
    run = run.parent if run.name == "checkpoints" else run
    path = run / CONFIG
    if not path.is_file():
        raise CLIError(
            f"{str(run)!r} is not a jaxcnn run directory (no {CONFIG}); pass the --out folder of `jaxcnn train`"
        )
    try:
        return {**json.loads(path.read_text()), "run": str(run)}
    except json.JSONDecodeError as e:
        raise CLIError(f"{str(path)!r} is not valid JSON ({e})") from None


#: The flags a run's config.json records, by config key (what ``--resume`` restores).
RUN_FLAGS = {
    "model": "model",
    "data": "data",
    "data_dir": "data_dir",
    "image_size": "image_size",
    "seed": "seed",
    "optimizer": "optimizer",
    "lr": "lr",
    "schedule": "schedule",
    "warmup_steps": "warmup_steps",
    "weight_decay": "weight_decay",
    "clip_norm": "clip_norm",
    "loss": "loss",
    "label_smoothing": "label_smoothing",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "strategy": "strategy",
    "precision": "precision",
    "val_split": "val_split",
    "grad_accum": "grad_accum",
    "remainder": "remainder",
    "augment": "augment",
    "api": "api",
    "init_from": "init_from",
}
MODEL_FLAGS = ("model_arg", "dropout", "batch_norm")


def flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def resume_settings(args: argparse.Namespace, old: dict[str, Any], given: set[str]) -> dict[str, Any] | None:
    """Set ``args`` to the run's recorded settings; a flag given on the command line must agree with them.

    Returns the recorded model options when no model flag was given (else ``None``:
    they are rebuilt from the flags and compared by the caller).

    Raises:
      CLIError: naming the first flag that contradicts ``config.json``.
    """
    for key, dest in RUN_FLAGS.items():
        if key not in old:
            continue
        if dest in given and getattr(args, dest) != old[key]:
            raise CLIError(
                f"{flag(dest)} {getattr(args, dest)!r} contradicts the run's {CONFIG} ({key}={old[key]!r}); "
                f"drop {flag(dest)} to continue the run as it was set up, or start a new run with another --out"
            )
        setattr(args, dest, old[key])
    return None if given & set(MODEL_FLAGS) else dict(old.get("model_kwargs", {}))


#: ``jaxcnn train``'s numeric flags and the smallest value each accepts (None: optional).
POSITIVE_FLAGS = (
    "epochs",
    "batch_size",
    "grad_accum",
    "keep",
    "checkpoint_every",
    "max_steps",
    "steps_per_call",
    "image_size",
    "model_parallel",
)


def check_train_flags(args: argparse.Namespace) -> None:
    """Every numeric ``jaxcnn train`` flag in range, before anything is built or written."""
    import math

    for dest in POSITIVE_FLAGS:
        value = getattr(args, dest, None)
        if value is not None and value < 1:
            raise CLIError(f"{flag(dest)} must be an integer >= 1, got {value}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise CLIError(f"--lr must be a finite number > 0, got {args.lr}")
    if not 0 <= args.val_split < 1:
        raise CLIError(f"--val-split must be in [0, 1) (0: no validation set), got {args.val_split}")
    if args.early_stopping is not None and (args.early_stopping < 1 or not args.val_split):
        raise CLIError(
            f"--early-stopping needs a patience >= 1 epoch and --val-split > 0 (it never reads the test "
            f"set), got --early-stopping {args.early_stopping} --val-split {args.val_split}"
        )
    for dest in ("weight_decay", "label_smoothing", "warmup_steps"):
        if getattr(args, dest) < 0:
            raise CLIError(f"{flag(dest)} must be >= 0, got {getattr(args, dest)}")


def train_examples(cfg: dict[str, Any], dataset: Any) -> int:
    """How many examples a run trains on: the training split less the validation rows held out."""
    split = cfg.get("val_split") or 0
    if not split:
        return dataset.num_train
    from jaxcnn.data import stratified_indices

    return len(stratified_indices(dataset.y_train, split, cfg["seed"])[0])


def remove_unstarted_run(out: Path, created: list[Path]) -> None:
    """Delete the files a ``jaxcnn train`` that failed before its first step created (nothing half-done stays)."""
    log = out / "metrics.jsonl"
    trained = log.is_file() and '"kind": "train"' in log.read_text()
    if trained or any((out / "checkpoints").glob("[0-9]*")):
        return
    for path in (out / "metrics.jsonl", out / "metrics.csv", *created):
        path.unlink(missing_ok=True)
    for folder in (out / "checkpoints", out / "tb", out):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def build_optimizer(cfg: dict[str, Any], num_train: int):
    """The run's optax optimizer from its config (train and eval must build the same one)."""
    from jaxcnn.train import make_optimizer, make_schedule

    steps = max(cfg["epochs"] * (num_train // cfg["batch_size"]), 1)
    sched = make_schedule(
        cfg["schedule"],
        cfg["lr"],
        total_steps=steps,
        warmup_steps=cfg.get("warmup_steps", 0),
        decay_steps=max(steps // 3, 1),
    )
    return make_optimizer(cfg["optimizer"], sched, weight_decay=cfg["weight_decay"], clip_norm=cfg["clip_norm"])


def restore(cfg: dict[str, Any], step: int | None = None):
    """Model, data set and the restored state of a run directory."""
    import jax
    import jax.numpy as jnp

    from jaxcnn.train import Checkpointer, create_train_state

    ds = load_data(cfg["data"], cfg.get("data_dir"), cfg["image_size"])
    model = build_model(cfg["model"], cfg["model_kwargs"], cfg.get("api", "linen"), ds.input_shape, cfg["seed"])
    tx = build_optimizer(cfg, train_examples(cfg, ds))
    template = create_train_state(model, tx, jax.ShapeDtypeStruct((1, *ds.input_shape), jnp.float32))
    state, meta = Checkpointer(Path(cfg["run"]) / "checkpoints").restore(template, step)
    return model, ds, state, meta


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
