"""Singular values of convolutions and spectral normalization, against the SVD of the dense matrix.

Oracle: ``numpy.linalg.svd`` (float64) of ``jaxcnn.analysis.conv_matrix``, whose
entries are checked against PyTorch here for the circular padding added for
this purpose (and against F.conv in tests/test_analysis.py for zero padding).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as tf

import jaxcnn.functional as F
import jaxcnn.nn as jnn
from jaxcnn.analysis import conv_matrix, conv_singular_values

torch.set_num_threads(1)
KEY = jax.random.key(0, impl="rbg")  # threefry keys make init compile for tens of seconds on this CPU


def dense_sv(kernel, shape, **kw):
    return np.linalg.svd(conv_matrix(np.asarray(kernel, np.float64), shape, **kw), compute_uv=False)


def test_circular_conv_matrix_equals_pytorch(rng):
    w = rng.standard_normal((3, 4, 2, 3))
    x = rng.standard_normal((5, 6, 2))
    y = conv_matrix(w, x.shape, padding="SAME", padding_mode="circular") @ x.ravel()
    t = tf.pad(torch.tensor(np.moveaxis(x, -1, 0)[None].copy()), (1, 2, 1, 1), mode="circular")
    ref = tf.conv2d(t, torch.tensor(np.transpose(w, (3, 2, 0, 1)).copy()))[0].numpy()
    np.testing.assert_allclose(y.reshape(5, 6, 3), np.moveaxis(ref, 0, -1), rtol=1e-10)


@pytest.mark.parametrize(
    "kshape, shape, dilation",
    [
        ((3, 3, 2, 3), (6, 5, 2), 1),  # 2-D, C_in < C_out
        ((3, 3, 4, 2), (5, 5, 4), 1),  # C_in > C_out
        ((2, 3, 1, 1), (4, 7, 1), 1),  # even kernel, one channel
        ((3, 2, 3), (9, 2), 2),  # 1-D, dilated
        ((2, 3, 2, 2, 2), (3, 4, 5, 2), 1),  # 3-D
        ((5, 1, 1), (3, 1), 1),  # kernel wider than the input: taps wrap
    ],
)
def test_circular_all_singular_values_equal_dense_svd(kshape, shape, dilation, rng):
    w = rng.standard_normal(kshape).astype(np.float32)
    s = np.asarray(conv_singular_values(w, shape, dilation=dilation))
    ref = dense_sv(w, shape, padding="SAME", padding_mode="circular", dilation=dilation)
    nd = len(shape) - 1
    assert s.shape == (np.prod(shape[:nd]) * min(kshape[-2:]),) and s.dtype == np.float32
    np.testing.assert_allclose(s, np.sort(ref)[::-1][: s.size], rtol=1e-5, atol=1e-5 * ref.max())
    np.testing.assert_allclose(np.asarray(conv_singular_values(w, shape, dilation=dilation, k=2)), s[:2])


def test_circular_box_blur_by_hand():
    # 1-D [1, 1, 1] / 3 on n = 6: the transfer is (1 + 2 cos(2 pi f / 6)) / 3 -> |.| = 1, 2/3, 0, 1/3, 0 ... sorted
    s = np.asarray(conv_singular_values(jnp.ones((3, 1, 1)) / 3, (6, 1)))
    expected = sorted([abs(1 + 2 * np.cos(2 * np.pi * f / 6)) / 3 for f in range(6)], reverse=True)
    np.testing.assert_allclose(s, expected, atol=1e-6)


@pytest.mark.parametrize(
    "kshape, shape, padding, strides, dilation",
    [
        ((3, 3, 2, 3), (7, 6, 2), "zeros", 1, 1),
        ((3, 3, 2, 3), (7, 6, 2), "VALID", 1, 1),
        ((3, 3, 3, 2), (8, 7, 3), 1, 2, 1),
        ((4, 4, 2, 2), (9, 9, 2), "SAME", 2, 1),
        ((3, 3, 1, 2), (8, 8, 1), "SAME", 1, 2),
        ((5, 2, 3), (12, 2), ((2, 1),), 3, 1),
        ((2, 2, 2, 1, 2), (4, 4, 4, 1), "SAME", 1, 1),
    ],
)
def test_zero_padding_norm_equals_dense_svd(kshape, shape, padding, strides, dilation, rng):
    w = rng.standard_normal(kshape).astype(np.float32)
    ref = dense_sv(w, shape, padding="SAME" if padding == "zeros" else padding, strides=strides, dilation=dilation)
    s = np.asarray(conv_singular_values(w, shape, padding=padding, strides=strides, dilation=dilation, n_iter=1000))
    assert s.shape == (1,) and s.dtype == np.float32
    np.testing.assert_allclose(s[0], ref[0], rtol=1e-4)


def test_zero_padding_top_k_equals_dense_svd(rng):
    w = rng.standard_normal((3, 3, 2, 2)).astype(np.float32)
    ref = dense_sv(w, (5, 5, 2), padding="VALID")
    s = np.asarray(conv_singular_values(w, (5, 5, 2), padding="VALID", k=3, n_iter=2000))
    np.testing.assert_allclose(s, ref[:3], rtol=1e-4)
    assert np.all(np.diff(s) <= 0)


def test_power_iteration_is_exact_adjoint_and_differentiable(rng):
    w = jnp.asarray(rng.standard_normal((3, 3, 2, 3)), jnp.float32)
    v = jax.random.normal(jax.random.key(1, impl="rbg"), (1, 7, 6, 2))
    sigma, u = F.conv_power_iteration(w, v, n_iter=3, strides=2, padding=1)
    assert sigma.shape == (1,) and sigma.dtype == jnp.float32 and u.shape == v.shape and u.dtype == jnp.float32
    s_jit, u_jit = jax.jit(lambda w, v: F.conv_power_iteration(w, v, n_iter=3, strides=2, padding=1))(w, v)
    np.testing.assert_allclose(s_jit, sigma, rtol=1e-5)
    np.testing.assert_allclose(u_jit, u, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(jnp.sum(u**2)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(sigma[0], jnp.linalg.norm(F.conv(u, w, strides=2, padding=1)), rtol=1e-5)
    # d sigma / d W (u fixed) = the gradient of ||A_W u||, checked against the dense matrix: u^T M^T M u' / sigma
    g = jax.grad(lambda k: F.conv_power_iteration(k, u, n_iter=0, strides=2, padding=1)[0][0])(w)
    eps, i = 1e-3, (1, 2, 0, 1)
    plus, minus = np.asarray(w, np.float64).copy(), np.asarray(w, np.float64).copy()
    plus[i] += eps
    minus[i] -= eps
    un = np.asarray(u, np.float64).ravel()
    fd = (
        np.linalg.norm(conv_matrix(plus, (7, 6, 2), strides=2, padding=1) @ un)
        - np.linalg.norm(conv_matrix(minus, (7, 6, 2), strides=2, padding=1) @ un)
    ) / (2 * eps)
    np.testing.assert_allclose(float(g[i]), fd, rtol=1e-3)


def test_jit_matches_eager(rng):
    w = jnp.asarray(rng.standard_normal((3, 3, 2, 2)), jnp.float32)
    for padding in ("circular", "zeros"):
        f = lambda k, padding=padding: conv_singular_values(k, (6, 6, 2), padding=padding, n_iter=50)  # noqa: E731
        np.testing.assert_allclose(jax.jit(f)(w), f(w), rtol=1e-5)


def test_bad_input():
    w = jnp.ones((3, 3, 2, 4))
    with pytest.raises(ValueError, match="strides must be 1 with padding='circular'.*block circulant"):
        conv_singular_values(w, (8, 8, 2), strides=2)
    with pytest.raises(ValueError, match="C_in = 2.*C_in = 3"):
        conv_singular_values(w, (8, 8, 3))
    with pytest.raises(ValueError, match="does not match input_shape"):
        conv_singular_values(w, (8, 2))
    with pytest.raises(TypeError, match="kernel must have a floating-point dtype"):
        conv_singular_values(jnp.ones((3, 3, 2, 4), jnp.int32), (8, 8, 2))
    with pytest.raises(TypeError, match="input_shape must be a sequence"):
        conv_singular_values(w, 8)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        conv_singular_values(w, (8, 8, 2), k=0)
    with pytest.raises(ValueError, match="k must be <= the input dimension 8"):
        conv_singular_values(jnp.ones((3, 1, 1)), (8, 1), padding="zeros", k=9)
    with pytest.raises(ValueError, match="padding must be one of"):
        conv_singular_values(w, (8, 8, 2), padding="mirror")
    with pytest.raises(TypeError, match="key must be a single PRNG key"):
        conv_singular_values(w, (8, 8, 2), padding="zeros", key=3)
    with pytest.raises(ValueError, match="n_iter must be >= 0"):
        F.conv_power_iteration(w, jnp.ones((1, 8, 8, 2)), n_iter=-1)
    with pytest.raises(ValueError, match="kernel must have shape"):
        F.conv_power_iteration(jnp.ones((3, 2, 4)), jnp.ones((1, 8, 8, 2)))
    with pytest.raises(ValueError, match="padding_mode must be one of 'zeros', 'circular'"):
        conv_matrix(np.ones((3, 1, 1)), (5, 1), padding_mode="reflect")


# ----------------------------------------------------------------------------- SpectralNormConv


def normalized_kernel(variables, collection="spectral_stats"):
    return np.asarray(variables["params"]["kernel"]) / float(variables[collection]["sigma"])


def test_spectral_norm_conv_has_operator_norm_one_unlike_reshaped_matrix():
    layer = jnn.SpectralNormConv(4, 3, strides=2, n_iter=1)
    x = jnp.ones((2, 9, 8, 3))
    v = layer.init(KEY, x, train=False)
    step = jax.jit(lambda v: layer.apply(v, x, train=True, mutable=["spectral_stats"]))
    for _ in range(50):  # one iteration per call, the vector carried across calls (Miyato et al.)
        _, state = step(v)
        v = {**v, **state}
    k = normalized_kernel(v)
    op_norm = dense_sv(k, (9, 8, 3), padding="SAME", strides=2)[0]
    np.testing.assert_allclose(op_norm, 1.0, rtol=1e-3)
    reshaped = np.linalg.svd(k.reshape(-1, 4), compute_uv=False)[0]  # what reshape-based spectral norms bound
    assert abs(reshaped - 1.0) > 0.05, reshaped
    # the layer's output scales by exactly that kernel
    y = layer.apply(v, x, train=False)
    np.testing.assert_allclose(y, F.conv(x, k, v["params"]["bias"], strides=2), rtol=1e-5, atol=1e-6)


def test_spectral_norm_state_updates_only_in_training():
    layer = jnn.SpectralNormConv(2, 3, n_init_iter=0)
    x = jnp.ones((1, 6, 6, 1))
    v = layer.init(KEY, x, train=False)
    assert v["spectral_stats"]["u"].shape == (1, 6, 6, 1) and v["spectral_stats"]["sigma"].shape == ()
    _, same = layer.apply(v, x, train=False, mutable=["spectral_stats"])
    assert jax.tree.all(
        jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), same, {"spectral_stats": v["spectral_stats"]})
    )
    _, moved = layer.apply(v, x, train=True, mutable=["spectral_stats"])
    assert not jnp.array_equal(moved["spectral_stats"]["u"], v["spectral_stats"]["u"])
    assert jnn.SpectralNormConv(2, 3, collection="batch_stats").init(KEY, x, train=False).keys() == {
        "params",
        "batch_stats",
    }
    with pytest.raises(ValueError, match="collection must be"):
        jnn.SpectralNormConv(2, 3, collection="params").init(KEY, x, train=False)
    with pytest.raises(TypeError, match="train must be True or False"):
        layer.apply(v, x, train=None)
    with pytest.raises(TypeError, match="n_iter must be an int"):
        jnn.SpectralNormConv(2, 3, n_iter=1.5).init(KEY, x, train=False)


class LipschitzNet(nn.Module):
    """Two spectrally normalized convs, global average pool, a dense head: 2-class classifier."""

    @nn.compact
    def __call__(self, x, *, train):
        x = jax.nn.relu(jnn.SpectralNormConv(8, 3, strides=2, name="c1")(x, train=train))
        x = jax.nn.relu(jnn.SpectralNormConv(8, 3, strides=2, name="c2")(x, train=train))
        return nn.Dense(2)(x.mean(axis=(1, 2)))


@pytest.mark.slow
def test_lipschitz_classifier_trains_stably():
    """Oriented stripes (horizontal vs vertical) + noise: loss falls, accuracy > 95%, every conv stays 1-Lipschitz."""
    rng = np.random.default_rng(0)
    n = 256
    labels = rng.integers(0, 2, n)
    stripes = np.sin(np.arange(12) * np.pi / 2)[:, None] * np.ones((1, 12))
    x = np.where(labels[:, None, None] == 0, stripes, stripes.T)[..., None] + 0.5 * rng.standard_normal((n, 12, 12, 1))
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(labels)
    model = LipschitzNet()
    v = model.init(KEY, x[:1], train=False)
    tx = optax.adam(3e-2)
    opt = tx.init(v["params"])

    @jax.jit
    def step(params, stats, opt, xb, yb):
        def loss_fn(p):
            logits, new = model.apply(
                {"params": p, "spectral_stats": stats}, xb, train=True, mutable=["spectral_stats"]
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), new["spectral_stats"]

        (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        upd, opt = tx.update(g, opt)
        return optax.apply_updates(params, upd), stats, opt, loss

    params, stats, losses = v["params"], v["spectral_stats"], []
    for i in range(120):
        b = slice((i * 32) % n, (i * 32) % n + 32)
        params, stats, opt, loss = step(params, stats, opt, x[b], y[b])
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), (losses[:10], losses[-10:])
    logits = model.apply({"params": params, "spectral_stats": stats}, x, train=False)
    assert float(jnp.mean(jnp.argmax(logits, -1) == y)) > 0.95
    for name, shape in (("c1", (12, 12, 1)), ("c2", (6, 6, 8))):
        k = np.asarray(params[name]["kernel"]) / float(stats[name]["sigma"])
        assert dense_sv(k, shape, padding="SAME", strides=2)[0] < 1.02, name
