"""Checkpoints of a :class:`~jaxcnn.train.TrainState` with orbax-checkpoint, checksummed.

Each checkpoint is a directory ``<dir>/<step>/`` holding the state (params,
batch_stats, opt_state, rng, step), a JSON ``meta`` record (epoch, config) and
a content checksum (:mod:`jaxcnn.train.checksum`: SHA-256 of every file,
written atomically once the save is complete). What this module guarantees:

* **Atomic saves.** Orbax writes into a temporary directory and renames it when
  complete; the checksum is written after that. An interrupted save leaves the
  earlier checkpoints untouched.
* **Verified restores.** A checkpoint is used only if its files match its
  checksum. ``restore(step=None)`` takes the newest checkpoint that verifies and
  says which ones it skipped and why (:attr:`Checkpointer.last_restore`, and a
  ``logging`` warning); ``restore(step=S)`` takes exactly that one or raises a
  :class:`CheckpointError` naming the step, the path and the reason.
* **Rotation that cannot eat good checkpoints.** ``keep`` counts *verified*
  checkpoints: the newest ``keep`` of them stay, so a corrupt or unverified
  checkpoint never pushes a good one out, and the last verified one is never
  deleted. Given explicitly, ``keep`` is also re-applied when the directory is
  opened (a run killed between a save and its pruning).
* **No bad state written.** ``save`` refuses, by default, a state holding NaN or
  infinity (``require_finite``), naming the first offending parameter path.
* **Never overwrite a good checkpoint.** A step that already has a verified
  checkpoint is refused; one that fails verification is moved aside to
  ``<dir>/quarantine/`` (not deleted) before the new save of that step.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from jaxcnn import _validate
from jaxcnn.train import checksum
from jaxcnn.train.checks import first_nonfinite
from jaxcnn.train.state import TrainState

STATE_FIELDS = ("step", "params", "batch_stats", "opt_state", "rng")
DEFAULT_KEEP = 3
QUARANTINE = "quarantine"
_TRASH = ".deleting-"
log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint exists but cannot be used (unreadable, corrupt, or of another model), or may not be written.

    Attributes:
      reason: the short reason (a checksum mismatch, a read error), when there is one.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class RestoreReport:
    """Which checkpoint :meth:`Checkpointer.restore` used and which newer ones it skipped.

    Attributes:
      step: the step restored.
      path: its directory.
      skipped: ``(step, reason)`` for every newer checkpoint that failed, newest first.
    """

    step: int
    path: str
    skipped: tuple[tuple[int, str], ...] = ()

    def __str__(self) -> str:
        if not self.skipped:
            return f"restored checkpoint of step {self.step} ({self.path})"
        why = "; ".join(f"step {s}: {r}" for s, r in self.skipped)
        return f"restored checkpoint of step {self.step} ({self.path}), the newest that verifies; skipped {why}"


def state_to_tree(state: TrainState) -> dict[str, Any]:
    """The arrays of ``state`` as nested dicts (what is written to disk)."""
    return {name: serialization.to_state_dict(getattr(state, name)) for name in STATE_FIELDS}


def tree_to_state(template: TrainState, tree: dict[str, Any]) -> TrainState:
    """Fill ``template``'s structure (incl. ``apply_fn``, ``tx``) with the arrays of ``tree``."""
    fields = {name: serialization.from_state_dict(getattr(template, name), tree[name]) for name in STATE_FIELDS}
    return template.replace(**fields)


