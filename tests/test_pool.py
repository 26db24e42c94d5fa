"""Pooling in :mod:`jaxcnn.functional` against independent oracles.

Oracles: PyTorch CPU (``torch.nn.functional``, float64, channels-first with
transposes at the boundary) and plain NumPy loops written here. Nothing is ever
compared with jaxcnn itself, except where the claim *is* a self-consistency
(jit == eager, vmap == loop).

Layout reminder: jaxcnn is ``(N, *spatial, C)``; PyTorch is ``(N, C, *spatial)``.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxcnn.functional as F

torch.set_num_threads(1)

RTOL, ATOL = 1e-5, 1e-6

TORCH_MAX = {1: tf.max_pool1d, 2: tf.max_pool2d, 3: tf.max_pool3d}
TORCH_AVG = {1: tf.avg_pool1d, 2: tf.avg_pool2d, 3: tf.avg_pool3d}
TORCH_UNPOOL = {1: tf.max_unpool1d, 2: tf.max_unpool2d, 3: tf.max_unpool3d}
TORCH_ADAPTIVE_AVG = {1: tf.adaptive_avg_pool1d, 2: tf.adaptive_avg_pool2d, 3: tf.adaptive_avg_pool3d}
TORCH_ADAPTIVE_MAX = {1: tf.adaptive_max_pool1d, 2: tf.adaptive_max_pool2d, 3: tf.adaptive_max_pool3d}


# ----------------------------------------------------------------------------- helpers


def to_torch(x, requires_grad=False) -> torch.Tensor:
    """``(N, *spatial, C)`` -> float64 ``(N, C, *spatial)``."""
    t = torch.tensor(np.moveaxis(np.asarray(x, np.float64), -1, 1).copy())
    return t.requires_grad_(requires_grad)


def from_torch(t: torch.Tensor) -> np.ndarray:
    """``(N, C, *spatial)`` -> ``(N, *spatial, C)``."""
    return np.moveaxis(t.detach().numpy(), 1, -1)


def randn(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def value_and_vjp(f, x, w):
    """``f(x)`` and the gradient of ``sum(f(x) * w)`` with respect to ``x``.

    One ``jax.jit`` around both: one compilation per shape instead of one per
    primitive in eager mode, which keeps the file fast.
    """

    @jax.jit
    def both(x, w):
        y, vjp = jax.vjp(f, x)
        return y, vjp(w.astype(y.dtype))[0]

    y, g = both(jnp.asarray(x), jnp.asarray(w))
    return np.asarray(y), np.asarray(g)


def torch_value_and_grad(f, x, w):
    """Same as :func:`value_and_vjp`, by PyTorch autograd (channels-last in and out)."""
    t = to_torch(x, requires_grad=True)
    y = f(t)
    (y * to_torch(w)).sum().backward()
    return from_torch(y), from_torch(t.grad)


def same_pads_tf(n, k, s):
    """TensorFlow's SAME rule, written out independently: output ceil(n / s)."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def pool_loops(x, window, strides, pads, op, count_include_pad=True):
    """Direct pooling by loops over output positions (NumPy, float64).

    ``pads``: one ``(low, high)`` pair per spatial dim; output size
    ``floor((n + lo + hi - k) / s) + 1``. ``op``: "max" (padding never wins) or
    "avg" (zero padding; divide by the window size clipped to the padded input if
    ``count_include_pad``, else by the number of real elements).
    """
    x = np.asarray(x, np.float64) if op == "avg" else np.asarray(x)
    nd = x.ndim - 2
    sizes = x.shape[1:-1]
    outs = [(n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in zip(sizes, pads, window, strides)]
    y = np.zeros((x.shape[0], *outs, x.shape[-1]), x.dtype)
    for o in itertools.product(*(range(m) for m in outs)):
        starts = [oi * s - lo for oi, s, (lo, _) in zip(o, strides, pads)]
        real = tuple(slice(max(a, 0), min(a + k, n)) for a, k, n in zip(starts, window, sizes))
        block = x[(slice(None), *real, slice(None))]
        assert block.size > 0, "a window sees only padding"
        if op == "max":
            y[(slice(None), *o, slice(None))] = block.max(axis=tuple(range(1, nd + 1)))
        else:
            if count_include_pad:
                count = math.prod(min(a + k, n + hi) - a for a, k, n, (_, hi) in zip(starts, window, sizes, pads))
            else:
                count = math.prod(b.stop - b.start for b in real)
            y[(slice(None), *o, slice(None))] = block.sum(axis=tuple(range(1, nd + 1))) / count
    return y


def check_max_pool(x, window, strides, padding, ceil_mode, rng):
    nd = x.ndim - 2
    f = lambda v: F.max_pool(v, window, strides, padding, ceil_mode)  # noqa: E731
    tf_ = lambda t: TORCH_MAX[nd](t, window, strides, padding, ceil_mode=ceil_mode)  # noqa: E731
    ref_y = from_torch(tf_(to_torch(x)))
    w = randn(rng, ref_y.shape)
    y, g = value_and_vjp(f, x, w)
    ref_y, ref_g = torch_value_and_grad(tf_, x, w)
    assert y.shape == ref_y.shape
    np.testing.assert_allclose(y, ref_y, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(g, ref_g, rtol=RTOL, atol=1e-5)


def check_avg_pool(x, window, strides, padding, ceil_mode, count_include_pad, rng):
    nd = x.ndim - 2
    f = lambda v: F.avg_pool(v, window, strides, padding, ceil_mode, count_include_pad)  # noqa: E731
    tf_ = lambda t: TORCH_AVG[nd](t, window, strides, padding, ceil_mode, count_include_pad)  # noqa: E731
    ref_y = from_torch(tf_(to_torch(x)))
    w = randn(rng, ref_y.shape)
    y, g = value_and_vjp(f, x, w)
    ref_y, ref_g = torch_value_and_grad(tf_, x, w)
    assert y.shape == ref_y.shape
    np.testing.assert_allclose(y, ref_y, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(g, ref_g, rtol=RTOL, atol=1e-5)


# ------------------------------------------------- max_pool / avg_pool vs torch (tables)

# (shape, window, strides, padding, ceil_mode); padding is an int or one int per dim
# (PyTorch's limit: pad <= window / 2). Comments give the size rule being exercised.
POOL_CASES = [
    # 1D
    ((2, 9, 3), 3, None, 0, False),  # default strides = window: 9 -> 3
    ((2, 9, 3), 3, 2, 1, False),
    ((2, 9, 3), 2, 2, 0, True),  # ceil changes the size: floor 4, ceil 5 (last window hangs over)
    ((2, 10, 2), 4, 3, 2, True),  # span 10: ceil 5, but window 5 starts at 12 = n + pad: dropped -> 4
    ((1, 4, 2), 2, 3, 1, True),  # ceil gives 3, but window 3 would start in the high padding: dropped -> 2
    ((1, 7, 2), 3, 4, 1, True),  # same drop rule: ceil 3 -> 2
    ((1, 5, 1), 5, 1, 2, False),  # window equal to input, pad = window / 2
    # 2D
    ((2, 7, 8, 3), 2, None, 0, False),
    ((2, 7, 8, 3), (2, 3), (2, 1), (1, 1), False),
    ((2, 7, 8, 3), 3, 2, 0, True),  # H: 3 both ways; W: floor 3, ceil 4
    ((1, 7, 6, 2), 3, 2, 1, True),  # W: floor 3, ceil 4 (last window starts in the input, hangs over)
    ((1, 5, 4, 2), (2, 2), (3, 3), (1, 1), True),  # both dims hit the drop rule
    # 3D
    ((1, 5, 6, 7, 2), 2, None, 0, True),  # ceil: 5 -> 3, 7 -> 4
    ((1, 5, 6, 7, 2), (3, 2, 2), (2, 1, 2), (1, 0, 1), False),
    ((1, 4, 5, 4, 1), 3, 2, 1, True),  # ceil: 4 -> 3 (floor 2), 5 -> 3
]


@pytest.mark.parametrize("shape,window,strides,padding,ceil_mode", POOL_CASES)
def test_max_pool_matches_torch(shape, window, strides, padding, ceil_mode, rng):
    check_max_pool(randn(rng, shape), window, strides, padding, ceil_mode, rng)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("shape,window,strides,padding,ceil_mode", POOL_CASES)
def test_avg_pool_matches_torch(shape, window, strides, padding, ceil_mode, count_include_pad, rng):
    check_avg_pool(randn(rng, shape), window, strides, padding, ceil_mode, count_include_pad, rng)


def test_ceil_mode_sizes_by_hand():
    """The size rules themselves, worked out by hand (and equal to PyTorch's)."""
    x = jnp.zeros((1, 9, 1))
    assert F.max_pool(x, 2).shape == (1, 4, 1)  # floor(7 / 2) + 1
    assert F.max_pool(x, 2, ceil_mode=True).shape == (1, 5, 1)  # ceil(7 / 2) + 1
    # n=4, k=2, s=3, pad=1: ceil((4 + 2 - 2) / 3) + 1 = 3, but window 3 would start at
    # padded position 6 >= n + pad = 5 (in the high padding): PyTorch drops it.
    x = jnp.zeros((1, 4, 1))
    assert F.max_pool(x, 2, 3, 1, ceil_mode=True).shape == (1, 2, 1)
    assert F.avg_pool(x, 2, 3, 1, ceil_mode=True).shape == (1, 2, 1)
    assert tuple(tf.max_pool1d(torch.zeros(1, 1, 4), 2, 3, 1, ceil_mode=True).shape) == (1, 1, 2)


def test_avg_pool_ceil_overhang_not_counted():
    """ceil_mode overhang is never counted; the user's padding is, if asked (PyTorch rule)."""
    x = jnp.arange(1.0, 6.0).reshape(1, 5, 1)  # 1 2 3 4 5
    y = F.avg_pool(x, 2, ceil_mode=True)[0, :, 0]  # windows [1,2] [3,4] [5,<overhang>]
    np.testing.assert_allclose(y, [1.5, 3.5, 5.0])
    # pad 1, k 3, s 2 on n=5: windows [p,1,2] [2,3,4] [4,5,p]
    y = F.avg_pool(x, 3, 2, 1, count_include_pad=True)[0, :, 0]
    np.testing.assert_allclose(y, [3 / 3, 9 / 3, 9 / 3], rtol=1e-6)
    y = F.avg_pool(x, 3, 2, 1, count_include_pad=False)[0, :, 0]
    np.testing.assert_allclose(y, [3 / 2, 9 / 3, 9 / 2], rtol=1e-6)


# ------------------------------------------------------------ gradients by hand


def test_max_pool_gradient_lands_on_argmax_only():
    x = jnp.array([[1.0, 5.0], [3.0, 2.0]]).reshape(1, 2, 2, 1)
    g = jax.grad(lambda v: F.max_pool(v, 2).sum())(x)[0, ..., 0]
    np.testing.assert_array_equal(g, [[0.0, 1.0], [0.0, 0.0]])
    # overlapping windows: each window sends its gradient to its own arg-max, and
    # the contributions add up: windows [1,4] [4,2] [2,0] -> maxima 4, 4, 2
    x = jnp.array([1.0, 4.0, 2.0, 0.0]).reshape(1, 4, 1)
    g = jax.grad(lambda v: (F.max_pool(v, 2, 1) * jnp.array([1.0, 10.0, 100.0]).reshape(1, 3, 1)).sum())(x)
    np.testing.assert_array_equal(g[0, :, 0], [0.0, 11.0, 100.0, 0.0])
    # ties go to the first position in scan order (as PyTorch): windows [3,3] -> index 0
    x = jnp.array([3.0, 3.0, 1.0, 2.0]).reshape(1, 4, 1)
    g = jax.grad(lambda v: F.max_pool(v, 2).sum())(x)
    np.testing.assert_array_equal(g[0, :, 0], [1.0, 0.0, 0.0, 1.0])


def test_avg_pool_gradient_is_split_equally():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((1, 4, 4, 1)), jnp.float32)
    g = jax.grad(lambda v: F.avg_pool(v, 2).sum())(x)
    np.testing.assert_allclose(g, np.full((1, 4, 4, 1), 0.25))
    # n=3, k=2, s=1, pad=1: windows [p,x0] [x0,x1] [x1,x2] [x2,p]
    x = jnp.array([1.0, 2.0, 3.0]).reshape(1, 3, 1)
    g = jax.grad(lambda v: F.avg_pool(v, 2, 1, 1, count_include_pad=True).sum())(x)
    np.testing.assert_allclose(g[0, :, 0], [1.0, 1.0, 1.0])  # every window divides by 2
    g = jax.grad(lambda v: F.avg_pool(v, 2, 1, 1, count_include_pad=False).sum())(x)
    np.testing.assert_allclose(g[0, :, 0], [1.5, 1.0, 1.5])  # edge windows divide by 1


# ------------------------------------------------------------ string and pair paddings


@pytest.mark.parametrize(
    "shape,window,strides",
    [
        ((2, 7, 3), 3, 2),
        ((2, 8, 3), 4, 3),
        ((1, 5, 1), 2, 1),
        ((1, 7, 6, 2), (3, 2), (2, 2)),
        ((1, 6, 7, 2), (2, 5), (3, 1)),
        ((1, 3, 4, 5, 2), 2, (1, 2, 3)),
    ],
)
@pytest.mark.parametrize("padding", ["SAME", "same"])
def test_same_padding_tf_rule(shape, window, strides, padding, rng):
    x = randn(rng, shape)
    nd = x.ndim - 2
    win = (window,) * nd if isinstance(window, int) else window
    st_ = (strides,) * nd if isinstance(strides, int) else strides
    pads = [same_pads_tf(n, k, s) for n, k, s in zip(shape[1:-1], win, st_)]
    expect_shape = (shape[0], *(math.ceil(n / s) for n, s in zip(shape[1:-1], st_)), shape[-1])
    y = F.max_pool(x, window, strides, padding)
    assert y.shape == expect_shape
    np.testing.assert_allclose(y, pool_loops(x, win, st_, pads, "max"), rtol=RTOL)
    for cip in (True, False):
        y = F.avg_pool(x, window, strides, padding, count_include_pad=cip)
        assert y.shape == expect_shape
        np.testing.assert_allclose(y, pool_loops(x, win, st_, pads, "avg", cip), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "shape,window,strides,padding",
    [
        ((1, 7, 2), 3, 2, ((2, 0),)),
        ((1, 7, 2), 3, 1, ((0, 2),)),
        ((1, 5, 6, 2), (3, 2), (1, 2), ((1, 0), (0, 1))),
        ((1, 5, 6, 2), 3, 2, ((2, 1), (1, 2))),  # pad 2 > 3 // 2: beyond PyTorch's limit
        ((1, 4, 4, 2), 3, 1, 2),  # symmetric pad 2 with window 3, PyTorch refuses
        ((1, 3, 4, 5, 1), 2, 1, ((1, 0), (0, 0), (0, 1))),
    ],
)
def test_explicit_pairs_vs_loops(shape, window, strides, padding, rng):
    x = randn(rng, shape)
    nd = x.ndim - 2
    win = (window,) * nd if isinstance(window, int) else window
    st_ = (strides,) * nd if isinstance(strides, int) else strides
    pads = [(padding, padding)] * nd if isinstance(padding, int) else list(padding)
    np.testing.assert_allclose(F.max_pool(x, window, strides, padding), pool_loops(x, win, st_, pads, "max"))
    for cip in (True, False):
        np.testing.assert_allclose(
            F.avg_pool(x, window, strides, padding, count_include_pad=cip),
            pool_loops(x, win, st_, pads, "avg", cip),
            rtol=RTOL,
            atol=ATOL,
        )


def test_per_dim_int_padding_equals_pairs(rng):
    x = randn(rng, (1, 6, 7, 2))
    np.testing.assert_array_equal(F.max_pool(x, 3, 2, (1, 0)), F.max_pool(x, 3, 2, ((1, 1), (0, 0))))
    np.testing.assert_allclose(F.max_pool(x, 3, 2, (1, 0)), pool_loops(x, (3, 3), (2, 2), [(1, 1), (0, 0)], "max"))


def test_causal_and_full_padding_vs_loops(rng):
    x = randn(rng, (1, 6, 2))
    np.testing.assert_allclose(F.max_pool(x, 3, 1, "causal"), pool_loops(x, (3,), (1,), [(2, 0)], "max"))
    np.testing.assert_allclose(
        F.avg_pool(x, 3, 2, "FULL", count_include_pad=False),
        pool_loops(x, (3,), (2,), [(2, 2)], "avg", False),
        rtol=RTOL,
    )


# ------------------------------------------------------------ max_pool_with_indices / unpool

INDEX_CASES = [
    ((2, 9, 3), 3, None, 0),
    ((2, 9, 3), 3, 2, 1),
    ((2, 7, 8, 3), 2, None, 0),
    ((2, 7, 8, 3), (3, 2), (2, 1), (1, 1)),
    ((1, 5, 6, 7, 2), 2, None, 0),
    ((1, 5, 6, 7, 2), 3, 2, 1),
]


@pytest.mark.parametrize("shape,window,strides,padding", INDEX_CASES)
def test_max_pool_with_indices_matches_torch(shape, window, strides, padding, rng):
    x = randn(rng, shape)
    nd = x.ndim - 2
    values, indices, plain = jax.jit(
        lambda v: (*F.max_pool_with_indices(v, window, strides, padding), F.max_pool(v, window, strides, padding))
    )(x)
    tv, ti = TORCH_MAX[nd](to_torch(x), window, strides, padding, return_indices=True)
    assert indices.dtype == jnp.int32
    np.testing.assert_array_equal(indices, from_torch(ti))
    np.testing.assert_allclose(values, from_torch(tv), rtol=RTOL)
    np.testing.assert_array_equal(values, plain)


def test_max_pool_with_indices_ties_and_all_padding_value():
    # ties: first position in scan order, as PyTorch
    x = np.array([1, 3, 3, 0, 2, 2, 5, 5], np.float32).reshape(1, 8, 1)
    _, i = F.max_pool_with_indices(x, 3, 1)
    ti = tf.max_pool1d(to_torch(x), 3, 1, return_indices=True)[1]
    np.testing.assert_array_equal(i, from_torch(ti))
    # a window whose real entries are all -inf (equal to the padding value) must still
    # point at a real element: the first one of the window, as PyTorch
    x = np.full((1, 4, 5, 1), -np.inf, np.float32)
    x[0, 3, 4, 0] = 1.0
    v, i = F.max_pool_with_indices(x, 2, 2, 1)
    tv, ti = tf.max_pool2d(to_torch(x), 2, 2, 1, return_indices=True)
    np.testing.assert_array_equal(i, from_torch(ti))
    np.testing.assert_array_equal(v, from_torch(tv))
    assert int(i.min()) >= 0
    # same with integers: padding is the int32 minimum
    xi = np.full((1, 5, 1), np.iinfo(np.int32).min, np.int32)
    _, i = F.max_pool_with_indices(xi, 2, 2, 1)
    np.testing.assert_array_equal(i[0, :, 0], [0, 1, 3])


@pytest.mark.parametrize("shape,window,strides,padding", INDEX_CASES)
def test_max_unpool_matches_torch(shape, window, strides, padding, rng):
    x = randn(rng, shape)
    nd = x.ndim - 2
    tv, ti = TORCH_MAX[nd](to_torch(x), window, strides, padding, return_indices=True)
    out_size = shape[1:-1]
    values = from_torch(tv).astype(np.float32)
    indices = from_torch(ti).astype(np.int32)
    y = jax.jit(lambda v, i: F.max_unpool(v, i, out_size))(values, indices)
    ref = TORCH_UNPOOL[nd](tv, ti, window, strides, padding, output_size=out_size)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, from_torch(ref), rtol=RTOL)


def test_max_unpool_output_size_larger_than_default(rng):
    # 7 -> pool 2 -> 3; PyTorch's default unpool size would be 6, ask for 7
    x = randn(rng, (2, 7, 5, 3))
    tv, ti = tf.max_pool2d(to_torch(x), 2, return_indices=True)
    y = F.max_unpool(from_torch(tv).astype(np.float32), from_torch(ti).astype(np.int32), (7, 5))
    ref = tf.max_unpool2d(tv, ti, 2, output_size=(7, 5))
    np.testing.assert_allclose(y, from_torch(ref), rtol=RTOL)


@pytest.mark.parametrize("shape,window", [((2, 8, 3), 2), ((1, 6, 9, 2), (2, 3)), ((1, 4, 4, 6, 2), 2)])
def test_max_unpool_round_trip(shape, window, rng):
    """unpool(pool(x)) keeps x at each window's arg-max and zeros elsewhere (NumPy check)."""
    x = np.abs(randn(rng, shape)) + 0.1

    @jax.jit
    def round_trip(x):
        v, i = F.max_pool_with_indices(x, window)
        y = F.max_unpool(v, i, shape[1:-1])
        return v, i, y, F.max_pool(y, window), F.max_pool(x, window)

    v, i, y, pooled_again, pooled = round_trip(x)
    y = np.asarray(y)
    n, c = shape[0], shape[-1]
    expect = np.zeros((n, math.prod(shape[1:-1]), c), np.float32)
    flat_x = x.reshape(n, -1, c)
    flat_i = np.asarray(i).reshape(n, -1, c)
    for b in range(n):
        for ch in range(c):
            expect[b, flat_i[b, :, ch], ch] = flat_x[b, flat_i[b, :, ch], ch]
    np.testing.assert_array_equal(y, expect.reshape(shape))
    # each window holds one non-zero, its max: pooling again gives the same values
    np.testing.assert_array_equal(pooled_again, v)
    np.testing.assert_array_equal(pooled, v)


def test_max_unpool_gradient(rng):
    # non-overlapping windows: d/dvalues of sum(w * unpool(v)) = w gathered at the indices
    x = randn(rng, (2, 6, 4, 3))
    tv, ti = tf.max_pool2d(to_torch(x), 2, return_indices=True)
    values = from_torch(tv).astype(np.float32)
    indices = from_torch(ti).astype(np.int32)
    w = randn(rng, x.shape)
    _, g = value_and_vjp(lambda v: F.max_unpool(v, indices, (6, 4)), values, w)
    t = tv.detach().clone().requires_grad_(True)
    (tf.max_unpool2d(t, ti, 2, output_size=(6, 4)) * to_torch(w)).sum().backward()
    np.testing.assert_allclose(g, from_torch(t.grad), rtol=RTOL)
    # overlapping windows (several outputs share one arg-max): the composite
    # x -> unpool(pool(x)) is the identity on each arg-max and 0 elsewhere, so its
    # gradient is w on the arg-max positions, counted once. (PyTorch's max_unpool
    # backward gathers for every duplicate and would give 3 * w at x[2] here.)
    x = np.array([0.0, 1.0, 9.0, 2.0, 3.0, 0.5], np.float32).reshape(1, 6, 1)
    w = np.arange(1.0, 7.0, dtype=np.float32).reshape(1, 6, 1)

    def composite(v):
        vals, idx = F.max_pool_with_indices(v, 3, 1)
        return (F.max_unpool(vals, idx, 6) * w).sum()

    g = jax.grad(composite)(jnp.asarray(x))
    np.testing.assert_array_equal(g[0, :, 0], [0.0, 0.0, 3.0, 0.0, 5.0, 0.0])


def test_max_unpool_drops_out_of_range_indices():
    v = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1)
    i = jnp.array([0, -1, 5, 2], jnp.int32).reshape(1, 4, 1)  # -1 and 5 are outside [0, 5)
    y = F.max_unpool(v, i, 5)
    np.testing.assert_array_equal(y[0, :, 0], [1.0, 0.0, 4.0, 0.0, 0.0])


