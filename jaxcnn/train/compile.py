"""Compilation: a step body jitted, pmapped or shard_mapped for its :class:`Placement`, and cached.

A :class:`CompiledStep` holds a *body builder* ``body_for(axis_name)`` and a
:class:`~jaxcnn.train.placement.Placement`. Calling it compiles (once per set
of compiler options) and runs the step::

    step(placed_state, placed_batch)
      -> CompiledStep.fn_for(state)       the jitted function for this state
        -> compile_step(...)              jit / pmap / shard_map of
          -> body_for(axis_name)          the pure step body (:mod:`jaxcnn.train.step`)

On CPU a step is compiled with the XLA options its state's convolution
kernels call for (:func:`jaxcnn.functional.cpu_compiler_options`, the one
place that rule lives; a user's own ``jax.jit`` gets the same options from
it). Compiled functions are cached by value (model, loss, placement,
options): building the same step twice reuses JAX's compilation.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcnn import _validate
from jaxcnn.functional import cpu_compiler_options
from jaxcnn.train.partition import DATA_AXIS
from jaxcnn.train.placement import Batch, Placement

BodyFor = Callable[[str | None], Callable]


#: ``lax.scan``'s unroll for ``steps_per_call > 1``: a loop of one step (cpu-rules.md, "loops").
DEFAULT_UNROLL = 1


def _scan_steps(body: Callable, unroll: bool | int) -> Callable:
    """``k`` steps in one call: ``(state, batches (k, B, ...)) -> (state, metrics (k,))``."""
    return lambda state, batches: lax.scan(body, state, batches, unroll=unroll)


def compile_step(
    body_for: BodyFor,
    placement: Placement,
    *,
    donate: bool,
    unroll: bool | int = DEFAULT_UNROLL,
    options: tuple = (),
    per_example: bool = False,
) -> Callable:
    """jit/pmap/shard_map the body built by ``body_for(axis_name)`` for ``placement``.

    With ``placement.steps_per_call > 1`` the body runs ``k`` times in a
    ``lax.scan``, a loop of one step by default: it compiles like one step and
    ran as fast as the ``k`` steps inlined or faster on XLA:CPU, except in the
    BatchNorm models, a little slower (cpu-rules.md, "loops").

    "shard_map" uses ``check_vma=False``: the body is pmap's, which sums the
    per-device gradients itself with ``lax.psum``. With JAX's varying-axis
    typing on (``check_vma=True``) the replicated parameters would be marked
    invariant, the transpose of their implicit broadcast would already sum the
    gradients over devices, and the explicit ``psum`` would count them ``n``
    times. This is also how ``jax.pmap`` itself is lowered onto ``shard_map``.

    ``per_example``: the body returns per-example outputs (prediction), which
    stay split along "data" like the batch instead of being replicated.
    """
    multi = placement.steps_per_call > 1
    donate_argnums = (0,) if donate else ()
    jit = functools.partial(jax.jit, donate_argnums=donate_argnums, compiler_options=dict(options) or None)
    per_device = placement.strategy in ("pmap", "shard_map")
    body = body_for(DATA_AXIS if per_device else None)
    fn = _scan_steps(body, unroll) if multi else body
    if placement.strategy == "pmap":
        return jax.pmap(fn, axis_name=DATA_AXIS, devices=placement.devices, donate_argnums=donate_argnums)
    if placement.strategy == "jit":
        return jit(fn)
    mesh = placement.mesh
    data_spec = P(None, DATA_AXIS) if multi else P(DATA_AXIS)
    if placement.strategy == "shard_map":
        out_spec = data_spec if per_example else P()
        return jit(jax.shard_map(fn, mesh=mesh, in_specs=(P(), data_spec), out_specs=out_spec, check_vma=False))
    data = NamedSharding(mesh, data_spec)
    if placement.model_parallel == 1:
        replicated = NamedSharding(mesh, P())
        return jit(fn, in_shardings=(replicated, data), out_shardings=data if per_example else replicated)

    def constrained(state, batch):
        """The state's shardings depend on its shapes (:func:`param_sharding`), so they are
        set here, on the traced values, instead of as jit arguments fixed in advance."""
        state = lax.with_sharding_constraint(state, placement.state_sharding(state))
        out = fn(state, lax.with_sharding_constraint(batch, data))
        return out if per_example else lax.with_sharding_constraint(out, placement.state_sharding(out))

    return jit(constrained)


@functools.lru_cache(maxsize=64)
def _cached_compile(
    body_key: tuple, placement: Placement, donate: bool, unroll: Any, options: tuple, per_example: bool
) -> Callable:
    builder, *args = body_key
    return compile_step(
        lambda axis: builder(*args, axis),
        placement,
        donate=donate,
        unroll=unroll,
        options=options,
        per_example=per_example,
    )


def unroll_count(unroll: Any, steps_per_call: int) -> int:
    """``unroll`` as the number of steps per loop iteration: ``True`` -> ``steps_per_call``, ``False`` -> 1.

    One spelling per meaning, so that the compilation cache, which compares
    keys with ``==``, never takes ``unroll=1`` (a loop) for ``unroll=True``
    (``True == 1`` in Python). A ``TypeError``/``ValueError`` naming
    ``unroll`` for anything but a bool or an int >= 1.
    """
    if isinstance(unroll, (bool, np.bool_)):
        return steps_per_call if unroll else 1
    return min(_validate.as_int(unroll, "unroll", minimum=1), steps_per_call)


@dataclasses.dataclass(frozen=True)
class CompiledStep:
    """A compiled step and its :class:`Placement`: ``step(placed_state, placed_batch)``.

    Attributes:
      body_key: ``(builder, *args)``; the body for an axis name is
        ``builder(*args, axis_name)``. Hashable args (Flax modules, loss
        functions, ints) make the compilation cached across equal steps.
      placement: where state and batches live; ``place_state``,
        ``place_batch``, ``fetch_state``, ``fetch_metrics`` and
        ``process_rows`` below are its methods.
      donate: donate the state's buffers to the step.
      unroll: the ``lax.scan`` unroll of ``steps_per_call > 1`` (1: a loop
        of one step; ``True``: all steps inlined), kept as a step count
        (:func:`unroll_count`).
      per_example: the body returns per-example outputs, split like the batch.
    """

    body_key: tuple
    placement: Placement
    donate: bool = True
    unroll: Any = DEFAULT_UNROLL
    per_example: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "unroll", unroll_count(self.unroll, self.placement.steps_per_call))

    def fn_for(self, state: Any) -> Callable:
        """The jitted (or pmapped) function that ``step(state, batch)`` calls for this state."""
        options: tuple = ()
        if self.placement.devices[0].platform == "cpu" and self.placement.strategy != "pmap":
            params = state["params"] if isinstance(state, dict) else state.params
            options = tuple(sorted((cpu_compiler_options(params) or {}).items()))
        key = (self.body_key, self.placement, self.donate, self.unroll, options, self.per_example)
        try:
            hash(key)
        except TypeError:  # an unhashable model or loss: compile afresh
            return _cached_compile.__wrapped__(*key)
        return _cached_compile(*key)

    @property
    def fn(self) -> Callable:
        """The function compiled with XLA's default options (a state without large kernels)."""
        return self.fn_for({"params": {}})

    def __call__(self, state: Any, batch: Batch) -> Any:
        return self.fn_for(state)(state, batch)

    # The placement's methods, spelled out: a step is used with the state and batches it places.
    @property
    def strategy(self) -> str:
        return self.placement.strategy

    @property
    def num_devices(self) -> int:
        return self.placement.num_devices

    @property
    def data_parallel(self) -> int:
        return self.placement.data_parallel

    def place_state(self, state: Any) -> Any:
        return self.placement.place_state(state)

    def place_batch(self, batch: Batch, *, global_size: int | None = None) -> Batch:
        return self.placement.place_batch(batch, global_size=global_size)

    def fetch_state(self, state: Any) -> Any:
        return self.placement.fetch_state(state)

    def fetch_metrics(self, metrics: Any) -> dict[str, np.ndarray]:
        return self.placement.fetch_metrics(metrics)

    def process_rows(self, batch_size: int) -> slice:
        return self.placement.process_rows(batch_size)
