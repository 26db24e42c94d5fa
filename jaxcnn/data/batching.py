"""Host-side minibatches: a reproducible shuffle per (seed, epoch), optional padding."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from jaxcnn import _validate, _values


def num_batches(n: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Number of batches :func:`batches` yields for ``n`` examples.

    ``n // batch_size`` with ``drop_remainder=True``, else ``ceil(n / batch_size)``.

    Example:
      >>> num_batches(10, 4), num_batches(10, 4, drop_remainder=False)
      (2, 3)
    """
    n = _validate.as_int(n, "n", minimum=0)
    batch_size = _validate.as_int(batch_size, "batch_size", minimum=1)
    drop_remainder = _validate.check_bool(drop_remainder, "drop_remainder")
    return n // batch_size if drop_remainder else -(-n // batch_size)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the examples in epoch ``epoch``: ``default_rng((seed, epoch)).permutation(n)``.

    A pure function of ``(seed, epoch)``: each epoch has its own order, and any
    epoch can be replayed exactly (resume training bit-for-bit from a step count).
    """
    return np.random.default_rng((seed, epoch)).permutation(n)


def batches(
    x: Any,
    y: Any,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    drop_remainder: bool = True,
    pad_remainder: bool = False,
    start: int = 0,
    num_classes: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Iterate over one epoch of ``(x, y)`` in minibatches ``{"x": ..., "y": ...}`` (NumPy).

    Order: with ``shuffle``, ``epoch_permutation(len(x), seed, epoch)``, i.e.
    ``np.random.default_rng((seed, epoch)).permutation(n)``; else ``0 .. n-1``.
    Every example appears at most once per epoch; exactly once unless
    ``drop_remainder`` drops the last ``n % batch_size`` of the order.

    The last partial batch (when ``n % batch_size != 0``):

    * ``drop_remainder=True`` (default, for training): dropped, every batch is full;
    * ``drop_remainder=False``: yielded short, ``n % batch_size`` rows;
    * ``drop_remainder=False, pad_remainder=True`` (for evaluation under ``jit``
      with one compiled shape): padded to ``batch_size`` with zero inputs and
      label 0, and *every* batch carries ``"weight"``, float32 ``(batch_size,)``,
      1 for real rows and 0 for padding, so the dict structure never changes;
      mask the loss with it: ``sum(w * loss) / sum(w)``.

    Args:
      x: ``(N, ...)`` array (NumPy, or anything ``np.asarray`` accepts).
      y: ``(N, ...)`` array.
      batch_size: rows per batch, >= 1.
      shuffle: shuffle with the ``(seed, epoch)`` permutation.
      seed, epoch: non-negative ints.
      drop_remainder: drop the last partial batch.
      pad_remainder: pad it instead (needs ``drop_remainder=False``).
      start: skip the first ``start`` batches of the epoch without building
        them (resume in the middle of an epoch).
      num_classes: when given, ``y`` must hold integer class indices in
        ``[0, num_classes)`` (checked once, at the call); ``None`` for other
        targets (regression).

    Yields:
      dicts ``{"x": (B, ...), "y": (B, ...)}`` plus ``"weight": (B,)`` float32
      with ``pad_remainder``; fresh arrays, safe to modify.

    Raises (at the call, before the first batch):
      TypeError, ValueError: ``num_classes`` given and ``y`` not integer labels in range.
      ValueError: ``x`` and ``y`` differ in length, ``pad_remainder`` with
        ``drop_remainder``, or ``drop_remainder`` with fewer than ``batch_size``
        examples (it would yield nothing).

    Example:
      >>> import numpy as np
      >>> x, y = np.zeros((10, 2), np.float32), np.arange(10, dtype=np.int32)
      >>> [b["y"].shape for b in batches(x, y, 4)]
      [(4,), (4,)]
      >>> [b["weight"].tolist() for b in batches(x, y, 4, shuffle=False,
      ...     drop_remainder=False, pad_remainder=True)][-1]
      [1.0, 1.0, 0.0, 0.0]
    """
    x, y = np.asarray(x), np.asarray(y)
    shuffle = _validate.check_bool(shuffle, "shuffle")
    pad_remainder = _validate.check_bool(pad_remainder, "pad_remainder")
    seed, epoch = _validate.as_int(seed, "seed"), _validate.as_int(epoch, "epoch")
    start = _validate.as_int(start, "start")
    if x.ndim < 1 or y.ndim < 1 or len(x) != len(y):
        raise ValueError(f"x and y must have the same number of rows, got shapes {x.shape} and {y.shape}")
    if num_classes is not None:
        _values.check_class_labels(y, num_classes, "y")
    n = len(x)
    total = num_batches(n, batch_size, drop_remainder)
    if seed < 0 or epoch < 0 or start < 0:
        raise ValueError(f"seed, epoch and start must be non-negative ints, got {seed}, {epoch}, {start}")
    if pad_remainder and drop_remainder:
        raise ValueError(
            "pad_remainder=True keeps and pads the last partial batch, so it needs "
            "drop_remainder=False; got drop_remainder=True"
        )
    if drop_remainder and 0 < n < batch_size:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {n} examples and drop_remainder=True "
            f"would yield no batch; use a smaller batch_size or drop_remainder=False"
        )
    order = epoch_permutation(n, seed, epoch) if shuffle else None
    return _generate(x, y, batch_size, order, start, total, pad_remainder)


def _generate(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    order: np.ndarray | None,
    start: int,
    total: int,
    pad_remainder: bool,
) -> Iterator[dict[str, np.ndarray]]:
    """The generator behind :func:`batches` (split out so bad arguments fail at the call)."""
    n = len(x)
    for i in range(start, total):
        lo, hi = i * batch_size, min((i + 1) * batch_size, n)
        if order is None:
            bx, by = x[lo:hi].copy(), y[lo:hi].copy()
        else:
            idx = order[lo:hi]
            bx, by = x[idx], y[idx]
        batch = {"x": bx, "y": by}
        if pad_remainder:
            real = hi - lo
            weight = np.zeros(batch_size, np.float32)
            weight[:real] = 1.0
            if real < batch_size:
                batch = {k: _pad_rows(v, batch_size) for k, v in batch.items()}
            batch["weight"] = weight
        yield batch


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    out = np.zeros((rows, *a.shape[1:]), a.dtype)
    out[: len(a)] = a
    return out
