"""Placement: where one strategy's state and batches live (devices, meshes, process rows).

============ ==================================================================
"jit"        one device: state and batch on it.
"sharded"    a ``Mesh`` of all devices: the batch split along the "data" axis
             (``NamedSharding``), the state replicated -- or, with
             ``model_parallel=k``, large kernels split over a "model" axis
             (:mod:`jaxcnn.train.partition`).
"pmap"       every leaf with a leading device axis (state broadcast, batch
             reshaped to ``(n, B / n, ...)``).
"shard_map"  as "sharded", the body then runs per device.
============ ==================================================================

Several processes (``jax.distributed``, :mod:`jaxcnn.train.distributed`): the
"sharded", "shard_map" and "pmap" placements span the devices of every
process; each process passes the same global batch (or only its own rows) to
:meth:`Placement.place_batch`, which transfers just the rows its devices hold.
"jit" stays on one local device of each process.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcnn import _validate
from jaxcnn.data.sharding import shard_batch
from jaxcnn.train.distributed import host_copy
from jaxcnn.train.partition import DATA_AXIS, DEFAULT_MIN_SIZE, make_mesh, param_sharding

STRATEGIES = ("jit", "pmap", "sharded", "shard_map")
#: Strategies whose step body runs per device with ``axis_name="data"``.
PER_DEVICE = ("pmap", "shard_map")
Batch = dict[str, Any]


def default_strategy() -> str:
    """``"sharded"`` when more than one device is visible, else ``"jit"`` (see DESIGN.md)."""
    return "sharded" if jax.device_count() > 1 else "jit"


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
        # A host copy first: device_put onto a mesh may alias the input buffer on its first device even
        # with may_alias=False, and the donating step would then delete the caller's arrays.
        state = host_copy(state) if jax.process_count() > 1 else jax.tree.map(np.array, state)
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
        blocks = sorted(
            {
                (sl[0].start or 0, batch_size if sl[0].stop is None else sl[0].stop)
                for sl in index.values()
                if sl is not None
            }
        )
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
        if self.strategy != "pmap":
            return shard_batch(batch, self.mesh, batch_dim=lead, global_size=total)
        n = self.num_devices

        def split(a):  # (…, b, …) -> (b / (B/n), …, B / n, …): the device axis first
            a = np.asarray(a)
            per = total // n
            a = a.reshape(a.shape[:lead] + (a.shape[lead] // per, per) + a.shape[lead + 1 :])
            return np.moveaxis(a, lead, 0)

        return shard_batch({k: split(v) for k, v in batch.items()}, self.mesh, global_size=n)

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


def resolve_placement(
    strategy: str | None,
    devices: Any,
    steps_per_call: Any,
    model_parallel: Any = 1,
    min_shard_size: Any = DEFAULT_MIN_SIZE,
) -> Placement:
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
