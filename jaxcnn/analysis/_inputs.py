"""Argument checks shared by the analysis entry points that trace a model on one example."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax

from jaxcnn import _validate


def per_example_shape(input_shape: Any) -> tuple[int, ...]:
    """``input_shape`` as a tuple of positive ints: one example, without the batch axis.

    Args:
      input_shape: a sequence of ints such as ``(28, 28, 1)``.

    Returns:
      The shape as a tuple of Python ints.

    Raises:
      TypeError: not a sequence of ints.
      ValueError: empty, or an entry below 1.
    """
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(
            f"input_shape must be a sequence of ints, the shape of one example without the batch "
            f"axis (e.g. (28, 28, 1)), got {_validate.fmt(input_shape)}"
        )
    shape = tuple(_validate.as_int(s, f"input_shape[{i}]") for i, s in enumerate(input_shape))
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be a non-empty sequence of positive ints, got {input_shape!r}")
    return shape


def default_rngs(rngs: Any) -> dict:
    """The PRNG streams for ``init``/``apply``: ``rngs`` as a dict, or ``{"params": key(0), "dropout": key(1)}``.

    Args:
      rngs: ``None`` or a mapping of stream name to PRNG key.

    Returns:
      A new dict of PRNG keys.

    Raises:
      TypeError: ``rngs`` is not a mapping.
    """
    if rngs is None:
        return {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    if not isinstance(rngs, Mapping):
        raise TypeError(f"rngs must be a dict of PRNG streams (e.g. {{'params': key}}), got {_validate.fmt(rngs)}")
    return dict(rngs)
