"""jaxcnn.analysis against hand-worked numbers, F.conv, SciPy, NumPy and gradients.

Oracles: the LWLS Example 6.3 table (parameters and shapes from the lecture,
MACs worked out by hand below), the lecture's 5x5 banded matrix written out,
``scipy.linalg.toeplitz``, ``F.conv`` (for ``M @ x``; the matrix is built from
index arithmetic, never from ``F.conv``), receptive-field sizes worked out by
hand (r = 2^L for a dilated causal stack) and the gradient support.
"""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import jaxcnn.functional as F
import jaxcnn.nn as jnn
from jaxcnn.analysis import (
    LayerSpec,
    chain_receptive_field,
    check_receptive_field,
    conv_matrix,
    conv_matrix_stats,
    plot_curves,
    plot_feature_maps,
    plot_filters,
    positive_params,
    receptive_field,
    summary,
)
from jaxcnn.models import get_model

# ---------------------------------------------------------------------------
# summary

# LWLS Example 6.3, per layer: (name, output shape, parameters, MACs per example).
# Parameters and shapes are the lecture's table; MACs by hand:
#   conv:  out positions * window * C_in * C_out;  dense: in * out
LWLS_TABLE = [
    ("conv1", (28, 28, 4), 5 * 5 * 1 * 4 + 4, 28 * 28 * 25 * 1 * 4),  # 104, 78400
    ("conv2", (14, 14, 8), 5 * 5 * 4 * 8 + 8, 14 * 14 * 25 * 4 * 8),  # 808, 156800
    ("conv3", (7, 7, 12), 4 * 4 * 8 * 12 + 12, 7 * 7 * 16 * 8 * 12),  # 1548, 75264
    ("dense1", (200,), 588 * 200 + 200, 588 * 200),  # 117800, 117600
    ("dense2", (10,), 200 * 10 + 10, 200 * 10),  # 2010, 2000
]


