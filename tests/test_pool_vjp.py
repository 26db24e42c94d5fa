"""Max pooling's arg-max derivative (functional/_pool_vjp.py): equal to XLA's without ties, to PyTorch's with ties."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import lax

import jaxcnn.functional as F
from jaxcnn.functional._pool_vjp import max_pool_argmax
from tests.oracles import from_torch, to_torch

# (spatial sizes, window, strides, (low, high) pads, dilation)
GEOMETRIES = [
    ((9,), (3,), (2,), ((1, 1),), (1,)),
    ((8, 8), (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1)),
    ((7, 9), (3, 2), (2, 1), ((1, 1), (0, 1)), (1, 1)),
    ((9, 8), (3, 3), (1, 2), ((1, 2), (1, 0)), (2, 1)),
    ((5, 6, 5), (2, 3, 2), (2, 2, 1), ((0, 1), (1, 1), (0, 0)), (1, 1, 2)),
]


def _xla(x, window, strides, pads, dilation):
    """JAX's own derivative: reduce_window max (select-and-scatter in reverse mode).

    XLA has no derivative of a dilated max pool; there the reference is
    ``jnp.max`` over the stacked strided slices (JAX's derivative of ``max``).
    """
    if all(d == 1 for d in dilation):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0)))
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
    out = [
        (n + lo + hi - (k - 1) * d - 1) // s + 1
        for n, (lo, hi), k, s, d in zip(x.shape[1:-1], pads, window, strides, dilation)
    ]
    slices = [
        xp[
            (
                slice(None),
                *(slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in zip(tap, dilation, out, strides)),
            )
        ]
        for tap in np.ndindex(*window)
    ]
    return jnp.max(jnp.stack(slices), axis=0)


def _loss(pool, *geometry):
    return lambda x, g: jnp.sum(pool(x, *geometry) * g)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_equals_xla_value_gradient_and_jvp_without_ties(rng, geometry):
    sizes = geometry[0]
    x = jnp.asarray(rng.permutation(2 * 3 * int(np.prod(sizes))).reshape((2, *sizes, 3)), jnp.float32)  # distinct
    y = jax.jit(max_pool_argmax, static_argnums=(1, 2, 3, 4))(x, *geometry[1:])
    g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    np.testing.assert_array_equal(y, _xla(x, *geometry[1:]))
    ours = jax.jit(jax.grad(_loss(max_pool_argmax, *geometry[1:])))(x, g)
    np.testing.assert_array_equal(ours, jax.grad(_loss(_xla, *geometry[1:]))(x, g))
    dx = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    f = lambda pool: lambda x: pool(x, *geometry[1:])
    np.testing.assert_array_equal(jax.jvp(f(max_pool_argmax), (x,), (dx,))[1], jax.jvp(f(_xla), (x,), (dx,))[1])
    per_example = jax.vmap(jax.grad(lambda x, g: _loss(max_pool_argmax, *geometry[1:])(x[None], g[None])))(x, g)
    np.testing.assert_array_equal(per_example, ours)


def _torch_pool(nd):
    return {1: torch.nn.functional.max_pool1d, 2: torch.nn.functional.max_pool2d, 3: torch.nn.functional.max_pool3d}[nd]


TIE_CASES = [
    ((10,), 3, 2, 1, 1, False),
    ((8, 8), 2, 2, 0, 1, False),
    ((9, 7), 3, 2, 1, 1, True),
    ((9, 9), 3, 1, 1, 2, False),
    ((6, 5, 6), 2, (2, 1, 2), 1, 1, False),
    ((7, 7), (3, 2), 2, 0, 1, True),
]


@pytest.mark.parametrize(
    "dtype, sizes, window, strides, padding, dilation, ceil_mode",
    [(jnp.float32, *c) for c in TIE_CASES] + [(jnp.bfloat16, *TIE_CASES[2]), (jnp.float16, *TIE_CASES[3])],
)
def test_ties_go_to_the_first_maximum_as_pytorch(rng, dtype, sizes, window, strides, padding, dilation, ceil_mode):
    """Small integers: many ties in every window. Values and input gradients equal PyTorch's."""
    nd = len(sizes)
    x = rng.integers(0, 3, (2, *sizes, 3)).astype(np.float32)
    ks, ss, ds = ((v,) * nd if isinstance(v, int) else v for v in (window, strides, dilation))
    tx = to_torch(x).requires_grad_(True)
    ty = _torch_pool(nd)(tx, ks, ss, padding, ds, ceil_mode=ceil_mode)
    g = rng.standard_normal(from_torch(ty.detach()).shape).astype(np.float32)
    ty.backward(to_torch(g))
    if dilation == 1:  # through the public function (pool.py's hook); F.max_pool has no dilation here
        pool = lambda x: F.max_pool(x, window, strides, padding, ceil_mode=ceil_mode)
    else:
        pads = tuple((padding, padding) for _ in range(nd))
        pool = lambda x: max_pool_argmax(x, ks, ss, pads, ds)
    xj = jnp.asarray(x, dtype)
    y, pull = jax.vjp(jax.jit(pool), xj)
    np.testing.assert_array_equal(np.asarray(y, np.float32), from_torch(ty.detach()))
    (dx,) = pull(jnp.asarray(g, dtype))
    tol = 0 if dtype == jnp.float32 else 2e-2  # 16-bit: g and its sums are rounded
    np.testing.assert_allclose(np.asarray(dx, np.float32), from_torch(tx.grad), rtol=tol, atol=tol)


def test_padding_never_takes_the_gradient(rng):
    """A window whose real entries are all -inf: the gradient goes to its first real element, as PyTorch."""
    x = np.full((1, 4, 4, 1), -np.inf, np.float32)
    x[0, 2:, 2:, 0] = rng.standard_normal((2, 2))
    tx = to_torch(x).requires_grad_(True)
    torch.nn.functional.max_pool2d(tx, 3, 2, 1).backward(torch.ones(1, 1, 2, 2))
    dx = jax.grad(lambda x: jnp.sum(F.max_pool(x, 3, 2, 1)))(jnp.asarray(x))
    np.testing.assert_array_equal(dx, from_torch(tx.grad))
    assert float(jnp.sum(dx)) == 4.0  # no gradient lost in the padding


def test_no_select_and_scatter_and_the_same_bits_every_call(rng):
    x = jnp.asarray(rng.integers(0, 2, (4, 8, 8, 5)), jnp.float32)
    f = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(F.max_pool(x, 3, 1, 1)))))
    hlo = f.lower(x).as_text()
    assert "select_and_scatter" not in hlo and "scatter" not in hlo
    np.testing.assert_array_equal(f(x), f(x))


def test_second_order_and_integer_inputs():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 6, 6, 2)), jnp.float32)
    hvp = jax.grad(lambda x: jnp.sum(jax.grad(lambda x: jnp.sum(F.max_pool(x, 2) ** 2))(x)))(x)
    assert hvp.shape == x.shape and bool(jnp.all(jnp.isfinite(hvp)))
    xi = jnp.arange(16, dtype=jnp.int32).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(F.max_pool(xi, 2)[0, ..., 0], [[5, 7], [13, 15]])  # integers: plain reduce_window
