"""Convolution modules: :class:`Conv` and :class:`ConvTranspose`, thin wrappers of F.conv / F.conv_transpose."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.linen import initializers
from flax.linen.dtypes import promote_dtype

from jaxcnn import _validate
from jaxcnn.functional.conv import conv, conv_transpose
from jaxcnn.nn._checks import checked_param
from jaxcnn.nn._options import CONV, CONV_TRANSPOSE, options

Initializer = Any
KernelSize = int | Sequence[int]


def window_shape(kernel_size: KernelSize, x: Any, name: str) -> tuple[int, ...]:
    """The kernel window as a tuple, its length taken from ``kernel_size`` or, for an int, from ``x``.

    ``x`` must be channels-last ``(N, *spatial, C)`` with 1-3 spatial dims and as
    many spatial dims as the window.
    """
    x, nd = _validate.spatial_input(x, "x")
    if isinstance(kernel_size, Sequence) and not isinstance(kernel_size, (str, bytes)):
        window = _validate.tuple_arg(kernel_size, len(kernel_size), "kernel_size")
        if len(window) != nd:
            raise ValueError(
                f"{name}: kernel_size {kernel_size!r} has {len(window)} spatial dims but x of shape "
                f"{tuple(x.shape)} has {nd}; pass an int or one size per spatial dim of x"
            )
        return window
    return _validate.tuple_arg(kernel_size, nd, "kernel_size")


def check_channels(features: Any, groups: Any, c_in: int, name: str) -> tuple[int, int]:
    """``features`` and ``groups`` as positive ints, ``groups`` dividing both ``c_in`` and ``features``."""
    features = _validate.as_int(features, f"{name}: features", minimum=1)
    groups = _validate.as_int(groups, f"{name}: groups", minimum=1)
    if c_in % groups or features % groups:
        raise ValueError(
            f"{name}: groups={groups} must divide both the input channels ({c_in}) and features ({features})"
        )
    return features, groups


def _params(module: nn.Module, kernel_shape: tuple[int, ...], features: int, x_shape: Any) -> tuple[Any, Any]:
    """The ``"kernel"`` and (with ``use_bias``) ``"bias"`` of a conv layer, checked against the input's shape."""
    kernel = checked_param(module, "kernel", module.kernel_init, kernel_shape, module.param_dtype, x_shape)
    if not module.use_bias:
        return kernel, None
    return kernel, checked_param(module, "bias", module.bias_init, (features,), module.param_dtype, x_shape)


class Conv(nn.Module):
    r"""Convolution layer (1D, 2D or 3D, channels-last); wraps :func:`jaxcnn.functional.conv`.

    .. math::

        y = \mathrm{conv}(x, W) + b, \qquad W: (*\text{window}, C_{in}/G, \text{features})

    The number of spatial dims is ``len(kernel_size)``; an int ``kernel_size``
    takes it from the input's rank (``(N, L, C)`` 1D, ``(N, H, W, C)`` 2D,
    ``(N, D, H, W, C)`` 3D). The input channels ``C_in`` are read from ``x`` at
    initialization.

    Parameters: ``"kernel"`` ``(*window, C_in // groups, features)`` (PyTorch's
    ``ConvNd.weight`` ``(features, C_in // groups, *window)`` with its axes
    permuted) and ``"bias"`` ``(features,)``.

    Attributes:
      features: output channels ``C_out``.
      kernel_size: int or one int per spatial dim.
      strides, padding, dilation, groups, padding_mode, flip, precision, algorithm: as
        :func:`jaxcnn.functional.conv` (padding default "SAME").
      use_bias: add a learned bias.
      kernel_init, bias_init: initializers (LeCun normal, zeros).
      dtype: compute dtype; ``None`` promotes the input and parameter dtypes.
      param_dtype: dtype of the parameters (float32).

    Returns (``__call__``):
      ``(N, *out_spatial, features)``, ``out_spatial`` as the padding rule says
      (SAME: ``ceil(n / s)``).

    Example:
      >>> import jax, jax.numpy as jnp, jaxcnn.nn as jnn
      >>> layer = jnn.Conv(4, 5)
      >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 28, 28, 1)))
      >>> variables["params"]["kernel"].shape, layer.apply(variables, jnp.ones((1, 28, 28, 1))).shape
      ((5, 5, 1, 4), (1, 28, 28, 4))
    """

    features: int
    kernel_size: KernelSize
    strides: Any = 1
    padding: Any = "SAME"
    dilation: Any = 1
    groups: int = 1
    padding_mode: str = "zeros"
    flip: bool = False
    use_bias: bool = True
    kernel_init: Initializer = initializers.lecun_normal()
    bias_init: Initializer = initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    algorithm: str | None = None

    @nn.compact
    def __call__(self, x: Any) -> jnp.ndarray:
        window = window_shape(self.kernel_size, x, "Conv")
        features, groups = check_channels(self.features, self.groups, x.shape[-1], "Conv")
        kernel, bias = _params(self, (*window, x.shape[-1] // groups, features), features, x.shape)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv(x, kernel, bias, groups=groups, **options(self, CONV))


class ConvTranspose(nn.Module):
    r"""Transposed convolution layer; wraps :func:`jaxcnn.functional.conv_transpose`.

    The adjoint of the forward convolution with the same kernel: ``features``
    is its output channel count (the forward conv's input channels), and the
    input ``y`` has the forward conv's output channels ``C_y``.

    Parameters: ``"kernel"`` ``(*window, features // groups, C_y)``, laid out as
    the kernel of the forward conv it is the adjoint of (PyTorch's
    ``ConvTransposeNd.weight`` ``(C_y, features // groups, *window)`` with its
    first two axes moved to the end in reverse order), and ``"bias"``
    ``(features,)``. The default LeCun-normal init takes its fan-in from
    ``prod(window) * features // groups``, the fan PyTorch uses for this layer.

    Attributes:
      features: output channels.
      kernel_size: int or one int per spatial dim.
      strides, padding, output_padding, dilation, groups: as
        :func:`jaxcnn.functional.conv_transpose` (padding default 0).
      use_bias, kernel_init, bias_init, dtype, param_dtype: as :class:`Conv`.

    Returns (``__call__``):
      ``(N, *out_spatial, features)`` with, per spatial dim,
      ``(n - 1) * s - lo - hi + d * (k - 1) + output_padding + 1``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcnn.nn as jnn
      >>> layer = jnn.ConvTranspose(2, 3, strides=2, padding=1, output_padding=1)
      >>> variables = layer.init(jax.random.key(0), jnp.ones((1, 5, 5, 4)))
      >>> layer.apply(variables, jnp.ones((1, 5, 5, 4))).shape
      (1, 10, 10, 2)
    """

    features: int
    kernel_size: KernelSize
    strides: Any = 1
    padding: Any = 0
    output_padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    use_bias: bool = True
    kernel_init: Initializer = initializers.lecun_normal()
    bias_init: Initializer = initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, y: Any) -> jnp.ndarray:
        window = window_shape(self.kernel_size, y, "ConvTranspose")
        features, groups = check_channels(self.features, self.groups, y.shape[-1], "ConvTranspose")
        kernel, bias = _params(self, (*window, features // groups, y.shape[-1]), features, y.shape)
        y, kernel, bias = promote_dtype(y, kernel, bias, dtype=self.dtype)
        return conv_transpose(y, kernel, bias, groups=groups, **options(self, CONV_TRANSPOSE))
