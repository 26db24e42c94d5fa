"""Normalization modules: BatchNorm, GroupNorm, LayerNorm, thin wrappers of F.norm."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax.linen import initializers
from flax.linen.dtypes import promote_dtype

from jaxcnn import _validate
from jaxcnn.functional.norm import batch_norm, group_norm, layer_norm
from jaxcnn.nn._checks import check_batch_stats, checked_param

Initializer = Any


def _affine(module: nn.Module, x: Any, shape: tuple[int, ...]) -> list[Any]:
    """``x`` and the optional ``"scale"`` and ``"bias"`` parameters of shape ``shape``, promoted to one dtype.

    The parameters are checked against ``x``'s shape first; ``module.dtype``
    (if set) is the dtype they are promoted to.
    """
    p = module.param_dtype
    scale = checked_param(module, "scale", module.scale_init, shape, p, x.shape) if module.use_scale else None
    bias = checked_param(module, "bias", module.bias_init, shape, p, x.shape) if module.use_bias else None
    return promote_dtype(x, scale, bias, dtype=module.dtype)


def normalize(
    layer: Any, x: Any, scale: Any, bias: Any, mean: Any, var: Any, *, training: bool, axis_name: Any, mask: Any
) -> tuple[Any, tuple[Any, Any]]:
    """:func:`jaxcnn.functional.batch_norm` with a BatchNorm layer's ``momentum`` and ``epsilon`` (Linen or NNX).

    The one call both :class:`BatchNorm` and :class:`jaxcnn.nnx.BatchNorm` make.

    Args:
      layer: the calling layer (its ``momentum`` and ``epsilon`` are read).
      x, scale, bias: ``(N, *spatial, C)`` and ``(C,)`` (or ``None``), promoted to one dtype already.
      mean, var: the running statistics ``(C,)``, or both ``None`` without them
        (``track_running_stats=False``): then the batch's statistics normalize,
        in training and inference alike, and ``momentum`` is unused.
      training: batch statistics (and updated running ones) or the running ones.
      axis_name, mask: as :func:`jaxcnn.functional.batch_norm`.

    Returns:
      ``(y, (new_mean, new_var))`` as :func:`jaxcnn.functional.batch_norm`.
    """
    kw: dict[str, Any] = {"training": True} if mean is None else {"training": training, "momentum": layer.momentum}
    return batch_norm(x, mean, var, scale, bias, epsilon=layer.epsilon, axis_name=axis_name, mask=mask, **kw)


class BatchNorm(nn.Module):
    r"""Batch normalization with running statistics; wraps :func:`jaxcnn.functional.batch_norm`.

    .. math::

        y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta

    with the batch's mean and biased variance per channel (over the batch and
    all spatial axes) while training, the running ones at inference. While
    training, the running statistics become ``momentum * old + (1 - momentum) *
    batch`` -- except during ``init`` (``self.is_initializing()``), which leaves
    them at their initial values, as ``flax.linen.BatchNorm`` does.

    ``use_running_average`` may be given as an attribute or to ``__call__``
    (exactly one of the two, as ``flax.linen.BatchNorm``); training is
    ``use_running_average=False`` and needs ``mutable=["batch_stats"]``.

    Parameters: ``"scale"`` (gamma, init ones) and ``"bias"`` (beta, zeros),
    ``(C,)``. Collection ``"batch_stats"``: ``"mean"`` (zeros) and ``"var"``
    (ones), ``(C,)``, always float32. PyTorch's ``momentum=0.1`` is this
    ``momentum=0.9``; PyTorch's running variance is updated with the unbiased
    batch variance, this one with the biased (see the functional docstring).

    Attributes:
      use_running_average: ``True`` for inference, ``False`` for training, or
        ``None`` to take it from ``__call__``.
      momentum: weight of the old running statistics, in ``[0, 1]``.
      epsilon: added to the variance.
      use_scale, use_bias: learn ``gamma`` / ``beta``.
      axis_name: pmap/shard_map axis to average batch statistics over
        (synchronized batch norm); ignored during ``init``.
      track_running_stats: ``False`` keeps no running statistics (no
        ``batch_stats``) and always normalizes with the batch's, in training
        and inference alike, as PyTorch's ``track_running_stats=False``.
      scale_init, bias_init: initializers.
      dtype: compute dtype of the output (``None``: promote input and
        parameters); statistics are float32 regardless.
      param_dtype: dtype of ``scale``/``bias``.

    ``__call__(x, use_running_average=None, *, mask=None)``: ``mask``, ``(N,)``
    or ``x.shape[:-1]``, restricts the training statistics to the positions
    where it is true (as ``flax.linen.BatchNorm``'s ``mask``; see
    :func:`jaxcnn.functional.batch_norm`). :func:`jaxcnn.train.make_train_step`
    passes the batch's ``weight > 0`` here for every BatchNorm of any model, so
    padded rows never enter the statistics.

    Returns (``__call__``):
      ``x``'s shape, ``(N, *spatial, C)`` or ``(N, C)``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcnn.nn as jnn
      >>> bn = jnn.BatchNorm(momentum=0.9)
      >>> x = jnp.arange(8.).reshape(4, 2)
      >>> variables = bn.init(jax.random.key(0), x, use_running_average=False)
      >>> y, updates = bn.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
      >>> updates["batch_stats"]["mean"]
      Array([0.3, 0.4], dtype=float32)

    Reference: Ioffe & Szegedy, "Batch Normalization", ICML 2015.
    """

    use_running_average: bool | None = None
    momentum: float = 0.9
    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    axis_name: Any = None
    scale_init: Initializer = initializers.ones_init()
    bias_init: Initializer = initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32
    track_running_stats: bool = True

    @nn.compact
    def __call__(self, x: Any, use_running_average: bool | None = None, *, mask: Any = None) -> jnp.ndarray:
        use_running_average = _validate.check_bool(
            nn.merge_param("use_running_average", self.use_running_average, use_running_average),
            "use_running_average",
        )
        x = _validate.check_array(x, "x")
        c = x.shape[-1]
        running = None  # the "batch_stats" variables (mean, var), when the layer keeps them
        if _validate.check_bool(self.track_running_stats, "track_running_stats"):
            check_batch_stats(self, not use_running_average, c)
            running = (
                self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32),
                self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32),
            )
        mean, var = (None, None) if running is None else (running[0].value, running[1].value)
        x, scale, bias = _affine(self, x, (c,))
        initializing = self.is_initializing()
        axis_name = None if initializing else self.axis_name
        training = not use_running_average
        y, new = normalize(self, x, scale, bias, mean, var, training=training, axis_name=axis_name, mask=mask)
        if running is not None and training and not initializing:
            running[0].value, running[1].value = new
        return y


class GroupNorm(nn.Module):
    r"""Group normalization; wraps :func:`jaxcnn.functional.group_norm`.

    Each sample's ``C`` channels are split into ``num_groups`` contiguous groups,
    each normalized by its own mean and biased variance over its channels and all
    spatial positions; then a per-channel affine. ``num_groups=1`` is layer norm
    over ``(*spatial, C)`` with a per-channel ``(C,)`` affine, ``num_groups=C``
    is instance norm. As PyTorch's ``GroupNorm``.

    Parameters: ``"scale"`` (ones) and ``"bias"`` (zeros), ``(C,)``.

    Attributes:
      num_groups: ``G``, must divide ``C``.
      epsilon, use_scale, use_bias, scale_init, bias_init, dtype, param_dtype:
        as :class:`BatchNorm`.

    Returns (``__call__``): ``x``'s shape.

    Reference: Wu & He, "Group Normalization", ECCV 2018.
    """

    num_groups: int = 32
    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    scale_init: Initializer = initializers.ones_init()
    bias_init: Initializer = initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Any) -> jnp.ndarray:
        x = _validate.check_array(x, "x")
        x, scale, bias = _affine(self, x, (x.shape[-1],))
        return group_norm(x, self.num_groups, scale, bias, epsilon=self.epsilon)  # checks num_groups


class LayerNorm(nn.Module):
    r"""Layer normalization over all non-batch axes; wraps :func:`jaxcnn.functional.layer_norm`.

    .. math::

        y_n = \frac{x_n - \mu_n}{\sqrt{\sigma_n^2 + \epsilon}} \odot \gamma + \beta

    with ``mu_n``, ``sigma_n^2`` (biased) over all of ``x.shape[1:]``.

    Parameters: ``"scale"`` and ``"bias"`` of shape ``x.shape[1:]`` -- one per
    element, as PyTorch's ``LayerNorm(normalized_shape=x.shape[1:])`` (its
    ``(C, H, W)`` weight is this ``(H, W, C)`` one with the channel axis moved).
    The parameters therefore fix the input's spatial size; for the same
    normalization with a per-channel ``(C,)`` affine that accepts any size, use
    ``GroupNorm(num_groups=1)``.

    Attributes:
      epsilon, use_scale, use_bias, scale_init, bias_init, dtype, param_dtype:
        as :class:`BatchNorm`.

    Returns (``__call__``): ``x``'s shape.

    Reference: Ba, Kiros & Hinton, "Layer Normalization", 2016.
    """

    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    scale_init: Initializer = initializers.ones_init()
    bias_init: Initializer = initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Any) -> jnp.ndarray:
        x = _validate.check_array(x, "x")
        if x.ndim < 2:
            raise ValueError(f"x must have a batch axis and at least one more, got shape {tuple(x.shape)}")
        x, scale, bias = _affine(self, x, tuple(x.shape[1:]))
        return layer_norm(x, scale, bias, epsilon=self.epsilon)
