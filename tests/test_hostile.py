"""A hostile user, property-based: malformed calls across the whole API, each must fail clearly.

Every *family* is one argument of one entry point (``make_optimizer``'s
``learning_rate``, ``Conv``'s input, ``get_model``'s ``num_classes``, ...) with a
Hypothesis strategy that draws only malformed values for it. For every draw the
call must raise a ``ValueError`` or ``TypeError`` raised inside jaxcnn (the
traceback's last frame is in the package) whose message names the argument.
Anything else is counted: *foreign* (another exception type, raised by Flax,
optax, JAX or NumPy, or a message that does not name the argument) or *silently
accepted* (no exception). The test prints how many distinct calls were tried and
how they ended, and requires >= 150 distinct calls, 0 foreign, 0 silent.
"""

from __future__ import annotations

import functools
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxcnn
import jaxcnn.data as D
import jaxcnn.functional as F
import jaxcnn.nn as jnn
from jaxcnn.models import check_input, get_model
from jaxcnn.train import (
    Checkpointer,
    create_train_state,
    get_loss,
    losses,
    make_optimizer,
    make_schedule,
)
from jaxcnn.train.checks import check_batch, check_labels
from jaxcnn.train.oom import oom_guard

PACKAGE = str(Path(jaxcnn.__file__).resolve().parent)
KEY = jax.random.key(0)


@dataclass(frozen=True)
class Family:
    """One argument of one entry point: ``call(value)`` with a malformed ``value`` must name ``arg``."""

    name: str
    arg: str
    bad: st.SearchStrategy
    call: Callable[[Any], Any]


# ---------------------------------------------------------------- shared fixtures (built once)


def _init(module, shape, **kw):
    """The module and zero variables of the shapes its init gives (traced, never compiled: every
    call below must fail before computing anything, so the values do not matter)."""
    shapes = jax.eval_shape(functools.partial(module.init, **kw), KEY, jax.ShapeDtypeStruct(shape, jnp.float32))
    return module, jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes)


_conv = functools.cache(lambda: _init(jnn.Conv(3, 3), (1, 6, 6, 1)))
_bn = functools.cache(lambda: _init(jnn.BatchNorm(), (2, 4, 4, 2), use_running_average=False))
_mlp = functools.cache(lambda: _init(get_model("mlp", widths=(8,), num_classes=3), (1, 4, 4, 1)))
_lwls = functools.cache(lambda: _init(get_model("lwls_cnn", filters=(2, 2, 2), hidden=8), (1, 12, 12, 1)))


def _x(shape):
    """A host array (no device dispatch: every call below must fail before any computation)."""
    return np.ones(shape, np.float32)


# ---------------------------------------------------------------- strategies of malformed values

not_a_number = st.one_of(st.none(), st.text(max_size=4), st.booleans(), st.lists(st.integers(0, 3), max_size=2))
nonfinite = st.sampled_from([math.inf, -math.inf, math.nan])
nonpositive = st.one_of(st.integers(-1000, 0), st.floats(-1e6, 0.0), nonfinite)
negative = st.one_of(st.integers(-1000, -1), st.floats(-1e6, -1e-6), nonfinite)
below_one_int = st.one_of(st.integers(-1000, 0), st.floats(0.5, 9.5), st.text(max_size=3), st.none())
outside_unit = st.one_of(st.floats(1.0001, 1e6), st.floats(-1e6, -1e-4), st.sampled_from([math.nan]), not_a_number)
outside_unit_open = st.one_of(
    st.floats(1.0, 1e6), st.floats(-1e6, -1e-4), st.sampled_from([math.nan, math.inf]), not_a_number
)
bad_strides = st.one_of(
    st.integers(-50, 0),
    st.lists(st.integers(-3, 0), min_size=2, max_size=2),
    st.text(max_size=3),
    st.lists(st.integers(1, 3), min_size=3, max_size=4),
)
bad_window = st.one_of(bad_strides, st.none())
# A pool's 3-entry window on a rank-4 input reads it as one unbatched volume (D, H, W, C), as PyTorch's
# MaxPool3d does, so for pools only a 4-entry list is the wrong length.
bad_pool_window = st.one_of(
    st.integers(-50, 0),
    st.lists(st.integers(-3, 0), min_size=2, max_size=2),
    st.text(max_size=3),
    st.lists(st.integers(1, 3), min_size=4, max_size=4),
    st.none(),
)
bad_padding = st.one_of(
    st.integers(-20, -1),
    st.sampled_from(["same!", "valid ", "", "full_", "reflect"]),
    st.floats(0.5, 3.5),
    st.lists(st.integers(1, 2), min_size=3, max_size=3),
)
bad_rank_shape = st.sampled_from([(), (4,), (2, 3), (1, 2, 2, 2, 2, 1), (1, 1, 1, 1, 1, 1, 1)])
not_an_optimizer = st.one_of(st.none(), st.text(max_size=6), st.integers(), st.just(make_optimizer), st.just({}))
wrong_channels = st.integers(2, 6)
labels_out = st.lists(st.one_of(st.integers(-100, -1), st.integers(10, 200)), min_size=1, max_size=4)


