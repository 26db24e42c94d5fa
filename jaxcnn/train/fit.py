"""The training loop: epochs of compiled steps, evaluation, logs, checkpoints, resume."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from jaxcnn import data as data_lib
from jaxcnn.functional import _args
from jaxcnn.train.checkpoint import Checkpointer
from jaxcnn.train.curves import plot_curves
from jaxcnn.train.losses import LossFn, get_loss
from jaxcnn.train.state import TrainState, create_train_state
from jaxcnn.train.step import CompiledStep, make_eval_step, make_train_step


class MetricsLog:
    """Append-only JSON-lines log: one record per line, flushed as written.

    Records carry a ``"kind"``: ``"train"`` (per step), ``"eval"`` (per epoch)
    or ``"event"`` (start, resume, early stop).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray, jax.Array)):
        return np.asarray(value).tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def evaluate(
    model: nn.Module,
    state: TrainState,
    x: np.ndarray,
    y: np.ndarray,
    *,
    loss: str | LossFn = "cross_entropy",
    batch_size: int = 500,
    step: CompiledStep | None = None,
) -> dict[str, float]:
    """Mean loss (and accuracy, for integer labels) of ``model`` over every example of ``(x, y)``.

    The last partial batch is padded and its padding weighted 0, so each example
    counts exactly once whatever the batch size.

    Args:
      model, state: the model and an (unplaced) training state.
      x, y: ``(N, ...)`` inputs and targets.
      loss: the per-example loss (name or function).
      batch_size: examples per evaluation batch (a multiple of the device count
        for multi-device ``step``).
      step: a compiled eval step (:func:`make_eval_step`); default one-device "jit".

    Returns:
      ``{"loss": ..., "accuracy": ..., "count": N}`` (no accuracy for float targets).
    """
    step = step or make_eval_step(model, loss, "jit")
    placed = step.place_state(state)
    totals: dict[str, float] = {}
    for batch in data_lib.batches(x, y, batch_size, shuffle=False, drop_remainder=False, pad_remainder=True):
        sums = step.fetch_metrics(step(placed, step.place_batch(batch)))
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    count = totals.pop("count", 0.0)
    out = {k: v / max(count, 1.0) for k, v in totals.items()}
    out["count"] = int(round(count))
    return out


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      state: the final training state (an ordinary, unplaced copy).
      history: one record per epoch: ``epoch``, ``step``, ``train_loss``,
        ``train_accuracy``, ``test_loss``, ``test_accuracy``, ``seconds``,
        ``images_per_s``.
      stopped_early: whether early stopping ended training.
      out_dir: where logs, curves and checkpoints went (or ``None``).
    """

    state: TrainState
    history: list[dict[str, Any]]
    stopped_early: bool = False
    out_dir: Path | None = None

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def _grouped(it: Iterator[dict], k: int) -> Iterator[tuple[int, dict]]:
    """Stack ``k`` consecutive batches into one ``(k, B, ...)`` batch; a short tail stays single."""
    if k == 1:
        yield from ((1, b) for b in it)
        return
    buf: list[dict] = []
    for b in it:
        buf.append(b)
        if len(buf) == k:
            yield k, {name: np.stack([x[name] for x in buf]) for name in buf[0]}
            buf = []
    for b in buf:
        yield 1, b


def fit(
    model: nn.Module,
    dataset: "data_lib.Dataset",
    tx: optax.GradientTransformation,
    *,
    loss: str | LossFn = "cross_entropy",
    epochs: int = 5,
    batch_size: int = 128,
    strategy: str | None = None,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    keep_checkpoints: int = 3,
    resume: bool = False,
    early_stopping: int | None = None,
    steps_per_call: int = 1,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    eval_batch_size: int = 500,
    state: TrainState | None = None,
    devices: Any = None,
    progress: bool = True,
    max_steps: int | None = None,
) -> FitResult:
    """Train ``model`` on ``dataset`` with the optimizer ``tx``, evaluating after every epoch.

    Every epoch visits the training set in the order ``batches(seed=seed,
    epoch=epoch)`` (full batches only). Randomness depends only on ``seed`` and
    the step number, so a run resumed from a checkpoint continues exactly as if
    it had never stopped: its final parameters are bit-identical.

    Args:
      model: a Flax module taking ``train`` as keyword.
      dataset: a :class:`jaxcnn.data.Dataset`.
      tx: an optax optimizer (see :func:`jaxcnn.train.make_optimizer`).
      loss: per-example loss name or function.
      epochs: number of passes over the training set.
      batch_size: global batch size (split over devices for "pmap"/"sharded").
      strategy: "jit", "pmap", "sharded" or ``None`` (sharded on several devices).
      seed: initializes the model, orders the batches and seeds dropout.
      out_dir: if given, writes ``metrics.jsonl``, ``curves.png`` and
        ``checkpoints/`` there.
      checkpoint_every: also checkpoint every this many steps (one is always
        written at the end); needs ``out_dir``.
      keep_checkpoints: how many recent checkpoints to keep.
      resume: continue from the latest checkpoint in ``out_dir``. Without it,
        an ``out_dir`` that already holds checkpoints is an error (nothing is
        overwritten).
      early_stopping: stop when the test loss has not improved for this many epochs.
      steps_per_call: run this many steps per dispatch (see :func:`make_train_step`).
      augment: ``augment(key, x) -> x``, a pure JAX function applied to every
        training batch inside the compiled step.
      eval_batch_size: batch size of evaluation.
      state: start from this state instead of a fresh one (fine-tuning).
      devices: devices to use (default all).
      progress: show a tqdm progress bar.
      max_steps: stop after this many steps in total (for smoke tests and
        interrupted-run tests); the epoch in progress is not evaluated.

    Returns:
      A :class:`FitResult`.
    """
    epochs = _args.as_int(epochs, "epochs")
    batch_size = _args.as_int(batch_size, "batch_size")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got epochs={epochs}, batch_size={batch_size}")
    n_train = len(dataset.x_train)
    if batch_size > n_train:
        raise ValueError(f"batch_size={batch_size} is larger than the training set ({n_train} examples)")
    loss_fn = get_loss(loss)
    train_step = make_train_step(model, loss_fn, strategy, steps_per_call=steps_per_call, devices=devices, augment=augment)
    single_step = train_step
    if steps_per_call > 1:
        single_step = make_train_step(model, loss_fn, train_step.strategy, devices=devices, augment=augment)
    eval_step = make_eval_step(model, loss_fn, train_step.strategy, devices=devices)
    if eval_batch_size % train_step.num_devices:
        eval_batch_size += train_step.num_devices - eval_batch_size % train_step.num_devices

    if state is None:
        state = create_train_state(model, tx, jax.ShapeDtypeStruct((1, *dataset.x_train.shape[1:]), jnp.float32), seed=seed)
    out = Path(out_dir) if out_dir is not None else None
    log = MetricsLog(out / "metrics.jsonl") if out else None
    ckpt = Checkpointer(out / "checkpoints", keep=keep_checkpoints) if out else None
    if checkpoint_every is not None and ckpt is None:
        raise ValueError("checkpoint_every needs out_dir (where to write the checkpoints)")
    if ckpt is not None:
        latest = ckpt.latest_step()
        if resume and latest is not None:
            state, _ = ckpt.restore(state)
            log.write({"kind": "event", "event": "resume", "step": int(state.step)})
        elif latest is not None:
            raise ValueError(
                f"{str(out)!r} already holds checkpoints (latest step {latest}); pass resume=True "
                f"(--resume) to continue that run, or choose another out_dir"
            )
        else:
            log.write({"kind": "event", "event": "start", "step": int(state.step), "devices": train_step.num_devices,
                       "strategy": train_step.strategy, "dataset": dataset.name, "batch_size": batch_size})

    per_epoch = data_lib.num_batches(n_train, batch_size, drop_remainder=True)
    total_steps = per_epoch * epochs if max_steps is None else min(per_epoch * epochs, max_steps)
    step_no = int(state.step)
    history: list[dict[str, Any]] = []
    best, since_best, stopped = math.inf, 0, False
    placed = train_step.place_state(state)

    def _placer(item):  # runs in the prefetch thread: host-to-device copies overlap the step
        k, batch = item
        return k, (train_step if k == steps_per_call else single_step).place_batch(batch)

    bar = _progress_bar(total_steps, step_no, progress)
    try:
        for epoch in range(step_no // per_epoch, epochs):
            if step_no >= total_steps:
                break
            skip = step_no - epoch * per_epoch
            epoch_losses, epoch_accs, t0, seen = [], [], time.perf_counter(), 0
            it = data_lib.batches(dataset.x_train, dataset.y_train, batch_size, shuffle=True, seed=seed, epoch=epoch,
                                  drop_remainder=True, start=skip)
            it = data_lib.prefetch(_grouped(_take(it, total_steps - step_no), steps_per_call), size=2, put=_placer)
            for k, batch in it:
                step = train_step if k == steps_per_call else single_step
                placed, metrics = step(placed, batch)
                m = step.fetch_metrics(metrics)
                losses = np.atleast_1d(m["loss"])
                accs = np.atleast_1d(m.get("accuracy", np.full(k, np.nan)))
                prev, step_no = step_no, step_no + k
                seen += k * batch_size
                epoch_losses.extend(losses.tolist())
                epoch_accs.extend(accs.tolist())
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                if log:
                    for i in range(k):
                        rec = {"kind": "train", "step": prev + i + 1, "epoch": epoch, "loss": float(losses[i])}
                        if "accuracy" in m:
                            rec["accuracy"] = float(accs[i])
                        log.write(rec)
                bar.update(k)
                bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.4f}", acc=f"{accs[-1]:.3f}", img_s=f"{rate:,.0f}", refresh=False)
                if checkpoint_every and step_no // checkpoint_every > prev // checkpoint_every:
                    ckpt.save(train_step.fetch_state(placed), {"epoch": epoch, "step": step_no})
            if step_no < (epoch + 1) * per_epoch:  # stopped inside the epoch (max_steps)
                break
            seconds = time.perf_counter() - t0
            test = evaluate(model, train_step.fetch_state(placed), dataset.x_test, dataset.y_test, loss=loss_fn,
                            batch_size=eval_batch_size, step=eval_step)
            record = {"kind": "eval", "epoch": epoch, "step": step_no, "train_loss": float(np.mean(epoch_losses)),
                      "train_accuracy": float(np.nanmean(epoch_accs)) if epoch_accs and not np.all(np.isnan(epoch_accs)) else None,
                      "test_loss": test["loss"], "test_accuracy": test.get("accuracy"), "seconds": seconds,
                      "images_per_s": seen / max(seconds, 1e-9)}
            history.append(record)
            if log:
                log.write(record)
            bar.write(_epoch_line(record))
            if early_stopping is not None:
                if test["loss"] < best - 1e-6:
                    best, since_best = test["loss"], 0
                else:
                    since_best += 1
                    if since_best >= early_stopping:
                        stopped = True
                        if log:
                            log.write({"kind": "event", "event": "early_stop", "step": step_no, "epoch": epoch})
                        break
    finally:
        bar.close()
    final = jax.device_get(train_step.fetch_state(placed))
    if ckpt is not None:
        if ckpt.latest_step() != int(final.step):
            ckpt.save(final, {"epoch": len(history), "step": int(final.step)})
        plot_curves(log.path, out / "curves.png")
    return FitResult(final, history, stopped, out)


def _epoch_line(r: dict[str, Any]) -> str:
    acc = "" if r["test_accuracy"] is None else f"  test acc {r['test_accuracy']:.4f}"
    return (f"epoch {r['epoch'] + 1}: train loss {r['train_loss']:.4f}  test loss {r['test_loss']:.4f}{acc}"
            f"  ({r['seconds']:.1f} s, {r['images_per_s']:,.0f} img/s)")


def _take(it: Iterator, n: int) -> Iterator:
    for i, item in enumerate(it):
        if i >= n:
            return
        yield item


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, leave=False,
                mininterval=0.5)
