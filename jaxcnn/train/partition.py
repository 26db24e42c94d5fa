"""Meshes and the parameter-sharding rule: data parallelism, plus model parallelism for big kernels.

A training mesh has a ``"data"`` axis (the batch is split along it) and, for
model parallelism, a ``"model"`` axis: ``Mesh(devices.reshape(d, m), ("data",
"model"))``. On such a mesh :func:`param_sharding` splits the *output-channel*
(last) axis of every large kernel ``(*window, C_in, C_out)`` / ``(D_in,
D_out)`` over ``"model"`` and replicates the rest; the batch is split over
``"data"`` and replicated over ``"model"``.

Why the last axis: a dense or conv layer with its output channels split is
``y[..., j] = sum_i x[..., i] W[i, j]`` computed for a slice of ``j`` on each
device, so the forward pass needs no reduction across devices, only the
layer's output is gathered where the next layer needs all channels (XLA's
SPMD partitioner inserts that all-gather, and the reduce-scatter of the
backward pass). Each device stores ``1/m`` of the kernel and of its optimizer
moments. This is the "column-parallel" layout of Megatron-LM (Shoeybi et al.,
2019, Sec. 3) and the way `jax.sharding` tutorials shard an MLP.

The rule is a function of the *shape* only, so one call gives consistent
shardings for the parameters, their gradients and every optimizer moment of
the same shape (Adam's ``mu``/``nu``), and it can be evaluated on abstract
values inside a traced step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcnn import _validate
from jaxcnn.data.sharding import DATA_AXIS

MODEL_AXIS = "model"
#: Default ``min_size``: kernels with at least this many elements are split.
#: 2**16 floats = 256 KiB; below it the all-gathers cost more than the memory saved.
DEFAULT_MIN_SIZE = 2**16


def make_mesh(devices: Sequence[Any], model_parallel: int = 1) -> Mesh:
    """A ``("data",)`` mesh, or a ``("data", "model")`` mesh of ``len(devices) / k`` x ``k``.

    Args:
      devices: the devices, in order (``jax.devices()``: process by process, so
        with several processes each process's devices are consecutive rows of
        the data axis).
      model_parallel: ``k``, the size of the ``"model"`` axis; 1 gives the 1-D
        data mesh. Must divide the number of devices.

    Returns:
      A ``jax.sharding.Mesh``. Consecutive devices share a data row: with 8
      devices and ``k=2``, devices ``(0, 1)`` hold the same batch shard and
      split the large kernels between them.

    Example:
      >>> import jax
      >>> make_mesh(jax.devices()[:8], 2).shape     # doctest: +SKIP
      OrderedDict([('data', 4), ('model', 2)])
    """
    grid = np.asarray(list(devices), dtype=object)
    k = _validate.as_int(model_parallel, "model_parallel")
    if k < 1 or grid.size % k:
        raise ValueError(f"model_parallel must be >= 1 and divide the number of devices ({grid.size}), got {k}")
    if k == 1:
        return Mesh(grid, (DATA_AXIS,))
    return Mesh(grid.reshape(grid.size // k, k), (DATA_AXIS, MODEL_AXIS))


def param_spec(shape: Sequence[int], model_size: int, min_size: int = DEFAULT_MIN_SIZE) -> P:
    """The ``PartitionSpec`` of one array of ``shape`` under the rule of this module.

    ``P(None, ..., None, "model")`` when the array has at least 2 dims, at least
    ``min_size`` elements and an output (last) dim divisible by ``model_size``;
    ``P()`` (replicated) otherwise: biases, BatchNorm vectors, scalars, small
    kernels, and kernels whose output dim does not split evenly.

    Example:
      >>> param_spec((588, 200), 2, min_size=1000), param_spec((200,), 2), param_spec((200, 10), 4, 1000)
      (PartitionSpec(None, 'model'), PartitionSpec(), PartitionSpec())
    """
    shape = tuple(int(s) for s in shape)
    if model_size > 1 and len(shape) >= 2 and int(np.prod(shape)) >= min_size and shape[-1] % model_size == 0:
        return P(*([None] * (len(shape) - 1)), MODEL_AXIS)
    return P()


def _shape(a: Any) -> tuple[int, ...]:
    return tuple(a.shape) if hasattr(a, "shape") else np.shape(a)


def param_sharding(tree: Any, mesh: Mesh, *, min_size: int = DEFAULT_MIN_SIZE) -> Any:
    """``NamedSharding`` for every leaf of ``tree``: large kernels split over ``"model"``, the rest replicated.

    Args:
      tree: any pytree of arrays or ``jax.ShapeDtypeStruct`` -- parameters, or a
        whole :class:`~jaxcnn.train.TrainState` (optimizer moments of a kernel's
        shape then get the kernel's sharding).
      mesh: a mesh; without a ``"model"`` axis everything is replicated.
      min_size: the smallest kernel (in elements) that is split.

    Returns:
      A pytree of ``NamedSharding`` with ``tree``'s structure, to pass to
      ``jax.device_put`` or as ``jax.jit``'s ``in_shardings``/``out_shardings``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> mesh = make_mesh(jax.devices()[:8], 2)                                  # doctest: +SKIP
      >>> param_sharding({"w": jnp.zeros((588, 200)), "b": jnp.zeros(200)}, mesh)  # doctest: +SKIP
      {'b': NamedSharding(..., spec=PartitionSpec()), 'w': NamedSharding(..., spec=PartitionSpec(None, 'model'))}
    """
    min_size = _validate.as_int(min_size, "min_size")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    model_size = dict(mesh.shape).get(MODEL_AXIS, 1)
    return jax.tree.map(lambda a: NamedSharding(mesh, param_spec(_shape(a), model_size, min_size)), tree)
