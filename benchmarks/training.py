"""Training throughput (images/s), first-step (compile) time and peak memory: jaxcnn vs PyTorch vs Flax.

Per configuration (model, batch size, optimizer) the peers are

* ``jaxcnn k=1``, ``jaxcnn k=K``: the public API only -- ``jaxcnn.get_model``,
  ``create_train_state``, ``make_optimizer``, ``make_train_step(...,
  strategy="jit", steps_per_call=k)``, with the state placed once
  (``step.place_state``) and one placed batch (``step.place_batch``; ``(k, B, ...)``
  for k > 1) fed again and again: the step is measured, not data loading.
  Images/s count all k steps of a call.
* ``torch``: the eager loop of :func:`benchmarks.peers.torch_train_step` on
  the same data in NCHW.
* ``flax``: :func:`benchmarks.peers.flax_train_step_jit` (the Flax examples' step).
* ``torch.compile`` (only with ``--torch-compile``): ``torch.compile(model)``
  in the same loop; needs a C++ compiler and minutes of compilation.

The peers are timed interleaved (see :mod:`benchmarks._timing`). Peak memory is
measured in a fresh subprocess per (configuration, peer): ``python -m
benchmarks.training --child '<json>'`` (see :func:`child`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import _timing
from benchmarks._timing import Case


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training benchmark: ``model`` (a key of :data:`MODELS`) at ``batch`` with ``optimizer``."""

    model: str
    batch: int
    optimizer: str  # "adam" | "momentum"
    lr: float
    steps_per_call: int  # the k > 1 measured next to k = 1

    @property
    def name(self) -> str:
        return f"{self.model}_b{self.batch}"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return MODELS[self.model][2]

    @property
    def num_classes(self) -> int:
        return 10

    def describe(self) -> str:
        opt = "Adam(1e-3)" if self.optimizer == "adam" else f"SGD(lr {self.lr}, momentum 0.9)"
        what = MODELS[self.model][3]
        return f"{what}, batch {self.batch}, {opt}"


#: benchmark model -> (jaxcnn registry name, its keyword arguments, input shape HWC, description).
MODELS: dict[str, tuple[str, dict[str, Any], tuple[int, ...], str]] = {
    "lwls_cnn": ("lwls_cnn", {}, (28, 28, 1), "LWLS CNN 28x28x1"),
    "resnet18_cifar": ("resnet18", {"stem": "cifar"}, (32, 32, 3), "ResNet-18 CIFAR 32x32x3"),
    "mobilenet_v2_cifar": ("mobilenet_v2", {"stem": "cifar"}, (32, 32, 3), "MobileNetV2 CIFAR 32x32x3"),
}
#: models without a plain-Flax peer in :mod:`benchmarks.peers` (their "flax" column stays empty).
NO_FLAX_PEER = ("mobilenet_v2_cifar",)


def configs(quick: bool) -> list[TrainConfig]:
    """issue 7: lwls_cnn at 32/128/512 with Adam, ResNet-18 CIFAR at 128 with SGD momentum; issue 17: MobileNetV2 CIFAR at 128."""
    out = [TrainConfig("lwls_cnn", b, "adam", 1e-3, 4) for b in (32, 128, 512)]
    out.append(TrainConfig("resnet18_cifar", 128, "momentum", 0.1, 2))
    out.append(TrainConfig("mobilenet_v2_cifar", 128, "momentum", 0.1, 2))
    if quick:  # ResNet-18 alone costs minutes (compile + seconds per step on 2 cores)
        out = [c for c in out if c.model == "lwls_cnn" and c.batch in (32, 128)]
    return out


def forward_macs(cfg: TrainConfig) -> int:
    """Multiply-accumulates of one example's forward pass (convolutions and dense layers; ``jaxcnn.analysis.summary``)."""
    import jaxcnn
    from jaxcnn.analysis import summary

    name, kw, shape, _ = MODELS[cfg.model]
    return int(summary(jaxcnn.get_model(name, num_classes=cfg.num_classes, **kw), shape).total_macs)


