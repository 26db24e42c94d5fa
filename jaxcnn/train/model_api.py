"""How the engine calls a model: ``init`` and ``apply`` for any Flax linen module (and NNX ones, adapted).

The engine needs two calls of a model and nothing else::

    variables = model.init({"params": key, "dropout": key}, x[, train=False])
    out[, updates] = model.apply(variables, x[, train=...], rngs={"dropout": key}, mutable=[...] or False)

``train`` is passed only to models whose ``__call__`` takes it (the zoo, most
CNNs written for jaxcnn); ``flax.linen.Sequential`` and other modules without it
are called without it, with whatever deterministic settings their layers were
built with. A :class:`flax.nnx.Module` is first wrapped by
:func:`jaxcnn.nnx.as_linen_like` (when that front-end is installed), which gives it
the same two calls.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from jaxcnn.models.call import takes_train, train_kwargs

__all__ = ["apply", "check_model", "init", "takes_train", "train_kwargs"]


def check_model(model: Any, name: str = "model") -> Any:
    """``model`` as the engine calls it: a linen module, or an NNX module wrapped to look like one."""
    if isinstance(model, nn.Module):
        return model
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax always ships nnx in supported versions
        nnx = None
    if nnx is not None and isinstance(model, nnx.Module):
        try:
            from jaxcnn.nnx import as_linen_like
        except ImportError:
            raise TypeError(
                f"{name} is a flax.nnx.Module, which needs jaxcnn's NNX front-end (jaxcnn.nnx) to train"
            ) from None
        return as_linen_like(model)
    if hasattr(model, "init") and hasattr(model, "apply"):
        return model
    raise TypeError(f"{name} must be a flax.linen.Module (or a flax.nnx.Module), got {type(model).__name__}")


def init(model: Any, key: Any, x: Any) -> dict[str, Any]:
    """``model.init`` with the params and dropout streams from ``key``, in inference mode."""
    return model.init({"params": key, "dropout": key}, x, **train_kwargs(model, False))


def apply(model: Any, variables: Any, x: Any, *, train: bool, rngs: Any = None, mutable: Any = False) -> Any:
    """``model.apply(variables, x, [train=train,] rngs=rngs, mutable=mutable)``."""
    return model.apply(variables, x, rngs=rngs, mutable=mutable, **train_kwargs(model, train))
