"""Compiled train and eval steps: one pure step body, four ways to place it on devices.

============ ==================================================================
"jit"        one device: ``jax.jit(step)``.
"sharded"    ``jax.jit`` over a ``Mesh`` of all devices: the batch is split
             along the mesh's "data" axis (``NamedSharding``), state replicated;
             XLA inserts the collectives. The math is literally the
             single-device program, so it equals "jit" on the same global batch.
             With ``model_parallel=k`` the mesh is ``("data", "model")`` of
             ``n/k x k`` devices and large kernels (and their optimizer moments)
             are split over "model" (:mod:`jaxcnn.train.partition`).
"pmap"       ``jax.pmap`` with ``axis_name``: each device runs the step on its
             shard; gradients and metrics are summed with ``lax.psum``, and
             BatchNorm/Dropout layers built with the same ``axis_name`` use global
             batch statistics and global-batch dropout masks.
"shard_map"  ``jax.jit(jax.shard_map(step))`` over the 1-D "data" mesh: the
             explicit per-device program of "pmap" (same body, same
             ``axis_name="data"`` requirement on the model) with jit's
             placement -- global ``jax.Array`` in and out, no stacked device axis.
============ ==================================================================

A batch is a dict ``{"x": (B, ...), "y": (B, ...), "weight": (B,) optional}``.
The loss is the weighted mean ``sum_i w_i l_i / sum_i w_i`` over the *global*
batch (weights default to 1; a padded example has weight 0), so every strategy
and any split of the batch optimize the same number. When a batch carries
``"weight"``, every BatchNorm layer also computes its training statistics over
the rows with ``weight > 0`` only (see :func:`train_step_body`), so a padded
batch trains exactly as its real rows alone.

Several processes (``jax.distributed``, :mod:`jaxcnn.train.distributed`): the
"sharded", "shard_map" and "pmap" steps span the devices of every process;
each process passes the same global batch (or only its own rows) to
:meth:`Placement.place_batch`, which transfers just the rows its devices hold.
"jit" stays on one local device of each process.
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

from jaxcnn import _validate
from jaxcnn.functional.conv import cpu_compiler_options
from jaxcnn.nn.norm import BatchNorm as _BatchNorm
from jaxcnn.train.distributed import host_copy
from jaxcnn.train.losses import LossFn, accuracy, get_loss
from jaxcnn.train.partition import DATA_AXIS, DEFAULT_MIN_SIZE, make_mesh, param_sharding
from jaxcnn.train.split import auto_parts, check_batch_split, mixing_layers, split_grad
from jaxcnn.train.state import TrainState

STRATEGIES = ("jit", "pmap", "sharded", "shard_map")
#: Strategies whose step body runs per device with ``axis_name="data"``.
PER_DEVICE = ("pmap", "shard_map")
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


def _layer_interceptor(axis_name: str | None, mask: jnp.ndarray | None) -> Callable:
    """A Flax method interceptor over the BatchNorm and Dropout layers of any model.

    * ``axis_name`` (per-device strategies): every BatchNorm/Dropout must be
      built with it. Without it BatchNorm would normalize by per-device
      statistics and every device would draw the same dropout mask, silently
      changing the model.
    * ``mask`` ``(B,)`` boolean: passed as ``mask=`` to every training-mode
      BatchNorm (:class:`jaxcnn.nn.BatchNorm`, or ``flax.linen.BatchNorm`` with
      the mask reshaped to broadcast), so its statistics skip the padded rows.
      Injecting it here, rather than threading a mask argument through every
      model's ``__call__``, makes all models -- the zoo and users' own --
      pad-exact without changing them. A layer that already receives a
      ``mask`` from its model keeps it.
    """

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        kind = type(module).__name__
        if context.method_name != "__call__" or kind not in ("BatchNorm", "Dropout"):
            return next_fun(*args, **kwargs)
        where = "/".join(module.scope.path) or kind
        if axis_name is not None and getattr(module, "axis_name", None) != axis_name:
            raise ValueError(
                f"strategies {PER_DEVICE} need every {kind} layer built with axis_name={axis_name!r}, "
                f"but layer {where!r} has axis_name={getattr(module, 'axis_name', None)!r}; build the model "
                f"with axis_name={axis_name!r} (e.g. get_model(name, axis_name={axis_name!r})), "
                f"or use strategy='sharded', which needs no axis names"
            )
        if mask is not None and kind == "BatchNorm" and kwargs.get("mask") is None:
            x = args[0] if args else kwargs["x"]
            if not isinstance(module, (_BatchNorm, nn.BatchNorm)):
                raise ValueError(
                    f"the batch carries 'weight' (padded rows), but BatchNorm layer {where!r} is a "
                    f"{type(module).__module__}.{kind}, which jaxcnn cannot mask; use jaxcnn.nn.BatchNorm or "
                    f"flax.linen.BatchNorm, or train on full batches only (drop the remainder)"
                )
            if x.shape[0] != mask.shape[0]:
                raise ValueError(
                    f"BatchNorm layer {where!r} sees {x.shape[0]} rows but the batch has {mask.shape[0]}; "
                    f"a padded batch ('weight') can only be masked when BatchNorm inputs keep the batch axis first"
                )
            m = mask if isinstance(module, _BatchNorm) else mask.reshape(mask.shape + (1,) * (x.ndim - 1))
            kwargs = {**kwargs, "mask": m}
        return next_fun(*args, **kwargs)

    return interceptor


def train_step_body(
    model: nn.Module,
    loss_fn: LossFn,
    axis_name: str | None = None,
    augment: Callable | None = None,
    batch_split: int | str = 1,
) -> Callable:
    """The pure single-step function ``(state, batch) -> (state, metrics)``.

    ``grad = d/dparams [sum_i w_i l_i(params) / sum_i w_i]`` over the global batch
    (with ``axis_name``: each device's part, then ``psum``); one optimizer
    update; the ``batch_stats`` collection replaced by the model's update.
    If the batch carries ``"weight"``, BatchNorm layers see ``mask = weight >
    0`` (:func:`_layer_interceptor`): their statistics and running averages
    are those of the real rows, so padding a batch changes nothing.
    Dropout draws from ``state.step_key()``; ``augment(key, x)``, if given,
    transforms the inputs first with ``fold_in(step_key, 1)`` (under pmap also
    folded with the device index, so devices augment differently).
    ``batch_split``: compute the gradient as a sum over that many parts of the
    (per-device) batch, or ``"auto"`` (:mod:`jaxcnn.train.split`).
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
        mutable = ["batch_stats"] if state.batch_stats else False
        dropout_key = state.step_key()

        def apply(params, inputs):
            variables = {**state.variables(), "params": params}
            out = model.apply(variables, inputs, train=True, rngs={"dropout": dropout_key}, mutable=mutable)
            return out if mutable else (out, {})

        def objective(params, part, index=0):
            logits, updates = apply(params, part["x"])
            per_example = loss_fn(logits, part["y"])
            return jnp.sum(part["w"] * per_example) / count, (logits, per_example, updates)

        data = {"x": x, "y": y, "w": w}
        parts = _split_parts(batch_split, x.shape[0], bool(state.batch_stats), lambda: apply(state.params, x))
        mask = batch["weight"] > 0 if "weight" in batch else None
        if parts > 1:
            with nn.intercept_methods(_layer_interceptor(axis_name, None)):
                grads, aux = split_grad(objective, state.params, data, parts)
        elif axis_name is None and mask is None:
            grads, aux = jax.grad(objective, has_aux=True)(state.params, data)
        else:
            with nn.intercept_methods(_layer_interceptor(axis_name, mask)):
                grads, aux = jax.grad(objective, has_aux=True)(state.params, data)
        if axis_name is not None:
            grads = lax.psum(grads, axis_name)
        logits, per_example, updates = aux
        new_state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))
        return new_state, _weighted_metrics(logits, y, per_example, w, count, axis_name)

    return body


