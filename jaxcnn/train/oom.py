"""Out-of-memory errors from XLA turned into one clear jaxcnn error.

When a compiled step does not fit, XLA raises a ``JaxRuntimeError`` (formerly
``XlaRuntimeError``) whose message starts with ``RESOURCE_EXHAUSTED`` and, deep
in a long traceback, says how much it tried to allocate; the host allocator may
instead raise ``MemoryError`` or report ``std::bad_alloc``. :func:`oom_guard`
wraps the code that compiles and runs the first step (or an evaluation) and
turns any of these into :class:`OutOfMemoryError`: what was being compiled or
run, the memory XLA asked for (parsed from the message when it is there), and
what to do about it.

JAX dispatches asynchronously: an allocation failure of a running step
surfaces where its result is first read (``block_until_ready``, a
``device_get`` of the metrics). Put that read inside the guarded block too.

Example:
  >>> with oom_guard("compiling and running the first training step", batch_size=512):  # doctest: +SKIP
  ...     state, metrics = step(state, batch)
  ...     jax.block_until_ready(metrics)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from jaxcnn import _validate

_MARKERS = ("RESOURCE_EXHAUSTED", "out of memory", "std::bad_alloc", "ran out of memory", "failed to allocate")
_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


class OutOfMemoryError(RuntimeError):
    """A computation did not fit in device (or host) memory.

    Attributes:
      what: what was being compiled or run.
      requested_bytes: the allocation XLA asked for, when its message says (else ``None``).
      original: the exception XLA (or Python) raised.
    """

    def __init__(self, message: str, *, what: str, requested_bytes: int | None, original: BaseException):
        super().__init__(message)
        self.what = what
        self.requested_bytes = requested_bytes
        self.original = original


def is_out_of_memory(exc: BaseException) -> bool:
    """True for ``MemoryError`` and for runtime errors whose message reports an exhausted allocator.

    Recognized: XLA's ``RESOURCE_EXHAUSTED`` status (CPU, GPU, TPU, compile-time
    or run-time), "Out of memory ...", "Failed to allocate ...", "Ran out of
    memory in memory space ..." and ``std::bad_alloc``.
    """
    if isinstance(exc, MemoryError):
        return True
    if not isinstance(exc, RuntimeError) or isinstance(exc, OutOfMemoryError):
        return False
    text = str(exc).lower()
    return any(m.lower() in text for m in _MARKERS)


def requested_bytes(message: str) -> int | None:
    """The allocation size an XLA out-of-memory message names, in bytes (``None`` when it names none).

    Reads "allocating 14400000000 bytes", "(17179869184B)", "16.00GiB", "Used 20.5G of 15.48G".

    Example:
      >>> requested_bytes("RESOURCE_EXHAUSTED: Out of memory allocating 14400000000 bytes.")
      14400000000
    """
    m = re.search(r"(\d+)\s*(?:bytes|B)\b", message)
    if m:
        return int(m.group(1))
    m = re.search(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B)\b", message, flags=re.IGNORECASE)
    if m:
        return int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    m = re.search(r"Used (\d+(?:\.\d+)?)([KMGT]) of", message)
    if m:
        return int(float(m.group(1)) * _UNITS[m.group(2) + "IB"])
    return None


def _size(n: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit} ({n} bytes)"
    return f"{n} bytes"


def out_of_memory_error(exc: BaseException, what: str, *, batch_size: int | None = None) -> OutOfMemoryError:
    """The :class:`OutOfMemoryError` for ``exc`` (which :func:`is_out_of_memory` recognized).

    Args:
      exc: the original error.
      what: what was being compiled or run, e.g. "compiling the training step of
        resnet18 (batch 512)".
      batch_size: the batch size in use, to suggest a concrete smaller one.

    Returns:
      The error, with one message: what, how much, the options.
    """
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    n = requested_bytes(str(exc))
    asked = f"XLA asked for {_size(n)}" if n is not None else "the allocator gave no size"
    smaller = f"batch_size={batch_size} -> {max(batch_size // 2, 1)}" if batch_size else "--batch-size"
    return OutOfMemoryError(
        f"out of memory while {what}: {asked} ({first[:200]}). Options: a smaller batch ({smaller}); gradient "
        f"accumulation (grad_accum=k / --grad-accum k: the same update from k micro-batches of 1/k the size); "
        f"lower precision (--precision bf16); a smaller model or input size",
        what=what,
        requested_bytes=n,
        original=exc,
    )


@contextlib.contextmanager
def oom_guard(what: str, *, batch_size: int | None = None) -> Iterator[None]:
    """Turn an out-of-memory error inside the block into one :class:`OutOfMemoryError`.

    Any other exception passes through unchanged. The XLA error is kept as the
    new error's ``original`` (not chained, so an uncaught error prints one
    message, not XLA's 40-line traceback).

    Args:
      what: what the block compiles or runs (it goes into the message).
      batch_size: the batch size in use (for the suggestion), or ``None``.

    Raises:
      OutOfMemoryError: the block ran out of memory.
    """
    if not isinstance(what, str) or not what:
        raise TypeError(f"what must be a non-empty string saying what is compiled or run, got {_validate.fmt(what)}")
    if batch_size is not None:
        batch_size = _validate.as_int(batch_size, "batch_size")
    try:
        yield
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        err = out_of_memory_error(e, what, batch_size=batch_size)
        raise err from None
