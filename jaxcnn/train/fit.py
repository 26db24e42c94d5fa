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
from jaxcnn import _validate
from jaxcnn.train.checkpoint import Checkpointer
from jaxcnn.train.curves import plot_curves
from jaxcnn.train.distributed import is_primary
from jaxcnn.train.losses import LossFn, get_loss
from jaxcnn.train.partition import DEFAULT_MIN_SIZE
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
    # Only the variables travel: the optimizer (static in a TrainState) must not
    # make evaluation retrace for every optimizer a user tries.
    placed = step.place_state(state.variables() if isinstance(state, TrainState) else state)
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


def _grouped(it: Iterator[tuple[dict, int]], k: int) -> Iterator[tuple[int, dict, int]]:
    """Stack ``k`` consecutive batches into one ``(k, B, ...)`` batch; a short tail stays single.

    Items are ``(batch, real_rows)``; yields ``(k, batch, real_rows summed)``.
    """
    if k == 1:
        yield from ((1, b, n) for b, n in it)
        return
    buf: list[tuple[dict, int]] = []
    for item in it:
        buf.append(item)
        if len(buf) == k:
            yield k, {name: np.stack([b[name] for b, _ in buf]) for name in buf[0][0]}, sum(n for _, n in buf)
            buf = []
    for b, n in buf:
        yield 1, b, n