def make_data(cfg: TrainConfig, leading: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random NHWC float32 inputs and int32 labels, ``(leading, B, ...)`` when ``leading`` > 0."""
    rng = np.random.default_rng(seed)
    lead = (leading,) if leading else ()
    x = rng.standard_normal((*lead, cfg.batch, *cfg.input_shape), np.float32)
    y = rng.integers(0, cfg.num_classes, (*lead, cfg.batch)).astype(np.int32)
    return x, y


# ---------------------------------------------------------------- peers as timing cases


def _stateful_jax_case(name: str, step: Callable, state: Any, batch: Any) -> tuple[Case, Callable[[], Any]]:
    """A case calling ``state, metrics = step(state, batch)``; the state is threaded (it is donated)."""
    holder = {"state": state}

    def call(n: int):
        s = holder["state"]
        m = None
        for _ in range(n):
            s, m = step(s, batch)
        holder["state"] = s
        _block((s, m))

    return Case(name, lambda: call(1), call), lambda: holder["state"]


def _block(x: Any) -> None:
    import jax

    jax.block_until_ready(x)


def jaxcnn_case(cfg: TrainConfig, k: int, dtype: str | None = None) -> tuple[Case, dict[str, Any]]:
    """jaxcnn's step on JAX's default device; ``dtype="bfloat16"``: the model's compute dtype (parameters stay float32)."""
    import jax
    import jax.numpy as jnp

    import jaxcnn
    from jaxcnn.train import create_train_state, make_optimizer, make_train_step

    name, kw, _, _ = MODELS[cfg.model]
    kw = {**kw, "dtype": jnp.dtype(dtype)} if dtype and dtype != "float32" else kw
    model = jaxcnn.get_model(name, num_classes=cfg.num_classes, **kw)
    tx = make_optimizer(cfg.optimizer, cfg.lr)
    state = create_train_state(model, tx, jax.ShapeDtypeStruct((1, *cfg.input_shape), jnp.float32), seed=0)
    step = make_train_step(model, "cross_entropy", strategy="jit", steps_per_call=k)
    state = step.place_state(state)
    x, y = make_data(cfg, leading=k if k > 1 else 0)
    batch = step.place_batch({"x": x, "y": y})
    case, current = _stateful_jax_case(f"jaxcnn k={k}", step, state, batch)
    return case, {"jit_fn": step.fn_for(state), "current_state": current, "batch": batch}


def flax_case(cfg: TrainConfig) -> tuple[Case, dict[str, Any]]:
    import jax

    from benchmarks import peers

    model = peers.flax_model(cfg.model, cfg.num_classes)
    state = peers.flax_create_state(model, peers.flax_optimizer(cfg.optimizer, cfg.lr), cfg.input_shape, seed=0)
    state = jax.device_put(state)
    x, y = make_data(cfg)
    batch = jax.device_put({"x": x, "y": y})
    case, current = _stateful_jax_case("flax", peers.flax_train_step_jit, state, batch)
    return case, {"jit_fn": peers.flax_train_step_jit, "current_state": current, "batch": batch}


def torch_case(
    cfg: TrainConfig, compiled: bool = False, threads: int | None = None, device: str = "cpu", dtype: str | None = None
) -> tuple[Case, dict[str, Any]]:
    """The eager PyTorch loop; ``device="cuda"``: model and data on the GPU, every timed block ends with
    ``torch.cuda.synchronize()``; ``dtype="bfloat16"``: the step under ``torch.autocast(device, bfloat16)``
    (parameters, optimizer and master weights stay float32, as jaxcnn's ``dtype=bfloat16``)."""
    import torch

    from benchmarks import peers

    torch.manual_seed(0)
    model = peers.torch_model(cfg.model, cfg.num_classes).to(device)
    opt = peers.torch_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    x, y = make_data(cfg)
    tx = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1))).to(device)
    ty = torch.from_numpy(y.astype(np.int64)).to(device)
    amp = None if not dtype or dtype == "float32" else getattr(torch, dtype)
    step_only = peers.torch_train_step(torch.compile(model) if compiled else model, opt, tx, ty, autocast_dtype=amp)
    sync = torch.cuda.synchronize if tx.is_cuda else (lambda: None)

    def step():
        step_only()
        sync()

    def body(n: int):
        for _ in range(n):
            step_only()
        sync()

    name = "torch.compile" if compiled else ("torch" if threads is None else _timing.TORCH_1T)
    return Case(name, _timing.with_torch_threads(step, threads), _timing.with_torch_threads(body, threads)), {}


