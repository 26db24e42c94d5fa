"""WaveNet (van den Oord et al. 2016): stacks of dilated causal 1D convolutions with gated units."""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import _validate
from jaxcnn.models._blocks import positive_int, with_channel_axis
from jaxcnn.nn import Conv


class WaveNetLayer(nn.Module):
    """One gated residual layer of WaveNet.

    .. math::

        z = \\tanh(W_f * x) \\odot \\sigma(W_g * x), \\qquad
        \\text{residual} = x + W_r z, \\qquad \\text{skip} = W_s z

    ``filter_conv`` and ``gate_conv`` are dilated causal convs (kernel
    ``kernel_size``, dilation ``dilation``, padding "CAUSAL"); ``residual_conv``
    and ``skip_conv`` are 1x1.

    Returns (``__call__(x)``): ``(residual (N, T, R), skip (N, T, S))``.
    """

    residual_channels: int
    skip_channels: int
    kernel_size: int
    dilation: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Any) -> tuple[jnp.ndarray, jnp.ndarray]:
        causal = dict(padding="CAUSAL", dilation=self.dilation, dtype=self.dtype)
        f = Conv(self.residual_channels, self.kernel_size, name="filter_conv", **causal)(x)
        g = Conv(self.residual_channels, self.kernel_size, name="gate_conv", **causal)(x)
        z = jnp.tanh(f) * jax.nn.sigmoid(g)
        residual = x + Conv(self.residual_channels, 1, dtype=self.dtype, name="residual_conv")(z)
        skip = Conv(self.skip_channels, 1, dtype=self.dtype, name="skip_conv")(z)
        return residual, skip


class WaveNet(nn.Module):
    """WaveNet: an output for every time step from a causal, exponentially dilated conv stack.

    ``input_conv`` (1x1 to ``residual_channels``), then ``num_stacks`` stacks of
    ``num_layers_per_stack`` :class:`WaveNetLayer` s named
    ``stack{s}_layer{l}`` with dilations ``1, 2, 4, ..., 2**(L-1)`` (repeated
    per stack); the skip outputs are summed, then ``relu -> head_conv (1x1,
    skip_channels) -> relu -> head (1x1)``. Every conv is causal, so output
    ``t`` depends only on inputs ``<= t``, over a receptive field of

    .. math::

        R = (\\text{kernel\\_size} - 1) \\sum_{\\text{layers}} d + 1
          = (k - 1)\\, S\\, (2^L - 1) + 1

    time steps (:attr:`receptive_field`; 1024 for k=2, L=10, S=1). The input
    projection is 1x1 (the paper's is a causal conv of size 2, which would add
    one step).

    ``mode="regression"``: ``out_features`` real outputs per step, e.g. the
    prediction of ``x[t + 1]`` from ``x[:t + 1]`` (train on targets shifted by
    one). ``mode="classification"``: ``num_classes`` logits per step, e.g. over
    mu-law quantized amplitude levels (one-hot the input for the paper's
    setting).

    Attributes:
      num_layers_per_stack: ``L`` (10).
      num_stacks: ``S`` (1).
      kernel_size: ``k`` (2).
      residual_channels: channels of the residual stream (32).
      skip_channels: channels of the skip sum and of head_conv (64).
      mode: "regression" or "classification".
      out_features: outputs per step for regression (1).
      num_classes: logits per step for classification (256).
      dtype: compute dtype.
      axis_name: accepted so every zoo model takes the same data-parallel
        option; unused (no BatchNorm or Dropout here).

    Returns (``__call__(x, *, train=False)``): ``(N, T) or (N, T, C)`` ->
    ``(N, T, out_features)`` or ``(N, T, num_classes)``. ``train`` changes nothing
    (no dropout or BatchNorm); it is accepted for a uniform model interface.

    Reference: van den Oord et al., "WaveNet: A Generative Model for Raw
    Audio", arXiv:1609.03499, 2016.
    """

    num_layers_per_stack: int = 10
    num_stacks: int = 1
    kernel_size: int = 2
    residual_channels: int = 32
    skip_channels: int = 64
    mode: str = "regression"
    out_features: int = 1
    num_classes: int = 256
    dtype: Any = None
    axis_name: Any = None
    head_name: ClassVar[str] = "head"

    @property
    def dilations(self) -> tuple[int, ...]:
        """Dilation of every layer, in order: ``(1, 2, ..., 2**(L-1))`` repeated ``num_stacks`` times."""
        layers = positive_int(self.num_layers_per_stack, "num_layers_per_stack")
        stacks = positive_int(self.num_stacks, "num_stacks")
        return tuple(2**i for i in range(layers)) * stacks

    @property
    def receptive_field(self) -> int:
        """``(kernel_size - 1) * sum(dilations) + 1`` time steps."""
        return (positive_int(self.kernel_size, "kernel_size") - 1) * sum(self.dilations) + 1

    @nn.compact
    def __call__(self, x: Any, *, train: bool = False) -> jnp.ndarray:
        mode = _validate.check_choice(self.mode, "mode", ("regression", "classification"))
        x = with_channel_axis(x, 1)
        x = Conv(self.residual_channels, 1, dtype=self.dtype, name="input_conv")(x)
        skips = []
        layers = positive_int(self.num_layers_per_stack, "num_layers_per_stack")
        for i, d in enumerate(self.dilations):
            x, skip = WaveNetLayer(
                self.residual_channels,
                self.skip_channels,
                self.kernel_size,
                d,
                dtype=self.dtype,
                name=f"stack{i // layers + 1}_layer{i % layers + 1}",
            )(x)
            skips.append(skip)
        y = jax.nn.relu(sum(skips[1:], skips[0]))
        y = jax.nn.relu(Conv(self.skip_channels, 1, dtype=self.dtype, name="head_conv")(y))
        out = self.out_features if mode == "regression" else self.num_classes
        return Conv(out, 1, dtype=self.dtype, name="head")(y)
