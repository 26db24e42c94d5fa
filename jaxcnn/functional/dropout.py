"""Dropout with an explicit PRNG key: inverted and textbook ("scaled") forms."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn import _validate

MODES = ("inverted", "scaled")


def dropout(
    x: Any,
    rate: float,
    *,
    key: Any = None,
    training: bool = True,
    mode: str = "inverted",
    broadcast_axes: Any = (),
    axis_name: Any = None,
    batch_part: tuple[int, int] | None = None,
) -> jnp.ndarray:
    r"""Dropout: zero each unit with probability ``rate``, keep it with ``p = 1 - rate``.

    With a mask ``m ~ Bernoulli(p)`` drawn from ``key``:

    ==============  ======================  ====================
    ``mode``        training                inference
    ==============  ======================  ====================
    "inverted"      ``m * x / p``           ``x``
    "scaled"        ``m * x``               ``p * x``
    ==============  ======================  ====================

    Both keep the expected activation at inference equal to its expectation in
    training; "inverted" (every modern library's default) moves the scaling into
    training so inference is the identity, "scaled" is the form of the original
    paper (weight scaling at test time). ``rate=0`` returns ``x`` exactly and
    ``rate=1`` returns zeros, with no division by zero.

    The factor (``1 / p`` or ``p``) is rounded once, from Python's double, to
    float32 and multiplied in float32 (wider for float64 ``x``), then the result
    is cast to ``x``'s dtype: a kept float32 unit is exactly
    ``x * float32(1 / p)``, within a relative ``2**-23`` of ``x / p`` (two
    roundings of at most ``2**-24`` each). Multiplying rather than
    dividing keeps the bits the same on every backend (XLA's float division
    is not correctly rounded on all of them), and computing in float32 keeps
    bf16/fp16 activations unbiased (``1 / bf16(0.9)`` is 0.2% off ``1 / 0.9``).

    Args:
      x: any shape.
      rate: the drop probability, a concrete number in ``[0, 1]``.
      key: a PRNG key (``jax.random.key`` or ``PRNGKey``), keyword-only;
        required when ``training=True``. The same key gives the same mask.
      training: draw a mask (``True``) or apply the inference rule.
      mode: "inverted" (default) or "scaled".
      broadcast_axes: axes along which one mask value is shared, e.g. ``(1, 2)``
        for ``(N, H, W, C)`` drops whole feature maps (spatial dropout).
      axis_name: inside ``pmap``/``shard_map`` over the batch, the name of that
        axis: every device then draws the mask of the whole global batch from
        the same ``key`` and keeps its own rows, so data-parallel training drops
        exactly the units single-device training would (as ``batch_norm``'s
        ``axis_name`` makes its statistics global). ``x`` is this device's
        shard, axis 0 its batch; all shards must have the same size.
      batch_part: ``(index, count)``: ``x`` is part ``index`` of ``count``
        equal consecutive parts of the batch (axis 0). The mask of the whole
        batch is drawn from ``key`` and this part's rows are kept, so computing
        a batch in parts (as :func:`jaxcnn.train.make_train_step` does on CPU,
        ``batch_split``) drops exactly the units of the whole batch. With
        ``axis_name`` too, the parts are those of this device's shard.

    Returns:
      ``x``'s shape and dtype.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcnn.functional as F
      >>> y = F.dropout(jnp.ones((2, 4)), 0.5, key=jax.random.key(0))
      >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
      True

    Reference: Srivastava et al., "Dropout: A Simple Way to Prevent Neural
    Networks from Overfitting", JMLR 15, 2014.
    """
    x = _validate.check_array(x, "x")
    _validate.check_floating(x, "x")
    rate = _validate.check_unit_interval(rate, "rate")
    training = _validate.check_bool(training, "training")
    mode = _validate.check_choice(mode, "mode", MODES)
    axes = _validate.axes_arg(broadcast_axes, x.ndim, "broadcast_axes")
    index, count = _validate.batch_part_arg(batch_part, "batch_part")
    if key is not None:  # a malformed key is an error even where it is not used
        key = _validate.check_key(key, "key")
    keep = 1.0 - rate
    if not training:
        return x if mode == "inverted" or rate == 0.0 else scale_by(x, keep)
    if key is None:
        raise ValueError(
            "dropout with training=True needs a PRNG key: pass key=jax.random.key(seed) "
            "(or training=False at inference)"
        )
    if rate == 0.0:
        return x
    if rate == 1.0:
        return jnp.zeros_like(x)
    mask_shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    if axis_name is not None and 0 not in axes:
        index, count = lax.axis_index(axis_name) * count + index, lax.axis_size(axis_name) * count
    if count == 1 or 0 in axes:
        mask = jax.random.bernoulli(key, keep, mask_shape)
    else:
        if x.ndim == 0:
            raise ValueError("dropout with axis_name or batch_part needs x with a batch axis 0, got a scalar")
        whole = jax.random.bernoulli(key, keep, (count * mask_shape[0],) + mask_shape[1:])
        mask = lax.dynamic_slice_in_dim(whole, index * mask_shape[0], mask_shape[0], axis=0)
    mask = jnp.broadcast_to(mask, x.shape)
    kept = scale_by(x, 1.0 / keep) if mode == "inverted" else x
    return jnp.where(mask, kept, jnp.zeros((), x.dtype))


def scale_by(x: Any, factor: float) -> jnp.ndarray:
    """``x * factor`` in at least float32, cast back to ``x``'s dtype.

    ``factor`` (a Python float) is rounded once to the compute dtype; for a
    float32 ``x`` the result is exactly ``x * float32(factor)``.
    """
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    return (x.astype(dtype) * jnp.asarray(factor, dtype)).astype(x.dtype)
