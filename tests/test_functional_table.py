"""One table of every functional op feeds the same checks (DESIGN.md, style rule 8).

For each op and dtype: it runs under ``jax.jit`` with the eager result,
``jax.eval_shape`` predicts the actual shape and dtype, the input dtype is kept,
the output is finite, and (for differentiable ops) ``jax.grad`` gives finite
gradients. The numbers themselves are checked against oracles in the per-op
test files.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn.functional as F

KEY = jax.random.key(1)


def _x(shape):
    return lambda dtype: jnp.asarray(np.random.default_rng(0).standard_normal(shape), dtype)


def _w(shape):
    return lambda dtype: jnp.asarray(np.random.default_rng(1).standard_normal(shape) * 0.1, dtype)


def _c(value, c):
    return lambda dtype: jnp.full((c,), value, dtype)


# name -> (function of the arrays, array makers, differentiable, expected output shape)
OPS = {
    "conv1d": (lambda x, w: F.conv(x, w, strides=2), [_x((2, 9, 3)), _w((3, 3, 4))], True, (2, 5, 4)),
    "conv2d_dilated": (
        lambda x, w: F.conv(x, w, dilation=2, padding="VALID"),
        [_x((2, 9, 9, 3)), _w((3, 3, 3, 4))],
        True,
        (2, 5, 5, 4),
    ),
    "conv3d_causal": (
        lambda x, w: F.conv(x, w, padding="CAUSAL"),
        [_x((1, 4, 5, 6, 2)), _w((2, 2, 2, 2, 3))],
        True,
        (1, 4, 5, 6, 3),
    ),
    "conv2d_depthwise": (lambda x, w: F.conv(x, w, groups=4), [_x((2, 6, 6, 4)), _w((3, 3, 1, 8))], True, (2, 6, 6, 8)),
    "conv2d_reflect": (
        lambda x, w: F.conv(x, w, padding_mode="reflect"),
        [_x((1, 6, 6, 2)), _w((3, 3, 2, 2))],
        True,
        (1, 6, 6, 2),
    ),
    "conv_transpose2d": (
        lambda y, w: F.conv_transpose(y, w, strides=2, padding=1, output_padding=1),
        [_x((2, 4, 4, 4)), _w((3, 3, 3, 4))],
        True,
        (2, 8, 8, 3),
    ),
    "max_pool2d": (lambda x: F.max_pool(x, 2), [_x((2, 6, 6, 3))], True, (2, 3, 3, 3)),
    "max_pool1d_ceil": (lambda x: F.max_pool(x, 2, ceil_mode=True), [_x((2, 7, 3))], True, (2, 4, 3)),
    "avg_pool3d": (lambda x: F.avg_pool(x, 2, strides=1, padding=1), [_x((1, 4, 4, 4, 2))], True, (1, 5, 5, 5, 2)),
    "max_pool_with_indices": (lambda x: F.max_pool_with_indices(x, 3, 2, 1)[0], [_x((2, 7, 7, 2))], True, (2, 4, 4, 2)),
    "blur_pool2d": (lambda x: F.blur_pool(x, 4, 2), [_x((2, 7, 6, 3))], True, (2, 4, 3, 3)),
    "max_blur_pool1d": (lambda x: F.max_blur_pool(x), [_x((2, 9, 3))], True, (2, 4, 3)),
    "global_avg_pool": (F.global_avg_pool, [_x((2, 5, 5, 3))], True, (2, 3)),
    "global_max_pool": (F.global_max_pool, [_x((2, 5, 3))], True, (2, 3)),
    "adaptive_avg_pool": (lambda x: F.adaptive_avg_pool(x, (3, 2)), [_x((2, 7, 5, 3))], True, (2, 3, 2, 3)),
    "adaptive_max_pool": (lambda x: F.adaptive_max_pool(x, 3), [_x((2, 7, 7, 7, 1))], True, (2, 3, 3, 3, 1)),
    "batch_norm_train": (
        lambda x, g, b: F.batch_norm(x, jnp.zeros(3), jnp.ones(3), g, b, training=True)[0],
        [_x((4, 5, 5, 3)), _c(1.0, 3), _c(0.0, 3)],
        True,
        (4, 5, 5, 3),
    ),
    "batch_norm_eval": (
        lambda x: F.batch_norm(x, jnp.zeros(3), jnp.ones(3), training=False)[0],
        [_x((4, 5, 3))],
        True,
        (4, 5, 3),
    ),
    "group_norm": (lambda x: F.group_norm(x, 2), [_x((2, 5, 5, 4))], True, (2, 5, 5, 4)),
    "layer_norm": (F.layer_norm, [_x((2, 5, 5, 4))], True, (2, 5, 5, 4)),
    "dropout_train": (lambda x: F.dropout(x, 0.3, key=KEY), [_x((4, 6, 6, 3))], True, (4, 6, 6, 3)),
    "dropout_spatial": (
        lambda x: F.dropout(x, 0.3, key=KEY, broadcast_axes=(1, 2)),
        [_x((4, 6, 6, 3))],
        True,
        (4, 6, 6, 3),
    ),
    "dropout_scaled_eval": (lambda x: F.dropout(x, 0.3, training=False, mode="scaled"), [_x((4, 3))], True, (4, 3)),
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_op_contract(name, dtype):
    fn, makers, differentiable, shape = OPS[name]
    args = [m(dtype) for m in makers]
    eager = fn(*args)
    jitted = jax.jit(fn)(*args)
    predicted = jax.eval_shape(fn, *args)
    assert eager.shape == jitted.shape == predicted.shape == shape
    assert eager.dtype == jitted.dtype == predicted.dtype == dtype
    assert np.all(np.isfinite(np.asarray(eager, np.float32)))
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(np.asarray(jitted, np.float32), np.asarray(eager, np.float32), rtol=tol, atol=tol)
    if differentiable and dtype == jnp.float32:
        grads = jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a))), argnums=tuple(range(len(args))))(*args)
        for g, a in zip(grads, args):
            assert g.shape == a.shape and np.all(np.isfinite(g))


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_vmaps_like_a_loop(name):
    fn, makers, _, _ = OPS[name]
    args = [m(jnp.float32) for m in makers]
    stacked = [jnp.stack([a, 2 * a]) for a in args]
    batched = jax.vmap(fn)(*stacked)
    np.testing.assert_allclose(batched[0], fn(*args), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batched[1], fn(*[2 * a for a in args]), rtol=1e-5, atol=1e-5)
