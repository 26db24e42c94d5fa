"""State_dicts in and out: :func:`from_torch` and :func:`to_torch`, for the zoo and for any jaxcnn model.

A PyTorch ``state_dict`` is a flat ``{key: tensor}``; jaxcnn variables are
``{"params": {...}, "batch_stats": {...}}`` trees. Each jaxcnn module path
(``"layer1_block1/conv1"``) corresponds to a PyTorch key prefix
(``"layer1.0.conv1"``): for the zoo, torchvision's (see
:mod:`jaxcnn.interop.torch.zoo`); for any other model, a ``mapping`` (a dict
or a function of the path; by default the path with ``/`` -> ``.``). Each
leaf is converted by the layout rule of its module (see
:mod:`jaxcnn.interop.torch.layout`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import _validate
from jaxcnn.interop.torch._deps import require_torch, to_numpy
from jaxcnn.interop.torch.rules import (
    NUM_BATCHES_TRACKED,
    Leaf,
    leaf_rule,
    torch_leaf_name,
)
from jaxcnn.interop.torch.structure import Structure, trace
from jaxcnn.interop.torch.zoo import zoo_spec
from jaxcnn.models import get_model

MappingLike = Mapping[str, str | None] | Callable[[str], str | None] | None
_COLLECTIONS = ("params", "batch_stats")


class IncompatibleKeys(NamedTuple):
    """What a non-strict conversion did not load (PyTorch key names, with the jaxcnn variable in the text).

    Attributes:
      missing: variables with no tensor in the state_dict, ``"conv1.weight (params/conv1/kernel)"``.
      unexpected: state_dict keys that no variable takes.
      mismatched: ``"fc.weight: got (10, 512), expected (1000, 512) (params/head/kernel)"``.
    """

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)


class StateDictMismatchError(ValueError):
    """Strict mode: the state_dict and the model disagree; ``.report`` is the :class:`IncompatibleKeys`."""

    def __init__(self, what: str, report: IncompatibleKeys, hint: str = ""):
        self.report = report
        lines = [
            (
                f"the state_dict does not match {what}: {len(report.missing)} missing, {len(report.unexpected)} "
                f"unexpected, {len(report.mismatched)} with the wrong shape (pass strict=False to load the rest)"
            )
        ]
        lines += [f"  missing key: {k}" for k in report.missing]
        lines += [f"  unexpected key: {k}" for k in report.unexpected]
        lines += [f"  shape mismatch: {k}" for k in report.mismatched]
        if hint:
            lines.append(f"hint: {hint}")
        super().__init__("\n".join(lines))


def resolve_model(name_or_model: Any, model_kwargs: Mapping[str, Any] | None) -> nn.Module:
    """A zoo name (built with ``get_model(name, **model_kwargs)``) or a Flax module as it is.

    An NNX zoo model (:class:`jaxcnn.nnx.Mirror`) is converted through its Linen
    model, whose variables are path for path its own (load them into it with
    :func:`jaxcnn.nnx.from_linen`).
    """
    from jaxcnn.nnx import Mirror

    if isinstance(name_or_model, Mirror):
        name_or_model = name_or_model.linen_model
    if isinstance(name_or_model, str):
        return get_model(name_or_model, **dict(model_kwargs or {}))
    if isinstance(name_or_model, nn.Module):
        if model_kwargs:
            raise TypeError("model_kwargs applies to a model name only; this is a module already built")
        return name_or_model
    raise TypeError(
        f"name_or_model must be a zoo model name, a flax.linen.Module or an NNX zoo model, got "
        f"{_validate.fmt(name_or_model)}"
    )


def _path_mapping(model: nn.Module, mapping: MappingLike) -> Callable[[str], str | None]:
    """The module path -> PyTorch prefix function: ``mapping``, else the zoo's, else ``/`` -> ``.``."""
    if mapping is None:
        spec = zoo_spec(model)
        return spec.mapping if spec is not None else (lambda p: p.replace("/", "."))
    if isinstance(mapping, Mapping):
        table = dict(mapping)
        return lambda p: table[p] if p in table else p.replace("/", ".")
    if callable(mapping):
        return mapping
    raise TypeError(f"mapping must be None, a dict or a function of the module path, got {_validate.fmt(mapping)}")


def _input_shape(model: nn.Module, input_shape: Any, channels: Callable[[str], int | None]) -> tuple[int, ...]:
    """The shape to trace the model with: given, or ``(1, size, size, C)`` for the zoo (``C`` from the first conv)."""
    if input_shape is not None:
        return tuple(input_shape)
    spec = zoo_spec(model)
    if spec is None:
        raise ValueError(
            f"input_shape is needed for {type(model).__name__} (not a torchvision-like zoo model): a channels-last "
            f"(N, *spatial, C) shape the model accepts, e.g. (1, 28, 28, 1)"
        )
    c = channels(spec.first_conv)
    if c is None:
        raise ValueError(f"the state_dict has no {spec.first_conv!r} to read the input channels from; pass input_shape")
    return (1, spec.image_size, spec.image_size, c)