class LinenLWLS(nn.Module):
    """Example 6.3 built from flax.linen only (no jaxcnn module), to show summary is generic."""

    @nn.compact
    def __call__(self, x):
        for i, (f, k, s) in enumerate([(4, 5, 1), (8, 5, 2), (12, 4, 2)], 1):
            x = nn.relu(nn.Conv(f, (k, k), strides=s, padding="SAME", name=f"conv{i}")(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(200, name="dense1")(x))
        return nn.Dense(10, name="dense2")(x)


@pytest.mark.parametrize("which", ["jaxcnn.models", "flax.linen"])
def test_summary_reproduces_lwls_table(which):
    model = get_model("lwls_cnn") if which == "jaxcnn.models" else LinenLWLS()
    s = summary(model, (28, 28, 1))
    rows = {r.name: r for r in s.rows}
    assert [p for _, _, p, _ in LWLS_TABLE] == [104, 808, 1548, 117800, 2010]  # the lecture's numbers
    for name, shape, params, macs in LWLS_TABLE:
        assert (rows[name].output_shape, rows[name].params, rows[name].macs) == (shape, params, macs), name
    assert s.total_params == 122270
    assert s.total_macs == 78400 + 156800 + 75264 + 117600 + 2000
    assert sum(r.params for r in s.rows) == s.total_params
    assert rows["conv1"].shape_str == "28x28x4" and rows["dense1"].shape_str == "200"
    text, md = s.to_text(), s.to_markdown()
    assert str(s) == text
    for name, _shape, params, macs in LWLS_TABLE:
        assert f"{params:,}" in text and f"| {name} |" in md and f"{macs:,}" in md
    assert "122,270" in text.splitlines()[-1]
    table = [line for line in text.splitlines()[1:] if not line.startswith("-")]
    ends = {len(line) for line in table}  # numbers right-aligned: every row ends in the same column
    assert len(ends) == 1
    assert md.count("\n|") == len(s.rows) + 3  # header, rule, rows, totals


class Shared(nn.Module):
    def setup(self):
        self.dense = nn.Dense(3)

    def __call__(self, x):
        return self.dense(self.dense(x))


@pytest.mark.parametrize(
    "model, shape, out_shape, params, macs",
    [
        # grouped conv: 8*8 positions * 9 taps * (4/2) in per group * 6 out
        (
            nn.Conv(6, (3, 3), padding="VALID", feature_group_count=2),
            (10, 10, 4),
            (8, 8, 6),
            3 * 3 * 2 * 6 + 6,
            64 * 9 * 2 * 6,
        ),
        # dilated 1D conv, SAME: 20 positions * 3 taps * 3 * 5
        (nn.Conv(5, (3,), kernel_dilation=2, padding="SAME"), (20, 3), (20, 5), 3 * 3 * 5 + 5, 20 * 3 * 3 * 5),
        # transposed conv: 25 INPUT positions * 9 taps * 3 * 4; output (5-1)*2+3 = 11
        (
            nn.ConvTranspose(4, (3, 3), strides=(2, 2), padding="VALID"),
            (5, 5, 3),
            (11, 11, 4),
            3 * 3 * 3 * 4 + 4,
            25 * 9 * 3 * 4,
        ),
        (jnn.ConvTranspose(4, 3, strides=2), (5, 5, 3), (11, 11, 4), 3 * 3 * 4 * 3 + 4, 25 * 9 * 4 * 3),
        # Dense on (4, 5, 3): 20 positions * 3 * 7
        (nn.Dense(7), (4, 5, 3), (4, 5, 7), 3 * 7 + 7, 20 * 3 * 7),
        # pooling, normalization, activation: 0 MACs
        (jnn.MaxPool(2), (8, 8, 3), (4, 4, 3), 0, 0),
        (jnn.BatchNorm(use_running_average=True), (8, 8, 3), (8, 8, 3), 6, 0),
        # one Dense called twice: parameters once, MACs twice
        (Shared(), (3,), None, 3 * 3 + 3, 2 * 3 * 3),
    ],
)
def test_summary_mac_rules(model, shape, out_shape, params, macs):
    s = summary(model, shape)
    assert (s.total_params, s.total_macs) == (params, macs)
    if out_shape is not None:
        assert s.rows[-1].output_shape == out_shape
    if isinstance(model, Shared):
        assert [(r.name, r.params, r.macs) for r in s.rows] == [("dense", 12, 9), ("dense", 0, 9)]


class ScanCell(nn.Module):
    @nn.compact
    def __call__(self, carry, _):
        return nn.Dense(4)(carry), None


class Scanned(nn.Module):
    @nn.compact
    def __call__(self, x):
        scan = nn.scan(ScanCell, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
        return scan(name="cell")(x, None)[0]


def test_summary_lifted_scan():
    """nn.scan: 3 stacked Dense(4 -> 4) layers; the body's MACs count 3 times, one row."""
    s = summary(Scanned(), (4,))
    assert [(r.name, r.params, r.macs) for r in s.rows] == [("cell/Dense_0", 3 * (4 * 4 + 4), 3 * 4 * 4)]
    assert (s.total_params, s.total_macs) == (60, 48)


def test_summary_bad_arguments():
    with pytest.raises(TypeError, match="flax.linen.Module"):
        summary(lambda x: x, (3,))
    with pytest.raises(TypeError, match="input_shape"):
        summary(nn.Dense(2), 28)
    with pytest.raises(ValueError, match="input_shape"):
        summary(nn.Dense(2), (0, 3))


# ---------------------------------------------------------------------------
# receptive field


def _lwls_convs(x):
    """The three conv layers of Example 6.3 as F.conv calls, with positive weights."""
    for c_in, c_out, k, s in [(1, 4, 5, 1), (4, 8, 5, 2), (8, 12, 4, 2)]:
        x = jax.nn.relu(F.conv(x, jnp.full((k, k, c_in, c_out), 0.1), padding="SAME", strides=s))
    return x


def test_receptive_field_lwls_by_hand():
    # r_l = r_{l-1} + (k-1) j_{l-1}: 1+4 = 5, 5+4*1 = 9, 9+3*2 = 15; j: 1, 2, 4.
    # SAME pads (lo): 2, 1 (total 3 for 28 -> 14), 1 (total 2 for 14 -> 7);
    # start_l = start_{l-1} + ((k-1)/2 - pad_lo) j_{l-1}: 0, 0 + 1 = 1, 1 + 0.5*2 = 2.
    expect = [((5, 5), (1, 1), (0, 0)), ((9, 9), (2, 2), (1, 1)), ((15, 15), (4, 4), (2, 2))]
    rf = check_receptive_field(get_model("lwls_cnn"), (28, 28, 1))
    assert [r.name for r in rf.layers] == ["conv1", "conv2", "conv3"]
    assert [(r.size, r.jump, r.start) for r in rf.layers] == expect
    assert [r.padding[0] for r in rf.layers] == [(2, 2), (1, 2), (1, 1)]
    # the logits see the union of all 7x7 conv3 fields: [-5, 9 + 6*4] -> the whole input
    assert rf.position == (None, None)
    assert rf.analytic == ((-5, 33), (-5, 33)) and rf.measured == ((0, 27), (0, 27))
    assert rf.measured_mask.all()

    chain = chain_receptive_field(
        [LayerSpec(5, 1, padding="SAME"), LayerSpec(5, 2, padding="SAME"), LayerSpec(4, 2, padding="SAME")], (28, 28, 1)
    )
    assert [(r.size, r.jump, r.start) for r in chain] == expect
    assert [r.output_shape for r in chain] == [(28, 28), (14, 14), (7, 7)]


@pytest.mark.parametrize("position, field", [((3, 3), ((7, 21), (7, 21))), ((0, 6), ((0, 9), (19, 27)))])
def test_receptive_field_hidden_unit_measured(position, field):
    # conv3 unit (p, q): [-5 + 4p, 9 + 4p] per dim, clipped to [0, 27]
    rf = check_receptive_field(_lwls_convs, (28, 28, 1), position)
    assert rf.clipped == field and rf.measured == field
    chain = [LayerSpec(5, 1, padding="SAME"), LayerSpec(5, 2, padding="SAME"), LayerSpec(4, 2, padding="SAME")]
    rf2 = receptive_field(_lwls_convs, (28, 28, 1), position, layers=chain)
    assert rf2.analytic == rf.analytic and rf2.measured == field


@pytest.mark.parametrize("num_layers", [2, 5])
def test_receptive_field_dilated_causal_stack(num_layers):
    """WaveNet: kernel 2, dilations 1, 2, ..., 2^(L-1), causal: r = 2^L, ending at t."""
    w = jnp.full((2, 2, 2), 0.5)

    def wavenet(x):
        for i in range(num_layers):
            x = F.conv(x, w, padding="CAUSAL", dilation=2**i)
        return x

    t = 40
    rf = check_receptive_field(wavenet, (48, 2), position=(t,))
    r = 2**num_layers
    assert rf.size == (r,) and [row.size for row in rf.layers] == [(2 ** (i + 1),) for i in range(num_layers)]
    assert rf.analytic == ((t - r + 1, t),) and rf.measured == ((t - r + 1, t),)
    assert rf.measured_mask.sum() == r  # no holes: every input in the field reaches the unit
    early = receptive_field(wavenet, (48, 2), position=(3,))  # clipped at the start of the sequence
    assert early.measured == ((0, 3),) and early.agrees


class PoolNet(nn.Module):
    """Conv, max pool, then a residual block whose shortcut is a strided 1x1 conv."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="stem")(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        y = nn.relu(nn.Conv(4, (3, 3), strides=2, name="a")(x))
        y = nn.Conv(4, (3, 3), name="b")(y)
        x = nn.Conv(4, (1, 1), strides=2, name="proj")(x)
        return nn.relu(x + y)


@pytest.mark.parametrize("position", [(0, 0), (2, 3), (4, 4)])
def test_receptive_field_pooling_and_residual_branch(position):
    rf = check_receptive_field(PoolNet(), (20, 20, 1), position)
    rows = {r.name: r for r in rf.layers}
    # (lo, hi) of the first output, j:  stem 3x3 SAME: (-1, 1), 1;  max pool 2/2: (-1, 2), 2;
    # a 3x3/2 SAME on 10 (pads (0, 1)): (-1, 2 + 2*2) = (-1, 6), 4;  b 3x3 SAME: (-1 - 4, 6 + 4) = (-5, 10), 4;
    # proj 1x1/2 on the pooled map: (-1, 2), 4. The sum sees the union (-5, 10): r = 16, unit p at 4p + (-5, 10).
    assert rows["stem"].size == (3, 3) and rows["max_pool0"].size == (4, 4) and rows["max_pool0"].jump == (2, 2)
    assert (rows["a"].size, rows["b"].size, rows["proj"].size) == ((8, 8), (16, 16), (4, 4))
    assert rf.size == (16, 16)
    p, q = position
    assert rf.analytic == ((4 * p - 5, 4 * p + 10), (4 * q - 5, 4 * q + 10))


def test_receptive_field_resnet_tiny():
    model = get_model("resnet_tiny")
    rf = check_receptive_field(model, (32, 32, 3))
    convs = [r for r in rf.layers if r.kind == "conv"]
    s = summary(model, (32, 32, 3))
    assert len(convs) == sum(r.type == "Conv" for r in s.rows)
    assert rf.measured == ((0, 31), (0, 31))  # global pooling: every logit sees every pixel


def test_max_pool_measured_over_whole_window():
    # The gradient of a max reaches one input; the measurement uses the window sum.
    rf = check_receptive_field(lambda x: F.max_pool(x, 2), (8, 8, 1), (1, 2))
    assert rf.measured == ((2, 3), (4, 5)) and rf.measured_mask.sum() == 4


def test_receptive_field_errors():
    w = jnp.ones((3, 1, 1))
    with pytest.raises(ValueError, match="transposed"):
        receptive_field(lambda y: F.conv_transpose(y, w, strides=2), (8, 1))
    with pytest.raises(ValueError, match="does not depend"):
        receptive_field(lambda x: jnp.ones((1, 3)), (8, 1))
    with pytest.raises(ValueError, match="outside"):
        receptive_field(lambda x: F.conv(x, w), (8, 1), (8,))
    with pytest.raises(ValueError, match="no axis"):
        receptive_field(lambda x: x.sum(axis=1), (8, 1), (1,))
    with pytest.raises(ValueError, match="differ"):  # zero weights: no gradient reaches the input
        check_receptive_field(lambda x: F.conv(x, jnp.array([1.0, -1.0, 1.0]).reshape(3, 1, 1) * 0), (8, 1))
    with pytest.raises(ValueError, match="input_shape"):
        receptive_field(lambda x: x, (8,))


def test_positive_params():
    rng = np.random.default_rng(0)
    params = {"kernel": rng.standard_normal((3, 3, 2, 4)), "bias": np.zeros(4)}
    out = positive_params(params)
    k = np.asarray(out["kernel"])
    assert (k > 0).all() and (np.asarray(out["bias"]) == 1).all()
    np.testing.assert_allclose(k.sum(axis=(0, 1, 2)), np.ones(4), rtol=1e-6)
    v = 1 + np.abs(params["kernel"]) / np.abs(params["kernel"]).max()
    np.testing.assert_allclose(k, v / v.sum(axis=(0, 1, 2)), rtol=1e-6)


# ---------------------------------------------------------------------------
# convolution as a matrix


def test_conv_matrix_lecture_example():
    """5 inputs, kernel (w1, w2, w3), padding 1: the banded 5x5 matrix of the lecture."""
    w1, w2, w3 = 2.0, 3.0, 5.0
    expected = np.array(
        [
            [w2, w3, 0, 0, 0],
            [w1, w2, w3, 0, 0],
            [0, w1, w2, w3, 0],
            [0, 0, w1, w2, w3],
            [0, 0, 0, w1, w2],
        ]
    )
    m = conv_matrix(np.array([w1, w2, w3]), (5,), padding=1)
    np.testing.assert_array_equal(m, expected)
    np.testing.assert_array_equal(
        conv_matrix(np.array([w1, w2, w3]).reshape(3, 1, 1), (5, 1), padding="SAME"), expected
    )
    # flip=True (true convolution) reverses the band
    flipped = np.array(  # flip=True (a true convolution) reverses the kernel: (w3, w2, w1)
        [
            [w2, w1, 0, 0, 0],
            [w3, w2, w1, 0, 0],
            [0, w3, w2, w1, 0],
            [0, 0, w3, w2, w1],
            [0, 0, 0, w3, w2],
        ]
    )
    np.testing.assert_array_equal(conv_matrix(np.array([w1, w2, w3]), (5,), padding=1, flip=True), flipped)
    st = conv_matrix_stats(m, np.array([w1, w2, w3]))
    assert (st.dense_params, st.conv_params, st.sharing_ratio) == (5 * 5 + 5, 3 + 1, 30 / 4)
    assert (st.nonzeros, st.entries, st.distinct_values) == (13, 25, 3)
    assert st.sparsity == pytest.approx(12 / 25) and st.uses_per_weight == pytest.approx(13 / 3)


def test_conv_matrix_is_toeplitz():
    k = np.array([1.0, -2.0, 4.0, 3.0])
    n = 9
    first_row = np.r_[k, np.zeros(n - len(k))]
    first_col = np.r_[k[0], np.zeros(n - len(k))]
    np.testing.assert_array_equal(conv_matrix(k, (n,)), scipy.linalg.toeplitz(first_col, first_row))
    # stride 2 keeps every other row
    np.testing.assert_array_equal(conv_matrix(k, (n,), strides=2), scipy.linalg.toeplitz(first_col, first_row)[::2])


CASES_1D = [
    ("VALID", 1, 1),
    ("SAME", 2, 1),
    ("FULL", 3, 2),
    ("CAUSAL", 1, 3),
    (2, 2, 1),
    ([(3, 1)], 3, 1),
    ("same", 1, 2),
]
CASES_2D = [
    ("VALID", 2, (1, 2)),
    ("SAME", 1, 1),
    ("FULL", (1, 3), 1),
    ("CAUSAL", 2, 2),
    (1, 3, 1),
    ((0, 2), 1, (2, 1)),
    (((2, 0), (1, 3)), (2, 1), 1),
]


@pytest.mark.parametrize("nd, cases", [(1, CASES_1D), (2, CASES_2D)])
def test_conv_matrix_matches_conv(rng, nd, cases):
    for i, (padding, strides, dilation) in enumerate(cases):
        groups = 2 if i % 3 == 2 else 1
        flip = i % 2 == 1
        x = rng.standard_normal((*(9, 8)[:nd], 4)).astype(np.float32)
        w = rng.standard_normal((*(3, 2)[:nd], 4 // groups, 6)).astype(np.float32)
        m = conv_matrix(w, x.shape, strides=strides, padding=padding, dilation=dilation, groups=groups, flip=flip)
        y = F.conv(x[None], w, strides=strides, padding=padding, dilation=dilation, groups=groups, flip=flip)[0]
        assert m.shape == (y.size, x.size)
        np.testing.assert_allclose(m @ x.ravel(), np.asarray(y).ravel(), rtol=1e-5, atol=1e-5, err_msg=str(cases[i]))


def test_conv_matrix_3d_and_single_channel(rng):
    x = rng.standard_normal((4, 5, 3, 2)).astype(np.float32)
    w = rng.standard_normal((2, 3, 2, 2, 3)).astype(np.float32)
    m = conv_matrix(w, x.shape, padding="SAME", strides=(1, 2, 1))
    y = F.conv(x[None], w, padding="SAME", strides=(1, 2, 1))[0]
    np.testing.assert_allclose(m @ x.ravel(), np.asarray(y).ravel(), rtol=1e-5, atol=1e-5)
    # x of shape (*spatial,) with kernel (*window, 1, C_out)
    x2 = rng.standard_normal((6, 7)).astype(np.float32)
    w2 = rng.standard_normal((3, 3, 1, 2)).astype(np.float32)
    y2 = F.conv(x2[None, ..., None], w2, padding="VALID")[0]
    np.testing.assert_allclose(conv_matrix(w2, x2.shape) @ x2.ravel(), np.asarray(y2).ravel(), rtol=1e-5, atol=1e-5)


def test_conv_matrix_errors():
    with pytest.raises(ValueError, match="does not match input_shape"):
        conv_matrix(np.ones((3, 3)), (5,))
    with pytest.raises(ValueError, match="C_in"):
        conv_matrix(np.ones((3, 2, 4)), (5, 3))
    with pytest.raises(ValueError, match="padding"):
        conv_matrix(np.ones(3), (5,), padding="HALF")
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv_matrix(np.ones(7), (5,))
    with pytest.raises(ValueError, match="2-D"):
        conv_matrix_stats(np.ones(3), np.ones(3))


# ---------------------------------------------------------------------------
# plots


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 100 and data[:8] == b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    """(width, height) in pixels, read from the PNG's IHDR chunk."""
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_filters(tmp_path, rng):
    rgb = rng.standard_normal((11, 11, 3, 96))
    fig = plot_filters(rgb, tmp_path / "alexnet.png", title="conv1")
    assert len(fig.axes) == 96 + 1 and _is_png(tmp_path / "alexnet.png")  # 96 tiles and the colour bar
    assert fig.axes[-1].get_ylabel() == "weight scaled per filter (0: its min, 1: its max)"
    assert fig.get_suptitle() == "conv1"
    tile = fig.axes[5].images[0].get_array()
    f = rgb[..., 5]
    np.testing.assert_allclose(tile, (f - f.min()) / (f.max() - f.min()))  # normalized per filter
    grey = plot_filters(rng.standard_normal((5, 5, 1, 4)), ncols=4)
    assert len(grey.axes) == 4 + 1 and grey.axes[0].images[0].get_array().shape == (5, 5)
    with pytest.raises(ValueError, match="rank 4"):
        plot_filters(np.ones((5, 5)))
    with pytest.raises(ValueError, match="rank 4"):
        plot_filters(np.ones((5, 5, 5, 1, 4)))
    with pytest.raises(ValueError, match="C_in = 1"):
        plot_filters(np.ones((5, 5, 2, 4)))
    with pytest.raises(ValueError, match="scale"):
        plot_filters(np.ones((5, 5, 1, 4)), scale="global")


def test_plot_filters_title_layer_and_shared_colour_scale(tmp_path, rng):
    w = rng.standard_normal((5, 5, 1, 4))
    fig = plot_filters(w, tmp_path / "f.png", layer="conv1", scale="shared", dpi=50)
    assert fig.get_suptitle() == "conv1: 4 filters 5x5x1"
    bar = fig.axes[-1]
    assert bar.get_ylabel() == "weight"
    m = np.abs(w).max()
    np.testing.assert_allclose(bar.get_ylim(), (-m, m))  # the bar reads in weight units
    np.testing.assert_allclose(fig.axes[2].images[0].get_array(), (w[..., 0, 2] + m) / (2 * m))
    width, height = _png_size(tmp_path / "f.png")
    assert (width, height) == tuple(round(50 * s) for s in fig.get_size_inches())


def test_plot_filters_draws_1d_kernels_as_curves(tmp_path, rng):
    w = rng.standard_normal((9, 2, 6))  # (k, C_in, C_out): a 1-D model's first layer
    fig = plot_filters(w, tmp_path / "f1.png", layer="Conv_0")
    assert _is_png(tmp_path / "f1.png") and fig.get_suptitle() == "Conv_0: 6 filters 9x2"
    assert len(fig.axes) == 6  # one tile per output channel, no colour bar: the y axis is the weight
    ax = fig.axes[4]
    assert len(ax.lines) == 2 + 1  # one curve per input channel (and the zero line)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), w[:, 1, 4])
    assert fig.axes[0].get_ylabel() == "weight" and ax.get_xlabel() == "tap"
    assert {a.get_ylim() for a in fig.axes} == {fig.axes[0].get_ylim()}  # one y scale for all tiles


def test_plot_feature_maps(tmp_path, rng):
    model = get_model("lwls_cnn")
    x = jnp.asarray(rng.uniform(size=(28, 28, 1)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x[None])
    fig = plot_feature_maps(model, variables, x, "conv1", tmp_path / "maps.png")
    assert len(fig.axes) == 4 and _is_png(tmp_path / "maps.png")
    p = variables["params"]["conv1"]  # the Conv module's own output (the ReLU comes after it)
    conv1 = np.asarray(F.conv(x[None], p["kernel"], p["bias"], padding="SAME"))[0]
    np.testing.assert_allclose(fig.axes[2].images[0].get_array(), conv1[..., 2], rtol=1e-5, atol=1e-5)
    assert (conv1 < 0).any()  # so it is really the pre-activation that was drawn
    assert len(plot_feature_maps(model, variables, x, "conv2", max_maps=5).axes) == 5
    with pytest.raises(ValueError, match="known layers: .*conv1"):
        plot_feature_maps(model, variables, x, "conv9")
    with pytest.raises(ValueError, match="feature maps need"):
        plot_feature_maps(model, variables, x, "dense1")


def test_plot_curves(tmp_path):
    log = tmp_path / "metrics.jsonl"
    records = [
        {"step": s, "epoch": s // 4, "train_loss": 2.0 / (s + 1), "train_accuracy": s / 10, "lr": 0.1} for s in range(8)
    ]
    records += [
        {"step": 4 * e + 3, "epoch": e, "test_loss": 1.5 / (e + 1), "test_accuracy": 0.5 + e / 10} for e in range(2)
    ]
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    fig = plot_curves(log, tmp_path / "curves.png")
    assert _is_png(tmp_path / "curves.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["loss", "accuracy", "lr"]
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    assert set(lines) == {"train loss", "test loss"}
    np.testing.assert_allclose(lines["test loss"].get_xdata(), [3, 7])
    np.testing.assert_allclose(lines["test loss"].get_ydata(), [1.5, 0.75])
    np.testing.assert_allclose(lines["train loss"].get_xdata(), np.arange(8))
    by_epoch = plot_curves([{"epoch": 1, "val_loss": 1.0}, {"epoch": 2, "val_loss": 0.5}], x="epoch")
    assert by_epoch.axes[0].get_xlabel() == "epoch" and len(by_epoch.axes) == 1

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": \n')
    with pytest.raises(ValueError, match="line 2"):
        plot_curves(bad)
    with pytest.raises(ValueError, match="no numeric series"):
        plot_curves([{"step": 1, "note": "hello"}])
    with pytest.raises(TypeError, match="metrics"):
        plot_curves(42)


def test_plot_curves_labels_units_run_name_and_whole_epoch_ticks(tmp_path):
    """A log as fit writes it: per-step "train" records, per-epoch "eval" records with val_/test_ series."""
    run = tmp_path / "lwls-digits"
    run.mkdir()
    records = [{"kind": "event", "event": "start", "step": 0}]
    records += [
        {"kind": "train", "step": s, "epoch": (s - 1) // 4, "loss": 2.0 / s, "accuracy": s / 12} for s in range(1, 13)
    ]
    records += [
        {
            "kind": "eval",
            "epoch": e,
            "step": 4 * (e + 1),
            "train_loss": 1.0 / (e + 1),
            "val_loss": 1.1 / (e + 1),
            "val_accuracy": 0.6 + e / 10,
            "test_loss": 1.2 / (e + 1),
            "seconds": 2.0,
        }
        for e in range(3)
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    fig = plot_curves(run / "metrics.jsonl", run / "curves.png", dpi=40)
    assert fig.get_suptitle() == "lwls-digits: training curves"
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "seconds"]
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "loss (mean per example)",
        "accuracy (fraction correct)",
        "time (s)",
    ]
    assert {ax.get_xlabel() for ax in fig.axes} == {"step (optimizer updates)"}
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == [
        "train loss (per step)",
        "train loss (per epoch)",
        "validation loss (per epoch)",
        "test loss (per epoch)",
    ]
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == [
        "train accuracy (per step)",
        "validation accuracy (per epoch)",
    ]
    (top,) = fig.axes[0].child_axes  # the epoch axis: a tick at each epoch's last step, whole numbers
    assert top.get_xlabel() == "end of epoch (counted from 1)"
    np.testing.assert_allclose(top.get_xticks(), [4, 8, 12])
    assert [t.get_text() for t in top.get_xticklabels()] == ["1", "2", "3"]
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())
    assert _png_size(run / "curves.png") == tuple(round(40 * s) for s in fig.get_size_inches())
    by_epoch = plot_curves([r for r in records if r["kind"] == "eval"], x="epoch", title="r")
    assert by_epoch.get_suptitle() == "r: training curves"
    assert all(float(t).is_integer() for t in by_epoch.axes[0].get_xticks())
