"""Several processes (hosts) training one model: ``jax.distributed`` set-up and multi-process helpers.

jaxcnn scales to many hosts on JAX's own runtime, exactly as on a TPU pod or a
multi-node GPU cluster: every process runs the *same* program, calls
:func:`initialize` (``jax.distributed.initialize``) before any other JAX call,
and then sees every device of every process in ``jax.devices()``. A training
step compiled over a mesh of all those devices ("sharded" or "shard_map") is
one SPMD program; each process feeds only the rows of the global batch its
own devices hold (:meth:`jaxcnn.train.Placement.process_rows`), and XLA's
collectives (NCCL on GPU, ICI on TPU, gloo over TCP on CPU) do the rest.

Where the set-up comes from, first match wins:

=============================  ====================================  ===========================
argument / CLI flag            jaxcnn environment variable           JAX's own variable
=============================  ====================================  ===========================
``coordinator``                ``JAXCNN_COORDINATOR`` (``host:port``)  ``JAX_COORDINATOR_ADDRESS``
``num_processes``              ``JAXCNN_NUM_PROCESSES``              ``JAX_NUM_PROCESSES``
``process_id``                 ``JAXCNN_PROCESS_ID``                 ``JAX_PROCESS_ID``
``auto=True`` (``--distributed``)  ``JAXCNN_DISTRIBUTED=1``          --
=============================  ====================================  ===========================

``auto`` calls ``jax.distributed.initialize()`` with whatever is given and
lets JAX detect the rest (Cloud TPU pod slices, SLURM, Open MPI, Kubernetes).
Nothing set means one process, and :func:`initialize` does nothing.

On CPU the cross-process collectives need an implementation; this JAX uses
gloo (``jax_cpu_collectives_implementation="gloo"``), and :func:`initialize`
selects it when the option is unset, so two local processes on the loopback
address train together with no other software.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxcnn import _validate

ENV = {"coordinator": "JAXCNN_COORDINATOR", "num_processes": "JAXCNN_NUM_PROCESSES", "process_id": "JAXCNN_PROCESS_ID"}
JAX_ENV = {
    "coordinator": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}
ENV_AUTO = "JAXCNN_DISTRIBUTED"


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """The arguments of one ``jax.distributed.initialize`` call (``None``: let JAX detect it)."""

    coordinator: str | None
    num_processes: int | None
    process_id: int | None
    auto: bool = False


def _from_env(name: str, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    for table in (ENV, JAX_ENV):
        value = environ.get(table[name], "").strip()
        if value:
            return value, table[name]
    return None, None


def _env_int(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{where} must be an integer, got {text!r}") from None


def resolve_config(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    environ: Mapping[str, str] | None = None,
) -> DistributedConfig | None:
    """Merge arguments and environment variables (see the module docstring) into one set-up.

    Args:
      coordinator: ``"host:port"`` of process 0's coordination service.
      num_processes: how many processes take part.
      process_id: this process's index, ``0 <= process_id < num_processes``.
      auto: initialize even if some values are missing (JAX's cluster auto-detection).
      environ: the environment to read (default ``os.environ``).

    Returns:
      A :class:`DistributedConfig`, or ``None`` when nothing asks for several
      processes.

    Raises:
      ValueError: a malformed value, a process id out of range, or only some
        of the three values without ``auto`` (which value is missing is named).
    """
    environ = os.environ if environ is None else environ
    auto = _validate.check_bool(auto, "auto") or environ.get(ENV_AUTO, "").strip().lower() in ("1", "true", "yes")
    values: dict[str, Any] = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    for name, value in list(values.items()):
        if value is not None:
            if name != "coordinator":
                values[name] = _validate.as_int(value, name)
            continue
        text, where = _from_env(name, environ)
        if text is not None and where is not None:  # _from_env gives both or neither
            values[name] = text if name == "coordinator" else _env_int(text, where)
    c, n, i = values["coordinator"], values["num_processes"], values["process_id"]
    if c is None and n is None and i is None and not auto:
        return None
    if c is not None:
        host, sep, port = str(c).rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"coordinator must look like HOST:PORT (e.g. 127.0.0.1:12345), got {c!r}")
    if n is not None and n < 1:
        raise ValueError(f"num_processes must be >= 1, got {n}")
    if i is not None and (i < 0 or (n is not None and i >= n)):
        raise ValueError(f"process_id must be in [0, num_processes) = [0, {n}), got {i}")
    if not auto:
        missing = [f"{name} (--{name.replace('_', '-')} or ${ENV[name]})" for name, v in values.items() if v is None]
        if missing:
            raise ValueError(
                f"a multi-process run needs the coordinator address, the number of processes and this "
                f"process's id; missing: {', '.join(missing)}. Pass --distributed (or ${ENV_AUTO}=1) "
                f"to let JAX detect them on a TPU pod or a SLURM/MPI/Kubernetes cluster"
            )
    return DistributedConfig(c, n, i, auto)


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    local_device_ids: Any = None,
    timeout_s: int = 300,
    environ: Mapping[str, str] | None = None,
) -> bool:
    """Join a multi-process run: ``jax.distributed.initialize`` with the resolved set-up.

    Must run before anything else touches JAX's devices (creating an array,
    ``jax.devices()``); JAX refuses afterwards. Every process of the run calls
    it with the same coordinator and process count and its own id; process 0
    hosts the coordination service at ``coordinator``. It blocks until all
    processes have joined (up to ``timeout_s``).

    Args:
      coordinator, num_processes, process_id, auto, environ: see
        :func:`resolve_config`.
      local_device_ids: restrict this process to these local devices (e.g. one
        GPU per process); ``None``: all of them.
      timeout_s: how long to wait for the other processes.

    Returns:
      ``True`` if JAX now runs distributed, ``False`` if nothing asked for it
      (one process; nothing was done).

    Example (two shells, or two hosts with the first host's address)::

      JAXCNN_COORDINATOR=127.0.0.1:1234 JAXCNN_NUM_PROCESSES=2 JAXCNN_PROCESS_ID=0 jaxcnn train --out runs/a
      JAXCNN_COORDINATOR=127.0.0.1:1234 JAXCNN_NUM_PROCESSES=2 JAXCNN_PROCESS_ID=1 jaxcnn train --out runs/a

    Reference: https://docs.jax.dev/en/latest/multi_process.html
    """
    config = resolve_config(coordinator, num_processes, process_id, auto=auto, environ=environ)
    if config is None:
        return False
    if jax.distributed.is_initialized():
        return True
    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "", "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=config.coordinator,
        num_processes=config.num_processes,
        process_id=config.process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=_validate.as_int(timeout_s, "timeout_s"),
    )
    return True


def is_primary() -> bool:
    """Whether this is process 0, the one that writes logs, configs and plots."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (nothing to do in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def host_copy(tree: Any) -> Any:
    """A NumPy copy of every leaf, also of global arrays spread over several processes.

    An array this process holds whole (``is_fully_addressable``) or that is
    replicated on every device is copied directly; one sharded across
    processes (a model-parallel kernel split between hosts) is gathered with
    ``multihost_utils.process_allgather``, a collective every process must
    enter together.
    """

    def one(a: Any) -> np.ndarray:
        if not isinstance(a, jax.Array) or a.is_fully_addressable:
            return np.asarray(a)
        if a.is_fully_replicated:
            return np.asarray(a.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree.map(one, tree)
