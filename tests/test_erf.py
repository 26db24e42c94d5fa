"""Effective receptive field (Luo et al. 2016) against maps worked out by hand and with scipy.signal.convolve."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from matplotlib.figure import Figure

import jaxcnn.functional as F
from jaxcnn.analysis import EffectiveReceptiveField, effective_receptive_field, erf_from_map, erf_gradient_map, plot_erf
from jaxcnn.nn import Conv

KEY = jax.random.key(0, impl="rbg")


class UniformStack(nn.Module):
    """``depth`` 3x3 SAME convs with every weight 1, no bias; takes ``train`` like the zoo's models."""

    depth: int
    channels: int = 1

    @nn.compact
    def __call__(self, x, *, train=False):
        for i in range(self.depth):
            x = Conv(self.channels, 3, use_bias=False, kernel_init=nn.initializers.ones, name=f"c{i}")(x)
        return x


def gmap(*args, **kw):
    """erf_gradient_map compiled as one function (eager op-by-op dispatch is slow on a loaded CPU)."""
    return jax.jit(lambda: erf_gradient_map(*args, **kw))()


def init(model, shape):
    return jax.jit(model.init)(KEY, jnp.zeros((1, *shape)))


def test_single_uniform_conv_is_the_kernel_footprint():
    model = UniformStack(1)
    raw = np.asarray(gmap(model, init(model, (7, 7, 1)), (7, 7, 1), n_samples=3, key=KEY))
    expected = np.zeros((7, 7))
    expected[2:5, 2:5] = 1.0  # the centre unit (3, 3) reads rows/cols 2..4 with weight 1
    np.testing.assert_array_equal(raw, expected)


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_uniform_stack_is_the_k_fold_self_convolution(depth):
    size = 2 * depth + 5
    model = UniformStack(depth)
    raw = np.asarray(gmap(model, init(model, (size, size, 1)), (size, size, 1), n_samples=2, key=KEY))
    box = np.ones((3, 3))
    ref = box
    for _ in range(depth - 1):
        ref = scipy.signal.convolve(ref, box)
    expected = np.zeros((size, size))
    c, h = (size - 1) // 2, depth
    expected[c - h : c + h + 1, c - h : c + h + 1] = ref
    np.testing.assert_allclose(raw, expected, rtol=1e-6)
    e = effective_receptive_field(model, init(model, (size, size, 1)), (size, size, 1), n_samples=1)
    # variance of the L-fold convolution of [1, 1, 1] (uniform on {-1, 0, 1}: 2/3) is 2L/3 per axis
    np.testing.assert_allclose(e.std, [np.sqrt(2 * depth / 3)] * 2, rtol=1e-5)
    np.testing.assert_allclose(e.radius, 2 * np.sqrt(2 * depth / 3), rtol=1e-5)
    np.testing.assert_allclose(e.centre, [c, c], atol=1e-5)
    assert e.mass_radius <= depth and abs(float(e.map.sum()) - 1) < 1e-5


def test_channels_and_one_and_three_dims():
    # 2 channels in and out: every weight 1 multiplies the map by a constant; the normalized map is unchanged
    m2 = UniformStack(2, channels=2)
    e2 = effective_receptive_field(m2, init(m2, (9, 9, 2)), (9, 9, 2), n_samples=1)
    m1 = UniformStack(2)
    e1 = effective_receptive_field(m1, init(m1, (9, 9, 1)), (9, 9, 1), n_samples=1)
    np.testing.assert_allclose(e2.map, e1.map, rtol=1e-5)
    f1 = lambda x: F.conv(x, jnp.ones((3, 1, 1)))  # noqa: E731
    np.testing.assert_array_equal(gmap(f1, None, (7, 1), n_samples=1), [0, 0, 1, 1, 1, 0, 0])
    f3 = lambda x: F.conv(x, jnp.ones((3, 3, 3, 1, 1)))  # noqa: E731
    g = np.asarray(gmap(f3, None, (5, 5, 5, 1), n_samples=1))
    assert g.shape == (5, 5, 5) and g.dtype == np.float32 and g.sum() == 27 and g[1:4, 1:4, 1:4].sum() == 27


