"""NNX models in the analysis tools and the PyTorch interop: the same answers as their Linen twins."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from flax import nnx

import jaxcnn
import jaxcnn.analysis as A
import jaxcnn.nnx as jnnx


def test_summary_and_receptive_field_of_an_nnx_zoo_model_equal_the_linen_ones():
    linen, twin = jaxcnn.get_model("lwls_cnn"), jaxcnn.get_model("lwls_cnn", api="nnx", rngs=0)
    a, b = A.summary(linen, (28, 28, 1)), A.summary(twin, (28, 28, 1))
    assert b.total_params == a.total_params == 122270
    assert b.to_text() == a.to_text()
    assert A.receptive_field(twin, (28, 28, 1)).size == A.receptive_field(linen, (28, 28, 1)).size


def test_effective_receptive_field_of_a_plain_nnx_model_is_the_self_convolution():
    """Two 3x3 convolutions of ones: the gradient map is the 3x3 box convolved with itself (scipy)."""
    convs = [jnnx.Conv(1, 1, (3, 3), use_bias=False, rngs=nnx.Rngs(i)) for i in range(2)]
    for c in convs:
        c.kernel[...] = jnp.ones_like(c.kernel[...])
    model = nnx.Sequential(*convs)
    field = A.effective_receptive_field(model, None, (9, 9, 1), n_samples=2)
    want = scipy.signal.convolve2d(np.ones((3, 3)), np.ones((3, 3)))
    np.testing.assert_allclose(field.map[2:7, 2:7], want / want.sum(), rtol=1e-5)
    assert float(np.abs(field.map).sum() - field.map[2:7, 2:7].sum()) < 1e-6


def test_interop_converts_an_nnx_zoo_model_through_its_linen_model():
    pytest.importorskip("torch")
    from jaxcnn.interop.torch import from_torch, to_torch

    twin = jaxcnn.get_model("lenet5", api="nnx", rngs=0)
    variables = jnnx.to_linen(twin)
    back = from_torch(twin, to_torch(twin, variables))
    jax.tree.map(np.testing.assert_array_equal, back["params"], variables["params"])
    loaded = jnnx.from_linen(twin, back)
    x = jnp.ones((2, 28, 28, 1))
    np.testing.assert_array_equal(loaded(x, train=False), twin(x, train=False))
