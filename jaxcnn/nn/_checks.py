"""Checks every jaxcnn module makes before Flax sees its variables: one helper per rule.

Flax answers a parameter of the wrong shape with ``ScopeParamShapeError``, a
missing collection with ``ScopeCollectionNotFound``, a missing PRNG stream with
``InvalidRngError`` and a forgotten ``mutable=`` with
``ModifyScopeVariableError`` -- none of which says which layer of a model, which
input shape, or what to pass instead. These helpers run first, at trace time
(shapes and static flags only), and raise a ``ValueError`` that does.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import numpy as np


def layer_name(module: nn.Module) -> str:
    """``"Conv layer 'conv1'"``: the module's class and its path in the model (``/``-joined)."""
    path = "/".join(str(p) for p in module.path)
    return f"{type(module).__name__} layer {path!r}" if path else f"{type(module).__name__} layer"


def check_param_shape(
    module: nn.Module, name: str, shape: tuple[int, ...], x_shape: tuple[int, ...], hint: str = ""
) -> None:
    """At ``apply``: the variables hold parameter ``name`` of this layer, with the shape the input needs.

    Args:
      module: the calling module.
      name: the parameter's name ("kernel", "scale", ...).
      shape: the shape the current input needs.
      x_shape: the input's shape (for the message).
      hint: appended to the shape-mismatch message.

    Raises:
      ValueError: the variables lack the parameter, or hold it with another shape
        (the layer was initialized for a different input).
    """
    if module.has_variable("params", name):
        held = tuple(np.shape(module.get_variable("params", name)))
        if held != tuple(shape):
            raise ValueError(
                f"{layer_name(module)}: input x of shape {tuple(x_shape)} needs parameter {name!r} of shape "
                f"{tuple(shape)}, but the variables hold {held}; the layer was initialized for another input "
                f"shape (check the channels, the rank and the batch axis of x) or the variables belong to "
                f"another model{hint}"
            )
    elif not module.is_initializing() and not module.is_mutable_collection("params"):
        raise ValueError(
            f"{layer_name(module)}: the variables have no parameter {name!r} for this layer; pass the "
            f"variables returned by model.init (e.g. apply({{'params': params, ...}}, x)) of this same model"
        )


def checked_param(
    module: nn.Module, name: str, init: Any, shape: tuple[int, ...], dtype: Any, x_shape: tuple[int, ...]
) -> Any:
    """``module.param(name, init, shape, dtype)`` after :func:`check_param_shape`.

    Returns:
      The parameter.
    """
    check_param_shape(module, name, shape, x_shape)
    return module.param(name, init, shape, dtype)


def check_batch_stats(module: nn.Module, training: bool, c: int, names: tuple[str, ...] = ("mean", "var")) -> None:
    """A normalization layer with running statistics can read them, and write them when training.

    Args:
      module: the calling module.
      training: whether it updates its running statistics in this call.
      c: the input's channels (the statistics' length).
      names: the variables of the ``"batch_stats"`` collection.

    Raises:
      ValueError: at ``apply``, ``batch_stats`` is missing from the variables, holds
        statistics of another length, or is not mutable while training.
    """
    if module.is_initializing():
        return
    mutable = module.is_mutable_collection("batch_stats")
    for name in names:
        if module.has_variable("batch_stats", name):
            held = tuple(np.shape(module.get_variable("batch_stats", name)))
            if held != (c,):
                raise ValueError(
                    f"{layer_name(module)}: input x has {c} channels, but the running statistic {name!r} has "
                    f"shape {held}; the layer was initialized for another input shape"
                )
        elif not mutable:
            raise ValueError(
                f"{layer_name(module)}: the variables have no 'batch_stats' (running mean and variance); pass "
                f"every collection model.init returned: apply({{'params': ..., 'batch_stats': ...}}, x)"
            )
    if training and not mutable:
        raise ValueError(
            f"{layer_name(module)} is in training mode (use_running_average=False / train=True) and updates "
            f"its running statistics: pass mutable=['batch_stats'] to apply (y, updates = model.apply(variables, "
            f"x, train=True, mutable=['batch_stats'])), or use inference mode (train=False)"
        )


def check_rng(module: nn.Module, stream: str, why: str) -> None:
    """A stochastic layer in training mode has its PRNG stream.

    Args:
      module: the calling module.
      stream: the stream name ("dropout").
      why: what needs it, for the message.

    Raises:
      ValueError: at ``apply``, no key was given for ``stream``.
    """
    if not module.is_initializing() and not module.has_rng(stream):
        raise ValueError(
            f"{layer_name(module)} {why} and needs a PRNG key for the {stream!r} stream: pass "
            f"rngs={{{stream!r}: key}} to apply (key = jax.random.key(seed)), or use inference mode "
            f"(deterministic=True / train=False)"
        )
