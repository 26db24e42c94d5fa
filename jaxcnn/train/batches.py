"""The training batch stream of one epoch: order, padding, example weights, process rows, grouping."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from jaxcnn import data as data_lib


def process_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    rows: slice,
    *,
    remainder: str = "drop",
    weights: np.ndarray | None = None,
    padded_size: int | None = None,
    **order: Any,
) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """One epoch of training batches, each cut to this process's ``rows`` of the global batch.

    The order is exactly :func:`jaxcnn.data.batches`'s (computed over the example
    *indices*), so every process agrees on the global batch; each process then
    gathers only its own rows of ``x`` and ``y``.

    A batch carries ``"weight"`` ``(B,)`` float32 when any of these applies,
    and padding rows (zero inputs, label 0) have weight 0:

    * ``remainder="pad"``: the last partial batch is padded to ``batch_size``;
    * ``padded_size > batch_size``: every batch is padded to ``padded_size``
      (a global batch the device count does not divide);
    * ``weights``: ``(N,)`` per-example weights (class and sample weights).

    Args:
      x, y: the training set, ``(N, ...)``.
      batch_size: the global batch size ``B`` (real examples per batch).
      rows: this process's rows of the (padded) global batch.
      remainder: "drop" the last partial batch or "pad" it.
      weights: ``(N,)`` float per-example weights, or ``None`` (all 1).
      padded_size: rows per batch after padding (default ``batch_size``).
      **order: ``shuffle``, ``seed``, ``epoch``, ``start`` for ``batches``.

    Yields:
      ``(batch, real_rows)``: the process-local batch and the number of real
      rows of the *global* batch.
    """
    size = batch_size if padded_size is None else padded_size
    weighted = remainder == "pad" or size != batch_size or weights is not None
    index = np.arange(len(x))
    for b in data_lib.batches(
        index, index, batch_size, drop_remainder=remainder == "drop", pad_remainder=remainder == "pad", **order
    ):
        idx = b["x"]
        real = np.ones(len(idx), np.float32) if "weight" not in b else b["weight"]
        if size != len(idx):
            idx = np.concatenate([idx, np.zeros(size - len(idx), idx.dtype)])
            real = np.concatenate([real, np.zeros(size - len(real), np.float32)])
        i = idx[rows]
        out = {"x": x[i], "y": y[i]}
        if weighted:
            w = real[rows] if weights is None else real[rows] * weights[i].astype(np.float32)
            pad = real[rows] == 0
            out["x"][pad] = 0
            out["y"][pad] = 0
            out["weight"] = w
        yield out, int(real.sum())


def grouped(it: Iterator[tuple[dict, int]], k: int) -> Iterator[tuple[int, dict, int]]:
    """Stack ``k`` consecutive batches into one ``(k, B, ...)`` batch; a short tail stays single.

    Items are ``(batch, real_rows)``; yields ``(k, batch, real_rows summed)``.
    """
    if k == 1:
        yield from ((1, b, n) for b, n in it)
        return
    buf: list[tuple[dict, int]] = []
    for item in it:
        buf.append(item)
        if len(buf) == k:
            yield k, {name: np.stack([b[name] for b, _ in buf]) for name in buf[0][0]}, sum(n for _, n in buf)
            buf = []
    for b, n in buf:
        yield 1, b, n


def take(it: Iterator, n: int) -> Iterator:
    """The first ``n`` items of ``it``."""
    for i, item in enumerate(it):
        if i >= n:
            return
        yield item
