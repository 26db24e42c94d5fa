"""Callbacks that report: the progress bar, ``metrics.jsonl``, a CSV log, TensorBoard, ``curves.png``."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcnn.train.callbacks.base import Callback, Run


def json_value(value: Any) -> Any:
    """``value`` as strict JSON: arrays and NumPy scalars as lists/numbers, NaN and infinities as ``None``."""
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        return json_value(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Append-only JSON-lines log: one record per line, strict JSON (NaN as ``null``), flushed as written.

    Records carry a ``"kind"``: ``"train"`` (per step), ``"eval"`` (per epoch),
    ``"test"`` (once, at the end) or ``"event"`` (start, resume, early stop, divergence).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(json_value(record), allow_nan=False) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop step records past ``step`` (a resumed run writes them again, once)."""
        if not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip()
            and not (json.loads(line).get("kind") in ("train", "eval") and (json.loads(line).get("step") or 0) > step)
        ]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)


def epoch_line(r: dict[str, Any]) -> str:
    """``epoch 3: train loss 0.1234  val loss 0.2345  val acc 0.9512  (1.2 s, 5,000 img/s)``."""
    parts = [f"epoch {r['epoch'] + 1}: train loss {r['train_loss']:.4f}"]
    if r.get("val_loss") is not None:
        parts.append(f"val loss {r['val_loss']:.4f}")
    if r.get("val_accuracy") is not None:
        parts.append(f"val acc {r['val_accuracy']:.4f}")
    return "  ".join(parts) + f"  ({r['seconds']:.1f} s, {r['images_per_s']:,.0f} img/s)"


class ProgressBar(Callback):
    """A tqdm bar over the steps, with the last loss and throughput, and (``verbose``) a line per epoch."""

    def __init__(self, verbose: bool = True):
        self.verbose = verbose
        self.bar: Any = None

    def on_train_begin(self, run: Run) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=run.total_steps,
            initial=run.step,
            disable=not run.primary,
            unit="step",
            dynamic_ncols=True,
            leave=False,
            mininterval=0.5,
        )

    def on_step_end(self, run: Run, step: int, metrics: dict[str, Any]) -> None:
        self.bar.update(step - self.bar.n)
        acc = metrics.get("accuracy")
        self.bar.set_postfix(
            loss=f"{metrics['loss']:.4f}", **({"acc": f"{acc:.3f}"} if acc is not None else {}), refresh=False
        )

    def on_epoch_end(self, run: Run, epoch: int, record: dict[str, Any]) -> None:
        if self.verbose and run.primary:
            self.bar.write(epoch_line(record))

    def on_train_end(self, run: Run) -> None:
        if self.bar is not None:
            self.bar.close()


class JsonlLogger(Callback):
    """``metrics.jsonl``: a record per step and per epoch (see :class:`MetricsLog`)."""

    def __init__(self, path: str | os.PathLike):
        self.log = MetricsLog(path)

    def on_train_begin(self, run: Run) -> None:
        self.log.truncate_after(run.step)
        self.log.write({"kind": "event", "event": "resume" if run.step else "start", "step": run.step, **run.config})

    def on_step_end(self, run: Run, step: int, metrics: dict[str, Any]) -> None:
        self.log.write(
            {
                "kind": "train",
                "step": step,
                **{k: metrics[k] for k in ("epoch", "loss", "accuracy") if metrics.get(k) is not None},
            }
        )

    def on_epoch_end(self, run: Run, epoch: int, record: dict[str, Any]) -> None:
        self.log.write({"kind": "eval", **record})

    def on_train_end(self, run: Run) -> None:
        if run.stop_reason:
            self.log.write({"kind": "event", "event": "stop", "step": run.step, "reason": run.stop_reason})


class CSVLogger(Callback):
    """A CSV file with one row per epoch: the epoch records of ``metrics.jsonl``, column for column."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_epoch_end(self, run: Run, epoch: int, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(record))
            if new:
                writer.writeheader()
            writer.writerow({k: "" if v is None else v for k, v in json_value(record).items()})


class TensorBoard(Callback):
    """TensorBoard event files (through ``tensorboardX``): ``train/loss`` per step, every epoch metric per epoch."""

    def __init__(self, log_dir: str | os.PathLike):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError("the TensorBoard callback needs tensorboardX: pip install tensorboardX") from None
        self._writer_cls = SummaryWriter
        self.log_dir = Path(log_dir)
        self.writer: Any = None

    def on_train_begin(self, run: Run) -> None:
        if run.primary:
            self.writer = self._writer_cls(str(self.log_dir))

    def on_step_end(self, run: Run, step: int, metrics: dict[str, Any]) -> None:
        if self.writer is not None:
            for k in ("loss", "accuracy"):
                if metrics.get(k) is not None:
                    self.writer.add_scalar(f"train/{k}", float(metrics[k]), step)

    def on_epoch_end(self, run: Run, epoch: int, record: dict[str, Any]) -> None:
        if self.writer is not None:
            for k, v in record.items():
                if k not in ("epoch", "step") and isinstance(v, (int, float)) and v is not None:
                    self.writer.add_scalar(f"epoch/{k}", float(v), epoch + 1)

    def on_train_end(self, run: Run) -> None:
        if self.writer is not None:
            self.writer.close()


class CurvesPlot(Callback):
    """``curves.png`` from ``metrics.jsonl`` at the end of training (:func:`jaxcnn.train.plot_curves`)."""

    def __init__(self, metrics_path: str | os.PathLike, path: str | os.PathLike):
        self.metrics_path, self.path = Path(metrics_path), Path(path)

    def on_train_end(self, run: Run) -> None:
        from jaxcnn.train.curves import plot_curves

        if run.primary and self.metrics_path.exists() and run.history:
            plot_curves(self.metrics_path, self.path)
