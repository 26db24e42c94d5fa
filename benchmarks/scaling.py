"""Data-parallel scaling: the same training step on 1, 2, 4, 8 devices; images/s and parallel efficiency.

    python -m benchmarks.scaling                     # lwls_cnn, global batch 256, 1/2/4/8 forced CPU devices
    python -m benchmarks.scaling --quick             # 1 and 2 devices, few steps: a smoke run (~1 min)
    python -m benchmarks.scaling --strategy pmap     # or shard_map / sharded (default)
    python -m benchmarks.scaling --real-devices      # a multi-GPU box or a TPU VM: use jax.devices()[:n]

What it measures. For each device count ``n`` a fresh subprocess builds the model,
places the state and a few fixed batches of the *global* batch size on ``n``
devices (the batch split ``B/n`` per device, "sharded" = ``jit`` over a ``Mesh``
with ``NamedSharding`` by default), compiles and runs 3 warm-up steps. Then
``--repeats`` rounds each time ``--steps`` steps on every device count in turn
(``jax.block_until_ready`` on the state after each run), so load changes on a
shared machine spread over all counts. Reported: the median images/s over the
repeats (and the range), the speed-up over ``n = 1`` and the parallel efficiency

    efficiency(n) = images/s(n) / (n * images/s(1)),

1.0 being perfect linear scaling. The global batch is fixed (strong scaling), as
the equality tests in ``tests/test_train_strategies.py`` are: the same training
run, spread out.

Forced CPU devices. Without ``--real-devices`` every subprocess runs with
``XLA_FLAGS=--xla_force_host_platform_device_count=n``: XLA pretends the host CPU
is ``n`` devices. They all share the same physical cores, so on this 2-core
machine the n-device run has no more compute than the 1-device run (which already
uses both cores through XLA:CPU's intra-op threads, if not fully). Any speed-up is
bounded by the core count, and past it efficiency falls at least as cores/n: here
it mostly measures the *overhead* of splitting the step (smaller per-device
matmuls and convolutions, all-reduces of the gradients, dispatch to n devices).
Real speed-ups need real devices.

The same command on real hardware (nothing changes in user code; only where it runs):

* one multi-GPU machine (e.g. 8 GPUs): ``pip install "jax[cuda12]"``, then
  ``python -m benchmarks.scaling --real-devices`` -- each run uses
  ``jax.devices()[:n]``; training is ``jaxcnn train --strategy sharded`` (the
  default when more than one device is visible), with ``--batch-size`` the
  global batch. ``CUDA_VISIBLE_DEVICES=0,1`` restricts the GPUs.
* a TPU VM (one host, 4 or 8 TPU cores): the same, with ``pip install "jax[tpu]"``.
* several hosts (a TPU pod slice, or GPU nodes): run the *same* command on every
  host. On a Cloud TPU pod slice ``jaxcnn train --distributed --out gs://... ``
  (or a shared file system) lets ``jax.distributed`` detect the coordinator and
  process ids (``gcloud compute tpus tpu-vm ssh NAME --worker=all --command
  "..."``); under SLURM/Open MPI the same ``--distributed``; anywhere else pass
  ``--coordinator HOST0:PORT --num-processes N --process-id I`` (or
  ``JAXCNN_COORDINATOR``/``JAXCNN_NUM_PROCESSES``/``JAXCNN_PROCESS_ID``). Every
  process reads its own rows of each global batch; the step spans all devices of
  all hosts.

Results go to ``benchmarks/results/scaling.md`` and ``scaling.json``
(``--quick``: ``benchmarks/results/quick/``), with the date, the machine and its
load average, because a shared machine makes these numbers noisy.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--devices", default="1,2,4,8", help="comma-separated device counts (default 1,2,4,8)")
    p.add_argument("--model", default="lwls_cnn", help="model name (default lwls_cnn)")
    p.add_argument("--image-size", type=int, default=28, help="digits resized to this size (default 28)")
    p.add_argument("--batch-size", type=int, default=256, help="global batch size, fixed for every n (default 256)")
    p.add_argument("--strategy", default="sharded", help="sharded | shard_map | pmap (default sharded)")
    p.add_argument("--steps", type=int, default=20, help="steps per timed repeat (default 20)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported (default 5)")
    p.add_argument(
        "--real-devices", action="store_true", help="use the real devices (GPU/TPU) instead of forced CPU devices"
    )
    p.add_argument("--quick", action="store_true", help="1 and 2 devices, 5 steps x 2 repeats; writes results/quick/")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results; --quick: results/quick)")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # internal: measure on n devices
    return p


# ----------------------------------------------------------------------------- one measurement (subprocess)


class _Bench:
    """The step, placed state and batches on ``jax.devices()[:n]``, compiled and warmed up."""

    def __init__(self, n: int, *, model_name: str, image_size: int, batch_size: int, strategy: str):
        import jax
        import jax.numpy as jnp
        import optax

        import jaxcnn
        from jaxcnn.train import create_train_state, make_train_step

        devices = jax.devices()[:n]
        if len(devices) < n:
            raise SystemExit(f"only {len(jax.devices())} devices visible, {n} requested")
        ds = jaxcnn.data.digits(size=image_size)
        axis = "data" if strategy in ("pmap", "shard_map") else None
        model = jaxcnn.get_model(model_name, axis_name=axis)
        state = create_train_state(
            model, optax.sgd(0.01, momentum=0.9), jax.ShapeDtypeStruct((1, *ds.x_train.shape[1:]), jnp.float32), seed=0
        )
        self.step = make_train_step(model, "cross_entropy", strategy, devices=devices)
        self.placed = self.step.place_state(state)
        self.batches = [
            self.step.place_batch(
                {
                    "x": ds.x_train[i * batch_size : (i + 1) * batch_size],
                    "y": ds.y_train[i * batch_size : (i + 1) * batch_size],
                }
            )
            for i in range(min(4, len(ds.x_train) // batch_size))
        ]
        self.batch_size = batch_size
        t0 = time.perf_counter()
        self.run(1)
        self.first_step_s = time.perf_counter() - t0
        self.run(3)
        self.info = {
            "devices": n,
            "platform": devices[0].platform,
            "strategy": self.step.strategy,
            "per_device_batch": batch_size // n,
            "first_step_s": self.first_step_s,
        }

    def run(self, steps: int) -> float:
        """Run ``steps`` steps; return images/s (wall time until the results exist)."""
        import jax

        t0 = time.perf_counter()
        for i in range(steps):
            self.placed, self.metrics = self.step(self.placed, self.batches[i % len(self.batches)])
        jax.block_until_ready((self.placed, self.metrics))
        return steps * self.batch_size / (time.perf_counter() - t0)


def _worker(n: int, args: argparse.Namespace) -> None:
    """Serve timed repeats on n devices: print a JSON "ready" line, then one JSON line per "run" on stdin."""
    bench = _Bench(
        n, model_name=args.model, image_size=args.image_size, batch_size=args.batch_size, strategy=args.strategy
    )
    print(json.dumps(bench.info), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        print(json.dumps({"images_per_s": bench.run(args.steps)}), flush=True)


def _start_worker(n: int, args: argparse.Namespace) -> tuple[subprocess.Popen, dict[str, Any]]:
    """A worker process on n (forced CPU, unless --real-devices) devices, compiled and warmed up."""
    env = dict(os.environ)
    if not args.real_devices:
        flags = [
            f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")
        ]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n}"])
        env["JAX_PLATFORMS"] = "cpu"
    argv = [
        sys.executable,
        "-m",
        "benchmarks.scaling",
        "--worker",
        str(n),
        "--model",
        args.model,
        "--image-size",
        str(args.image_size),
        "--batch-size",
        str(args.batch_size),
        "--strategy",
        args.strategy,
        "--steps",
        str(args.steps),
    ] + (["--real-devices"] if args.real_devices else [])
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, _reply(proc, n)


def _reply(proc: subprocess.Popen, n: int) -> dict[str, Any]:
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError(f"the {n}-device worker exited with code {proc.returncode} (its stderr is above)")
    return json.loads(line)


def measure_all(counts: Sequence[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Images/s on every device count, the repeats *interleaved* (1, 2, 4, 8, 1, 2, ...).

    One worker process per count (forced devices must be set before JAX starts),
    all compiled and warmed up first, one at a time. Then each round asks every
    worker for one timed repeat in turn, so a change in the machine's load
    during the run hits every device count alike instead of one of them.
    """
    workers: dict[int, tuple[subprocess.Popen, dict[str, Any]]] = {}
    try:
        for n in counts:
            workers[n] = _start_worker(n, args)
            print(f"{n} device(s): ready (first step {workers[n][1]['first_step_s']:.1f} s)", flush=True)
        rates: dict[int, list[float]] = {n: [] for n in counts}
        for _ in range(args.repeats):
            for n in counts:
                proc = workers[n][0]
                proc.stdin.write("run\n")
                proc.stdin.flush()
                rates[n].append(_reply(proc, n)["images_per_s"])
        for n in counts:
            print(f"{n} device(s): median {statistics.median(rates[n]):,.0f} img/s", flush=True)
        return [{**workers[n][1], "images_per_s": rates[n]} for n in counts]
    finally:
        for proc, _ in workers.values():
            if proc.poll() is None:
                proc.stdin.close()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