def plan(structure: Structure, mapping: Callable[[str], str | None]) -> list[Leaf]:
    """Every variable of ``structure`` with its PyTorch key and rule, module by module in call order."""
    order = {c.path: i for i, c in enumerate(structure.calls)}
    leaves = []
    for collection in _COLLECTIONS:
        flat = jax.tree_util.tree_flatten_with_path(structure.shapes.get(collection, {}))[0]
        for keypath, shape in flat:
            keys = [str(getattr(k, "key", k)) for k in keypath]
            path, name = "/".join(keys[:-1]), keys[-1]
            prefix = mapping(path)
            if prefix is None:
                continue
            kind = structure.kinds.get(path, "")
            rule = leaf_rule(kind, name, tuple(shape.shape), structure.flatten.get(path))
            key = f"{prefix}.{torch_leaf_name(kind, name)}" if prefix else torch_leaf_name(kind, name)
            leaves.append(Leaf(collection, path, name, key, rule))
    return sorted(leaves, key=lambda leaf: order.get(leaf.path, len(order)))


def _keys(leaf: Leaf) -> list[str]:
    """The leaf's keys in the variables tree: collection, module path parts, name."""
    return [leaf.collection, *(leaf.path.split("/") if leaf.path else []), leaf.name]


def _shape_of(structure: Structure, leaf: Leaf) -> tuple[tuple[int, ...], Any]:
    node: Any = structure.shapes
    for k in _keys(leaf):
        node = node[k]
    return tuple(node.shape), node.dtype


def _set(tree: dict, keys: Sequence[str], value: Any) -> None:
    for k in keys[:-1]:
        tree = tree.setdefault(k, {})
    tree[keys[-1]] = value


def _get(tree: Any, keys: Sequence[str]) -> Any:
    for k in keys:
        if not isinstance(tree, Mapping) or k not in tree:
            return None
        tree = tree[k]
    return tree


def from_torch(
    name_or_model: Any,
    state_dict: Mapping[str, Any],
    *,
    strict: bool = True,
    mapping: MappingLike = None,
    model_kwargs: Mapping[str, Any] | None = None,
    input_shape: Sequence[int] | None = None,
    variables: Any = None,
) -> Any:
    """Convert a PyTorch ``state_dict`` into jaxcnn variables for a zoo model or any jaxcnn model.

    Every tensor goes through its layout rule (:mod:`jaxcnn.interop.torch.layout`):
    conv ``(O, I/g, *k) -> (*k, I/g, O)``, transposed conv the same, dense
    ``(out, in) -> (in, out)`` with the rows of a dense layer after a
    ``Flatten`` permuted from PyTorch's ``(c, h, w)`` order to ``(h, w, c)``,
    BatchNorm ``weight, bias, running_mean, running_var`` -> ``params/scale,
    bias`` and ``batch_stats/mean, var``; ``num_batches_tracked`` is ignored.

    Args:
      name_or_model: a zoo name (``"resnet18"``, ``"vgg11_bn"``, ``"alexnet"``,
        ``"mobilenet_v2"``, ``"lenet5"``, ...; torchvision's key names; for
        torchvision's AlexNet pass ``model_kwargs={"channels":
        TORCHVISION_CHANNELS}``) or a Flax module.
      state_dict: ``{key: tensor or array}``, e.g. ``torch_model.state_dict()``
        or :func:`jaxcnn.interop.torch.load_state_dict`'s result.
      strict: every variable must be found with the right shape and every key
        used; one :class:`StateDictMismatchError` lists every offence. ``False``:
        load what matches and return ``(variables, IncompatibleKeys)``.
      mapping: jaxcnn module path -> PyTorch key prefix, as a dict (paths not
        in it keep their name, ``/`` -> ``.``; ``None`` values are not loaded)
        or a function (returning ``None`` for a module not to load). Default:
        the zoo's torchvision names, or the path with ``/`` -> ``.``.
      model_kwargs: options of ``get_model(name, ...)`` (e.g. ``num_classes``).
      input_shape: channels-last ``(N, *spatial, C)`` the model accepts, to trace
        its variable shapes; needed for a model outside the torchvision-like zoo.
      variables: optional starting variables (e.g. ``model.init(...)``): in
        non-strict mode, what is not loaded keeps its value from here
        (otherwise it is left out of the result).

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (``batch_stats`` only if the model
      has BatchNorm); with ``strict=False``, ``(variables, IncompatibleKeys)``.

    Example:
      >>> import numpy as np
      >>> from jaxcnn.interop.torch import from_torch
      >>> sd = {"weight": np.ones((4, 3), np.float32), "bias": np.zeros(4, np.float32)}
      >>> import flax.linen as nn
      >>> v = from_torch(nn.Dense(4), sd, mapping=lambda p: "", input_shape=(1, 3))
      >>> v["params"]["kernel"].shape
      (3, 4)
    """
    strict = _validate.check_bool(strict, "strict")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of key -> tensor, got {_validate.fmt(state_dict)}")
    model = resolve_model(name_or_model, model_kwargs)
    path_map = _path_mapping(model, mapping)
    shape = _input_shape(
        model,
        input_shape,
        lambda k: int(np.shape(state_dict[k])[1]) if k in state_dict and np.ndim(state_dict[k]) > 1 else None,
    )
    structure = trace(model, shape)
    leaves = plan(structure, path_map)
    missing, mismatched, used = [], [], set()
    out: dict[str, Any] = {}
    for leaf in leaves:
        target, dtype = _shape_of(structure, leaf)
        where = "/".join(_keys(leaf))
        if leaf.torch_key not in state_dict:
            missing.append(f"{leaf.torch_key} ({where}, expected shape {leaf.rule.torch_shape(target)})")
            continue
        used.add(leaf.torch_key)
        value = to_numpy(state_dict[leaf.torch_key])
        expected = leaf.rule.torch_shape(target)
        if tuple(value.shape) != expected:
            mismatched.append(f"{leaf.torch_key}: got {tuple(value.shape)}, expected {expected} ({where})")
            continue
        _set(out, _keys(leaf), jnp.asarray(leaf.rule.from_torch(value), dtype))
    unexpected = [k for k in state_dict if k not in used and not str(k).endswith(NUM_BATCHES_TRACKED)]
    report = IncompatibleKeys(tuple(missing), tuple(unexpected), tuple(mismatched))
    if strict:
        if report:
            spec = zoo_spec(model) if report.mismatched and mapping is None else None
            raise StateDictMismatchError(
                type(model).__name__ if not isinstance(name_or_model, str) else repr(name_or_model),
                report,
                spec.hint if spec is not None else "",
            )
        return out
    if variables is not None:
        base = jax.tree_util.tree_flatten_with_path(dict(variables))[0]
        for keypath, value in base:
            keys = [str(getattr(k, "key", k)) for k in keypath]
            if _get(out, keys) is None:
                _set(out, keys, value)
    return out, report


