"""Prefetching batches to devices on a background thread."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jaxcnn import _validate
from jaxcnn.data.sharding import device_put_batch

THREAD_NAME = "jaxcnn-prefetch"
_POLL_S = 0.05


class _Done:
    """End-of-stream marker."""


class _Failed:
    """Carries an exception raised by the producer to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(
    iterator: Iterable[Any], size: int = 2, put: Callable[[Any], Any] | None = device_put_batch
) -> Iterator[Any]:
    """Yield ``put(item)`` for every item of ``iterator``, computed ``size`` items ahead.

    A background thread (named ``"jaxcnn-prefetch"``) takes items from
    ``iterator``, applies ``put`` (by default :func:`device_put_batch`, the
    default device; pass ``functools.partial(shard_batch, sharding_or_mesh=mesh)``
    to split over a mesh) and puts them in a queue of at most ``size`` items, so
    host-to-device copies overlap the training step and at most ``size`` batches
    wait in device memory. Order is kept.

    * An exception in ``iterator`` or ``put`` is re-raised in the consumer, after
      the items produced before it.
    * Stopping early (``break``, ``close()``, or the generator being garbage
      collected) stops the thread and waits for it; nothing keeps running.
    * The thread starts at the first ``next()``.

    Args:
      iterator: any iterable (e.g. :func:`batches`).
      size: queue length, >= 1.
      put: function applied to each item on the background thread; ``None``
        for no transfer.

    Yields:
      ``put(item)`` in the order of ``iterator``.

    Example:
      >>> import numpy as np, jaxcnn.data as D
      >>> x, y = np.zeros((8, 2), np.float32), np.zeros(8, np.int32)
      >>> [b["x"].shape for b in D.prefetch(D.batches(x, y, 4))]
      [(4, 2), (4, 2)]
    """
    size = _validate.as_int(size, "size")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if put is not None and not callable(put):
        raise TypeError(f"put must be a callable or None, got {_validate.fmt(put)}")
    return _run(iter(iterator), size, put)


def _run(source: Iterator[Any], size: int, put: Callable[[Any], Any] | None) -> Iterator[Any]:
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def offer(item: Any) -> bool:
        """Put ``item`` in the queue unless asked to stop; True if it went in."""
        while not stop.is_set():
            try:
                buffer.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            while not stop.is_set():  # checked before pulling: no item is taken after a stop
                try:
                    item = next(source)
                except StopIteration:
                    break
                if not offer(put(item) if put is not None else item):
                    return
            else:
                return
        except BaseException as err:  # handed to the consumer, which re-raises it
            offer(_Failed(err))
            return
        offer(_Done())

    thread = threading.Thread(target=produce, name=THREAD_NAME, daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):  # unblock a producer waiting on a full queue
                buffer.get_nowait()
            thread.join(timeout=_POLL_S)
