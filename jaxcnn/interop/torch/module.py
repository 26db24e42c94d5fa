"""A user's own PyTorch CNN -> a jaxcnn model and its variables: :func:`from_torch_module`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.interop.torch import layout
from jaxcnn.interop.torch._deps import require_torch, to_numpy
from jaxcnn.interop.torch.ported import Activation, PortedCNN, TorchFlatten
from jaxcnn.nn import (
    AdaptiveAvgPool,
    AdaptiveMaxPool,
    AvgPool,
    BatchNorm,
    Conv,
    ConvTranspose,
    Dropout,
    MaxPool,
)

_ACTIVATION_CLASSES = {
    "ReLU": "relu",
    "ReLU6": "relu6",
    "SiLU": "silu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Identity": "identity",
}
_CONTAINERS = ("Sequential",)


def _nd(cls_name: str) -> int:
    return int(cls_name[-2])  # "Conv2d" -> 2


def _tuple(v: Any, nd: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def _weights(m: Any, kernel_from_torch: Callable[[Any], Any]) -> dict:
    """The ``params`` of a layer with a ``weight`` (in jaxcnn's layout by ``kernel_from_torch``) and maybe a ``bias``."""
    params = {"kernel": kernel_from_torch(to_numpy(m.weight))}
    if m.bias is not None:
        params["bias"] = to_numpy(m.bias)
    return {"params": params}


def _conv(m: Any, nd: int, where: str, *, transposed: bool) -> tuple[nn.Module, dict]:
    """``Conv{1,2,3}d`` -> :class:`~jaxcnn.nn.Conv`; ``transposed``: ``ConvTranspose{1,2,3}d`` -> ``ConvTranspose``."""
    shared = {
        "features": m.out_channels,
        "kernel_size": _tuple(m.kernel_size, nd),
        "strides": _tuple(m.stride, nd),
        "dilation": _tuple(m.dilation, nd),
        "groups": m.groups,
        "use_bias": m.bias is not None,
    }
    if transposed:
        if m.padding_mode != "zeros":
            raise ValueError(
                f"{where}: ConvTranspose with padding_mode={m.padding_mode!r} is not supported (only 'zeros')"
            )
        layer = ConvTranspose(padding=_tuple(m.padding, nd), output_padding=_tuple(m.output_padding, nd), **shared)
        return layer, _weights(m, layout.conv_transpose_from_torch)
    pad = m.padding.upper() if isinstance(m.padding, str) else _tuple(m.padding, nd)
    return Conv(padding=pad, padding_mode=m.padding_mode, **shared), _weights(m, layout.conv_from_torch)


def _batch_norm(m: Any, where: str) -> tuple[nn.Module, dict]:
    if m.track_running_stats and m.momentum is None:
        raise ValueError(f"{where}: BatchNorm with momentum=None (a cumulative average) has no jaxcnn equivalent")
    momentum = layout.momentum_from_torch(m.momentum if m.momentum is not None else 0.1)
    layer = BatchNorm(
        momentum=momentum,
        epsilon=m.eps,
        use_scale=m.affine,
        use_bias=m.affine,
        track_running_stats=m.track_running_stats,
    )
    out: dict = {}
    if m.affine:
        out["params"] = {"scale": to_numpy(m.weight), "bias": to_numpy(m.bias)}
    if m.track_running_stats:
        out["batch_stats"] = {"mean": to_numpy(m.running_mean), "var": to_numpy(m.running_var)}
    return layer, out


def _linear(m: Any) -> tuple[nn.Module, dict]:
    return nn.Dense(m.out_features, use_bias=m.bias is not None), _weights(m, layout.dense_from_torch)


def _pool(m: Any, name: str, nd: int, where: str) -> nn.Module:
    if getattr(m, "return_indices", False):
        raise ValueError(f"{where}: {name}(return_indices=True) returns a pair; only single-output layers convert")
    window = _tuple(m.kernel_size, nd)
    strides = window if m.stride is None else _tuple(m.stride, nd)
    if name.startswith("Max"):
        return MaxPool(window, strides, _tuple(m.padding, nd), ceil_mode=m.ceil_mode, dilation=_tuple(m.dilation, nd))
    return AvgPool(
        window,
        strides,
        _tuple(m.padding, nd),
        ceil_mode=m.ceil_mode,
        count_include_pad=m.count_include_pad,
        divisor_override=getattr(m, "divisor_override", None),
    )


def convert_layer(m: Any, where: str) -> tuple[nn.Module, dict]:
    """One PyTorch leaf layer -> ``(jaxcnn module, its variables)``; a clear error for anything else."""
    name = type(m).__name__
    if name in ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"):
        return _conv(m, _nd(name), where, transposed=name.startswith("ConvTranspose"))
    if name in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"):
        return _batch_norm(m, where)
    if name == "Linear":
        return _linear(m)
    if name in ("MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d"):
        return _pool(m, name, _nd(name), where), {}
    if name.startswith("Adaptive") and name[-2] in "123":
        if getattr(m, "return_indices", False):
            raise ValueError(f"{where}: {name}(return_indices=True) returns a pair; only single-output layers convert")
        size = _tuple(m.output_size, _nd(name))
        return (AdaptiveAvgPool(size) if "Avg" in name else AdaptiveMaxPool(size)), {}
    if name == "Dropout":
        return Dropout(float(m.p)), {}
    if name in ("Dropout1d", "Dropout2d", "Dropout3d"):  # whole feature maps: one mask value per (n, c)
        return Dropout(float(m.p), broadcast_axes=tuple(range(1, _nd(name) + 1))), {}
    if name == "Flatten":
        if (m.start_dim, m.end_dim) != (1, -1):
            raise ValueError(
                f"{where}: Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}) is not supported "
                f"(only start_dim=1, end_dim=-1)"
            )
        return TorchFlatten(), {}
    if name in _ACTIVATION_CLASSES:
        return Activation(_ACTIVATION_CLASSES[name]), {}
    if name == "LeakyReLU":
        return Activation("leaky_relu", (float(m.negative_slope),)), {}
    if name == "ELU":
        return Activation("elu", (float(m.alpha),)), {}
    if name == "Hardtanh":
        return Activation("hardtanh", (float(m.min_val), float(m.max_val))), {}
    if name == "GELU":
        return Activation("gelu_tanh" if m.approximate == "tanh" else "gelu"), {}
    raise ValueError(
        f"{where}: {name} is not supported by from_torch_module (supported: Conv/ConvTranspose 1-3d, BatchNorm "
        f"1-3d, Linear, Max/Avg/AdaptiveMax/AdaptiveAvg pools 1-3d, Dropout, Flatten, ReLU, ReLU6, LeakyReLU, "
        f"ELU, GELU, SiLU, Sigmoid, Tanh, Hardtanh, Identity, nested Sequential)"
    )


def _leaves(module: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(name, layer)`` of every leaf layer in registration order, descending into containers."""
    children = list(module.named_children())
    if not children:
        return [(prefix, module)]
    out = []
    for name, child in children:
        out += _leaves(child, f"{prefix}.{name}" if prefix else name)
    return out


def from_torch_module(module: Any, *, channels_first: bool = False) -> tuple[PortedCNN, dict]:
    """Convert a ``torch.nn.Sequential``-style CNN into an equivalent jaxcnn model and its variables.

    Every leaf layer (nested ``Sequential`` and other containers are walked in
    registration order) becomes one jaxcnn layer with its weights converted
    by :mod:`jaxcnn.interop.torch.layout`; the forward pass must apply the
    layers in that order, as ``Sequential`` does. ``Flatten`` orders its
    output as PyTorch's NCHW one (``(c, *spatial)``), so the following
    ``Linear`` weights need no permutation. BatchNorm momentum becomes
    ``1 - momentum``; Dropout ``p`` is the jaxcnn ``rate``; ``Dropout2d``
    drops whole feature maps.

    Args:
      module: a ``torch.nn.Module`` (typically ``nn.Sequential``).
      channels_first: the returned model takes PyTorch's ``(N, C, *spatial)``
        (and returns spatial outputs that way); default ``False``: channels-last
        ``(N, *spatial, C)``, jaxcnn's convention.

    Returns:
      ``(model, variables)``: call ``model.apply(variables, x)`` (``train=True``
      with ``mutable=["batch_stats"]`` and a ``"dropout"`` rng to train).

    Raises:
      ValueError: an unsupported layer, named with its position and PyTorch name.

    Example:
      >>> import torch  # doctest: +SKIP
      >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())  # doctest: +SKIP
      >>> model, variables = from_torch_module(net)  # doctest: +SKIP
      >>> model.apply(variables, jnp.ones((2, 8, 8, 1))).shape  # doctest: +SKIP
      (2, 6, 6, 4)
    """
    torch = require_torch("from_torch_module")
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    layers: list[nn.Module] = []
    names: list[str] = []
    variables: dict[str, Any] = {}
    for i, (name, leaf) in enumerate(_leaves(module)):
        layer, v = convert_layer(leaf, f"layer {i} ({name or type(leaf).__name__!s}: {type(leaf).__name__})")
        for collection, tree in v.items():
            variables.setdefault(collection, {})[f"layers_{len(layers)}"] = {k: jnp.asarray(a) for k, a in tree.items()}
        layers.append(layer)
        names.append(name)
    return PortedCNN(tuple(layers), tuple(names), channels_first), variables
