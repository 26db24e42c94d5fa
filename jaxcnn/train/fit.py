"""The training loop: epochs of compiled steps, validation, callbacks, the test set once at the end."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import traverse_util

from jaxcnn import _validate
from jaxcnn import data as data_lib
from jaxcnn.models.inputs import check_input
from jaxcnn.train import callbacks as cb
from jaxcnn.train.checkpoint import Checkpointer
from jaxcnn.train.distributed import is_primary
from jaxcnn.train.epoch import run_epochs
from jaxcnn.train.evaluate import evaluate
from jaxcnn.train.fit_setup import FitPlan, plan_fit
from jaxcnn.train.freeze import freeze_optimizer
from jaxcnn.train.losses import LossFn, get_loss
from jaxcnn.train.model_api import check_model
from jaxcnn.train.oom import oom_guard
from jaxcnn.train.partition import DEFAULT_MIN_SIZE
from jaxcnn.train.state import TrainState, create_train_state
from jaxcnn.train.step import make_eval_step, make_train_step


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
      state: the returned training state (an ordinary, unplaced copy): the best
        epoch's with ``EarlyStopping(restore_best=True)``, else the last.
      history: one record per epoch: ``epoch``, ``step``, ``train_loss``,
        ``train_accuracy``, ``val_loss``/``val_accuracy`` (with validation),
        ``seconds``, ``images_per_s``.
      test: the test split's metrics, evaluated once after training with the
        returned state (``None`` when the data set has no test examples).
      best: ``{"epoch", "step", "monitor", "value"}`` of the returned best state, or ``None``.
      stopped_early: whether a callback stopped training.
      stop_reason: why, in words.
      out_dir: where logs, curves and checkpoints went (or ``None``).
    """

    state: TrainState
    history: list[dict[str, Any]]
    test: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    stopped_early: bool = False
    stop_reason: str | None = None
    out_dir: Path | None = None

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def fit(
    model: Any,
    dataset: data_lib.Dataset,
    tx: optax.GradientTransformation | None,
    *,
    loss: str | LossFn = "cross_entropy",
    epochs: int = 5,
    batch_size: int = 128,
    validation: float | data_lib.Dataset | tuple | None = None,
    strategy: str | None = None,
    seed: int = 0,
    out_dir: Any = None,
    checkpoint_every: int | None = None,
    keep_checkpoints: int = 3,
    resume: bool = False,
    resume_from: int | None = None,
    early_stopping: int | cb.EarlyStopping | None = None,
    callbacks: tuple | list = (),
    steps_per_call: int = 1,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    eval_batch_size: int | None = None,
    state: TrainState | None = None,
    devices: Any = None,
    progress: bool = True,
    verbose: bool | None = None,
    max_steps: int | None = None,
    remainder: str = "drop",
    model_parallel: int = 1,
    min_shard_size: int = DEFAULT_MIN_SIZE,
    batch_split: int | str = "auto",
    grad_accum: int = 1,
    trainable: Any = None,
    update_frozen_stats: bool = False,
    class_weight: Any = None,
    sample_weight: Any = None,
    nan_guard: bool = True,
) -> FitResult:
    """Train ``model`` on ``dataset`` with ``tx``; validate every epoch; test once, at the end.

    The loop (:func:`jaxcnn.train.epoch.train_epoch` per epoch) calls the :mod:`callbacks
    <jaxcnn.train.callbacks>`; every file it writes, every stopping rule and
    the checkpoint policy are callbacks, built from the arguments below and
    followed by ``callbacks``.

    * **Validation.** ``validation=0.1`` carves a fixed, stratified split
      (seeded by ``seed``) off the training set; a Dataset uses its *test*
      split as the validation set; ``(x, y)`` arrays are used as given.
      Per-epoch metrics, early stopping and "best" selection read validation
      metrics only. The test split is evaluated once, after training
      (``FitResult.test``); nothing that selects ever reads it.
    * **Epochs.** ``epochs`` more epochs from where the state is (0 for a fresh
      one): ``fit(state=s, epochs=2)`` trains two more. ``resume=True``
      continues the interrupted run in ``out_dir`` to the end it planned.
      Epoch ``e`` visits the data in the order ``batches(seed=seed, epoch=e)``
      with ``e`` counted from step 0, and randomness depends only on ``seed``
      and the step, so continuing and resuming are bit-identical to an
      uninterrupted run.
    * **Any batch size on any device count.** A global batch the data-parallel
      device count does not divide is padded with weight-0 rows (exact:
      weighted loss, masked BatchNorm statistics).
    * **Weights.** ``class_weight`` (a dict or ``(C,)`` sequence) and
      ``sample_weight`` (``(N_train,)``) weight each example's loss; the loss
      is ``sum_i w_i l_i / sum_i w_i`` (PyTorch's weighted mean). Examples
      with weight 0 are also left out of BatchNorm statistics.
    * **Freezing.** ``trainable`` (a pytree of bools like the params,
      :func:`jaxcnn.models.freeze_mask`) freezes the other parameters and, unless
      ``update_frozen_stats``, their layers' BatchNorm statistics.
    * **NaN guard** (``nan_guard``, on by default): the first non-finite loss or
      update stops training, nothing of the bad state is checkpointed, and
      :class:`~jaxcnn.train.callbacks.TrainingDiverged` is raised naming the
      step and the first non-finite parameter.

    Several processes (after :func:`jaxcnn.train.distributed.initialize`): every
    process calls ``fit`` with the same arguments; each reads only its rows of
    every global batch; process 0 alone writes the logs; ``out_dir`` must be
    shared.

    Args:
      model: a Flax linen module (``train`` keyword optional), or an NNX module.
      dataset: a :class:`jaxcnn.data.Dataset`.
      tx: an optax optimizer (see :func:`jaxcnn.train.make_optimizer`); with
        ``state``, ``None`` trains on with the state's own optimizer and its
        moments, and a new ``tx`` starts afresh on the state's parameters.
      loss: per-example loss name or function.
      epochs: epochs to train in this call, >= 1.
      batch_size: global batch size (real examples per step).
      validation: a fraction in (0, 1), a Dataset, ``(x_val, y_val)`` or ``None``.
      strategy: "jit", "pmap", "sharded", "shard_map" or ``None`` (sharded on several devices).
      seed: initializes the model, orders the batches, seeds dropout and the split.
      out_dir: writes ``metrics.jsonl``, ``metrics.csv``, ``curves.png`` and
        ``checkpoints/`` (``best/`` with early stopping) there.
      checkpoint_every: also checkpoint every this many steps (needs ``out_dir``).
      keep_checkpoints: how many recent checkpoints to keep.
      resume: continue from the newest checkpoint in ``out_dir`` that verifies;
        without it an ``out_dir`` holding checkpoints is an error.
      resume_from: resume from this step's checkpoint instead.
      early_stopping: patience in epochs on ``val_loss`` (returns the best
        state), or an :class:`~jaxcnn.train.callbacks.EarlyStopping`.
      callbacks: more :class:`~jaxcnn.train.callbacks.Callback` objects (run
        after the NaN guard and before the built-in loggers).
      steps_per_call: run this many steps per dispatch (see :func:`make_train_step`).
      augment: ``augment(key, x) -> x``, pure JAX, applied inside the step.
      eval_batch_size: evaluation batch size (default ``batch_size``).
      state: start from this state (training on with ``tx=None``, or fine-tuning with a new ``tx``).
      devices: devices to use (default all).
      progress: show a progress bar; verbose: a line per epoch (default: as progress).
      max_steps: stop after this many steps of this call.
      remainder: "drop" the last partial batch of an epoch, or "pad" it (exact).
      model_parallel, min_shard_size, batch_split, grad_accum: see :func:`make_train_step`.
      trainable, update_frozen_stats: see Freezing above.
      class_weight, sample_weight: see Weights above.
      nan_guard: stop at the first non-finite loss or update.

    Returns:
      A :class:`FitResult`.

    Raises:
      TrainingDiverged: the NaN guard stopped training.
    """
    model = check_model(model)
    loss_fn = get_loss(loss)
    plan = plan_fit(
        dataset,
        batch_size=batch_size,
        epochs=epochs,
        validation=validation,
        seed=seed,
        remainder=remainder,
        class_weight=class_weight,
        sample_weight=sample_weight,
        eval_batch_size=eval_batch_size,
        max_steps=max_steps,
    )
    state, tx = _optimizer(state, tx, trainable)
    common = {"devices": devices, "model_parallel": model_parallel, "min_shard_size": min_shard_size}
    step_kw = {
        "augment": augment,
        "batch_split": batch_split,
        "grad_accum": grad_accum,
        "trainable": trainable,
        "update_frozen_stats": update_frozen_stats,
        "guard": nan_guard,
        **common,
    }
    train_step = make_train_step(model, loss_fn, strategy, steps_per_call=steps_per_call, **step_kw)
    single_step = train_step if steps_per_call == 1 else make_train_step(model, loss_fn, train_step.strategy, **step_kw)
    eval_step = make_eval_step(model, loss_fn, train_step.strategy, **common)
    plan = plan.for_devices(train_step.data_parallel)
    if state is None:
        state = create_train_state(model, tx, jax.ShapeDtypeStruct((1, *plan.input_shape), jnp.float32), seed=seed)
    if isinstance(model, nn.Module):  # the data fits the model: one clear error before anything compiles
        check_input(model, state.variables(), plan.x_train[:1])
    out = Path(out_dir) if out_dir is not None else None
    state, run_start, planned, total, restored = _starting_point(
        state, plan, out, resume, resume_from, max_steps, checkpoint_every
    )
    run = cb.Run(
        name=out.name if out else "run",
        out_dir=out,
        primary=is_primary(),
        epochs=-(-total // plan.per_epoch),
        steps_per_epoch=plan.per_epoch,
        total_steps=total,
        step=int(state.step),
        config={
            **plan.describe(),
            "strategy": train_step.strategy,
            "devices": train_step.num_devices,
            "processes": jax.process_count(),
            "run_start": run_start,
            "planned_steps": planned,
            **({"restored": restored} if restored else {}),
        },
        param_paths=tuple("/".join(map(str, p)) for p in traverse_util.flatten_dict(state.params)),
    )
    callback = cb.CallbackList(
        _default_callbacks(
            out,
            run.primary,
            progress,
            verbose,
            early_stopping,
            nan_guard,
            checkpoint_every,
            keep_checkpoints,
            plan,
            list(callbacks),
        )
    )
    placed = {"state": train_step.place_state(state)}  # the one live (donated, replaced each step) copy

    def update_state(fn):
        placed["state"] = train_step.place_state(fn(jax.device_get(train_step.fetch_state(placed["state"]))))

    run.fetch_state = lambda: train_step.fetch_state(placed["state"])
    run.update_state = update_state
    callback.on_train_begin(run)
    try:
        with oom_guard(
            f"training {type(model).__name__} with strategy {train_step.strategy!r}", batch_size=plan.padded_size
        ):
            run_epochs(
                run, callback, plan, model, loss_fn, (train_step, single_step, eval_step), placed, steps_per_call
            )
    finally:
        callback.on_train_end(run)
    if run.diverged:
        raise cb.TrainingDiverged(
            f"training stopped: {run.stop_reason}; no checkpoint of a non-finite state was "
            f"written (the last good one is kept). Diagnose with "
            f"jax.config.update('jax_debug_nans', True)"
        )
    final = run.best["state"] if run.best is not None else jax.device_get(run.state())
    test = None
    if len(dataset.y_test):
        test = evaluate(
            model, final, dataset.x_test, dataset.y_test, loss=loss_fn, batch_size=plan.eval_batch_size, step=eval_step
        )
        if out and run.primary:
            cb.MetricsLog(out / "metrics.jsonl").write({"kind": "test", "step": int(final.step), **test})
    best = None if run.best is None else {k: v for k, v in run.best.items() if k != "state"}
    return FitResult(final, run.history, test, best, run.stopped, run.stop_reason, out)


def _optimizer(state: TrainState | None, tx: Any, trainable: Any) -> tuple[TrainState | None, Any]:
    """The optimizer of the run: ``tx`` (frozen where ``trainable`` is False), or the state's own.

    Given a ``state``: with ``tx=None`` and no ``trainable`` it trains on with its
    own optimizer and optimizer state; otherwise its parameters, statistics,
    step and key are kept and the new optimizer starts from a fresh state.
    """
    if state is not None and not isinstance(state, TrainState):
        raise TypeError(f"state must be a jaxcnn.train.TrainState or None, got {_validate.fmt(state)}")
    if tx is None and state is None:
        raise TypeError(
            "tx must be an optax.GradientTransformation (e.g. make_optimizer('adam', 1e-3)); "
            "tx=None is for training on from a state with its own optimizer"
        )
    if tx is not None and not isinstance(tx, optax.GradientTransformation):
        raise TypeError(f"tx must be an optax.GradientTransformation, got {_validate.fmt(tx)}")
    if tx is None:
        assert state is not None  # tx=None without a state is refused above
        if trainable is None:
            return state, state.tx
        tx = state.tx
    tx = freeze_optimizer(tx, trainable) if trainable is not None else tx
    if state is not None:
        state = state.replace(tx=tx, opt_state=tx.init(state.params))
    return state, tx


def _starting_point(state, plan: FitPlan, out, resume, resume_from, max_steps, checkpoint_every):
    """``(state, run_start, planned_end, stop_at, restored)``: restore on resume, else train on from ``state``.

    ``planned_end`` is the step the run's ``epochs`` end at (kept in every
    checkpoint, so a resumed run finishes the plan); ``stop_at`` is where this
    call stops (``max_steps`` may stop it earlier); ``restored`` says which
    checkpoint a resume read and which newer ones it skipped (they failed
    their checksum), or ``None``.
    """
    resume = _validate.check_bool(resume, "resume")
    if (resume or resume_from is not None) and out is None:
        raise ValueError("resume=True needs out_dir (the run folder whose checkpoints to continue from)")
    if checkpoint_every is not None and out is None:
        raise ValueError("checkpoint_every needs out_dir (where to write the checkpoints)")
    run_start, total, restored = int(state.step), None, None
    if out is not None:
        ckpt = Checkpointer(out / "checkpoints")
        latest = ckpt.latest_step()
        if resume or resume_from is not None:
            if latest is None:
                raise ValueError(f"resume=True but {str(out)!r} holds no checkpoint to resume from")
            state, meta = ckpt.restore(state, resume_from)
            run_start, total, restored = (
                int(meta.get("run_start", 0)),
                meta.get("planned_steps"),
                str(ckpt.last_restore),
            )
        elif latest is not None:
            raise ValueError(
                f"{str(out)!r} already holds checkpoints (latest step {latest}); pass resume=True "
                f"(--resume) to continue that run, or choose another out_dir"
            )
    planned = int(run_start + plan.per_epoch * plan.epochs if total is None else total)
    stop_at = planned if max_steps is None else min(planned, int(state.step) + plan.check_max_steps(max_steps))
    return state, run_start, planned, stop_at, restored


def _default_callbacks(
    out, primary, progress, verbose, early_stopping, nan_guard, checkpoint_every, keep, plan: FitPlan, user: list
) -> list[cb.Callback]:
    """The callbacks ``fit``'s arguments ask for, in the order they run: the NaN guard, the user's
    (so what they add to an epoch record is logged), early stopping, progress, checkpoints, files."""
    out_list: list[cb.Callback] = [cb.TerminateOnNaN()] if nan_guard else []
    out_list += user
    if early_stopping is not None:
        if not isinstance(early_stopping, cb.EarlyStopping):
            early_stopping = cb.EarlyStopping("val_loss", patience=early_stopping)
        if plan.x_val is None:
            raise ValueError("early_stopping needs validation= (a fraction or a data set): it never reads the test set")
        out_list.append(early_stopping)
    out_list.append(
        cb.ProgressBar(verbose=progress if verbose is None else verbose) if progress or verbose else cb.Callback()
    )
    if out is not None:
        out_list.append(cb.ModelCheckpoint(out / "checkpoints", every_steps=checkpoint_every, keep=keep))
        if primary:
            out_list += [
                cb.JsonlLogger(out / "metrics.jsonl"),
                cb.CSVLogger(out / "metrics.csv"),
                cb.CurvesPlot(out / "metrics.jsonl", out / "curves.png"),
            ]
    return out_list