# ----------------------------------------------------------------------------- the table


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median images/s per run, speed-up over the 1-device run and efficiency = ips(n) / (n ips(1)).

    Example:
      >>> rows = summarize([{"devices": 1, "images_per_s": [90, 100, 110]},
      ...                   {"devices": 4, "images_per_s": [200, 200]}])
      >>> [(r["devices"], r["median"], r["speedup"], r["efficiency"]) for r in rows]
      [(1, 100, 1.0, 1.0), (4, 200.0, 2.0, 0.5)]
    """
    base = next((statistics.median(r["images_per_s"]) for r in runs if r["devices"] == 1), None)
    rows = []
    for r in sorted(runs, key=lambda r: r["devices"]):
        med = statistics.median(r["images_per_s"])
        speedup = None if base is None else med / base
        rows.append(
            {
                **r,
                "median": med,
                "low": min(r["images_per_s"]),
                "high": max(r["images_per_s"]),
                "speedup": speedup,
                "efficiency": None if speedup is None else speedup / r["devices"],
            }
        )
    return rows


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def to_markdown(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The result table with its conditions (date, machine, load) and what the numbers mean."""
    forced = not meta["real_devices"]
    lines = [
        f"# Data-parallel scaling: {meta['model']}, global batch {meta['batch_size']}, strategy {meta['strategy']}",
        "",
        f"`{meta['command']}`",
        "",
        f"- date: {meta['date']}; jax {meta['jax']}; Python {meta['python']}",
        (
            f"- machine: {meta['machine']}, {meta['cpus']} CPU cores visible; load average (1, 5, 15 min) "
            f"{meta['load_before']} before, {meta['load_after']} after"
        ),
        f"- devices: {'forced CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=n)' if forced else 'real devices'}",
        (
            f"- method: {meta['steps']} steps per timed repeat, median of {meta['repeats']} repeats after compile + 3 "
            f"warm-up steps, the repeats of all device counts interleaved, batches already on the devices; "
            f"efficiency = img/s(n) / (n x img/s(1))"
        ),
        "",
        "| devices | per-device batch | img/s (median) | range | speed-up | parallel efficiency | first step (compile) s |",
        "|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['devices']} | {r['per_device_batch']} | {r['median']:,.0f} | {r['low']:,.0f}-{r['high']:,.0f} | "
            f"{_fmt(r['speedup'], '.2f')} | {_fmt(r['efficiency'], '.2f')} | {r['first_step_s']:.1f} |"
        )
    lines.append("")
    if forced:
        lines += [
            f'Read this honestly: the "devices" are one CPU of {meta["cpus"]} cores that XLA splits into '
            "pretend devices sharing those same cores. The speed-up can never exceed the core count, and what "
            "speed-up there is comes from running the per-device programs concurrently on cores the 1-device run "
            "left partly idle (XLA:CPU spreads small convolutions over its threads only partly), not from more "
            f"hardware. Past {meta['cpus']} devices the efficiency must fall at least as {meta['cpus']}/n; what the "
            "table mostly measures is the cost of the split (smaller per-device kernels, the gradient all-reduce, "
            "dispatching to n devices). "
            + (
                "The machine was shared with other jobs during the run (see the load average), so the numbers "
                "are noisy, and a run with more devices also runs more threads, which win a larger share of the "
                "contended cores from the other jobs: on a loaded machine that alone can look like a speed-up. "
                "Re-run on a quiet machine for clean numbers. "
                if meta["load_before"][0] > 1.25 * meta["cpus"]
                else ""
            )
            + "On n real GPUs or TPU cores the same command with `--real-devices` measures real scaling.",
            "",
        ]
    lines += [
        "Same training on more hardware (no change in user code):",
        "",
        "```bash",
        "python -m benchmarks.scaling --real-devices          # one host with several GPUs / TPU cores",
        "jaxcnn train --strategy sharded --batch-size 256     # training on all local devices (the default with >1)",
        "jaxcnn train --distributed --out /shared/run         # every host of a TPU pod slice / SLURM job, same command",
        "jaxcnn train --coordinator HOST0:1234 --num-processes 2 --process-id $I --out /shared/run   # elsewhere",
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        _worker(args.worker, args)
        return 0
    if args.quick:
        args.devices, args.steps, args.repeats = "1,2", 5, 2
    counts = [int(c) for c in args.devices.split(",") if c.strip()]
    if any(args.batch_size % n for n in counts):
        raise SystemExit(f"--batch-size {args.batch_size} must be divisible by every device count {counts}")
    import jax

    out_dir = Path(args.out) if args.out else RESULTS / ("quick" if args.quick else "")
    meta = {
        "model": args.model,
        "batch_size": args.batch_size,
        "strategy": args.strategy,
        "steps": args.steps,
        "repeats": args.repeats,
        "real_devices": args.real_devices,
        "jax": jax.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {_cpu_name()}",
        "cpus": os.cpu_count(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
        "command": "python -m benchmarks.scaling " + " ".join(argv if argv is not None else sys.argv[1:]),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    runs = measure_all(counts, args)
    meta["load_after"] = [round(x, 2) for x in os.getloadavg()]
    rows = summarize(runs)
    text = to_markdown(rows, meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scaling.md").write_text(text)
    (out_dir / "scaling.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(text)
    print(f"wrote {out_dir / 'scaling.md'} and {out_dir / 'scaling.json'}")
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
