"""The checkpoint policy as a callback: every ``k`` steps, at the end, and the best epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jaxcnn import _validate
from jaxcnn.train.callbacks.base import Callback, Run
from jaxcnn.train.checkpoint import Checkpointer


class ModelCheckpoint(Callback):
    """Save the training state under ``directory`` (:class:`jaxcnn.train.Checkpointer`, keep-last-``keep``).

    * ``every_steps=k``: after every ``k``-th step (the loop waits for that
      step's metrics first, so the NaN guard has checked it);
    * at the end of training, unless training diverged (a non-finite state is
      never written, so it can never rotate a good checkpoint away);
    * ``best``: the state of the best epoch (``run.best``, from
      :class:`EarlyStopping` with ``restore_best``) in ``directory/../best``.

    Args:
      directory: where ``<step>/`` checkpoints go.
      every_steps: ``None`` or an int >= 1.
      keep: how many recent checkpoints to keep, >= 1.
      best: also keep the best epoch's state.
    """

    def __init__(self, directory: str | Path, *, every_steps: int | None = None, keep: int = 3, best: bool = True):
        if every_steps is not None:
            every_steps = _validate.as_int(every_steps, "checkpoint_every")
            if every_steps < 1:
                raise ValueError(f"checkpoint_every must be None or an int >= 1 (steps), got {every_steps}")
        self.every_steps = every_steps
        self.checkpointer = Checkpointer(directory, keep=keep)
        self.best = best
        self.meta: dict[str, Any] = {}
        self._saved_upto = 0

    def wants_state_at(self, step: int) -> bool:
        """After every step that crosses a multiple of ``every_steps`` (several steps may run per call)."""
        return self.every_steps is not None and step // self.every_steps > self._saved_upto // self.every_steps

    def _save(self, run: Run, state: Any) -> None:
        if self.checkpointer.latest_step() != int(state.step):
            self.checkpointer.save(state, {**self.meta, "step": int(state.step), "epoch": len(run.history)})

    def on_train_begin(self, run: Run) -> None:
        self.meta = {k: run.config[k] for k in ("run_start", "planned_steps") if k in run.config}
        self._saved_upto = run.step

    def on_step_end(self, run: Run, step: int, metrics: dict[str, Any]) -> None:
        # Only once the state's last step is checked: ``run.state()`` is after ``run.step``.
        if step == run.step and self.wants_state_at(step) and not run.diverged:
            self._save(run, run.state())
            self._saved_upto = step

    def on_train_end(self, run: Run) -> None:
        if run.diverged:
            return
        self._save(run, run.state())
        if self.best and run.best is not None:
            best = Checkpointer(self.checkpointer.directory.parent / "best", keep=1)
            if best.latest_step() != int(run.best["state"].step):
                best.save(run.best["state"], {k: v for k, v in run.best.items() if k != "state"})
