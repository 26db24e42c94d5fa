"""Checks of concrete array *values* (not shapes): labels in range, variances >= 0.

:mod:`jaxcnn._validate` checks arguments at trace time from static values, shapes
and dtypes; the rules here read the numbers themselves, so they run on the host,
on concrete data only (a data set, a batch before it is placed, an eagerly
called function) -- never on traced values, where reading them would need a
device-to-host sync inside a compiled step. One helper per rule, shared by every
layer (data, functional, train).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxcnn._validate import as_int, check_array, fmt


def check_class_labels(y: Any, num_classes: Any, name: str = "y") -> None:
    """Host-side check of concrete class labels: integer dtype, every value in ``[0, num_classes)``.

    One rule for every place labels enter (data sets, batches, the train engine).
    Labels outside the range would give a NaN or silently wrong loss
    (``one_hot`` of an out-of-range index is all zeros), so they are refused.

    Args:
      y: integer labels of any shape (NumPy or a concrete JAX array; not traced).
      num_classes: the number of classes, an int >= 1.
      name: argument name for the message.

    Raises:
      TypeError: ``y`` is traced, not an array, or not of an integer dtype.
      ValueError: ``num_classes < 1``, or a label is outside ``[0, num_classes)`` (the
        message gives the first offending position and value, and the range seen).
    """
    num_classes = as_int(num_classes, "num_classes")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if isinstance(y, jax.core.Tracer):
        raise TypeError(
            f"{name} must be concrete labels (check them on the host, before the compiled step), got {fmt(y)}"
        )
    y = np.asarray(check_array(y, name))
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class indices, got {fmt(y)}")
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} must hold class indices in [0, {num_classes}), got {y[pos]} at position "
            f"{pos if len(pos) != 1 else pos[0]} (values seen from {y.min()} to {y.max()}; "
            f"{int(bad.sum())} of {y.size} out of range)"
        )


def check_nonnegative_values(v: Any, name: str) -> None:
    """A concrete array with no entry below 0 (or NaN): a variance, a count. Traced arrays pass unchecked.

    Checking a traced value would need a device-to-host sync inside a compiled
    function, so only concrete (eager) values are read.

    Raises:
      ValueError: an entry is negative or NaN (its index and value are named).
    """
    if isinstance(v, jax.core.Tracer):
        return
    a = np.asarray(v)
    bad = ~(a >= 0)
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} must be >= 0 everywhere (a variance), got {a[i]} at index {i[0] if len(i) == 1 else i}"
        )
