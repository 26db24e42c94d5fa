"""BlurPool (Zhang 2019) against NumPy loops, SciPy and PyTorch (antialiased-cnns' formula written here)."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as tf

import jaxcnn.functional as F
import jaxcnn.nn as jnn
from jaxcnn.models import get_model

torch.set_num_threads(1)


def numpy_blur_pool(x, m, s, mode="reflect"):
    """Loops: pad ((m-1)//2, m//2) per dim with NumPy's ``mode``, weight by binomial(m-1, j)/2^(m-1), subsample."""
    nd = x.ndim - 2
    a = np.array([math.comb(m - 1, j) for j in range(m)], np.float64) / 2 ** (m - 1)
    np_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap", "zeros": "constant"}[mode]
    xp = np.pad(np.asarray(x, np.float64), [(0, 0)] + [((m - 1) // 2, m // 2)] * nd + [(0, 0)], mode=np_mode)
    out_sizes = [-(-n // s) for n in x.shape[1:-1]]
    y = np.zeros((x.shape[0], *out_sizes, x.shape[-1]))
    for o in itertools.product(*(range(n) for n in out_sizes)):
        acc = 0.0
        for t in itertools.product(range(m), repeat=nd):
            w = np.prod([a[j] for j in t])
            acc = acc + w * xp[(slice(None), *(oi * s + ti for oi, ti in zip(o, t)), slice(None))]
        y[(slice(None), *o, slice(None))] = acc
    return y


def torch_blur_pool(x, m, s):
    """antialiased_cnns.BlurPool (pad_type="reflect", pad_off=0), re-written: ReflectionPad2d then a depthwise conv2d."""
    t = torch.tensor(np.moveaxis(np.asarray(x, np.float64), -1, 1).copy())
    c = t.shape[1]
    if m == 1:
        return np.moveaxis(t[:, :, ::s, ::s].numpy(), 1, -1)
    a = torch.tensor([math.comb(m - 1, j) for j in range(m)], dtype=torch.float64)
    filt = a[:, None] * a[None, :]
    filt = (filt / filt.sum())[None, None].repeat(c, 1, 1, 1)
    pads = [int((m - 1) / 2), int(math.ceil((m - 1) / 2))] * 2
    y = tf.conv2d(tf.pad(t, pads, mode="reflect"), filt, stride=s, groups=c)
    return np.moveaxis(y.numpy(), 1, -1)


def test_binomial_filter_by_hand():
    np.testing.assert_array_equal(F.binomial_filter(1, 1), [1.0])
    np.testing.assert_array_equal(F.binomial_filter(2, 1), [0.5, 0.5])
    np.testing.assert_array_equal(F.binomial_filter(4, 1), np.array([1, 3, 3, 1]) / 8)
    np.testing.assert_array_equal(F.binomial_filter(5, 1), np.array([1, 4, 6, 4, 1]) / 16)
    np.testing.assert_array_equal(F.binomial_filter(3, 2), np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)
    assert F.binomial_filter(3, 3).shape == (3, 3, 3) and F.binomial_filter(3, 3).sum() == 1.0


@pytest.mark.parametrize("m, s", [(1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (3, 1), (3, 3), (5, 4)])
def test_2d_equals_pytorch_antialiased_cnns(m, s, rng):
    x = rng.standard_normal((2, 11, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(F.blur_pool(x, m, s)), torch_blur_pool(x, m, s), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nd, mode", [(1, "reflect"), (2, "replicate"), (3, "reflect"), (2, "zeros"), (1, "circular")])
def test_equals_numpy_loops(nd, mode, rng):
    x = rng.standard_normal((2, *(7, 6, 5)[:nd], 2)).astype(np.float32)
    for m, s in ((3, 2), (4, 3)):
        np.testing.assert_allclose(
            np.asarray(F.blur_pool(x, m, s, padding_mode=mode)), numpy_blur_pool(x, m, s, mode), rtol=1e-5, atol=1e-6
        )


def test_equals_scipy_separable_filter(rng):
    x = rng.standard_normal((1, 16, 13, 2)).astype(np.float64)
    a = np.array([1, 4, 6, 4, 1]) / 16.0
    # scipy's "mirror" is NumPy's / PyTorch's "reflect" (the edge not repeated); origin shifts to Zhang's (2, 2) padding
    ref = scipy.ndimage.correlate1d(scipy.ndimage.correlate1d(x, a, axis=1, mode="mirror"), a, axis=2, mode="mirror")
    np.testing.assert_allclose(
        np.asarray(F.blur_pool(jnp.asarray(x, jnp.float32), 5, 2)), ref[:, ::2, ::2], rtol=1e-5, atol=1e-6
    )


def test_max_blur_pool_equals_pytorch(rng):
    x = rng.standard_normal((2, 12, 10, 3)).astype(np.float32)
    t = torch.tensor(np.moveaxis(x.astype(np.float64), -1, 1).copy())
    maxed = np.moveaxis(tf.max_pool2d(t, 2, 1).numpy(), 1, -1)
    np.testing.assert_allclose(np.asarray(F.max_blur_pool(x)), torch_blur_pool(maxed, 3, 2), rtol=1e-5, atol=1e-6)
    assert F.max_blur_pool(jnp.ones((1, 28, 28, 1))).shape == (1, 14, 14, 1)


def test_circular_blur_commutes_with_shifts_at_stride_1(rng):
    x = rng.standard_normal((1, 10, 10, 2)).astype(np.float32)
    f = lambda v: np.asarray(F.blur_pool(v, 3, 1, padding_mode="circular"))  # noqa: E731
    np.testing.assert_allclose(f(np.roll(x, (3, -2), (1, 2))), np.roll(f(x), (3, -2), (1, 2)), atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_shape_dtype_jit_grad(dtype):
    x = jnp.ones((2, 9, 8, 3), dtype)
    assert F.blur_pool(x).shape == (2, 5, 4, 3) and F.blur_pool(x).dtype == dtype
    assert jax.eval_shape(lambda v: F.blur_pool(v, 4, (1, 3)), x).shape == (2, 9, 3, 3)
    x = jnp.arange(2 * 9 * 8 * 3, dtype=jnp.float32).reshape(2, 9, 8, 3)
    np.testing.assert_allclose(jax.jit(F.blur_pool, static_argnums=(1, 2))(x, 3, 2), F.blur_pool(x), rtol=1e-6)
    np.testing.assert_allclose(
        jax.grad(lambda v: F.blur_pool(v).sum())(x).sum(), x.size / 4 * 0 + F.blur_pool(x).size, rtol=1e-5
    )  # each output's weights sum to 1 (reflection keeps the mass)
    assert jnp.allclose(F.blur_pool(jnp.full((1, 7, 7, 2), 3.0)), 3.0)  # a constant passes unchanged


def test_bad_input():
    x = jnp.ones((1, 8, 8, 2))
    with pytest.raises(ValueError, match="filter_size.*got 8"):
        F.blur_pool(x, 8)
    with pytest.raises(ValueError, match="filter_size.*got 0"):
        F.blur_pool(x, 0)
    with pytest.raises(TypeError, match="filter_size must be an int"):
        F.blur_pool(x, 2.5)
    with pytest.raises(ValueError, match="padding_mode.*'mirror'"):
        F.blur_pool(x, padding_mode="mirror")
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        F.blur_pool(jnp.ones((1, 8, 8, 2), jnp.int32))
    with pytest.raises(ValueError, match=r"x must have shape \(N, \*spatial, C\)"):
        F.blur_pool(jnp.ones((8, 8)))
    with pytest.raises(ValueError, match="strides must be >= 1"):
        F.blur_pool(x, 3, 0)
    with pytest.raises(ValueError, match="reflect"):
        F.blur_pool(jnp.ones((1, 1, 8, 2)), 3)  # reflection needs a pad smaller than the input


def test_modules_wrap_the_functions(rng):
    x = jnp.asarray(rng.standard_normal((2, 10, 10, 3)), jnp.float32)
    np.testing.assert_array_equal(jnn.BlurPool(5, 2).apply({}, x), F.blur_pool(x, 5, 2))
    np.testing.assert_array_equal(jnn.MaxBlurPool().apply({}, x), F.max_blur_pool(x))
    assert jnn.BlurPool(padding_mode="zeros").init(jax.random.key(0), x) == {}


def test_lwls_downsample_variants_keep_parameters_and_shapes(rng):
    shape = jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32)
    for pool in ("stride", "max", "avg", "blur"):
        model = get_model("lwls_cnn", downsample=pool)

        def run(x, model=model):
            v = model.init(jax.random.key(0), x)
            return v, model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])[1]

        v, st = jax.eval_shape(run, shape)
        assert sum(a.size for a in jax.tree.leaves(v["params"])) == 122270, pool
        assert st["intermediates"]["flatten"]["__call__"][0].shape == (2, 588), pool
    # the blurpool variant is conv2 (stride 1) -> ReLU -> MaxBlurPool: rebuilt here from F.conv, F.max_pool and the filter
    model = get_model("lwls_cnn_blurpool")
    x = jnp.asarray(rng.standard_normal((2, 28, 28, 1)), jnp.float32)

    @jax.jit
    def run(x):
        v = model.init(jax.random.key(0, impl="rbg"), x)  # threefry init compiles for ~40 s here
        return v, model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])[1]["intermediates"]

    v, inter = run(x)
    p1, p2 = v["params"]["conv1"], v["params"]["conv2"]
    h = jax.nn.relu(F.conv(jax.nn.relu(F.conv(x, p1["kernel"], p1["bias"])), p2["kernel"], p2["bias"]))
    expected = numpy_blur_pool(np.asarray(F.max_pool(h, 2, 1)), 3, 2)
    np.testing.assert_allclose(inter["pool2"]["__call__"][0], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="downsample.*'blurry'"):
        jax.eval_shape(lambda x: get_model("lwls_cnn", downsample="blurry").init(jax.random.key(0), x), shape)


def test_resnet18_blurpool_same_parameters_and_shapes():
    shape = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    plain = jax.eval_shape(lambda x: get_model("resnet18").init(jax.random.key(0), x), shape)
    blur = jax.eval_shape(lambda x: get_model("resnet18_blurpool").init(jax.random.key(0), x), shape)
    assert jax.tree.map(lambda a: a.shape, plain) == jax.tree.map(lambda a: a.shape, blur)
    assert sum(a.size for a in jax.tree.leaves(blur["params"])) == 11_689_512
    model = get_model("resnet18_blurpool", num_classes=10)
    out = jax.eval_shape(lambda x: model.apply(model.init(jax.random.key(0), x), x), shape)
    assert out.shape == (1, 10)
