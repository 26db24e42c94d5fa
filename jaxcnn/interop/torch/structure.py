"""What a jaxcnn model is made of: its variable shapes and, per module, its type and the map flattened before it.

:func:`trace` runs ``model.init`` abstractly (``jax.eval_shape``: no FLOPs, no
memory) under :func:`flax.linen.intercept_methods`, recording every module
call. The converters use it to pick each parameter's layout rule (a
``ConvTranspose`` kernel and a ``Conv`` kernel differ) and to find the dense
layers that follow a :class:`jaxcnn.nn.Flatten` of a spatial map, whose rows
PyTorch orders differently (see :func:`jaxcnn.interop.torch.layout.dense_from_torch`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import _validate

#: Modules that keep the shape and order of their input (walked through when looking for a Flatten).
_PASS_THROUGH = ("Dropout",)


class ModuleCall(NamedTuple):
    """One module call seen while tracing: its path (``"layer1_block1/conv1"``), class name, in/out shapes."""

    path: str
    kind: str
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...] | None


class Structure(NamedTuple):
    """A traced model.

    Attributes:
      shapes: the variables tree with ``jax.ShapeDtypeStruct`` leaves.
      kinds: module path -> class name (``"Conv"``, ``"Dense"``, ``"BatchNorm"``, ...).
      flatten: dense module path -> channels-last ``(*spatial, C)`` shape of
        the map flattened right before it.
      calls: every module call, in the order they finished.
    """

    shapes: dict
    kinds: dict[str, str]
    flatten: dict[str, tuple[int, ...]]
    calls: tuple[ModuleCall, ...]


def call_kwargs(model: nn.Module) -> dict[str, Any]:
    """``{"train": False}`` if ``model.__call__`` takes ``train`` (every zoo model), else ``{}``."""
    params = inspect.signature(type(model).__call__).parameters
    return {"train": False} if "train" in params else {}


def _shape(v: Any) -> tuple[int, ...] | None:
    return tuple(v.shape) if hasattr(v, "shape") else None


_CACHE: dict[tuple[str, tuple[int, ...], str], Structure] = {}
_CACHE_SIZE = 16


def trace(model: nn.Module, input_shape: Sequence[int], dtype: Any = jnp.float32) -> Structure:
    """Trace ``model.init`` on an input of ``input_shape`` (channels-last, with the batch axis).

    Results are cached by the model's ``repr`` (its class and every attribute),
    the shape and the dtype: converting several checkpoints of one model
    traces it once.

    Args:
      model: a Flax linen module.
      input_shape: e.g. ``(1, 224, 224, 3)``.
      dtype: the input dtype.

    Returns:
      A :class:`Structure`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a flax.linen.Module, got {_validate.fmt(model)}")
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(f"input_shape must be a sequence of ints (N, *spatial, C), got {_validate.fmt(input_shape)}")
    input_shape = tuple(_validate.as_int(n, f"input_shape[{i}]") for i, n in enumerate(input_shape))
    key = (repr(model), input_shape, str(jnp.dtype(dtype)))
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _trace(model, input_shape, dtype)
    return _CACHE[key]


def _trace(model: nn.Module, input_shape: tuple[int, ...], dtype: Any) -> Structure:
    calls: list[ModuleCall] = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and context.module.path:
            calls.append(
                ModuleCall(
                    "/".join(context.module.path),
                    type(context.module).__name__,
                    _shape(args[0]) if args else None,
                    _shape(out),
                )
            )
        return out

    kwargs = call_kwargs(model)
    with nn.intercept_methods(record):
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(input_shape, dtype), **kwargs))
    kinds = {c.path: c.kind for c in calls}
    return Structure(dict(shapes), kinds, _flatten_inputs(calls), tuple(calls))


def _flatten_inputs(calls: Sequence[ModuleCall]) -> dict[str, tuple[int, ...]]:
    """Dense path -> ``(*spatial, C)`` of the spatial map a Flatten turned into its input."""
    out: dict[str, tuple[int, ...]] = {}
    for i, call in enumerate(calls):
        if call.kind != "Dense":
            continue
        j = i - 1
        while j >= 0 and calls[j].kind in _PASS_THROUGH and calls[j].out_shape == call.in_shape:
            j -= 1
        prev = calls[j] if j >= 0 else None
        if (
            prev is not None
            and prev.kind.startswith("Flatten")
            and prev.out_shape == call.in_shape
            and prev.in_shape is not None
            and len(prev.in_shape) > 2
        ):
            out[call.path] = tuple(prev.in_shape[1:])
    return out