class Checkpointer:
    """Save and restore training state under one directory: checksummed, keeping the last ``keep`` good ones.

    Args:
      directory: where ``<step>/`` subdirectories go (created if needed).
      keep: how many *verified* checkpoints to keep (>= 1). ``None`` (default)
        keeps 3 when saving and prunes nothing when the directory is opened, so
        a reader (evaluation, inspection) never deletes anything; an explicit
        value is re-applied at once to an existing directory.

    Only process 0 writes checksums, prunes and quarantines (Orbax writes the
    checkpoint once, from process 0, in a multi-process run).

    Example:
      >>> ckpt = Checkpointer("runs/a/checkpoints", keep=3)          # doctest: +SKIP
      >>> ckpt.save(state, {"epoch": 2})                               # doctest: +SKIP
      >>> state, meta = ckpt.restore(template_state)                   # doctest: +SKIP
      >>> print(ckpt.last_restore)                                     # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int | None = None):
        explicit = keep is not None
        keep = _validate.as_int(DEFAULT_KEEP if keep is None else keep, "keep")
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = keep
        self.directory = Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"checkpoint directory {str(self.directory)!r} exists and is not a directory")
        # Orbax keeps everything; rotation is ours (it must know which checkpoints verify).
        options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True, enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self.last_restore: RestoreReport | None = None
        if explicit:
            self.prune()

    def steps(self) -> list[int]:
        """The steps with a complete checkpoint (verified or not), ascending."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step (verified or not), or ``None``."""
        steps = self.steps()
        return steps[-1] if steps else None

    def path(self, step: int) -> Path:
        """The directory of the checkpoint of ``step``."""
        return self.directory / str(step)

    def verify(self, step: int) -> str | None:
        """``None`` if the checkpoint of ``step`` matches its checksum, else the reason it does not."""
        return checksum.verify(self.path(step))

    def latest_verified_step(self) -> int | None:
        """The newest checkpoint that verifies, or ``None``."""
        return next((s for s in reversed(self.steps()) if self.verify(s) is None), None)

    def save(self, state: TrainState, meta: dict[str, Any] | None = None, *, require_finite: bool = True) -> int:
        """Write ``state`` (and the JSON-serializable ``meta``) as the checkpoint of ``state.step``, then prune.

        Args:
          state: the state (fetched to the host here).
          meta: a JSON-serializable dict stored next to it.
          require_finite: refuse a state whose parameters, statistics or
            optimizer state hold NaN or infinity (so a diverged run can never
            replace good checkpoints by bad ones).

        Returns:
          The step saved.

        Raises:
          CheckpointError: a verified checkpoint of this step exists (it is never
            overwritten), or ``require_finite`` and the state is not finite (the
            message names the first offending path and the last good step).
        """
        require_finite = _validate.check_bool(require_finite, "require_finite")
        state = jax.device_get(state)
        step = int(state.step)
        tree = state_to_tree(state)
        if require_finite:
            bad = first_nonfinite(tree)
            if bad is not None:
                raise CheckpointError(
                    f"refusing to save the checkpoint of step {step} in {str(self.directory)!r}: the state holds "
                    f"non-finite values at {bad}; the last verified checkpoint is step {self.latest_verified_step()}"
                )
        if step in self.steps():
            reason = self.verify(step)
            if reason is None:
                raise CheckpointError(
                    f"a checkpoint for step {step} already exists in {str(self.directory)!r}; refusing to overwrite it"
                )
            self._quarantine(step, reason)
        args = ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(dict(meta or {})))
        # force: Orbax otherwise skips, silently, any step below its latest -- exactly what a run
        # resumed from an older checkpoint (after a fallback) saves next.
        saved = self._manager.save(step, args=args, force=True)
        self._manager.wait_until_finished()
        if not saved:
            raise CheckpointError(f"orbax declined to save the checkpoint of step {step} in {str(self.directory)!r}")
        if jax.process_index() == 0:
            checksum.write(self.path(step))
        self.prune()
        return step

    def prune(self) -> list[int]:
        """Apply ``keep``: delete what is older than the ``keep``-th newest verified checkpoint.

        Newest first, checkpoints are verified until ``keep`` good ones are found;
        every checkpoint older than the last of those is deleted. Corrupt or
        unverified checkpoints *newer* than it stay (they never count towards
        ``keep``, so they never push a good one out). With fewer than ``keep``
        verified checkpoints nothing is deleted.

        Returns:
          The steps deleted (empty on processes other than 0).
        """
        if jax.process_index() != 0 or not self.directory.is_dir():
            return []
        steps = self.steps()
        good = 0
        for i in range(len(steps) - 1, -1, -1):
            good += self.verify(steps[i]) is None
            if good == self.keep:
                doomed = steps[:i]
                break
        else:
            return []
        for s in doomed:  # renamed first (atomic), so a kill mid-delete never leaves half a checkpoint
            os.replace(self.path(s), self.directory / f"{_TRASH}{s}-{os.getpid()}")
        if doomed:
            self._manager.reload()
        for leftover in self.directory.glob(f"{_TRASH}*"):  # also those of an earlier, killed prune
            shutil.rmtree(leftover, ignore_errors=True)
        return doomed

    def _quarantine(self, step: int, reason: str) -> None:
        """Move a checkpoint that fails verification to ``<dir>/quarantine/<step>-<time>`` (kept, not deleted)."""
        if jax.process_index() == 0:
            target = self.directory / QUARANTINE / f"{step}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
            target.parent.mkdir(exist_ok=True)
            os.replace(self.path(step), target)
            log.warning("checkpoint of step %d fails verification (%s); moved to %s", step, reason, target)
        self._manager.reload()

    def restore(
        self, template: TrainState, step: int | None = None, *, verify: bool = True
    ) -> tuple[TrainState, dict[str, Any]]:
        """Read a verified checkpoint into ``template``'s structure: the newest one that verifies by default.

        Args:
          template: a state of the same model and optimizer (e.g. freshly
            created); only its structure, shapes and dtypes are used.
          step: which checkpoint; ``None`` for the newest that verifies and reads
            (newer ones that fail are skipped and reported).
          verify: check the checksum first (``False`` reads a checkpoint written
            without one, e.g. by an older jaxcnn; at your own risk).

        Returns:
          ``(state, meta)`` with host (NumPy) arrays. :attr:`last_restore` (a
          :class:`RestoreReport`) says which step was used and which were skipped.

        Raises:
          FileNotFoundError: no directory, no checkpoints, or no checkpoint of ``step``.
          CheckpointError: the checkpoint of ``step`` fails verification, cannot be
            read or does not fit ``template``; with ``step=None``, no checkpoint
            verifies (every reason is listed).
        """
        verify = _validate.check_bool(verify, "verify")
        if not self.directory.is_dir():
            raise FileNotFoundError(f"no checkpoint directory at {str(self.directory)!r}")
        steps = self.steps()
        if not steps:
            raise FileNotFoundError(f"no complete checkpoints in {str(self.directory)!r}")
        if step is not None:
            step = _validate.as_int(step, "step")
            if step not in steps:
                raise FileNotFoundError(f"no checkpoint of step {step} in {str(self.directory)!r}; available: {steps}")
        skipped: list[tuple[int, str]] = []
        for s in [step] if step is not None else reversed(steps):
            try:
                state, meta = self._restore_one(template, s, verify, [t for t in steps if t != s])
            except CheckpointError as e:
                if step is not None:
                    raise
                skipped.append((s, e.reason or str(e)))
                log.warning("%s", e)
                continue
            self.last_restore = RestoreReport(s, str(self.path(s)), tuple(skipped))
            if skipped:
                log.warning("%s", self.last_restore)
            return state, meta
        raise CheckpointError(
            f"no checkpoint in {str(self.directory)!r} verifies and restores: "
            + "; ".join(f"step {s}: {r}" for s, r in skipped)
        )

    def _restore_one(
        self, template: TrainState, step: int, verify: bool, others: list[int]
    ) -> tuple[TrainState, dict[str, Any]]:
        """Verify (if asked) and read one checkpoint; a :class:`CheckpointError` with ``.reason`` if it fails."""
        reason = self.verify(step) if verify else None
        if reason is None:
            target = jax.tree.map(
                lambda a: np.zeros(np.shape(a), np.asarray(a).dtype), state_to_tree(jax.device_get(template))
            )
            args = ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
            try:
                restored = self._manager.restore(step, args=args)
                return tree_to_state(template, jax.tree.map(np.asarray, restored.state)), dict(restored.meta or {})
            except Exception as e:  # noqa: BLE001 -- orbax/tensorstore raise many kinds; say which and why
                reason = f"{type(e).__name__}: {str(e)[:300]}; it may be corrupt or from another model"
        raise CheckpointError(
            f"checkpoint of step {step} in {str(self.path(step))!r} could not be restored: {reason}. "
            f"Other checkpoints: {others}",
            reason,
        )
