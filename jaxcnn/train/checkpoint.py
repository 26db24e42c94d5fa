"""Checkpoints of a :class:`~jaxcnn.train.TrainState` with orbax-checkpoint.

Each checkpoint is a directory ``<dir>/<step>/`` holding the state (params,
batch_stats, opt_state, rng, step) and a JSON ``meta`` record (epoch, config).
Orbax writes into a temporary directory and renames it when complete, so a
checkpoint either exists whole or not at all; an interrupted save leaves the
earlier checkpoints untouched. This module adds: never overwrite a step that
exists, keep the last ``keep``, and clear errors for a missing directory, no
checkpoints, or a checkpoint that cannot be read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from jaxcnn import _validate
from jaxcnn.train.state import TrainState

STATE_FIELDS = ("step", "params", "batch_stats", "opt_state", "rng")


class CheckpointError(ValueError):
    """A checkpoint exists but cannot be used (unreadable, corrupt, or of another model)."""


def state_to_tree(state: TrainState) -> dict[str, Any]:
    """The arrays of ``state`` as nested dicts (what is written to disk)."""
    return {name: serialization.to_state_dict(getattr(state, name)) for name in STATE_FIELDS}


def tree_to_state(template: TrainState, tree: dict[str, Any]) -> TrainState:
    """Fill ``template``'s structure (incl. ``apply_fn``, ``tx``) with the arrays of ``tree``."""
    fields = {name: serialization.from_state_dict(getattr(template, name), tree[name]) for name in STATE_FIELDS}
    return template.replace(**fields)


class Checkpointer:
    """Save and restore training state under one directory, keeping the last ``keep``.

    Args:
      directory: where ``<step>/`` subdirectories go (created if needed).
      keep: how many of the most recent checkpoints to keep (>= 1).

    Example:
      >>> ckpt = Checkpointer("runs/a/checkpoints", keep=3)          # doctest: +SKIP
      >>> ckpt.save(state, {"epoch": 2})                               # doctest: +SKIP
      >>> state, meta = ckpt.restore(template_state)                   # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3):
        keep = _validate.as_int(keep, "keep")
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"checkpoint directory {str(self.directory)!r} exists and is not a directory")
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        """The steps with a complete checkpoint, ascending."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, state: TrainState, meta: dict[str, Any] | None = None) -> int:
        """Write ``state`` (and the JSON-serializable ``meta``) as the checkpoint of ``state.step``.

        Raises:
          CheckpointError: a checkpoint of this step already exists (it is never overwritten).
        """
        state = jax.device_get(state)
        step = int(state.step)
        if step in self.steps():
            raise CheckpointError(
                f"a checkpoint for step {step} already exists in {str(self.directory)!r}; "
                f"refusing to overwrite it"
            )
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state_to_tree(state)), meta=ocp.args.JsonSave(dict(meta or {}))
        )
        self._manager.save(step, args=args)
        self._manager.wait_until_finished()
        return step

    def restore(self, template: TrainState, step: int | None = None) -> tuple[TrainState, dict[str, Any]]:
        """Read a checkpoint into ``template``'s structure; the latest one by default.

        Args:
          template: a state of the same model and optimizer (e.g. freshly
            created); only its structure, shapes and dtypes are used.
          step: which checkpoint; ``None`` for the latest.

        Returns:
          ``(state, meta)`` with host (NumPy) arrays.

        Raises:
          FileNotFoundError: no directory, no checkpoints, or no checkpoint of ``step``.
          CheckpointError: the checkpoint cannot be read or does not fit ``template``.
        """
        if not self.directory.is_dir():
            raise FileNotFoundError(f"no checkpoint directory at {str(self.directory)!r}")
        steps = self.steps()
        if not steps:
            raise FileNotFoundError(f"no complete checkpoints in {str(self.directory)!r}")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise FileNotFoundError(f"no checkpoint of step {step} in {str(self.directory)!r}; available: {steps}")
        target = jax.tree.map(lambda a: np.zeros(np.shape(a), np.asarray(a).dtype), state_to_tree(jax.device_get(template)))
        args = ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        try:
            restored = self._manager.restore(step, args=args)
            state = tree_to_state(template, jax.tree.map(np.asarray, restored.state))
        except Exception as e:  # orbax/tensorstore raise many kinds; say which file and why
            raise CheckpointError(
                f"checkpoint of step {step} in {str(self.directory)!r} could not be restored "
                f"({type(e).__name__}: {str(e)[:300]}); it may be corrupt or from another model. "
                f"Other checkpoints: {[s for s in steps if s != step]}"
            ) from e
        return state, dict(restored.meta or {})
