"""Callbacks that steer training: early stopping (with the best state), LR reduction, the NaN guard."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxcnn import _validate
from jaxcnn.train.callbacks.base import Callback, Run, improved
from jaxcnn.train.checks import all_finite

MODES = ("min", "max")


def _mode_for(monitor: str, mode: str) -> str:
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return _validate.check_choice(mode, "mode", MODES)


def _monitored(record: dict[str, Any], monitor: str, who: str) -> float | None:
    if monitor not in record:
        available = sorted(k for k in record if k not in ("epoch", "step"))
        raise ValueError(
            f"{who} monitors {monitor!r}, which the epoch records do not have (they have {available}); "
            f"validation metrics (val_*) need fit(validation=...)"
        )
    value = record[monitor]
    return None if value is None else float(value)


class _Plateau(Callback):
    """Watches one epoch metric: ``_improved(record)`` says whether it beat the best by ``min_delta``,
    counting the epochs since in ``since_best``."""

    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a metric name such as 'val_loss', got {_validate.fmt(monitor)}")
        if monitor.startswith("test_"):
            raise ValueError(f"monitor={monitor!r}: nothing that selects may read the test set; monitor a val_* metric")
        self.monitor, self.mode = monitor, _mode_for(monitor, mode)
        self.patience = _validate.as_int(patience, "patience")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1 epoch, got {self.patience}")
        self.min_delta = _validate.check_nonnegative(min_delta, "min_delta")
        self.best_value: float | None = None
        self.since_best = 0

    def _improved(self, record: dict[str, Any]) -> bool:
        value = _monitored(record, self.monitor, type(self).__name__)
        if value is not None and improved(value, self.best_value, self.mode, self.min_delta):
            self.best_value, self.since_best = value, 0
            return True
        self.since_best += 1
        return False


class EarlyStopping(_Plateau):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Args:
      monitor: an epoch-record key, e.g. "val_loss" or "val_accuracy" (never a
        test metric: the test set is read once, after training).
      mode: "min", "max" or "auto" ("max" for accuracies).
      patience: epochs without improvement before stopping, >= 1.
      min_delta: the smallest change that counts as an improvement, >= 0.
      restore_best: keep a copy of the state of the best epoch; :func:`fit`
        then returns it (and checkpoints it), and ``FitResult.best`` says which.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "auto",
        patience: int = 3,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ):
        super().__init__(monitor, mode, patience, min_delta)
        self.restore_best = _validate.check_bool(restore_best, "restore_best")

    def on_epoch_end(self, run: Run, epoch: int, record: dict[str, Any]) -> None:
        if self._improved(record):
            if self.restore_best:
                run.best = {
                    "epoch": epoch,
                    "step": record["step"],
                    "monitor": self.monitor,
                    "value": self.best_value,
                    "state": jax.device_get(run.state()),
                }
        elif self.since_best >= self.patience:
            run.stop(
                f"early stopping: {self.monitor} did not improve for {self.patience} epochs (best {self.best_value})"
            )


class ReduceLROnPlateau(_Plateau):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving for ``patience`` epochs.

    The optimizer must carry its learning rate as a hyperparameter:
    ``optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)``.

    Args:
      monitor, mode, min_delta: as :class:`EarlyStopping`.
      factor: in ``(0, 1)``.
      patience: epochs without improvement before each reduction.
      min_lr: the learning rate never goes below this.

    Attributes:
      reductions: ``(epoch, new learning rate)`` of every reduction.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "auto",
        factor: float = 0.1,
        patience: int = 2,
        min_delta: float = 0.0,
        min_lr: float = 0.0,
    ):
        super().__init__(monitor, mode, patience, min_delta)
        self.factor = float(factor)
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        self.min_lr = _validate.check_nonnegative(min_lr, "min_lr")
        self.reductions: list[tuple[int, float]] = []

    def on_epoch_end(self, run: Run, epoch: int, record: dict[str, Any]) -> None:
        if not self._improved(record) and self.since_best >= self.patience:
            self.since_best = 0
            lr: list[float] = []
            if run.update_state is None:
                raise RuntimeError("the run's state cannot be updated outside fit")
            run.update_state(lambda state: self._scaled(state, lr))
            self.reductions.append((epoch, lr[0]))
            record["lr"] = lr[0]

    def _scaled(self, state: Any, found: list[float]) -> Any:
        def visit(node: Any) -> Any:
            hp = getattr(node, "hyperparams", None)
            if isinstance(hp, dict) and "learning_rate" in hp:
                old = np.asarray(hp["learning_rate"])
                lr = max(float(old) * self.factor, self.min_lr)
                found.append(lr)
                return node._replace(hyperparams={**hp, "learning_rate": np.asarray(lr, old.dtype)})
            return node

        opt_state = jax.tree.map(visit, state.opt_state, is_leaf=lambda n: hasattr(n, "hyperparams"))
        if not found:
            raise ValueError(
                "ReduceLROnPlateau needs the learning rate as an optimizer hyperparameter: build the optimizer "
                "with optax.inject_hyperparams, e.g. optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)"
            )
        return state.replace(opt_state=opt_state)


class TerminateOnNaN(Callback):
    """The NaN guard: stop at the first step whose loss or update is not finite, or whose labels are not classes.

    The step reports, per parameter leaf, whether its gradients are finite
    (``metrics["finite"]``) or, when its batch is split, whether the parameters
    it *starts from* are (``metrics["params_finite"]``, see
    :func:`jaxcnn.train.train_step_body`); then step ``t``'s non-finite update
    is seen in step ``t + 1``'s metrics and reported as step ``t``'s. Wherever
    another callback reads the state after a step (a checkpoint, the epoch's
    end) this guard first checks that state's parameters itself, so a
    non-finite state is never handed on. The message names the step and the
    first non-finite gradient or parameter path; :func:`fit` then writes no
    checkpoint of the bad state and raises :class:`TrainingDiverged`. For the
    operation that made the first NaN, rerun with
    ``jax.config.update("jax_debug_nans", True)``.
    """

    def __init__(self) -> None:
        self._last_loss = float("nan")

    def on_step_end(self, run: Run, step: int, metrics: dict[str, Any]) -> None:
        loss = float(metrics["loss"])
        if not metrics.get("labels_ok", True):
            run.diverged = {"step": step, "loss": loss, "path": None}
            run.stop(
                f"the batch of step {step} holds labels outside [0, num_classes): check the data set's labels "
                f"and the model's num_classes"
            )
            return
        entering = np.asarray(metrics.get("params_finite", np.ones(0, bool)), bool)
        grads = np.asarray(metrics.get("finite", np.ones(0, bool)), bool)
        if not entering.all():  # the update of the step before made them non-finite
            self._diverge(run, step - 1, self._last_loss, _paths(run, np.flatnonzero(~entering)))
        elif not (np.isfinite(loss) and grads.all()):
            self._diverge(run, step, loss, _paths(run, np.flatnonzero(~grads)))
        elif step == run.step and run.fetch_state is not None:  # callbacks are about to read this state
            leaves = jax.tree.leaves(run.state().params)
            bad = _paths(run, [i for i, leaf in enumerate(leaves) if not all_finite(leaf)])
            if bad:
                self._diverge(run, step, loss, bad)
        self._last_loss = loss

    @staticmethod
    def _diverge(run: Run, step: int, loss: float, bad: list[str]) -> None:
        where = f"; first non-finite gradient or parameter: {bad[0]} ({len(bad)} leaves)" if bad else ""
        run.diverged = {"step": step, "loss": loss, "path": bad[0] if bad else None}
        run.stop(f"non-finite loss or update at step {step} (loss {loss}){where}")


def _paths(run: Run, indices: Any) -> list[str]:
    """Parameter paths (``run.param_paths``, in ``jax.tree.leaves`` order) of leaf ``indices``."""
    return [run.param_paths[i] if i < len(run.param_paths) else str(i) for i in indices]


class TrainingDiverged(RuntimeError):
    """Raised by :func:`jaxcnn.train.fit` when the NaN guard stopped training (the message says where)."""
