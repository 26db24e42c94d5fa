"""Evaluation and prediction over a whole array, the short last batch included, under any strategy."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxcnn import _validate
from jaxcnn import data as data_lib
from jaxcnn.train.compile import CompiledStep
from jaxcnn.train.losses import LossFn
from jaxcnn.train.state import TrainState
from jaxcnn.train.step import make_eval_step


def variables_of(state: TrainState | dict) -> dict:
    """``{"params", "batch_stats"}`` of a state, or the variables dict itself.

    Only the variables travel to an evaluation step: the optimizer (static in a
    :class:`TrainState`) must not make evaluation retrace for every optimizer.
    """
    if isinstance(state, TrainState):
        return state.variables()
    if isinstance(state, dict) and "params" in state:
        return state
    raise TypeError(f"state_or_variables must be a TrainState or a dict with 'params', got {_validate.fmt(state)}")


def _padded_size(batch_size: Any, step: CompiledStep, name: str) -> int:
    """``batch_size`` rounded up to a multiple of the data-parallel device count (padding rows weigh 0)."""
    batch_size = _validate.as_int(batch_size, name)
    if batch_size < 1:
        raise ValueError(f"{name} must be >= 1, got {batch_size}")
    per = step.data_parallel
    return -(-batch_size // per) * per


def _padded_batches(x: np.ndarray, y: np.ndarray, batch_size: int):
    return data_lib.batches(x, y, batch_size, shuffle=False, drop_remainder=False, pad_remainder=True)


def evaluate(
    model: Any,
    state: TrainState | dict,
    x: np.ndarray,
    y: np.ndarray,
    *,
    loss: str | LossFn = "cross_entropy",
    batch_size: int = 500,
    step: CompiledStep | None = None,
    top_k: tuple[int, ...] = (),
    confusion: bool = False,
) -> dict[str, Any]:
    """Mean loss (and accuracy, for integer labels) of ``model`` over every example of ``(x, y)``.

    The last partial batch is padded and its padding weighted 0, so each example
    counts exactly once whatever the batch size and device count.

    Args:
      model, state: the model and a (unplaced) training state or variables dict.
      x, y: ``(N, ...)`` inputs and targets.
      loss: the per-example loss (name or function).
      batch_size: examples per batch (rounded up to a multiple of the
        data-parallel device count of ``step``).
      step: a compiled eval step (:func:`make_eval_step`); default one-device "jit".
      top_k: also report ``top{k}_accuracy`` for each ``k`` (integer labels).
      confusion: also report ``confusion``, the ``(C, C)`` int64 matrix of
        counts with rows = true class, columns = predicted class.

    Returns:
      ``{"loss": ..., "accuracy": ..., "count": N}`` (no accuracy for float
      targets), plus the requested extras.
    """
    step = step or make_eval_step(model, loss, "jit")
    batch_size = _padded_size(batch_size, step, "batch_size")
    placed = step.place_state(variables_of(state))
    totals: dict[str, float] = {}
    for batch in _padded_batches(x, y, batch_size):
        for k, v in step.fetch_metrics(step(placed, step.place_batch(batch))).items():
            totals[k] = totals.get(k, 0.0) + float(v)
    count = totals.pop("count", 0.0)
    out: dict[str, Any] = {k: v / max(count, 1.0) for k, v in totals.items()}
    out["count"] = int(round(count))
    if top_k or confusion:
        logits = predict(model, state, x, batch_size=batch_size, strategy=step.strategy)
        out.update(_classification_extras(logits, np.asarray(y), tuple(top_k), confusion))
    return out


def _classification_extras(logits: np.ndarray, y: np.ndarray, top_k: tuple, confusion: bool) -> dict[str, Any]:
    if not np.issubdtype(y.dtype, np.integer) or logits.ndim != 2:
        raise ValueError("top_k and confusion need integer class labels (N,) and logits (N, C)")
    out: dict[str, Any] = {}
    order = np.argsort(-logits, axis=1, kind="stable")
    for k in top_k:
        k = _validate.as_int(k, "top_k")
        if not 1 <= k <= logits.shape[1]:
            raise ValueError(f"top_k entries must be in [1, {logits.shape[1]}], got {k}")
        out[f"top{k}_accuracy"] = float(np.mean(np.any(order[:, :k] == y[:, None], axis=1)))
    if confusion:
        c = logits.shape[1]
        out["confusion"] = np.bincount(y * c + order[:, 0], minlength=c * c).reshape(c, c)
    return out


def predict(
    model: Any,
    state_or_variables: TrainState | dict,
    x: Any,
    *,
    batch_size: int = 500,
    strategy: str | None = "jit",
    devices: Any = None,
    probabilities: bool = False,
) -> np.ndarray:
    """The model's outputs for every row of ``x`` (a ``(N, ...)`` array or a Dataset's test split).

    Args:
      model: the model.
      state_or_variables: a :class:`TrainState` or ``{"params", ...}``.
      x: ``(N, *input_shape)`` array, or a :class:`jaxcnn.data.Dataset`
        (its ``x_test``).
      batch_size: rows per step (rounded up to a multiple of the device count).
      strategy, devices: as for :func:`jaxcnn.train.make_train_step`.
      probabilities: return ``softmax(logits)`` instead of the logits.

    Returns:
      ``(N, *output_shape)`` NumPy array, in row order; the short last batch's
      padding rows are dropped.
    """
    if isinstance(x, data_lib.Dataset):
        x = x.x_test
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must be (N, *input_shape), got shape {x.shape}")
    step = make_eval_step(model, strategy=strategy, devices=devices, predict=True)
    batch_size = _padded_size(batch_size, step, "batch_size")
    placed = step.place_state(variables_of(state_or_variables))
    out = []
    for batch in _padded_batches(x, np.zeros(len(x), np.int32), batch_size):
        real = int(batch["weight"].sum())
        y = np.asarray(jax.device_get(step(placed, step.place_batch({"x": batch["x"]}))))
        if step.strategy == "pmap":  # (devices, rows per device, ...) -> (rows, ...)
            y = y.reshape((-1,) + y.shape[2:])
        out.append(y[:real])
    logits = np.concatenate(out) if out else np.zeros((0,), np.float32)
    return np.asarray(jax.nn.softmax(logits, axis=-1)) if probabilities else logits
