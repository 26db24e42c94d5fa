r"""Training curves from a metrics log (``metrics.jsonl`` records): reading the log and drawing it.

One implementation shared by :mod:`jaxcnn.train` (``fit`` writes ``curves.png``)
and :mod:`jaxcnn.analysis` (both re-export :func:`plot_curves` and
:func:`read_records`); it lives at the top of the package so neither imports the other.

Each numeric key of the records is a series ``(x_i, y_i)`` over the records that
hold it and the x key. Keys that differ only by a split prefix share one axes:

.. math::

    \text{group}(\texttt{train\_loss}) = \text{group}(\texttt{val\_loss})
    = \text{group}(\texttt{test\_loss}) = \text{loss}

and the legend says which split and how often it was logged ("train loss (per
step)", "validation loss (per epoch)"), read from the records' ``"kind"``.

Built with ``matplotlib.figure.Figure`` directly (see :mod:`jaxcnn._figures`):
no display and no pyplot state.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from jaxcnn import _validate
from jaxcnn._figures import grid, save

#: key prefix -> the split's name in legends.
SPLITS = {
    "train_": "train",
    "training_": "train",
    "val_": "validation",
    "valid_": "validation",
    "validation_": "validation",
    "test_": "test",
    "eval_": "evaluation",
}
#: record ``"kind"`` -> how often such records are written.
CADENCE = {"train": "per step", "eval": "per epoch"}
#: a group's y-axis label, with its unit.
Y_LABELS = {
    "loss": "loss (mean per example)",
    "accuracy": "accuracy (fraction correct)",
    "top_5_accuracy": "top-5 accuracy (fraction)",
    "lr": "learning rate",
    "learning_rate": "learning rate",
    "seconds": "time (s)",
    "time": "time (s)",
    "images_per_s": "throughput (images/s)",
}
X_LABELS = {"step": "step (optimizer updates)", "epoch": "epoch", None: "record"}
_INDEX_KEYS = ("step", "epoch")


def read_records(metrics: Any) -> list[dict]:
    """The records of a metrics log: one dict per non-empty JSONL line, or a list of dicts as given.

    Args:
      metrics: a path to a JSONL file (one JSON object per line) or a sequence of dicts.

    Returns:
      A list of new dicts, in order.

    Raises:
      ValueError: a missing file, or a line that is not a JSON object (the line number is in the message).
      TypeError: neither a path nor a sequence of dicts.
    """
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


def split_key(key: str) -> tuple[str, str | None]:
    """``"val_loss"`` -> ``("loss", "validation")``; ``"lr"`` -> ``("lr", None)``."""
    for prefix, split in SPLITS.items():
        if key.startswith(prefix) and len(key) > len(prefix):
            return key[len(prefix) :], split
    return key, None


def series_label(key: str, kinds: set) -> str:
    """The legend name of series ``key`` logged in records of ``kinds``: split, metric, cadence.

    ``"loss"`` in ``"train"`` records (the per-step log of ``fit``) -> ``"train loss (per step)"``;
    ``"val_loss"`` in ``"eval"`` records -> ``"validation loss (per epoch)"``; without a known
    kind the cadence is left out (``"test loss"``).
    """
    base, split = split_key(key)
    if split is None and kinds == {"train"}:
        split = "train"
    label = base if split is None else f"{split} {base}"
    cadences = sorted({CADENCE[k] for k in kinds if k in CADENCE})
    return f"{label} ({', '.join(cadences)})" if cadences else label


def default_title(metrics: Any) -> str | None:
    """The run's name for a log at ``<run>/metrics.jsonl``: the folder's name; ``None`` for records."""
    if isinstance(metrics, (str, os.PathLike)):
        return os.path.basename(os.path.dirname(os.path.abspath(os.fspath(metrics)))) or None
    return None


def plot_curves(
    metrics: Any, path: Any = None, *, x: str | None = None, title: str | None = None, dpi: int = 100
) -> Figure:
    """Training curves from a metrics log: every numeric series against step or epoch.

    Series that differ only by a ``train_``/``val_``/``test_``/``eval_`` prefix
    share one axes (``train_loss``, ``val_loss`` and ``test_loss`` -> the
    "loss" axes, three lines); every other numeric key (``lr``, ``seconds``)
    gets its own. A series is drawn from the records that have both it and the
    x key, so per-step training records and per-epoch evaluation records can
    share one log. Each axes has a title (the metric), a y label with its unit,
    an x label and a legend naming split and cadence; x ticks are whole numbers.
    Against steps, when records carry an epoch, a top axis marks the end of each
    epoch (the last step logged in it) with the number of epochs completed.

    Args:
      metrics: a path to a JSONL file (one JSON object per line) or a list of
        dicts, e.g. ``{"step": 100, "epoch": 1, "train_loss": 0.3, "val_accuracy": 0.9}``.
      path: where to write the PNG; ``None``: don't.
      x: the key for the x axis; default "step" if any record has it, else
        "epoch", else the record's index.
      title: the figure's title, e.g. the run's name; default: the name of the
        folder that holds the log file (none for a list of records).
      dpi: resolution of the PNG.

    Returns:
      The ``Figure``, one axes per metric group (plus the epoch axes above them).

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
    title = default_title(metrics) if title is None else title
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
        groups.setdefault(split_key(k)[0], []).append(k)
    nrows, ncols = grid(len(groups), min(2, len(groups)))
    fig = Figure(figsize=(5.0 * ncols, 3.4 * nrows + (0.4 if title else 0)), layout="constrained")
    for i, (base, members) in enumerate(groups.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for k in members:
            rows = [
                (j, r) for j, r in enumerate(records) if _is_number(r.get(k)) and (x is None or _is_number(r.get(x)))
            ]
            if not rows:
                continue
            xs = [j if x is None else r[x] for j, r in rows]
            label = series_label(k, {r["kind"] for _, r in rows if isinstance(r.get("kind"), str)})
            ax.plot(xs, [r[k] for _, r in rows], marker="o" if len(rows) < 30 else None, markersize=3, label=label)
        ax.set_title(base)
        ax.set_xlabel(X_LABELS.get(x) or str(x))
        ax.set_ylabel(Y_LABELS.get(base, base))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if x == "step":
            _epoch_axis(ax, records)
        ax.legend(fontsize="small")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{title}: training curves" if title else "training curves")
    save(fig, path, dpi)
    return fig


def _epoch_axis(ax: Any, records: list[dict]) -> None:
    """A top x axis with a tick at the last step logged in each epoch, labelled with the epoch counted from 1."""
    ends: dict[int, float] = {}
    for r in records:
        if _is_number(r.get("step")) and isinstance(r.get("epoch"), int) and not isinstance(r.get("epoch"), bool):
            ends[r["epoch"]] = max(ends.get(r["epoch"], r["step"]), r["step"])
    if not ends:
        return
    top = ax.secondary_xaxis("top")
    top.set_xticks([ends[e] for e in sorted(ends)], labels=[str(e + 1) for e in sorted(ends)])
    top.set_xlabel("end of epoch (counted from 1)")
