"""Figures: first-layer filters, feature maps of a named layer, training curves.

Figures are built with ``matplotlib.figure.Figure`` directly, never through
``pyplot``: no display, no backend choice, no global list of open figures. Each
function returns the ``Figure`` and, given ``path``, writes a PNG there.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from jaxcnn.functional import _args

_PREFIXES = ("train_", "training_", "test_", "val_", "valid_", "validation_", "eval_")
_INDEX_KEYS = ("step", "epoch")


def _save(fig: Figure, path: Any, dpi: int) -> None:
    if path is not None:
        path = os.fspath(path)
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        fig.savefig(path, dpi=dpi, format="png")


def _grid(n: int, ncols: int | None) -> tuple[int, int]:
    ncols = max(1, math.ceil(math.sqrt(n))) if ncols is None else _args.as_int(ncols, "ncols")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    ncols = min(ncols, n)
    return math.ceil(n / ncols), ncols


def plot_filters(
    kernel: Any, path: Any = None, *, ncols: int | None = None, title: str | None = None, dpi: int = 100
) -> Figure:
    r"""A grid of first-layer kernels, one tile per output channel.

    Each filter is scaled to [0, 1] on its own, ``(w - min w) / (max w - min w)``
    (a constant filter shows as mid-grey), and drawn as an RGB image when it has
    3 input channels (AlexNet's 96 filters of 11x11x3) or in grey for 1.

    Args:
      kernel: ``(kh, kw, C_in, C_out)`` with ``C_in`` 1 or 3; for another
        ``C_in``, pick channels first (``kernel[..., :1, :]``).
      path: where to write the PNG (parent folders are created); ``None``: don't.
      ncols: tiles per row; default ``ceil(sqrt(C_out))``.
      title: figure title.
      dpi: resolution of the PNG.

    Returns:
      The ``matplotlib.figure.Figure`` with ``C_out`` axes.

    Example:
      >>> import numpy as np
      >>> from jaxcnn.analysis import plot_filters
      >>> len(plot_filters(np.random.randn(11, 11, 3, 96)).axes)
      96

    Reference: Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep
    Convolutional Neural Networks", NeurIPS 2012, fig. 3.
    """
    kernel = np.asarray(_args.check_array(kernel, "kernel"), np.float64)
    if kernel.ndim != 4:
        raise ValueError(
            f"kernel must have shape (kh, kw, C_in, C_out) (a 2-D conv kernel, rank 4), got shape "
            f"{kernel.shape} (rank {kernel.ndim})"
        )
    kh, kw, c_in, c_out = kernel.shape
    if c_in not in (1, 3) or min(kernel.shape) < 1:
        raise ValueError(
            f"kernel must have C_in = 1 (grey) or 3 (RGB) input channels, got shape {kernel.shape}; "
            f"select channels first, e.g. kernel[..., :1, :]"
        )
    nrows, ncols = _grid(c_out, ncols)
    fig = Figure(figsize=(max(2.0, 0.9 * ncols), max(2.0, 0.9 * nrows + (0.4 if title else 0))))
    for o in range(c_out):
        tile = kernel[..., o]
        lo, hi = tile.min(), tile.max()
        tile = (tile - lo) / (hi - lo) if hi > lo else np.full_like(tile, 0.5)
        ax = fig.add_subplot(nrows, ncols, o + 1)
        if c_in == 3:
            ax.imshow(tile, interpolation="nearest")
        else:
            ax.imshow(tile[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    _save(fig, path, dpi)
    return fig


def _intermediates(tree: Mapping, prefix: tuple = ()) -> dict[str, Any]:
    """``{"a/b": first output array}`` from a Flax ``intermediates`` collection."""
    found = {}
    for key, value in tree.items():
        if key == "__call__":
            leaves = [leaf for leaf in jax.tree_util.tree_leaves(value) if hasattr(leaf, "shape")]
            if leaves and prefix:
                found["/".join(prefix)] = leaves[0]
        elif isinstance(value, Mapping):
            found.update(_intermediates(value, prefix + (key,)))
    return found


def plot_feature_maps(
    model: Any,
    variables: Any,
    x: Any,
    layer: str,
    path: Any = None,
    *,
    max_maps: int = 64,
    ncols: int | None = None,
    dpi: int = 100,
    **call_kwargs: Any,
) -> Figure:
    """The feature maps one named layer produces for one input, one tile per channel.

    The model runs once with ``capture_intermediates=True``; the named layer's
    output ``(1, *spatial, C)`` is drawn channel by channel: 2-D maps as grey
    images (each scaled to its own range), 1-D maps as curves.

    Args:
      model: a ``flax.linen.Module``.
      variables: its variables (``{"params": ..., "batch_stats": ...}``).
      x: ONE input, ``(*spatial, C)`` without the batch axis.
      layer: the module path, ``"/"``-joined (``"Conv_0"``, ``"block1/conv2"``),
        as :func:`jaxcnn.analysis.summary` lists it.
      path: where to write the PNG; ``None``: don't.
      max_maps: draw at most this many channels (the first ones).
      ncols: tiles per row; default ``ceil(sqrt(maps))``.
      dpi: resolution of the PNG.
      **call_kwargs: passed to the model (``train=False``, ...).

    Returns:
      The ``Figure``, one axes per drawn channel.

    Raises:
      ValueError: unknown ``layer`` (the message lists the known ones), or a
        layer whose output has no spatial axes.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from jaxcnn.analysis import plot_feature_maps
      >>> m = nn.Sequential([nn.Conv(4, (3, 3)), nn.relu])
      >>> v = m.init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))
      >>> len(plot_feature_maps(m, v, jnp.ones((8, 8, 1)), "layers_0").axes)
      4

    Reference: Zeiler & Fergus, "Visualizing and Understanding Convolutional
    Networks", ECCV 2014.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a flax.linen.Module, got {_args.fmt(model)}")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module path string such as 'Conv_0', got {_args.fmt(layer)}")
    max_maps = _args.as_int(max_maps, "max_maps")
    if max_maps < 1:
        raise ValueError(f"max_maps must be >= 1, got {max_maps}")
    x = jnp.asarray(_args.check_array(x, "x"))
    def forward(variables, x):
        return model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"], **call_kwargs)

    _, state = jax.jit(forward)(variables, x[None])
    outputs = _intermediates(state.get("intermediates", {}))
    if layer not in outputs:
        known = ", ".join(sorted(outputs)) or "none"
        raise ValueError(f"layer {layer!r} is not a module of this model; known layers: {known}")
    fmap = np.asarray(outputs[layer], np.float64)[0]
    if fmap.ndim not in (2, 3):
        raise ValueError(
            f"layer {layer!r} outputs shape {fmap.shape} per example; feature maps need (L, C) or (H, W, C)"
        )
    n = min(fmap.shape[-1], max_maps)
    nrows, ncols = _grid(n, ncols)
    fig = Figure(figsize=(max(2.0, 1.2 * ncols), max(2.0, 1.2 * nrows + 0.4)))
    for c in range(n):
        ax = fig.add_subplot(nrows, ncols, c + 1)
        if fmap.ndim == 3:
            ax.imshow(fmap[..., c], cmap="gray", interpolation="nearest")
            ax.set_axis_off()
        else:
            ax.plot(fmap[:, c])
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{layer}: {'x'.join(map(str, fmap.shape))}")
    _save(fig, path, dpi)
    return fig


