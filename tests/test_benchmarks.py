"""The benchmark harness: its peers compute what jaxcnn computes, its timing logic, its result files.

No timing thresholds: the peers are checked for *equal results* (PyTorch and
plain Flax against jaxcnn on the same weights and data), the timing loop
against a fake clock, the writers on a hand-made result.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jaxcnn
from benchmarks import _timing, peers, run
from jaxcnn.train import create_train_state, make_optimizer, make_train_step


def _count(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


# ---------------------------------------------------------------- LWLS CNN: PyTorch and Flax vs jaxcnn


@pytest.fixture(scope="module")
def lwls():
    """jaxcnn's LWLS CNN with Adam(1e-3), its initial state and one batch of 8 random digits."""
    model = jaxcnn.get_model("lwls_cnn", num_classes=10)
    state = create_train_state(
        model, make_optimizer("adam", 1e-3), jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32), seed=0
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 8).astype(np.int32)
    return model, state, x, y


def _jaxcnn_two_steps(model, state, x, y):
    """Losses of jaxcnn's first two train steps (the second after one Adam update) and the updated params."""
    step = make_train_step(model, "cross_entropy", strategy="jit")
    placed = step.place_state(state)
    batch = step.place_batch({"x": x, "y": y})
    placed, m1 = step(placed, batch)
    placed, m2 = step(placed, batch)
    return float(m1["loss"]), float(m2["loss"]), jax.device_get(placed.params)


def test_torch_lwls_same_loss_and_adam_step_as_jaxcnn(lwls):
    model, state, x, y = lwls
    net = peers.TorchLWLSCNN(exact_padding=True)
    peers.copy_jaxcnn_to_torch(state.params, {}, net, peers.HWC_INPUTS["lwls_cnn"])
    opt = peers.torch_optimizer("adam", net.parameters(), 1e-3)
    tx = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
    step = peers.torch_train_step(net, opt, tx, torch.from_numpy(y.astype(np.int64)))
    t1 = step().item()
    t2 = step().item()  # the loss after one Adam update
    j1, j2, params = _jaxcnn_two_steps(model, state, x, y)
    np.testing.assert_allclose(t1, j1, rtol=1e-5)
    np.testing.assert_allclose(t2, j2, rtol=1e-5)
    assert abs(t2 - t1) > 1e-4  # the update changed something, so the second comparison means something
    # after two updates: conv1's kernel in PyTorch's (O, I, kh, kw) layout
    np.testing.assert_allclose(
        net.conv1.weight.detach().numpy(), np.transpose(params["conv1"]["kernel"], (3, 2, 0, 1)), atol=2e-6
    )


def test_torch_lwls_benchmark_variant_has_jaxcnns_shapes_and_parameter_count(lwls):
    _, state, _, _ = lwls
    net = peers.torch_model("lwls_cnn")  # padding 2/2 in conv2, as PyTorch users write it
    assert sum(p.numel() for p in net.parameters()) == _count(state.params) == 122_270
    out = net(torch.zeros(3, 1, 28, 28))
    assert tuple(out.shape) == (3, 10)
    with torch.no_grad():
        h = torch.relu(net.conv2(torch.relu(net.conv1(torch.zeros(1, 1, 28, 28)))))
    assert tuple(h.shape) == (1, 8, 14, 14)  # jaxcnn's 14x14x8 after conv2


def test_flax_lwls_same_params_tree_and_same_step_as_jaxcnn(lwls):
    model, state, x, y = lwls
    fmodel = peers.flax_model("lwls_cnn")
    abstract = jax.eval_shape(fmodel.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert _shapes(abstract["params"]) == _shapes(state.params)
    params = jax.tree.map(jnp.array, state.params)  # a copy: the Flax step donates its state
    fstate = peers.flax_create_state(fmodel, peers.flax_optimizer("adam", 1e-3), (28, 28, 1), params=params)
    batch = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
    fstate, m1 = peers.flax_train_step_jit(fstate, batch)
    fstate, m2 = peers.flax_train_step_jit(fstate, batch)
    j1, j2, jparams = _jaxcnn_two_steps(model, state, x, y)
    np.testing.assert_allclose(float(m1["loss"]), j1, rtol=1e-5)
    np.testing.assert_allclose(float(m2["loss"]), j2, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), jax.device_get(fstate.params), jparams)
    logits = fmodel.apply({"params": state.params}, jnp.asarray(x))  # `params` itself was donated
    np.testing.assert_allclose(float(m1["accuracy"]), float(np.mean(np.argmax(logits, -1) == y)))


# ---------------------------------------------------------------- ResNet-18 (CIFAR stem)


