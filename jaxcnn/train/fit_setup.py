"""What :func:`jaxcnn.train.fit` checks and derives before the first step: the plan of the run."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxcnn import _validate
from jaxcnn import data as data_lib
from jaxcnn.train.checks import check_labels


@dataclasses.dataclass(frozen=True, eq=False)
class FitPlan:
    """The data and sizes of a run, checked.

    Attributes:
      x_train, y_train: the examples trained on (validation rows removed).
      weights: ``(N_train,)`` float32 example weights (class x sample), or ``None``.
      x_val, y_val: the validation set, or ``None``.
      validation: how it was made, for the log.
      batch_size: real examples per step; padded_size: rows per step after padding.
      per_epoch: steps per epoch; epochs: epochs of this call.
      eval_batch_size: batch size of evaluation.
      remainder, seed: as passed to fit.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    weights: np.ndarray | None
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    validation: str
    batch_size: int
    padded_size: int
    per_epoch: int
    epochs: int
    eval_batch_size: int
    remainder: str
    seed: int
    dataset: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def for_devices(self, data_parallel: int) -> FitPlan:
        """The plan with batches padded to a multiple of ``data_parallel`` rows (weight-0 padding)."""
        padded = -(-self.batch_size // data_parallel) * data_parallel
        evaluation = -(-self.eval_batch_size // data_parallel) * data_parallel
        return dataclasses.replace(self, padded_size=padded, eval_batch_size=evaluation)

    def check_max_steps(self, max_steps: Any) -> int:
        n = _validate.as_int(max_steps, "max_steps")
        if n < 1:
            raise ValueError(f"max_steps must be None or an int >= 1, got {n}")
        return n

    def describe(self) -> dict[str, Any]:
        """The plan as JSON for the run's log."""
        return {
            "dataset": self.dataset,
            "train_examples": len(self.y_train),
            "validation": self.validation,
            "val_examples": 0 if self.y_val is None else len(self.y_val),
            "batch_size": self.batch_size,
            "padded_batch_size": self.padded_size,
            "remainder": self.remainder,
            "seed": self.seed,
            "weighted": self.weights is not None,
        }


def _positive_int(value: Any, name: str) -> int:
    n = _validate.as_int(value, name)
    if n < 1:
        raise ValueError(f"{name} must be an int >= 1, got {n}")
    return n


def _example_weights(y: np.ndarray, num_classes: int, class_weight: Any, sample_weight: Any) -> np.ndarray | None:
    """``class_weight[y] * sample_weight``, checked: finite, >= 0, the right lengths."""
    if class_weight is None and sample_weight is None:
        return None
    w = np.ones(len(y), np.float64)
    if class_weight is not None:
        if isinstance(class_weight, dict):
            bad = [c for c in class_weight if not (isinstance(c, (int, np.integer)) and 0 <= c < num_classes)]
            if bad:
                raise ValueError(f"class_weight keys must be class indices in [0, {num_classes}), got {bad}")
            table = np.ones(num_classes)
            for c, v in class_weight.items():
                table[int(c)] = float(v)
        else:
            table = np.asarray(class_weight, np.float64)
            if table.shape != (num_classes,):
                raise ValueError(
                    f"class_weight must be a dict or a sequence of {num_classes} weights (one per "
                    f"class), got shape {table.shape}"
                )
        if not np.all(np.isfinite(table)) or np.any(table < 0):
            raise ValueError(f"class_weight must be finite and >= 0, got {table.tolist()}")
        w = w * table[y]
    if sample_weight is not None:
        sw = np.asarray(sample_weight, np.float64)
        if sw.shape != (len(y),):
            raise ValueError(
                f"sample_weight must have one weight per training example, shape ({len(y)},), got {sw.shape}"
            )
        if not np.all(np.isfinite(sw)) or np.any(sw < 0):
            raise ValueError("sample_weight must be finite and >= 0")
        w = w * sw
    return w.astype(np.float32)


def _validation_set(dataset: data_lib.Dataset, validation: Any, seed: int):
    """``(keep_rows or None, x_val, y_val, description)``."""
    if validation is None:
        return None, None, None, "none"
    if isinstance(validation, data_lib.Dataset):
        return None, validation.x_test, validation.y_test, f"the test split of data set {validation.name!r}"
    if isinstance(validation, tuple) and len(validation) == 2:
        x, y = np.asarray(validation[0]), np.asarray(validation[1])
        if x.shape[1:] != dataset.input_shape or y.shape != (len(x),):
            raise ValueError(
                f"validation=(x, y) must have x of shape (N, {dataset.input_shape}) and y of shape "
                f"(N,), got {x.shape} and {y.shape}"
            )
        check_labels(y, dataset.num_classes, name="validation y")
        return None, x, y, f"{len(y)} given examples"
    if isinstance(validation, (float, int)) and not isinstance(validation, bool):
        keep, held = data_lib.stratified_indices(dataset.y_train, validation, seed)
        return (
            keep,
            dataset.x_train[held],
            dataset.y_train[held],
            (f"{validation:g} of the training set, stratified, seed {seed}: {len(held)} examples"),
        )
    raise TypeError(
        f"validation must be a fraction in (0, 1), a Dataset, (x, y) or None, got {_validate.fmt(validation)}"
    )


def plan_fit(
    dataset: Any,
    *,
    batch_size: Any,
    epochs: Any,
    validation: Any,
    seed: Any,
    remainder: Any,
    class_weight: Any,
    sample_weight: Any,
    eval_batch_size: Any,
    max_steps: Any,
) -> FitPlan:
    """Check ``fit``'s data arguments and derive the plan (every error before anything runs or is written)."""
    if not isinstance(dataset, data_lib.Dataset):
        raise TypeError(
            f"dataset must be a jaxcnn.data.Dataset (e.g. jaxcnn.data.load('digits')), got {_validate.fmt(dataset)}"
        )
    epochs, batch_size = _positive_int(epochs, "epochs"), _positive_int(batch_size, "batch_size")
    eval_batch_size = batch_size if eval_batch_size is None else _positive_int(eval_batch_size, "eval_batch_size")
    seed = _validate.as_int(seed, "seed")
    remainder = _validate.check_choice(remainder, "remainder", ("drop", "pad"))
    if max_steps is not None:
        _positive_int(max_steps, "max_steps")
    weights = _example_weights(dataset.y_train, dataset.num_classes, class_weight, sample_weight)
    keep, x_val, y_val, how = _validation_set(dataset, validation, seed)
    x_train, y_train = dataset.x_train, dataset.y_train
    if keep is not None:
        x_train, y_train = x_train[keep], y_train[keep]
        weights = None if weights is None else weights[keep]
    if batch_size > len(y_train):
        raise ValueError(f"batch_size={batch_size} is larger than the training set ({len(y_train)} examples)")
    per_epoch = data_lib.num_batches(len(y_train), batch_size, drop_remainder=remainder == "drop")
    return FitPlan(
        x_train,
        y_train,
        weights,
        x_val,
        y_val,
        how,
        batch_size,
        batch_size,
        per_epoch,
        epochs,
        eval_batch_size,
        remainder,
        seed,
        dataset.name,
    )
