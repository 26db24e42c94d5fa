"""XLA:CPU compiler options per compiled step (F.cpu_compiler_options): the rule, and the same numbers."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcnn
import jaxcnn.functional as F
import jaxcnn.nn as jnn
from jaxcnn.train import create_train_state, make_eval_step, make_train_step


def _kernels(*shapes):
    return {f"k{i}": {"kernel": jnp.zeros(s)} for i, s in enumerate(shapes)}


@pytest.mark.parametrize(
    "shapes, eigen",
    [
        ([(5, 5, 1, 4), (5, 5, 4, 8), (4, 4, 8, 12), (588, 200), (200, 10)], False),  # LWLS: at most 96 pairs
        ([(3, 3, 8, 16)], True),  # 128 pairs: the threshold
        ([(3, 3, 3, 64)], True),  # ResNet's CIFAR stem, 192 pairs
        ([(3, 3, 64, 64), (64,)], True),
        ([(1024, 1024)], False),  # a dense kernel is not a convolution
        ([(3, 64, 64)], True),  # 1-D convolution kernels count
        ([], False),
    ],
)
def test_rule(shapes, eigen):
    options = F.cpu_compiler_options(_kernels(*shapes))
    if eigen:
        assert options == {
            "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
        }
    else:
        assert options is None


class _Wide(nn.Module):
    @nn.compact
    def __call__(self, x, *, train=False):
        x = jax.nn.relu(jnn.Conv(64, 3)(x))
        x = jax.nn.relu(jnn.Conv(64, 3)(x))
        return nn.Dense(10)(F.global_avg_pool(x))


def _ynn_ops(fn, *args) -> set[str]:
    """The ops XLA:CPU handed to YNNPACK in the compiled function."""
    text = fn.lower(*args).compile().as_text()
    found = (re.search(r'op_name="[^"]*/([a-z_]+)"', line) for line in text.splitlines() if "__ynn_fusion" in line)
    return {m.group(1) for m in found if m}


def test_step_with_wide_kernels_compiles_without_ynn_convolutions_and_computes_the_same():
    model = _Wide()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 16, 16, 64)).astype(np.float32)
    y = rng.integers(0, 10, (4, 16)).astype(np.int32)
    state = create_train_state(model, optax.sgd(0.1, momentum=0.9), jax.ShapeDtypeStruct((1, 16, 16, 64), jnp.float32))
    step = make_train_step(model, "cross_entropy", "jit", batch_split=1)
    placed = step.place_state(state)
    batch = step.place_batch({"x": x[0], "y": y[0]})
    chosen, default = step.fn_for(placed), step.fn
    assert chosen is not default
    assert "conv_general_dilated" in _ynn_ops(default, placed, batch)  # XLA's default: YNNPACK convolutions
    assert "conv_general_dilated" not in _ynn_ops(chosen, placed, batch)
    assert "dot_general" in _ynn_ops(chosen, placed, batch)  # dots stay with YNNPACK

    def run(fn):
        s = jax.tree.map(jnp.copy, placed)
        for i in range(4):
            s, m = fn(s, step.place_batch({"x": x[i], "y": y[i]}))
        return s, m

    (a, ma), (b, mb) = run(default), run(chosen)  # two convolution libraries, one training run
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-5)
    assert float(ma["loss"]) == pytest.approx(float(mb["loss"]), rel=1e-4)
    ev = make_eval_step(model, "cross_entropy", "jit")
    assert ev.fn_for({"params": b.params}) is not ev.fn


def test_small_kernels_and_pmap_keep_the_defaults():
    lwls = jaxcnn.get_model("lwls_cnn")
    state = create_train_state(lwls, optax.adam(1e-3), jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32))
    step = make_train_step(lwls, "cross_entropy", "jit")
    assert step.fn_for(state) is step.fn
    wide = _Wide()
    wstate = create_train_state(wide, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 8, 8, 64), jnp.float32))
    pm = make_train_step(wide, "cross_entropy", "pmap", devices=jax.devices()[:2])
    assert pm.fn_for(wstate) is pm.fn  # jax.pmap takes no compiler options
