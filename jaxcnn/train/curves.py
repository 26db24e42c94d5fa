"""Training curves from a metrics log (``metrics.jsonl`` records) as a matplotlib figure.

Built with ``matplotlib.figure.Figure`` directly (see :mod:`jaxcnn._figures`):
no display and no pyplot state. :mod:`jaxcnn.analysis` re-exports
:func:`plot_curves`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from jaxcnn._figures import grid, save
from jaxcnn import _validate

_PREFIXES = ("train_", "training_", "test_", "val_", "valid_", "validation_", "eval_")
_INDEX_KEYS = ("step", "epoch")


def read_records(metrics: Any) -> list[dict]:
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
                raise TypeError(f"metrics[{i}] must be a dict record, got {_validate.fmt(rec)}")
        return [dict(r) for r in metrics]
    raise TypeError(f"metrics must be a path to a JSONL file or a list of dict records, got {_validate.fmt(metrics)}")


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
    records = [r for r in read_records(metrics) if r.get("kind") != "event"]
    if x is None:
        x = next((k for k in _INDEX_KEYS if any(k in r for r in records)), None)
    elif not isinstance(x, str):
        raise TypeError(f"x must be a record key such as 'step' or 'epoch', got {_validate.fmt(x)}")
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
    nrows, ncols = grid(len(groups), min(2, len(groups)))
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
    save(fig, path, dpi)
    return fig
