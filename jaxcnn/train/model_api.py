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

from jaxcnn.models.call import takes_train

__all__ = ["apply", "check_axis_name", "check_model", "init", "mixing_layers", "takes_train", "train_kwargs"]


def check_model(model: Any, name: str = "model") -> Any:
    """``model`` as the engine calls it: a linen module, or an NNX module wrapped to look like one."""
    if isinstance(model, nn.Module):
        return model
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax always ships nnx in supported versions
        nnx = None  # type: ignore[assignment]  # optional import
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


def train_kwargs(model: Any, train: bool) -> dict[str, bool]:
    """``{"train": train}`` for models that take it (an adapted NNX model always does), else ``{}``."""
    return {"train": train} if _adapted(model) or takes_train(model) else {}


def _adapted(model: Any) -> bool:
    """Whether ``model`` is an NNX module seen through :func:`jaxcnn.nnx.as_linen_like`."""
    from jaxcnn.nnx.adapter import LinenLike

    return isinstance(model, LinenLike)


def apply(
    model: Any, variables: Any, x: Any, *, train: bool, rngs: Any = None, mutable: Any = False, mask: Any = None
) -> Any:
    """``model.apply(variables, x, [train=train,] rngs=rngs, mutable=mutable)``.

    ``mask`` ``(B,)``: the real rows of a padded batch. Linen BatchNorm layers get
    it from :func:`jaxcnn.train.hooks.layer_hooks`; an adapted NNX model takes it
    as ``batch_mask`` (Flax interceptors do not reach NNX layers).
    """
    extra = {"batch_mask": mask} if mask is not None and _adapted(model) else {}
    return model.apply(variables, x, rngs=rngs, mutable=mutable, **train_kwargs(model, train), **extra)


def mixing_layers(model: Any) -> list[str] | None:
    """Layers of an adapted NNX model that forbid splitting a batch; ``None`` for Linen (found by tracing).

    Its BatchNorm layers, and its Dropout layers: the split hands per-example
    keys to Linen layers through an interceptor, which does not reach NNX layers.
    """
    if not _adapted(model):
        return None
    from flax import nnx

    dropouts = [
        f"{'/'.join(map(str, path))} ({type(m).__module__}.{type(m).__name__})"
        for path, m in nnx.iter_graph(model.module)
        if isinstance(m, nnx.Module) and "Dropout" in type(m).__name__
    ]
    return sorted(set(model.mixing_layers()) | set(dropouts))


def check_axis_name(model: Any, axis_name: str) -> None:
    """An adapted NNX model checks its BatchNorm/Dropout axis names itself (Linen: :mod:`jaxcnn.train.hooks`)."""
    if _adapted(model):
        model.check_axis_name(axis_name)
