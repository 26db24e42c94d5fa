"""NNX normalization layers: BatchNorm, GroupNorm, LayerNorm, thin wrappers of F.norm."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import nnx
from flax.linen.dtypes import promote_dtype

from jaxcnn import _validate
from jaxcnn.functional.norm import group_norm, layer_norm
from jaxcnn.nn.norm import normalize
from jaxcnn.nnx import _args
from jaxcnn.nnx.context import default_mask

Initializer = Any


def _affine(
    module: Any,
    shape: tuple[int, ...],
    use_scale: bool,
    use_bias: bool,
    scale_init: Initializer,
    bias_init: Initializer,
    param_dtype: Any,
    rngs: nnx.Rngs,
) -> None:
    """Create the optional ``scale`` and ``bias`` parameters of a normalization layer (``None`` when off)."""
    rngs = _args.check_rngs(rngs)
    module.scale = nnx.Param(scale_init(rngs.params(), shape, param_dtype)) if use_scale else nnx.data(None)
    module.bias = nnx.Param(bias_init(rngs.params(), shape, param_dtype)) if use_bias else nnx.data(None)


def _promoted(module: Any, x: Any) -> list[Any]:
    """``x`` and the current ``scale`` and ``bias`` arrays (or ``None``), promoted to one dtype."""
    scale = None if module.scale is None else module.scale[...]
    bias = None if module.bias is None else module.bias[...]
    return promote_dtype(x, scale, bias, dtype=module.dtype)


class BatchNorm(nnx.Module):
    r"""Batch normalization with running statistics; wraps :func:`jaxcnn.functional.batch_norm`.

    .. math::

        y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta

    The NNX twin of :class:`jaxcnn.nn.BatchNorm`: batch mean and biased
    variance per channel while training (``use_running_average=False``), the
    running ones at inference; training updates the running statistics in
    place to ``momentum * old + (1 - momentum) * batch``.

    State: :class:`flax.nnx.Param` ``scale`` (ones) and ``bias`` (zeros), and
    :class:`flax.nnx.BatchStat` ``mean`` (zeros) and ``var`` (ones), all
    ``(num_features,)``, statistics always float32 -- the Linen layer's
    ``params`` and ``batch_stats`` under the same names.

    Args:
      num_features: channels ``C``.
      use_running_average: ``True`` at inference, ``False`` while training (the
        NNX default, as :class:`flax.nnx.BatchNorm`); ``nnx.Module.train()`` /
        ``eval()`` set it, and a ``__call__`` argument overrides it.
      momentum: weight of the old running statistics, in ``[0, 1]`` (0.9; PyTorch's 0.1).
      epsilon: added to the variance.
      use_scale, use_bias, scale_init, bias_init, dtype, param_dtype: as the Linen layer.
      axis_name: pmap/shard_map axis to average the batch statistics over
        (synchronized batch norm).
      track_running_stats: ``False`` keeps no running statistics (``mean`` and
        ``var`` are ``None``, no ``nnx.BatchStat`` at all) and always normalizes
        with the batch's, in training and inference alike, as PyTorch's
        ``track_running_stats=False``.
      rngs: :class:`flax.nnx.Rngs` for the affine initializers.

    ``__call__(x, use_running_average=None, *, mask=None)``: ``x`` ``(N, *spatial,
    C)`` or ``(N, C)`` -> the same shape. ``mask`` (``(N,)`` or ``x.shape[:-1]``,
    bool) restricts the training statistics to its true positions; when not
    given, the ``batch_mask`` of an enclosing
    :func:`jaxcnn.nnx.context.layer_defaults` is used (what
    :func:`jaxcnn.nnx.as_linen_like`'s ``apply(..., batch_mask=...)`` sets).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxcnn.nnx as jnnx
      >>> bn = jnnx.BatchNorm(2, rngs=nnx.Rngs(0))
      >>> _ = bn(jnp.arange(8.).reshape(4, 2))
      >>> bn.mean[...]
      Array([0.3, 0.4], dtype=float32)

    Reference: Ioffe & Szegedy, "Batch Normalization", ICML 2015.
    """

    def __init__(
        self,
        num_features: int,
        *,
        use_running_average: bool = False,
        momentum: float = 0.9,
        epsilon: float = 1e-5,
        use_scale: bool = True,
        use_bias: bool = True,
        axis_name: Any = None,
        scale_init: Initializer = _args.ONES,
        bias_init: Initializer = _args.ZEROS,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        track_running_stats: bool = True,
        rngs: nnx.Rngs,
    ):
        c = _args.features(num_features, "num_features")
        self.num_features = c
        self.use_running_average = _validate.check_bool(use_running_average, "use_running_average")
        self.momentum = _validate.check_unit_interval(momentum, "momentum")
        self.epsilon = _validate.check_nonnegative(epsilon, "epsilon")
        self.track_running_stats = _validate.check_bool(track_running_stats, "track_running_stats")
        self.axis_name, self.dtype, self.param_dtype = axis_name, dtype, param_dtype
        if self.track_running_stats:
            self.mean = nnx.BatchStat(jnp.zeros((c,), jnp.float32))
            self.var = nnx.BatchStat(jnp.ones((c,), jnp.float32))
        else:
            self.mean, self.var = nnx.data(None), nnx.data(None)  # type: ignore[arg-type]  # no running statistics
        _affine(self, (c,), use_scale, use_bias, scale_init, bias_init, param_dtype, rngs)

    def __call__(self, x: Any, use_running_average: bool | None = None, *, mask: Any = None) -> jnp.ndarray:
        use_running_average = _validate.check_bool(
            self.use_running_average if use_running_average is None else use_running_average, "use_running_average"
        )
        x, scale, bias = _promoted(self, _validate.check_array(x, "x"))
        training = not use_running_average
        mean, var = (self.mean[...], self.var[...]) if self.track_running_stats else (None, None)
        batch_stats = training or mean is None  # the layer normalizes with the batch's statistics
        mask = default_mask(mask) if batch_stats else mask
        y, (new_mean, new_var) = normalize(
            self, x, scale, bias, mean, var, training=training, axis_name=self.axis_name, mask=mask
        )
        if training and mean is not None:
            self.mean[...], self.var[...] = new_mean, new_var
        return y


class GroupNorm(nnx.Module):
    r"""Group normalization; wraps :func:`jaxcnn.functional.group_norm` (twin of :class:`jaxcnn.nn.GroupNorm`).

    Each sample's channels are split into ``num_groups`` contiguous groups,
    each normalized over its channels and all spatial positions, then a
    per-channel affine; as PyTorch's ``GroupNorm``.

    Args:
      num_features: channels ``C`` (``num_groups`` must divide it; checked by
        the functional op at the first call).
      num_groups: ``G`` (32, the Linen default).
      epsilon, use_scale, use_bias, scale_init, bias_init, dtype, param_dtype, rngs:
        as :class:`BatchNorm`.

    State: ``scale`` and ``bias`` ``(num_features,)``.

    ``__call__(x)``: ``(N, *spatial, C)`` or ``(N, C)`` -> the same shape.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxcnn.nnx as jnnx
      >>> jnnx.GroupNorm(8, num_groups=2, rngs=nnx.Rngs(0))(jnp.ones((1, 4, 4, 8))).shape
      (1, 4, 4, 8)

    Reference: Wu & He, "Group Normalization", ECCV 2018.
    """

    def __init__(
        self,
        num_features: int,
        *,
        num_groups: int = 32,
        epsilon: float = 1e-5,
        use_scale: bool = True,
        use_bias: bool = True,
        scale_init: Initializer = _args.ONES,
        bias_init: Initializer = _args.ZEROS,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        c = _args.features(num_features, "num_features")
        self.num_features, self.num_groups = c, _validate.as_int(num_groups, "num_groups")
        self.epsilon, self.dtype, self.param_dtype = epsilon, dtype, param_dtype
        _affine(self, (c,), use_scale, use_bias, scale_init, bias_init, param_dtype, rngs)

    def __call__(self, x: Any) -> jnp.ndarray:
        x, scale, bias = _promoted(self, x)
        return group_norm(x, self.num_groups, scale, bias, epsilon=self.epsilon)


class LayerNorm(nnx.Module):
    r"""Layer normalization over all non-batch axes; wraps :func:`jaxcnn.functional.layer_norm`.

    Twin of :class:`jaxcnn.nn.LayerNorm`: per sample, mean and biased variance
    over all of ``x.shape[1:]``, then an elementwise affine of that shape (as
    PyTorch's ``LayerNorm(normalized_shape=x.shape[1:])``).

    Args:
      normalized_shape: ``x.shape[1:]``, e.g. ``(H, W, C)``; an int ``C`` for ``(N, C)`` inputs.
      epsilon, use_scale, use_bias, scale_init, bias_init, dtype, param_dtype, rngs:
        as :class:`BatchNorm`.

    State: ``scale`` and ``bias`` of shape ``normalized_shape``.

    ``__call__(x)``: ``(N, *normalized_shape)`` -> the same shape.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxcnn.nnx as jnnx
      >>> ln = jnnx.LayerNorm((4, 4, 3), rngs=nnx.Rngs(0))
      >>> ln.scale.shape, ln(jnp.ones((2, 4, 4, 3))).shape
      ((4, 4, 3), (2, 4, 4, 3))

    Reference: Ba, Kiros & Hinton, "Layer Normalization", 2016.
    """

    def __init__(
        self,
        normalized_shape: Any,
        *,
        epsilon: float = 1e-5,
        use_scale: bool = True,
        use_bias: bool = True,
        scale_init: Initializer = _args.ONES,
        bias_init: Initializer = _args.ZEROS,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape = _validate.tuple_arg(shape, len(shape), "normalized_shape")
        self.epsilon, self.dtype, self.param_dtype = epsilon, dtype, param_dtype
        _affine(self, self.normalized_shape, use_scale, use_bias, scale_init, bias_init, param_dtype, rngs)

    def __call__(self, x: Any) -> jnp.ndarray:
        x = _validate.check_array(x, "x")
        if tuple(x.shape[1:]) != self.normalized_shape:
            raise ValueError(
                f"x of shape {tuple(x.shape)} does not match normalized_shape={self.normalized_shape}; "
                f"expected (N, {', '.join(map(str, self.normalized_shape))})"
            )
        x, scale, bias = _promoted(self, x)
        return layer_norm(x, scale, bias, epsilon=self.epsilon)
