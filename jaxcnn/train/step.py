"""Compiled train and eval steps: one pure step body, three ways to place it on devices.

============ ==================================================================
"jit"        one device: ``jax.jit(step)``.
"sharded"    ``jax.jit`` over a 1-D ``Mesh`` of all devices: the batch is split
             along the mesh's "data" axis (``NamedSharding``), state replicated;
             XLA inserts the collectives. The math is literally the
             single-device program, so it equals "jit" on the same global batch.
"pmap"       ``jax.pmap`` with ``axis_name``: each device runs the step on its
             shard; gradients and metrics are summed with ``lax.psum``, and
             BatchNorm/Dropout layers built with the same ``axis_name`` use global
             batch statistics and global-batch dropout masks.
============ ==================================================================

A batch is a dict ``{"x": (B, ...), "y": (B, ...), "weight": (B,) optional}``.
The loss is the weighted mean ``sum_i w_i l_i / sum_i w_i`` over the *global*
batch (weights default to 1; a padded example has weight 0), so every strategy
and any split of the batch optimize the same number.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcnn.functional import _args
from jaxcnn.train.losses import LossFn, accuracy, get_loss
from jaxcnn.train.state import TrainState

STRATEGIES = ("jit", "pmap", "sharded")
DATA_AXIS = "data"
Batch = dict[str, Any]


def default_strategy() -> str:
    """``"sharded"`` when more than one device is visible, else ``"jit"`` (see DESIGN.md)."""
    return "sharded" if jax.device_count() > 1 else "jit"


def _psum(x: Any, axis_name: str | None) -> Any:
    return x if axis_name is None else lax.psum(x, axis_name)


def _weights(batch: Batch) -> jnp.ndarray:
    x = batch["x"]
    w = batch.get("weight")
    return jnp.ones((x.shape[0],), jnp.float32) if w is None else w.astype(jnp.float32)


def _weighted_metrics(logits, y, per_example_loss, w, count, axis_name) -> dict[str, jnp.ndarray]:
    """Global weighted means of the loss and, for integer labels, the accuracy."""
    metrics = {"loss": _psum(jnp.sum(w * per_example_loss), axis_name) / count}
    if jnp.issubdtype(y.dtype, jnp.integer) and logits.ndim == y.ndim + 1:
        metrics["accuracy"] = _psum(jnp.sum(w * accuracy(logits, y)), axis_name) / count
    return metrics


def _check_collective_layers(axis_name: str) -> Callable:
    """A Flax method interceptor: every BatchNorm/Dropout must use ``axis_name`` under pmap.

    Without it BatchNorm would normalize by per-device statistics and every
    device would draw the same dropout mask, silently changing the model.
    """

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        kind = type(module).__name__
        if context.method_name == "__call__" and kind in ("BatchNorm", "Dropout"):
            if getattr(module, "axis_name", None) != axis_name:
                raise ValueError(
                    f"strategy='pmap' needs every {kind} layer built with axis_name={axis_name!r}, "
                    f"but layer {'/'.join(module.scope.path) or kind!r} has "
                    f"axis_name={getattr(module, 'axis_name', None)!r}; build the model with "
                    f"axis_name={axis_name!r} (e.g. get_model(name, axis_name={axis_name!r})), "
                    f"or use strategy='sharded', which needs no axis names"
                )
        return next_fun(*args, **kwargs)

    return interceptor


def train_step_body(
    model: nn.Module, loss_fn: LossFn, axis_name: str | None = None, augment: Callable | None = None
) -> Callable:
    """The pure single-step function ``(state, batch) -> (state, metrics)``.

    ``grad = d/dparams [sum_i w_i l_i(params) / sum_i w_i]`` over the global batch
    (with ``axis_name``: each device's part, then ``psum``); one optimizer
    update; the ``batch_stats`` collection replaced by the model's update.
    Dropout draws from ``state.step_key()``; ``augment(key, x)``, if given,
    transforms the inputs first with ``fold_in(step_key, 1)`` (under pmap also
    folded with the device index, so devices augment differently).
    """

    def body(state: TrainState, batch: Batch):
        x, y = batch["x"], batch["y"]
        if augment is not None:
            key = jax.random.fold_in(state.step_key(), 1)
            if axis_name is not None:
                key = jax.random.fold_in(key, lax.axis_index(axis_name))
            x = augment(key, x)
        w = _weights(batch)
        count = jnp.maximum(_psum(jnp.sum(w), axis_name), 1e-12)

        def objective(params):
            variables = {**state.variables(), "params": params}
            mutable = ["batch_stats"] if state.batch_stats else False
            out = model.apply(variables, x, train=True, rngs={"dropout": state.step_key()}, mutable=mutable)
            logits, updates = out if mutable else (out, {})
            per_example = loss_fn(logits, y)
            return jnp.sum(w * per_example) / count, (logits, per_example, updates)

        if axis_name is None:
            grads, aux = jax.grad(objective, has_aux=True)(state.params)
        else:
            with nn.intercept_methods(_check_collective_layers(axis_name)):
                grads, aux = jax.grad(objective, has_aux=True)(state.params)
            grads = lax.psum(grads, axis_name)
        logits, per_example, updates = aux
        new_state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))
        return new_state, _weighted_metrics(logits, y, per_example, w, count, axis_name)

    return body


def eval_step_body(model: nn.Module, loss_fn: LossFn, axis_name: str | None = None) -> Callable:
    """``(state, batch) -> sums``: weighted sums of loss and accuracy and the weight total.

    Sums (not means) so that :func:`jaxcnn.train.evaluate` can add batches of any
    size, padded ones included, and divide once at the end.
    """

    def body(state: TrainState, batch: Batch):
        x, y = batch["x"], batch["y"]
        w = _weights(batch)
        logits = model.apply(state.variables(), x, train=False)
        sums = {"count": _psum(jnp.sum(w), axis_name), "loss": _psum(jnp.sum(w * loss_fn(logits, y)), axis_name)}
        if jnp.issubdtype(y.dtype, jnp.integer) and logits.ndim == y.ndim + 1:
            sums["accuracy"] = _psum(jnp.sum(w * accuracy(logits, y)), axis_name)
        return sums

    return body


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the state and the batches of one strategy live.

    ``place_state``/``place_batch`` move host values onto the devices,
    ``fetch_state`` returns one ordinary copy of the state (for checkpoints,
    evaluation with another strategy, export).
    """

    strategy: str
    devices: tuple
    steps_per_call: int = 1

    @property
    def mesh(self) -> Mesh:
        return Mesh(np.asarray(self.devices), (DATA_AXIS,))

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def _check_batch_size(self, n: int) -> None:
        if self.strategy != "jit" and n % self.num_devices:
            raise ValueError(
                f"batch size {n} must be divisible by the number of devices ({self.num_devices}) "
                f"for strategy={self.strategy!r}; pick a multiple of {self.num_devices} or use "
                f"pad_remainder/drop_remainder for the last batch"
            )

    def place_state(self, state: Any) -> Any:
        """A placed *copy* of ``state``: a donating step never invalidates the caller's state."""
        if self.strategy == "jit":
            return jax.device_put(state, self.devices[0], may_alias=False)
        if self.strategy == "sharded":
            return jax.device_put(state, NamedSharding(self.mesh, P()), may_alias=False)
        n = self.num_devices
        stacked = NamedSharding(self.mesh, P(DATA_AXIS))
        return jax.tree.map(lambda a: jax.device_put(np.broadcast_to(np.asarray(a), (n, *np.shape(a))), stacked), state)

    def place_batch(self, batch: Batch) -> Batch:
        """Host arrays ``(B, ...)`` (or ``(k, B, ...)`` with ``steps_per_call=k``) onto the devices."""
        lead = 1 if self.steps_per_call > 1 else 0
        sizes = {np.shape(v)[lead] for v in batch.values()}
        if len(sizes) != 1:
            raise ValueError(f"all batch entries must have the same batch size, got sizes {sorted(sizes)}")
        self._check_batch_size(sizes.pop())
        if self.strategy == "jit":
            return jax.device_put(batch, self.devices[0])
        spec = P(None, DATA_AXIS) if lead else P(DATA_AXIS)
        if self.strategy == "sharded":
            return jax.device_put(batch, NamedSharding(self.mesh, spec))
        n = self.num_devices

        def split(a):  # (…, B, …) -> (n, …, B / n, …): the device axis first
            a = np.asarray(a)
            a = a.reshape(a.shape[:lead] + (n, a.shape[lead] // n) + a.shape[lead + 1 :])
            return np.moveaxis(a, lead, 0)

        return jax.device_put(jax.tree.map(split, batch), NamedSharding(self.mesh, P(DATA_AXIS)))

    def fetch_state(self, state: Any) -> Any:
        if self.strategy == "pmap":
            return jax.tree.map(lambda a: a[0], state)
        return state

    def fetch_metrics(self, metrics: Any) -> dict[str, np.ndarray]:
        """Metrics as host NumPy values; ``(k,)`` per-step arrays with ``steps_per_call=k``."""
        metrics = jax.device_get(metrics)
        if self.strategy == "pmap":
            metrics = jax.tree.map(lambda a: a[0], metrics)
        return {k: np.asarray(v) for k, v in metrics.items()}


@dataclasses.dataclass(frozen=True)
class CompiledStep:
    """A compiled step with its :class:`Placement`: ``step(placed_state, placed_batch)``."""

    fn: Callable
    placement: Placement

    def __call__(self, state: Any, batch: Batch) -> Any:
        return self.fn(state, batch)

    def __getattr__(self, name: str) -> Any:  # place_state, place_batch, fetch_state, ...
        return getattr(self.placement, name)


def _resolve(strategy: str | None, devices: Any, steps_per_call: Any) -> Placement:
    strategy = default_strategy() if strategy is None else _args.check_choice(strategy, "strategy", STRATEGIES)
    devices = tuple(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device")
    k = _args.as_int(steps_per_call, "steps_per_call")
    if k < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {k}")
    return Placement(strategy, devices[:1] if strategy == "jit" else devices, k)


def _compile(body_for_axis: Callable[[str | None], Callable], placement: Placement, *, donate: bool, multi: Callable | None):
    """jit/pmap the body built by ``body_for_axis(axis_name)`` for ``placement``."""
    donate_argnums = (0,) if donate else ()
    if placement.strategy == "pmap":
        body = body_for_axis(DATA_AXIS)
        fn = body if multi is None else multi(body)
        return jax.pmap(fn, axis_name=DATA_AXIS, devices=placement.devices, donate_argnums=donate_argnums)
    body = body_for_axis(None)
    fn = body if multi is None else multi(body)
    if placement.strategy == "jit":
        return jax.jit(fn, donate_argnums=donate_argnums)
    mesh = placement.mesh
    data = NamedSharding(mesh, P(None, DATA_AXIS) if multi is not None else P(DATA_AXIS))
    replicated = NamedSharding(mesh, P())
    return jax.jit(fn, in_shardings=(replicated, data), out_shardings=replicated, donate_argnums=donate_argnums)


def make_train_step(
    model: nn.Module,
    loss_fn: str | LossFn = "cross_entropy",
    strategy: str | None = "jit",
    *,
    steps_per_call: int = 1,
    devices: Any = None,
    donate: bool = True,
    unroll: bool | int = True,
    augment: Callable | None = None,
) -> CompiledStep:
    """Compile a training step for one device, data-parallel pmap, or a sharded mesh.

    Args:
      model: a Flax module called as ``model.apply(variables, x, train=True,
        rngs={"dropout": key}, mutable=["batch_stats"])``. With
        ``strategy="pmap"``, its BatchNorm and Dropout layers must be built with
        ``axis_name="data"`` (the step checks, and says so if not).
      loss_fn: a per-example loss ``(outputs, targets) -> (B,)`` or its name
        ("cross_entropy", "mse"); see :mod:`jaxcnn.train.losses`.
      strategy: "jit", "pmap", "sharded" (see the module docstring), or
        ``None`` for "sharded" on several devices and "jit" on one.
      steps_per_call: run k steps in one dispatch. The batch then has a
        leading axis of k, ``(k, B, ...)``, and the returned metrics are
        ``(k,)`` per-step values; the result equals k single steps.
      devices: the devices to use (default: all).
      donate: donate the input state's buffers (the state passed in is then
        invalid; use the returned one).
      unroll: for ``steps_per_call > 1``, the ``lax.scan`` unroll factor; the
        default ``True`` unrolls fully, which XLA:CPU runs faster than a loop.
      augment: ``augment(key, x) -> x``, pure JAX, applied to the inputs inside
        the step (see :func:`train_step_body`).

    Returns:
      A :class:`CompiledStep`: ``state, metrics = step(state, batch)`` on
      *placed* values: use ``step.place_state(state)`` once and
      ``step.place_batch(batch)`` per batch, ``step.fetch_state(state)`` to get
      an ordinary copy back and ``step.fetch_metrics(metrics)`` for host numbers.

    Example:
      >>> step = make_train_step(model, "cross_entropy", "sharded")    # doctest: +SKIP
      >>> state = step.place_state(state)                               # doctest: +SKIP
      >>> state, m = step(state, step.place_batch({"x": x, "y": y}))    # doctest: +SKIP
    """
    placement = _resolve(strategy, devices, steps_per_call)
    fn = _cached(_compiled_train_step, model, get_loss(loss_fn), placement, donate, unroll, augment)
    return CompiledStep(fn, placement)


def _compiled_train_step(model, loss_fn, placement, donate, unroll, augment) -> Callable:
    multi = None
    if placement.steps_per_call > 1:
        def multi(body):
            return lambda state, batches: lax.scan(body, state, batches, unroll=unroll)

    return _compile(lambda axis: train_step_body(model, loss_fn, axis, augment), placement, donate=donate, multi=multi)


def _compiled_eval_step(model, loss_fn, placement) -> Callable:
    return _compile(lambda axis: eval_step_body(model, loss_fn, axis), placement, donate=False, multi=None)


@functools.lru_cache(maxsize=64)
def _cached_call(builder: Callable, *key: Any) -> Callable:
    return builder(*key)


def _cached(builder: Callable, *key: Any) -> Callable:
    """``builder(*key)``, memoized when the key is hashable.

    Flax modules, loss functions and placements hash by value, so building the
    same step twice (two ``fit`` calls on one model) returns the same jitted
    function and JAX reuses its compilation instead of compiling again.
    """
    try:
        hash(key)
    except TypeError:
        return builder(*key)
    return _cached_call(builder, *key)


def make_eval_step(
    model: nn.Module, loss_fn: str | LossFn = "cross_entropy", strategy: str | None = "jit", *, devices: Any = None
) -> CompiledStep:
    """Compile an evaluation step returning weighted sums (see :func:`eval_step_body`)."""
    placement = _resolve(strategy, devices, 1)
    return CompiledStep(_cached(_compiled_eval_step, model, get_loss(loss_fn), placement), placement)