def test_max_pool_with_indices_gradient_matches_torch(rng):
    x = randn(rng, (2, 7, 6, 2))
    f = lambda v: F.max_pool_with_indices(v, 3, 2, 1)[0]  # noqa: E731
    tf_ = lambda t: tf.max_pool2d(t, 3, 2, 1, return_indices=True)[0]  # noqa: E731
    w = randn(rng, (2, 4, 3, 2))
    y, g = value_and_vjp(f, x, w)
    ry, rg = torch_value_and_grad(tf_, x, w)
    np.testing.assert_allclose(y, ry, rtol=RTOL)
    np.testing.assert_allclose(g, rg, rtol=RTOL, atol=1e-5)


# ------------------------------------------------------------ adaptive pools

ADAPTIVE_CASES = [
    ((2, 7, 3), 3),
    ((2, 5, 3), 3),
    ((2, 10, 2), 4),
    ((2, 3, 2), 5),  # output larger than input: bins overlap
    ((1, 6, 2), 6),
    ((1, 6, 2), 1),
    ((2, 7, 5, 3), (3, 3)),
    ((1, 10, 3, 2), (4, 5)),
    ((1, 7, 5, 2), (None, 2)),
    ((1, 7, 5, 2), (3, None)),
    ((1, 5, 7, 3, 2), (3, None, 5)),
    ((1, 4, 6, 5, 2), 2),
]


