"""The epochs of a :func:`jaxcnn.train.fit` run: the steps of one epoch, then validation and the callbacks."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from jaxcnn import data as data_lib
from jaxcnn.train import callbacks as cb
from jaxcnn.train.batches import grouped, process_batches, take
from jaxcnn.train.evaluate import evaluate
from jaxcnn.train.fit_setup import FitPlan
from jaxcnn.train.losses import LossFn


def run_epochs(
    run: cb.Run,
    callback: cb.Callback,
    plan: FitPlan,
    model: Any,
    loss_fn: LossFn,
    steps: tuple,
    placed: dict,
    steps_per_call: int,
) -> None:
    """The epochs still to run: train, validate, report; until done or a callback stops the run."""
    train_step, single_step, eval_step = steps
    for epoch in range(run.step // plan.per_epoch, run.epochs):
        callback.on_epoch_begin(run, epoch)
        record = train_epoch(run, callback, plan, epoch, train_step, single_step, placed, steps_per_call)
        if record is None or run.diverged:
            return
        if plan.x_val is not None and plan.y_val is not None:  # set together
            val = evaluate(
                model,
                run.state(),
                plan.x_val,
                plan.y_val,
                loss=loss_fn,
                batch_size=plan.eval_batch_size,
                step=eval_step,
            )
            record.update({"val_loss": val["loss"], "val_accuracy": val.get("accuracy")})
        run.history.append(record)
        callback.on_epoch_end(run, epoch, record)
        if run.stopped:
            return


def train_epoch(
    run: cb.Run,
    callback: cb.Callback,
    plan: FitPlan,
    epoch: int,
    train_step,
    single_step,
    placed: dict,
    steps_per_call: int,
) -> dict | None:
    """Run the steps of ``epoch`` still to do on ``placed["state"]``; returns the epoch record (``None`` if cut short).

    Metrics are read one step late: reading them waits for the step, and the
    next step is already dispatched by then, so the device never idles on
    Python -- except after a step a callback wants the state of (a checkpoint),
    whose metrics are read, and checked, first.
    """
    skip = max(run.step - epoch * plan.per_epoch, 0)
    todo = min(plan.per_epoch - skip, run.total_steps - run.step)
    it = process_batches(
        plan.x_train,
        plan.y_train,
        plan.batch_size,
        train_step.process_rows(plan.padded_size),
        remainder=plan.remainder,
        weights=plan.weights,
        padded_size=plan.padded_size,
        shuffle=True,
        seed=plan.seed,
        epoch=epoch,
        start=skip,
    )

    def place(item):  # runs in the prefetch thread: host-to-device copies overlap the step
        k, batch, real = item
        step = train_step if k == steps_per_call else single_step
        return k, step.place_batch(batch, global_size=plan.padded_size), real

    losses, accs, seen, t0, pending = [], [], 0, time.perf_counter(), None

    def record(step, metrics, k, first):
        m = step.fetch_metrics(metrics)
        loss, acc = np.atleast_1d(m["loss"]), np.atleast_1d(m.get("accuracy", np.full(k, np.nan)))
        probes = {key: np.asarray(m[key]).reshape(k, -1) for key in ("finite", "params_finite") if key in m}
        labels_ok = np.atleast_1d(m.get("labels_ok", np.ones(k, bool)))
        for i in range(k):
            losses.append(float(loss[i]))
            accs.append(float(acc[i]))
            callback.on_step_end(
                run,
                first + i + 1,
                {
                    "epoch": epoch,
                    "loss": float(loss[i]),
                    **{key: probe[i] for key, probe in probes.items()},
                    "labels_ok": bool(labels_ok[i]),
                    "accuracy": None if np.isnan(acc[i]) else float(acc[i]),
                },
            )
            if run.diverged:
                return

    for k, batch, real in data_lib.prefetch(grouped(take(it, todo), steps_per_call), size=2, put=place):
        step = train_step if k == steps_per_call else single_step
        placed["state"], metrics = step(placed["state"], batch)
        if pending is not None:
            record(*pending)
        pending = (step, metrics, k, run.step)
        run.step += k
        seen += real
        if callback.wants_state_at(run.step) or run.stopped:
            record(*pending)
            pending = None
        if run.stopped:
            break
    if pending is not None:
        record(*pending)
    if run.diverged or run.step < (epoch + 1) * plan.per_epoch:
        return None
    seconds = time.perf_counter() - t0
    train_acc = float(np.nanmean(accs)) if accs and not np.all(np.isnan(accs)) else None
    return {
        "epoch": epoch,
        "step": run.step,
        "train_loss": float(np.mean(losses)),
        "train_accuracy": train_acc,
        "seconds": seconds,
        "images_per_s": seen / max(seconds, 1e-9),
    }
