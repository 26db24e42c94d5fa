"""Per-call defaults for the batch-dependent layers: a batch mask for BatchNorm, a batch part for Dropout.

A training engine that pads a batch, or computes it in parts, must reach every
:class:`jaxcnn.nnx.BatchNorm` and :class:`jaxcnn.nnx.Dropout` of a model it
did not write. Linen models are reached through Flax method interceptors; NNX
modules have none, so :func:`layer_defaults` sets the value for the duration
of one call instead (read at trace time, like Flax's interceptor stack). A
layer that receives ``mask=`` / ``batch_part=`` explicitly keeps its own.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_MASK: contextvars.ContextVar[Any] = contextvars.ContextVar("jaxcnn_nnx_batch_mask", default=None)
_PART: contextvars.ContextVar[Any] = contextvars.ContextVar("jaxcnn_nnx_batch_part", default=None)


@contextlib.contextmanager
def layer_defaults(*, batch_mask: Any = None, batch_part: tuple[int, int] | None = None) -> Iterator[None]:
    """Inside the ``with`` block, BatchNorm calls default to ``mask=batch_mask`` and Dropout calls to ``batch_part``.

    Args:
      batch_mask: ``(B,)`` bool (or ``None``): the rows whose statistics
        training-mode BatchNorm layers use (see :func:`jaxcnn.functional.batch_norm`).
      batch_part: ``(index, count)`` (or ``None``): the inputs are part
        ``index`` of ``count`` equal parts of the batch (see
        :func:`jaxcnn.functional.dropout`).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxcnn.nnx.context import layer_defaults, default_mask
      >>> with layer_defaults(batch_mask=jnp.array([True, False])):
      ...     default_mask(None).tolist()
      [True, False]
    """
    mask_token = _MASK.set(batch_mask)
    part_token = _PART.set(batch_part)
    try:
        yield
    finally:
        _PART.reset(part_token)
        _MASK.reset(mask_token)


def default_mask(mask: Any) -> Any:
    """``mask`` if given, else the ``batch_mask`` of the enclosing :func:`layer_defaults` (or ``None``)."""
    return _MASK.get() if mask is None else mask


def default_part(batch_part: Any) -> Any:
    """``batch_part`` if given, else that of the enclosing :func:`layer_defaults` (or ``None``)."""
    return _PART.get() if batch_part is None else batch_part
