"""How a model is called: with a ``train`` keyword only if its ``__call__`` takes one.

The zoo and most CNNs written for jaxcnn take ``train``; ``flax.linen.Sequential``
and other plain modules do not, and are called with whatever deterministic
settings their layers were built with. Every caller (the input checks here, the
training engine in :mod:`jaxcnn.train.model_api`) asks this one rule.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import flax.linen as nn


@functools.lru_cache(maxsize=256)
def _call_takes_train(cls: type) -> bool:
    if issubclass(cls, nn.Sequential):
        return False
    try:
        params = inspect.signature(cls.__call__).parameters
    except (TypeError, ValueError):
        return True
    return "train" in params


def takes_train(model: Any) -> bool:
    """Whether ``model.__call__`` has a ``train`` parameter (``flax.linen.Sequential`` never does)."""
    return _call_takes_train(type(model))  # type: ignore[arg-type]  # classes are hashable; typeshed's type[Any] misses it


def train_kwargs(model: Any, train: bool) -> dict[str, bool]:
    """``{"train": train}`` for models that take it, else ``{}``."""
    return {"train": train} if takes_train(model) else {}