@pytest.mark.parametrize("shape,output_size", ADAPTIVE_CASES)
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_adaptive_pool_matches_torch(kind, shape, output_size, rng):
    x = randn(rng, shape)
    nd = x.ndim - 2
    ours = F.adaptive_avg_pool if kind == "avg" else F.adaptive_max_pool
    table = TORCH_ADAPTIVE_AVG if kind == "avg" else TORCH_ADAPTIVE_MAX
    tf_ = lambda t: table[nd](t, output_size)  # noqa: E731
    ref_y = from_torch(tf_(to_torch(x)))
    w = randn(rng, ref_y.shape)
    y, g = value_and_vjp(lambda v: ours(v, output_size), x, w)
    ref_y, ref_g = torch_value_and_grad(tf_, x, w)
    assert y.shape == ref_y.shape
    np.testing.assert_allclose(y, ref_y, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(g, ref_g, rtol=RTOL, atol=1e-5)


def test_adaptive_bins_by_hand():
    # 5 -> 3: bins [0, 2), [1, 4), [3, 5) (PyTorch: floor(i n / o), ceil((i + 1) n / o))
    x = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0]).reshape(1, 5, 1)
    np.testing.assert_allclose(F.adaptive_avg_pool(x, 3)[0, :, 0], [1.5, 3.0, 4.5])
    np.testing.assert_array_equal(F.adaptive_max_pool(x, 3)[0, :, 0], [2.0, 4.0, 5.0])
    # 3 -> 5: bins [0,1) [0,2) [1,2) [1,3) [2,3)
    x = jnp.array([1.0, 2.0, 4.0]).reshape(1, 3, 1)
    np.testing.assert_allclose(F.adaptive_avg_pool(x, 5)[0, :, 0], [1.0, 1.5, 2.0, 3.0, 4.0])


