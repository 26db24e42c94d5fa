"""Frozen layers: no parameter updates, and BatchNorm statistics kept as they were.

A ``trainable`` mask is a pytree of bools matching the parameters (True =
trains), as :func:`jaxcnn.models.freeze_mask` builds it. Freezing a layer means,
as PyTorch's ``module.eval()`` on a frozen body and Keras's ``trainable=False``:

* its parameters get exactly zero updates (:func:`freeze_optimizer`), and
* its BatchNorm running statistics are not updated (:func:`frozen_stat_paths`):
  a ``batch_stats`` leaf at module path ``p`` is frozen when the parameters
  under ``p`` are all frozen; a BatchNorm without parameters (no scale, no
  bias) follows its nearest enclosing module that has some.
"""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax import traverse_util

Path = tuple[str, ...]


def freeze_optimizer(tx: optax.GradientTransformation, trainable: Any) -> optax.GradientTransformation:
    """``tx`` for the leaves where ``trainable`` is True, exact zero updates elsewhere."""
    labels = jax.tree.map(lambda t: "train" if t else "freeze", trainable)
    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)


def frozen_param_paths(trainable: Any) -> frozenset[Path]:
    """The paths of the frozen leaves of a ``trainable`` mask (hashable, so a compiled step can key on it)."""
    flat = traverse_util.flatten_dict(_as_dict(trainable))
    return frozenset(tuple(map(str, path)) for path, t in flat.items() if not bool(t))


def _as_dict(tree: Any) -> dict:
    return tree if isinstance(tree, dict) else dict(tree)


def frozen_stat_paths(frozen_params: frozenset[Path], params: Any, batch_stats: Any) -> frozenset[Path]:
    """The ``batch_stats`` leaves (paths) of frozen layers (module docstring).

    Args:
      frozen_params: :func:`frozen_param_paths` of the mask.
      params, batch_stats: the model's trees (shapes only are read).
    """
    if not frozen_params or not batch_stats:
        return frozenset()
    param_paths = [tuple(map(str, p)) for p in traverse_util.flatten_dict(_as_dict(params))]
    out = set()
    for path in traverse_util.flatten_dict(_as_dict(batch_stats)):
        path = tuple(map(str, path))
        module = path[:-1]
        while module:
            under = [p for p in param_paths if p[: len(module)] == module]
            if under:
                if all(p in frozen_params for p in under):
                    out.add(path)
                break
            module = module[:-1]
    return frozenset(out)


def keep_frozen_stats(frozen_stats: frozenset[Path], old: Any, new: Any) -> Any:
    """``new`` batch statistics with the leaves at ``frozen_stats`` taken from ``old``."""
    if not frozen_stats:
        return new
    flat_old = traverse_util.flatten_dict(_as_dict(old))
    flat_new = traverse_util.flatten_dict(_as_dict(new))
    merged = {p: flat_old[p] if tuple(map(str, p)) in frozen_stats else v for p, v in flat_new.items()}
    return traverse_util.unflatten_dict(merged)