def _records(metrics: Any) -> list[dict]:
    if isinstance(metrics, (str, os.PathLike)):
        path = os.fspath(metrics)
        if not os.path.isfile(path):
            raise ValueError(f"metrics file {path!r} does not exist")
        records = []
        with open(path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(
                        f"{path}, line {i}: not a JSON record ({err.msg}): {line.strip()[:60]!r}"
                    ) from None
                if not isinstance(rec, dict):
                    raise ValueError(f"{path}, line {i}: a record must be a JSON object, got {line.strip()[:60]!r}")
                records.append(rec)
        return records
    if isinstance(metrics, Sequence) and not isinstance(metrics, (bytes, str)):
        for i, rec in enumerate(metrics):
            if not isinstance(rec, Mapping):
                raise TypeError(f"metrics[{i}] must be a dict record, got {_args.fmt(rec)}")
        return [dict(r) for r in metrics]
    raise TypeError(f"metrics must be a path to a JSONL file or a list of dict records, got {_args.fmt(metrics)}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _split(key: str) -> tuple[str, str]:
    """``"test_loss"`` -> ``("loss", "test")``; ``"lr"`` -> ``("lr", "lr")``."""
    for prefix in _PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            return key[len(prefix) :], prefix[:-1]
    return key, key


def plot_curves(metrics: Any, path: Any = None, *, x: str | None = None, dpi: int = 100) -> Figure:
    """Training curves from a metrics log: every numeric series against step or epoch.

    Series that differ only by a ``train_``/``test_``/``val_``/``eval_`` prefix
    share one axes (``train_loss`` and ``test_loss`` -> the "loss" axes, two
    lines); every other numeric key (``lr``, ``time``) gets its own. A series is
    drawn from the records that have both it and the x key, so per-step training
    records and per-epoch evaluation records can share one log.

    Args:
      metrics: a path to a JSONL file (one JSON object per line) or a list of
        dicts, e.g. ``{"step": 100, "epoch": 1, "train_loss": 0.3, "test_accuracy": 0.9}``.
      path: where to write the PNG; ``None``: don't.
      x: the key for the x axis; default "step" if any record has it, else
        "epoch", else the record's index.
      dpi: resolution of the PNG.

    Returns:
      The ``Figure``, one axes per metric group.

    Raises:
      ValueError: a line that is not a JSON object, or no numeric series.

    Example:
      >>> from jaxcnn.analysis import plot_curves
      >>> recs = [{"epoch": e, "train_loss": 1 / e, "test_loss": 1.2 / e, "test_accuracy": 1 - 1 / e}
      ...         for e in (1, 2, 3)]
      >>> len(plot_curves(recs).axes)
      2

    Reference: Goodfellow, Bengio & Courville, *Deep Learning*, 2016, sec. 7.8
    (learning curves and early stopping).
    """
    records = _records(metrics)
    if x is None:
        x = next((k for k in _INDEX_KEYS if any(k in r for r in records)), None)
    elif not isinstance(x, str):
        raise TypeError(f"x must be a record key such as 'step' or 'epoch', got {_args.fmt(x)}")
    elif not any(x in r for r in records):
        raise ValueError(f"x={x!r} is not a key of any record")
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k != x and k not in _INDEX_KEYS and _is_number(v) and k not in keys:
                keys.append(k)
    if not keys:
        raise ValueError(
            f"no numeric series to plot in {len(records)} records (keys seen: "
            f"{sorted({k for r in records for k in r}) or 'none'})"
        )
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(_split(k)[0], []).append(k)
    nrows, ncols = _grid(len(groups), min(2, len(groups)))
    fig = Figure(figsize=(5.0 * ncols, 3.2 * nrows))
    for i, (base, members) in enumerate(groups.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for k in members:
            pts = [
                (j if x is None else r[x], r[k])
                for j, r in enumerate(records)
                if _is_number(r.get(k)) and (x is None or _is_number(r.get(x)))
            ]
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, markersize=3, label=_split(k)[1])
        ax.set_title(base)
        ax.set_xlabel(x or "record")
        if len(members) > 1:
            ax.legend()
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    _save(fig, path, dpi)
    return fig