def process_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, rows: slice, *, remainder: str = "drop", **order: Any
) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """One epoch of training batches, each cut to this process's ``rows`` of the global batch.

    The order is exactly :func:`jaxcnn.data.batches`'s (it is computed by
    ``batches`` over the example *indices*), so every process agrees on the
    global batch; each process then gathers only its own rows of ``x`` and
    ``y``. With ``remainder="pad"`` the last partial batch is padded with zero
    rows and every batch carries ``"weight"`` (1 real, 0 padding), as
    ``batches(..., pad_remainder=True)``.

    Args:
      x, y: the training set, ``(N, ...)``.
      batch_size: the global batch size ``B``.
      rows: this process's rows, ``slice(0, B)`` in a one-process run (see
        :meth:`jaxcnn.train.Placement.process_rows`).
      remainder: "drop" the last partial batch or "pad" it.
      **order: ``shuffle``, ``seed``, ``epoch``, ``start`` for ``batches``.

    Yields:
      ``(batch, real_rows)``: the process-local batch and the number of real
      (unpadded) rows of the *global* batch.
    """
    pad = remainder == "pad"
    index = np.arange(len(x))
    for b in data_lib.batches(index, index, batch_size, drop_remainder=not pad, pad_remainder=pad, **order):
        i = b["x"][rows]
        out = {"x": x[i], "y": y[i]}
        if pad:
            w = b["weight"][rows]
            out["x"][w == 0] = 0
            out["y"][w == 0] = 0
            out["weight"] = w
            yield out, int(b["weight"].sum())
        else:
            yield out, batch_size


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
    verbose: bool | None = None,
    max_steps: int | None = None,
    remainder: str = "drop",
    model_parallel: int = 1,
    min_shard_size: int = DEFAULT_MIN_SIZE,
    batch_split: int | str = "auto",
) -> FitResult:
    """Train ``model`` on ``dataset`` with the optimizer ``tx``, evaluating after every epoch.

    Every epoch visits the training set in the order ``batches(seed=seed,
    epoch=epoch)`` (full batches only, unless ``remainder="pad"``). Randomness
    depends only on ``seed`` and the step number, so a run resumed from a
    checkpoint continues exactly as if it had never stopped: its final
    parameters are bit-identical.

    Several processes (after :func:`jaxcnn.train.distributed.initialize`):
    every process calls ``fit`` with the same arguments; each reads only its
    rows of every global batch (:func:`process_batches`), so the run equals
    the one-process run with the same global batch. Process 0 alone writes
    ``metrics.jsonl``, ``curves.png`` and the progress bar; all processes take
    part in saving each checkpoint (Orbax writes it once, from process 0) and
    all read it back on resume, so ``out_dir`` must be a file system they share.

    Args:
      model: a Flax module taking ``train`` as keyword.
      dataset: a :class:`jaxcnn.data.Dataset`.
      tx: an optax optimizer (see :func:`jaxcnn.train.make_optimizer`).
      loss: per-example loss name or function.
      epochs: number of passes over the training set.
      batch_size: global batch size (split over devices for "pmap",
        "sharded" and "shard_map").
      strategy: "jit", "pmap", "sharded", "shard_map" or ``None`` (sharded on
        several devices). "pmap"/"shard_map" need the model built with
        ``axis_name="data"``.
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
      batch_split: each step's gradient as a sum over this many parts of the
        batch, or "auto" (see :func:`make_train_step`): 1 for models whose
        layers mix examples other than through BatchNorm.
      augment: ``augment(key, x) -> x``, a pure JAX function applied to every
        training batch inside the compiled step.
      eval_batch_size: batch size of evaluation.
      state: start from this state instead of a fresh one (fine-tuning).
      devices: devices to use (default all).
      progress: show a tqdm progress bar.
      verbose: print a line per epoch (default: as ``progress``).
      max_steps: stop after this many steps in total (for smoke tests and
        interrupted-run tests); the epoch in progress is not evaluated.
      remainder: what to do with the last ``N mod batch_size`` examples of an
        epoch: "drop" them (default; every step sees a full batch), or "pad"
        the last batch to ``batch_size`` with rows of weight 0. Padding is
        exact: the loss is the weighted mean over real rows, BatchNorm
        statistics skip the padded rows (:func:`jaxcnn.train.train_step_body`)
        and dropout masks of the real rows do not depend on the padding, so
        the step equals one on the real rows alone. One compiled shape serves
        every batch.
      model_parallel, min_shard_size: split large kernels over a "model" mesh
        axis of this size (strategy "sharded"; see :func:`make_train_step`).

    Returns:
      A :class:`FitResult`.
    """
    epochs = _validate.as_int(epochs, "epochs")
    batch_size = _validate.as_int(batch_size, "batch_size")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got epochs={epochs}, batch_size={batch_size}")
    n_train = len(dataset.x_train)
    if batch_size > n_train:
        raise ValueError(f"batch_size={batch_size} is larger than the training set ({n_train} examples)")
    remainder = _validate.check_choice(remainder, "remainder", ("drop", "pad"))
    loss_fn = get_loss(loss)
    shard = {"model_parallel": model_parallel, "min_shard_size": min_shard_size}
    train_step = make_train_step(model, loss_fn, strategy, steps_per_call=steps_per_call, devices=devices,
                                 augment=augment, batch_split=batch_split, **shard)
    single_step = train_step
    if steps_per_call > 1:
        single_step = make_train_step(model, loss_fn, train_step.strategy, devices=devices, augment=augment,
                                      batch_split=batch_split, **shard)
    eval_step = make_eval_step(model, loss_fn, train_step.strategy, devices=devices, **shard)
    rows = train_step.process_rows(batch_size)
    per_device = train_step.data_parallel
    if eval_batch_size % per_device:
        eval_batch_size += per_device - eval_batch_size % per_device

    if state is None:
        state = create_train_state(model, tx, jax.ShapeDtypeStruct((1, *dataset.x_train.shape[1:]), jnp.float32), seed=seed)
    out = Path(out_dir) if out_dir is not None else None
    log = MetricsLog(out / "metrics.jsonl") if out and is_primary() else None
    ckpt = Checkpointer(out / "checkpoints", keep=keep_checkpoints) if out else None
    if checkpoint_every is not None and ckpt is None:
        raise ValueError("checkpoint_every needs out_dir (where to write the checkpoints)")
    if ckpt is not None:
        latest = ckpt.latest_step()
        if resume and latest is not None:
            state, _ = ckpt.restore(state)
            if log:
                log.write({"kind": "event", "event": "resume", "step": int(state.step)})
        elif latest is not None:
            raise ValueError(
                f"{str(out)!r} already holds checkpoints (latest step {latest}); pass resume=True "
                f"(--resume) to continue that run, or choose another out_dir"
            )
        elif log:
            log.write({"kind": "event", "event": "start", "step": int(state.step), "devices": train_step.num_devices,
                       "processes": jax.process_count(), "strategy": train_step.strategy, "dataset": dataset.name,
                       "batch_size": batch_size, "remainder": remainder})

    per_epoch = data_lib.num_batches(n_train, batch_size, drop_remainder=remainder == "drop")
    total_steps = per_epoch * epochs if max_steps is None else min(per_epoch * epochs, max_steps)
    step_no = int(state.step)
    history: list[dict[str, Any]] = []
    best, since_best, stopped = math.inf, 0, False
    placed = train_step.place_state(state)

    def _placer(item):  # runs in the prefetch thread: host-to-device copies overlap the step
        k, batch, real = item
        return k, (train_step if k == steps_per_call else single_step).place_batch(batch, global_size=batch_size), real

    bar = _progress_bar(total_steps, step_no, progress and is_primary())
    try:
        for epoch in range(step_no // per_epoch, epochs):
            if step_no >= total_steps:
                break
            skip = step_no - epoch * per_epoch
            epoch_losses, epoch_accs, t0, seen = [], [], time.perf_counter(), 0
            it = process_batches(dataset.x_train, dataset.y_train, batch_size, rows, remainder=remainder, shuffle=True,
                                 seed=seed, epoch=epoch, start=skip)
            it = data_lib.prefetch(_grouped(_take(it, total_steps - step_no), steps_per_call), size=2, put=_placer)
            def record(step, metrics, k, first):
                m = step.fetch_metrics(metrics)
                losses = np.atleast_1d(m["loss"])
                accs = np.atleast_1d(m.get("accuracy", np.full(k, np.nan)))
                epoch_losses.extend(losses.tolist())
                epoch_accs.extend(accs.tolist())
                if log:
                    for i in range(k):
                        rec = {"kind": "train", "step": first + i + 1, "epoch": epoch, "loss": float(losses[i])}
                        if "accuracy" in m:
                            rec["accuracy"] = float(accs[i])
                        log.write(rec)
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.4f}", acc=f"{accs[-1]:.3f}", img_s=f"{rate:,.0f}", refresh=False)

            # Metrics are read one step late: reading them waits for the step, and the
            # next step is already dispatched by then, so the device never idles on Python.
            pending = None
            for k, batch, real in it:
                step = train_step if k == steps_per_call else single_step
                placed, metrics = step(placed, batch)
                if pending is not None:
                    record(*pending)
                pending = (step, metrics, k, step_no)
                prev, step_no = step_no, step_no + k
                seen += real
                bar.update(k)
                if checkpoint_every and step_no // checkpoint_every > prev // checkpoint_every:
                    ckpt.save(train_step.fetch_state(placed), {"epoch": epoch, "step": step_no})
            if pending is not None:
                record(*pending)
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
            if is_primary() and (progress if verbose is None else verbose):
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
        if log:
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
