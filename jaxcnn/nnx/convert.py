"""Converters between NNX module state and Linen variables, and the Linen dropout-key rule.

An NNX module's :class:`flax.nnx.Param` state is the Linen ``"params"``
collection and its :class:`flax.nnx.BatchStat` state the ``"batch_stats"``
collection (and :class:`SpectralStat` the ``"spectral_stats"`` one, see
:data:`COLLECTIONS`), at the same paths: every :mod:`jaxcnn.nnx` layer names its
variables as its Linen twin does (``kernel``, ``bias``, ``scale``, ``mean``,
``var``), and :class:`jaxcnn.nnx.Mirror` places each layer at its Linen path.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from flax import nnx
from flax.core.scope import LazyRng
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxcnn import _validate


class SpectralStat(nnx.Variable):
    """The power-iteration state (``u``, ``sigma``) of :class:`jaxcnn.nnx.SpectralNormConv`.

    Linen's ``"spectral_stats"`` collection (the default ``collection`` of
    :class:`jaxcnn.nn.SpectralNormConv`); not a parameter, so gradients and
    optimizers skip it, and it changes only in training calls.
    """


#: Linen collection -> the NNX variable type holding it.
COLLECTIONS: dict[str, type[nnx.Variable]] = {
    "params": nnx.Param,
    "batch_stats": nnx.BatchStat,
    "spectral_stats": SpectralStat,
}


def _flat_state(module: nnx.Module, kind: type[nnx.Variable]) -> dict[tuple[str, ...], Any]:
    """``{path (str keys): array}`` of the variables of one type."""
    return {tuple(str(k) for k in path): v for path, v in nnx.to_flat_state(nnx.state(module, kind))}


def to_linen(module: nnx.Module) -> dict[str, Any]:
    """The Linen variables of an NNX module: ``{"params": ..., "batch_stats": ...}`` nested dicts of arrays.

    One entry per collection of :data:`COLLECTIONS`; every one but ``params`` is
    left out when the module has none of its variables (as Linen's ``init``).
    Keys are strings (a ``nnx.List`` index ``0`` becomes ``"0"``).

    Args:
      module: any :class:`flax.nnx.Module`.

    Returns:
      ``{"params": {path...: array}, "batch_stats": {...}}``, ready for the
      Linen twin's ``apply`` (or a checkpoint).

    Example:
      >>> from flax import nnx
      >>> import jaxcnn.nnx as jnnx
      >>> variables = jnnx.to_linen(jnnx.Conv(1, 4, (5, 5), rngs=nnx.Rngs(0)))
      >>> variables["params"]["kernel"].shape
      (5, 5, 1, 4)
    """
    if not isinstance(module, nnx.Module):
        raise TypeError(f"module must be a flax.nnx.Module, got {_validate.fmt(module)}")
    out = {}
    for collection, kind in COLLECTIONS.items():
        flat = {p: v.get_value() if isinstance(v, nnx.Variable) else v for p, v in _flat_state(module, kind).items()}
        if flat or collection == "params":
            out[collection] = unflatten_dict(flat)
    return out


def from_linen(module: nnx.Module, variables: Any) -> nnx.Module:
    """A copy of the NNX ``module`` holding the values of the Linen ``variables``.

    Every ``params`` / ``batch_stats`` / ``spectral_stats`` entry must exist in ``module`` at the same
    path with the same shape, and every ``nnx.Param`` / ``nnx.BatchStat`` / :class:`SpectralStat` of the
    module must be given; anything else is a ``ValueError`` naming the paths.
    ``module`` itself is not changed.

    Args:
      module: the NNX twin (e.g. ``jaxcnn.nnx.Conv(1, 4, (5, 5), rngs=...)``, or a
        zoo model from ``jaxcnn.get_model(name, api="nnx")``).
      variables: the Linen variables, ``{"params": ..., "batch_stats": ...}``
        (what the Linen module's ``init`` returns or training produced).

    Returns:
      A new module (``nnx.clone``) with those values; dtypes are the given arrays'.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxcnn.nn as jnn, jaxcnn.nnx as jnnx
      >>> variables = jnn.Conv(4, 5).init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))
      >>> layer = jnnx.from_linen(jnnx.Conv(1, 4, (5, 5), rngs=nnx.Rngs(1)), variables)
      >>> bool((layer.kernel[...] == variables["params"]["kernel"]).all())
      True
    """
    if not isinstance(module, nnx.Module):
        raise TypeError(f"module must be a flax.nnx.Module, got {_validate.fmt(module)}")
    if not hasattr(variables, "keys"):
        raise TypeError(f"variables must be a dict of Linen collections, got {_validate.fmt(variables)}")
    unknown = sorted(set(variables) - set(COLLECTIONS))
    if unknown:
        raise ValueError(f"variables has collections {unknown} with no NNX counterpart; expected {sorted(COLLECTIONS)}")
    module = nnx.clone(module)
    for collection, kind in COLLECTIONS.items():
        have = _flat_state(module, kind)
        given = {tuple(str(k) for k in p): v for p, v in flatten_dict(dict(variables.get(collection, {}))).items()}
        missing, extra = sorted(set(have) - set(given)), sorted(set(given) - set(have))
        if missing or extra:
            raise ValueError(
                f"variables[{collection!r}] does not fit the module: missing {['/'.join(p) for p in missing]}, "
                f"unexpected {['/'.join(p) for p in extra]}"
            )
        for path, var in have.items():
            value = given[path]
            if tuple(np.shape(value)) != tuple(var.shape):
                raise ValueError(
                    f"variables[{collection!r}] at {'/'.join(path)} has shape {tuple(np.shape(value))}, "
                    f"the module expects {tuple(var.shape)}"
                )
            var.set_value(jax.numpy.asarray(value))
    return module


def linen_key(key: Any, path: Any = (), count: int = 1) -> jax.Array:
    """The key a Linen layer at ``path`` gets from ``make_rng`` under ``apply(..., rngs={stream: key})``.

    Linen derives it with Flax's own rule (``LazyRng``): ``key`` folded with
    each name of the layer's path and then with the call's counter (1 for the
    first ``make_rng`` of that layer in one ``apply``). Passing the result to
    :class:`jaxcnn.nnx.Dropout` (``layer(x, rngs=linen_key(key, path))``) draws
    exactly the Linen layer's mask.

    Args:
      key: the ``apply`` key of the stream (typed or raw).
      path: the Linen layer's path, e.g. ``("dropout",)``; ``()`` for a layer applied on its own.
      count: which ``make_rng`` call of that layer (1-based).

    Returns:
      A PRNG key.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxcnn.nn as jnn, jaxcnn.nnx as jnnx
      >>> key, x = jax.random.key(0), jnp.ones((4, 8))
      >>> linen = jnn.Dropout(0.5).apply({}, x, deterministic=False, rngs={"dropout": key})
      >>> bool((jnnx.Dropout(0.5)(x, rngs=jnnx.linen_key(key)) == linen).all())
      True
    """
    key = _validate.check_key(key, "key")
    if isinstance(path, str) or not all(isinstance(p, str) for p in path):
        raise TypeError(f"path must be a tuple of layer names (str), got {path!r}")
    count = _validate.as_int(count, "count")
    if count < 1:
        raise ValueError(f"count must be >= 1 (the first make_rng call is 1), got {count}")
    return LazyRng.create(key, *path, count).as_jax_rng()