def _xla_memory(extra: dict[str, Any]) -> dict[str, int] | None:
    """XLA's buffer plan of a compiled step (argument, output, temp bytes); hits the compile cache."""
    try:
        ma = extra["jit_fn"].lower(extra["current_state"](), extra["batch"]).compile().memory_analysis()
    except Exception:  # noqa: BLE001 - an optional extra, absent on some backends/versions
        return None
    if ma is None:
        return None
    return {
        k: int(getattr(ma, k))
        for k in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes")
    }


def peer_names(cfg: TrainConfig, torch_compile: bool) -> list[str]:
    names = ["jaxcnn k=1", f"jaxcnn k={cfg.steps_per_call}", *(name for name, _ in _timing.torch_variants())]
    names += [] if cfg.model in NO_FLAX_PEER else ["flax"]
    return names + (["torch.compile"] if torch_compile else [])


def build_case(cfg: TrainConfig, peer: str) -> tuple[Case, dict[str, Any]]:
    if peer.startswith("jaxcnn k="):
        return jaxcnn_case(cfg, int(peer.split("=")[1]))
    if peer == "flax":
        return flax_case(cfg)
    if peer in ("torch", "torch.compile"):
        return torch_case(cfg, compiled=peer == "torch.compile")
    if peer == _timing.TORCH_1T:
        return torch_case(cfg, threads=1)
    raise ValueError(f"unknown peer {peer!r}")


def images_per_call(cfg: TrainConfig, peer: str) -> int:
    return cfg.batch * (int(peer.split("=")[1]) if peer.startswith("jaxcnn k=") else 1)


def run(
    *,
    quick: bool,
    repeats: int,
    min_time: float,
    select: str | None = None,
    torch_compile: bool = False,
    profile_dir: str | None = None,
    log=print,
) -> list[dict[str, Any]]:
    """Time every configuration's peers interleaved; one record per configuration."""
    records = []
    for cfg in configs(quick):
        if select and select not in cfg.name:
            continue
        log(f"training: {cfg.describe()}")
        cases, extras = [], {}
        for peer in peer_names(cfg, torch_compile):
            case, extra = build_case(cfg, peer)
            cases.append(case)
            extras[peer] = extra
        stats = _timing.measure(cases, repeats=repeats, min_time=min_time, log=log)
        rec: dict[str, Any] = {
            "name": cfg.name,
            "what": cfg.describe(),
            "config": dataclasses.asdict(cfg),
            "forward_macs_per_example": forward_macs(cfg),
            "peers": {},
        }
        for peer, st in stats.items():
            per_call = st.median_s
            rec["peers"][peer] = {
                "stats": st.to_dict(),
                "images_per_call": images_per_call(cfg, peer),
                "images_per_s": images_per_call(cfg, peer) / per_call,
                "images_per_s_q1": images_per_call(cfg, peer) / st.q3_s,
                "images_per_s_q3": images_per_call(cfg, peer) / st.q1_s,
                "xla_memory": _xla_memory(extras[peer]) if "jit_fn" in extras[peer] else None,
            }
        if profile_dir:
            rec["profile"] = _profile(cfg, cases[0], extras, profile_dir, log)
        records.append(rec)
        del cases, extras
    return records


