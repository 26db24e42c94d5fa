"""Batch, group and layer normalization, channels-last; statistics always in float32."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax

from jaxcnn.functional import _args


def moments(x: Any, axes: tuple[int, ...], axis_name: Any = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Mean and biased variance of ``x`` over ``axes``, in float32, keeping dims.

    ``var = mean((x - mean)^2)`` (two passes, stable for large means). With
    ``axis_name`` the moments are of the union of the shards along that
    pmap/shard_map axis (equal shard sizes): the mean is averaged across
    devices first, then the squared deviations from it.
    """
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=axes, keepdims=True)
    if axis_name is not None:
        mean = lax.pmean(mean, axis_name)
    var = jnp.mean(jnp.square(x32 - mean), axis=axes, keepdims=True)
    if axis_name is not None:
        var = lax.pmean(var, axis_name)
    return mean, var


def masked_moments(x: Any, mask: Any, axis_name: Any = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    r"""Per-channel mean and biased variance of the positions of ``x`` where ``mask`` is true.

    .. math::

        n = \sum_i m_i, \qquad \mu = \frac{1}{n}\sum_i m_i x_i, \qquad
        \sigma^2 = \frac{1}{n}\sum_i m_i (x_i - \mu)^2

    over the batch and all spatial axes (``i`` runs over them), in float32 and
    in two passes like :func:`moments`. With ``axis_name`` the sums and the
    count ``n`` are ``psum``-ed over that pmap/shard_map axis *before* dividing,
    so the result is exact whatever the number of masked rows on each device
    (averaging per-device means, as :func:`moments` does, would weight them
    wrongly). ``n = 0`` gives mean 0 and variance 0 instead of NaN.

    Args:
      x: ``(N, *spatial, C)``.
      mask: ``(N, *spatial, 1)`` float32, 1 where a position counts, else 0.
      axis_name: optional pmap/shard_map axis.

    Returns:
      ``(mean, var)``, float32, shaped ``(1, ..., 1, C)``.
    """
    axes = tuple(range(x.ndim - 1))
    x32 = x.astype(jnp.float32)

    def total(v):
        s = jnp.sum(v, axis=axes, keepdims=True)
        return s if axis_name is None else lax.psum(s, axis_name)

    count = jnp.maximum(total(mask), 1.0)
    mean = total(mask * x32) / count
    var = total(mask * jnp.square(x32 - mean)) / count
    return mean, var


def _mask_weights(mask: Any, x: Any) -> jnp.ndarray:
    """A ``(N,)`` or ``x.shape[:-1]`` mask as float32 0/1 weights ``(N, *spatial, 1)``."""
    mask = _args.check_array(mask, "mask")
    n_lead = x.ndim - 1
    shape = tuple(mask.shape)
    if shape == tuple(x.shape[:1]):
        mask = jnp.reshape(mask, shape + (1,) * n_lead)
    elif shape == tuple(x.shape[:-1]):
        mask = jnp.reshape(mask, shape + (1,))
    else:
        raise ValueError(
            f"mask must have shape (N,) = {tuple(x.shape[:1])} (one flag per example) or x.shape[:-1] = "
            f"{tuple(x.shape[:-1])} (one per position), got shape {shape}"
        )
    return jnp.broadcast_to((mask != 0).astype(jnp.float32), tuple(x.shape[:-1]) + (1,))


def standardize(x, mean, var, epsilon: float) -> jnp.ndarray:
    """``(x - mean) / sqrt(var + epsilon)`` in float32; ``mean``/``var`` broadcast against ``x``."""
    return (x.astype(jnp.float32) - mean) * lax.rsqrt(var + epsilon)


def affine(y, scale, bias, dtype) -> jnp.ndarray:
    """``y * scale + bias`` in float32 (either may be ``None``), cast to ``dtype``.

    ``scale``/``bias`` must already broadcast against ``y`` (see
    :func:`jaxcnn.functional._args.channel_vector`).
    """
    if scale is not None:
        y = y * scale.astype(jnp.float32)
    if bias is not None:
        y = y + bias.astype(jnp.float32)
    return y.astype(dtype)


def batch_norm(
    x: Any,
    mean: Any,
    var: Any,
    scale: Any = None,
    bias: Any = None,
    *,
    training: bool,
    momentum: float = 0.9,
    epsilon: float = 1e-5,
    axis_name: Any = None,
    mask: Any = None,
) -> tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray]]:
    r"""Batch normalization with explicit running statistics.

    Training (``training=True``): with the per-channel batch statistics over the
    batch and all spatial axes,

    .. math::

        \mu_B = \frac{1}{m}\sum_i x_i, \qquad
        \sigma_B^2 = \frac{1}{m}\sum_i (x_i - \mu_B)^2 \quad\text{(biased)}

        y = \gamma \frac{x - \mu_B}{\sqrt{\sigma_B^2 + \epsilon}} + \beta, \qquad
        \text{new} = \text{momentum}\cdot\text{old} + (1 - \text{momentum})\cdot\text{batch}

    for both the mean and the (biased) variance. Inference
    (``training=False``) normalizes with ``(mean, var)`` and returns them
    unchanged. Statistics are computed in float32 whatever ``x``'s dtype.

    PyTorch's ``momentum=0.1`` is this ``momentum=0.9``; PyTorch updates its
    running variance with the unbiased ``m / (m - 1)`` estimate, this function
    with the biased one (as Flax).

    Args:
      x: ``(N, *spatial, C)`` or ``(N, C)``.
      mean, var: running statistics, ``(C,)``.
      scale, bias: optional ``gamma``, ``beta``, ``(C,)``.
      training: keyword-only, required: use batch statistics (and update the
        running ones) or the running statistics.
      momentum: in ``[0, 1]``; the weight of the old running statistics.
      epsilon: added to the variance.
      axis_name: a pmap/shard_map axis name to average the batch statistics
        over (synchronized batch norm): equal to batch norm on the global batch.
      mask: optional, ``(N,)`` (one flag per example) or ``x.shape[:-1]`` (one
        per position), boolean or 0/1 (nonzero counts). While training, the
        batch statistics are those of the positions where ``mask`` is true only
        (:func:`masked_moments`): a batch padded with rows masked out
        normalizes, and updates the running statistics, exactly as the real
        rows alone would. With ``axis_name`` the masked sums and counts are
        summed across devices, so each device may hold any number of masked
        rows. Every row is still normalized (masked rows get some output,
        which should carry zero loss weight). Ignored when ``training=False``.

    Returns:
      ``(y, (new_mean, new_var))``; ``y`` has ``x``'s shape and dtype, the
      statistics are float32 ``(C,)``.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> x = jnp.array([[1.], [3.]])
      >>> y, (m, v) = F.batch_norm(x, jnp.zeros(1), jnp.ones(1), training=True, epsilon=0.)
      >>> y[:, 0], m, v
      (Array([-1.,  1.], dtype=float32), Array([0.2], dtype=float32), Array([1.], dtype=float32))

    Reference: Ioffe & Szegedy, "Batch Normalization", ICML 2015, Algorithm 1.
    """
    x = _args.check_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, *spatial, C) or (N, C), got shape {tuple(x.shape)}")
    _args.check_floating(x, "x")
    c = x.shape[-1]
    mean = _args.check_vector(mean, c, "mean")
    var = _args.check_vector(var, c, "var")
    if mean is None or var is None:
        raise TypeError("mean and var must be (C,) arrays of running statistics, got None")
    scale = _args.check_vector(scale, c, "scale")
    bias = _args.check_vector(bias, c, "bias")
    training = _args.check_bool(training, "training")
    if mask is not None:
        _mask_weights(mask, x)  # validate the shape even when it will not be used
    momentum = _args.check_unit_interval(momentum, "momentum")
    epsilon = _args.check_nonnegative(epsilon, "epsilon")
    scale_b = None if scale is None else _args.channel_vector(scale, x.ndim)
    bias_b = None if bias is None else _args.channel_vector(bias, x.ndim)
    if not training:
        m = _args.channel_vector(mean.astype(jnp.float32), x.ndim)
        v = _args.channel_vector(var.astype(jnp.float32), x.ndim)
        return affine(standardize(x, m, v, epsilon), scale_b, bias_b, x.dtype), (mean, var)
    if mask is None:
        batch_mean, batch_var = moments(x, tuple(range(x.ndim - 1)), axis_name)
    else:
        batch_mean, batch_var = masked_moments(x, _mask_weights(mask, x), axis_name)
    y = affine(standardize(x, batch_mean, batch_var, epsilon), scale_b, bias_b, x.dtype)
    new_mean = momentum * mean.astype(jnp.float32) + (1 - momentum) * batch_mean.reshape(c)
    new_var = momentum * var.astype(jnp.float32) + (1 - momentum) * batch_var.reshape(c)
    return y, (new_mean, new_var)


