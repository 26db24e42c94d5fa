"""The batch split traces one part's gradient once, however many parts (jaxcnn.train.split, first-call time)."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcnn
from jaxcnn.train import create_train_state, make_train_step, split

BATCH = 64
TRACES: list[int] = []  # one entry per trace of _Counted.__call__


class _Counted(nn.Module):
    """A small CNN that records every time its forward is traced (a Python side effect)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        TRACES.append(x.shape[0])
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        return nn.Dense(10)(x.reshape((x.shape[0], -1)))


def _state_and_batch(model, step):
    state = create_train_state(model, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32), seed=0)
    rng = np.random.default_rng(0)
    batch = {"x": rng.standard_normal((BATCH, 8, 8, 1), np.float32), "y": rng.integers(0, 10, BATCH).astype(np.int32)}
    return step.place_state(state), step.place_batch(batch)


def _traced_rows(batch_split):
    """The batch sizes the model's forward was traced with while the step was traced (``make_jaxpr``)."""
    model = _Counted()
    step = make_train_step(model, "cross_entropy", "jit", devices=jax.devices()[:1], batch_split=batch_split)
    state, batch = _state_and_batch(model, step)
    TRACES.clear()
    jax.make_jaxpr(step.fn)(state, batch)
    return list(TRACES)


def test_one_forward_trace_per_step_whatever_the_parts():
    """Unsplit: the forward is traced at the whole batch; split in k parts: once at the part's size, not k times."""
    whole = _traced_rows(1)
    assert whole.count(BATCH) >= 1
    for parts in (2, 4, 8):
        traced = _traced_rows(parts)
        assert traced.count(BATCH // parts) == 1, (parts, traced)
        # plus one abstract trace at the whole batch (split.mixing_layers: may the batch be split?)
        assert len(traced) == len(whole) + 1, (parts, traced)


@pytest.mark.parametrize("parts, group, loops", [(2, 2, 0), (4, 4, 0), (8, 4, 1), (12, 4, 1), (6, 3, 1), (5, 5, 0)])
def test_lowered_step_holds_one_copy_of_the_part(parts, group, loops):
    """The lowered program's convolutions and matmuls: as many as the unsplit step's (the part is one function),
    called side by side ``group`` times, in a loop over the groups past ``split.GROUP`` parts."""
    model = jaxcnn.get_model("lwls_cnn")
    batch = 60 if parts in (5, 6, 12) else BATCH

    def ops(batch_split):
        step = make_train_step(model, "cross_entropy", "jit", devices=jax.devices()[:1], batch_split=batch_split)
        state = create_train_state(model, optax.sgd(0.1), jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32))
        state = step.place_state(state)
        x = np.zeros((batch, 28, 28, 1), np.float32)
        text = step.fn.lower(state, step.place_batch({"x": x, "y": np.zeros(batch, np.int32)})).as_text()
        counts = (text.count("stablehlo.convolution"), text.count("stablehlo.dot_general"))
        return counts, len(re.findall(r"call @one_part\b", text)), text.count("stablehlo.while")

    assert split.group_size(parts) == group
    with jaxcnn.functional.default_conv_algorithm("xla"):
        counts, calls, whiles = ops(1)
        split_counts, split_calls, split_whiles = ops(parts)
    assert min(counts) > 0 and calls == 0
    assert split_counts == counts
    assert (split_calls, split_whiles - whiles) == (group, loops)
