"""Batch split and gradient accumulation: one step's gradient as a sum over parts of the batch.

.. math::

    \\nabla_\\theta \\frac{\\sum_i w_i \\ell_i}{\\sum_i w_i}
    = \\sum_{k=1}^{p} \\nabla_\\theta \\frac{\\sum_{i \\in \\text{part } k} w_i \\ell_i}{\\sum_i w_i}

Both are transforms of a gradient function (like ``optax.microbatch``): given
``grad_fn(params, batch_stats, part) -> (grads, (outputs, per_example,
batch_stats))`` they return a function of the same signature over the whole
batch, summing the gradients and concatenating the per-example outputs in
batch order.

* :func:`split_grad` (``batch_split``, a speed rule for CPU): the parts are
  computed side by side, so XLA:CPU, which runs each fused kernel on one thread
  but independent kernels concurrently, keeps more cores busy. One part's
  gradient is traced and lowered once, as a nested ``jax.jit`` called per part
  (XLA inlines the calls), which keeps the first call's trace and lowering
  from growing with the number of parts; past :data:`GROUP` parts, groups of
  parts side by side run one after another in a ``lax.scan``, which keeps
  XLA's compile from growing with them too. It is the same
  step only if no layer mixes examples, so models whose layers keep batch
  statistics (BatchNorm) are never split (:func:`mixing_layers`).
* :func:`accumulate_grad` (``grad_accum``, a memory rule): the micro-batches run
  one after another in a ``lax.scan``, so only one is alive at a time. BatchNorm
  layers then normalize each micro-batch by its own statistics and update their
  running averages once per micro-batch, in order -- what a PyTorch loop of
  ``loss.backward()`` over micro-batches followed by one ``optimizer.step()`` does.

Dropout masks stay those of the unsplit batch: :func:`jaxcnn.functional.dropout`
draws row ``i``'s mask from ``fold_in(key, i)``, and every
:class:`jaxcnn.nn.Dropout` of a part is handed the per-example keys of that
part's rows (:func:`part_keys`), so however the batch is cut each example keeps
its mask. ``flax.linen.Dropout`` draws one mask per call and cannot, so it
forbids a split.

When to split (``batch_split="auto"``, :func:`resolve_parts`): strategy "jit" on
a CPU device, parts of :data:`PART_SIZE` examples (the fastest size measured;
see ``benchmarks/results/``), no split below 64 examples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn import _validate
from jaxcnn.functional.cpu_rules import default_conv_algorithm
from jaxcnn.functional.dropout import row_keys
from jaxcnn.nn.dropout import Dropout as _Dropout
from jaxcnn.train.hooks import DROPOUTS, is_call, layer_path, owns_batch_stats

PART_SIZE = 32  # examples per part of the automatic split (benchmarks/results/)
#: At most this many parts: 16 parts ran 1.15-1.26x as fast as 8 / 4 / 2 at batch 512 (cpu-rules.md,
#: "first call").
MAX_PARTS = 16
#: Parts side by side in one iteration of the split's ``lax.scan`` (:func:`group_size`): XLA compiles one
#: group, so the first call does not grow with the parts, and 16 parts ran as fast as written out
#: (cpu-rules.md, "loops").
GROUP = 4
GradFn = Callable[[Any, Any, dict], tuple[Any, tuple]]


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


def check_grad_accum(grad_accum: Any) -> int:
    """An int >= 1, else a ``TypeError``/``ValueError`` naming ``grad_accum``."""
    k = _validate.as_int(grad_accum, "grad_accum")
    if k < 1:
        raise ValueError(f"grad_accum must be an int >= 1 (the number of micro-batches per step), got {k}")
    return k


def mixing_layers(apply: Callable[[], Any]) -> list[str]:
    """Layers that would make a split change the step, found by tracing ``apply()`` abstractly.

    Every layer that keeps its own ``batch_stats`` (BatchNorm, of any class) and
    every Dropout of :data:`jaxcnn.train.hooks.DROPOUTS` other than
    :class:`jaxcnn.nn.Dropout` (which alone takes per-example keys). Only the
    calls matter here, so the trace uses XLA's convolution (one primitive per
    layer) instead of the CPU formulations, which trace more slowly (cpu-rules.md,
    "first call").
    """
    found: list[str] = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        if is_call(context) and (
            owns_batch_stats(module) or (isinstance(module, DROPOUTS) and not isinstance(module, _Dropout))
        ):
            found.append(f"{layer_path(module)} ({type(module).__module__}.{type(module).__name__})")
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record), default_conv_algorithm("xla"):
        jax.eval_shape(apply)
    return found


def resolve_parts(
    batch_split: int | str, batch_size: int, apply: Callable[[], Any], found: list[str] | None = None
) -> int:
    """How many parts a step splits a (per-device) batch of ``batch_size`` into.

    ``"auto"``: :func:`auto_parts`, or 1 when :func:`mixing_layers` finds a layer
    that mixes examples (or ``found``, the model's own list, lists one). An
    explicit ``k > 1`` must divide the batch, and such a model is an error.
    """
    if batch_split == 1:
        return 1
    if isinstance(batch_split, str):  # "auto", the only string check_batch_split allows
        parts = auto_parts(batch_size)
        return 1 if parts == 1 or (found if found is not None else mixing_layers(apply)) else parts
    if batch_size % batch_split:
        raise ValueError(f"batch_split={batch_split} must divide the (per-device) batch size {batch_size}")
    found = found if found is not None else mixing_layers(apply)
    if found:
        raise ValueError(
            f"batch_split={batch_split} would change this model's step: layers {found} mix the examples of a "
            f"batch (BatchNorm statistics would become per part; only jaxcnn.nn.Dropout can draw the whole "
            f"batch's mask for a part); use batch_split=1 or 'auto'"
        )
    return batch_split


def _dropout_training(module: _Dropout, args: tuple, kwargs: dict) -> bool:
    """Whether this :class:`jaxcnn.nn.Dropout` call draws a mask (the module's own rule)."""
    deterministic = nn.merge_param(
        "deterministic", module.deterministic, args[1] if len(args) > 1 else kwargs.get("deterministic")
    )
    return not deterministic and module.rate > 0


@contextlib.contextmanager
def part_keys(first_row: Any) -> Iterator[None]:
    """Hand every :class:`jaxcnn.nn.Dropout` of a part the per-example keys of its rows.

    ``first_row`` is the part's first row in the batch the unsplit step would
    see (an int or a traced int; under ``pmap``/``shard_map`` the device's
    offset ``axis_index * rows_per_device`` included), so the part's rows draw
    the masks they would draw in the whole batch.
    """

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if (
            is_call(context)
            and isinstance(module, _Dropout)
            and kwargs.get("rng") is None
            and _dropout_training(module, args, kwargs)
        ):
            x = args[0] if args else kwargs["x"]
            key = module.make_rng(module.rng_collection)
            axes = _validate.axes_arg(module.broadcast_axes, x.ndim, "broadcast_axes")
            kwargs = {**kwargs, "rng": key if 0 in axes else row_keys(key, x.shape[0], first_row)}
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        yield


def _rows(batch: dict) -> int:
    return next(iter(batch.values())).shape[0]


def _first_row(axis_name: str | None, rows: int) -> Any:
    return 0 if axis_name is None else lax.axis_index(axis_name) * rows


def split_grad(grad_fn: GradFn, parts: int, axis_name: str | None = None) -> GradFn:
    """``grad_fn`` over ``parts`` equal consecutive slices of the batch, in groups side by side, summed.

    ``grad_fn`` of one part is wrapped in ``jax.jit`` (with the part's first
    row as a traced argument, for :func:`part_keys`): it is traced and lowered
    once however many parts there are, and XLA inlines its calls. The parts
    run :func:`group_size` at a time side by side, the groups one after
    another in a ``lax.scan``, so XLA compiles one group however many there
    are. The gradients are added part after part, in batch order.

    Returns ``(sum of grads, (outputs, per_example, batch_stats))`` with the
    outputs in batch order; ``batch_stats`` are passed through (a split model
    keeps none).
    """
    if parts == 1:
        return grad_fn

    def one_part(params, batch_stats, part, first_row):
        with part_keys(first_row):
            return grad_fn(params, batch_stats, part)

    part_grad = jax.jit(one_part)  # traced and lowered once, called per part; XLA inlines the calls
    group = group_size(parts)

    def side_by_side(params, batch_stats, grads, chunk, first):
        """One group: ``chunk`` holds ``group`` parts ``(group, size, ...)`` from row ``first``; grads added."""
        size, outs = next(iter(chunk.values())).shape[1], []
        for k in range(group):
            part = {name: v[k] for name, v in chunk.items()}
            g, (out, per_example, _) = part_grad(params, batch_stats, part, jnp.asarray(first + k * size, jnp.int32))
            grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
            outs.append((out, per_example))
        return grads, jax.tree.map(lambda *a: jnp.stack(a), *outs)

    def split(params, batch_stats, batch):
        n = _rows(batch)
        first, steps = _first_row(axis_name, n), parts // group
        if steps == 1:
            chunk = {name: v.reshape((group, n // group) + v.shape[1:]) for name, v in batch.items()}
            grads, outs = side_by_side(params, batch_stats, None, chunk, first)
            outs = jax.tree.map(lambda a: a.reshape((n,) + a.shape[2:]), outs)
        else:

            def body(grads, inputs):
                i, chunk = inputs
                return side_by_side(params, batch_stats, grads, chunk, first + i * (n // steps))

            zeros = jax.tree.map(jnp.zeros_like, params)
            grads, outs = scan_row_blocks(body, zeros, batch, steps, group)
        out, per_example = outs
        return grads, (out, per_example, batch_stats)

    return split


def scan_row_blocks(body: Callable, init: Any, batch: dict, steps: int, parts: int = 1) -> tuple[Any, Any]:
    """``lax.scan`` of ``body(carry, (i, block))`` over ``steps`` equal consecutive row blocks of ``batch``.

    Block ``i`` holds rows ``i * n / steps`` to ``(i + 1) * n / steps``, as
    ``(rows, ...)`` or, with ``parts > 1``, cut into ``(parts, rows / parts,
    ...)`` (reshaped before the loop: XLA fuses the loop body differently when
    the body reshapes its block itself). The per-row outputs ``body`` returns
    for its block, in the block's shape, come back as one batch in row order.
    Returns ``(carry, outputs)``. The one loop of :func:`split_grad` (its
    groups) and :func:`accumulate_grad` (its micro-batches).
    """
    n = _rows(batch)
    lead = (steps, n // steps) if parts == 1 else (steps, parts, n // (steps * parts))
    blocks = {name: v.reshape(lead + v.shape[1:]) for name, v in batch.items()}
    carry, outs = lax.scan(body, init, (jnp.arange(steps), blocks))
    return carry, jax.tree.map(lambda a: a.reshape((n,) + a.shape[len(lead) :]), outs)


def group_size(parts: int) -> int:
    """Parts side by side per iteration of the split's loop: the largest divisor of ``parts`` up to :data:`GROUP`.

    ``parts`` itself (no loop) when that is at most :data:`GROUP` or when no
    divisor between 2 and :data:`GROUP` exists.
    """
    if parts <= GROUP:
        return parts
    group = max(d for d in range(1, GROUP + 1) if parts % d == 0)
    return parts if group == 1 else group


def accumulate_grad(grad_fn: GradFn, micro_batches: int, axis_name: str | None = None) -> GradFn:
    """``grad_fn`` over ``micro_batches`` equal slices, one after another in a ``lax.scan``, summed.

    ``batch_stats`` are threaded through the micro-batches in order (see the
    module docstring). The batch must divide evenly.
    """
    if micro_batches == 1:
        return grad_fn

    def accumulate(params, batch_stats, batch):
        n = _rows(batch)
        if n % micro_batches:
            raise ValueError(f"grad_accum={micro_batches} must divide the (per-device) batch size {n}")
        size, first = n // micro_batches, _first_row(axis_name, n)

        def one(carry, inputs):
            grads, stats = carry
            k, part = inputs
            with part_keys(first + k * size):
                g, (out, per_example, stats) = grad_fn(params, stats, part)
            return (jax.tree.map(jnp.add, grads, g), stats), (out, per_example)

        zeros = jax.tree.map(jnp.zeros_like, params)
        (grads, stats), (out, per_example) = scan_row_blocks(one, (zeros, batch_stats), batch, micro_batches)
        return grads, (out, per_example, stats)

    return accumulate