def test_resnet18_peers_have_jaxcnns_layout_and_compute_the_same_logits():
    model = jaxcnn.get_model("resnet18", num_classes=10, stem="cifar")
    abstract = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    net = peers.torch_model("resnet18_cifar")
    fmodel = peers.flax_model("resnet18_cifar")
    fabstract = jax.eval_shape(
        lambda k, x: fmodel.init(k, x, train=False), jax.random.key(0), jnp.zeros((1, 32, 32, 3))
    )
    # the CIFAR ResNet-18 count (torchvision's layout with a 3x3 stem, no max-pool, 10 classes)
    assert sum(p.numel() for p in net.parameters()) == _count(abstract["params"]) == 11_173_962
    assert _shapes(fabstract) == _shapes(abstract)  # same names and shapes: params and batch_stats

    # random (not initial) weights and statistics, so every layer matters; training-mode BatchNorm
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda a: (0.2 * rng.standard_normal(a.shape)).astype(np.float32), abstract["params"])
    stats = jax.tree.map(lambda a: (1 + 0.1 * rng.random(a.shape)).astype(np.float32), abstract["batch_stats"])
    x = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
    variables = {"params": params, "batch_stats": stats}
    logits_j, _ = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    logits_f, _ = jax.jit(lambda v, x: fmodel.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
    peers.copy_jaxcnn_to_torch(params, stats, net)
    net.train()
    with torch.no_grad():
        logits_t = net(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))).numpy()
    scale = float(np.max(np.abs(logits_t)))
    assert scale > 1e-3
    np.testing.assert_allclose(np.asarray(logits_j), logits_t, atol=1e-4 * scale)
    np.testing.assert_allclose(np.asarray(logits_f), logits_t, atol=1e-4 * scale)


# ---------------------------------------------------------------- timing logic, against a fake clock


class FakeClock:
    """``time.perf_counter`` replaced: each case's body advances it by ``cost`` per iteration."""

    def __init__(self):
        self.now = 0.0
        self.calls: list[tuple[str, int]] = []

    def perf_counter(self):
        return self.now

    def case(self, name, cost, first_cost):
        def first():
            self.now += first_cost
            self.calls.append((name, 0))

        def body(n):
            self.now += cost * n
            self.calls.append((name, n))

        return _timing.Case(name, first, body)


