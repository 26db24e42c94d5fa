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
        Example ``i`` (row ``i`` of axis 0) draws its mask from
        ``fold_in(key, i)``, so a row's mask does not depend on which other
        rows are in the batch. Or one key per example: a ``(N,)`` array of
        typed keys (``N = x.shape[0]``), row ``i`` drawn from ``key[i]``.
      training: draw a mask (``True``) or apply the inference rule.
      mode: "inverted" (default) or "scaled".
      broadcast_axes: axes along which one mask value is shared, e.g. ``(1, 2)``
        for ``(N, H, W, C)`` drops whole feature maps (spatial dropout). With
        axis 0 among them one mask serves every row, drawn from ``key`` itself.
      axis_name: inside ``pmap``/``shard_map`` over the batch, the name of that
        axis: row ``i`` of device ``d`` is global row ``d * N + i`` and draws
        from ``fold_in(key, d * N + i)``, so data-parallel training drops
        exactly the units single-device training would (as ``batch_norm``'s
        ``axis_name`` makes its statistics global). Every device draws the
        global batch's masks and keeps its rows, so this holds for every key
        implementation (XLA's "rbg" bits depend on the size of the batch they
        are drawn for). All shards must have the same size. Not used with
        per-example keys (they already name the row; with "rbg" keys a part
        of a batch then draws other masks than the whole: use the default
        threefry keys, as :mod:`jaxcnn.train` does).

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
    per_example = key is not None and _is_key_array(key) and key.ndim >= 1
    if per_example:
        key = _check_key_per_row(key, x, "key")
        if 0 in axes:
            raise ValueError(
                f"dropout with one key per example (key of shape {tuple(key.shape)}) cannot share one mask "
                f"along the batch axis (broadcast_axes={broadcast_axes!r} contains 0); pass a single key"
            )
    elif key is not None:  # a malformed key is an error even where it is not used
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
    if x.ndim == 0 and axis_name is not None:
        raise ValueError("dropout with axis_name needs x with a batch axis 0 (each device's rows), got a scalar")
    mask_shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    if 0 in axes or x.ndim == 0:
        mask = jax.random.bernoulli(key, keep, mask_shape)
    else:
        draw = jax.vmap(lambda k: jax.random.bernoulli(k, keep, mask_shape[1:]))
        if per_example:
            mask = draw(key)
        elif axis_name is None:
            mask = draw(row_keys(key, x.shape[0]))
        else:  # every device draws the global batch's rows (one vmap of the global size) and keeps its own
            n = x.shape[0]
            whole = draw(row_keys(key, lax.axis_size(axis_name) * n))
            mask = lax.dynamic_slice_in_dim(whole, lax.axis_index(axis_name) * n, n, axis=0)
    mask = jnp.broadcast_to(mask, x.shape)
    kept = scale_by(x, 1.0 / keep) if mode == "inverted" else x
    return jnp.where(mask, kept, jnp.zeros((), x.dtype))


def _is_key_array(key: Any) -> bool:
    """Whether ``key`` is an array of typed PRNG keys (``jax.random.key``), of any shape."""
    return isinstance(key, (jax.Array, jax.core.Tracer)) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


def _check_key_per_row(key: Any, x: Any, name: str = "key") -> Any:
    """One typed PRNG key per row of ``x``: shape ``(x.shape[0],)``."""
    if not _is_key_array(key) or key.ndim != 1 or x.ndim == 0 or key.shape[0] != x.shape[0]:
        raise TypeError(
            f"{name} must be a single PRNG key or one typed key per example (shape (N,) with N = x.shape[0] "
            f"= {x.shape[0] if x.ndim else 'none: x is a scalar'}), got {_validate.fmt(key)}"
        )
    return key


def row_keys(key: Any, rows: int, offset: Any = 0) -> jax.Array:
    """The per-example keys of rows ``offset .. offset + rows - 1``: ``fold_in(key, offset + i)``, ``(rows,)``.

    These are the keys :func:`dropout` draws row ``offset + i`` of a batch
    from, so a part of a batch given ``key=row_keys(key, len(part), offset)``
    is masked exactly as those rows of the whole batch.
    """
    key = _validate.check_key(key, "key")
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(offset + jnp.arange(rows))


def scale_by(x: Any, factor: float) -> jnp.ndarray:
    """``x * factor`` in at least float32, cast back to ``x``'s dtype.

    ``factor`` (a Python float) is rounded once to the compute dtype; for a
    float32 ``x`` the result is exactly ``x * float32(factor)``.
    """
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    return (x.astype(dtype) * jnp.asarray(factor, dtype)).astype(x.dtype)
