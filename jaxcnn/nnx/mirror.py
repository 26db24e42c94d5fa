"""Mirror: the NNX twin of any Linen model built from jaxcnn layers, with one NNX layer per Linen layer."""

from __future__ import annotations

import inspect
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx
from flax.traverse_util import flatten_dict

from jaxcnn import _validate
from jaxcnn.nnx import twins

_OWN = ("linen_model", "deterministic", "rngs", "takes_train", "layer_paths")


def _spec(a: Any) -> Any:
    return jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) if hasattr(a, "shape") else a


class Mirror(nnx.Module):
    r"""An NNX model with the structure, state and forward pass of a Linen model made of jaxcnn layers.

    Construction traces the Linen model once on ``sample_inputs`` (abstractly,
    no compute) and builds, for every layer whose class is in
    :data:`jaxcnn.nnx.twins.TWINS` (every :mod:`jaxcnn.nn` module and
    ``flax.linen.Dense``), its NNX twin at the *same path*: a ResNet's
    ``layer1_0/conv1`` becomes ``model.layer1_0["conv1"]``, a real
    :class:`jaxcnn.nnx.Conv` whose ``kernel`` is an :class:`flax.nnx.Param`;
    BatchNorm statistics are :class:`flax.nnx.BatchStat`. So ``nnx.state(model,
    nnx.Param)`` has exactly the Linen ``params`` tree, parameter counts are
    equal, and :func:`jaxcnn.nnx.from_linen` / ``to_linen`` convert both ways.

    The forward pass runs the Linen model's own ``__call__`` code (the glue:
    activations, residual sums, reshapes) with every layer call replaced by the
    call of its NNX twin (a Flax method interceptor), so no model is written
    twice and the outputs equal Linen's for the same values. It is
    trace-time-only Python: under ``nnx.jit``/``jax.jit`` the compiled program
    is the Linen one. The NNX layers own all state; the Linen model holds none.

    Dropout keys: each training Dropout uses the key its Linen layer would get
    from ``make_rng`` under ``apply(..., rngs={"dropout": key})`` with ``key`` the
    call's ``rngs`` (see :func:`jaxcnn.nnx.linen_key`), so the same key gives
    the same masks in both APIs.

    Args:
      linen_model: a Flax Linen module (e.g. ``jaxcnn.models.get_model("resnet18")``).
      *sample_inputs: arrays or ``jax.ShapeDtypeStruct``\ s of its positional
        inputs (batch size irrelevant; the channels and, for dense heads, the
        spatial size fix the layer sizes).
      rngs: :class:`flax.nnx.Rngs`: "params" initializes the layers (NNX
        initializers, not Linen's draws); its "dropout" stream (or default) is
        stored for calls without ``rngs``.
      deterministic: ``False`` (the NNX default) trains; ``model.eval()`` sets it
        to ``True`` and ``model.train()`` back.

    ``__call__(*inputs, train=None, rngs=None, **kwargs)``: ``train`` overrides
    ``not deterministic`` and is passed to the Linen model's ``train`` keyword
    when it has one; ``rngs``: a PRNG key (used as the Linen ``apply`` dropout
    key) or an ``nnx.Rngs`` (its "dropout" stream draws one). Returns what the
    Linen model returns, e.g. logits ``(N, num_classes)``; BatchNorm statistics
    are updated in place while training.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxcnn.nnx as jnnx
      >>> from jaxcnn.models import get_model
      >>> model = jnnx.Mirror(get_model("lwls_cnn"), jnp.zeros((1, 28, 28, 1)), rngs=nnx.Rngs(0))
      >>> model.conv1.kernel.shape, model(jnp.ones((2, 28, 28, 1)), train=False).shape
      ((5, 5, 1, 4), (2, 10))
    """

    def __init__(
        self,
        linen_model: nn.Module,
        *sample_inputs: Any,
        rngs: nnx.Rngs,
        deterministic: bool = False,
        **call_kwargs: Any,
    ):
        if not isinstance(linen_model, nn.Module):
            raise TypeError(f"linen_model must be a flax.linen.Module, got {_validate.fmt(linen_model)}")
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"rngs must be a flax.nnx.Rngs (e.g. nnx.Rngs(0)), got {_validate.fmt(rngs)}")
        self.linen_model = linen_model
        self.takes_train = "train" in inspect.signature(type(linen_model).__call__).parameters
        self.deterministic = _validate.check_bool(deterministic, "deterministic")
        try:
            self.rngs = rngs["dropout"].fork()
        except KeyError:  # an Rngs without a "dropout" (or default) stream: keys come with each call
            self.rngs = nnx.data(None)
        layers = _trace_layers(linen_model, tuple(_spec(a) for a in sample_inputs), self.takes_train, call_kwargs)
        if twins.twin_of(linen_model) is not None and type(linen_model) is not nn.Sequential:
            raise TypeError(f"{type(linen_model).__name__} is itself a layer: use jaxcnn.nnx.twins.build for one layer")
        tree: dict = {}
        for path, (layer, inputs) in layers.items():
            node = tree
            for name in path[:-1]:
                node = node.setdefault(name, {})
            node[path[-1]] = twins.build(layer, inputs, rngs)
        for name, value in tree.items():
            if name in _OWN:
                raise ValueError(f"the Linen model has a submodule named {name!r}, which Mirror uses itself")
            setattr(self, name, _to_nnx(value))
        self.layer_paths = tuple(layers)
        _check_covered(self, linen_model, sample_inputs, self.takes_train, call_kwargs)

    def layer(self, path: tuple[str, ...]) -> nnx.Module:
        """The NNX layer at a Linen path, e.g. ``("layer1_0", "conv1")``."""
        node: Any = getattr(self, path[0])
        for name in path[1:]:
            node = node[name]
        return node

    def __call__(self, *inputs: Any, train: bool | None = None, rngs: Any = None, **kwargs: Any) -> Any:
        train = (not self.deterministic) if train is None else _validate.check_bool(train, "train")
        if isinstance(rngs, nnx.Rngs):
            rngs = rngs["dropout"]()
        key = self.rngs() if rngs is None and train and self.rngs is not None else rngs
        paths = set(self.layer_paths)

        def run_twin(next_fun, args, kw, context):
            layer = context.module
            path = tuple(layer.scope.path) if layer.scope is not None else ()
            if context.method_name == "__call__" and path in paths and twins.twin_of(layer) is not None:
                return twins.call(self.layer(path), layer, args, kw)
            return next_fun(*args, **kw)

        if self.takes_train:
            kwargs["train"] = train
        with nn.intercept_methods(run_twin):
            return self.linen_model.apply({}, *inputs, rngs={} if key is None else {"dropout": key}, **kwargs)


