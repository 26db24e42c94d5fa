"""Transfer-learning helpers on parameter pytrees: swap or drop the head, copy matching
weights, and freeze subtrees with ``optax.multi_transform`` (or ``optax.masked``).

Paths are the dict keys from the root joined by "/", e.g. ``"layer1_block1/conv1/kernel"``
in a ``params`` tree (or ``"params/head/bias"`` in a whole variables dict).
A *pattern* selecting parameters is

* a string: a path prefix by whole components -- ``"conv1"`` selects
  ``"conv1/kernel"`` and ``"conv1/bias"`` but not ``"conv10/kernel"``;
* a compiled regular expression (``re.compile(...)``), searched in the path;
* or a sequence of these (any may match).

A pattern that selects nothing is an error (a typo would otherwise freeze or
skip nothing in silence).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Union, cast

import jax
import numpy as np
from flax.core import unfreeze

Pattern = Union[str, "re.Pattern[str]", Sequence[Union[str, "re.Pattern[str]"]]]


def path_string(path: Sequence[Any]) -> str:
    """A ``jax.tree_util`` key path as a "/"-joined string."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(k))
    return "/".join(parts)


def flat_paths(tree: Any) -> dict[str, Any]:
    """``{"/"-joined path: leaf}`` for every leaf of ``tree``, in tree order."""
    return {path_string(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _as_patterns(pattern: Any, name: str) -> list[Any]:
    items = [pattern] if isinstance(pattern, (str, re.Pattern)) else pattern
    if not isinstance(items, Sequence) or not items:
        raise TypeError(
            f"{name} must be a path prefix string, a compiled regex, or a non-empty sequence of them, got {pattern!r}"
        )
    for p in items:
        if not isinstance(p, (str, re.Pattern)):
            raise TypeError(f"{name} entries must be path prefix strings or compiled regexes, got {p!r}")
        if isinstance(p, str) and not p.strip("/"):
            raise ValueError(f"{name} has an empty path prefix {p!r}; name a subtree such as 'head'")
    return list(items)


def _matches(path: str, pattern: Any) -> bool:
    if isinstance(pattern, re.Pattern):
        return pattern.search(path) is not None
    prefix = pattern.strip("/")
    return path == prefix or path.startswith(prefix + "/")


def select(tree: Any, pattern: Pattern, name: str = "pattern") -> dict[str, bool]:
    """``{path: selected}`` for every leaf; ``ValueError`` if a pattern selects nothing."""
    patterns = _as_patterns(pattern, name)
    paths = list(flat_paths(tree))
    for p in patterns:
        if not any(_matches(path, p) for path in paths):
            top = sorted({path.split("/")[0] for path in paths})
            shown = p.pattern if isinstance(p, re.Pattern) else p
            raise ValueError(f"{name} {shown!r} matches no parameter; top-level names: {', '.join(top)}")
    return {path: any(_matches(path, p) for p in patterns) for path in paths}


def _split(head_name: Any) -> list[str]:
    if not isinstance(head_name, str) or not head_name.strip("/"):
        raise TypeError(f"head_name must be a non-empty '/'-joined path string, got {head_name!r}")
    return head_name.strip("/").split("/")


def _parent(tree: dict, keys: list[str], head_name: str) -> dict:
    node = tree
    for i, k in enumerate(keys[:-1]):
        if not isinstance(node, Mapping) or k not in node:
            raise ValueError(f"head_name {head_name!r}: no subtree {'/'.join(keys[: i + 1])!r}")
        node = node[k]
    if not isinstance(node, Mapping) or keys[-1] not in node:
        names = ", ".join(sorted(node)) if isinstance(node, Mapping) else "none"
        raise ValueError(f"head_name {head_name!r} is not in the parameters; names at that level: {names}")
    return node


def _copy_dicts(tree: Any) -> Any:
    tree = (
        unfreeze(cast(Any, tree)) if not isinstance(tree, dict) and isinstance(tree, Mapping) else tree
    )  # any Mapping works
    if isinstance(tree, Mapping):
        return {k: _copy_dicts(v) for k, v in tree.items()}
    return tree


def drop_head(params: Any, head_name: str) -> dict:
    """``params`` without the subtree ``head_name`` (e.g. ``"head"``); the input is not modified.

    Returns a new nested dict sharing the leaf arrays with ``params``.

    Example:
      >>> body = drop_head({"conv1": {"kernel": 1}, "head": {"kernel": 2}}, "head")
      >>> body
      {'conv1': {'kernel': 1}}
    """
    keys = _split(head_name)
    out = _copy_dicts(params)
    del _parent(out, keys, head_name)[keys[-1]]
    return out


def replace_head(params: Any, head_name: str, new_params: Any) -> dict:
    """``params`` with the subtree ``head_name`` replaced by ``new_params``.

    Typical use: a pretrained network's params with the head of a freshly
    initialized model for a new number of classes,
    ``replace_head(pretrained, "head", fresh["head"])``. The input is not modified.
    """
    keys = _split(head_name)
    out = _copy_dicts(params)
    _parent(out, keys, head_name)[keys[-1]] = _copy_dicts(new_params)
    return out


class TransferReport(NamedTuple):
    """What :func:`transfer_params` did, by "/"-joined path.

    Attributes:
      kept: paths copied from the pretrained tree.
      skipped: ``{path: reason}`` for paths of the new tree left at their new
        values: ``"excluded"``, ``"not in pretrained"``, or
        ``"shape (pretrained) != (new)"``.
      unused: pretrained paths that the new tree does not have.
    """

    kept: list[str]
    skipped: dict[str, str]
    unused: list[str]

    def __str__(self) -> str:
        lines = [f"kept {len(self.kept)}, skipped {len(self.skipped)}, unused {len(self.unused)}"]
        lines += [f"  skipped {p}: {why}" for p, why in self.skipped.items()]
        lines += [f"  unused {p}" for p in self.unused]
        return "\n".join(lines)


def transfer_params(pretrained_params: Any, new_params: Any, exclude: Pattern = ()) -> tuple[dict, TransferReport]:
    """Copy every leaf of ``pretrained_params`` into ``new_params`` where path and shape agree.

    The result has exactly ``new_params``' structure, shapes and dtypes (copied
    values are cast to the new leaf's dtype). Leaves whose path is excluded,
    absent from the pretrained tree, or of another shape keep their new values
    and are listed, with the reason, in the report.

    Args:
      pretrained_params: the source tree (e.g. a trained network's ``params``).
      new_params: the target tree (e.g. a freshly initialized model with a new
        head), same nesting convention.
      exclude: pattern(s) of new paths never copied (see the module docstring);
        ``()`` excludes nothing.

    Returns:
      ``(params, report)`` with a :class:`TransferReport`.

    Example:
      >>> old = {"conv1": {"kernel": np.ones((3,))}, "head": {"kernel": np.ones((3, 10))}}
      >>> new = {"conv1": {"kernel": np.zeros((3,))}, "head": {"kernel": np.zeros((3, 2))}}
      >>> params, report = transfer_params(old, new)
      >>> report.kept, report.skipped
      (['conv1/kernel'], {'head/kernel': 'shape (3, 10) != (3, 2)'})
    """
    source = flat_paths(pretrained_params)
    excluded = select(new_params, exclude, "exclude") if _nonempty(exclude) else {}
    kept: list[str] = []
    skipped: dict[str, str] = {}

    def take(path, leaf):
        p = path_string(path)
        if excluded.get(p, False):
            skipped[p] = "excluded"
            return leaf
        if p not in source:
            skipped[p] = "not in pretrained"
            return leaf
        old = source[p]
        if tuple(np.shape(old)) != tuple(np.shape(leaf)):
            skipped[p] = f"shape {tuple(np.shape(old))} != {tuple(np.shape(leaf))}"
            return leaf
        kept.append(p)
        if isinstance(leaf, np.ndarray):  # keep the new tree's array kind and dtype
            return np.asarray(old, dtype=leaf.dtype)
        return jax.numpy.asarray(old, dtype=leaf.dtype) if hasattr(leaf, "dtype") else old

    out = jax.tree_util.tree_map_with_path(take, _copy_dicts(new_params))
    new_paths = set(flat_paths(new_params))
    unused = [p for p in source if p not in new_paths]
    return out, TransferReport(kept, skipped, unused)


def _nonempty(pattern: Any) -> bool:
    return isinstance(pattern, (str, re.Pattern)) or bool(pattern)


def freeze_mask(params: Any, *, trainable: Pattern | None = None, frozen: Pattern | None = None) -> Any:
    """A pytree of bools like ``params``: ``True`` where a parameter trains, ``False`` where it is frozen.

    Give exactly one of ``trainable`` (everything else is frozen -- the usual
    fine-tuning of a head) or ``frozen`` (everything else trains). The
    convention (True = train) is the one of
    :func:`jaxcnn.train.make_optimizer`'s ``trainable=`` argument.

    Use with Optax:

    * ``optax.multi_transform({True: opt, False: optax.set_to_zero()}, mask)``
      -- the bools are the labels; frozen parameters get no optimizer state
      (:func:`freeze_labels` gives string labels instead);
    * ``optax.chain(opt, optax.masked(optax.set_to_zero(), jax.tree.map(operator.not_, mask)))``
      -- zero the updates of the frozen ones. Note that ``optax.masked(opt,
      mask)`` alone does *not* freeze anything: it passes the updates of
      unselected parameters through unchanged (the raw gradients).

    Args:
      params: the parameter tree.
      trainable: pattern(s) of the parameters that train.
      frozen: pattern(s) of the parameters that are frozen.

    Returns:
      A tree with ``params``' structure and ``bool`` leaves, ``True`` = trains.

    Example:
      >>> freeze_mask({"conv1": {"kernel": 0.0}, "head": {"kernel": 0.0}}, trainable="head")
      {'conv1': {'kernel': False}, 'head': {'kernel': True}}
    """
    if (trainable is None) == (frozen is None):
        raise TypeError(
            f"freeze_mask needs exactly one of trainable= or frozen=, got trainable={trainable!r}, frozen={frozen!r}"
        )
    name = "trainable" if frozen is None else "frozen"
    pattern = trainable if frozen is None else frozen
    assert pattern is not None  # exactly one is given (checked above)
    chosen = select(params, pattern, name)
    return jax.tree_util.tree_map_with_path(lambda p, _: chosen[path_string(p)] == (frozen is None), params)


def freeze_labels(
    params: Any,
    *,
    trainable: Pattern | None = None,
    frozen: Pattern | None = None,
    labels: tuple[str, str] = ("train", "freeze"),
) -> Any:
    """Labels for ``optax.multi_transform``: ``labels[0]`` for trainable leaves, ``labels[1]`` for frozen.

    Example:
      >>> import optax
      >>> tx = optax.multi_transform(
      ...     {"train": optax.adam(1e-3), "freeze": optax.set_to_zero()},
      ...     freeze_labels({"conv1": {"kernel": 0.0}, "head": {"kernel": 0.0}}, trainable="head"))
    """
    mask = freeze_mask(params, trainable=trainable, frozen=frozen)
    return jax.tree.map(lambda t: labels[0] if t else labels[1], mask)
