r"""The measured receptive field: the input positions where one output unit's gradient is non-zero.

.. math::

    \text{field}(y_{i}) = \{\, p : \partial y_{i} / \partial x_{p} \ne 0 \,\}

computed with one ``jax.vjp`` of the probed output against the input. To keep
gradients from vanishing by accident, the weights are made positive
(:func:`positive_params`), the input is positive, and max/min pooling is
measured as sum pooling of the same geometry (:func:`relaxed`).

Reference: Luo, Li, Urtasun & Zemel, "Understanding the Effective Receptive
Field in Deep Convolutional Neural Networks", NeurIPS 2016.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.analysis import _jaxpr

_MAX_MIN = ("reduce_window_max", "reduce_window_min")


def positive_params(params: Any) -> Any:
    r"""Weights for measuring a receptive field: positive, so no gradient cancels or vanishes.

    .. math::

        v = 1 + |w| / \max|w| \in [1, 2], \qquad
        w' = v / \textstyle\sum_{\text{all axes but the last}} v \quad (\text{rank} \ge 2)

    Every weight and bias is then > 0, so with a positive input every
    pre-activation is > 0: ReLU passes its gradient (never exactly 0), and no
    sum of terms of opposite signs can cancel. Kernels (rank >= 2, last axis the
    output) are normalized so each output unit's weights sum to 1 (an average),
    which keeps activations O(1) through deep networks (no overflow/underflow).

    Args:
      params: a pytree of arrays (a Flax ``params`` collection).

    Returns:
      The same pytree with the weights above.

    Example:
      >>> import numpy as np
      >>> from jaxcnn.analysis import positive_params
      >>> positive_params({"bias": np.array([0.0, -2.0])})["bias"]
      Array([1., 2.], dtype=float32)

    Reference: Luo, Li, Urtasun & Zemel, "Understanding the Effective Receptive
    Field in Deep Convolutional Neural Networks", NeurIPS 2016 (fields measured by
    gradients; they set weights to one for the same reason).
    """

    def one(w):
        w = jnp.asarray(w)
        if not jnp.issubdtype(w.dtype, jnp.floating) or w.size == 0:
            return w
        a = jnp.abs(w)
        m = jnp.max(a)
        v = 1.0 + jnp.where(m > 0, a / jnp.where(m > 0, m, 1.0), 0.0)
        if w.ndim >= 2:
            v = v / jnp.sum(v, axis=tuple(range(w.ndim - 1)), keepdims=True)
        return v.astype(w.dtype)

    return jax.tree_util.tree_map(one, nn.meta.unbox(params))


def _has_max(jaxpr: Any) -> bool:
    return any(e.primitive.name in _MAX_MIN for e, _, _ in _jaxpr.walk(jaxpr))


def _sum_pooling(eqn: Any, vals: list, names: tuple) -> Sequence[Any]:
    """Evaluate one equation, max/min windows as sum windows (inside calls that hold them too)."""
    sub = _jaxpr.called_jaxpr(eqn)
    if eqn.primitive.name in _MAX_MIN:
        p = eqn.params
        zero = np.zeros((), vals[0].dtype)  # a concrete init value: lax then emits a differentiable window sum
        keys = ("window_dimensions", "window_strides", "padding", "base_dilation", "window_dilation")
        return [lax.reduce_window(vals[0], zero, lax.add, *(p[k] for k in keys))]
    if sub is not None and _has_max(sub):
        closed_sub = _jaxpr.closed_called(eqn)
        consts = closed_sub.consts if closed_sub is not None else ()
        return _jaxpr.interpret(sub, vals, _sum_pooling, consts=consts, outer=names)
    bind = eqn.primitive.get_bind_params(eqn.params)  # (subfuns, params) in older JAX
    subfuns, params = bind if isinstance(bind, tuple) else ((), bind)
    outs = eqn.primitive.bind(*subfuns, *vals, **params)
    return outs if eqn.primitive.multiple_results else [outs]


def relaxed(closed: Any, fn: Callable) -> Callable:
    """``fn(leaves, x)``, or, if it max-pools, its jaxpr evaluated with sum pooling instead.

    Max/min pooling windows become sum windows of the same geometry.
    The gradient of a max reaches one input per window (the arg-max), so it
    depends on the data; a window sum's reaches every input in the window,
    which is the set that *can* influence the output.

    Args:
      closed: the ``ClosedJaxpr`` of ``fn``.
      fn: ``fn(leaves, x) -> output``.

    Returns:
      A function of ``(leaves, x)`` with ``fn``'s output shape.
    """
    if not _has_max(closed.jaxpr):
        return fn
    return lambda leaves, x: _jaxpr.interpret(closed.jaxpr, [*leaves, x], _sum_pooling, consts=closed.consts)[0]


def measure(
    closed: Any, fn: Callable, prepare: Callable, treedef: Any, leaves: list, xb: Any, index: Sequence[int]
) -> tuple[np.ndarray, tuple]:
    """The gradient support of ``fn(prepare(leaves), xb)[index]`` against ``xb``.

    Args:
      closed: the ``ClosedJaxpr`` of ``fn`` (read for max pooling, see :func:`relaxed`).
      fn: ``fn(leaves, x)``, the probed output of a batch of one ``(1, *spatial, C)``.
      prepare: ``prepare(variables, x) -> variables`` run inside the compiled
        measurement (positive parameters, initialized collections).
      treedef, leaves: the variables as a pytree definition and leaves
        (``jax.ShapeDtypeStruct`` leaves are passed as ``None``).
      xb: the input, ``(1, *spatial, C)``.
      index: the probed output element.

    Returns:
      ``(mask, measured)``: the spatial mask of non-zero gradient, and per
      spatial dim ``(min, max)`` of its positions (``None`` where none).

    Raises:
      ValueError: the gradient is not finite.
    """
    f = relaxed(closed, fn)

    @jax.jit
    def gradient(leaves, x):
        ready = jax.tree_util.tree_leaves(prepare(jax.tree_util.tree_unflatten(treedef, leaves), x))
        y, vjp = jax.vjp(lambda x: f(ready, x), x)
        return vjp(jnp.zeros_like(y).at[tuple(index)].set(1))[0]

    concrete = [None if isinstance(a, jax.ShapeDtypeStruct) else a for a in leaves]
    grad = np.asarray(gradient(concrete, xb))
    if not np.all(np.isfinite(grad)):
        raise ValueError("the measured gradient is not finite (overflow); try a smaller input or model")
    mask = np.any(grad[0] != 0, axis=-1)
    nd = mask.ndim
    measured = []
    for d in range(nd):
        hit = np.nonzero(np.any(mask, axis=tuple(a for a in range(nd) if a != d)))[0]
        measured.append((int(hit.min()), int(hit.max())) if hit.size else None)
    return mask, tuple(measured)
