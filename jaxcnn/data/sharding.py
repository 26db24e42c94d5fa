"""Placing host batches on devices: one device, or split over a ``"data"`` mesh axis."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcnn import _validate

DATA_AXIS = "data"


def batch_sharding(sharding_or_mesh: Mesh | NamedSharding, *, axis: str = DATA_AXIS) -> NamedSharding:
    """The ``NamedSharding`` that splits the leading (batch) dim and replicates the rest.

    A ``Mesh`` gives ``NamedSharding(mesh, PartitionSpec(axis))``. A
    ``NamedSharding`` is reduced to its first partition-spec entry (the batch
    dim), so one sharding fits every leaf of a batch whatever its rank.
    """
    if isinstance(sharding_or_mesh, Mesh):
        mesh = sharding_or_mesh
        if axis not in mesh.axis_names:
            raise ValueError(
                f"axis {axis!r} is not an axis of the mesh, whose axes are {mesh.axis_names}; "
                f"build the mesh with a {axis!r} axis (jax.make_mesh((n,), ({axis!r},))) or pass axis=..."
            )
        return NamedSharding(mesh, PartitionSpec(axis))
    if isinstance(sharding_or_mesh, NamedSharding):
        spec = sharding_or_mesh.spec
        return NamedSharding(sharding_or_mesh.mesh, PartitionSpec(spec[0] if len(spec) else None))
    raise TypeError(
        f"sharding_or_mesh must be a jax.sharding.Mesh or NamedSharding, got "
        f"{_validate.fmt(sharding_or_mesh)}"
    )


def _batch_axes(sharding: NamedSharding) -> tuple[str, ...]:
    entry = sharding.spec[0] if len(sharding.spec) else None
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _local_shards(mesh: Mesh, axes: tuple[str, ...]) -> int:
    """Distinct batch shards held by this process's devices (all shards in one process)."""
    if not axes:
        return 1
    dims = [mesh.axis_names.index(a) for a in axes]
    me = jax.process_index()
    coords = {
        tuple(pos[d] for d in dims)
        for pos, device in np.ndenumerate(mesh.devices)
        if device.process_index == me
    }
    return len(coords)


def shard_batch(
    batch: Any, sharding_or_mesh: Mesh | NamedSharding, *, axis: str = DATA_AXIS
) -> Any:
    """Put a host batch on a mesh, every leaf split along its leading (batch) dim.

    Each leaf ``(B, ...)`` becomes a global ``jax.Array`` sharded by
    :func:`batch_sharding`: with ``k`` devices along the batch axis, each device
    holds ``B / k`` consecutive rows (replicated along the other mesh axes). In a
    multi-process run each process passes its own rows and the global batch is
    their concatenation (``jax.make_array_from_process_local_data``); in one
    process this is ``jax.device_put``.

    Args:
      batch: a pytree (e.g. ``{"x": (B, H, W, C), "y": (B,)}``) of arrays.
      sharding_or_mesh: a ``Mesh`` with an ``axis`` axis, or a ``NamedSharding``
        whose first partition-spec entry names the batch axes.
      axis: the mesh axis to split the batch over (for a ``Mesh``).

    Returns:
      The same pytree of sharded ``jax.Array``.

    Raises:
      ValueError: a leaf's batch size is not divisible by the number of devices
        along the batch axis (both numbers are in the message), or a leaf is a scalar.

    Example:
      >>> import jax, numpy as np, jaxcnn.data as D
      >>> mesh = jax.make_mesh((jax.device_count(),), ("data",))
      >>> b = D.shard_batch({"x": np.zeros((8 * jax.device_count(), 3))}, mesh)
      >>> b["x"].addressable_shards[0].data.shape
      (8, 3)
    """
    sharding = batch_sharding(sharding_or_mesh, axis=axis)
    axes = _batch_axes(sharding)
    local = _local_shards(sharding.mesh, axes)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(batch)
    out = []
    for path, leaf in leaves:
        leaf = np.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf
        where = jax.tree_util.keystr(path) or "the batch"
        if leaf.ndim == 0:
            raise ValueError(f"{where} is a scalar; every leaf of a batch needs a leading batch dim")
        if leaf.shape[0] % local:
            raise ValueError(
                f"batch size {leaf.shape[0]} of {where} is not divisible by the {local} devices "
                f"along mesh axis {' x '.join(map(repr, axes))}; use a batch size that is a "
                f"multiple of {local}"
            )
        out.append(jax.make_array_from_process_local_data(sharding, leaf))
    return jax.tree_util.tree_unflatten(treedef, out)


def device_put_batch(batch: Any, where: Any = None, *, axis: str = DATA_AXIS) -> Any:
    """Put a host batch on devices: the default device, one device, or a mesh.

    Args:
      batch: a pytree of arrays.
      where: ``None`` (the default device), a ``jax.Device``, or a ``Mesh`` /
        ``NamedSharding`` (then :func:`shard_batch`).
      axis: the batch mesh axis, for a ``Mesh``.

    Returns:
      The pytree of ``jax.Array``.
    """
    if isinstance(where, (Mesh, NamedSharding)):
        return shard_batch(batch, where, axis=axis)
    if where is None or isinstance(where, jax.Device):
        return jax.device_put(batch, where)
    raise TypeError(
        f"where must be None, a jax.Device, a Mesh or a NamedSharding, got {_validate.fmt(where)}"
    )