def test_square_statistic_and_random_relu_model():
    f = lambda x: F.conv(x, 2 * jnp.ones((3, 3, 1, 1)))  # noqa: E731
    np.testing.assert_array_equal(gmap(f, None, (5, 5, 1), statistic="square")[1:4, 1:4], np.full((3, 3), 4.0))
    relu = lambda x: jax.nn.relu(
        F.conv(
            jax.nn.relu(F.conv(x, jnp.asarray(np.random.default_rng(0).standard_normal((3, 3, 1, 2)), jnp.float32))),  # noqa: E731
            jnp.ones((3, 3, 2, 1)),
        )
    )
    g = np.asarray(gmap(relu, None, (9, 9, 1), n_samples=8, key=KEY))
    assert np.all(np.isfinite(g)) and np.all(g >= 0) and g[4, 4] > 0 and g[0].sum() == 0  # footprint 5x5 only


def test_jit_and_eval_shape():
    model = UniformStack(2)
    v = init(model, (9, 9, 1))
    f = jax.jit(lambda v, k: erf_gradient_map(model, v, (9, 9, 1), n_samples=2, key=k))
    np.testing.assert_array_equal(f(v, KEY), erf_gradient_map(model, v, (9, 9, 1), n_samples=2, key=KEY))
    out = jax.eval_shape(lambda v: erf_gradient_map(model, v, (9, 9, 1), n_samples=2), v)
    assert out.shape == (9, 9) and out.dtype == jnp.float32


def test_erf_from_map_by_hand():
    e = erf_from_map(np.array([0.0, 1, 2, 1, 0]))
    assert (
        e.centre == (2.0,) and e.std == pytest.approx((np.sqrt(0.5),)) and e.radius == pytest.approx(2 * np.sqrt(0.5))
    )
    assert e.mass_radius == 1 and erf_from_map(np.array([0.0, 1, 2, 1, 0]), mass=0.5).mass_radius == 0


def test_bad_input():
    model = UniformStack(1)
    v = init(model, (5, 5, 1))
    with pytest.raises(ValueError, match="n_samples must be >= 1, got 0"):
        erf_gradient_map(model, v, (5, 5, 1), n_samples=0)
    with pytest.raises(TypeError, match="input_shape must be a sequence"):
        erf_gradient_map(model, v, 5)
    with pytest.raises(ValueError, match="input_shape must be"):
        erf_gradient_map(model, v, (5, 5, 5, 5, 1))
    with pytest.raises(TypeError, match="variables must be the model's variables"):
        erf_gradient_map(model, None, (5, 5, 1))
    with pytest.raises(TypeError, match="model must be a flax.linen.Module or a function"):
        erf_gradient_map(3, None, (5, 5, 1))
    with pytest.raises(ValueError, match="statistic must be one of 'abs', 'square'"):
        erf_gradient_map(model, v, (5, 5, 1), statistic="max")
    with pytest.raises(ValueError, match="probe a convolutional layer, not the logits"):
        erf_gradient_map(lambda x: x.reshape(x.shape[0], -1), None, (5, 5, 1))
    with pytest.raises(ValueError, match=r"mass must be a number in \[0, 1\], got 1.5"):
        effective_receptive_field(model, v, (5, 5, 1), mass=1.5)
    with pytest.raises(ValueError, match="positive finite sum"):
        erf_from_map(np.zeros((3, 3)))
    with pytest.raises(TypeError, match="key must be a single PRNG key"):
        erf_gradient_map(model, v, (5, 5, 1), key=0)
    with pytest.raises(TypeError, match="fields must be a non-empty sequence"):
        plot_erf([])


def test_plot_erf_writes_a_png(tmp_path):
    e = erf_from_map(np.outer([0, 1, 2, 1, 0], [0, 1, 2, 1, 0]).astype(float))
    assert isinstance(e, EffectiveReceptiveField)
    fig = plot_erf([("a", e, ((1, 3), (1, 3))), ("b", e, None)], tmp_path / "erf.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 2 and (tmp_path / "erf.png").stat().st_size > 1000
