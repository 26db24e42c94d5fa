"""The PyTorch options a port needs, in the functional core and the nn modules, against PyTorch: values, indices, gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tf = torch.nn.functional

import jaxcnn.functional as F
import jaxcnn.nn as jnn
from jaxcnn.interop.torch.layout import channels_first, channels_last

MAX = {1: tf.max_pool1d, 2: tf.max_pool2d, 3: tf.max_pool3d}


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _torch_grad(fn, x, w):
    t = torch.from_numpy(x).requires_grad_(True)
    out = fn(t)
    (out * torch.from_numpy(w)).sum().backward()
    return out.detach().numpy(), t.grad.numpy()


@pytest.mark.parametrize(
    "shape,k,s,p,d,ceil",
    [
        ((2, 3, 11), 3, 2, 1, 2, False),
        ((2, 3, 10), 2, 3, 1, 3, True),
        ((1, 2, 9, 8), (3, 2), (2, 1), (1, 0), (2, 3), True),
        ((1, 2, 7, 8), 2, 2, 0, 1, True),
        ((1, 2, 5, 6, 7), 2, 1, 1, (1, 2, 2), False),
    ],
)
def test_max_pool_dilation_ceil_values_indices_gradients(shape, k, s, p, d, ceil):
    nd = len(shape) - 2
    x = _x(shape)
    tk = lambda t: MAX[nd](t, k, s, p, d, ceil_mode=ceil, return_indices=True)
    ref_v, ref_i = (a.numpy() for a in tk(torch.from_numpy(x)))
    w = _x(ref_v.shape, 1)
    _, ref_g = _torch_grad(lambda t: tk(t)[0], x, w)
    tup = lambda v: (v,) * nd if isinstance(v, int) else v
    args = {"window": tup(k), "strides": s, "padding": p, "ceil_mode": ceil, "dilation": d}
    v, i = F.max_pool_with_indices(channels_last(x), **args)
    np.testing.assert_allclose(channels_first(v), ref_v, atol=1e-6)
    np.testing.assert_array_equal(channels_first(i), ref_i)
    y = F.max_pool(channels_last(x), **args)
    np.testing.assert_allclose(channels_first(y), ref_v, atol=1e-6)
    for f in (F.max_pool, lambda *a, **kw: F.max_pool_with_indices(*a, **kw)[0]):
        g = jax.grad(lambda t, f=f: jnp.sum(f(t, **args) * jnp.asarray(channels_last(w))))(
            jnp.asarray(channels_last(x))
        )
        np.testing.assert_allclose(channels_first(g), ref_g, atol=1e-6)
    layer = jnn.MaxPool(tup(k), s, p, ceil_mode=ceil, dilation=d)
    np.testing.assert_allclose(channels_first(layer.apply({}, channels_last(x))), ref_v, atol=1e-6)


@pytest.mark.parametrize("divisor", [1, 3, 7])
def test_avg_pool_divisor_override(divisor):
    x = _x((2, 3, 7, 6))
    ref, ref_g = _torch_grad(
        lambda t: tf.avg_pool2d(t, 3, 2, 1, ceil_mode=True, divisor_override=divisor), x, _x((2, 3, 4, 4), 1)
    )
    f = lambda t: F.avg_pool(t, 3, 2, 1, ceil_mode=True, divisor_override=divisor)
    np.testing.assert_allclose(channels_first(f(channels_last(x))), ref, atol=1e-5)
    g = jax.grad(lambda t: jnp.sum(f(t) * jnp.asarray(channels_last(_x((2, 3, 4, 4), 1)))))(
        jnp.asarray(channels_last(x))
    )
    np.testing.assert_allclose(channels_first(g), ref_g, atol=1e-5)
    layer = jnn.AvgPool(3, 2, 1, ceil_mode=True, divisor_override=divisor)
    np.testing.assert_allclose(channels_first(layer.apply({}, channels_last(x))), ref, atol=1e-5)
    with pytest.raises(ValueError, match="divisor_override must be a positive int or None, got 0"):
        F.avg_pool(channels_last(x), 2, divisor_override=0)


@pytest.mark.parametrize("shape,out", [((2, 3, 10), (4,)), ((1, 2, 7, 9), (3, 4)), ((1, 2, 5, 6, 7), (2, 3, 4))])
def test_adaptive_max_pool_indices(shape, out):
    nd = len(shape) - 2
    x = _x(shape)
    fn = {1: tf.adaptive_max_pool1d, 2: tf.adaptive_max_pool2d, 3: tf.adaptive_max_pool3d}[nd]
    ref_v, ref_i = (a.numpy() for a in fn(torch.from_numpy(x), out, return_indices=True))
    w = _x(ref_v.shape, 1)
    _, ref_g = _torch_grad(lambda t: fn(t, out), x, w)
    v, i = F.adaptive_max_pool(channels_last(x), out, return_indices=True)
    np.testing.assert_allclose(channels_first(v), ref_v)
    np.testing.assert_array_equal(channels_first(i), ref_i)
    _, i2 = F.adaptive_max_pool_with_indices(channels_last(x), out)
    np.testing.assert_array_equal(np.asarray(i2), np.asarray(i))
    g = jax.grad(lambda t: jnp.sum(F.adaptive_max_pool_with_indices(t, out)[0] * jnp.asarray(channels_last(w))))(
        jnp.asarray(channels_last(x))
    )
    np.testing.assert_allclose(channels_first(g), ref_g, atol=1e-6)


def test_batch_norm_without_running_statistics():
    x = _x((4, 3, 5, 5))
    bn = torch.nn.BatchNorm2d(3, track_running_stats=False)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    w = _x((4, 3, 5, 5), 1)
    ref, ref_g = _torch_grad(bn, x, w)
    scale, bias = jnp.asarray(bn.weight.detach().numpy()), jnp.asarray(bn.bias.detach().numpy())
    f = lambda t: F.batch_norm(t, None, None, scale, bias, training=True)
    y, stats = f(jnp.asarray(channels_last(x)))
    assert stats == (None, None)
    np.testing.assert_allclose(channels_first(y), ref, atol=1e-5)
    g = jax.grad(lambda t: jnp.sum(f(t)[0] * jnp.asarray(channels_last(w))))(jnp.asarray(channels_last(x)))
    np.testing.assert_allclose(channels_first(g), ref_g, atol=1e-4)
    with pytest.raises(ValueError, match="only training=True"):
        F.batch_norm(channels_last(x), None, None, training=False)
    with pytest.raises(TypeError, match="both None"):
        F.batch_norm(channels_last(x), jnp.zeros(3), None, training=True)
    # the module: no batch_stats, batch statistics in inference too (as PyTorch)
    layer = jnn.BatchNorm(track_running_stats=False)
    variables = layer.init(jax.random.key(0), channels_last(x), use_running_average=True)
    assert set(variables) == {"params"}
    variables = {"params": {"scale": scale, "bias": bias}}
    bn.eval()
    with torch.no_grad():
        ref_eval = bn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(
        channels_first(layer.apply(variables, channels_last(x), use_running_average=True)), ref_eval, atol=1e-5
    )


def test_unbatched_inputs_as_torch():
    x = _x((3, 7, 8))  # torch unbatched (C, H, W)
    w = _x((4, 3, 3, 3), 1)
    ref = tf.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()
    from jaxcnn.interop.torch.layout import conv_from_torch

    out = F.conv(np.moveaxis(x, 0, -1), conv_from_torch(w), padding=1)
    assert out.shape == (7, 8, 4)
    np.testing.assert_allclose(np.moveaxis(np.asarray(out), -1, 0), ref, atol=1e-5)
    wt = _x((3, 2, 2, 2), 2)
    ref_t = tf.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(wt), stride=2).numpy()
    out_t = F.conv_transpose(np.moveaxis(x, 0, -1), conv_from_torch(wt), strides=2)
    np.testing.assert_allclose(np.moveaxis(np.asarray(out_t), -1, 0), ref_t, atol=1e-5)
    xh = np.moveaxis(x, 0, -1)  # (H, W, C)
    pools = [
        (
            lambda t: tf.max_pool2d(t, (3, 3), 2, 1, ceil_mode=True),
            lambda a: F.max_pool(a, (3, 3), 2, 1, ceil_mode=True),
        ),
        (lambda t: tf.avg_pool2d(t, (2, 3), 1), lambda a: F.avg_pool(a, (2, 3), 1)),
        (lambda t: tf.max_pool2d(t, (2, 2), return_indices=True)[1], lambda a: F.max_pool_with_indices(a, (2, 2))[1]),
        (lambda t: tf.adaptive_avg_pool2d(t, (3, 2)), lambda a: F.adaptive_avg_pool(a, (3, 2))),
        (lambda t: tf.adaptive_max_pool2d(t, (3, 2)), lambda a: F.adaptive_max_pool(a, (3, 2))),
    ]
    for theirs, ours in pools:
        ref = theirs(torch.from_numpy(x)).numpy()
        got = np.asarray(ours(xh))
        assert got.ndim == 3
        np.testing.assert_allclose(np.moveaxis(got, -1, 0), ref, atol=1e-6)
    # a window that pins a rank the input does not have is an error saying so
    with pytest.raises(
        ValueError, match=r"window must be an int or a sequence of 2 ints .* or of 3 ints if x is unbatched"
    ):
        F.max_pool(np.zeros((2, 6, 6, 2), np.float32), (3,))
    # an int window pins nothing: a rank-3 input is (N, L, C), as documented
    assert F.max_pool(np.zeros((6, 6, 2), np.float32), 3, strides=2).shape == (6, 2, 2)