def group_norm(x: Any, num_groups: int, scale: Any = None, bias: Any = None, *, epsilon: float = 1e-5) -> jnp.ndarray:
    r"""Group normalization: per sample, per group of ``C / G`` channels.

    Channels are split into ``num_groups`` contiguous groups; each group of each
    sample is normalized by its mean and biased variance over its channels and
    all spatial positions, then ``scale``/``bias`` apply per channel. ``G = 1``
    is layer norm over ``(*spatial, C)`` with per-channel affine; ``G = C`` is
    instance norm. As PyTorch's ``GroupNorm``.

    Args:
      x: ``(N, *spatial, C)`` or ``(N, C)``.
      num_groups: ``G``, must divide ``C``.
      scale, bias: optional ``(C,)``.
      epsilon: added to the variance.

    Returns:
      ``x``'s shape and dtype.

    Reference: Wu & He, "Group Normalization", ECCV 2018.
    """
    x = _args.check_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, *spatial, C) or (N, C), got shape {tuple(x.shape)}")
    _args.check_floating(x, "x")
    c = x.shape[-1]
    num_groups = _args.as_int(num_groups, "num_groups")
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"num_groups must be a positive divisor of the channels C={c}, got {num_groups}")
    scale = _args.check_vector(scale, c, "scale")
    bias = _args.check_vector(bias, c, "bias")
    epsilon = _args.check_nonnegative(epsilon, "epsilon")
    grouped = x.reshape(*x.shape[:-1], num_groups, c // num_groups)
    axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
    mean, var = moments(grouped, axes)
    y = standardize(grouped, mean, var, epsilon).reshape(x.shape)
    scale_b = None if scale is None else _args.channel_vector(scale, x.ndim)
    bias_b = None if bias is None else _args.channel_vector(bias, x.ndim)
    return affine(y, scale_b, bias_b, x.dtype)


def layer_norm(x: Any, scale: Any = None, bias: Any = None, *, epsilon: float = 1e-5) -> jnp.ndarray:
    r"""Layer normalization over all non-batch axes: ``y = (x - mu_n) / sqrt(var_n + eps) * scale + bias``.

    ``mu_n``, ``var_n`` (biased) are per sample over ``x.shape[1:]``, as
    PyTorch's ``LayerNorm(x.shape[1:])``.

    Args:
      x: ``(N, ...)``.
      scale, bias: optional, of shape ``x.shape[1:]`` (PyTorch's elementwise
        affine) or any trailing part of it, e.g. ``(C,)`` for per-channel.
      epsilon: added to the variance.

    Returns:
      ``x``'s shape and dtype.

    Reference: Ba, Kiros & Hinton, "Layer Normalization", 2016.
    """
    x = _args.check_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and at least one more, got shape {tuple(x.shape)}")
    _args.check_floating(x, "x")
    epsilon = _args.check_nonnegative(epsilon, "epsilon")
    params = []
    for name, v in (("scale", scale), ("bias", bias)):
        if v is not None:
            v = _args.check_array(v, name)
            feat = tuple(x.shape[1:])
            if v.ndim > len(feat) or tuple(v.shape) != feat[len(feat) - v.ndim :]:
                raise ValueError(
                    f"{name} must have shape x.shape[1:] = {feat} or a trailing part of it, got "
                    f"shape {tuple(v.shape)}"
                )
            v = jnp.reshape(v, (1,) * (x.ndim - v.ndim) + tuple(v.shape))
        params.append(v)
    mean, var = moments(x, tuple(range(1, x.ndim)))
    return affine(standardize(x, mean, var, epsilon), *params, x.dtype)
