"""The jaxcnn model :func:`~jaxcnn.interop.torch.from_torch_module` builds: PyTorch's layers, in order, channels-last."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import _validate
from jaxcnn.nn import BatchNorm, Dropout

#: Activation name -> function of ``(x, param)`` (``param``: LeakyReLU's slope, ELU's alpha, Hardtanh's bounds).
ACTIVATIONS = {
    "relu": lambda x, p: jax.nn.relu(x),
    "relu6": lambda x, p: jax.nn.relu6(x),
    "leaky_relu": lambda x, p: jax.nn.leaky_relu(x, p[0]),
    "elu": lambda x, p: jax.nn.elu(x, p[0]),
    "gelu": lambda x, p: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x, p: jax.nn.gelu(x, approximate=True),
    "silu": lambda x, p: jax.nn.silu(x),
    "sigmoid": lambda x, p: jax.nn.sigmoid(x),
    "tanh": lambda x, p: jnp.tanh(x),
    "hardtanh": lambda x, p: jnp.clip(x, p[0], p[1]),
    "identity": lambda x, p: x,
}


class Activation(nn.Module):
    """An elementwise activation by name (see ``ACTIVATIONS``), so a ported model is a list of modules.

    Attributes:
      kind: e.g. "relu", "leaky_relu".
      param: its numbers (LeakyReLU ``(slope,)``, ELU ``(alpha,)``, Hardtanh ``(min, max)``).

    Returns (``__call__``): ``x``'s shape.
    """

    kind: str
    param: tuple[float, ...] = ()  # type: ignore[assignment]  # public field name, shadows Module.param (unused here)

    def __call__(self, x: Any) -> jnp.ndarray:
        kind = _validate.check_choice(self.kind, "kind", tuple(ACTIVATIONS))
        return ACTIVATIONS[kind](x, self.param)


class TorchFlatten(nn.Module):
    """Flatten as PyTorch does on NCHW: ``(N, *spatial, C) -> (N, C * prod(spatial))`` ordered ``(c, *spatial)``.

    Moving the channel axis first makes the next Linear layer's weight usable
    as it is (transposed), with no knowledge of the input's spatial size.

    Returns (``__call__``): ``(N, C * prod(spatial))``; ``(N, F)`` stays.
    """

    def __call__(self, x: Any) -> jnp.ndarray:
        x = _validate.check_array(x, "x")
        if x.ndim < 2:
            raise ValueError(f"x must have a batch axis and at least one more, got shape {tuple(x.shape)}")
        if x.ndim > 2:
            x = jnp.moveaxis(x, -1, 1)
        return jnp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))


class PortedCNN(nn.Module):
    """A PyTorch ``Sequential``-style CNN as a jaxcnn model: ``layers`` applied in order.

    BatchNorm layers train with ``train=True`` (batch statistics, running ones
    updated: ``mutable=["batch_stats"]``), Dropout draws from the ``"dropout"``
    stream when training.

    Attributes:
      layers: the jaxcnn modules, one per PyTorch leaf layer (variables under
        ``layers_{i}``).
      torch_names: each layer's PyTorch module name (``"features.3"``), for
        :func:`~jaxcnn.interop.torch.compare`.
      channels_first: ``False`` (default): the input is channels-last
        ``(N, *spatial, C)`` and so is the output. ``True``: the input is
        PyTorch's ``(N, C, *spatial)`` and a spatial output is returned as
        ``(N, C, *spatial)``, so the model is a drop-in for the PyTorch one.

    Returns (``__call__(x, *, train=False)``): the last layer's output.
    """

    layers: Sequence[nn.Module]
    torch_names: Sequence[str] = ()
    channels_first: bool = False

    def __call__(self, x: Any, *, train: bool = False) -> jnp.ndarray:
        x = _validate.check_array(x, "x")
        train = _validate.check_bool(train, "train")
        if self.channels_first and x.ndim > 2:
            x = jnp.moveaxis(x, 1, -1)
        for layer in self.layers:
            if isinstance(layer, BatchNorm):
                x = layer(x, use_running_average=not train)
            elif isinstance(layer, Dropout):
                x = layer(x, deterministic=not train)
            else:
                x = layer(x)
        if self.channels_first and x.ndim > 2:
            x = jnp.moveaxis(x, -1, 1)
        return x
