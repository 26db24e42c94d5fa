"""The registry of twins: every public Linen module of :mod:`jaxcnn.nn` -> its NNX module, with a test case.

One table drives three things: :func:`build` makes the NNX layer equivalent
to a configured Linen layer (its options copied by name), :func:`call` runs it
with the Linen call's arguments (what :class:`jaxcnn.nnx.Mirror` does for every
layer of a zoo model), and the ``cases`` feed the equality tests, which also
fail for any module in ``jaxcnn.nn.__all__`` missing from :data:`TWINS`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
from flax import nnx

import jaxcnn.nn as jnn
from jaxcnn.nn.conv import window_shape
from jaxcnn.nnx import blur, conv, dropout, norm, pool, spectral

Inputs = Callable[[jax.Array], tuple]


@dataclasses.dataclass(frozen=True)
class Case:
    """One test configuration: a Linen layer, its inputs (from a key) and the call keywords to compare."""

    linen: nn.Module
    inputs: Inputs
    calls: tuple[dict, ...] = ({},)


@dataclasses.dataclass(frozen=True)
class Twin:
    """A Linen class, its NNX twin and how to build one from the other.

    Attributes:
      nnx: the NNX class (or a builder function for containers).
      derive: ``(linen_layer, inputs) -> dict`` of NNX constructor arguments read
        from the input (``in_features``, ``kernel_size`` as a tuple, ...).
      renamed: Linen attribute -> NNX argument (``features`` -> ``out_features``).
      cases: test configurations.
      rngs: give the NNX constructor ``rngs`` (off for Dropout: its key comes with each call).
      defaults_only: Linen options whose NNX namesake means something else
        (called differently): converted only when left at their default.
    """

    nnx: Any
    derive: Callable[[nn.Module, tuple], dict] = lambda layer, inputs: {}
    renamed: dict = dataclasses.field(default_factory=dict)
    cases: tuple[Case, ...] = ()
    defaults_only: frozenset = frozenset()
    rngs: bool = True


def _dense_twin(cls: type) -> Twin:
    """``nnx.Linear`` for a Linen ``Dense`` class (flax's, or jaxcnn's checked subclass)."""
    return Twin(
        nnx.Linear,
        lambda layer, inputs: {"in_features": inputs[0].shape[-1]},
        {"features": "out_features"},
        (Case(cls(7), _normal((3, 5))),),
        frozenset({"promote_dtype", "dot_general", "dot_general_cls"}),
    )


def _normal(*shapes: tuple) -> Inputs:
    return lambda key: tuple(jax.random.normal(k, s) for k, s in zip(jax.random.split(key, len(shapes)), shapes))


def _pooled(shape: tuple, window: int) -> Inputs:
    def make(key):
        x = jax.random.normal(key, shape)
        return jnn.MaxPoolWithIndices(window).apply({}, x)

    return make


def _conv_derive(layer: nn.Module, inputs: tuple) -> dict:
    x = inputs[0]
    return {"in_features": x.shape[-1], "kernel_size": window_shape(layer.kernel_size, x, type(layer).__name__)}


def _spectral_derive(layer: nn.Module, inputs: tuple) -> dict:
    return {**_conv_derive(layer, inputs), "input_shape": tuple(inputs[0].shape[1:-1])}


def _channels(layer: nn.Module, inputs: tuple) -> dict:
    return {"num_features": inputs[0].shape[-1]}


_C = _normal((2, 9, 9, 4))

TWINS: dict[type, Twin] = {
    jnn.Conv: Twin(
        conv.Conv,
        _conv_derive,
        {"features": "out_features"},
        (
            Case(
                jnn.Conv(6, (3, 2), strides=2, padding=((1, 2), (0, 1)), dilation=2, groups=2, padding_mode="reflect"),
                _C,
            ),
            Case(jnn.Conv(3, 3, padding="CAUSAL", dilation=2, flip=True, use_bias=False), _normal((2, 11, 2))),
        ),
    ),
    jnn.ConvTranspose: Twin(
        conv.ConvTranspose,
        _conv_derive,
        {"features": "out_features"},
        (
            Case(jnn.ConvTranspose(2, 3, strides=2, padding=1, output_padding=1), _C),
            Case(jnn.ConvTranspose(4, 3, strides=2, dilation=2, groups=2), _normal((2, 5, 4))),
        ),
    ),
    jnn.MaxPool: Twin(
        pool.MaxPool,
        cases=(
            Case(jnn.MaxPool(3, strides=2, padding=1, ceil_mode=True), _C),
            Case(jnn.MaxPool((2, 1)), _normal((2, 6, 5, 3))),
            Case(jnn.MaxPool(2, strides=1, padding=1, dilation=2), _C),
            Case(jnn.MaxPool(3, strides=2, ceil_mode=True, dilation=(1, 2)), _C),
        ),
    ),
    jnn.AvgPool: Twin(
        pool.AvgPool,
        cases=(
            Case(jnn.AvgPool(3, strides=2, padding=1, ceil_mode=True, count_include_pad=False), _C),
            Case(jnn.AvgPool(2, padding="SAME"), _normal((2, 7, 3))),
            Case(jnn.AvgPool(3, strides=2, padding=1, divisor_override=3), _C),
        ),
    ),
    jnn.GlobalAvgPool: Twin(pool.GlobalAvgPool, cases=(Case(jnn.GlobalAvgPool(), _C),)),
    jnn.GlobalMaxPool: Twin(pool.GlobalMaxPool, cases=(Case(jnn.GlobalMaxPool(), _normal((2, 3, 4, 5, 2))),)),
    jnn.AdaptiveAvgPool: Twin(pool.AdaptiveAvgPool, cases=(Case(jnn.AdaptiveAvgPool((4, None)), _C),)),
    jnn.AdaptiveMaxPool: Twin(pool.AdaptiveMaxPool, cases=(Case(jnn.AdaptiveMaxPool(4), _normal((2, 10, 3))),)),
    jnn.MaxPoolWithIndices: Twin(
        pool.MaxPoolWithIndices, cases=(Case(jnn.MaxPoolWithIndices(3, strides=2, padding=1), _C),)
    ),
    jnn.MaxUnpool: Twin(pool.MaxUnpool, cases=(Case(jnn.MaxUnpool((8, 8)), _pooled((2, 8, 8, 3), 2)),)),
    jnn.Flatten: Twin(pool.Flatten, cases=(Case(jnn.Flatten(), _C),)),
    jnn.BatchNorm: Twin(
        norm.BatchNorm,
        _channels,
        cases=(
            Case(
                jnn.BatchNorm(momentum=0.8, epsilon=1e-3),
                _C,
                ({"use_running_average": False}, {"use_running_average": True}),
            ),
            Case(jnn.BatchNorm(use_running_average=False, use_scale=False), _normal((6, 5)), ({}, {"mask": "half"})),
            Case(
                jnn.BatchNorm(track_running_stats=False, epsilon=1e-3),
                _C,
                (
                    {"use_running_average": False},
                    {"use_running_average": True},
                    {"use_running_average": False, "mask": "half"},
                ),
            ),
        ),
    ),
    jnn.BlurPool: Twin(
        blur.BlurPool,
        cases=(
            *(Case(jnn.BlurPool(m), _C) for m in (2, 3, 4, 5)),
            Case(jnn.BlurPool(3, strides=(2, 1), padding=1, padding_mode="zeros"), _C),
            Case(jnn.BlurPool(4, strides=3, padding_mode="circular"), _normal((2, 10, 3))),
        ),
    ),
    jnn.MaxBlurPool: Twin(
        blur.MaxBlurPool,
        cases=(
            Case(jnn.MaxBlurPool(), _C),
            Case(jnn.MaxBlurPool(3, 5, strides=(2, 3), padding_mode="replicate"), _C),
        ),
    ),
    jnn.SpectralNormConv: Twin(
        spectral.SpectralNormConv,
        _spectral_derive,
        {"features": "out_features"},
        (
            Case(jnn.SpectralNormConv(6, 3, strides=2, n_iter=2), _C, ({"train": True}, {"train": False})),
            Case(
                jnn.SpectralNormConv(
                    3,
                    (3,),
                    padding="VALID",
                    dilation=2,
                    use_bias=False,
                    n_init_iter=5,
                    eps=1e-3,
                    collection="batch_stats",
                ),
                _normal((2, 11, 2)),
                ({"train": False}, {"train": True}),
            ),
        ),
    ),
    jnn.GroupNorm: Twin(norm.GroupNorm, _channels, cases=(Case(jnn.GroupNorm(num_groups=2, epsilon=1e-4), _C),)),
    jnn.LayerNorm: Twin(
        norm.LayerNorm,
        lambda layer, inputs: {"normalized_shape": tuple(inputs[0].shape[1:])},
        cases=(Case(jnn.LayerNorm(use_bias=False), _C),),
    ),
    jnn.Dropout: Twin(
        dropout.Dropout,
        cases=(
            Case(jnn.Dropout(0.3), _C, ({"deterministic": False}, {"deterministic": True})),
            Case(
                jnn.Dropout(0.5, mode="scaled", broadcast_axes=(1, 2)),
                _C,
                ({"deterministic": False}, {"deterministic": True}),
            ),
        ),
        rngs=False,
    ),
    nn.Dense: _dense_twin(nn.Dense),
    jnn.Dense: _dense_twin(jnn.Dense),  # flax's Dense with jaxcnn's input check
    nn.Sequential: Twin(
        lambda layer, inputs, rngs: _mirror()(layer, *inputs, rngs=rngs),
        cases=(Case(nn.Sequential([jnn.Conv(4, 3), jax.nn.relu, jnn.MaxPool(2), jnn.Flatten(), nn.Dense(3)]), _C),),
    ),
}

#: Linen attributes that configure the Linen module object only.
_LINEN_ONLY = {"parent", "name"}


def _mirror():
    from jaxcnn.nnx.mirror import Mirror  # the Mirror is built from this table

    return Mirror


def twin_of(layer: nn.Module) -> Twin | None:
    """The registry entry of a Linen layer's exact class (``None`` if it has none)."""
    return TWINS.get(type(layer))


