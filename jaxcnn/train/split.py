"""Batch split: one train step's gradient as the sum over independent parts of the batch.

XLA:CPU runs each fused kernel of a program on one thread and runs
*independent* kernels concurrently. A CNN train step is one long chain of
dependent kernels (layer by layer, forward then backward), so on CPU most of it
keeps one core busy (measured with ``jax.profiler`` on the LWLS CNN at batch
512, 2 cores: 27 ms of kernel time in a 39 ms step). Computing the loss of
``p`` parts of the batch separately gives XLA ``p`` independent chains to run
side by side, and each part's activations stay in cache:

.. math::

    \\nabla_\\theta \\frac{\\sum_i w_i \\ell_i}{\\sum_i w_i}
    = \\sum_{k=1}^{p} \\nabla_\\theta \\frac{\\sum_{i \\in \\text{part } k} w_i \\ell_i}{\\sum_i w_i}

This is the same gradient (up to the order of float summation) only if no
layer mixes examples: BatchNorm's batch statistics would become per part
("ghost batch norm"), so models with BatchNorm are never split. Dropout draws
the whole batch's mask and keeps each part's rows
(``F.dropout(..., batch_part=(k, p))``), so the units dropped are those of the
unsplit step. Layers that mix examples in other ways must be trained with
``batch_split=1``.

Measured (LWLS CNN + Adam, 2-core AVX-512, against PyTorch eager in the same
process): parts of 32 examples were the fastest size tried at batch 64, 128
and 512 (against 64, 128 and 256), and at batch 32 two parts of 16 were slower
than none (1.39x vs 1.43x); hence :func:`auto_parts`. With it, ``python -m benchmarks.run`` went from 0.85x
to 1.20x PyTorch at batch 128 and from 0.64x to 1.00x at batch 512.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import _validate
from jaxcnn.nn.dropout import Dropout as _Dropout

PART_SIZE = 32  # examples per part of the automatic split (measured, module docstring)
MAX_PARTS = 16  # more parts compile more slowly for little gain


def auto_parts(batch_size: int) -> int:
    """The automatic number of parts: the most parts of at least :data:`PART_SIZE` examples
    (at most :data:`MAX_PARTS`) that divide ``batch_size``; 1 (no split) below 64."""
    for parts in range(min(MAX_PARTS, batch_size // PART_SIZE), 1, -1):
        if batch_size % parts == 0:
            return parts
    return 1


def check_batch_split(batch_split: Any) -> int | str:
    """``"auto"`` or an int >= 1, else a ``TypeError``/``ValueError`` naming ``batch_split``."""
    if isinstance(batch_split, str):
        return _validate.check_choice(batch_split, "batch_split", ("auto",))
    parts = _validate.as_int(batch_split, "batch_split")
    if parts < 1:
        raise ValueError(f"batch_split must be 'auto' or an int >= 1, got {parts}")
    return parts


def mixing_layers(apply: Callable[[], Any]) -> list[str]:
    """Layers that would make a split change the step, found by tracing ``apply()`` abstractly.

    Returns the paths of every BatchNorm layer (any class named so) and of every
    Dropout layer that is not :class:`jaxcnn.nn.Dropout` (which alone can draw
    the whole batch's mask for a part).
    """
    found: list[str] = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        kind = type(module).__name__
        if context.method_name == "__call__" and (
            kind == "BatchNorm" or (kind == "Dropout" and not isinstance(module, _Dropout))
        ):
            found.append(f"{'/'.join(module.scope.path) or kind} ({type(module).__module__}.{kind})")
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(apply)
    return found


def part_interceptor(index: int, parts: int) -> Callable:
    """Pass ``batch_part=(index, parts)`` to every :class:`jaxcnn.nn.Dropout` call."""

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and isinstance(context.module, _Dropout):
            kwargs = {**kwargs, "batch_part": (index, parts)}
        return next_fun(*args, **kwargs)

    return interceptor


def split_grad(objective: Callable, params: Any, batch: dict[str, Any], parts: int) -> tuple[Any, Any]:
    """``jax.grad(objective, has_aux=True)`` summed over ``parts`` equal slices of ``batch``.

    ``objective(params, part_batch, index)`` must return ``(value, aux)`` with
    ``aux`` a pytree of arrays whose axis 0 is the part's batch; the returned
    ``aux`` is their concatenation, in batch order.
    """
    n = next(iter(batch.values())).shape[0]
    size = n // parts
    grads, auxes = None, []
    for k in range(parts):
        part = {name: v[k * size : (k + 1) * size] for name, v in batch.items()}
        with nn.intercept_methods(part_interceptor(k, parts)):
            g, aux = jax.grad(objective, has_aux=True)(params, part, k)
        grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
        auxes.append(aux)
    return grads, jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *auxes)