def _split_parts(batch_split: int | str, batch_size: int, has_batch_stats: bool, apply: Callable) -> int:
    """How many parts :func:`train_step_body` splits a batch into (:mod:`jaxcnn.train.split`).

    ``"auto"``: :func:`~jaxcnn.train.split.auto_parts`, or 1 when the model has
    BatchNorm statistics or a layer that mixes examples. An explicit ``k > 1``
    must divide the batch, and such a model is an error.
    """
    if batch_split == 1:
        return 1
    if batch_split == "auto":
        parts = auto_parts(batch_size)
        if parts == 1 or has_batch_stats or mixing_layers(apply):
            return 1
        return parts
    if batch_size % batch_split:
        raise ValueError(f"batch_split={batch_split} must divide the (per-device) batch size {batch_size}")
    found = mixing_layers(apply)
    if has_batch_stats or found:
        raise ValueError(
            f"batch_split={batch_split} would change this model's step: layers {found or ['with batch_stats']} "
            f"mix the examples of a batch (BatchNorm statistics would become per part; only jaxcnn.nn.Dropout "
            f"can draw the whole batch's mask); use batch_split=1 or 'auto'"
        )
    return batch_split


def eval_step_body(model: nn.Module, loss_fn: LossFn, axis_name: str | None = None) -> Callable:
    """``(state or variables, batch) -> sums``: weighted sums of loss and accuracy and the weight total.

    Sums (not means) so that :func:`jaxcnn.train.evaluate` can add batches of any
    size, padded ones included, and divide once at the end.
    """

    def body(state: TrainState | dict, batch: Batch):
        x, y = batch["x"], batch["y"]
        w = _weights(batch)
        variables = state.variables() if isinstance(state, TrainState) else state
        logits = model.apply(variables, x, train=False)
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

    Attributes:
      strategy: one of :data:`STRATEGIES`.
      devices: the devices of the step, in mesh order (with several processes:
        those of every process).
      steps_per_call: batches carry a leading ``(k,)`` axis when ``k > 1``.
      model_parallel: size of the mesh's "model" axis ("sharded" only).
      min_shard_size: the smallest kernel split over "model".
    """

    strategy: str
    devices: tuple
    steps_per_call: int = 1
    model_parallel: int = 1
    min_shard_size: int = DEFAULT_MIN_SIZE

    @functools.cached_property
    def mesh(self) -> Mesh:
        """``("data",)`` of all devices, or ``("data", "model")`` with ``model_parallel > 1``."""
        return make_mesh(self.devices, self.model_parallel)

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def data_parallel(self) -> int:
        """How many shards the batch is split into (devices along "data")."""
        return 1 if self.strategy == "jit" else self.num_devices // self.model_parallel

    @property
    def _lead(self) -> int:
        return 1 if self.steps_per_call > 1 else 0

    def _check_batch_size(self, n: int) -> None:
        if n % self.data_parallel:
            raise ValueError(
                f"batch size {n} must be divisible by the number of devices along the data axis "
                f"({self.data_parallel}) for strategy={self.strategy!r}; pick a multiple of "
                f"{self.data_parallel} or use pad_remainder/drop_remainder for the last batch"
            )

    def state_sharding(self, state: Any) -> Any:
        """The sharding of every leaf of the placed ``state`` (not for "jit"/"pmap")."""
        if self.model_parallel > 1:
            return param_sharding(state, self.mesh, min_size=self.min_shard_size)
        return jax.tree.map(lambda _: NamedSharding(self.mesh, P()), state)

    def place_state(self, state: Any) -> Any:
        """A placed *copy* of ``state``: a donating step never invalidates the caller's state.

        With several processes every process must pass the same state (same
        seed, or a restored checkpoint); each keeps the parts its devices hold.
        """
        if self.strategy == "jit":
            return jax.device_put(state, self.devices[0], may_alias=False)
        if jax.process_count() > 1:
            state = host_copy(state)
        if self.strategy != "pmap":
            return jax.device_put(state, self.state_sharding(state), may_alias=False)
        n = self.num_devices
        stacked = NamedSharding(self.mesh, P(DATA_AXIS))
        return jax.tree.map(lambda a: jax.device_put(np.broadcast_to(np.asarray(a), (n, *np.shape(a))), stacked), state)

    def process_rows(self, batch_size: int) -> slice:
        """The rows of a global batch of ``batch_size`` that this process's devices hold.

        ``slice(0, batch_size)`` in a one-process run (and for "jit"). With
        several processes, process ``p`` holds a contiguous block (devices are
        ordered process by process along the "data" axis); it needs to read,
        and transfer, only those rows.
        """
        batch_size = _validate.as_int(batch_size, "batch_size")
        self._check_batch_size(batch_size)
        if self.strategy == "jit" or jax.process_count() == 1:
            return slice(0, batch_size)
        index = NamedSharding(self.mesh, P(DATA_AXIS)).addressable_devices_indices_map((batch_size,))
        blocks = sorted({(sl[0].start or 0, batch_size if sl[0].stop is None else sl[0].stop) for sl in index.values()})
        lo, hi = blocks[0][0], blocks[-1][1]
        if sum(b - a for a, b in blocks) != hi - lo:
            raise ValueError(
                f"this process's devices hold non-contiguous rows {blocks} of the batch; order the "
                f"devices process by process (as jax.devices() does)"
            )
        return slice(lo, hi)

    def place_batch(self, batch: Batch, *, global_size: int | None = None) -> Batch:
        """Host arrays ``(B, ...)`` (or ``(k, B, ...)`` with ``steps_per_call=k``) onto the devices.

        Args:
          batch: the global batch, identical in every process; or, with
            ``global_size``, only this process's rows ``process_rows(global_size)``.
          global_size: the global batch size when ``batch`` holds this
            process's rows only (several processes; in one process the two are
            the same).
        """
        lead = self._lead
        sizes = {np.shape(v)[lead] for v in batch.values()}
        if len(sizes) != 1:
            raise ValueError(f"all batch entries must have the same batch size, got sizes {sorted(sizes)}")
        size = sizes.pop()
        if self.strategy == "jit":
            return jax.device_put(batch, self.devices[0])
        rows = self.process_rows(size if global_size is None else global_size)
        multi = jax.process_count() > 1
        if global_size is not None and size != rows.stop - rows.start:
            raise ValueError(
                f"with global_size={global_size} the batch must hold this process's "
                f"{rows.stop - rows.start} rows {rows.start}..{rows.stop - 1}, got {size}"
            )
        if multi and global_size is None:
            batch = {k: np.asarray(v)[(slice(None),) * lead + (rows,)] for k, v in batch.items()}
        total = size if global_size is None else global_size
        spec = P(None, DATA_AXIS) if lead else P(DATA_AXIS)
        if self.strategy != "pmap":
            sharding = NamedSharding(self.mesh, spec)
            if not multi:
                return jax.device_put(batch, sharding)
            return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v), _with(np.shape(v), lead, total))
                    for k, v in batch.items()}
        n = self.num_devices

        def split(a):  # (…, b, …) -> (b / (B/n), …, B / n, …): the device axis first
            a = np.asarray(a)
            per = total // n
            a = a.reshape(a.shape[:lead] + (a.shape[lead] // per, per) + a.shape[lead + 1 :])
            return np.moveaxis(a, lead, 0)

        stacked = NamedSharding(self.mesh, P(DATA_AXIS))
        if not multi:
            return jax.device_put(jax.tree.map(split, batch), stacked)
        return {k: jax.make_array_from_process_local_data(stacked, split(v), (n, *split(v).shape[1:]))
                for k, v in batch.items()}

    def fetch_state(self, state: Any) -> Any:
        """One ordinary copy of a placed state (NumPy with several processes)."""
        if self.strategy == "pmap":
            if jax.process_count() > 1:
                return jax.tree.map(lambda a: np.asarray(a.addressable_shards[0].data)[0], state)
            return jax.tree.map(lambda a: a[0], state)
        return host_copy(state) if jax.process_count() > 1 else state

    def fetch_metrics(self, metrics: Any) -> dict[str, np.ndarray]:
        """Metrics as host NumPy values; ``(k,)`` per-step arrays with ``steps_per_call=k``."""
        if self.strategy == "pmap":
            metrics = jax.tree.map(lambda a: np.asarray(a.addressable_shards[0].data)[0], metrics)
        else:
            metrics = host_copy(metrics)
        return {k: np.asarray(v) for k, v in metrics.items()}


def _with(shape: tuple, axis: int, size: int) -> tuple:
    """``shape`` with ``shape[axis]`` replaced by ``size``."""
    return tuple(shape[:axis]) + (size,) + tuple(shape[axis + 1 :])


@dataclasses.dataclass(frozen=True)
class CompiledStep:
    """A compiled step with its :class:`Placement`: ``step(placed_state, placed_batch)``.

    On CPU the step is compiled with the XLA options its state's convolution
    kernels call for (:func:`jaxcnn.functional.conv.cpu_compiler_options`);
    :meth:`fn_for` returns the jitted function a given state runs with.
    """

    build: Callable[[tuple], Callable]
    placement: Placement
    _built: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def fn_for(self, state: Any) -> Callable:
        """The jitted (or pmapped) function that ``step(state, batch)`` calls."""
        options = None
        if self.placement.devices[0].platform == "cpu" and self.placement.strategy != "pmap":
            params = state["params"] if isinstance(state, dict) else state.params
            options = cpu_compiler_options(params)
        key = tuple(sorted(options.items())) if options else ()
        if key not in self._built:
            self._built[key] = self.build(key)
        return self._built[key]

    @property
    def fn(self) -> Callable:
        """The function compiled with XLA's default options (what a state without large kernels uses)."""
        return self.fn_for({"params": {}})

    def __call__(self, state: Any, batch: Batch) -> Any:
        return self.fn_for(state)(state, batch)

    def __getattr__(self, name: str) -> Any:  # place_state, place_batch, fetch_state, ...
        return getattr(self.placement, name)