def to_torch(
    name_or_model: Any,
    variables: Any,
    *,
    mapping: MappingLike = None,
    model_kwargs: Mapping[str, Any] | None = None,
    input_shape: Sequence[int] | None = None,
    num_batches_tracked: int = 0,
    tensors: bool = True,
) -> dict[str, Any]:
    """jaxcnn variables -> a PyTorch ``state_dict`` (the inverse of :func:`from_torch`).

    Every BatchNorm also gets ``num_batches_tracked`` (jaxcnn keeps no such
    counter: give the number of training steps if it matters, e.g. for a
    PyTorch BatchNorm with ``momentum=None``).

    Args:
      name_or_model, mapping, model_kwargs, input_shape: as :func:`from_torch`.
      variables: ``{"params": ..., "batch_stats": ...}`` of the model.
      num_batches_tracked: the value written for every BatchNorm.
      tensors: return ``torch.Tensor`` values (needs PyTorch) or NumPy arrays.

    Returns:
      ``{key: tensor}`` in module order, ready for ``torch_model.load_state_dict``.
    """
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise TypeError(f"variables must be a dict with a 'params' collection, got {_validate.fmt(variables)}")
    model = resolve_model(name_or_model, model_kwargs)
    tensors = _validate.check_bool(tensors, "tensors")
    num_batches_tracked = _validate.as_int(num_batches_tracked, "num_batches_tracked")

    def channels(_: str) -> int | None:
        kernels = [leaf for leaf in jax.tree.leaves(variables["params"]) if np.ndim(leaf) >= 3]
        return int(np.shape(kernels[0])[-2]) if kernels else None

    structure = trace(model, _input_shape(model, input_shape, channels))
    out: dict[str, Any] = {}
    missing = []
    for leaf in plan(structure, _path_mapping(model, mapping)):
        value = _get(variables, _keys(leaf))
        if value is None:
            missing.append("/".join(_keys(leaf)))
            continue
        out[leaf.torch_key] = np.asarray(leaf.rule.to_torch(np.asarray(value)))
        if leaf.collection == "batch_stats" and leaf.name == "var":
            out[leaf.torch_key[: -len("running_var")] + NUM_BATCHES_TRACKED] = np.asarray(num_batches_tracked, np.int64)
    if missing:
        raise ValueError(f"variables lack {len(missing)} entries the model has: {', '.join(missing)}")
    if tensors:
        torch = require_torch("to_torch(..., tensors=True)")
        out = {k: torch.from_numpy(np.array(v)) for k, v in out.items()}  # a writable copy
    return out
