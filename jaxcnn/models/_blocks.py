"""Small pieces shared by the model zoo: a conv(-BN)-activation block and option checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn import _validate
from jaxcnn.nn import BatchNorm, Conv


def conv_block(
    x: Any,
    features: int,
    kernel_size: Any,
    *,
    name: str,
    bn_name: str,
    strides: Any = 1,
    padding: Any = "SAME",
    dilation: Any = 1,
    groups: int = 1,
    batch_norm: bool = False,
    train: bool = False,
    use_bias: bool = True,
    kernel_init: Any = Conv.kernel_init,
    activation: Callable[[Any], Any] | None = jax.nn.relu,
    dtype: Any = None,
    axis_name: Any = None,
) -> jnp.ndarray:
    """``activation(BN(conv(x)))``: a :class:`~jaxcnn.nn.Conv` named ``name`` (``strides``,
    ``padding``, ``dilation``, ``groups``, ``use_bias`` and ``kernel_init`` as there), then (if
    ``batch_norm``) a :class:`~jaxcnn.nn.BatchNorm` named ``bn_name`` in training
    mode when ``train`` (statistics synchronized over ``axis_name``), then the
    activation (``None``: none).

    Call it inside a ``@nn.compact`` method: the layers become submodules of that
    module. Returns ``(N, *out_spatial, features)``.
    """
    x = Conv(
        features,
        kernel_size,
        strides=strides,
        padding=padding,
        dilation=dilation,
        groups=groups,
        use_bias=use_bias,
        kernel_init=kernel_init,
        dtype=dtype,
        name=name,
    )(x)
    if batch_norm:
        x = BatchNorm(use_running_average=not train, axis_name=axis_name, dtype=dtype, name=bn_name)(x)
    return x if activation is None else activation(x)


def model_conv_block(
    model: Any, x: Any, i: int, features: int, kernel_size: Any, *, train: bool, strides: Any = 1
) -> Any:
    """The ``i``-th :func:`conv_block` of ``model``: ``conv{i}`` (+ ``bn{i}``), ReLU.

    ``model`` has the zoo's ``batch_norm``, ``dtype`` and ``axis_name``
    attributes; with ``batch_norm`` the conv has no bias (the BatchNorm's
    ``beta`` takes its place). Returns ``(N, *out_spatial, features)``.
    """
    return conv_block(
        x,
        features,
        kernel_size,
        strides=strides,
        name=f"conv{i}",
        bn_name=f"bn{i}",
        batch_norm=model.batch_norm,
        use_bias=not model.batch_norm,
        train=train,
        dtype=model.dtype,
        axis_name=model.axis_name,
    )


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1; ``TypeError``/``ValueError`` naming ``name`` otherwise."""
    return _validate.as_int(value, name, minimum=1)


def positive_ints(values: Any, name: str) -> tuple[int, ...]:
    """A non-empty sequence of ints >= 1 (layer widths, filter counts)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise TypeError(f"{name} must be a non-empty sequence of ints >= 1, got {_validate.fmt(values)}")
    return tuple(positive_int(v, f"{name}[{i}]") for i, v in enumerate(values))


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1 (a width multiplier)."""
    return max(1, int(round(channels * width)))


def with_channel_axis(x: Any, spatial_dims: int, name: str = "x") -> jnp.ndarray:
    """Add a trailing channel axis to ``(N, *spatial)`` input; ``(N, *spatial, C)`` passes through.

    For 1D models fed ``(N, L)`` sequences (MNIST-1D, a raw signal).
    """
    x = _validate.check_array(x, name)
    if x.ndim == spatial_dims + 1:
        return jnp.expand_dims(x, -1)
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"{name} must have shape (N, *spatial, C) with {spatial_dims} spatial dim(s) (rank "
            f"{spatial_dims + 2}), or (N, *spatial) without the channel axis, got shape {tuple(x.shape)}"
        )
    return x
