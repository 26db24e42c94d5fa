"""Dropout with an explicit PRNG key: inverted and textbook ("scaled") forms."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn.functional import _args

MODES = ("inverted", "scaled")


def dropout(
    x: Any,
    rate: float,
    *,
    key: Any = None,
    training: bool = True,
    mode: str = "inverted",
    broadcast_axes: Any = (),
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

    Args:
      x: any shape.
      rate: the drop probability, a concrete number in ``[0, 1]``.
      key: a PRNG key (``jax.random.key`` or ``PRNGKey``), keyword-only;
        required when ``training=True``. The same key gives the same mask.
      training: draw a mask (``True``) or apply the inference rule.
      mode: "inverted" (default) or "scaled".
      broadcast_axes: axes along which one mask value is shared, e.g. ``(1, 2)``
        for ``(N, H, W, C)`` drops whole feature maps (spatial dropout).

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
    x = _args.check_array(x, "x")
    _args.check_floating(x, "x")
    rate = _args.check_unit_interval(rate, "rate")
    training = _args.check_bool(training, "training")
    mode = _args.check_choice(mode, "mode", MODES)
    axes = _args.axes_arg(broadcast_axes, x.ndim, "broadcast_axes")
    keep = 1.0 - rate
    if not training:
        return x if mode == "inverted" else x * jnp.asarray(keep, x.dtype)
    if key is None:
        raise ValueError(
            "dropout with training=True needs a PRNG key: pass key=jax.random.key(seed) "
            "(or training=False at inference)"
        )
    key = _args.check_key(key, "key")
    if rate == 0.0:
        return x
    if rate == 1.0:
        return jnp.zeros_like(x)
    mask_shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    mask = jax.random.bernoulli(key, keep, mask_shape)
    mask = jnp.broadcast_to(mask, x.shape)
    kept = x / jnp.asarray(keep, x.dtype) if mode == "inverted" else x
    return jnp.where(mask, kept, jnp.zeros((), x.dtype))
