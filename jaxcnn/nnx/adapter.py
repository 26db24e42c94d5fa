"""An NNX model with Linen's ``init`` / ``apply``: the form :mod:`jaxcnn.train` (and any Linen code) calls."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import _validate
from jaxcnn.nnx.context import layer_defaults
from jaxcnn.nnx.convert import COLLECTIONS, from_linen, to_linen
from jaxcnn.nnx.dropout import Dropout


def _takes(module: nnx.Module, name: str) -> bool:
    """Whether ``module.__call__`` names the keyword ``name`` (a ``**kwargs`` catch-all, as ``nnx.Sequential``
    forwarding to its first layer, does not count: modes are set by ``set_attributes`` instead)."""
    return name in inspect.signature(type(module).__call__).parameters


@dataclasses.dataclass(frozen=True, eq=False)
class LinenLike:
    """``init`` / ``apply`` over an NNX module, pure: ``nnx.merge`` the given state, run, ``nnx.split`` again.

    Hashes by identity, so it can be a static ``jax.jit`` argument and a cache
    key (as :func:`jaxcnn.train.make_train_step` uses its model). Build with
    :func:`as_linen_like`.

    Attributes:
      graphdef: the module's structure (``nnx.split``).
      rest: the module's state other than that of the Linen collections
        (:data:`jaxcnn.nnx.convert.COLLECTIONS`; e.g. stored RNG streams), reused unchanged by every ``apply``.
      module: the wrapped module (its values are what :meth:`init` returns).
    """

    graphdef: Any
    rest: Any
    module: nnx.Module

    def init(self, rngs: Any = None, *args: Any, train: bool = False, **kwargs: Any) -> dict[str, Any]:
        """The module's variables, ``{"params": ..., "batch_stats": ...}`` (no ``batch_stats`` if it has none).

        NNX modules are initialized when they are built (from their
        ``nnx.Rngs``), so ``rngs`` and the inputs are accepted for Linen
        compatibility and not used: this returns the wrapped module's current
        values (copies: a step that donates its state never deletes the
        module's own arrays). Build the module with another seed for other
        initial weights.
        """
        return jax.tree.map(jnp.copy, to_linen(self.module))

    def merge(self, variables: dict[str, Any]) -> nnx.Module:
        """A new NNX module holding ``variables`` (e.g. the trained ``state.variables()`` after ``fit``)."""
        return from_linen(self.module, variables)

    def apply(
        self,
        variables: dict[str, Any],
        *args: Any,
        train: bool = False,
        rngs: dict[str, Any] | None = None,
        mutable: Any = False,
        batch_mask: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Run the module on ``args`` with ``variables``, as ``flax.linen.Module.apply``.

        Args:
          variables: ``{"params": ..., "batch_stats": ...}`` as :meth:`init` returns.
          *args: the module's inputs, e.g. ``x`` ``(N, *spatial, C)``.
          train: training mode: ``module.train()`` (every ``deterministic`` /
            ``use_running_average`` attribute set off) and ``train=True`` to a
            ``__call__`` that takes it; ``False``: ``module.eval()``.
          rngs: ``{"dropout": key}``. A ``__call__`` that takes ``rngs`` (as
            :class:`jaxcnn.nnx.Mirror`, whose masks then equal the Linen model's
            for the same key) gets the key; otherwise every RNG stream named
            "dropout" in the module is reseeded with it (``nnx.reseed``).
          mutable: ``False`` returns the output only; ``["batch_stats"]`` (or
            ``True``) returns ``(out, {"batch_stats": new})`` (``(out, {})``
            when the module has no statistics); ``True`` or a list naming it
            also returns ``"spectral_stats"`` (:class:`jaxcnn.nnx.SpectralStat`).
          batch_mask: ``(B,)`` bool: the rows every :class:`jaxcnn.nnx.BatchNorm`
            computes its training statistics from (padded rows ``False``).
          **kwargs: passed to the module's ``__call__``.

        Returns:
          ``out``, or ``(out, updates)`` when ``mutable``.
        """
        module = self.merge_state(variables)
        module.set_attributes(deterministic=not train, use_running_average=not train, raise_if_not_found=False)
        if _takes(module, "train"):
            kwargs["train"] = train
        key = None if not rngs else rngs.get("dropout")
        if key is not None:
            if _takes(module, "rngs"):
                kwargs["rngs"] = key
            else:
                nnx.reseed(module, dropout=key)
        if batch_mask is not None and train:
            self._check_maskable(module)
        with layer_defaults(batch_mask=batch_mask):
            out = module(*args, **kwargs)
        if not mutable:
            return out
        wanted = None if mutable is True else {mutable} if isinstance(mutable, str) else set(mutable)
        return out, {
            c: v for c, v in to_linen(module).items() if c != "params" and v and (wanted is None or c in wanted)
        }

    def merge_state(self, variables: dict[str, Any]) -> nnx.Module:
        """``nnx.merge`` of the structure with ``variables`` (traced values allowed), no copying or checks."""
        states = []
        for collection, kind in COLLECTIONS.items():
            template = nnx.state(self.module, kind)
            pure = variables.get(collection, {})
            states.append(_replace(template, pure))
        return nnx.merge(self.graphdef, *states, self.rest)

    def mixing_layers(self) -> list[str]:
        """Layers that mix the examples of a batch: every BatchNorm, and every Dropout but :class:`jaxcnn.nnx.Dropout`.

        The counterpart of :func:`jaxcnn.train.split.mixing_layers` for NNX
        models (which no Flax interceptor reaches): a batch may be split into
        parts only if this is empty.
        """
        return [
            f"{'/'.join(map(str, path)) or kind} ({type(m).__module__}.{kind})"
            for path, m in nnx.iter_modules(self.module)
            for kind in [type(m).__name__]
            if kind == "BatchNorm" or (kind == "Dropout" and not isinstance(m, Dropout))
        ]

    def check_axis_name(self, axis_name: str) -> None:
        """``ValueError`` unless every BatchNorm and Dropout layer has ``axis_name`` (per-device strategies)."""
        for path, m in nnx.iter_modules(self.module):
            kind = type(m).__name__
            if kind in ("BatchNorm", "Dropout") and getattr(m, "axis_name", None) != axis_name:
                raise ValueError(
                    f"strategies 'pmap'/'shard_map' need every {kind} layer built with axis_name={axis_name!r}, but "
                    f"layer {'/'.join(map(str, path)) or kind!r} has axis_name={getattr(m, 'axis_name', None)!r}; "
                    f"build the model with axis_name={axis_name!r} or use strategy='sharded'"
                )

    def _check_maskable(self, module: nnx.Module) -> None:
        from jaxcnn.nnx.norm import BatchNorm

        for path, m in nnx.iter_modules(module):
            if type(m).__name__ == "BatchNorm" and not isinstance(m, BatchNorm):
                raise ValueError(
                    f"batch_mask was given but BatchNorm layer {'/'.join(map(str, path))!r} is a "
                    f"{type(m).__module__}.BatchNorm, which it cannot reach; use jaxcnn.nnx.BatchNorm"
                )


def _replace(template: Any, pure: Any) -> Any:
    """``template`` (an ``nnx.State``) with the leaves of the nested dict ``pure`` (string keys), as a new State."""
    flat = []
    for path, var in nnx.to_flat_state(template):
        node = pure
        for k in path:
            node = node[str(k)]
        flat.append((path, var.replace(node) if isinstance(var, nnx.Variable) else node))
    return nnx.from_flat_state(flat)


def as_linen_like(module: nnx.Module) -> LinenLike:
    """Wrap an NNX module so that code written for Linen modules -- :mod:`jaxcnn.train` -- runs it.

    ``init`` returns ``{"params": ..., "batch_stats": ...}`` (plain nested dicts
    of arrays: ``nnx.Param`` and ``nnx.BatchStat`` state by path) and
    ``apply(variables, x, train=..., rngs={"dropout": key}, mutable=["batch_stats"]
    or False, batch_mask=None)`` returns ``out`` or ``(out, {"batch_stats": ...})``
    without touching ``module``: it works under ``jax.jit``, ``pmap``,
    ``shard_map`` and ``jit`` with ``NamedSharding`` exactly as a Linen module.

    Args:
      module: any :class:`flax.nnx.Module`; a model that takes ``train`` / ``rngs``
        keywords (every ``jaxcnn.get_model(name, api="nnx")``) gets them.

    Returns:
      A :class:`LinenLike`, hashable by identity.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxcnn, jaxcnn.nnx as jnnx
      >>> model = jnnx.as_linen_like(jaxcnn.get_model("lwls_cnn", api="nnx", rngs=nnx.Rngs(0)))
      >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> model.apply(variables, jnp.zeros((2, 28, 28, 1)), train=False).shape
      (2, 10)
    """
    if not isinstance(module, nnx.Module):
        raise TypeError(f"module must be a flax.nnx.Module, got {_validate.fmt(module)}")
    parts = nnx.split(module, *COLLECTIONS.values(), ...)
    return LinenLike(parts[0], parts[-1], module)
