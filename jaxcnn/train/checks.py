"""Host-side checks the training engine runs on what enters it: batches, labels, finite state.

Each check reads concrete (host or already-fetched) values, never traced ones,
so it adds nothing to a compiled step and no device-to-host transfer inside
one. The engine calls them where data enters: :func:`check_batch` and
:func:`check_labels` on a batch before it is placed on devices (a "checked"
mode), :func:`first_nonfinite` / :func:`check_finite` on a state before it is
written (see :meth:`jaxcnn.train.Checkpointer.save`'s ``require_finite``), and
:func:`all_finite` per parameter leaf by the NaN guard before other callbacks
read a state.
:func:`labels_in_range` is the one piece meant for *inside* a compiled step:
it returns a traced boolean to fold into the step's metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import _validate, _values


def check_labels(y: Any, num_classes: int, *, name: str = "y") -> None:
    """Refuse labels outside ``[0, num_classes)`` (they would give a NaN or wrong loss silently).

    Args:
      y: concrete integer labels, any shape (e.g. ``batch["y"]`` on the host).
      num_classes: the classifier's number of outputs.
      name: how to name ``y`` in the message (``'batch["y"]'``, ``"y_train"``).

    Raises:
      TypeError: ``y`` is traced or not of an integer dtype.
      ValueError: a label is out of range (position, value and range in the message).

    Example:
      >>> check_labels(np.array([0, 3, 9]), 10)
    """
    _values.check_class_labels(y, num_classes, name)


def labels_in_range(y: Any, num_classes: int) -> jnp.ndarray:
    """``all(0 <= y < num_classes)`` as a (traceable) boolean scalar, for a checked compiled step.

    Args:
      y: integer labels, traced or not.
      num_classes: a static int >= 1.

    Returns:
      A boolean scalar array; read it on the host with the step's other metrics
      (it adds no transfer of its own).
    """
    num_classes = _validate.as_int(num_classes, "num_classes")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return jnp.all((y >= 0) & (y < num_classes))


def check_batch(batch: Any, *, keys: tuple[str, ...] = ("x", "y"), name: str = "batch") -> None:
    """A batch is a mapping with ``keys`` (default ``"x"`` and ``"y"``) of equal leading size.

    ``"weight"``, when present, must be ``(B,)``.

    Args:
      batch: the batch dict.
      keys: the entries it must have.
      name: how to name it in the message.

    Raises:
      TypeError: not a mapping, or an entry is not an array.
      ValueError: an entry is missing (the keys present are listed), an entry has
        no batch axis, or the entries disagree on the batch size.
    """
    if not isinstance(batch, Mapping):
        raise TypeError(f"{name} must be a dict with keys {list(keys)}, got {_validate.fmt(batch)}")
    missing = [k for k in keys if k not in batch]
    if missing:
        hint = " (a batch without labels cannot train or evaluate a classifier)" if "y" in missing else ""
        raise ValueError(
            f"{name} must have the keys {list(keys)}; {', '.join(map(repr, missing))} missing, "
            f"got keys {sorted(map(str, batch))}{hint}"
        )
    sizes = {}
    for k in [*keys, *(["weight"] if "weight" in batch else [])]:
        v = _validate.check_array(batch[k], f"{name}[{k!r}]")
        if np.ndim(v) < 1:
            raise ValueError(f"{name}[{k!r}] must have a batch axis, got shape {tuple(np.shape(v))}")
        sizes[k] = np.shape(v)[0]
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{name} entries must have the same batch size, got {sizes}")
    if "weight" in batch and np.ndim(batch["weight"]) != 1:
        raise ValueError(f"{name}['weight'] must have shape (B,), got {tuple(np.shape(batch['weight']))}")


def first_nonfinite(tree: Any) -> str | None:
    """The path of the first floating leaf of ``tree`` holding a NaN or an infinity, or ``None``.

    Reads concrete values (fetch a device state with ``jax.device_get`` first);
    integer and key leaves are skipped.

    Returns:
      e.g. ``"params/dense1/kernel (NaN at (3, 7))"``, or ``None`` if every value is finite.
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = _floating(leaf)
        if a is None:
            continue
        bad = ~np.isfinite(a)
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0]) if a.ndim else ()
            kind = "NaN" if np.isnan(a[pos]) else "an infinity"
            return f"{_path_str(path)} ({kind} at {pos})"
    return None


def all_finite(leaf: Any) -> bool:
    """Whether a concrete leaf holds no NaN or infinity (integer and key leaves always do)."""
    a = _floating(leaf)
    return a is None or bool(np.isfinite(a).all())


def _floating(leaf: Any) -> np.ndarray | None:
    """A concrete leaf as a NumPy float array (bfloat16 & co, ml_dtypes, as float32), or ``None`` if not floating."""
    a = np.asarray(leaf)
    if not jnp.issubdtype(a.dtype, jnp.inexact):
        return None
    return a.astype(np.float32) if a.dtype.kind == "V" else a


def check_finite(tree: Any, what: str = "state") -> None:
    """``FloatingPointError`` naming the first non-finite leaf of ``tree`` (see :func:`first_nonfinite`)."""
    bad = first_nonfinite(tree)
    if bad is not None:
        raise FloatingPointError(f"{what} holds non-finite values: {bad}")


def _path_str(path: tuple[Any, ...]) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)
