"""NNX convolution layers: :class:`Conv` and :class:`ConvTranspose`, thin wrappers of F.conv / F.conv_transpose."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx
from flax.linen.dtypes import promote_dtype

from jaxcnn.functional.conv import conv, conv_transpose
from jaxcnn.nn._options import CONV, CONV_TRANSPOSE, options
from jaxcnn.nn.conv import check_channels
from jaxcnn.nnx import _args

Initializer = Any


def _init_conv(
    layer: Any,
    in_features: Any,
    out_features: Any,
    kernel_size: Any,
    groups: Any,
    spatial_dims: Any,
    kernel_init: Initializer,
    bias_init: Initializer,
    rngs: Any,
) -> None:
    """Check and store the arguments :class:`Conv` and :class:`ConvTranspose` share, then create the parameters.

    ``layer.use_bias`` and ``layer.param_dtype`` are set already. The kernel is
    ``(*window, in_features // groups, out_features)``, or for a
    :class:`ConvTranspose` ``(*window, out_features // groups, in_features)``
    (the kernel of the forward conv it is the adjoint of); the bias ``(out_features,)``.
    """
    transpose = isinstance(layer, ConvTranspose)
    in_features = _args.features(in_features, "in_features")
    out_features = _args.features(out_features, "out_features")
    _, groups = check_channels(out_features, groups, in_features, "ConvTranspose" if transpose else "Conv")
    window = _args.kernel_window(kernel_size, spatial_dims)
    rngs = _args.check_rngs(rngs)
    layer.in_features, layer.out_features, layer.kernel_size, layer.groups = in_features, out_features, window, groups
    c_in, c_out = (out_features, in_features) if transpose else (in_features, out_features)
    _args.conv_params(layer, (*window, c_in // groups, c_out), out_features, kernel_init, bias_init, rngs)


def _promoted(layer: Any, x: Any) -> list[Any]:
    """``x``, the kernel and the bias (or ``None``), promoted to one dtype (``layer.dtype`` if set)."""
    bias = None if layer.bias is None else layer.bias[...]
    return promote_dtype(x, layer.kernel[...], bias, dtype=layer.dtype)


class Conv(nnx.Module):
    r"""Convolution layer (1D, 2D or 3D, channels-last); wraps :func:`jaxcnn.functional.conv`.

    The NNX twin of :class:`jaxcnn.nn.Conv`: ``y = conv(x, W) + b`` with the same
    options, built eagerly from ``in_features`` (NNX convention) instead of
    reading the channels from the first input.

    Parameters (:class:`flax.nnx.Param`): ``kernel`` ``(*window, in_features //
    groups, out_features)`` and ``bias`` ``(out_features,)``, the names and
    shapes of the Linen layer's, so :func:`jaxcnn.nnx.from_linen` copies them.

    Args:
      in_features: input channels ``C_in``.
      out_features: output channels ``C_out`` (Linen's ``features``).
      kernel_size: one size per spatial dim, or an int with ``spatial_dims``.
      strides, padding, dilation, groups, padding_mode, flip, precision, algorithm:
        as :func:`jaxcnn.functional.conv` (padding default "SAME").
      use_bias, kernel_init, bias_init, dtype, param_dtype: as :class:`jaxcnn.nn.Conv`.
      spatial_dims: 1, 2 or 3, needed only for an int ``kernel_size``.
      rngs: :class:`flax.nnx.Rngs`; the kernel and bias come from its "params" stream.

    ``__call__(x)``: ``x`` ``(N, *spatial, in_features)`` ->
    ``(N, *out_spatial, out_features)`` (SAME: ``ceil(n / s)``).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxcnn.nnx as jnnx
      >>> layer = jnnx.Conv(1, 4, (5, 5), rngs=nnx.Rngs(0))
      >>> layer.kernel.shape, layer(jnp.ones((1, 28, 28, 1))).shape
      ((5, 5, 1, 4), (1, 28, 28, 4))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Any,
        *,
        strides: Any = 1,
        padding: Any = "SAME",
        dilation: Any = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        flip: bool = False,
        use_bias: bool = True,
        kernel_init: Initializer = _args.LECUN_NORMAL,
        bias_init: Initializer = _args.ZEROS,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        algorithm: str | None = None,
        spatial_dims: int | None = None,
        rngs: nnx.Rngs,
    ):
        self.strides, self.padding, self.dilation = strides, padding, dilation
        self.padding_mode, self.flip, self.precision, self.algorithm = padding_mode, flip, precision, algorithm
        self.use_bias, self.dtype, self.param_dtype = use_bias, dtype, param_dtype
        _init_conv(self, in_features, out_features, kernel_size, groups, spatial_dims, kernel_init, bias_init, rngs)

    def __call__(self, x: Any) -> jnp.ndarray:
        return conv(*_promoted(self, x), **options(self, ("groups", *CONV)))


class ConvTranspose(nnx.Module):
    r"""Transposed convolution, the adjoint of :class:`Conv`; wraps :func:`jaxcnn.functional.conv_transpose`.

    The NNX twin of :class:`jaxcnn.nn.ConvTranspose` (PyTorch's output size,
    ``output_padding``, groups, dilation).

    Parameters: ``kernel`` ``(*window, out_features // groups, in_features)``
    -- laid out as the kernel of the forward conv it is the adjoint of, as the
    Linen layer's -- and ``bias`` ``(out_features,)``.

    Args:
      in_features: channels of the input ``y`` (the forward conv's outputs).
      out_features: output channels (Linen's ``features``).
      kernel_size, spatial_dims, rngs: as :class:`Conv`.
      strides, padding, output_padding, dilation, groups: as
        :func:`jaxcnn.functional.conv_transpose` (padding default 0).
      use_bias, kernel_init, bias_init, dtype, param_dtype: as :class:`jaxcnn.nn.ConvTranspose`.

    ``__call__(y)``: ``(N, *spatial, in_features)`` -> ``(N, *out_spatial,
    out_features)``, per dim ``(n - 1) * s - lo - hi + d * (k - 1) + output_padding + 1``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxcnn.nnx as jnnx
      >>> up = jnnx.ConvTranspose(4, 2, (3, 3), strides=2, padding=1, output_padding=1, rngs=nnx.Rngs(0))
      >>> up(jnp.ones((1, 5, 5, 4))).shape
      (1, 10, 10, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Any,
        *,
        strides: Any = 1,
        padding: Any = 0,
        output_padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        use_bias: bool = True,
        kernel_init: Initializer = _args.LECUN_NORMAL,
        bias_init: Initializer = _args.ZEROS,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        spatial_dims: int | None = None,
        rngs: nnx.Rngs,
    ):
        self.strides, self.padding, self.output_padding, self.dilation = strides, padding, output_padding, dilation
        self.use_bias, self.dtype, self.param_dtype = use_bias, dtype, param_dtype
        _init_conv(self, in_features, out_features, kernel_size, groups, spatial_dims, kernel_init, bias_init, rngs)

    def __call__(self, y: Any) -> jnp.ndarray:
        return conv_transpose(*_promoted(self, y), **options(self, ("groups", *CONV_TRANSPOSE)))