def _profile(cfg: TrainConfig, case: Case, extras: dict[str, Any], profile_dir: str, log) -> str:
    """A ``jax.profiler`` trace of 3 jaxcnn k=1 steps (open with Perfetto / TensorBoard's profile plugin)."""
    import jax

    path = os.path.join(profile_dir, cfg.name)
    os.makedirs(path, exist_ok=True)
    with jax.profiler.trace(path):
        case.body(3)
    log(f"  profile of jaxcnn k=1 written under {path}")
    return path


# ---------------------------------------------------------------- peak memory, one subprocess per peer


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in a fresh process: build one peer, run its first call and a few steps, report memory.

    ``VmHWM`` (the kernel's resident-set high-water mark) is reset through
    ``/proc/self/clear_refs`` before each phase, so the phases are measured
    apart: ``compile_peak`` = the first call (compilation included),
    ``steady_peak`` = ``steps`` more calls. All numbers are bytes above
    ``baseline`` = RSS after the imports (jax, flax, optax and torch are all
    imported in every child, so the baseline is the same for every peer).
    """
    import jax  # noqa: F401 - imported before the baseline on purpose
    import torch

    import jaxcnn  # noqa: F401
    from benchmarks import peers  # noqa: F401 - imports torch, flax, optax

    torch.set_num_threads(_timing.core_count())
    cfg = TrainConfig(**spec["config"])
    baseline = _timing.rss_bytes()
    case, _ = build_case(cfg, spec["peer"])
    built = _timing.rss_bytes()
    _timing.reset_peak_rss()
    t0 = time.perf_counter()
    case.first()
    first_call = time.perf_counter() - t0
    compile_peak = _timing.peak_rss_bytes()
    case.body(1)
    before_steps = _timing.rss_bytes()
    _timing.reset_peak_rss()
    case.body(spec.get("steps", 2))
    steady_peak = _timing.peak_rss_bytes()
    return {
        "baseline_rss_bytes": baseline,
        "built_above_baseline_bytes": built - baseline,
        "compile_peak_above_baseline_bytes": compile_peak - baseline,
        "steady_peak_above_baseline_bytes": steady_peak - baseline,
        "step_transient_bytes": steady_peak - before_steps,
        "steady_peak_rss_bytes": steady_peak,
        "first_call_s_cold": first_call,
    }


def memory(
    *, quick: bool, select: str | None = None, torch_compile: bool = False, log=print, timeout: float = 900
) -> list[dict[str, Any]]:
    """Peak memory of every (configuration, peer), each in its own subprocess (sequential)."""
    records = []
    env = dict(os.environ)
    for cfg in configs(quick):
        if select and select not in cfg.name:
            continue
        names = [n for n in peer_names(cfg, torch_compile=False) if n != _timing.TORCH_1T]
        if cfg.model != "lwls_cnn":  # minutes per child; k>1 adds little information
            names = [n for n in names if n != f"jaxcnn k={cfg.steps_per_call}"]
        rec: dict[str, Any] = {"name": cfg.name, "what": cfg.describe(), "peers": {}}
        for peer in names:
            log(f"memory: {cfg.name} {peer} (subprocess)")
            spec = {"config": dataclasses.asdict(cfg), "peer": peer, "steps": 2}
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.training", "--child", json.dumps(spec)],
                check=False,
                cwd=_timing.ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                rec["peers"][peer] = {"error": (proc.stderr or proc.stdout)[-800:]}
                log(f"  failed: {(proc.stderr or proc.stdout)[-300:]}")
                continue
            rec["peers"][peer] = json.loads(line[-1][len("RESULT ") :])
        records.append(rec)
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.splitlines()[0])
    p.add_argument("--child", required=True, help="JSON spec of one memory measurement (internal)")
    args = p.parse_args(argv)
    print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
