"""Carving a validation set off the training data: fixed, seeded and stratified."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcnn import _validate
from jaxcnn.data.dataset import Dataset


def stratified_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(keep, held)`` row indices: ``round(fraction * n_c)`` rows of every class ``c`` held out.

    Within each class the rows are drawn by ``np.random.default_rng((seed, c))``;
    both index arrays are returned sorted, so the kept rows stay in their
    original order. Every class keeps at least one training row.

    Args:
      y: ``(N,)`` integer labels.
      fraction: in ``(0, 1)``.
      seed: a non-negative int.

    Returns:
      Two int64 arrays partitioning ``0 .. N-1``.
    """
    fraction = float(fraction)
    seed = _validate.as_int(seed, "seed")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation must be a fraction in (0, 1), a Dataset or None, got {fraction}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    held = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        k = min(int(round(fraction * len(rows))), len(rows) - 1)
        held.append(np.random.default_rng((seed, int(c))).permutation(rows)[:k])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    if len(held_idx) == 0:
        raise ValueError(
            f"validation={fraction} holds out no example of the {len(y)} training examples; use a larger fraction"
        )
    keep = np.setdiff1d(np.arange(len(y)), held_idx)
    return keep, held_idx


def validation_split(dataset: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, tuple[np.ndarray, np.ndarray]]:
    """Split ``fraction`` of ``dataset``'s training examples off as a validation set (stratified).

    Args:
      dataset: a :class:`Dataset`; its test split is left untouched.
      fraction: the share of every class held out, in ``(0, 1)``.
      seed: the split's seed (recorded in the description).

    Returns:
      ``(train, (x_val, y_val))``: ``train`` is ``dataset`` with the held-out
      rows removed from its training split and a description that says so.

    Example:
      >>> import jaxcnn.data as D
      >>> train, (xv, yv) = D.validation_split(D.digits(), 0.1)
      >>> len(train.y_train) + len(yv) == len(D.digits().y_train)
      True
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a jaxcnn.data.Dataset, got {_validate.fmt(dataset)}")
    keep, held = stratified_indices(dataset.y_train, fraction, seed)
    description = (
        f"{dataset.description}; validation: {len(held)} of the {len(dataset.y_train)} training examples "
        f"({fraction:g} of each class, stratified, seed {seed}), training on the other {len(keep)}"
    )
    train = dataclasses.replace(
        dataset, x_train=dataset.x_train[keep], y_train=dataset.y_train[keep], description=description
    )
    return train, (dataset.x_train[held], dataset.y_train[held])