def build(layer: nn.Module, inputs: tuple, rngs: nnx.Rngs) -> nnx.Module:
    """The NNX twin of the configured Linen ``layer`` for ``inputs`` (arrays or ``jax.ShapeDtypeStruct``).

    Every Linen option is copied to the NNX constructor argument of the same
    name (or its :attr:`Twin.renamed` name); the input gives the sizes NNX
    needs up front. A Linen option the NNX class lacks is an error unless it
    has its default value. ``use_running_average`` / ``deterministic`` left to
    the call (``None``) become NNX's training default; calls pass them explicitly.

    Args:
      layer: a Linen module instance whose class is in :data:`TWINS`.
      inputs: the positional inputs of its ``__call__``.
      rngs: :class:`flax.nnx.Rngs` for the parameters.

    Returns:
      The NNX layer (freshly initialized: copy Linen values with :func:`jaxcnn.nnx.from_linen`).
    """
    twin = twin_of(layer)
    if twin is None:
        raise TypeError(f"{type(layer).__module__}.{type(layer).__name__} has no NNX twin in jaxcnn.nnx.twins.TWINS")
    if not inspect.isclass(twin.nnx):
        return twin.nnx(layer, inputs, rngs)
    accepted = inspect.signature(twin.nnx.__init__).parameters
    kwargs = twin.derive(layer, inputs)
    for f in dataclasses.fields(layer):
        if f.name in _LINEN_ONLY or f.name in kwargs:
            continue
        target = twin.renamed.get(f.name, f.name)
        value = getattr(layer, f.name)
        if target in accepted and f.name not in twin.defaults_only:
            if value is not None or f.name not in ("use_running_average", "deterministic"):
                kwargs[target] = value
        elif f.default is dataclasses.MISSING or value != f.default:
            raise ValueError(
                f"{type(layer).__name__}.{f.name}={value!r} has no counterpart in {twin.nnx.__module__}."
                f"{twin.nnx.__name__}; only its default {f.default!r} can be converted"
            )
    if "rngs" in accepted and twin.rngs:
        kwargs["rngs"] = rngs
    built = twin.nnx(**kwargs)
    if not isinstance(built, nnx.Module):
        raise TypeError(f"the twin of {type(layer).__name__} built a {type(built).__name__}, not an nnx.Module")
    return built


def _first(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def call(twin_layer: nnx.Module, layer: nn.Module, args: tuple, kwargs: dict) -> Any:
    """Run the NNX ``twin_layer`` as the bound Linen ``layer`` would run on ``args``/``kwargs``.

    BatchNorm and Dropout take their mode from the Linen call or attribute; a
    training Dropout gets ``layer.make_rng(...)``, the very key the Linen layer
    would draw, so both draw the same mask.
    """
    if isinstance(layer, jnn.BatchNorm):
        ura = _first(args, kwargs, 1, "use_running_average")
        ura = layer.use_running_average if ura is None else ura
        return twin_layer(args[0], use_running_average=ura, mask=kwargs.get("mask"))
    if isinstance(layer, jnn.Dropout):
        det = _first(args, kwargs, 1, "deterministic")
        det = layer.deterministic if det is None else det
        training = det is False and layer.rate > 0.0
        key = kwargs.get("rng")  # per-example keys of a part of the batch (jaxcnn.train.split), or the stream's
        if key is None and training:
            key = layer.make_rng(layer.rng_collection)
        return twin_layer(args[0], deterministic=det, rngs=key if training else None)
    return twin_layer(*args, **kwargs)
