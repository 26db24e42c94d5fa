"""Max pooling's derivative by stride phases (functional/_pool_vjp.py, _pool_phases.py) against three oracles.

(a) a NumPy loop with PyTorch's first-maximum rule, (b) PyTorch's
``max_pool{1,2,3}d`` backward, (c) XLA's own gradient of ``lax.reduce_window``
where there are no ties; forward mode (jvp) against the NumPy rule.
"""

from __future__ import annotations

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import lax

import jaxcnn.functional as F
from jaxcnn.functional import _pool_phases
from jaxcnn.functional._pool_phases import phase_layout, split_phases
from tests.oracles import from_torch, to_torch

# (spatial sizes, window, strides, padding, dilation, batch)
CASES = [
    ((11,), 3, 2, 1, 1, 3),
    ((10,), 2, 1, 0, 2, 1),
    ((12,), 3, 3, "SAME", 2, 3),
    ((8, 8), 2, 2, 0, 1, 3),
    ((9, 9), 3, 2, 1, 1, 3),
    ((10, 8), 3, 2, "SAME", 1, 1),
    ((9, 10), (3, 2), (2, 1), 0, 1, 3),
    ((12, 11), 3, 3, 1, 1, 1),
    ((11, 11), 3, 2, 1, 2, 3),
    ((7, 9, 8), 3, 2, 1, 1, 1),
    ((6, 7, 6), 2, (2, 1, 2), "SAME", 1, 3),
    ((5, 6, 7), (3, 2, 2), 3, 0, 1, 3),
]


def _per_dim(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def _pads(sizes, window, strides, padding, dilation):
    """(low, high) per dim: an int on both sides, or TensorFlow's "SAME" rule worked out here."""
    if padding != "SAME":
        return [(padding, padding)] * len(sizes)
    pads = []
    for n, k, s, d in zip(sizes, window, strides, dilation):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def numpy_max_pool(x, window, strides, pads, dilation):
    """Values and the flat spatial arg-max of each window by loops: the first real maximum in scan order (PyTorch)."""
    n, *sizes, c = x.shape
    out = [
        (m + lo + hi - (k - 1) * d - 1) // s + 1 for m, (lo, hi), k, s, d in zip(sizes, pads, window, strides, dilation)
    ]
    y = np.zeros((n, *out, c), x.dtype)
    arg = np.zeros((n, *out, c), np.int64)
    for o in np.ndindex(*out):
        best, where = None, None
        for tap in np.ndindex(*window):
            pos = [oi * s + t * d - lo for oi, s, t, d, (lo, _) in zip(o, strides, tap, dilation, pads)]
            if any(p < 0 or p >= m for p, m in zip(pos, sizes)):
                continue  # padding never wins
            v = x[(slice(None), *pos, slice(None))]
            flat = np.ravel_multi_index(pos, sizes)
            if best is None:
                best, where = v.copy(), np.full(v.shape, flat)
            else:
                better = v > best  # strict: a tie keeps the earlier tap
                best = np.where(better, v, best)
                where = np.where(better, flat, where)
        y[(slice(None), *o, slice(None))] = best
        arg[(slice(None), *o, slice(None))] = where
    return y, arg


def numpy_grad(x, g, arg):
    """``dx[i] = sum of g[o] over the windows o whose arg-max is i`` (NumPy, per (n, c))."""
    n, *sizes, c = x.shape
    dx = np.zeros((n, int(np.prod(sizes)), c), np.float64)
    flat_arg = arg.reshape(n, -1, c)
    flat_g = g.reshape(n, -1, c).astype(np.float64)
    for b in range(n):
        for ch in range(c):
            np.add.at(dx[b, :, ch], flat_arg[b, :, ch], flat_g[b, :, ch])
    return dx.reshape(x.shape)


def numpy_jvp(dx, arg):
    """``dy[o] = dx[arg-max(o)]``."""
    n, c = dx.shape[0], dx.shape[-1]
    flat = dx.reshape(n, -1, c)
    return np.take_along_axis(flat, arg.reshape(n, -1, c), axis=1).reshape(arg.shape)


def _torch_grad(x, g, window, strides, padding, dilation):
    pool = {1: torch.nn.functional.max_pool1d, 2: torch.nn.functional.max_pool2d, 3: torch.nn.functional.max_pool3d}
    tx = to_torch(x).requires_grad_(True)
    ty = pool[x.ndim - 2](tx, window, strides, padding, dilation)
    ty.backward(to_torch(g))
    return from_torch(ty.detach()), from_torch(tx.grad)


def _xla_grad(x, g, window, strides, pads):
    def pooled(x):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0)))

    return jax.grad(lambda x: jnp.sum(pooled(x) * g))(x)


SLOW = {(CASES[9], True)}  # 27 taps compile slowly; its "distinct" sibling stays in the default run