def _with_labels(y):
    return np.asarray(y, np.int32)


def _dataset(y):
    y = _with_labels(y)
    x = np.zeros((len(y), 2, 2, 1), np.float32)
    return D.Dataset(x, y, x[:1], np.zeros(1, np.int32), 10, "t", "")


def _schedule(**kw):
    base = {"total_steps": 10, "decay_steps": 5}
    return make_schedule(kw.pop("name", "warmup_cosine"), kw.pop("lr", 0.1), **{**base, **kw})


def _trainable_init(mask):
    variables = _mlp()[1]
    return make_optimizer("sgd", 0.1, trainable=mask).init(variables["params"])


FAMILIES: list[Family] = [
    # functional
    Family("F.conv", "x", bad_rank_shape, lambda s: F.conv(_x(s), _x((3, 3, 1, 2)))),
    Family("F.conv", "strides", bad_window, lambda v: F.conv(_x((1, 5, 5, 1)), _x((3, 3, 1, 2)), strides=v)),
    Family("F.conv", "padding", bad_padding, lambda v: F.conv(_x((1, 5, 5, 1)), _x((3, 3, 1, 2)), padding=v)),
    Family("F.conv", "dilation", bad_window, lambda v: F.conv(_x((1, 5, 5, 1)), _x((3, 3, 1, 2)), dilation=v)),
    Family(
        "F.conv",
        "groups",
        st.one_of(st.integers(-5, 0), st.integers(3, 7), st.text(max_size=2)),
        lambda v: F.conv(_x((1, 5, 5, 2)), _x((3, 3, 1, 2)), groups=v),
    ),
    Family(
        "F.conv",
        "padding_mode",
        st.text(min_size=1, max_size=6).filter(
            lambda s: s.lower() not in ("zeros", "reflect", "replicate", "circular")
        ),
        lambda v: F.conv(_x((1, 5, 5, 1)), _x((3, 3, 1, 2)), padding_mode=v),
    ),
    Family("F.max_pool", "window", bad_pool_window, lambda v: F.max_pool(_x((1, 6, 6, 1)), v)),
    Family("F.avg_pool", "strides", bad_strides, lambda v: F.avg_pool(_x((1, 6, 6, 1)), 2, v)),
    Family("F.avg_pool", "padding", bad_padding, lambda v: F.avg_pool(_x((1, 6, 6, 1)), 2, 2, v)),
    Family("F.dropout", "rate", outside_unit, lambda v: F.dropout(_x((2, 3)), v, key=KEY)),
    Family(
        "F.dropout",
        "key",
        st.one_of(st.none(), st.integers(), st.text(max_size=3)),
        lambda v: F.dropout(_x((2, 3)), 0.5, key=v, training=True),
    ),
    Family(
        "F.batch_norm",
        "momentum",
        outside_unit,
        lambda v: F.batch_norm(_x((2, 3)), _x(3), _x(3), training=True, momentum=v),
    ),
    Family(
        "F.batch_norm",
        "var",
        st.lists(st.floats(-10, -1e-3), min_size=3, max_size=3),
        lambda v: F.batch_norm(_x((2, 3)), _x(3), jnp.asarray(v, jnp.float32), training=False),
    ),
    Family(
        "F.batch_norm",
        "mean",
        st.integers(1, 9).filter(lambda c: c != 3),
        lambda c: F.batch_norm(_x((2, 3)), _x(c), _x(3), training=False),
    ),
    Family(
        "F.batch_norm", "epsilon", negative, lambda v: F.batch_norm(_x((2, 3)), _x(3), _x(3), training=False, epsilon=v)
    ),
    Family(
        "F.group_norm",
        "num_groups",
        st.one_of(st.integers(-4, 0), st.sampled_from([4, 5, 7, 8, 9]), st.text(max_size=2)),
        lambda v: F.group_norm(_x((2, 4, 4, 6)), v),
    ),
    Family("F.adaptive_avg_pool", "output_size", bad_pool_window, lambda v: F.adaptive_avg_pool(_x((1, 6, 6, 1)), v)),
    # nn modules: input against the parameters, missing keys and collections
    Family("Conv.apply", "x", wrong_channels, lambda c: _conv()[0].apply(_conv()[1], _x((1, 6, 6, c)))),
    Family(
        "Conv.apply",
        "x",
        st.sampled_from([(6, 6, 1), (1, 6, 1), (1, 1, 6, 6, 1)]),
        lambda s: _conv()[0].apply(_conv()[1], _x(s)),
    ),
    Family("Conv.init", "features", below_one_int, lambda v: jnn.Conv(v, 3).init(KEY, _x((1, 5, 5, 1)))),
    Family("Conv.init", "kernel_size", bad_window, lambda v: jnn.Conv(2, v).init(KEY, _x((1, 5, 5, 1)))),
    Family(
        "Dense.apply",
        "x",
        st.integers(1, 40).filter(lambda n: n != 4),
        lambda n: _mlp()[0].apply(_mlp()[1], _x((2, n, 4, 1))),
    ),
    Family(
        "Dropout.apply",
        "rngs",
        st.floats(0.05, 0.95),
        lambda r: jnn.Dropout(r).apply({}, _x((2, 3)), deterministic=False),
    ),
    Family(
        "BatchNorm.apply",
        "mutable",
        st.integers(1, 3),
        lambda n: _bn()[0].apply(_bn()[1], _x((n, 4, 4, 2)), use_running_average=False),
    ),
    Family(
        "BatchNorm.apply",
        "batch_stats",
        st.integers(1, 3),
        lambda n: _bn()[0].apply({"params": _bn()[1]["params"]}, _x((n, 4, 4, 2)), use_running_average=True),
    ),
    Family(
        "BatchNorm.apply",
        "x",
        st.integers(3, 6),
        lambda c: _bn()[0].apply(_bn()[1], _x((1, 4, 4, c)), use_running_average=True),
    ),
    Family("LayerNorm.init", "x", st.sampled_from([(), (3,)]), lambda s: jnn.LayerNorm().init(KEY, _x(s))),
    # models
    Family(
        "get_model",
        "num_classes",
        st.one_of(below_one_int, st.floats(-5, 5)),
        lambda v: get_model("mlp", num_classes=v),
    ),
    Family(
        "get_model",
        "widths",
        st.one_of(st.lists(st.integers(-5, 0), min_size=1, max_size=3), st.text(min_size=1, max_size=3), st.integers()),
        lambda v: get_model("mlp", widths=v),
    ),
    Family("get_model", "dropout_rate", outside_unit_open, lambda v: get_model("lwls_cnn", dropout_rate=v)),
    Family(
        "get_model",
        "stage_sizes",
        st.lists(st.integers(-3, 0), min_size=1, max_size=4),
        lambda v: get_model("resnet_tiny", stage_sizes=v),
    ),
    Family(
        "get_model",
        "filters",
        st.lists(st.integers(-3, 0), min_size=3, max_size=3),
        lambda v: get_model("lwls_cnn", filters=v),
    ),
    Family(
        "get_model",
        "batch_norm",
        st.one_of(st.text(max_size=3), st.integers(), st.none()),
        lambda v: get_model("vgg_tiny", batch_norm=v),
    ),
    Family(
        "get_model", "model", st.text(min_size=1, max_size=8).filter(lambda s: s not in jaxcnn.list_models()), get_model
    ),
    Family(
        "get_model",
        "option",
        st.sampled_from(["classes", "depth", "lr", "channels", "input_shape"]),
        lambda k: get_model("lenet5", **{k: 3}),
    ),
    Family(
        "check_input",
        "variables",
        st.sampled_from(["mlp", "lwls"]),
        lambda which: check_input(
            _lwls()[0] if which == "mlp" else _mlp()[0],
            (_mlp() if which == "mlp" else _lwls())[1],
            _x((2, 12, 12, 1) if which == "mlp" else (2, 4, 4, 1)),
        ),
    ),
    Family(
        "check_input",
        "x",
        st.sampled_from([(12, 12, 1), (2, 16, 16, 1), (2, 12, 12, 3)]),
        lambda s: check_input(_lwls()[0], _lwls()[1], _x(s)),
    ),
    # data
    Family("Dataset", "y_train", labels_out, _dataset),
    Family("batches", "batch_size", below_one_int, lambda v: D.batches(np.zeros((4, 2)), np.zeros(4), v)),
    Family("batches", "y", labels_out, lambda y: D.batches(np.zeros((len(y), 2)), _with_labels(y), 1, num_classes=10)),
    Family("batches", "seed", st.integers(-100, -1), lambda v: D.batches(np.zeros((4, 2)), np.zeros(4), 2, seed=v)),
    Family(
        "load", "data set", st.text(min_size=1, max_size=8).filter(lambda s: s.lower() not in D.list_datasets()), D.load
    ),
    # train: state, optimizers, schedules, losses, checks, checkpoints, oom
    Family("create_train_state", "tx", not_an_optimizer, lambda v: create_train_state(_mlp()[0], v, _x((1, 4, 4, 1)))),
    Family(
        "create_train_state",
        "sample_x",
        st.one_of(st.none(), st.text(max_size=3), st.sampled_from([(3,), ()])),
        lambda v: create_train_state(_lwls()[0], make_optimizer("sgd", 0.1), _x(v) if isinstance(v, tuple) else v),
    ),
    Family(
        "create_train_state",
        "sample_x",
        st.sampled_from([(12, 12, 1), (12, 12), (1, 1, 12, 12, 1)]),
        lambda s: create_train_state(_lwls()[0], make_optimizer("sgd", 0.1), _x(s)),
    ),
    Family(
        "create_train_state",
        "params",
        st.sampled_from([(2, 4, 5, 1), (1, 8, 8, 1), (3, 2, 2, 1)]),
        lambda s: create_train_state(_mlp()[0], make_optimizer("sgd", 0.1), _x(s), params=_mlp()[1]["params"]),
    ),
    Family(
        "create_train_state",
        "seed",
        st.one_of(st.text(max_size=3), st.floats(0.5, 9.5), st.none()),
        lambda v: create_train_state(_mlp()[0], make_optimizer("sgd", 0.1), _x((1, 4, 4, 1)), seed=v),
    ),
    Family(
        "make_optimizer", "learning_rate", st.one_of(nonpositive, not_a_number), lambda v: make_optimizer("adam", v)
    ),
    Family(
        "make_optimizer",
        "optimizer",
        st.text(max_size=6).filter(
            lambda s: s.lower() not in ("sgd", "momentum", "nesterov", "adam", "adamw", "adagrad", "rmsprop")
        ),
        lambda v: make_optimizer(v, 0.1),
    ),
    Family("make_optimizer", "b1", outside_unit_open, lambda v: make_optimizer("adam", 0.1, b1=v)),
    Family("make_optimizer", "b2", outside_unit_open, lambda v: make_optimizer("adamw", 0.1, b2=v)),
    Family("make_optimizer", "decay", outside_unit_open, lambda v: make_optimizer("rmsprop", 0.1, decay=v)),
    Family("make_optimizer", "eps", negative, lambda v: make_optimizer("adam", 0.1, eps=v)),
    Family(
        "make_optimizer",
        "weight_decay",
        st.one_of(negative, not_a_number),
        lambda v: make_optimizer("sgd", 0.1, weight_decay=v),
    ),
    Family("make_optimizer", "momentum", outside_unit, lambda v: make_optimizer("momentum", 0.1, momentum=v)),
    Family(
        "make_optimizer",
        "clip_norm",
        st.one_of(nonpositive, st.text(max_size=2)),
        lambda v: make_optimizer("sgd", 0.1, clip_norm=v),
    ),
    Family(
        "make_optimizer",
        "trainable",
        st.sampled_from(
            [
                {"dense1": False},
                {"head": True},
                {"dense1": False, "head": True, "x": False},
                {"dense1": {"kernel": False}, "head": True},
                {"dense9": True},
            ]
        ),
        _trainable_init,
    ),
    Family(
        "make_optimizer",
        "trainable",
        st.sampled_from(["no", 1, None, 0.5]).map(lambda v: {"dense1": v, "head": True}),
        _trainable_init,
    ),
    Family("make_schedule", "learning_rate", st.one_of(nonpositive, not_a_number), lambda v: _schedule(lr=v)),
    Family(
        "make_schedule",
        "end_value",
        st.one_of(negative, st.sampled_from([math.nan, math.inf])),
        lambda v: _schedule(end_value=v),
    ),
    Family("make_schedule", "decay_rate", nonpositive, lambda v: _schedule(name="step", decay_rate=v)),
    Family("make_schedule", "total_steps", below_one_int, lambda v: _schedule(name="cosine", total_steps=v)),
    Family(
        "make_schedule",
        "warmup_steps",
        st.one_of(st.integers(-50, -1), st.integers(10, 100)),
        lambda v: _schedule(warmup_steps=v),
    ),
    Family("make_schedule", "decay_steps", below_one_int, lambda v: _schedule(name="step", decay_steps=v)),
    Family(
        "cross_entropy",
        "labels",
        st.sampled_from([(2,), (3, 1), (2, 2)]).flatmap(lambda s: st.just(s)),
        lambda s: losses.cross_entropy(_x((3, 4)), jnp.zeros(s, jnp.int32)),
    ),
    Family(
        "cross_entropy",
        "labels",
        st.sampled_from([jnp.float32, jnp.float16, jnp.bool_]),
        lambda dt: losses.cross_entropy(_x((3, 4)), jnp.zeros(3, dt)),
    ),
    Family(
        "cross_entropy",
        "label_smoothing",
        outside_unit,
        lambda v: losses.cross_entropy(_x((3, 4)), jnp.zeros(3, jnp.int32), label_smoothing=v),
    ),
    Family(
        "top_k_accuracy",
        "k",
        st.one_of(st.integers(-5, 0), st.integers(5, 50)),
        lambda k: losses.top_k_accuracy(_x((3, 4)), jnp.zeros(3, jnp.int32), k),
    ),
    Family(
        "get_loss", "loss", st.text(max_size=6).filter(lambda s: s.lower() not in ("cross_entropy", "mse")), get_loss
    ),
    Family("check_labels", "y", labels_out, lambda y: check_labels(_with_labels(y), 10)),
    Family(
        "check_batch",
        "batch",
        st.sampled_from([{}, {"x": 1}, {"y": 1}, {"inputs": 1, "labels": 2}, None, [1, 2]]),
        lambda b: check_batch(b if not isinstance(b, dict) else {k: np.zeros(2) for k in b}),
    ),
    Family(
        "Checkpointer",
        "keep",
        st.one_of(st.integers(-1000, 0), st.floats(0.5, 9.5), st.text(max_size=3)),
        lambda v: Checkpointer("/tmp/jaxcnn-hostile-never-created", keep=v),
    ),
    Family("oom_guard", "what", st.one_of(st.none(), st.just(""), st.integers()), lambda v: oom_guard(v).__enter__()),
]


