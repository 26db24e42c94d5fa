"""Optimizers and learning-rate schedules by name, composed from optax (nothing rewritten).

``make_optimizer("adam", 1e-3)`` is ``optax.adam(1e-3)``; the factory only adds
the usual wrappers in the usual order: gradient clipping first, then the
optimizer (with its schedule), then decoupled weight decay for ``adamw``, and a
freeze mask last so frozen parameters receive exactly zero updates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from jaxcnn import _validate

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "adagrad", "rmsprop")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step")


def make_schedule(
    name: str,
    learning_rate: float,
    *,
    total_steps: int | None = None,
    warmup_steps: int = 0,
    decay_steps: int | None = None,
    decay_rate: float = 0.1,
    end_value: float = 0.0,
) -> optax.Schedule:
    r"""A learning-rate schedule by name.

    ============== ==========================================================
    "constant"     ``lr``
    "cosine"       ``optax.cosine_decay_schedule(lr, total_steps)``: ``lr/2 (1 + cos(pi t / T))``
    "warmup_cosine" linear warm-up from 0 over ``warmup_steps``, then cosine to
                   ``end_value`` at ``total_steps`` (``optax.warmup_cosine_decay_schedule``)
    "step"         ``lr * decay_rate ** floor(t / decay_steps)`` (``optax.exponential_decay`` with staircase)
    ============== ==========================================================

    Args:
      name: one of the above.
      learning_rate: the peak (or constant) rate, > 0.
      total_steps: needed by "cosine" and "warmup_cosine".
      warmup_steps: for "warmup_cosine".
      decay_steps, decay_rate: for "step".
      end_value: final value of "warmup_cosine".

    Returns:
      An ``optax.Schedule`` (step -> learning rate).
    """
    name = _validate.check_choice(name, "schedule", SCHEDULES)
    lr = _positive(learning_rate, "learning_rate")
    if name == "constant":
        return optax.constant_schedule(lr)
    if name in ("cosine", "warmup_cosine"):
        if total_steps is None:
            raise ValueError(f"schedule={name!r} needs total_steps (the length of training in steps)")
        total = _validate.as_int(total_steps, "total_steps")
        if total < 1:
            raise ValueError(f"total_steps must be >= 1, got {total}")
        if name == "cosine":
            return optax.cosine_decay_schedule(lr, total)
        warm = _validate.as_int(warmup_steps, "warmup_steps")
        if not 0 <= warm < total:
            raise ValueError(f"warmup_steps must be in [0, total_steps={total}), got {warm}")
        return optax.warmup_cosine_decay_schedule(0.0, lr, warm, total, end_value)
    if decay_steps is None:
        raise ValueError("schedule='step' needs decay_steps (steps between decays)")
    every = _validate.as_int(decay_steps, "decay_steps")
    if every < 1:
        raise ValueError(f"decay_steps must be >= 1, got {every}")
    return optax.exponential_decay(lr, every, decay_rate, staircase=True)


def _positive(value: Any, name: str) -> float:
    if isinstance(value, (bool, str)) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {_validate.fmt(value)}")
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def _is_scalar_array(v: Any) -> bool:
    return isinstance(v, (jax.Array, np.ndarray, jax.core.Tracer)) and np.ndim(v) == 0


def make_optimizer(
    name: str,
    learning_rate: float | optax.Schedule,
    *,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    clip_norm: float | None = None,
    trainable: Any = None,
    **optimizer_kwargs: Any,
) -> optax.GradientTransformation:
    """An optax optimizer by name, with optional clipping, weight decay and freezing.

    ======== ===================================================
    "sgd"       ``optax.sgd(lr)``
    "momentum"  ``optax.sgd(lr, momentum)`` (heavy ball)
    "nesterov"  ``optax.sgd(lr, momentum, nesterov=True)``
    "adam"      ``optax.adam(lr)``
    "adamw"     ``optax.adamw(lr, weight_decay=weight_decay)`` (decoupled)
    "adagrad"   ``optax.adagrad(lr)``
    "rmsprop"   ``optax.rmsprop(lr)``
    ======== ===================================================

    For every optimizer but "adamw", ``weight_decay > 0`` adds the L2 gradient
    ``weight_decay * w`` before the optimizer (``optax.add_decayed_weights``),
    the classic coupled form.

    Args:
      name: one of the above.
      learning_rate: a float, an ``optax.Schedule`` (see :func:`make_schedule`),
        or a scalar array (so ``optax.inject_hyperparams(make_optimizer)`` can
        change it without recompiling; arrays are not range-checked).
      momentum: for "momentum" and "nesterov".
      weight_decay: see above; >= 0.
      clip_norm: clip the global gradient norm to this value first.
      trainable: ``None`` (train everything) or a pytree of bools matching the
        parameters (True = train); False leaves get exactly zero updates. See
        :func:`jaxcnn.models.freeze_mask` for building it from paths.
      **optimizer_kwargs: passed to the optax constructor (e.g. ``b1``, ``eps``).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> tx = make_optimizer("adam", make_schedule("cosine", 1e-3, total_steps=1000), clip_norm=1.0)
    """
    name = _validate.check_choice(name, "optimizer", OPTIMIZERS)
    if callable(learning_rate) or _is_scalar_array(learning_rate):
        lr = learning_rate  # a schedule, or an array (e.g. under optax.inject_hyperparams)
    else:
        lr = _positive(learning_rate, "learning_rate")
    momentum = _validate.check_unit_interval(momentum, "momentum")
    weight_decay = _validate.check_nonnegative(weight_decay, "weight_decay")
    constructors: dict[str, Callable[..., optax.GradientTransformation]] = {
        "sgd": lambda: optax.sgd(lr, **optimizer_kwargs),
        "momentum": lambda: optax.sgd(lr, momentum=momentum, **optimizer_kwargs),
        "nesterov": lambda: optax.sgd(lr, momentum=momentum, nesterov=True, **optimizer_kwargs),
        "adam": lambda: optax.adam(lr, **optimizer_kwargs),
        "adamw": lambda: optax.adamw(lr, weight_decay=weight_decay, **optimizer_kwargs),
        "adagrad": lambda: optax.adagrad(lr, **optimizer_kwargs),
        "rmsprop": lambda: optax.rmsprop(lr, **optimizer_kwargs),
    }
    try:
        core = constructors[name]()
    except TypeError as e:
        raise TypeError(f"optimizer {name!r} does not accept {sorted(optimizer_kwargs)}: {e}") from None
    chain = []
    if clip_norm is not None:
        chain.append(optax.clip_by_global_norm(_positive(clip_norm, "clip_norm")))
    if weight_decay > 0 and name != "adamw":
        chain.append(optax.add_decayed_weights(weight_decay))
    chain.append(core)
    tx = chain[0] if len(chain) == 1 else optax.chain(*chain)
    if trainable is not None:
        labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable)
        tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
    return tx
