"""The ``Dataset`` record every loader returns, and the train/test split rule."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxcnn import _validate, _values


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A labelled data set already split into train and test parts, in host memory.

    Images are channels-last, ``(N, H, W, C)`` (or ``(N, L, C)`` for sequences,
    ``(N, D, H, W, C)`` for volumes), floating point (float32 for every real data
    set); labels are int32 class indices in ``[0, num_classes)``.

    Attributes:
      x_train: ``(N_train, *input_shape)`` floating.
      y_train: ``(N_train,)`` int32.
      x_test: ``(N_test, *input_shape)`` floating.
      y_test: ``(N_test,)`` int32.
      num_classes: number of classes.
      name: registry name (``"digits"``, ``"mnist"``, ...).
      description: one line saying where the data came from and how it was split;
        print it next to every result.

    Example:
      >>> import jaxcnn.data as D
      >>> ds = D.digits()
      >>> ds.input_shape, ds.num_classes, len(ds.x_train) + len(ds.x_test)
      ((8, 8, 1), 10, 1797)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    description: str

    def __post_init__(self) -> None:
        num_classes = _validate.as_int(self.num_classes, "num_classes")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
                raise TypeError(
                    f"x_{part} and y_{part} must be NumPy arrays, got {_validate.fmt(x)} and {_validate.fmt(y)}"
                )
            if x.ndim < 2 or not _is_float(x.dtype):
                raise ValueError(
                    f"x_{part} must be a floating array of shape (N, *input_shape), got {_validate.fmt(x)}"
                )
            if y.dtype != np.int32 or y.ndim != 1:
                raise ValueError(f"y_{part} must be an int32 array of shape (N,), got {_validate.fmt(y)}")
            if len(x) != len(y):
                raise ValueError(f"x_{part} has {len(x)} examples but y_{part} has {len(y)} labels")
            _values.check_class_labels(y, num_classes, f"y_{part}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"x_train and x_test must have the same per-example shape, got "
                f"{self.x_train.shape[1:]} and {self.x_test.shape[1:]}"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(28, 28, 1)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @property
    def num_test(self) -> int:
        return len(self.y_test)

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and standard deviation of ``x_train``, float32 ``(C,)`` each.

        Computed in float64 over every training example and position; feed them to
        :func:`jaxcnn.data.normalize`.
        """
        x = self.x_train.astype(np.float64).reshape(-1, self.input_shape[-1])
        return x.mean(axis=0).astype(np.float32), x.std(axis=0).astype(np.float32)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={self.num_train}, test={self.num_test}, "
            f"input_shape={self.input_shape}, dtype={self.x_train.dtype}, "
            f"num_classes={self.num_classes}): {self.description}"
        )


def _is_float(dtype: Any) -> bool:
    """True for NumPy floats and the ml_dtypes floats JAX uses (bfloat16, float8)."""
    return bool(jnp.issubdtype(dtype, jnp.floating))


def split_indices(n: int, num_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The shuffled split every loader that splits data itself uses.

    ``perm = np.random.default_rng(seed).permutation(n)``; the training part is
    ``perm[:num_train]`` and the test part ``perm[num_train:]``, both in that
    (shuffled) order. Plain, not stratified: the rule is one line, reproducible
    in any NumPy >= 1.17.

    Args:
      n: number of examples.
      num_train: size of the training part, ``1 <= num_train < n``.
      seed: a non-negative int.

    Returns:
      ``(train_idx, test_idx)``, int64 arrays of ``num_train`` and ``n - num_train``.
    """
    num_train = _validate.as_int(num_train, "num_train")
    seed = _validate.as_int(seed, "seed")
    if not 1 <= num_train < n:
        raise ValueError(f"num_train must be in [1, {n - 1}] for {n} examples, got {num_train}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:num_train], perm[num_train:]
