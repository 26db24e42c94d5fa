"""The callback protocol: hooks at train, epoch and step begin and end, and the run they see.

:func:`jaxcnn.train.fit` calls, in order::

    on_train_begin(run)
      on_epoch_begin(run, epoch)
        on_step_end(run, step, metrics)        # per step, host numbers, one step late
      on_epoch_end(run, epoch, record)         # record: train_* and val_* means of the epoch
    on_train_end(run)

A callback stops training by calling ``run.stop(reason)``. Everything a callback
may read or change is on the :class:`Run`; nothing is global.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Callback:
    """Base class: every hook does nothing. Subclass and override the hooks you need."""

    def on_train_begin(self, run: Run) -> None:
        pass

    def on_epoch_begin(self, run: Run, epoch: int) -> None:
        pass

    def on_step_end(self, run: Run, step: int, metrics: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, run: Run, epoch: int, record: dict[str, Any]) -> None:
        pass

    def on_train_end(self, run: Run) -> None:
        pass

    def wants_state_at(self, step: int) -> bool:
        """Whether this callback reads ``run.state()`` after ``step`` (the loop then waits for it)."""
        return False


@dataclasses.dataclass
class Run:
    """What a running :func:`fit` shows its callbacks.

    Attributes:
      name: the run's name (its output folder's name, or "run").
      out_dir: where files go, or ``None``.
      primary: whether this process writes files (process 0 of a multi-process run).
      epochs: the last epoch index + 1 this call trains to.
      steps_per_epoch: optimizer steps per epoch.
      total_steps: the step this call stops at.
      step: the current step (steps done so far, counting from the start of the run).
      history: one record per finished epoch.
      config: the run's settings (JSON-serializable), as logged.
      best: set by :class:`~jaxcnn.train.callbacks.EarlyStopping` with
        ``restore_best``: ``{"epoch", "step", "monitor", "value", "state"}``.
      stop_reason: why training stopped early, or ``None``.
      diverged: set by :class:`~jaxcnn.train.callbacks.TerminateOnNaN`:
        ``{"step", "path"}`` of the first non-finite step.
    """

    name: str
    out_dir: Path | None
    primary: bool
    epochs: int
    steps_per_epoch: int
    total_steps: int
    step: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    best: dict[str, Any] | None = None
    stop_reason: str | None = None
    diverged: dict[str, Any] | None = None
    fetch_state: Callable[[], Any] | None = None
    update_state: Callable[[Callable[[Any], Any]], None] | None = None
    param_paths: tuple[str, ...] = ()

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    def stop(self, reason: str) -> None:
        """Stop training (the first reason given is kept).

        A step hook's metrics are read one step late, so the step already
        dispatched when it calls ``stop`` still completes (and reaches
        ``on_step_end``); an epoch hook stops before the next epoch.
        """
        if self.stop_reason is None:
            self.stop_reason = reason

    def state(self) -> Any:
        """An ordinary (host-placed) copy of the current training state."""
        if self.fetch_state is None:
            raise RuntimeError("the run's state is not available outside fit")
        return self.fetch_state()


def improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    """``value`` better than ``best`` by more than ``min_delta`` (``mode`` "min" or "max"); NaN never is."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class CallbackList(Callback):
    """Several callbacks called in order."""

    def __init__(self, callbacks: list[Callback]):
        for i, cb in enumerate(callbacks):
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks[{i}] must be a jaxcnn.train.callbacks.Callback, got {type(cb).__name__}")
        self.callbacks = list(callbacks)

    def on_train_begin(self, run: Run) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(run)

    def on_epoch_begin(self, run: Run, epoch: int) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(run, epoch)

    def on_step_end(self, run: Run, step: int, metrics: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_step_end(run, step, metrics)

    def on_epoch_end(self, run: Run, epoch: int, record: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(run, epoch, record)

    def on_train_end(self, run: Run) -> None:
        for cb in self.callbacks:
            cb.on_train_end(run)

    def wants_state_at(self, step: int) -> bool:
        return any(cb.wants_state_at(step) for cb in self.callbacks)
