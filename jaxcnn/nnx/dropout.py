"""NNX dropout: a thin wrapper of F.dropout that draws its key from an ``nnx.Rngs`` stream."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import _validate
from jaxcnn.functional.dropout import MODES, dropout


class Dropout(nnx.Module):
    r"""Dropout, inverted or textbook-scaled; wraps :func:`jaxcnn.functional.dropout`.

    The NNX twin of :class:`jaxcnn.nn.Dropout` (its table gives both modes):
    with the keep mask ``m``, "inverted" is ``m * x / (1 - rate)`` while
    training and ``x`` when deterministic; "scaled" is ``m * x`` and
    ``(1 - rate) * x``.

    Keys: a key passed to ``__call__`` (``rngs=key``) is used *as is* for the
    mask ``m``; an :class:`flax.nnx.Rngs` / ``RngStream`` passed there, or the
    stream stored at construction, is drawn from (``rngs[rng_collection]()``,
    a new key per call, as :class:`flax.nnx.Dropout`). The Linen layer uses
    ``make_rng("dropout")``, a key derived from the ``apply`` key and the
    layer's path; :func:`jaxcnn.nnx.linen_key` computes it, so
    ``Dropout(...)(x, rngs=linen_key(key, path))`` draws exactly the mask of
    the Linen layer at ``path`` under ``apply(..., rngs={"dropout": key})``
    (the converted zoo models do this by themselves). With ``rate=0`` no key is drawn.

    Args:
      rate: drop probability in ``[0, 1]``.
      mode: "inverted" (default) or "scaled" (the original paper's form).
      broadcast_axes: axes sharing one mask value, e.g. ``(1, 2)`` drops whole
        feature maps of ``(N, H, W, C)``.
      deterministic: ``True`` at inference, ``False`` while training (the NNX
        default); ``nnx.Module.train()`` / ``eval()`` set it, a ``__call__``
        argument overrides it.
      rng_collection: the PRNG stream name ("dropout").
      axis_name: the pmap/shard_map batch axis: each device keeps its rows of
        the global batch's mask (see :func:`jaxcnn.functional.dropout`).
      rngs: :class:`flax.nnx.Rngs` or ``RngStream`` to store (its
        ``rng_collection`` stream is forked), or ``None`` to pass keys at call time.

    ``__call__(x, deterministic=None, *, rngs=None)``: ``x`` any shape -> the
    same shape and dtype. ``rngs`` at call time may be a key, or one key per
    example (``(N,)`` typed keys, e.g. :func:`jaxcnn.functional.row_keys` of a
    part of a batch, which then draws the whole batch's masks for its rows).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import jaxcnn.nnx as jnnx
      >>> y = jnnx.Dropout(0.5)(jnp.ones((2, 4)), rngs=jax.random.key(0))
      >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
      True

    Reference: Srivastava et al., "Dropout", JMLR 15, 2014.
    """

    def __init__(
        self,
        rate: float,
        *,
        mode: str = "inverted",
        broadcast_axes: Any = (),
        deterministic: bool = False,
        rng_collection: str = "dropout",
        axis_name: Any = None,
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ):
        self.rate = _validate.check_unit_interval(rate, "rate")
        self.mode = _validate.check_choice(mode, "mode", MODES)
        self.broadcast_axes = broadcast_axes
        self.deterministic = _validate.check_bool(deterministic, "deterministic")
        self.rng_collection, self.axis_name = rng_collection, axis_name
        if isinstance(rngs, nnx.Rngs):
            self.rngs = rngs[rng_collection].fork()
        elif isinstance(rngs, nnx.RngStream):
            self.rngs = rngs.fork()
        elif rngs is None:
            self.rngs = nnx.data(None)
        else:
            raise TypeError(f"rngs must be a flax.nnx.Rngs, RngStream or None, got {_validate.fmt(rngs)}")

    def _key(self, rngs: Any) -> Any:
        source = self.rngs if rngs is None else rngs
        if isinstance(source, nnx.Rngs):
            return source[self.rng_collection]()
        if isinstance(source, nnx.RngStream):
            return source()
        if source is None:
            raise ValueError(
                "Dropout in training mode needs a key: pass rngs=nnx.Rngs(...) when building it, "
                "rngs=key (or an nnx.Rngs) when calling it, or deterministic=True at inference"
            )
        if isinstance(source, jax.Array):
            return source
        raise TypeError(f"rngs must be a flax.nnx.Rngs, RngStream or PRNG key, got {_validate.fmt(source)}")

    def __call__(self, x: Any, deterministic: bool | None = None, *, rngs: Any = None) -> jnp.ndarray:
        deterministic = _validate.check_bool(
            self.deterministic if deterministic is None else deterministic, "deterministic"
        )
        training = not deterministic and self.rate > 0.0
        return dropout(
            x,
            self.rate,
            key=self._key(rngs) if training else None,
            training=training,
            mode=self.mode,
            broadcast_axes=self.broadcast_axes,
            axis_name=self.axis_name,
        )
