"""Data augmentation as pure JAX functions of an explicit key: they run inside ``jit``.

Each function takes a whole batch ``(N, *spatial, C)`` (1, 2 or 3 spatial dims)
and draws an independent transformation per example from one key (split into
``N`` keys inside), so ``f(key, x)[i]`` depends only on ``x[i]`` and the key. The
same key gives the same result; fold the step into the key
(``jax.random.fold_in(key, step)``) to get a new draw every step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import _validate


def random_crop(key: Any, x: Any, padding: Any) -> jnp.ndarray:
    """Zero-pad by ``padding`` on every side, then crop a random window of the original size.

    For example ``i`` with offsets ``o_d`` drawn uniformly from ``{0, ..., 2 p_d}``
    (independently per spatial dim and per example)::

        out[i] = pad(x[i], p)[o_1 : o_1 + n_1, ..., o_k : o_k + n_k, :]

    so the image moves by ``o_d - p_d`` pixels, with zeros filling in. ``p = 4``
    on 32x32 is the classic CIFAR-10 augmentation; ``padding=0`` returns ``x``.

    Args:
      key: a PRNG key (``jax.random.key(seed)``).
      x: ``(N, *spatial, C)``, 1-3 spatial dims.
      padding: ``p``, an int >= 0 or one int per spatial dim (static).

    Returns:
      ``x``'s shape and dtype.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcnn.data as D
      >>> D.random_crop(jax.random.key(0), jnp.ones((2, 32, 32, 3)), 4).shape
      (2, 32, 32, 3)

    Reference: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for
    Image Recognition", CVPR 2016, Sec. 4.2 (4-pixel pad and 32x32 crop).
    """
    key = _validate.check_key(key, "key")
    x, nd = _validate.spatial_input(x, "x")
    pads = _validate.tuple_arg(padding, nd, "padding", minimum=0)
    maxval = jnp.asarray([2 * p + 1 for p in pads], jnp.int32)
    widths = [(0, 0)] + [(p, p) for p in pads] + [(0, 0)]
    padded = jnp.pad(x, widths)

    def crop_one(k: Any, image: jnp.ndarray) -> jnp.ndarray:
        offsets = jax.random.randint(k, (nd,), 0, maxval)
        start = tuple(offsets[d] for d in range(nd)) + (jnp.zeros((), jnp.int32),)
        return jax.lax.dynamic_slice(image, start, x.shape[1:])

    return jax.vmap(crop_one)(jax.random.split(key, x.shape[0]), padded)


def random_flip(key: Any, x: Any, *, prob: float = 0.5) -> jnp.ndarray:
    """Flip each example left-right (along its last spatial axis) with probability ``prob``.

    ``out[i] = x[i, ..., ::-1, :]`` if ``b_i`` else ``x[i]``, ``b_i ~ Bernoulli(prob)``
    independently per example. For images ``(N, H, W, C)`` this is a horizontal
    flip, ``x[:, :, ::-1]``; for sequences ``(N, L, C)`` a time reversal.

    Args:
      key: a PRNG key.
      x: ``(N, *spatial, C)``, 1-3 spatial dims.
      prob: flip probability in ``[0, 1]`` (static).

    Returns:
      ``x``'s shape and dtype.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcnn.data as D
      >>> x = jnp.arange(4.0).reshape(1, 1, 4, 1)
      >>> D.random_flip(jax.random.key(0), x, prob=1.0)[0, 0, :, 0].tolist()
      [3.0, 2.0, 1.0, 0.0]
    """
    key = _validate.check_key(key, "key")
    x, _ = _validate.spatial_input(x, "x")
    prob = _validate.check_unit_interval(prob, "prob")
    flip = jax.random.bernoulli(key, prob, (x.shape[0],))
    flip = jnp.reshape(flip, (-1,) + (1,) * (x.ndim - 1))
    return jnp.where(flip, jnp.flip(x, axis=x.ndim - 2), x)


def normalize(x: Any, mean: Any, std: Any) -> jnp.ndarray:
    """Standardize per channel: ``(x - mean) / std``.

    Args:
      x: ``(..., C)`` floating, channels-last.
      mean: a scalar or ``(C,)`` (e.g. from ``Dataset.channel_stats()``).
      std: a scalar or ``(C,)``, positive.

    Returns:
      ``x``'s shape and dtype.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.data as D
      >>> D.normalize(jnp.full((1, 2, 2, 3), 0.5), jnp.full(3, 0.5), jnp.full(3, 0.25))[0, 0, 0].tolist()
      [0.0, 0.0, 0.0]
    """
    x = _validate.check_array(x, "x")
    _validate.check_floating(x, "x")
    if x.ndim < 1:
        raise ValueError(f"x must have a channel axis, got {_validate.fmt(x)}")
    c = x.shape[-1]
    out = []
    for value, name in ((mean, "mean"), (std, "std")):
        value = _validate.check_array(value, name)
        if value.ndim == 0:
            value = jnp.reshape(jnp.asarray(value, x.dtype), (1,) * x.ndim)
        else:
            _validate.check_vector(value, c, name)
            value = _validate.channel_vector(jnp.asarray(value, x.dtype), x.ndim)
        out.append(value)
    if not isinstance(std, jax.core.Tracer) and not np.all(np.asarray(std) > 0):
        raise ValueError(f"std must be positive in every channel, got {np.asarray(std).tolist()}")
    return (x - out[0]) / out[1]