def _to_nnx(value: Any) -> Any:
    """Nested dicts of layers -> nested :class:`flax.nnx.Dict`."""
    return nnx.Dict({k: _to_nnx(v) for k, v in value.items()}) if isinstance(value, dict) else value


def _trace_layers(model: nn.Module, inputs: tuple, takes_train: bool, call_kwargs: dict) -> dict:
    """``{path: (linen layer, input specs)}`` of every twin-able layer the model calls, by tracing ``init``."""
    found: dict = {}

    def record(next_fun, args, kwargs, context):
        layer = context.module
        if context.method_name == "__call__" and twins.twin_of(layer) is not None and layer.scope is not None:
            path = tuple(layer.scope.path)
            if path and path not in found:
                found[path] = (layer.clone(parent=None), tuple(_spec(a) for a in args))
        return next_fun(*args, **kwargs)

    kwargs = dict(call_kwargs, **({"train": False} if takes_train else {}))
    key = jax.random.key(0)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda xs: model.init({"params": key, "dropout": key}, *xs, **kwargs), inputs)
    # a Sequential (a twin-able container) inside a model: keep it, drop the layers inside it
    outer = [p for p in found if twins.twin_of(found[p][0]) is not None and found[p][0].__class__ is nn.Sequential]
    return {p: v for p, v in found.items() if not any(p[: len(o)] == o and p != o for o in outer)}


def _check_covered(mirror: Mirror, model: nn.Module, inputs: tuple, takes_train: bool, call_kwargs: dict) -> None:
    """Every Linen variable must live in some NNX layer (a layer class without a twin would be lost)."""
    kwargs = dict(call_kwargs, **({"train": False} if takes_train else {}))
    key = jax.random.key(0)
    shapes = jax.eval_shape(
        lambda xs: model.init({"params": key, "dropout": key}, *xs, **kwargs), tuple(_spec(a) for a in inputs)
    )
    from jaxcnn.nnx.convert import COLLECTIONS

    for collection, kind in COLLECTIONS.items():
        want = {tuple(map(str, p)): v.shape for p, v in flatten_dict(dict(shapes.get(collection, {}))).items()}
        have = {tuple(map(str, p)): v.shape for p, v in nnx.to_flat_state(nnx.state(mirror, kind))}
        if want != have:
            missing = sorted("/".join(p) for p in set(want) - set(have))
            raise TypeError(
                f"{type(model).__name__} has {collection} {missing or '(shapes differ)'} in layers without an NNX "
                f"twin (jaxcnn.nnx.twins.TWINS covers jaxcnn.nn modules and flax.linen.Dense/Sequential)"
            )
    for collection in shapes:
        if collection not in COLLECTIONS:
            raise TypeError(f"{type(model).__name__} has a {collection!r} collection, which has no NNX counterpart")
