"""The NaN guard's cost: the compiled train step with ``guard=True`` (the default) against ``guard=False``.

    python -m benchmarks.nan_guard [--repeats 7] [--out benchmarks/results]    # ~1 min on 2 cores

The guard adds, per step, one finiteness probe per parameter leaf (an unsplit
step's gradients, a split step's input parameters) and one label-range count
(:func:`jaxcnn.train.train_step_body`); the host reads them with the loss, one
step late. Both steps run in one process on the
same batch and the same initial values, interleaved (:mod:`benchmarks._timing`);
the ratio ``guarded / unguarded - 1`` is the overhead. Writes ``nan-guard.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

import jaxcnn
from benchmarks._timing import Case, loadavg, measure
from jaxcnn import train

CONFIGS = (("lwls_cnn", (28, 28, 1), 32), ("lwls_cnn", (28, 28, 1), 128), ("resnet_tiny", (32, 32, 3), 64))


def _case(name: str, model: Any, batch: dict, guard: bool) -> Case:
    step = train.make_train_step(model, "cross_entropy", "jit", guard=guard)
    state = step.place_state(train.create_train_state(model, optax.adam(1e-3), batch["x"][:1], seed=0))
    placed = step.place_batch(batch)
    box = [state]

    def body(n: int) -> None:
        for _ in range(n):
            box[0], metrics = step(box[0], placed)
            step.fetch_metrics(metrics)  # fit reads every step's metrics (one step late)

    return Case(name, lambda: body(1), body)


def measure_guard(repeats: int = 7, min_time: float = 0.3, log: Any = None) -> list[dict]:
    """One row per configuration: ms per step with and without the guard, and the overhead."""
    rows = []
    for name, shape, batch_size in CONFIGS:
        rng = np.random.default_rng(0)
        batch = {
            "x": rng.standard_normal((batch_size, *shape)).astype(np.float32),
            "y": rng.integers(0, 10, batch_size).astype(np.int32),
        }
        model = jaxcnn.get_model(name)
        stats = measure(
            [_case("guard", model, batch, True), _case("no guard", model, batch, False)],
            repeats=repeats,
            min_time=min_time,
            log=log,
        )
        on, off = stats["guard"], stats["no guard"]
        rows.append(
            {
                "model": name,
                "batch": batch_size,
                "guard_ms": 1e3 * on.median_s,
                "no_guard_ms": 1e3 * off.median_s,
                "overhead": on.median_s / off.median_s - 1,
                "noise": max(on.iqr_rel, off.iqr_rel),
            }
        )
    return rows


def render(rows: list[dict], load: Any) -> str:
    lines = [
        "# The NaN guard's cost (`python -m benchmarks.nan_guard`)",
        "",
        f"One process, {jax.devices()[0].device_kind} ({jax.device_count()} device(s)), Adam, strategy jit, the "
        f"batch split on its default; load average before the run: {load}.",
        "",
        "| model | batch | guard (ms/step) | no guard (ms/step) | overhead | noise (IQR/median) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['batch']} | {r['guard_ms']:.2f} | {r['no_guard_ms']:.2f} | "
        f"{100 * r['overhead']:+.1f}% | {100 * r['noise']:.1f}% |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.3)
    parser.add_argument("--out", default=None, help="folder for nan-guard.md (default: print only)")
    args = parser.parse_args(argv)
    load = loadavg()
    rows = measure_guard(args.repeats, args.min_time, log=print)
    text = render(rows, load)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "nan-guard.md").write_text(text)
    return rows


if __name__ == "__main__":
    main()
