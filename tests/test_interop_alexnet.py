"""A real torchvision AlexNet (64, 192, 384, 256, 256 filters) loaded with ``channels=TORCHVISION_CHANNELS``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import interop_torch_models as tm

from jaxcnn.interop.torch import from_torch, layout, to_torch
from jaxcnn.interop.torch.structure import trace
from jaxcnn.models import get_model
from jaxcnn.models.alexnet import PAPER_CHANNELS, TORCHVISION_CHANNELS

TV = {"channels": TORCHVISION_CHANNELS}


@pytest.mark.slow
def test_torchvision_alexnet_outputs_match_at_224():
    """torchvision's AlexNet as it is (1000 classes, hidden 4096), randomly initialised, eval mode: within 1e-4."""
    torch.manual_seed(0)
    tmod = tm.AlexNet().eval()
    sd = tmod.state_dict()
    assert sum(p.numel() for p in tmod.parameters()) == 61_100_840  # torchvision's published count
    variables = from_torch("alexnet", sd, model_kwargs=TV)
    assert sum(a.size for a in jax.tree.leaves(variables)) == 61_100_840
    x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = tmod(torch.from_numpy(x)).numpy()
    out = get_model("alexnet", **TV).apply(variables, jnp.asarray(layout.channels_last(x)))
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4, rtol=1e-4)
    assert out.shape == (2, 1000) and np.abs(ref).max() > 1e-3  # not a trivially small output
    back = to_torch("alexnet", variables, model_kwargs=TV)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)  # exact round trip


def test_torchvision_widths_match_at_the_smallest_input():
    """torchvision's convs (hidden 64, 10 classes) at 63x63, the smallest input its layers allow (pool5 gives 1x1)."""
    torch.manual_seed(1)
    tmod = tm.AlexNet(num_classes=10, hidden=64).eval()
    kw = {**TV, "num_classes": 10, "hidden": 64}
    variables = from_torch("alexnet", tmod.state_dict(), model_kwargs=kw)
    x = np.random.default_rng(1).normal(size=(2, 3, 63, 63)).astype(np.float32)
    with torch.no_grad():
        ref = tmod(torch.from_numpy(x)).numpy()
    out = get_model("alexnet", **kw).apply(variables, jnp.asarray(layout.channels_last(x)))
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4, rtol=1e-4)
    assert np.abs(ref).max() > 1e-3


def test_channels_change_only_the_conv_widths():
    """Per layer, the torchvision model's shapes; the paper's default keeps the paper's widths."""
    tv = trace(get_model("alexnet", **TV), (1, 224, 224, 3)).shapes["params"]
    assert [tv[f"conv{i}"]["kernel"].shape for i in range(1, 6)] == [
        (11, 11, 3, 64),
        (5, 5, 64, 192),
        (3, 3, 192, 384),
        (3, 3, 384, 256),
        (3, 3, 256, 256),
    ]
    assert tv["dense1"]["kernel"].shape == (9216, 4096)
    paper = trace(get_model("alexnet"), (1, 224, 224, 3)).shapes["params"]
    assert tuple(paper[f"conv{i}"]["kernel"].shape[-1] for i in range(1, 6)) == PAPER_CHANNELS
    half = trace(get_model("alexnet", width=0.5, **TV), (1, 224, 224, 3)).shapes["params"]
    assert tuple(half[f"conv{i}"]["kernel"].shape[-1] for i in range(1, 6)) == (32, 96, 192, 128, 128)


@pytest.mark.parametrize(
    "channels,error,match",
    [
        ((64, 192, 384, 256), ValueError, r"channels must have 5 entries.*\(64, 192, 384, 256\) with 4"),
        ((64, 192, 0, 256, 256), ValueError, r"channels must be positive.*\(64, 192, 0, 256, 256\)"),
        ((64, 192, -3, 256, 256), ValueError, r"channels must be positive"),
        (64, TypeError, r"channels must be a sequence of 5 ints.*64"),
        ("64,192", TypeError, r"channels must be a sequence of 5 ints"),
        ((64, 192, 384.5, 256, 256), TypeError, r"channels\[2\]"),
    ],
)
def test_bad_channels_are_a_clear_error(channels, error, match):
    model = get_model("alexnet", channels=channels)
    with pytest.raises(error, match=match):
        model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