@pytest.mark.parametrize(
    "sizes, window, strides, padding, dilation, batch, ties",
    [
        pytest.param(*case, ties, marks=[pytest.mark.slow] if (case, ties) in SLOW else [])
        for case in CASES
        for ties in (False, True)
    ],
)
def test_gradient_and_jvp_against_numpy_torch_and_xla(sizes, window, strides, padding, dilation, batch, ties):
    rng = np.random.default_rng(len(sizes) * 100 + sum(sizes))
    nd = len(sizes)
    ks, ss, ds = (_per_dim(v, nd) for v in (window, strides, dilation))
    shape = (batch, *sizes, 2)
    if ties:  # small integers: many equal maxima in each window
        x = rng.integers(0, 3, shape).astype(np.float32)
    else:
        x = rng.permutation(int(np.prod(shape))).reshape(shape).astype(np.float32)
    pads = _pads(sizes, ks, ss, padding, ds)
    y_np, arg = numpy_max_pool(x, ks, ss, pads, ds)
    g = rng.standard_normal(y_np.shape).astype(np.float32)
    dx = rng.standard_normal(x.shape).astype(np.float32)

    pool = lambda x: F.max_pool(x, window, strides, padding, dilation=dilation)
    y, pull = jax.vjp(jax.jit(pool), jnp.asarray(x))
    (grad,) = pull(jnp.asarray(g))
    _, tangent = jax.jit(lambda x, dx: jax.jvp(pool, (x,), (dx,)))(jnp.asarray(x), jnp.asarray(dx))

    np.testing.assert_array_equal(y, y_np)
    np.testing.assert_allclose(grad, numpy_grad(x, g, arg), rtol=1e-6, atol=1e-6)  # (a)
    np.testing.assert_array_equal(tangent, numpy_jvp(dx, arg))  # forward mode
    if padding != "SAME":  # PyTorch pads both sides alike
        y_t, grad_t = _torch_grad(x, g, ks, ss, padding, ds)
        np.testing.assert_array_equal(y, y_t)
        np.testing.assert_allclose(grad, grad_t, rtol=1e-6, atol=1e-6)  # (b)
    if not ties and all(d == 1 for d in ds):  # XLA has no gradient of a dilated max pool
        np.testing.assert_allclose(grad, _xla_grad(jnp.asarray(x), jnp.asarray(g), ks, ss, pads), rtol=1e-6)  # (c)


def test_phase_layout_of_the_resnet_stem_pool_by_hand():
    """3x3 stride 2 pad 1 over 112: 56 outputs; taps 0, 1, 2 sit in phases 0, 1, 0 at offsets 0, 0, 1."""
    lay = phase_layout((112, 112), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), (56, 56))
    assert lay.lengths == (57, 57)  # 56 + 2 // 2; 2 * 57 = 114 >= 1 + 112
    assert lay.pads == ((1, 1), (1, 1))
    assert lay.phase == [0, 1, 0, 2, 3, 2, 0, 1, 0]  # row-major (r_h, r_w)
    assert lay.start[2] == (0, 1) and lay.start[8] == (1, 1) and lay.start[4] == (0, 0)
    dilated = phase_layout((9,), (3,), (2,), ((0, 0),), (3,), (2,))  # taps at 0, 3, 6
    assert dilated.phase == [0, 1, 0] and dilated.start == [(0,), (1,), (3,)]


@pytest.mark.parametrize("sizes, strides, pads", [((7,), (3,), ((2, 0),)), ((5, 6), (2, 3), ((1, 0), (0, 2)))])
def test_split_phases_equals_numpy_strided_slices(rng, sizes, strides, pads):
    x = rng.standard_normal((2, *sizes, 3)).astype(np.float32)
    window = (1,) * len(sizes)
    out = tuple((n + lo + hi - 1) // s + 1 for n, (lo, hi), s in zip(sizes, pads, strides))
    lay = phase_layout(sizes, window, strides, pads, (1,) * len(sizes), out)
    xp = np.pad(x, ((0, 0), *lay.pads, (0, 0)), constant_values=-7.0)
    phases = split_phases(jnp.asarray(x), lay, -7.0)
    assert len(phases) == int(np.prod(strides))
    for flat, r in enumerate(np.ndindex(*strides)):
        expect = xp[(slice(None), *(slice(ri, None, s) for ri, s in zip(r, strides)), slice(None))]
        np.testing.assert_array_equal(phases[flat], expect)


def test_overlapping_windows_keep_the_argmax_in_a_loop_and_no_scatter():
    """3x3/2 keeps ``which`` behind a loop (one computation, not one per reading window); 2x2/2 needs none."""
    x = jnp.zeros((2, 9, 9, 3), jnp.float32)
    for window, strides, loop in [(3, 2, True), (2, 2, False)]:
        f = jax.jit(jax.grad(lambda x, w=window, s=strides: jnp.sum(F.max_pool(x, w, s, 1 if w == 3 else 0))))
        hlo = f.lower(x).as_text()
        assert ("while" in hlo) == loop and "scatter" not in hlo


def test_phase_module_examples():
    assert doctest.testmod(_pool_phases, raise_on_error=True).attempted >= 2
