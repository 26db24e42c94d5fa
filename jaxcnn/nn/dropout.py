"""Dropout module: a thin wrapper of F.dropout that draws its key from a Flax PRNG stream."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn import _validate
from jaxcnn.functional.dropout import dropout
from jaxcnn.nn._checks import check_rng


class Dropout(nn.Module):
    r"""Dropout; wraps :func:`jaxcnn.functional.dropout`.

    While training (``deterministic=False``) each unit is zeroed with
    probability ``rate``; the key comes from ``self.make_rng(rng_collection)``
    (pass ``rngs={"dropout": key}`` to ``apply``), so the same key gives the same
    mask. ``deterministic`` may be an attribute or a ``__call__`` argument
    (exactly one, as ``flax.linen.Dropout``).

    ==============  ======================  ====================
    ``mode``        training                deterministic
    ==============  ======================  ====================
    "inverted"      ``m * x / (1 - rate)``  ``x``
    "scaled"        ``m * x``               ``(1 - rate) * x``
    ==============  ======================  ====================

    With ``rate=0`` no key is drawn (the output is ``x``).

    Attributes:
      rate: drop probability in ``[0, 1]``.
      mode: "inverted" (default) or "scaled" (the original paper's form).
      broadcast_axes: axes sharing one mask value, e.g. ``(1, 2)`` drops whole
        feature maps of ``(N, H, W, C)``.
      deterministic: ``True`` at inference, ``False`` when training, ``None``
        to take it from ``__call__``.
      rng_collection: the PRNG stream name ("dropout").
      axis_name: inside ``pmap``/``shard_map`` over the batch, that axis's name:
        each device keeps its rows of the global batch's mask, so data-parallel
        dropout drops what single-device dropout would (give every device the
        same ``"dropout"`` key). See :func:`jaxcnn.functional.dropout`.

    ``__call__(x, deterministic=None, *, rng=None)``: ``rng`` is a key, or
    one key per example (``(N,)`` typed keys), used instead of the
    ``rng_collection`` stream (as ``flax.linen.Dropout``'s ``rng``); per-example
    keys let a batch computed in parts draw the whole batch's masks (see
    :mod:`jaxcnn.train.split`).

    Returns (``__call__``): ``x``'s shape and dtype.

    Reference: Srivastava et al., "Dropout", JMLR 15, 2014.
    """

    rate: float
    mode: str = "inverted"
    broadcast_axes: Any = ()
    deterministic: bool | None = None
    rng_collection: str = "dropout"
    axis_name: Any = None

    @nn.compact
    def __call__(self, x: Any, deterministic: bool | None = None, *, rng: Any = None) -> jnp.ndarray:
        deterministic = _validate.check_bool(
            nn.merge_param("deterministic", self.deterministic, deterministic), "deterministic"
        )
        rate = _validate.check_unit_interval(self.rate, "rate")
        training = not deterministic and rate > 0.0
        key = None
        if training:
            if rng is None:
                check_rng(self, self.rng_collection, f"is in training mode (deterministic=False) with rate {rate}")
            key = self.make_rng(self.rng_collection) if rng is None else rng
        return dropout(
            x,
            rate,
            key=key,
            training=training,
            mode=self.mode,
            broadcast_axes=self.broadcast_axes,
            axis_name=self.axis_name,
        )
