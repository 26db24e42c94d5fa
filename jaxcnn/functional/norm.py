"""Batch, group and layer normalization, channels-last; statistics always in float32."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn import _validate, _values


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


def _global_sum(v: Any, axes: tuple[int, ...], axis_name: Any) -> jnp.ndarray:
    """``sum(v)`` over ``axes`` (kept), and over the pmap/shard_map axis ``axis_name`` if given."""
    s = jnp.sum(v, axis=axes, keepdims=True)
    return s if axis_name is None else lax.psum(s, axis_name)


def _count(x: Any, weights: Any, axes: tuple[int, ...], axis_name: Any) -> Any:
    """How many positions the statistics average over: ``sum(w)`` (at least 1), or the static count."""
    if weights is None:
        n = float(math.prod(x.shape[a] for a in axes))
        return n if axis_name is None else lax.psum(n, axis_name)
    return jnp.maximum(_global_sum(weights, axes, axis_name), 1.0)


def _weighted(v: Any, weights: Any) -> Any:
    return v if weights is None else weights * v


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _batch_norm_train(x, scale, bias, weights, epsilon, axis_name):
    """Training-mode batch norm: ``(y, batch_mean, batch_var)``, with a hand-written VJP.

    Statistics per channel over every axis but the last, in float32, of the
    positions where ``weights`` (``(N, *spatial, 1)`` 0/1 float32, or ``None``
    for all) is 1, summed over ``axis_name`` before dividing (exact for any
    split of the batch over devices):

        n = sum w,  mu = sum w x / n,  var = sum w (x - mu)^2 / n,
        y = (x - mu) / sqrt(var + eps) * scale + bias.

    The backward pass is the closed form (two fused reductions and one
    elementwise pass, no saved intermediates but ``x``) rather than autodiff
    through the two-pass statistics, which is ~4x slower on CPU and keeps a
    float32 copy of ``x`` alive. With ``xh = (x - mu) * rstd`` and
    ``g = dy * scale``, summed over *all* positions j (and devices):

        dx_i = rstd * (g_i - w_i (sum_j g_j + xh_i sum_j g_j xh_j) / n)
               + w_i / n * (dmu + 2 dvar xh_i / rstd)

    where the last term carries cotangents of the returned statistics.
    ``dscale``/``dbias`` are this device's sums (a data-parallel step sums
    parameter gradients over devices itself).
    """
    return _batch_norm_train_fwd(x, scale, bias, weights, epsilon, axis_name)[0]


def _batch_norm_train_fwd(x, scale, bias, weights, epsilon, axis_name):
    axes = tuple(range(x.ndim - 1))
    x32 = x.astype(jnp.float32)
    n = _count(x, weights, axes, axis_name)
    mean = _global_sum(_weighted(x32, weights), axes, axis_name) / n
    var = _global_sum(_weighted(jnp.square(x32 - mean), weights), axes, axis_name) / n
    rstd = lax.rsqrt(var + epsilon)
    # y = x * p + q with per-channel p, q: one elementwise pass, no full-size temporaries
    p = rstd if scale is None else rstd * scale.astype(jnp.float32)
    q = -mean * p if bias is None else bias.astype(jnp.float32) - mean * p
    y = (x32 * p + q).astype(x.dtype)
    return (y, mean, var), (x, scale, bias, weights, mean, rstd)


def _vma(v: Any) -> frozenset:
    """The manual mesh axes ``v`` varies over (empty outside shard_map or when not tracked).

    JAX 0.10 keeps them in ``typeof(v).manual_axis_type.varying``; earlier
    versions in ``typeof(v).vma``.
    """
    aval = jax.typeof(v)
    manual = getattr(aval, "manual_axis_type", None)
    return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()))


def _batch_norm_train_bwd(epsilon, axis_name, residuals, cotangents):
    x, scale, bias, weights, mean, rstd = residuals
    dy, dmean, dvar = cotangents
    axes = tuple(range(x.ndim - 1))
    n = _count(x, weights, axes, axis_name)
    x32, dy32 = x.astype(jnp.float32), dy.astype(jnp.float32)
    # The two reductions everything needs: S1 = sum dy, S2 = sum dy * x (this device).
    s1 = jnp.sum(dy32, axis=axes, keepdims=True)
    s2 = jnp.sum(dy32 * x32, axis=axes, keepdims=True)
    sum_dy_xh = rstd * (s2 - mean * s1)  # sum dy * xh, this device
    gamma = 1.0 if scale is None else scale.astype(jnp.float32)
    if axis_name is None:
        g1, g2 = s1, sum_dy_xh
    else:
        g1, g2 = lax.psum(s1, axis_name), lax.psum(sum_dy_xh, axis_name)
    # Two conventions for collectives under autodiff. With shard_map's varying-axis
    # checks on, x varies over axis_name, the returned statistics are single global
    # values whose cotangents are already totals, and a replicated parameter's
    # cotangent must be summed here. Without them (pmap, check_vma=False), every
    # device holds a copy of the statistics whose cotangents add up, and parameter
    # cotangents stay per device (the train step sums them).
    tracked = axis_name is not None and axis_name in _vma(x)
    if axis_name is not None and not tracked:
        dmean, dvar = lax.psum(dmean, axis_name), lax.psum(dvar, axis_name)
    # dx = rstd g - w rstd (sum g + xh sum g xh) / n + w (dmean + 2 dvar xh / rstd) / n,
    # with g = dy * gamma and xh = rstd (x - mean), collected as A dy + w (B + C x).
    k1 = (dmean - rstd * gamma * g1) / n
    k2 = (2.0 * dvar / rstd - rstd * gamma * g2) / n
    a, c = rstd * gamma, k2 * rstd
    b = k1 - c * mean
    w = 1.0 if weights is None else weights
    dx = (a * dy32 + w * (b + c * x32)).astype(x.dtype)

    def param_cotangent(local, primal):
        if primal is None:
            return None
        extra = tuple(_vma(local) - _vma(primal)) if tracked else ()
        return (lax.psum(local, extra) if extra else local).astype(primal.dtype)

    dscale = param_cotangent(sum_dy_xh, scale)
    dbias = param_cotangent(s1, bias)
    dweights = None if weights is None else jnp.zeros_like(weights)
    return dx, dscale, dbias, dweights


_batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


def _mask_weights(mask: Any, x: Any) -> jnp.ndarray:
    """A ``(N,)`` or ``x.shape[:-1]`` mask as float32 0/1 weights ``(N, *spatial, 1)``."""
    mask = _validate.check_array(mask, "mask")
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
    :func:`jaxcnn.functional._validate.channel_vector`).
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
) -> tuple[jnp.ndarray, tuple[jnp.ndarray | None, jnp.ndarray | None]]:
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
      mean, var: running statistics, ``(C,)``; or both ``None`` for none
        (PyTorch's ``track_running_stats=False``): then only ``training=True``
        is accepted, the batch statistics normalize, and ``(None, None)`` is
        returned for the new statistics. At inference a concrete ``var`` with
        an entry below 0 (or NaN) is a ``ValueError``; a traced one (inside
        ``jit``) is not checked, as that would need a host sync.
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
        (weighted sums, see :func:`_batch_norm_train`): a batch padded with rows masked out
        normalizes, and updates the running statistics, exactly as the real
        rows alone would. With ``axis_name`` the masked sums and counts are
        summed across devices, so each device may hold any number of masked
        rows. Every row is still normalized (masked rows get some output,
        which should carry zero loss weight). Ignored when ``training=False``.

    Returns:
      ``(y, (new_mean, new_var))``; ``y`` has ``x``'s shape and dtype, the
      statistics are float32 ``(C,)`` (``None`` without running statistics).

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> x = jnp.array([[1.], [3.]])
      >>> y, (m, v) = F.batch_norm(x, jnp.zeros(1), jnp.ones(1), training=True, epsilon=0.)
      >>> y[:, 0], m, v
      (Array([-1.,  1.], dtype=float32), Array([0.2], dtype=float32), Array([1.], dtype=float32))

    Reference: Ioffe & Szegedy, "Batch Normalization", ICML 2015, Algorithm 1.
    """
    x = _validate.check_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, *spatial, C) or (N, C), got shape {tuple(x.shape)}")
    _validate.check_floating(x, "x")
    c = x.shape[-1]
    mean = _validate.check_vector(mean, c, "mean")
    var = _validate.check_vector(var, c, "var")
    if (mean is None) != (var is None):
        raise TypeError("mean and var must both be (C,) arrays of running statistics, or both None, got one None")
    if mean is None and not _validate.check_bool(training, "training"):
        raise ValueError(
            "mean and var are None (no running statistics), so only training=True can normalize (with the "
            "batch statistics, as PyTorch's track_running_stats=False); got training=False"
        )
    scale = _validate.check_vector(scale, c, "scale")
    bias = _validate.check_vector(bias, c, "bias")
    training = _validate.check_bool(training, "training")
    if mask is not None:
        _mask_weights(mask, x)  # validate the shape even when it will not be used
    momentum = _validate.check_unit_interval(momentum, "momentum")
    epsilon = _validate.check_nonnegative(epsilon, "epsilon")
    scale_b = None if scale is None else _validate.channel_vector(scale, x.ndim)
    bias_b = None if bias is None else _validate.channel_vector(bias, x.ndim)
    if not training:
        _values.check_nonnegative_values(var, "var")  # concrete values only: no sync under jit
        m = _validate.channel_vector(mean.astype(jnp.float32), x.ndim)
        v = _validate.channel_vector(var.astype(jnp.float32), x.ndim)
        return affine(standardize(x, m, v, epsilon), scale_b, bias_b, x.dtype), (mean, var)
    weights = None if mask is None else _mask_weights(mask, x)
    y, batch_mean, batch_var = _batch_norm_train(x, scale_b, bias_b, weights, epsilon, axis_name)
    if mean is None:
        return y, (None, None)
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
    x = _validate.check_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, *spatial, C) or (N, C), got shape {tuple(x.shape)}")
    _validate.check_floating(x, "x")
    c = x.shape[-1]
    num_groups = _validate.as_int(num_groups, "num_groups")
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"num_groups must be a positive divisor of the channels C={c}, got {num_groups}")
    scale = _validate.check_vector(scale, c, "scale")
    bias = _validate.check_vector(bias, c, "bias")
    epsilon = _validate.check_nonnegative(epsilon, "epsilon")
    grouped = x.reshape(*x.shape[:-1], num_groups, c // num_groups)
    axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
    mean, var = moments(grouped, axes)
    y = standardize(grouped, mean, var, epsilon).reshape(x.shape)
    scale_b = None if scale is None else _validate.channel_vector(scale, x.ndim)
    bias_b = None if bias is None else _validate.channel_vector(bias, x.ndim)
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
    x = _validate.check_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and at least one more, got shape {tuple(x.shape)}")
    _validate.check_floating(x, "x")
    epsilon = _validate.check_nonnegative(epsilon, "epsilon")
    params = []
    for name, v in (("scale", scale), ("bias", bias)):
        if v is not None:
            v = _validate.check_array(v, name)
            feat = tuple(x.shape[1:])
            if v.ndim > len(feat) or tuple(v.shape) != feat[len(feat) - v.ndim :]:
                raise ValueError(
                    f"{name} must have shape x.shape[1:] = {feat} or a trailing part of it, got shape {tuple(v.shape)}"
                )
            v = jnp.reshape(v, (1,) * (x.ndim - v.ndim) + tuple(v.shape))
        params.append(v)
    mean, var = moments(x, tuple(range(1, x.ndim)))
    return affine(standardize(x, mean, var, epsilon), params[0], params[1], x.dtype)
