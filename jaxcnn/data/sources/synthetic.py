"""Random inputs with learnable labels, of any shape: for benchmarks and smoke tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxcnn import _validate
from jaxcnn.data.dataset import Dataset


def synthetic(
    input_shape: Sequence[int],
    num_classes: int = 10,
    *,
    num_train: int = 512,
    num_test: int = 128,
    seed: int = 0,
    dtype: Any = np.float32,
) -> Dataset:
    """Gaussian inputs of any shape whose labels a linear classifier can learn exactly.

    With ``rng = np.random.default_rng(seed)`` and ``D = prod(input_shape)``:

        x = rng.standard_normal((num_train + num_test, *input_shape)).astype(dtype)
        W = rng.standard_normal((D, num_classes))
        y = argmax(x.reshape(-1, D) @ W, axis=1)

    (``W`` drawn after ``x``; ``y`` uses the stored, cast values of ``x``). The
    first ``num_train`` examples train, the rest test. Every class is the
    region where one linear score wins, so the labels are learnable (a linear
    layer reaches 100% in principle) and test accuracy measures generalization
    of the same rule; classes are roughly, not exactly, balanced.

    Args:
      input_shape: per-example shape, e.g. ``(32, 32, 3)`` or ``(128, 1)``.
      num_classes: >= 2.
      num_train, num_test: >= 1 each.
      seed: a non-negative int.
      dtype: a floating dtype for ``x`` (float32, float16, ``jnp.bfloat16``).

    Returns:
      A :class:`~jaxcnn.data.Dataset` named ``"synthetic"``.

    Example:
      >>> import jaxcnn.data as D
      >>> D.synthetic((32, 32, 3), num_train=64, num_test=16).x_train.shape
      (64, 32, 32, 3)
    """
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence) or not input_shape:
        raise TypeError(f"input_shape must be a non-empty sequence of ints, got {_validate.fmt(input_shape)}")
    shape = tuple(_validate.as_int(s, f"input_shape[{i}]") for i, s in enumerate(input_shape))
    if min(shape) < 1:
        raise ValueError(f"input_shape must hold positive ints, got {shape}")
    num_classes = _validate.as_int(num_classes, "num_classes")
    num_train = _validate.as_int(num_train, "num_train")
    num_test = _validate.as_int(num_test, "num_test")
    seed = _validate.as_int(seed, "seed")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if num_train < 1 or num_test < 1:
        raise ValueError(f"num_train and num_test must be >= 1, got {num_train} and {num_test}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    dtype = _validate.floating_dtype(dtype, "dtype")
    rng = np.random.default_rng(seed)
    n = num_train + num_test
    x = rng.standard_normal((n, *shape), dtype=np.float32).astype(dtype)
    w = rng.standard_normal((int(np.prod(shape)), num_classes))
    y = np.argmax(x.reshape(n, -1).astype(np.float64) @ w, axis=1).astype(np.int32)
    description = (
        f"synthetic N(0, 1) inputs of shape {shape} ({dtype}), labels = argmax of a fixed "
        f"random linear map, seed {seed}; {num_train} train / {num_test} test"
    )
    return Dataset(x[:num_train], y[:num_train], x[num_train:], y[num_train:], num_classes, "synthetic", description)
