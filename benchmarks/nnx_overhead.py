"""NNX overhead: the compiled train step of lwls_cnn in Linen and in NNX, timed in one process.

    python -m benchmarks.nnx_overhead [--batch-size 128] [--repeats 5]    # ~1 min on 2 cores

Three steps on the same batch, same Adam optimizer, same initial values:

* ``linen``: ``jaxcnn.train.make_train_step(linen_model, strategy="jit", batch_split=1)``;
* ``nnx (engine)``: the same engine step on ``jaxcnn.nnx.as_linen_like(nnx_model)``
  (``nnx.merge`` / ``nnx.split`` inside the compiled step);
* ``nnx (nnx.jit)``: a plain ``nnx.jit`` step with ``nnx.Optimizer`` on the NNX model.

The NNX model is ``jaxcnn.get_model("lwls_cnn", api="nnx")`` holding the Linen
initial values. The rules of :mod:`benchmarks._timing` apply (first call timed
apart, interleaved repeats, median). The ratio ``nnx / linen`` is the overhead
(1.00 = as fast).
"""

from __future__ import annotations

import argparse
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

import jaxcnn
import jaxcnn.nnx as jnnx
from benchmarks._timing import Case, loadavg, measure
from jaxcnn import train


def _engine_case(name: str, model: Any, params: Any, batch: dict) -> Case:
    step = train.make_train_step(model, "cross_entropy", "jit", batch_split=1)
    state = step.place_state(train.create_train_state(model, optax.adam(1e-3), batch["x"], params=params))
    placed = step.place_batch(batch)
    box = [state]

    def body(n: int) -> None:
        for _ in range(n):
            box[0], metrics = step(box[0], placed)
        jax.block_until_ready(metrics)

    return Case(name, lambda: body(1), body)


def _nnx_jit_case(name: str, model: nnx.Module, batch: dict) -> Case:
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    x, y = jax.device_put(batch["x"]), jax.device_put(batch["y"])

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x, train=True), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    def body(n: int) -> None:
        for _ in range(n):
            loss = step(model, optimizer, x, y)
        jax.block_until_ready(loss)

    return Case(name, lambda: body(1), body)


def measure_overhead(batch_size: int = 128, repeats: int = 5, min_time: float = 0.3, log: Any = None) -> dict:
    """Seconds per step of the three lwls_cnn steps and the NNX/Linen ratios.

    Returns:
      ``{"batch_size": ..., "loadavg": ..., "steps": {name: {"median_s", "first_call_s"}},
      "ratio": {name: median / linen median}}``.
    """
    rng = np.random.default_rng(0)
    batch = {
        "x": rng.standard_normal((batch_size, 28, 28, 1)).astype(np.float32),
        "y": rng.integers(0, 10, batch_size).astype(np.int32),
    }
    linen = jaxcnn.get_model("lwls_cnn")
    init = train.create_train_state(linen, optax.adam(1e-3), batch["x"])
    params = jax.tree.map(np.asarray, init.params)
    module = jnnx.from_linen(jaxcnn.get_model("lwls_cnn", api="nnx"), {"params": params})
    cases = [
        _engine_case("linen", linen, params, batch),
        _engine_case("nnx (engine)", jnnx.as_linen_like(module), params, batch),
        _nnx_jit_case("nnx (nnx.jit)", nnx.clone(module), batch),
    ]
    stats = measure(cases, repeats=repeats, min_time=min_time, log=log)
    base = stats["linen"].median_s
    return {
        "batch_size": batch_size,
        "loadavg": loadavg(),
        "steps": {k: {"median_s": s.median_s, "first_call_s": s.first_call_s} for k, s in stats.items()},
        "ratio": {k: s.median_s / base for k, s in stats.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    result = measure_overhead(args.batch_size, args.repeats, log=print)
    print(f"\nlwls_cnn train step, batch {result['batch_size']}, load average {result['loadavg']}")
    print("| step | ms / step | first call (s) | / linen |\n|---|---|---|---|")
    for name, s in result["steps"].items():
        print(f"| {name} | {1e3 * s['median_s']:.2f} | {s['first_call_s']:.1f} | {result['ratio'][name]:.2f}x |")
    return result


if __name__ == "__main__":
    main()
