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
      decay_steps, decay_rate: for "step"; ``decay_rate`` a finite number > 0.
      end_value: final value of "warmup_cosine", a finite number >= 0.

    Raises:
      TypeError, ValueError: an argument of the wrong kind or out of its range
        (a learning rate that is not finite and > 0, a NaN or negative value).

    Returns:
      An ``optax.Schedule`` (step -> learning rate).
    """
    name = _validate.check_choice(name, "schedule", SCHEDULES)
    lr = _positive(learning_rate, "learning_rate")
    end_value = _validate.check_number(end_value, "end_value", low=0.0)
    decay_rate = _validate.check_number(decay_rate, "decay_rate", low=0.0, low_open=True)
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
    """A finite number > 0 (a learning rate, a clipping norm)."""
    return _validate.check_number(value, name, low=0.0, low_open=True)


#: optax keyword arguments and their ranges: (low, high, high_open); betas and decays in [0, 1)
KWARG_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "b1": (0.0, 1.0, True),
    "b2": (0.0, 1.0, True),
    "decay": (0.0, 1.0, True),
    "eps": (0.0, None, False),
    "eps_root": (0.0, None, False),
    "initial_accumulator_value": (0.0, None, False),
}


def _check_kwargs(kwargs: dict[str, Any]) -> None:
    """Range-check the optax keyword arguments jaxcnn knows (``b1=1.5`` is an error, not a divergence)."""
    for key, value in kwargs.items():
        if key in KWARG_RANGES:
            low, high, high_open = KWARG_RANGES[key]
            _validate.check_number(value, key, low=low, high=high, high_open=high_open)
        elif key in ("nesterov", "centered"):
            _validate.check_bool(value, key)


def _mask_labels(trainable: Any):
    """``param_labels`` for ``optax.multi_transform``: "train"/"freeze" per parameter, from ``trainable``.

    ``trainable`` may be the parameters' tree or a prefix of it (``{"conv1": False,
    "head": True}``). Checked when the optimizer state is created (``tx.init``):
    a parameter no entry covers, or an entry that is no parameter, is a
    ``ValueError`` naming ``trainable`` and the paths.
    """
    entries: dict[tuple[str, ...], bool] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(trainable)[0]:
        key = _key(path)
        if isinstance(leaf, (jax.Array, np.ndarray)) and leaf.shape == () and leaf.dtype == bool:
            leaf = bool(leaf)  # a concrete boolean scalar array
        entries[key] = _validate.check_bool(leaf, f"trainable[{'/'.join(key)!r}]")

    def labels(params: Any) -> Any:
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        out, uncovered, used = [], [], set()
        for path, _ in flat:
            key = _key(path)
            owner = next((key[:i] for i in range(len(key), -1, -1) if key[:i] in entries), None)
            if owner is None:
                uncovered.append("/".join(key))
                continue
            used.add(owner)
            out.append("train" if entries[owner] else "freeze")
        unused = ["/".join(k) for k in entries if k not in used]
        if uncovered or unused:
            raise ValueError(
                f"trainable does not match the parameters: no entry for {uncovered[:3] or 'none'}"
                f"{' ...' if len(uncovered) > 3 else ''}; entries that are no parameter: {unused[:3] or 'none'}"
                f"{' ...' if len(unused) > 3 else ''}. Build it from the parameters with "
                f"jaxcnn.models.freeze_mask(params, ...)"
            )
        return jax.tree_util.tree_unflatten(treedef, out)

    return labels


def _key(path: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


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
        parameters, or a prefix of them (True = train); False leaves get exactly
        zero updates. See :func:`jaxcnn.models.freeze_mask` for building it from
        paths. Checked against the parameters at ``tx.init(params)``.
      **optimizer_kwargs: passed to the optax constructor (e.g. ``b1``, ``eps``);
        betas and ``decay`` must be in ``[0, 1)``, ``eps`` >= 0 (:data:`KWARG_RANGES`).

    Raises:
      TypeError, ValueError: an argument of the wrong kind or out of range (a
        learning rate that is inf, NaN or <= 0; ``b1=1.5``; a negative weight
        decay; a ``trainable`` leaf that is not a bool).

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
    weight_decay = _validate.check_number(weight_decay, "weight_decay", low=0.0)
    _check_kwargs(optimizer_kwargs)
    labels = None if trainable is None else _mask_labels(trainable)
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
    if labels is not None:
        tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
    return tx