# ------------------------------------------------------------ global pools


@pytest.mark.parametrize("shape", [(2, 7, 3), (2, 5, 4, 3), (1, 3, 4, 5, 2)])
def test_global_pools_vs_numpy(shape, rng):
    x = randn(rng, shape)
    axes = tuple(range(1, x.ndim - 1))
    ya, ym = F.global_avg_pool(x), F.global_max_pool(x)
    assert ya.shape == ym.shape == (shape[0], shape[-1])
    np.testing.assert_allclose(ya, x.astype(np.float64).mean(axis=axes), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(ym, x.max(axis=axes))
    g = jax.grad(lambda v: F.global_avg_pool(v).sum())(x)
    np.testing.assert_allclose(g, np.full(shape, 1.0 / math.prod(shape[1:-1])), rtol=RTOL)
    xi = rng.integers(-100, 100, shape).astype(np.int32)
    ymi = F.global_max_pool(xi)
    assert ymi.dtype == jnp.int32
    np.testing.assert_array_equal(ymi, xi.max(axis=axes))


# ------------------------------------------------------------ transformations


def _all_ops():
    """(name, fn of a (N, *spatial, C) float array) for every pool, on small inputs."""
    return [
        ("max_pool", lambda v: F.max_pool(v, 2, 1, 1, ceil_mode=True)),
        ("avg_pool", lambda v: F.avg_pool(v, 3, 2, "SAME", count_include_pad=False)),
        ("max_pool_with_indices", lambda v: F.max_pool_with_indices(v, 2, 1, 1)),
        ("unpool", lambda v: F.max_unpool(*F.max_pool_with_indices(v, 2), v.shape[1:-1])),
        ("global_avg_pool", F.global_avg_pool),
        ("global_max_pool", F.global_max_pool),
        ("adaptive_avg_pool", lambda v: F.adaptive_avg_pool(v, 3)),
        ("adaptive_max_pool", lambda v: F.adaptive_max_pool(v, (3, None))),
    ]


@pytest.mark.parametrize("name,fn", _all_ops(), ids=[n for n, _ in _all_ops()])
def test_jit_and_vmap(name, fn, rng):
    x = randn(rng, (2, 5, 4, 2))
    eager = fn(x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL), jax.jit(fn)(x), eager)
    xs = randn(rng, (3, 2, 5, 4, 2))
    batched = jax.jit(jax.vmap(fn))(xs)
    jfn = jax.jit(fn)  # the loop: one call per example (jitted only to save time)
    looped = [jfn(xs[b]) for b in range(3)]
    stacked = jax.tree.map(lambda *a: np.stack(a), *looped)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL), batched, stacked)


