"""Timing, memory and machine helpers shared by every benchmark section.

The rules (issue 7): warm-up excluded but the first call (compile) timed on its
own; every timed block ends with a synchronization (``jax.block_until_ready`` /
PyTorch on CPU is synchronous); the reported time is the median over
``repeats`` blocks, each running enough iterations to last ``min_time``; the
peers are interleaved (A, B, C, A, B, C, ...) so that slow drift of a shared
machine hits all of them alike.

A :class:`Case` is two closures: ``first()`` runs the very first call (tracing
and compilation included) and ``body(n)`` runs ``n`` more iterations and
synchronizes at the end. :func:`measure` does the rest.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import math
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Case:
    """One thing to time: ``first()`` = the first call (compile included), ``body(n)`` = n synced calls."""

    name: str
    first: Callable[[], Any]
    body: Callable[[int], Any]


@dataclasses.dataclass
class Stats:
    """Seconds per iteration over the repeats, and the first call.

    ``samples``: one value per repeat (block time / iterations per block);
    ``iters``: iterations per block; ``first_call_s``: wall time of the very
    first call (trace + compile + one run for JAX, lazy kernel set-up + one run
    for PyTorch).
    """

    samples: list[float]
    iters: int
    first_call_s: float

    @property
    def median_s(self) -> float:
        return float(np.median(self.samples))

    @property
    def q1_s(self) -> float:
        return float(np.percentile(self.samples, 25))

    @property
    def q3_s(self) -> float:
        return float(np.percentile(self.samples, 75))

    @property
    def min_s(self) -> float:
        return float(np.min(self.samples))

    @property
    def iqr_rel(self) -> float:
        """Interquartile range relative to the median: the noise of this measurement."""
        return (self.q3_s - self.q1_s) / self.median_s if self.median_s > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median_s,
            "q1_s": self.q1_s,
            "q3_s": self.q3_s,
            "min_s": self.min_s,
            "iqr_rel": self.iqr_rel,
            "samples_s": list(self.samples),
            "iters_per_repeat": self.iters,
            "first_call_s": self.first_call_s,
        }


def timed(fn: Callable[..., Any], *args: Any) -> float:
    """Wall seconds of ``fn(*args)`` (``fn`` must synchronize before it returns)."""
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def calibrate(body: Callable[[int], Any], min_time: float, max_iters: int = 1_000_000) -> int:
    """Iterations per block so that one block lasts about ``min_time``.

    The first ``body(1)`` doubles as the warm-up call (the second call of a
    freshly compiled function still pays page faults for its buffers). Fast
    bodies are run in growing blocks until one block lasts ``min_time / 5``;
    a body slower than that costs exactly one extra call here.
    """
    n, t = 1, timed(body, 1)
    while t < 0.2 * min_time and n < max_iters:
        n = min(max_iters, n * max(2, min(10, math.ceil(0.25 * min_time / max(t, 1e-9)))))
        t = timed(body, n)
    return max(1, min(max_iters, math.ceil(n * min_time / t)))


def measure(
    cases: Sequence[Case], *, repeats: int = 5, min_time: float = 0.3, log: Callable[[str], None] | None = None
) -> dict[str, Stats]:
    """Time ``cases`` interleaved: every case's first call, calibration, then repeats of A, B, C, ...

    Returns ``{case.name: Stats}`` with seconds *per iteration*.
    """
    firsts, iters = {}, {}
    for c in cases:
        firsts[c.name] = timed(c.first)
        iters[c.name] = calibrate(c.body, min_time)
        if log:
            log(f"  {c.name}: first call {firsts[c.name]:.2f} s, {iters[c.name]} iter/repeat")
    samples: dict[str, list[float]] = {c.name: [] for c in cases}
    for _ in range(repeats):
        for c in cases:
            samples[c.name].append(timed(c.body, iters[c.name]) / iters[c.name])
    return {c.name: Stats(samples[c.name], iters[c.name], firsts[c.name]) for c in cases}


def with_torch_threads(fn: Callable[..., Any], threads: int | None) -> Callable[..., Any]:
    """``fn`` run with ``torch.set_num_threads(threads)``, the previous count restored after (``None``: unchanged)."""
    if threads is None:
        return fn

    def wrapped(*args: Any) -> Any:
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn(*args)
        finally:
            torch.set_num_threads(old)

    return wrapped


#: The name of the extra PyTorch peer run with one thread (see ``benchmarks/run.py``, "Method").
TORCH_1T = "torch 1-thread"


def torch_variants() -> list[tuple[str, int | None]]:
    """``[("torch", None), ("torch 1-thread", 1)]`` on a multi-core machine, else just ``[("torch", None)]``."""
    return [("torch", None)] + ([(TORCH_1T, 1)] if core_count() > 1 else [])


# ---------------------------------------------------------------- process memory (Linux /proc)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """Resident set size now (``VmRSS``), or ``None`` off Linux."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def peak_rss_bytes() -> int | None:
    """High-water mark of the resident set since start or the last :func:`reset_peak_rss` (``VmHWM``)."""
    kb = _status_kb("VmHWM")
    return None if kb is None else kb * 1024


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- the machine


def cpu_model() -> str:
    """The CPU's ``model name`` from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def cpu_details() -> dict[str, Any]:
    """Family/model/stepping numbers and the vector extensions of the first CPU in ``/proc/cpuinfo``."""
    out: dict[str, Any] = {}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n")[0]
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("vendor_id", "cpu family", "model", "stepping", "cpu MHz", "cache size"):
            out[key.replace(" ", "_")] = value
        elif key == "flags":
            flags = set(value.split())
            out["vector_extensions"] = sorted(f for f in flags if re.match(r"(avx|fma|amx|sse4)", f))
    return out


def core_count() -> int:
    """CPUs this process may run on (``sched_getaffinity``), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_slug(model: str, cores: int) -> str:
    """``"Intel(R) Xeon(R) Platinum 8480C" , 2 -> "intel-xeon-platinum-8480c-2cores"``."""
    s = model.lower()
    s = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@.*$|\d+-core", " ", s)
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-") or "unknown-cpu"
    return f"{s}-{cores}cores"


def versions(packages: Sequence[str] = ("jax", "jaxlib", "flax", "optax", "torch", "numpy")) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def git_revision() -> str:
    """``<commit>`` or ``<commit>+dirty`` of the checkout the benchmarks run from, or ``"unknown"``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            check=False,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode:
        return "unknown"
    return head.stdout.strip()[:12] + ("+dirty" if dirty.stdout.strip() else "")


ENV_VARS = (
    "XLA_FLAGS",
    "JAX_PLATFORMS",
    "JAX_ENABLE_X64",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "KMP_BLOCKTIME",
    "MALLOC_MMAP_MAX_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_ARENA_MAX",
    "GLIBC_TUNABLES",
    "LD_PRELOAD",
)


def machine_info() -> dict[str, Any]:
    """Everything the result header states about where and with what the numbers were measured."""
    model, cores = cpu_model(), core_count()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        mem = None
    return {
        "cpu_model": model,
        "cpu": cpu_details(),
        "cores": cores,
        "os_cpu_count": os.cpu_count(),
        "memory_bytes": mem,
        "slug": machine_slug(model, cores),
        "platform": platform.platform(),
        "versions": versions(),
        "git": git_revision(),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def loadavg() -> tuple[float, float, float] | None:
    try:
        return tuple(round(v, 2) for v in os.getloadavg())  # type: ignore[return-value]
    except OSError:
        return None
