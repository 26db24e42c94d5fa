"""Per-example losses and metrics, built on optax (nothing here re-derives a loss).

Every function maps a batch to one value *per example*, shape ``(B,)``, so a
train step can weight examples (padding in a last partial batch gets weight 0)
and sum exactly across devices. Reductions over classes or time happen here;
reductions over the batch happen in :mod:`jaxcnn.train.step`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcnn import _validate

LossFn = Callable[[Any, Any], Any]


def _per_example(values: Any) -> jnp.ndarray:
    """Mean over every axis but the first: ``(B, ...) -> (B,)``."""
    return values if values.ndim == 1 else jnp.mean(values.reshape(values.shape[0], -1), axis=1)


def _check_labels(logits: Any, labels: Any) -> None:
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class indices, got {_validate.fmt(labels)}")
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"labels must have shape logits.shape[:-1] = {tuple(logits.shape[:-1])}, got {tuple(labels.shape)}"
        )


def cross_entropy(logits: Any, labels: Any, *, label_smoothing: float = 0.0) -> jnp.ndarray:
    r"""Softmax cross-entropy with integer labels, per example.

    .. math:: \ell = -\sum_k q_k \log \operatorname{softmax}(z)_k, \quad
              q = (1 - \alpha)\, \mathrm{onehot}(y) + \alpha / K

    with ``alpha = label_smoothing`` (0: the plain negative log-likelihood
    ``-log softmax(z)_y``). Computed in float32.

    Args:
      logits: ``(B, ..., K)``.
      labels: integer ``(B, ...)``.
      label_smoothing: ``alpha`` in ``[0, 1]``.

    Returns:
      ``(B,)`` (averaged over any axes between batch and classes).

    Reference: Szegedy et al., "Rethinking the Inception Architecture", 2016 (label smoothing).
    """
    _check_labels(logits, labels)
    alpha = _validate.check_unit_interval(label_smoothing, "label_smoothing")
    logits = logits.astype(jnp.float32)
    if alpha == 0.0:
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    else:
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32), alpha)
        losses = optax.softmax_cross_entropy(logits, targets)
    return _per_example(losses)


def mse(outputs: Any, targets: Any) -> jnp.ndarray:
    r"""Mean squared error per example: ``mean_k (outputs_k - t_k)^2``.

    Integer ``targets`` of shape ``outputs.shape[:-1]`` are class labels and are
    one-hot encoded, so ``mse`` trains a classifier the way the lecture compares
    it with cross-entropy (squared error on the raw network outputs); float
    targets of ``outputs``' shape are regression targets (e.g. next-step
    prediction of a signal). Computed in float32 with ``optax.squared_error``.

    Returns:
      ``(B,)``.
    """
    outputs = outputs.astype(jnp.float32)
    if jnp.issubdtype(targets.dtype, jnp.integer):
        _check_labels(outputs, targets)
        targets = jax.nn.one_hot(targets, outputs.shape[-1], dtype=jnp.float32)
    elif tuple(targets.shape) != tuple(outputs.shape):
        raise ValueError(
            f"float targets must have the outputs' shape {tuple(outputs.shape)}, got {tuple(targets.shape)}"
        )
    return _per_example(optax.squared_error(outputs, targets.astype(jnp.float32)))


def accuracy(logits: Any, labels: Any) -> jnp.ndarray:
    """1.0 where ``argmax(logits) == label``, per example ``(B,)`` (mean over extra axes)."""
    _check_labels(logits, labels)
    return _per_example((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def top_k_accuracy(logits: Any, labels: Any, k: int = 5) -> jnp.ndarray:
    """1.0 where the label is among the ``k`` largest logits, per example ``(B,)``.

    Ties are broken towards the label being *out* of the top k (a label whose
    logit equals the k-th largest counts only if fewer than k logits exceed it).
    """
    _check_labels(logits, labels)
    k = _validate.as_int(k, "k")
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError(f"k must be in [1, {logits.shape[-1]}] (the number of classes), got {k}")
    label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)
    higher = jnp.sum(logits > label_logit, axis=-1)
    return _per_example((higher < k).astype(jnp.float32))


LOSSES: dict[str, LossFn] = {"cross_entropy": cross_entropy, "mse": mse}


def get_loss(name: str | LossFn, **kwargs: Any) -> LossFn:
    """A loss by name ("cross_entropy", "mse") with keyword options bound, or a callable as is.

    Example: ``get_loss("cross_entropy", label_smoothing=0.1)``.
    """
    if callable(name):
        return name
    key = _validate.check_choice(name, "loss", tuple(LOSSES))
    fn = LOSSES[key]
    return functools.partial(fn, **kwargs) if kwargs else fn
