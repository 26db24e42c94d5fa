"""Training curves from a metrics log (``metrics.jsonl`` records) as a matplotlib figure."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def read_records(source: str | os.PathLike | Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records from a JSON-lines file path, or a list of dicts as is.

    Raises:
      FileNotFoundError: the path does not exist.
      ValueError: a line is not a JSON object (its line number is given).
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no metrics log at {str(path)!r}")
        records = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{str(path)!r} line {i} is not JSON: {e}") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{str(path)!r} line {i} is not a JSON object")
            records.append(rec)
        return records
    return [dict(r) for r in source]


def _dedupe_by_step(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the last record of each step (a resumed run re-logs the steps after its checkpoint)."""
    by_step: dict[Any, dict[str, Any]] = {}
    for r in records:
        by_step[r.get("step")] = r
    return sorted(by_step.values(), key=lambda r: (r.get("step") is None, r.get("step") or 0))


def plot_curves(source: str | os.PathLike | Iterable[dict[str, Any]], path: str | os.PathLike | None = None):
    """Loss and accuracy against the step: per-step training values and per-epoch evaluations.

    Records follow :class:`jaxcnn.train.fit.MetricsLog`: ``kind == "train"``
    records (``step``, ``loss``, ``accuracy``) are drawn thinly with a moving
    average; ``kind == "eval"`` records (``step``, ``train_loss``,
    ``test_loss``, ``train_accuracy``, ``test_accuracy``) as markers. Records
    without a ``kind`` are treated as evaluations. A panel is drawn for each of
    loss and accuracy that has data.

    Args:
      source: a ``metrics.jsonl`` path or a list of records.
      path: where to save a PNG (optional).

    Returns:
      The matplotlib ``Figure``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    records = read_records(source)
    train = _dedupe_by_step([r for r in records if r.get("kind") == "train"])
    evals = _dedupe_by_step([r for r in records if r.get("kind", "eval") == "eval"])
    panels = [m for m in ("loss", "accuracy") if any(_has(r, m) for r in train) or any(_has(r, f"test_{m}") for r in evals)]
    if not panels:
        raise ValueError("the metrics log has no loss or accuracy values to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], panels):
        steps = [r["step"] for r in train if _has(r, metric)]
        values = [r[metric] for r in train if _has(r, metric)]
        if values:
            ax.plot(steps, values, color="tab:blue", alpha=0.25, lw=0.8, label=f"train {metric} (step)")
            window = max(1, len(values) // 50)
            if window > 1:
                smooth = np.convolve(values, np.ones(window) / window, mode="valid")
                ax.plot(steps[window - 1 :], smooth, color="tab:blue", lw=1.5, label=f"train {metric} (avg {window})")
        for key, color in ((f"train_{metric}", "tab:blue"), (f"test_{metric}", "tab:orange")):
            pts = [(r.get("step", r.get("epoch")), r[key]) for r in evals if _has(r, key)]
            if pts:
                ax.plot(*zip(*pts), "o-", color=color, ms=4, label=key.replace("_", " ") + " (epoch)")
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def _has(record: dict[str, Any], key: str) -> bool:
    v = record.get(key)
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
