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

    model = build_model(cfg["model"], cfg["model_kwargs"])
    ds = load_data(cfg["data"], cfg.get("data_dir"), cfg["image_size"])
    tx = build_optimizer(cfg, ds.num_train)
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