def test_measure_interleaves_calibrates_and_reports_per_iteration_medians(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(_timing.time, "perf_counter", clock.perf_counter)
    fast = clock.case("fast", 0.001, 2.0)
    slow = clock.case("slow", 0.5, 9.0)
    stats = _timing.measure([fast, slow], repeats=4, min_time=0.3)
    assert stats["fast"].median_s == pytest.approx(0.001) and stats["slow"].median_s == pytest.approx(0.5)
    assert stats["fast"].first_call_s == pytest.approx(2.0) and stats["slow"].first_call_s == pytest.approx(9.0)
    assert stats["fast"].iters * 0.001 >= 0.3 - 1e-9  # a repeat lasts at least min_time
    assert stats["slow"].iters == 1
    timed = [name for name, n in clock.calls if n == stats[name].iters][-8:]
    assert timed == ["fast", "slow"] * 4  # A, B, A, B, ...: interleaved
    # the slow case: first call, one warm-up/calibration call, then the repeats, nothing else
    assert [n for name, n in clock.calls if name == "slow"] == [0, 1, 1, 1, 1, 1]


def test_stats_quartiles_and_dict():
    st = _timing.Stats([4.0, 1.0, 3.0, 2.0, 5.0], iters=7, first_call_s=10.0)
    assert (st.median_s, st.q1_s, st.q3_s, st.min_s) == (3.0, 2.0, 4.0, 1.0)
    d = st.to_dict()
    assert (
        d["iqr_rel"] == pytest.approx(2 / 3)
        and d["iters_per_repeat"] == 7
        and d["samples_s"] == [4.0, 1.0, 3.0, 2.0, 5.0]
    )


def test_peak_rss_reset_sees_a_new_allocation():
    if _timing.peak_rss_bytes() is None or not _timing.reset_peak_rss():
        pytest.skip("no /proc/self/status or clear_refs here")
    before = _timing.rss_bytes()
    a = np.ones(64 * 2**20 // 8)  # 64 MB, touched
    grown = _timing.peak_rss_bytes() - before
    del a
    assert grown >= 48 * 2**20


def test_machine_slug():
    assert _timing.machine_slug("Intel(R) Xeon(R) Platinum 8480C", 2) == "intel-xeon-platinum-8480c-2cores"
    assert _timing.machine_slug("AMD EPYC 9654 96-Core Processor", 16) == "amd-epyc-9654-16cores"
    assert _timing.machine_slug("AMD EPYC", 2) == "amd-epyc-2cores"
    assert run.output_stem("amd-epyc-2cores", None, None) == "amd-epyc-2cores"
    assert run.output_stem("amd-epyc-2cores", "training,memory", "b128") == "amd-epyc-2cores.training-memory.b128"


# ---------------------------------------------------------------- writers on a hand-made result


def _stats(median, first=1.0):
    return _timing.Stats([median * 0.9, median, median * 1.1], iters=3, first_call_s=first).to_dict()


def fake_results():
    machine = {
        "cpu_model": "Fake CPU 9000",
        "cpu": {"cpu_family": "25", "model": "17", "vector_extensions": ["avx2", "avx512f"]},
        "cores": 2,
        "slug": "fake-cpu-9000-2cores",
        "memory_bytes": 2**34,
        "versions": {"jax": "0.0"},
        "git": "abc",
        "env": {},
        "date_utc": "2026-01-01 00:00:00 UTC",
        "load_start": (0.1, 0.2, 0.3),
        "load_end": (0.2, 0.2, 0.3),
        "torch_threads": 2,
        "jax_devices": ["cpu:0"],
    }
    settings = {
        "command": "python -m benchmarks.run",
        "repeats": 3,
        "min_time_s": 0.3,
        "training_min_time_s": 0.5,
        "duration_s": 60.0,
    }
    matmul = {
        "n": 2048,
        "xla_gflops": 100.0,
        "torch_gflops": 120.0,
        "stats": {"xla": _stats(0.17), "torch": _stats(0.14)},
    }
    prim = [
        {
            "name": "lwls_conv1",
            "pass": pas,
            "what": "N=128 28x28x1 -> 4",
            "macs": 10_000_000,
            "flops": 2e7 * (1 if pas == "fwd" else 3),
            "stats": {
                "jaxcnn": _stats(0.002),
                "lax": _stats(0.002),
                "torch": _stats(0.001),
                "torch 1-thread": _stats(0.0015),
            },
        }
        for pas in ("fwd", "fwd+bwd")
    ]
    peers_ = {"jaxcnn k=1": 0.010, "jaxcnn k=4": 0.036, "torch": 0.020, "torch 1-thread": 0.030, "flax": 0.012}
    train = [
        {
            "name": "lwls_cnn_b128",
            "what": "LWLS CNN 28x28x1, batch 128, Adam(1e-3)",
            "config": {"model": "lwls_cnn", "batch": 128, "optimizer": "adam", "lr": 1e-3, "steps_per_call": 4},
            "peers": {
                k: {
                    "stats": _stats(t, first=3.0),
                    "images_per_call": 128 * (4 if k == "jaxcnn k=4" else 1),
                    "images_per_s": 128 * (4 if k == "jaxcnn k=4" else 1) / t,
                    "xla_memory": {"temp_size_in_bytes": 2**20} if k.startswith("jaxcnn") else None,
                }
                for k, t in peers_.items()
            },
        }
    ]
    mem = [
        {
            "name": "lwls_cnn_b128",
            "what": "LWLS CNN 28x28x1, batch 128, Adam(1e-3)",
            "peers": {
                "torch": {
                    "baseline_rss_bytes": 5 * 2**20,
                    "built_above_baseline_bytes": 2**20,
                    "compile_peak_above_baseline_bytes": 3 * 2**20,
                    "steady_peak_above_baseline_bytes": 4 * 2**20,
                    "step_transient_bytes": 2**20,
                    "steady_peak_rss_bytes": 9 * 2**20,
                    "first_call_s_cold": 0.5,
                },
                "flax": {"error": "boom"},
            },
        }
    ]
    return {
        "machine": machine,
        "settings": settings,
        "matmul": matmul,
        "primitives": prim,
        "training": train,
        "memory": mem,
    }


def _tables(md: str) -> list[list[str]]:
    """Every markdown table as its list of lines."""
    tables, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    return tables + ([cur] if cur else [])


def test_writers_produce_consistent_markdown_and_json(tmp_path):
    results = fake_results()
    md_path, js_path = run.write(results, tmp_path, "fake")
    md = md_path.read_text()
    assert json.loads(js_path.read_text())["training"][0]["peers"]["torch"]["images_per_s"] == pytest.approx(6400)
    for t in _tables(md):
        widths = {line.count("|") for line in t}
        assert len(widths) == 1, t  # every row has the header's number of cells
        assert re.fullmatch(r"\|(---\|)+", t[1]), t[1]
    for heading in (
        "## Peak: float32 matmul",
        "## Training throughput",
        "## First call",
        "## Peak memory",
        "## Primitives",
        "## Closing note: targets",
        "## Method and its limits",
    ):
        assert heading in md
    row = next(line for line in md.splitlines() if line.startswith("| LWLS CNN") and "12,800" in line)
    # jaxcnn k=1 12,800 img/s, k=4 14,222, torch 6,400, torch 1T 4,267, flax 10,667
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:6] == ["12,800", "14,222 (k=4)", "6,400", "4,267", "10,667"]
    assert cells[6:11] == ["2.00x", "2.22x", "2.22x", "1.20x", "1.11x"]
    assert "missed" not in md.split("## Closing note")[1].split("## Method")[0]  # 2.22x: met; k=4 1.11x: met
    prim_rows = [line for line in md.splitlines() if line.startswith("| lwls_conv1")]
    assert (
        len(prim_rows) == 2 and "| 0.50x | 0.75x | 1.00x | 10.0 | 10% |" in prim_rows[0]
    )  # torch/jaxcnn; 2e7 flops / 2 ms
    assert "| failed |" in md and "Fake CPU 9000" in md and "start 0.1 / 0.2 / 0.3" in md


def test_flop_rate_table_counts_six_flop_per_mac_against_the_matmul_peak():
    results = fake_results()
    assert "## Training arithmetic rate" not in run.render_markdown(results)  # records without a MAC count: no table
    results["training"][0]["forward_macs_per_example"] = 430_064  # the LWLS CNN's (jaxcnn.analysis.summary)
    lines = "\n".join(run.render_flop_rate(results["training"], {"xla_gflops": 100.0})).splitlines()
    row = next(line for line in lines if line.startswith("| LWLS CNN"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # 6 x 430,064 = 2.580384 MFLOP per image; x 12,800 img/s = 33.03 GFLOP/s, 33% of 100; torch 6,400 img/s: 16.5
    assert cells[1:4] == ["0.00258", "33 (33%)", "36.7 (37%)"]
    assert cells[4] == "16.5 (17%)"
    assert run.render_flop_rate(results["training"], None) == []


def test_closing_note_says_by_how_much_a_target_is_missed():
    results = fake_results()
    p = results["training"][0]["peers"]
    for k in ("jaxcnn k=1", "jaxcnn k=4"):
        p[k]["images_per_s"] /= 4  # k=1: 3,200 img/s vs torch 6,400 -> 0.50x
    p["jaxcnn k=4"]["images_per_s"] /= 2  # k=4 now 0.56x of k=1
    note = "\n".join(run.render_closing(results))
    assert "0.50x; target >= 1.0x missed by 50% (jaxcnn needs 2.00x its speed to match)" in note
    assert "steps_per_call 4 vs 1: 0.56x (slower by 44%: missed)" in note


# ---------------------------------------------------------------- end to end


def test_quick_run_end_to_end_in_a_subprocess(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # not conftest's 8 fake devices
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--only",
            "primitives",
            "--select",
            "max_pool",
            "--repeats",
            "2",
            "--min-time",
            "0.01",
            "--matmul-n",
            "256",
            "--out",
            str(tmp_path),
        ],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (md,) = tmp_path.glob("*.primitives.max_pool.md")
    data = json.loads(md.with_suffix(".json").read_text())
    assert [(r["name"], r["pass"]) for r in data["primitives"]] == [("max_pool", "fwd"), ("max_pool", "fwd+bwd")]
    assert set(data["primitives"][0]["stats"]) >= {"jaxcnn", "lax", "torch"}
    assert data["matmul"]["n"] == 256 and data["machine"]["versions"]["jax"] == jax.__version__
    assert "## Primitives" in md.read_text()


def test_render_rewrites_markdown_from_json(tmp_path):
    src = tmp_path / "fake-cpu.json"
    src.write_text(json.dumps(fake_results()))
    assert run.main(["--render", str(src)]) == 0
    assert "## Training throughput" in (tmp_path / "fake-cpu.md").read_text()


def test_nan_guard_benchmark_measures_both_steps(monkeypatch):
    from benchmarks import nan_guard

    monkeypatch.setattr(nan_guard, "CONFIGS", (("lwls_cnn", (28, 28, 1), 8),))
    rows = nan_guard.measure_guard(repeats=1, min_time=0.01)
    assert len(rows) == 1 and rows[0]["guard_ms"] > 0 and rows[0]["no_guard_ms"] > 0
    text = nan_guard.render(rows, None)
    assert "| lwls_cnn | 8 |" in text and "%" in text


def test_fwd_bwd_rows_return_the_forward_so_xla_cannot_drop_it():
    """A convolution's gradients need only x, w and g: without its output returned, XLA would time the backward alone."""
    from benchmarks.primitives import _vjp_all

    x = jnp.arange(1.0, 7.0).reshape(2, 3)
    w = jnp.full((1, 3), 2.0)
    y, (dx, dw) = _vjp_all(lambda x, w: x * w)(jnp.ones((2, 3)), x, w)
    np.testing.assert_array_equal(y, 2.0 * x)  # by hand: y = 2x, dy/dx = w, dy/dw summed over rows
    np.testing.assert_array_equal(dx, np.full((2, 3), 2.0))
    np.testing.assert_array_equal(dw, [[5.0, 7.0, 9.0]])