def _resolve(strategy: str | None, devices: Any, steps_per_call: Any, model_parallel: Any = 1,
             min_shard_size: Any = DEFAULT_MIN_SIZE) -> Placement:
    strategy = default_strategy() if strategy is None else _validate.check_choice(strategy, "strategy", STRATEGIES)
    if devices is None:  # "jit" runs on a device of this process, even in a multi-process run
        devices = jax.local_devices()[:1] if strategy == "jit" else jax.devices()
    devices = tuple(devices)
    if not devices:
        raise ValueError("devices must name at least one device")
    k = _validate.as_int(steps_per_call, "steps_per_call")
    if k < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {k}")
    mp = _validate.as_int(model_parallel, "model_parallel")
    if mp != 1 and strategy != "sharded":
        raise ValueError(
            f"model_parallel={mp} needs strategy='sharded' (jit over a ('data', 'model') mesh), "
            f"got strategy={strategy!r}"
        )
    if mp < 1 or len(devices) % mp:
        raise ValueError(f"model_parallel must be >= 1 and divide the number of devices ({len(devices)}), got {mp}")
    min_size = _validate.as_int(min_shard_size, "min_shard_size")
    if min_size < 0:
        raise ValueError(f"min_shard_size must be >= 0, got {min_size}")
    return Placement(strategy, devices[:1] if strategy == "jit" else devices, k, mp, min_size)