@pytest.mark.parametrize("name,fn", _all_ops(), ids=[n for n, _ in _all_ops()])
def test_grad_under_jit_and_vmap(name, fn, rng):
    def loss(v):
        out = fn(v)
        out = out[0] if isinstance(out, tuple) else out
        return jnp.sum(out * out)

    x = randn(rng, (2, 5, 4, 2))
    g = jax.grad(loss)(x)
    jgrad = jax.jit(jax.grad(loss))
    np.testing.assert_allclose(jgrad(x), g, rtol=RTOL)
    xs = randn(rng, (3, 2, 5, 4, 2))
    gb = jax.jit(jax.vmap(jax.grad(loss)))(xs)
    for b in range(3):
        np.testing.assert_allclose(gb[b], jgrad(xs[b]), rtol=RTOL)
    assert np.all(np.isfinite(g))


def test_jit_with_static_arguments(rng):
    x = randn(rng, (1, 6, 7, 2))
    names = ("window", "strides", "padding", "ceil_mode", "count_include_pad")
    f = jax.jit(F.avg_pool, static_argnames=names)
    y = f(x, window=(2, 3), strides=2, padding=((1, 0), (0, 1)), ceil_mode=False, count_include_pad=False)
    ref = pool_loops(x, (2, 3), (2, 2), [(1, 0), (0, 1)], "avg", False)
    np.testing.assert_allclose(y, ref, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------ dtypes


def test_integer_max_pool(rng):
    x = rng.integers(-50, 50, (2, 7, 6, 3)).astype(np.int32)
    y = F.max_pool(x, 3, 2, 1)
    assert y.dtype == jnp.int32
    np.testing.assert_array_equal(y, pool_loops(x, (3, 3), (2, 2), [(1, 1), (1, 1)], "max"))
    y = jax.jit(lambda v: F.max_pool(v, 2, ceil_mode=True))(x)
    assert y.dtype == jnp.int32 and y.shape == (2, 4, 3, 3)
    ref = TORCH_MAX[2](torch.tensor(np.moveaxis(x, -1, 1).astype(np.float64)), 2, ceil_mode=True)
    np.testing.assert_array_equal(y, from_torch(ref).astype(np.int32))
    v, i = F.max_pool_with_indices(x, 2)
    assert v.dtype == jnp.int32
    np.testing.assert_array_equal(v, pool_loops(x, (2, 2), (2, 2), [(0, 0), (0, 0)], "max"))
    am = F.adaptive_max_pool(x, (3, 4))
    assert am.dtype == jnp.int32
    ref = tf.adaptive_max_pool2d(torch.tensor(np.moveaxis(x, -1, 1).astype(np.float64)), (3, 4))
    np.testing.assert_array_equal(am, from_torch(ref).astype(np.int32))
    # uint8 images: padding is 0 and never beats a real value
    xu = rng.integers(0, 255, (1, 5, 5, 1)).astype(np.uint8)
    yu = F.max_pool(xu, 3, 2, 1)
    assert yu.dtype == jnp.uint8
    np.testing.assert_array_equal(yu, pool_loops(xu, (3, 3), (2, 2), [(1, 1), (1, 1)], "max"))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize(
    "op",
    ["max", "avg", "avg_nopad", "adaptive_avg", "adaptive_max", "global_avg", "global_max"],
)
def test_dtype_kept_and_rounded_once(op, dtype, rng):
    """16-bit results equal the float64 answer to within one rounding (half an ulp)."""
    x16 = jnp.asarray(randn(rng, (2, 9, 9, 3)), dtype)
    x = np.asarray(x16, np.float64)  # the exact values the op sees
    fns = {
        "max": (lambda v: F.max_pool(v, 3, 2, 1), lambda: pool_loops(x, (3, 3), (2, 2), [(1, 1)] * 2, "max")),
        "avg": (lambda v: F.avg_pool(v, 3, 2, 1), lambda: pool_loops(x, (3, 3), (2, 2), [(1, 1)] * 2, "avg")),
        "avg_nopad": (
            lambda v: F.avg_pool(v, 3, 2, 1, count_include_pad=False),
            lambda: pool_loops(x, (3, 3), (2, 2), [(1, 1)] * 2, "avg", False),
        ),
        "adaptive_avg": (
            lambda v: F.adaptive_avg_pool(v, (4, 5)),
            lambda: from_torch(tf.adaptive_avg_pool2d(to_torch(x), (4, 5))),
        ),
        "adaptive_max": (
            lambda v: F.adaptive_max_pool(v, (4, 5)),
            lambda: from_torch(tf.adaptive_max_pool2d(to_torch(x), (4, 5))),
        ),
        "global_avg": (F.global_avg_pool, lambda: x.mean(axis=(1, 2))),
        "global_max": (F.global_max_pool, lambda: x.max(axis=(1, 2))),
    }
    fn, oracle = fns[op]
    y = fn(x16)
    assert y.dtype == dtype
    ref = oracle()
    eps = float(jnp.finfo(dtype).eps)
    err = np.abs(np.asarray(y, np.float64) - ref)
    # half an ulp is at most |ref| * eps / 2; a little slack for the float32 sum itself
    assert np.all(err <= np.abs(ref) * eps / 2 * 1.01 + 1e-6), (op, float(err.max()))


def test_bfloat16_gradients_finite(rng):
    x = jnp.asarray(randn(rng, (1, 6, 6, 2)), jnp.bfloat16)
    for f in (lambda v: F.max_pool(v, 2), lambda v: F.avg_pool(v, 3, 1, 1), lambda v: F.adaptive_avg_pool(v, 4)):
        g = jax.grad(lambda v, f=f: f(v).astype(jnp.float32).sum())(x)
        assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))


