"""Per-call default for the batch-dependent layer: a batch mask for BatchNorm.

A training engine that pads a batch must reach every :class:`jaxcnn.nnx.BatchNorm`
of a model it did not write. Linen models are reached through Flax method
interceptors; NNX modules have none, so :func:`layer_defaults` sets the mask for
the duration of one call instead (read at trace time, like Flax's interceptor
stack). A layer that receives ``mask=`` explicitly keeps its own. (Dropout needs
no default: a part of a batch is given the per-example keys of its rows,
:func:`jaxcnn.functional.row_keys`.)
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_MASK: contextvars.ContextVar[Any] = contextvars.ContextVar("jaxcnn_nnx_batch_mask", default=None)


@contextlib.contextmanager
def layer_defaults(*, batch_mask: Any = None) -> Iterator[None]:
    """Inside the ``with`` block, BatchNorm calls default to ``mask=batch_mask``.

    Args:
      batch_mask: ``(B,)`` bool (or ``None``): the rows whose statistics
        training-mode BatchNorm layers use (see :func:`jaxcnn.functional.batch_norm`).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxcnn.nnx.context import layer_defaults, default_mask
      >>> with layer_defaults(batch_mask=jnp.array([True, False])):
      ...     default_mask(None).tolist()
      [True, False]
    """
    mask_token = _MASK.set(batch_mask)
    try:
        yield
    finally:
        _MASK.reset(mask_token)


def default_mask(mask: Any) -> Any:
    """``mask`` if given, else the ``batch_mask`` of the enclosing :func:`layer_defaults` (or ``None``)."""
    return _MASK.get() if mask is None else mask
