"""Placing host batches on devices: one device, or split over a ``"data"`` mesh axis."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcnn import _validate

DATA_AXIS = "data"


def batch_sharding(
    sharding_or_mesh: Mesh | NamedSharding, *, axis: str = DATA_AXIS, batch_dim: int = 0
) -> NamedSharding:
    """The ``NamedSharding`` that splits the batch dim and replicates the rest.

    A ``Mesh`` gives ``NamedSharding(mesh, PartitionSpec(*[None] * batch_dim, axis))``.
    A ``NamedSharding`` is reduced to its partition-spec entry at ``batch_dim``
    (the batch dim), so one sharding fits every leaf of a batch whatever its rank.

    Args:
      sharding_or_mesh: a ``Mesh`` with an ``axis`` axis, or a ``NamedSharding``.
      axis: the mesh axis to split the batch over (for a ``Mesh``).
      batch_dim: which dim of each leaf is the batch: 0, or 1 for batches stacked
        ``(k, B, ...)`` to run ``k`` steps in one call.

    Returns:
      The ``NamedSharding``.
    """
    batch_dim = _validate.as_int(batch_dim, "batch_dim")
    if batch_dim < 0:
        raise ValueError(f"batch_dim must be >= 0, got {batch_dim}")
    lead = (None,) * batch_dim
    if isinstance(sharding_or_mesh, Mesh):
        mesh = sharding_or_mesh
        if axis not in mesh.axis_names:
            raise ValueError(
                f"axis {axis!r} is not an axis of the mesh, whose axes are {mesh.axis_names}; "
                f"build the mesh with a {axis!r} axis (jax.make_mesh((n,), ({axis!r},))) or pass axis=..."
            )
        return NamedSharding(mesh, PartitionSpec(*lead, axis))
    if isinstance(sharding_or_mesh, NamedSharding):
        spec = sharding_or_mesh.spec
        return NamedSharding(
            sharding_or_mesh.mesh, PartitionSpec(*lead, spec[batch_dim] if len(spec) > batch_dim else None)
        )
    raise TypeError(
        f"sharding_or_mesh must be a jax.sharding.Mesh or NamedSharding, got {_validate.fmt(sharding_or_mesh)}"
    )


def _batch_axes(sharding: NamedSharding, batch_dim: int) -> tuple[str, ...]:
    entry = sharding.spec[batch_dim] if len(sharding.spec) > batch_dim else None
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def _local_shards(mesh: Any, axes: tuple[str, ...]) -> int:
    """Distinct batch shards held by this process's devices (all shards in one process)."""
    if not axes:
        return 1
    dims = [mesh.axis_names.index(a) for a in axes]
    me = jax.process_index()
    coords = {tuple(pos[d] for d in dims) for pos, device in np.ndenumerate(mesh.devices) if device.process_index == me}
    return len(coords)


def shard_batch(
    batch: Any,
    sharding_or_mesh: Mesh | NamedSharding,
    *,
    axis: str = DATA_AXIS,
    batch_dim: int = 0,
    global_size: int | None = None,
) -> Any:
    """Put a host batch on a mesh, every leaf split along its batch dim: the one way jaxcnn places a batch.

    Each leaf ``(B, ...)`` (or ``(k, B, ...)`` with ``batch_dim=1``) becomes a
    global ``jax.Array`` sharded by :func:`batch_sharding`: with ``n`` devices
    along the batch axis, device ``d`` holds rows ``[d B / n, (d + 1) B / n)``
    (replicated along the other mesh axes). In a multi-process run each process
    passes its own rows and the global batch is their concatenation
    (``jax.make_array_from_process_local_data``, global batch ``global_size``);
    in one process this is ``jax.device_put``.

    Args:
      batch: a pytree (e.g. ``{"x": (B, H, W, C), "y": (B,)}``) of arrays.
      sharding_or_mesh: a ``Mesh`` with an ``axis`` axis, or a ``NamedSharding``
        whose partition-spec entry at ``batch_dim`` names the batch axes.
      axis: the mesh axis to split the batch over (for a ``Mesh``).
      batch_dim: which dim of each leaf is the batch (0; 1 for stacked steps).
      global_size: the global batch size when each process passes only its
        rows; default: inferred (every process holds the same number of rows).
        In one process it must equal the batch size, if given.

    Returns:
      The same pytree of sharded ``jax.Array``.

    Raises:
      ValueError: a leaf's batch size is not divisible by the number of devices
        along the batch axis (both numbers are in the message), a leaf has no
        dim ``batch_dim``, or ``global_size`` disagrees with one process's batch.

    Example:
      >>> import jax, numpy as np, jaxcnn.data as D
      >>> mesh = jax.make_mesh((jax.device_count(),), ("data",))
      >>> b = D.shard_batch({"x": np.zeros((8 * jax.device_count(), 3))}, mesh)
      >>> b["x"].addressable_shards[0].data.shape
      (8, 3)
    """
    sharding = batch_sharding(sharding_or_mesh, axis=axis, batch_dim=batch_dim)
    batch_dim = _validate.as_int(batch_dim, "batch_dim")
    axes = _batch_axes(sharding, batch_dim)
    local = _local_shards(sharding.mesh, axes)
    multi = jax.process_count() > 1
    leaves, treedef = jax.tree_util.tree_flatten_with_path(batch)
    out = []
    for path, leaf in leaves:
        leaf = np.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf
        where = jax.tree_util.keystr(path) or "the batch"
        if leaf.ndim <= batch_dim:
            what = "a scalar" if leaf.ndim == 0 else f"of shape {leaf.shape}"
            raise ValueError(f"{where} is {what}; every leaf of a batch needs a batch dim at axis {batch_dim}")
        rows = leaf.shape[batch_dim]
        if rows % local:
            raise ValueError(
                f"batch size {rows} of {where} is not divisible by the {local} devices "
                f"along mesh axis {' x '.join(map(repr, axes))}; use a batch size that is a "
                f"multiple of {local}"
            )
        if not multi and global_size is not None and global_size != rows:
            raise ValueError(f"global_size={global_size}, but {where} holds {rows} rows in this one-process run")
        if multi:
            shape = (
                None if global_size is None else (*leaf.shape[:batch_dim], global_size, *leaf.shape[batch_dim + 1 :])
            )
            leaf = jax.make_array_from_process_local_data(sharding, leaf, shape)
        out.append(leaf)
    if not multi:  # one transfer for the whole batch
        return jax.device_put(jax.tree_util.tree_unflatten(treedef, out), sharding)
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
    raise TypeError(f"where must be None, a jax.Device, a Mesh or a NamedSharding, got {_validate.fmt(where)}")
