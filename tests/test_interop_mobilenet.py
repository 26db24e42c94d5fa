"""mobilenet_v2 from and to torchvision's state_dict: every key, equal outputs, exact round trips."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import interop_round_trip as rt
import interop_torch_models as tm

from jaxcnn.interop.torch import from_torch, layout, to_torch
from jaxcnn.interop.torch.convert import _path_mapping, plan
from jaxcnn.interop.torch.structure import trace
from jaxcnn.models import get_model

TOL = 1e-4


def _torchvision(seed=0, **kw):
    torch.manual_seed(seed)
    return tm.MobileNetV2(**kw).eval()


def test_mapping_names_every_torchvision_key_with_its_shape():
    """torchvision's 314 keys (262 without num_batches_tracked), each with its shape, and nothing else."""
    sd = tm.MobileNetV2().state_dict()
    model = get_model("mobilenet_v2")
    structure = trace(model, (1, 224, 224, 3))
    leaves = plan(structure, _path_mapping(model, None))
    keys = {leaf.torch_key for leaf in leaves}
    assert keys == {k for k in sd if not k.endswith("num_batches_tracked")}
    assert len(keys) == 262 and len(sd) == 314
    assert {"features.0.0.weight", "features.0.1.running_mean", "features.1.conv.0.0.weight"} <= keys
    assert {"features.2.conv.3.running_var", "features.18.0.weight", "classifier.1.weight"} <= keys
    for leaf in leaves:
        node = structure.shapes
        for k in [leaf.collection, *leaf.path.split("/"), leaf.name]:
            node = node[k]
        assert leaf.rule.torch_shape(tuple(node.shape)) == tuple(sd[leaf.torch_key].shape), leaf.torch_key
    n_params = sum(v.size for v in jax.tree.leaves(structure.shapes["params"]))
    assert n_params == sum(p.numel() for p in tm.MobileNetV2().parameters()) == 3_504_872


@pytest.mark.slow
def test_eval_outputs_match_torchvision():
    """A randomly initialised torchvision MobileNetV2 (random BN statistics), converted: logits within 1e-4."""
    tmod = _torchvision()
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    variables = from_torch("mobilenet_v2", tmod.state_dict())
    with torch.no_grad():
        ref = tmod(torch.from_numpy(x)).numpy()
    out = get_model("mobilenet_v2").apply(variables, jnp.asarray(layout.channels_last(x)))
    np.testing.assert_allclose(np.asarray(out), ref, atol=TOL, rtol=TOL)
    assert out.shape == (2, 1000) and np.abs(ref).max() > 1e-2  # not a trivially small output


@pytest.mark.slow
def test_width_mult_and_num_classes_carry_over():
    tmod = _torchvision(seed=1, num_classes=10, width_mult=0.5)
    x = np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32)
    kw = {"num_classes": 10, "width_mult": 0.5}
    variables = from_torch("mobilenet_v2", tmod.state_dict(), model_kwargs=kw)
    with torch.no_grad():
        ref = tmod(torch.from_numpy(x)).numpy()
    out = get_model("mobilenet_v2", **kw).apply(variables, jnp.asarray(layout.channels_last(x)))
    np.testing.assert_allclose(np.asarray(out), ref, atol=TOL, rtol=TOL)


def test_round_trips_are_exact():
    tmod = _torchvision(seed=2, num_classes=10)
    sd = tmod.state_dict()
    kw = {"num_classes": 10}
    variables = from_torch("mobilenet_v2", sd, model_kwargs=kw)
    rt.assert_state_dict_equal(to_torch("mobilenet_v2", variables, model_kwargs=kw, num_batches_tracked=7), sd, 7)
    init, _ = rt.assert_jaxcnn_torch_jaxcnn_exact("mobilenet_v2", kw, tmod, (1, 224, 224, 3))
    np.testing.assert_array_equal(
        tmod.features[2].conv[1][0].weight.detach().numpy(),  # a depthwise kernel, (96, 1, 3, 3)
        np.transpose(np.asarray(init["params"]["features"]["2"]["conv"]["1"]["0"]["kernel"]), (3, 2, 0, 1)),
    )