def _compile(body_for_axis: Callable[[str | None], Callable], placement: Placement, *, donate: bool, multi: Callable | None,
             options: tuple = ()):
    """jit/pmap/shard_map the body built by ``body_for_axis(axis_name)`` for ``placement``.

    "shard_map" uses ``check_vma=False``: the body is pmap's, which sums the
    per-device gradients itself with ``lax.psum``. With JAX's varying-axis
    typing on (``check_vma=True``) the replicated parameters would be marked
    invariant, the transpose of their implicit broadcast would already sum the
    gradients over devices, and the explicit ``psum`` would count them ``n``
    times. This is also how ``jax.pmap`` itself is lowered onto ``shard_map``.
    """
    donate_argnums = (0,) if donate else ()
    jit = functools.partial(jax.jit, donate_argnums=donate_argnums, compiler_options=dict(options) or None)

    def wrap(body):
        return body if multi is None else multi(body)

    if placement.strategy == "pmap":
        return jax.pmap(wrap(body_for_axis(DATA_AXIS)), axis_name=DATA_AXIS, devices=placement.devices,
                        donate_argnums=donate_argnums)
    mesh = placement.mesh
    data_spec = P(None, DATA_AXIS) if multi is not None else P(DATA_AXIS)
    if placement.strategy == "shard_map":
        fn = jax.shard_map(wrap(body_for_axis(DATA_AXIS)), mesh=mesh, in_specs=(P(), data_spec), out_specs=P(),
                           check_vma=False)
        return jit(fn)
    fn = wrap(body_for_axis(None))
    if placement.strategy == "jit":
        return jit(fn)
    data = NamedSharding(mesh, data_spec)
    if placement.model_parallel == 1:
        replicated = NamedSharding(mesh, P())
        return jit(fn, in_shardings=(replicated, data), out_shardings=replicated)

    def constrained(state, batch):
        """The state's shardings depend on its shapes (:func:`param_sharding`), so they are
        set here, on the traced values, instead of as jit arguments fixed in advance."""
        state = lax.with_sharding_constraint(state, placement.state_sharding(state))
        out = fn(state, lax.with_sharding_constraint(batch, data))
        return lax.with_sharding_constraint(out, placement.state_sharding(out))

    return jit(constrained)


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
    model_parallel: int = 1,
    min_shard_size: int = DEFAULT_MIN_SIZE,
    batch_split: int | str = "auto",
) -> CompiledStep:
    """Compile a training step for one device, data-parallel pmap/shard_map, or a sharded mesh.

    Args:
      model: a Flax module called as ``model.apply(variables, x, train=True,
        rngs={"dropout": key}, mutable=["batch_stats"])``. With
        ``strategy="pmap"`` or ``"shard_map"``, its BatchNorm and Dropout layers
        must be built with ``axis_name="data"`` (the step checks, and says so if not).
      loss_fn: a per-example loss ``(outputs, targets) -> (B,)`` or its name
        ("cross_entropy", "mse"); see :mod:`jaxcnn.train.losses`.
      strategy: "jit", "pmap", "sharded", "shard_map" (see the module
        docstring), or ``None`` for "sharded" on several devices and "jit" on one.
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
      model_parallel: ``k > 1`` (strategy "sharded"): a ``("data", "model")``
        mesh of ``n/k x k`` devices; kernels with at least ``min_shard_size``
        elements are split along their output channels over "model"
        (:func:`jaxcnn.train.partition.param_sharding`), the batch over "data".
        The numbers are those of the replicated run.
      min_shard_size: see ``model_parallel``.
      batch_split: compute each step's gradient as the sum over ``k`` equal
        parts of the batch, which XLA:CPU runs concurrently
        (:mod:`jaxcnn.train.split`); the result is the unsplit step's up to
        float summation order, dropout masks included. ``"auto"`` (default):
        strategy "jit" on a CPU device, for models without BatchNorm, in parts
        of about 32 examples (:func:`jaxcnn.train.split.auto_parts`);
        otherwise 1. Models whose layers mix examples other than through
        BatchNorm need ``batch_split=1``.

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
    placement = _resolve(strategy, devices, steps_per_call, model_parallel, min_shard_size)
    batch_split = check_batch_split(batch_split)
    if batch_split == "auto" and not (placement.strategy == "jit" and placement.devices[0].platform == "cpu"):
        batch_split = 1
    loss_fn = get_loss(loss_fn)
    return CompiledStep(
        lambda options: _cached(_compiled_train_step, model, loss_fn, placement, donate, unroll, augment, batch_split,
                                options),
        placement,
    )


def _compiled_train_step(model, loss_fn, placement, donate, unroll, augment, batch_split, options) -> Callable:
    multi = None
    if placement.steps_per_call > 1:
        def multi(body):
            return lambda state, batches: lax.scan(body, state, batches, unroll=unroll)

    return _compile(lambda axis: train_step_body(model, loss_fn, axis, augment, batch_split), placement, donate=donate,
                    multi=multi, options=options)


def _compiled_eval_step(model, loss_fn, placement, options) -> Callable:
    return _compile(lambda axis: eval_step_body(model, loss_fn, axis), placement, donate=False, multi=None,
                    options=options)


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
    model: nn.Module,
    loss_fn: str | LossFn = "cross_entropy",
    strategy: str | None = "jit",
    *,
    devices: Any = None,
    model_parallel: int = 1,
    min_shard_size: int = DEFAULT_MIN_SIZE,
) -> CompiledStep:
    """Compile an evaluation step returning weighted sums (see :func:`eval_step_body`).

    ``strategy``, ``devices``, ``model_parallel`` and ``min_shard_size`` as for
    :func:`make_train_step`; the model needs ``axis_name="data"`` for "pmap"
    and "shard_map" only if it uses collectives at inference.
    """
    placement = _resolve(strategy, devices, 1, model_parallel, min_shard_size)
    loss_fn = get_loss(loss_fn)
    return CompiledStep(lambda options: _cached(_compiled_eval_step, model, loss_fn, placement, options), placement)