def _outcome(family: Family, value: Any) -> str:
    """ "clear", "foreign: ..." or "silent" for one malformed call."""
    try:
        family.call(value)
    except (ValueError, TypeError) as e:
        frames = traceback.extract_tb(e.__traceback__)
        inside = bool(frames) and str(Path(frames[-1].filename).resolve()).startswith(PACKAGE)
        if inside and family.arg in str(e):
            return "clear"
        return f"foreign: {type(e).__name__} from {frames[-1].filename if frames else '?'}: {str(e)[:160]}"
    except Exception as e:  # noqa: BLE001 -- anything else is exactly what this test counts
        return f"foreign: {type(e).__name__}: {str(e)[:160]}"
    return "silent"


def test_malformed_calls_fail_clearly_and_none_escape(capsys):
    seen: dict[tuple[str, str, str], str] = {}

    @settings(max_examples=700, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data):
        family = data.draw(st.sampled_from(FAMILIES))
        value = data.draw(family.bad)
        key = (family.name, family.arg, repr(value))
        if key not in seen:
            seen[key] = _outcome(family, value)

    run()
    counts = {"clear": 0, "foreign": 0, "silent": 0}
    for outcome in seen.values():
        counts[outcome.split(":")[0]] += 1
    bad = {k: v for k, v in seen.items() if v != "clear"}
    covered = {(k[0], k[1]) for k in seen}
    pairs = {(f.name, f.arg) for f in FAMILIES}
    with capsys.disabled():
        print(
            f"\nhostile calls: {len(seen)} distinct malformed calls from {len(FAMILIES)} families, covering "
            f"{len(covered)} of {len(pairs)} (entry point, argument) pairs; {counts['clear']} raised a jaxcnn ValueError/TypeError naming the argument, "
            f"{counts['foreign']} foreign errors, {counts['silent']} silently accepted"
        )
    assert not bad, "\n".join(f"{k}: {v}" for k, v in list(bad.items())[:25])
    assert len(seen) >= 150
    assert covered == pairs