# ------------------------------------------------------------ errors


ONES_1D = np.ones((1, 6, 2), np.float32)
ONES_2D = np.ones((1, 6, 6, 2), np.float32)
VALS = np.ones((1, 3, 2), np.float32)  # pooled values for max_unpool
IDX = np.zeros((1, 3, 2), np.int32)
INT_2D = np.ones((1, 4, 4, 1), np.int32)
PAIR = r"padding must have one \(low, high\) pair"

ERROR_CASES = [
    # x: rank, kind, dtype
    (lambda: F.max_pool(np.ones((6, 6), np.float32), 2), ValueError, r"x must have shape \(N, \*spatial, C\)"),
    (lambda: F.avg_pool(np.ones((1, 2, 2, 2, 2, 2, 1), np.float32), 2), ValueError, r"x must have shape.*rank 7"),
    (lambda: F.max_pool("image", 2), TypeError, r"x must be an array"),
    (lambda: F.avg_pool(INT_2D, 2), TypeError, r"x must have a floating-point dtype.*int32"),
    (lambda: F.max_pool(np.ones((1, 4, 4, 1), bool), 2), TypeError, r"x must have a numeric dtype"),
    # window, strides
    (lambda: F.max_pool(ONES_2D, 0), ValueError, r"window must be >= 1.*0"),
    (lambda: F.max_pool(ONES_2D, (2, -1)), ValueError, r"window must be >= 1.*-1"),
    (lambda: F.max_pool(ONES_2D, 2.0), TypeError, r"window must be an int, got 2\.0"),
    (lambda: F.max_pool(ONES_2D, (2, 2.5)), TypeError, r"window\[1\] must be an int"),
    (lambda: F.max_pool_with_indices(ONES_1D, 0), ValueError, r"window must be >= 1"),
    (lambda: F.avg_pool(ONES_2D, 2, 0), ValueError, r"strides must be >= 1"),
    (lambda: F.max_pool(ONES_2D, 2, (1, 1, 1)), ValueError, r"strides must be .*2 ints.*3 entries"),
    (lambda: F.max_pool(ONES_1D, 7), ValueError, r"window \(7,\).*larger than the padded input"),
    (lambda: F.avg_pool(ONES_2D, (2, 7)), ValueError, r"window.*larger than the padded input.*dim 1"),
    # padding
    (lambda: F.max_pool(ONES_1D, 2, 1, 2), ValueError, r"padding.*sees only padding"),
    (lambda: F.max_pool(ONES_1D, 2, 1, ((0, 3),)), ValueError, r"padding.*sees only padding"),
    (lambda: F.max_pool(ONES_2D, 2, padding="REFLECT"), ValueError, r"padding must be one of.*'REFLECT'"),
    (lambda: F.max_pool(ONES_2D, 2, padding=((1, 1),)), ValueError, PAIR + r" per spatial dim \(2\)"),
    (lambda: F.max_pool(ONES_2D, 2, padding=((1, 1),) * 3), ValueError, PAIR),
    (lambda: F.max_pool(ONES_2D, 2, padding=-1), ValueError, r"padding must be non-negative"),
    (lambda: F.max_pool(ONES_2D, 2, padding=1.0), TypeError, r"padding must be"),
    # flags
    (lambda: F.max_pool(ONES_2D, 2, ceil_mode=1), TypeError, r"ceil_mode must be True or False"),
    (lambda: F.avg_pool(ONES_2D, 2, count_include_pad="no"), TypeError, r"count_include_pad must be True or False"),
    # max_unpool
    (lambda: F.max_unpool(VALS, IDX[..., :1], 6), ValueError, r"indices must have the shape of values"),
    (lambda: F.max_unpool(VALS, IDX.astype(np.float32), 6), TypeError, r"indices must be an integer array.*float32"),
    (lambda: F.max_unpool(VALS, IDX, (6, 6)), ValueError, r"output_size must be .*1 ints"),
    (lambda: F.max_unpool(VALS[0], IDX[0], 6), ValueError, r"values must have shape"),
    # adaptive and global
    (lambda: F.adaptive_avg_pool(ONES_2D, 0), ValueError, r"output_size must be >= 1"),
    (lambda: F.adaptive_max_pool(ONES_2D, (3,)), ValueError, r"output_size must be .*2 ints"),
    (lambda: F.adaptive_avg_pool(ONES_2D, None), TypeError, r"output_size must be an int"),
    (lambda: F.adaptive_avg_pool(INT_2D, 2), TypeError, r"x must have a floating-point dtype"),
    (lambda: F.global_avg_pool(INT_2D), TypeError, r"x must have a floating-point dtype"),
    (lambda: F.global_max_pool(np.ones((4, 1), np.float32)), ValueError, r"x must have shape"),
]


