"""Which PyTorch tensor feeds which jaxcnn variable, and by which layout rule.

A jaxcnn module (a path in the variables tree, e.g. ``"layer1_block1/conv1"``)
corresponds to a PyTorch module (a key prefix, e.g. ``"layer1.0.conv1"``);
the module's kind (from :mod:`jaxcnn.interop.torch.structure`) decides the
leaf names and the layout rule of each leaf (see
:mod:`jaxcnn.interop.torch.layout`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from jaxcnn.interop.torch import layout

#: The per-step counter PyTorch's BatchNorm keeps; jaxcnn has none (ignored on import, written on export).
NUM_BATCHES_TRACKED = "num_batches_tracked"


class Rule(NamedTuple):
    """A layout rule: to jaxcnn, to PyTorch, and PyTorch's shape for a jaxcnn shape."""

    name: str
    from_torch: Callable[[Any], Any]
    to_torch: Callable[[Any], Any]
    torch_shape: Callable[[tuple[int, ...]], tuple[int, ...]]


def _conv_shape(s):
    return (s[-1], s[-2], *s[:-2])


COPY = Rule("copy", lambda a: a, lambda a: a, lambda s: tuple(s))
CONV = Rule("conv", layout.conv_from_torch, layout.conv_to_torch, _conv_shape)
CONV_TRANSPOSE = Rule("conv_transpose", layout.conv_transpose_from_torch, layout.conv_transpose_to_torch, _conv_shape)
DENSE = Rule("dense", layout.dense_from_torch, layout.dense_to_torch, lambda s: (s[1], s[0]))
LAYER_NORM = Rule(
    "layer_norm",
    layout.layer_norm_from_torch,
    layout.layer_norm_to_torch,
    lambda s: tuple(s) if len(s) <= 1 else (s[-1], *s[:-1]),
)


def dense_after_flatten(flatten_shape: tuple[int, ...]) -> Rule:
    """The dense rule with the rows permuted from PyTorch's ``(c, *spatial)`` flatten order."""
    return Rule(
        f"dense (rows from a flattened {flatten_shape} map, NCHW order)",
        lambda a: layout.dense_from_torch(a, flatten_shape),
        lambda a: layout.dense_to_torch(a, flatten_shape),
        lambda s: (s[1], s[0]),
    )


class Leaf(NamedTuple):
    """One jaxcnn variable and the PyTorch tensor it corresponds to."""

    collection: str  # "params" or "batch_stats"
    path: str  # module path, "/"-joined
    name: str  # leaf name: "kernel", "bias", "scale", "mean", "var"
    torch_key: str
    rule: Rule


#: Leaf name -> PyTorch name, per module kind.
_TORCH_NAMES = {
    "norm": {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"},
    "default": {"kernel": "weight", "bias": "bias", "scale": "weight", "mean": "running_mean", "var": "running_var"},
}


def leaf_rule(kind: str, name: str, shape: tuple[int, ...], flatten: tuple[int, ...] | None) -> Rule:
    """The layout rule of leaf ``name`` (of ``shape``) of a module of class ``kind``."""
    if name != "kernel":
        return LAYER_NORM if kind == "LayerNorm" and name in ("scale", "bias") else COPY
    if kind == "ConvTranspose":
        return CONV_TRANSPOSE
    if kind == "Dense" or len(shape) == 2:
        return dense_after_flatten(flatten) if flatten is not None else DENSE
    return CONV


def torch_leaf_name(kind: str, name: str) -> str:
    """PyTorch's name for jaxcnn leaf ``name`` of a module of class ``kind`` (``kernel`` -> ``weight``...)."""
    table = _TORCH_NAMES["norm" if "Norm" in kind else "default"]
    return table.get(name, name)
