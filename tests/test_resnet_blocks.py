"""ResNet's two block classes and its head_name: the structure is the class, the names are the attributes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from jaxcnn.models import get_model
from jaxcnn.models.resnet import BLOCKS, BasicBlock, BottleneckBlock, ResidualBlock, ResNet


def _params(module, shape, **kw):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda x: module.init(jax.random.key(0), x, **kw), x)["params"]


def _count(tree):
    return sum(a.size for a in jax.tree_util.tree_leaves(tree))


def test_basic_and_bottleneck_blocks_by_hand():
    # basic, 8 -> 16 channels with stride 2: two 3x3 convs, two BNs, a 1x1 downsample + BN
    basic = _params(BasicBlock(16, strides=2), (1, 8, 8, 8), train=False)
    assert set(basic) == {"conv1", "bn1", "conv2", "bn2", "downsample_conv", "downsample_bn"}
    assert _count(basic) == 3 * 3 * 8 * 16 + 3 * 3 * 16 * 16 + 8 * 16 + 3 * 2 * 16
    # bottleneck, 16 -> 4 * 4 = 16 channels, stride 1: no downsample (identity shortcut)
    neck = _params(BottleneckBlock(4), (1, 8, 8, 16), train=False)
    assert set(neck) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3"}
    assert _count(neck) == 16 * 4 + 3 * 3 * 4 * 4 + 4 * 16 + 2 * (4 + 4 + 16)
    assert BasicBlock.expansion == 1 and BottleneckBlock.expansion == 4
    assert {"basic": BasicBlock, "bottleneck": BottleneckBlock} == BLOCKS
    assert issubclass(BasicBlock, ResidualBlock) and issubclass(BottleneckBlock, ResidualBlock)


def test_a_block_starts_as_the_identity_with_zero_init_residual():
    x = jax.random.uniform(jax.random.key(1), (2, 4, 4, 8))
    block = BasicBlock(8, zero_init_residual=True)
    v = block.init(jax.random.key(0), x, train=False)
    assert jnp.allclose(block.apply(v, x, train=False), jax.nn.relu(x))


def test_head_name_names_the_classifier():
    class Renamed(ResNet):
        head_name = "classifier"

    model = Renamed(stage_sizes=(1,), width=4, stem="cifar", num_classes=3)
    params = _params(model, (1, 8, 8, 3))
    assert "classifier" in params and "head" not in params
    assert params["classifier"]["kernel"].shape == (4, 3)
    assert get_model("resnet_tiny").head_name in _params(get_model("resnet_tiny"), (1, 32, 32, 3))


def test_unknown_block_names_the_choices():
    with pytest.raises(ValueError, match="block"):
        _params(ResNet(stage_sizes=(1,), block="wide", width=4, stem="cifar"), (1, 8, 8, 3))