@pytest.mark.parametrize("call,exc,match", ERROR_CASES)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_errors_at_trace_time_under_jit():
    with pytest.raises(ValueError, match="window must be >= 1"):
        jax.jit(lambda v: F.max_pool(v, 0))(ONES_2D)
    with pytest.raises(ValueError, match="sees only padding"):
        jax.jit(lambda v: F.avg_pool(v, 2, 1, 3))(ONES_2D)
    with pytest.raises(TypeError, match="window must be an int"):
        jax.jit(lambda v, k: F.max_pool(v, k))(ONES_2D, 2)  # a traced window


# ------------------------------------------------------------ property tests

# database=None: write nothing into the repo; a failure prints its example and seed.
_SETTINGS = settings(
    max_examples=25, deadline=None, database=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def torch_pool_configs(draw):
    """Random small pools within PyTorch's limits (pad <= window / 2, window fits)."""
    nd = draw(st.sampled_from([1, 1, 2, 2, 3]))
    window = tuple(draw(st.integers(1, 4 if nd < 3 else 3)) for _ in range(nd))  # <= 27 taps in 3D
    strides = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    pads = tuple(draw(st.integers(0, k // 2)) for k in window)
    # PyTorch's avg_pool3d (only it) also refuses an input smaller than the window even
    # when the padding makes it fit; jaxcnn accepts that (the loop oracle checks such
    # cases in 1D/2D, test_property_pairs_vs_loops), so 3D sizes here start at the window.
    lowest = (lambda k, p: max(k - 2 * p, 1)) if nd < 3 else (lambda k, p: k)
    sizes = tuple(draw(st.integers(lowest(k, p), k + (5 if nd < 3 else 2))) for k, p in zip(window, pads))
    ceil_mode = draw(st.booleans())
    count_include_pad = draw(st.booleans())
    default_strides = draw(st.booleans())
    shape = (draw(st.integers(1, 2)), *sizes, draw(st.integers(1, 2)))
    return nd, shape, window, None if default_strides else strides, pads, ceil_mode, count_include_pad


@_SETTINGS
@given(cfg=torch_pool_configs(), seed=st.integers(0, 2**16))
def test_property_max_pool_vs_torch(cfg, seed):
    nd, shape, window, strides, pads, ceil_mode, _ = cfg
    rng = np.random.default_rng(seed)
    check_max_pool(randn(rng, shape), window, strides, pads, ceil_mode, rng)


@_SETTINGS
@given(cfg=torch_pool_configs(), seed=st.integers(0, 2**16))
def test_property_avg_pool_vs_torch(cfg, seed):
    nd, shape, window, strides, pads, ceil_mode, cip = cfg
    rng = np.random.default_rng(seed)
    check_avg_pool(randn(rng, shape), window, strides, pads, ceil_mode, cip, rng)


@_SETTINGS
@given(cfg=torch_pool_configs(), seed=st.integers(0, 2**16))
def test_property_indices_vs_torch(cfg, seed):
    nd, shape, window, strides, pads, _, _ = cfg
    rng = np.random.default_rng(seed)
    x = randn(rng, shape)

    @jax.jit
    def pool_unpool(x):
        v, i = F.max_pool_with_indices(x, window, strides, pads)
        return v, i, F.max_unpool(v, i, shape[1:-1])

    v, i, y = pool_unpool(x)
    tv, ti = TORCH_MAX[nd](to_torch(x), window, strides, pads, return_indices=True)
    np.testing.assert_array_equal(i, from_torch(ti))
    np.testing.assert_allclose(v, from_torch(tv), rtol=RTOL)
    ref = TORCH_UNPOOL[nd](tv, ti, window, strides, pads, output_size=shape[1:-1])
    np.testing.assert_allclose(y, from_torch(ref), rtol=RTOL)


@st.composite
def pair_pool_configs(draw):
    """Asymmetric (low, high) pads beyond PyTorch's limit, checked against the loops."""
    nd = draw(st.sampled_from([1, 2]))
    window = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    pads = tuple((draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))) for k in window)
    sizes = tuple(draw(st.integers(max(k - lo - hi, 1), 7)) for k, (lo, hi) in zip(window, pads))
    return (1, *sizes, 2), window, strides, pads


@_SETTINGS
@given(cfg=pair_pool_configs(), seed=st.integers(0, 2**16))
def test_property_pairs_vs_loops(cfg, seed):
    shape, window, strides, pads = cfg
    sizes = shape[1:-1]
    outs = [(n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in zip(sizes, pads, window, strides)]
    # a window that sees only padding must be refused, not silently pooled
    only_pad = any((o - 1) * s - lo >= n for o, s, (lo, _), n in zip(outs, strides, pads, sizes))
    x = randn(np.random.default_rng(seed), shape)
    if only_pad:
        with pytest.raises(ValueError, match="sees only padding"):
            F.max_pool(x, window, strides, pads)
        return
    cip = bool(seed % 2)
    both = jax.jit(
        lambda v: (F.max_pool(v, window, strides, pads), F.avg_pool(v, window, strides, pads, count_include_pad=cip))
    )
    y_max, y_avg = both(x)
    np.testing.assert_allclose(y_max, pool_loops(x, window, strides, pads, "max"))
    np.testing.assert_allclose(
        y_avg,
        pool_loops(x, window, strides, pads, "avg", cip),
        rtol=RTOL,
        atol=ATOL,
    )


@_SETTINGS
@given(
    nd=st.sampled_from([1, 2, 3]),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_property_adaptive_vs_torch(nd, data, seed):
    sizes = tuple(data.draw(st.integers(1, 9 if nd < 3 else 5)) for _ in range(nd))
    out = tuple(data.draw(st.integers(1, 9 if nd < 3 else 5)) for _ in range(nd))
    x = randn(np.random.default_rng(seed), (1, *sizes, 2))
    y_avg, y_max = jax.jit(lambda v: (F.adaptive_avg_pool(v, out), F.adaptive_max_pool(v, out)))(x)
    np.testing.assert_allclose(y_avg, from_torch(TORCH_ADAPTIVE_AVG[nd](to_torch(x), out)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(y_max, from_torch(TORCH_ADAPTIVE_MAX[nd](to_torch(x), out)), rtol=RTOL)


def test_max_unpool_accepts_the_full_output_shape_like_torch():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)
    v, i = F.max_pool_with_indices(x, 2)
    xt = torch.tensor(np.moveaxis(x, -1, 1).copy())
    vt, it = torch.nn.functional.max_pool2d(xt, 2, return_indices=True)
    ref = torch.nn.functional.max_unpool2d(vt, it, 2, output_size=(2, 3, 7, 6))  # torch's full-shape form
    np.testing.assert_array_equal(F.max_unpool(v, i, (2, 7, 6, 3)), np.moveaxis(ref.numpy(), 1, -1))
    with pytest.raises(ValueError, match=r"output_size \(3, 7, 6, 3\) as a full shape must start with N=2"):
        F.max_unpool(v, i, (3, 7, 6, 3))
