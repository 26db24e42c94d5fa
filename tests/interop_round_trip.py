"""Exact round-trip checks shared by the zoo interop tests (torchvision state_dict <-> jaxcnn variables).

Import it after ``pytest.importorskip("torch")``, as ``interop_torch_models``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxcnn.interop.torch import from_torch, to_torch
from jaxcnn.interop.torch.structure import trace
from jaxcnn.models import get_model


def assert_trees_equal(a, b):
    """The same tree structure and every leaf equal to the bit."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert jax.tree.all(jax.tree.map(lambda u, v: bool(np.array_equal(u, v)), a, b))


def assert_state_dict_equal(back, sd, num_batches_tracked):
    """``back`` has exactly ``sd``'s keys and tensors, except each ``num_batches_tracked``: that int64 count."""
    assert set(back) == set(sd)
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            assert int(back[k]) == num_batches_tracked and back[k].dtype == torch.int64, k
        else:
            assert torch.equal(back[k], v), k


def assert_jaxcnn_torch_jaxcnn_exact(name, kw, tmod, input_shape):
    """Random jaxcnn variables (every leaf distinct) -> ``to_torch`` -> ``from_torch``: the same to the bit.

    ``input_shape``: ``(1, *spatial, C)`` the zoo model ``name`` (options ``kw``)
    is traced with. ``tmod`` (the PyTorch twin) must load the state_dict strictly.
    Returns ``(variables, state_dict)``.
    """
    shapes = trace(get_model(name, **kw), input_shape).shapes
    rng = np.random.default_rng(3)
    init = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)
    sd = to_torch(name, init, model_kwargs=kw)
    assert_trees_equal(dict(init), from_torch(name, sd, model_kwargs=kw))
    tmod.load_state_dict(sd)  # PyTorch accepts it as is (strict)
    return init, sd
