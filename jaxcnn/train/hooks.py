"""What the train step injects into a model's layers, and how it recognises them.

A model is any Flax linen module; the step does not thread extra arguments
through its ``__call__``. It reaches the layers that need to know about the
*batch* through Flax method interception (``flax.linen.intercept_methods``):

* **BatchNorm masks.** A padded batch carries ``"weight"`` (0 for padding
  rows). Every training-mode BatchNorm then receives ``mask = weight > 0`` so
  its batch statistics and running averages are those of the real rows.
* **Axis names.** The per-device strategies ("pmap", "shard_map") run the
  step on each device's shard; a BatchNorm or Dropout layer built without
  ``axis_name="data"`` would silently normalize by per-device statistics or
  draw the same mask on every device, so it is an error.

Layers are recognised by type (:data:`BATCH_NORMS`, :data:`DROPOUTS`). A layer
of any other class that keeps its own ``batch_stats`` is a batch-statistics
layer jaxcnn cannot mask: padding a batch for it is an error, never a silent
change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.nn.dropout import Dropout as _Dropout
from jaxcnn.nn.norm import BatchNorm as _BatchNorm

#: BatchNorm layers the step can mask (the jaxcnn one takes ``mask`` of shape ``(B,)``, flax's a broadcastable one).
BATCH_NORMS = (_BatchNorm, nn.BatchNorm)
#: Dropout layers whose ``axis_name`` the per-device strategies check.
DROPOUTS = (_Dropout, nn.Dropout)


def layer_path(module: nn.Module) -> str:
    """``"block1/BatchNorm_0"``: the layer's path in its model (its class name at the top)."""
    assert module.scope is not None, "layer_path needs a bound module"
    return "/".join(module.scope.path) or type(module).__name__


def owns_batch_stats(module: nn.Module) -> bool:
    """Whether ``module`` itself (not a child) holds arrays in the ``batch_stats`` collection."""
    stats = module.variables.get("batch_stats", {}) if module.scope is not None else {}
    return any(not isinstance(v, Mapping) for v in stats.values())


def is_call(context: Any) -> bool:
    return context.method_name == "__call__"


def _check_axis_name(module: nn.Module, axis_name: str) -> None:
    if getattr(module, "axis_name", None) != axis_name:
        kind = type(module).__name__
        raise ValueError(
            f"strategies 'pmap' and 'shard_map' need every {kind} layer built with axis_name={axis_name!r}, "
            f"but layer {layer_path(module)!r} has axis_name={getattr(module, 'axis_name', None)!r}; build the "
            f"model with axis_name={axis_name!r} (e.g. get_model(name, axis_name={axis_name!r})), or use "
            f"strategy='sharded', which needs no axis names"
        )


def _with_mask(module: nn.Module, args: tuple, kwargs: dict, mask: jnp.ndarray) -> dict:
    """``kwargs`` plus ``mask=`` shaped for ``module`` (a BatchNorm of :data:`BATCH_NORMS`)."""
    x = args[0] if args else kwargs["x"]
    if x.shape[0] != mask.shape[0]:
        raise ValueError(
            f"BatchNorm layer {layer_path(module)!r} sees {x.shape[0]} rows but the batch has {mask.shape[0]}; "
            f"a padded batch ('weight') can only be masked when BatchNorm inputs keep the batch axis first"
        )
    m = mask if isinstance(module, _BatchNorm) else mask.reshape(mask.shape + (1,) * (x.ndim - 1))
    return {**kwargs, "mask": m}


def _interceptor(axis_name: str | None, mask: jnp.ndarray | None) -> Callable:
    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if not is_call(context):
            return next_fun(*args, **kwargs)
        is_bn, is_dropout = isinstance(module, BATCH_NORMS), isinstance(module, DROPOUTS)
        if axis_name is not None and (is_bn or is_dropout):
            _check_axis_name(module, axis_name)
        if mask is not None and kwargs.get("mask") is None:
            if is_bn:
                kwargs = _with_mask(module, args, kwargs, mask)
            elif owns_batch_stats(module):
                raise ValueError(
                    f"the batch carries 'weight' (padded rows), but layer {layer_path(module)!r} "
                    f"({type(module).__module__}.{type(module).__name__}) keeps batch statistics jaxcnn cannot "
                    f"mask; use jaxcnn.nn.BatchNorm or flax.linen.BatchNorm, or train on full batches only "
                    f"(remainder='drop' and a batch size the device count divides)"
                )
        return next_fun(*args, **kwargs)

    return interceptor


@contextlib.contextmanager
def layer_hooks(axis_name: str | None = None, mask: jnp.ndarray | None = None) -> Iterator[None]:
    """Within this context, model calls get BatchNorm ``mask``s and axis-name checks (module docstring).

    Args:
      axis_name: the per-device strategies' batch axis ("data"), or ``None``.
      mask: ``(B,)`` bool, the real rows of a padded batch, or ``None``.
    """
    if axis_name is None and mask is None:
        yield
        return
    with nn.intercept_methods(_interceptor(axis_name, mask)):
        yield
