"""data.shard_batch as the one way to place a host batch on a mesh: stacked steps, pmap's device axis, global size."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxcnn.data as D


def _mesh(shape=(8,), names=("data",)):
    return Mesh(np.array(jax.devices()).reshape(shape), names)


def test_stacked_steps_split_their_second_dim():
    """(k, B, ...) for k steps per call: every device holds all k steps of its B / n rows."""
    mesh = _mesh()
    x = np.arange(3 * 16 * 2, dtype=np.float32).reshape(3, 16, 2)
    out = D.shard_batch({"x": x, "y": np.zeros((3, 16))}, mesh, batch_dim=1)
    assert out["x"].sharding == NamedSharding(mesh, PartitionSpec(None, "data"))
    for shard in out["x"].addressable_shards:
        k = list(mesh.devices).index(shard.device)
        np.testing.assert_array_equal(np.asarray(shard.data), x[:, 2 * k : 2 * k + 2])
    with pytest.raises(ValueError, match="batch size 12 of \\['x'\\] is not divisible by the 8 devices"):
        D.shard_batch({"x": np.zeros((3, 12))}, mesh, batch_dim=1)
    with pytest.raises(ValueError, match="batch dim at axis 1"):
        D.shard_batch({"x": np.zeros(16)}, mesh, batch_dim=1)


def test_a_device_axis_first_is_pmaps_layout():
    """pmap's stacked layout (n, B / n, ...) placed with the same call: one device row per device."""
    mesh = _mesh()
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    stacked = x.reshape(8, 2, 3)
    out = D.shard_batch({"x": stacked}, mesh)
    assert {s.data.shape for s in out["x"].addressable_shards} == {(1, 2, 3)}
    np.testing.assert_array_equal(np.asarray(out["x"]), stacked)


def test_global_size_in_one_process_must_be_the_batch_size():
    mesh = _mesh((2, 4), ("data", "model"))
    out = D.shard_batch({"x": np.ones((6, 5))}, mesh, global_size=6)
    assert out["x"].sharding == NamedSharding(mesh, PartitionSpec("data"))
    with pytest.raises(ValueError, match="global_size=12"):
        D.shard_batch({"x": np.ones((6, 5))}, mesh, global_size=12)


def test_batch_sharding_from_a_named_sharding_at_the_batch_dim():
    mesh = _mesh((2, 4), ("data", "model"))
    named = NamedSharding(mesh, PartitionSpec(None, ("data", "model")))
    assert D.batch_sharding(named, batch_dim=1).spec == PartitionSpec(None, ("data", "model"))
    assert D.batch_sharding(mesh, batch_dim=2).spec == PartitionSpec(None, None, "data")
    with pytest.raises(ValueError, match="batch_dim must be >= 0"):
        D.batch_sharding(mesh, batch_dim=-1)
