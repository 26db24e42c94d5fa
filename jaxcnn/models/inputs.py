"""Whole-model checks of an input and a set of variables, before anything is compiled.

:func:`check_input` traces ``model.init`` on the input's *shape* (``jax.eval_shape``:
no FLOPs, no compilation, cached per model and shape) and compares the variable
tree it would create with the one given: a missing or extra layer, a parameter of
another shape, a collection left out. Every jaxcnn layer also checks its own
parameters at ``apply`` (see :mod:`jaxcnn.nn._checks`); this check adds what no
single layer can see -- another model's variables, extra entries, an input
without its batch axis, the rank a model expects -- and one message for the
whole model. The training engine calls it once, on the first batch's shape.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import _validate
from jaxcnn.models.alexnet import AlexNet
from jaxcnn.models.call import train_kwargs
from jaxcnn.models.lenet import LeNet5
from jaxcnn.models.lwls import LWLSCNN
from jaxcnn.models.resnet import ResNet
from jaxcnn.models.small import CNN1D, CNN3D
from jaxcnn.models.vgg import VGG
from jaxcnn.models.wavenet import WaveNet

#: input ranks (batch axis included) each zoo model accepts; models not listed accept any rank >= 2
INPUT_RANKS: dict[type, tuple[int, ...]] = {
    LWLSCNN: (4,),
    LeNet5: (4,),
    AlexNet: (4,),
    VGG: (4,),
    ResNet: (4,),
    CNN1D: (2, 3),
    CNN3D: (4, 5),
    WaveNet: (2, 3),
}


def input_ranks(model: nn.Module) -> tuple[int, ...] | None:
    """The input ranks ``model`` accepts (``model.input_ranks`` or :data:`INPUT_RANKS`), ``None`` if not declared."""
    declared = getattr(model, "input_ranks", None)
    return tuple(declared) if declared is not None else INPUT_RANKS.get(type(model))


def check_sample(model: Any, x: Any, name: str = "x") -> Any:
    """``x`` is an array-like with a batch axis and a rank ``model`` accepts.

    Args:
      model: a Flax linen module, or a Linen-like one (``init``/``apply``, e.g.
        :func:`jaxcnn.nnx.as_linen_like`).
      x: an input batch, or a ``jax.ShapeDtypeStruct`` of one.
      name: the argument's name in messages.

    Returns:
      ``x`` (converted to an array if it had no ``shape``).

    Raises:
      TypeError: ``model`` is neither a Flax module nor Linen-like, or ``x`` is not an array.
      ValueError: ``x`` has no batch axis, or a rank the model does not take (the
        message suggests ``x[None]`` when one more axis would fit).
    """
    if not (
        isinstance(model, nn.Module)
        or (callable(getattr(model, "init", None)) and callable(getattr(model, "apply", None)))
    ):
        raise TypeError(
            "model must be a Flax linen module (e.g. jaxcnn.models.get_model(...)) or an object with Linen's "
            f"init/apply (jaxcnn.nnx.as_linen_like), got {_validate.fmt(model)}"
        )
    if not isinstance(x, jax.ShapeDtypeStruct):
        x = _validate.check_array(x, name)
    ranks = input_ranks(model) or tuple(range(2, 9))
    if x.ndim not in ranks:
        hint = f"; is the batch axis missing? use {name}[None] (shape {(1, *x.shape)})" if x.ndim + 1 in ranks else ""
        raise ValueError(
            f"{name} of shape {tuple(x.shape)} (rank {x.ndim}) does not fit {type(model).__name__}, which takes "
            f"input of rank {' or '.join(map(str, ranks)) if len(ranks) < 4 else '>= 2'} (N, ...) with the batch "
            f"axis first{hint}"
        )
    return x


def expected_variables(model: nn.Module, shape: tuple[int, ...], dtype: Any) -> dict[str, Any]:
    """The shapes ``model.init`` gives for an input of ``shape``/``dtype`` (``ShapeDtypeStruct`` leaves)."""
    try:
        return _cached_expected(model, tuple(shape), jnp.dtype(dtype))
    except TypeError as e:
        if "unhashable" not in str(e):
            raise
        return _expected(model, tuple(shape), jnp.dtype(dtype))


def _expected(model: nn.Module, shape: tuple[int, ...], dtype: Any) -> dict[str, Any]:
    key = jax.random.key(0)
    kwargs: dict[str, Any] = train_kwargs(model, False)
    init = functools.partial(model.init, {"params": key, "dropout": key}, **kwargs)
    return jax.eval_shape(init, jax.ShapeDtypeStruct(shape, dtype))


_cached_expected = functools.lru_cache(maxsize=64)(_expected)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{"conv1/kernel": shape, ...}`` of a nested mapping of arrays."""
    out: dict[str, tuple[int, ...]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out["/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)] = tuple(
            np.shape(leaf)
        )
    return out


def check_variables(
    model: nn.Module,
    variables: Any,
    x: Any,
    *,
    name: str | None = "variables",
    collections: tuple[str, ...] | None = None,
) -> None:
    """``variables`` is what ``model.init`` gives for an input like ``x``: same layers, same shapes.

    Args:
      model: a Flax linen module.
      variables: ``{"params": ..., "batch_stats": ...}`` (what ``model.apply`` takes).
      x: an input batch (or its ``ShapeDtypeStruct``).
      name: the argument's name in messages; ``None`` names each collection on
        its own (``params``, ``batch_stats``: separate arguments of the caller).
      collections: the collections to compare (``None``: every one ``model.init`` creates).

    Raises:
      TypeError: ``variables`` is not a mapping with ``"params"``.
      ValueError: a collection, a layer or a parameter is missing or extra, or
        has another shape; the message names the first one, the input shape, and
        says when ``x`` without its batch axis is the likely cause.
    """
    x = check_sample(model, x)
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise TypeError(
            f"{name or 'params'} must be a dict with 'params' (what model.init returns), got {_validate.fmt(variables)}"
        )
    expected = expected_variables(model, x.shape, x.dtype)
    for collection in expected if collections is None else collections:
        label = collection if name is None else f"{name}[{collection!r}]"
        if collection not in variables:
            raise ValueError(
                f"{name or 'the variables'} has no {collection!r} collection, which {type(model).__name__} needs (got "
                f"{sorted(variables)}); pass every collection model.init returned"
            )
        want, have = _shapes(expected[collection]), _shapes(variables[collection])
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        if missing or extra:
            raise ValueError(
                f"{label} does not match {type(model).__name__} on input x of shape {tuple(x.shape)}: "
                f"missing {missing[:3] or 'nothing'}, unexpected {extra[:3] or 'nothing'} (variables of another model?)"
            )
        for path in want:
            if want[path] != have[path]:
                raise ValueError(
                    f"{label} entry {path!r} has shape {have[path]}, but {type(model).__name__} on input "
                    f"x of shape {tuple(x.shape)} needs {want[path]}{_batch_hint(model, variables, x)}"
                )


def _batch_hint(model: nn.Module, variables: Mapping[str, Any], x: Any) -> str:
    """A hint when ``x`` with one more leading axis would match ``variables``."""
    try:
        wanted = expected_variables(model, (1, *x.shape), x.dtype)
    except (TypeError, ValueError):
        return ""
    same = all(_shapes(wanted[c]) == _shapes(variables.get(c, {})) for c in wanted)
    return f"; x seems to lack its batch axis: pass x[None] (shape {(1, *x.shape)})" if same else ""


def check_input(model: nn.Module, variables: Any, x: Any) -> None:
    """Check ``model.apply(variables, x, ...)`` before it runs: the input's rank, then every variable's shape.

    The one call the training engine (and any script) makes before compiling a
    step: trace-time only (``jax.eval_shape``, cached per model and input shape),
    no device work. A jaxcnn ``ValueError``/``TypeError`` names what is wrong; see
    :func:`check_sample` and :func:`check_variables`.

    Example:
      >>> model = get_model("lwls_cnn")                                   # doctest: +SKIP
      >>> check_input(model, variables, jnp.zeros((8, 32, 32, 1)))          # doctest: +SKIP
      ValueError: variables['params'] entry 'dense1/kernel' has shape (588, 200), but LWLSCNN ...
    """
    check_variables(model, variables, x)
