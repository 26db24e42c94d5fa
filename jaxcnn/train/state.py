"""The training state: everything a step reads and writes, as one pytree."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax.training import train_state

from jaxcnn import _validate
from jaxcnn.models.inputs import check_sample, check_variables, expected_variables
from jaxcnn.train import model_api


class TrainState(train_state.TrainState):
    """Flax's ``TrainState`` (``step``, ``params``, ``opt_state``, ``apply_fn``, ``tx``) plus:

    Attributes:
      batch_stats: the model's ``batch_stats`` collection (running BatchNorm
        statistics); an empty dict for models without BatchNorm.
      rng: raw ``uint32[2]`` PRNG key data. The key of step ``t`` is
        ``fold_in(rng, t)``, so randomness depends only on the seed and the step
        number: a resumed run draws exactly the keys an uninterrupted one would.
    """

    batch_stats: Any
    rng: jax.Array

    def step_key(self) -> jax.Array:
        """The typed PRNG key of the current step: ``fold_in(rng, step)``."""
        return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)

    def variables(self) -> dict[str, Any]:
        """``{"params": ..., "batch_stats": ...}`` as ``model.apply`` takes them."""
        out = {"params": self.params}
        if self.batch_stats:
            out["batch_stats"] = self.batch_stats
        return out


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    sample_x: Any,
    *,
    seed: int = 0,
    params: Any = None,
    batch_stats: Any = None,
) -> TrainState:
    """Initialize ``model`` on ``sample_x`` and wrap it with optimizer state ``tx.init(params)``.

    The model must take ``train`` as a keyword: ``model.apply(variables, x, train=...)``.

    Args:
      model: a Flax linen module.
      tx: an optax optimizer (e.g. from :func:`jaxcnn.train.make_optimizer`).
      sample_x: an example batch (or ``jax.ShapeDtypeStruct``), ``(B, *input_shape)``.
      seed: an int; derives the init key and the training key (``rng``). The
        same seed gives the same initial weights on the same backend (they are
        drawn with XLA's "rbg" generator, which is fast to compile but not
        bit-identical across CPU/GPU/TPU).
      params, batch_stats: start from these instead of a fresh init (fine-tuning).

    Returns:
      A :class:`TrainState` at step 0.

    Raises:
      TypeError: ``model`` is not a Flax module, ``tx`` not an optax optimizer
        (``None``, a name such as ``"adam"``), ``sample_x`` not an array.
      ValueError: ``sample_x`` has a rank the model does not take (e.g. no batch
        axis), or ``params``/``batch_stats`` do not match what the model creates
        for ``sample_x`` (another model's, or another input shape's).
    """
    seed = _validate.as_int(seed, "seed")
    check_optimizer(tx)
    model = model_api.check_model(model)
    linen = isinstance(model, nn.Module)  # else an NNX model seen through jaxcnn.nnx.as_linen_like
    if linen:
        sample_x = check_sample(model, sample_x, "sample_x")
    elif not isinstance(sample_x, jax.ShapeDtypeStruct):
        sample_x = _validate.check_array(sample_x, "sample_x")
    if params is not None and linen:
        given = {"params": params, **({} if batch_stats is None else {"batch_stats": batch_stats})}
        check_variables(model, given, sample_x, name=None, collections=("params",) if batch_stats is None else None)
    # Initial weights come from an "rbg" key: XLA:CPU compiles threefry-based
    # initializers ~10x slower (lwls_cnn: 5.3 s vs 0.6 s). The training key stays
    # threefry, whose partitionable bits make sharded dropout equal single-device.
    init_key = jax.random.key(seed, impl="rbg")
    train_key = jax.random.fold_in(jax.random.key(seed), 1)
    if params is None or (batch_stats is None and (not linen or _has_batch_stats(model, sample_x))):
        variables = _init_fn(model)(init_key, jnp.zeros(sample_x.shape, sample_x.dtype))
        params = variables["params"] if params is None else params
        if batch_stats is None:  # fine-tuning from params alone: fresh running statistics
            batch_stats = variables.get("batch_stats", {})
    return TrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=tx,
        batch_stats={} if batch_stats is None else batch_stats,
        rng=jax.random.key_data(train_key),
    )


def check_optimizer(tx: Any, name: str = "tx") -> None:
    """``tx`` is an optax ``GradientTransformation`` (has callable ``init`` and ``update``).

    Raises:
      TypeError: anything else (``None``, an optimizer's name, an optax constructor not called).
    """
    if isinstance(tx, str):
        raise TypeError(
            f"{name} must be an optax optimizer, got the string {tx!r}; build one with "
            f"jaxcnn.train.make_optimizer({tx!r}, learning_rate)"
        )
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TypeError(
            f"{name} must be an optax optimizer (a GradientTransformation with init and update, e.g. "
            f"jaxcnn.train.make_optimizer('adam', 1e-3)), got {_validate.fmt(tx)}"
        )


def _has_batch_stats(model: nn.Module, sample_x: Any) -> bool:
    return bool(expected_variables(model, tuple(sample_x.shape), sample_x.dtype).get("batch_stats"))


def _init_fn(model: nn.Module):
    """The jitted ``model.init``, one per model (Flax modules hash by value), so creating
    a second state for the same model reuses the compilation."""
    try:
        return _cached_init(model)
    except TypeError:  # an unhashable module: compile afresh
        return _make_init(model)


def _make_init(model: nn.Module):
    return jax.jit(lambda k, x: model_api.init(model, k, x))


_cached_init = functools.lru_cache(maxsize=32)(_make_init)
