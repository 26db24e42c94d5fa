"""Tests of ``jaxcnn.models``: the zoo, the registry and the transfer-learning helpers.

Oracles: published parameter counts (LWLS Example 6.3's per-layer numbers,
torchvision's ResNet/VGG counts) and counts worked out by hand; PyTorch models
of the same layout built here (on the "meta" device: shapes only, no memory)
and, for ResNet blocks, run with copied weights; gradients for WaveNet's
causality and receptive field against the formula; Optax for freezing.
Parameter counts use ``jax.eval_shape`` on ``init``: no real compute.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from oracles import to_torch

from jaxcnn.models import (
    drop_head,
    freeze_labels,
    freeze_mask,
    get_model,
    list_models,
    replace_head,
    transfer_params,
)

torch.set_num_threads(1)
# "rbg" keys: compiling Flax's truncated-normal initializers over threefry keys costs
# ~10 s per small ResNet on this CPU, over rbg keys ~1 s; the values do not matter here.
KEY = jax.random.key(0, impl="rbg")


def count(tree) -> int:
    return sum(math.prod(a.shape) for a in jax.tree.leaves(tree))


def abstract_init(model, shape, **kw):
    return jax.eval_shape(lambda: model.init(KEY, jnp.zeros(shape), **kw))


def torch_count(build) -> int:
    with torch.device("meta"):
        net = build()
    return sum(p.numel() for p in net.parameters())


# -------------------------------------------------------------- LWLS 6.3 ---


def test_lwls_cnn_per_layer_parameters_and_hidden_shapes():
    model = get_model("lwls_cnn")
    x = jnp.zeros((2, 28, 28, 1))
    params = abstract_init(model, x.shape)["params"]
    per_layer = {name: count(p) for name, p in params.items()}
    assert per_layer == {"conv1": 104, "conv2": 808, "conv3": 1548, "dense1": 117800, "dense2": 2010}
    assert count(params) == 122270
    # by hand: (k*k*C_in + 1) * C_out for the convs, (n_in + 1) * n_out for the dense layers
    assert (5 * 5 * 1 + 1) * 4 == 104 and (5 * 5 * 4 + 1) * 8 == 808 and (4 * 4 * 8 + 1) * 12 == 1548
    assert (7 * 7 * 12 + 1) * 200 == 117800 and (200 + 1) * 10 == 2010
    _, state = jax.eval_shape(
        lambda v: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]),
        abstract_init(model, x.shape),
    )
    hidden = {k: v["__call__"][0].shape[1:] for k, v in state["intermediates"].items() if k != "__call__"}
    assert hidden["conv1"] == (28, 28, 4)
    assert hidden["conv2"] == (14, 14, 8)
    assert hidden["conv3"] == (7, 7, 12)
    assert hidden["dense1"] == (200,)
    assert hidden["dense2"] == (10,)


# ----------------------------------------------------- published counts ---

PUBLISHED = [
    # (name, input, params): torchvision's published counts, LeNet-5/AlexNet by hand (see below)
    ("resnet18", (1, 224, 224, 3), 11_689_512),
    ("resnet34", (1, 224, 224, 3), 21_797_672),
    ("resnet50", (1, 224, 224, 3), 25_557_032),
    ("vgg11", (1, 224, 224, 3), 132_863_336),
    ("vgg11_bn", (1, 224, 224, 3), 132_868_840),
    ("vgg16", (1, 224, 224, 3), 138_357_544),
    ("vgg16_bn", (1, 224, 224, 3), 138_365_992),
    # conv 11x11x3x96, 5x5x96x256, 3x3x256x384, 3x3x384x384, 3x3x384x256 (+ biases),
    # dense 9216x4096, 4096x4096, 4096x1000 (+ biases)
    (
        "alexnet",
        (1, 224, 224, 3),
        (11 * 11 * 3 + 1) * 96
        + (25 * 96 + 1) * 256
        + (9 * 256 + 1) * 384
        + (9 * 384 + 1) * 384
        + (9 * 384 + 1) * 256
        + (9216 + 1) * 4096
        + (4096 + 1) * 4096
        + (4096 + 1) * 1000,
    ),
    # conv 5x5x1x6, 5x5x6x16, dense 400x120, 120x84, 84x10 (+ biases)
    ("lenet5", (1, 28, 28, 1), 156 + 2416 + 48120 + 10164 + 850),
    ("lenet5", (1, 32, 32, 1), 61_706),
]


@pytest.mark.parametrize("name, shape, expected", PUBLISHED, ids=[f"{p[0]}-{p[1][1]}" for p in PUBLISHED])
def test_parameter_counts_equal_published_numbers(name, shape, expected):
    assert count(abstract_init(get_model(name), shape)["params"]) == expected


def test_alexnet_count_is_62_million():
    assert PUBLISHED[7][2] == 62_378_344


def _torch_vgg(cfg, batch_norm):
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(torch.nn.MaxPool2d(2))
            continue
        layers += (
            [torch.nn.Conv2d(c, v, 3, padding=1)]
            + ([torch.nn.BatchNorm2d(v)] if batch_norm else [])
            + [torch.nn.ReLU()]
        )
        c = v
    return torch.nn.Sequential(
        *layers,
        torch.nn.AdaptiveAvgPool2d(7),
        torch.nn.Flatten(),
        torch.nn.Linear(512 * 49, 4096),
        torch.nn.ReLU(),
        torch.nn.Dropout(),
        torch.nn.Linear(4096, 4096),
        torch.nn.ReLU(),
        torch.nn.Dropout(),
        torch.nn.Linear(4096, 1000),
    )


VGG_A = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
VGG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


@pytest.mark.parametrize(
    "name, cfg, bn",
    [("vgg11", VGG_A, False), ("vgg11_bn", VGG_A, True), ("vgg16", VGG_D, False), ("vgg16_bn", VGG_D, True)],
)
def test_vgg_count_equals_same_layout_pytorch(name, cfg, bn):
    assert count(abstract_init(get_model(name), (1, 224, 224, 3))["params"]) == torch_count(lambda: _torch_vgg(cfg, bn))


def _torch_alexnet(w=1.0, hidden=4096, classes=1000):
    c = lambda n: max(1, round(n * w))  # noqa: E731
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, c(96), 11, 4, 2),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(3, 2),
        torch.nn.Conv2d(c(96), c(256), 5, padding=2),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(3, 2),
        torch.nn.Conv2d(c(256), c(384), 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(c(384), c(384), 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(c(384), c(256), 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(3, 2),
        torch.nn.AdaptiveAvgPool2d(6),
        torch.nn.Flatten(),
        torch.nn.Dropout(),
        torch.nn.Linear(c(256) * 36, c(hidden)),
        torch.nn.ReLU(),
        torch.nn.Dropout(),
        torch.nn.Linear(c(hidden), c(hidden)),
        torch.nn.ReLU(),
        torch.nn.Linear(c(hidden), classes),
    )


@pytest.mark.parametrize("width", [1.0, 0.5])
def test_alexnet_count_equals_same_layout_pytorch(width):
    ours = count(abstract_init(get_model("alexnet", width=width), (1, 224, 224, 3))["params"])
    assert ours == torch_count(lambda: _torch_alexnet(width))


def test_alexnet_first_layer_is_96_filters_11x11x3_stride_4():
    model = get_model("alexnet")
    v = abstract_init(model, (1, 224, 224, 3))
    assert v["params"]["conv1"]["kernel"].shape == (11, 11, 3, 96)
    _, state = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros((1, 224, 224, 3)), capture_intermediates=True, mutable=["intermediates"]), v
    )
    assert state["intermediates"]["conv1"]["__call__"][0].shape == (1, 55, 55, 96)  # (224 + 4 - 11) // 4 + 1


# ------------------------------------------------------------- ResNet ---


class TorchBlock(torch.nn.Module):
    """torchvision's BasicBlock / Bottleneck (v1.5), written out here."""

    def __init__(self, c_in, f, stride, bottleneck):
        super().__init__()
        self.bottleneck = bottleneck
        out = 4 * f if bottleneck else f
        if bottleneck:
            self.conv1, self.bn1 = torch.nn.Conv2d(c_in, f, 1, bias=False), torch.nn.BatchNorm2d(f)
            self.conv2, self.bn2 = torch.nn.Conv2d(f, f, 3, stride, 1, bias=False), torch.nn.BatchNorm2d(f)
            self.conv3, self.bn3 = torch.nn.Conv2d(f, out, 1, bias=False), torch.nn.BatchNorm2d(out)
        else:
            self.conv1, self.bn1 = torch.nn.Conv2d(c_in, f, 3, stride, 1, bias=False), torch.nn.BatchNorm2d(f)
            self.conv2, self.bn2 = torch.nn.Conv2d(f, f, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(f)
        self.down = None
        if stride != 1 or c_in != out:
            self.down = torch.nn.Sequential(
                torch.nn.Conv2d(c_in, out, 1, stride, bias=False), torch.nn.BatchNorm2d(out)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.bottleneck:
            y = self.bn3(self.conv3(torch.relu(y)))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class TorchResNet(torch.nn.Module):
    def __init__(self, stages, bottleneck, width=64, classes=1000, cifar=False):
        super().__init__()
        self.conv1 = (
            torch.nn.Conv2d(3, width, 3, 1, 1, bias=False) if cifar else torch.nn.Conv2d(3, width, 7, 2, 3, bias=False)
        )
        self.bn1 = torch.nn.BatchNorm2d(width)
        self.pool = torch.nn.Identity() if cifar else torch.nn.MaxPool2d(3, 2, 1)
        blocks, c = [], width
        for i, n in enumerate(stages):
            for j in range(n):
                blocks.append(TorchBlock(c, width * 2**i, 2 if i > 0 and j == 0 else 1, bottleneck))
                c = width * 2**i * (4 if bottleneck else 1)
        self.blocks = torch.nn.Sequential(*blocks)
        self.fc = torch.nn.Linear(c, classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(self.blocks(x).mean(dim=(2, 3)))


def test_resnet18_and_50_counts_equal_same_layout_pytorch():
    assert torch_count(lambda: TorchResNet((2, 2, 2, 2), False)) == 11_689_512
    assert torch_count(lambda: TorchResNet((3, 4, 6, 3), True)) == 25_557_032


def _copy_resnet(tnet, template):
    """Our variables from the PyTorch ResNet's weights (running stats included)."""
    params, stats = {}, {}
    conv = lambda m: {"kernel": np.transpose(m.weight.detach().numpy(), (2, 3, 1, 0))}  # noqa: E731

    def bn(m, name, p, s):
        p[name] = {"scale": m.weight.detach().numpy(), "bias": m.bias.detach().numpy()}
        s[name] = {"mean": m.running_mean.numpy(), "var": m.running_var.numpy()}

    params["conv1"] = conv(tnet.conv1)
    bn(tnet.bn1, "bn1", params, stats)
    names = [k for k in template["params"] if k.startswith("layer")]
    for name, block in zip(names, tnet.blocks):
        p, s = {}, {}
        for i in (1, 2, 3):
            if hasattr(block, f"conv{i}"):
                p[f"conv{i}"] = conv(getattr(block, f"conv{i}"))
                bn(getattr(block, f"bn{i}"), f"bn{i}", p, s)
        if block.down is not None:
            p["downsample_conv"] = conv(block.down[0])
            bn(block.down[1], "downsample_bn", p, s)
        params[name], stats[name] = p, s
    params["head"] = {"kernel": tnet.fc.weight.detach().numpy().T, "bias": tnet.fc.bias.detach().numpy()}
    return {"params": params, "batch_stats": stats}


@pytest.mark.parametrize("bottleneck", [False, True], ids=["basic", "bottleneck"])
def test_resnet_with_pytorch_weights_matches_pytorch(bottleneck, rng):
    """Block wiring (padding, stride placement, downsample, stem) against a PyTorch twin, eval mode."""
    torch.manual_seed(0)
    tnet = TorchResNet((1, 1), bottleneck, width=4, classes=3)
    with torch.no_grad():
        for m in tnet.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(), m.running_mean.normal_(), m.running_var.uniform_(0.5, 2)
    tnet.eval()
    model = get_model("resnet50" if bottleneck else "resnet18", stage_sizes=(1, 1), width=4, num_classes=3)
    x = rng.standard_normal((2, 20, 20, 3)).astype(np.float32)
    template = abstract_init(model, x.shape)
    variables = _copy_resnet(tnet, template)
    assert jax.tree.map(lambda a: a.shape, template) == jax.tree.map(np.shape, variables)
    got = model.apply(variables, x)
    np.testing.assert_allclose(np.asarray(got), tnet(to_torch(x)).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_resnet_stems_and_stage_shapes():
    def stage_shapes(model, shape):
        v = abstract_init(model, shape)
        _, st = jax.eval_shape(
            lambda v: model.apply(v, jnp.zeros(shape), capture_intermediates=True, mutable=["intermediates"]), v
        )
        return {k: st["intermediates"][k]["__call__"][0].shape[1:] for k in st["intermediates"] if k.endswith("block1")}

    assert stage_shapes(get_model("resnet18"), (1, 224, 224, 3)) == {
        "layer1_block1": (56, 56, 64),
        "layer2_block1": (28, 28, 128),
        "layer3_block1": (14, 14, 256),
        "layer4_block1": (7, 7, 512),
    }
    assert stage_shapes(get_model("resnet50", stem="cifar", num_classes=10), (1, 32, 32, 3)) == {
        "layer1_block1": (32, 32, 256),
        "layer2_block1": (16, 16, 512),
        "layer3_block1": (8, 8, 1024),
        "layer4_block1": (4, 4, 2048),
    }


def test_zero_init_residual_makes_blocks_start_as_identity(rng):
    model = get_model("resnet_tiny", zero_init_residual=True)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 3)), jnp.float32)
    v = jax.jit(model.init)(KEY, x)
    assert not np.any(np.asarray(v["params"]["layer1_block1"]["bn2"]["scale"]))
    assert np.all(np.asarray(v["params"]["layer1_block1"]["bn1"]["scale"]) == 1)
    _, st = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]))(v, x)
    inter = st["intermediates"]
    stem_out = jax.nn.relu(inter["bn1"]["__call__"][0])
    # identity shortcut + zero residual branch: relu(0 + x) = x for the post-ReLU input
    np.testing.assert_array_equal(np.asarray(inter["layer1_block1"]["__call__"][0]), np.asarray(stem_out))


# --------------------------------------------- every registered model ---

# name -> (kwargs, small input shape, output shape)
SMALL = {
    "lwls_cnn": ({}, (2, 28, 28, 1), (2, 10)),
    "mlp": ({"widths": (16, 8), "dropout_rate": 0.5, "batch_norm": True}, (2, 6, 6, 1), (2, 10)),
    "lenet5": ({}, (2, 28, 28, 1), (2, 10)),
    "alexnet": ({"num_classes": 7}, (2, 64, 64, 3), (2, 7)),
    "alexnet_tiny": ({"batch_norm": True}, (2, 32, 32, 3), (2, 10)),
    "vgg11": ({"num_classes": 5}, (2, 32, 32, 3), (2, 5)),
    "vgg11_bn": ({"num_classes": 5}, (2, 32, 32, 3), (2, 5)),
    "vgg16": ({"num_classes": 5}, (2, 32, 32, 3), (2, 5)),
    "vgg16_bn": ({"num_classes": 5}, (2, 32, 32, 3), (2, 5)),
    "vgg_tiny": ({"dropout_rate": 0.3}, (2, 12, 12, 3), (2, 10)),
    "resnet18": ({"num_classes": 10, "stem": "cifar"}, (2, 32, 32, 3), (2, 10)),
    "resnet18_blurpool": ({"num_classes": 10}, (2, 64, 64, 3), (2, 10)),
    "lwls_cnn_blurpool": ({}, (2, 28, 28, 1), (2, 10)),
    "resnet34": ({"num_classes": 10}, (2, 64, 64, 3), (2, 10)),
    "resnet50": ({"num_classes": 10}, (2, 64, 64, 1), (2, 10)),
    "resnet_tiny": ({}, (2, 8, 8, 3), (2, 10)),
    "mobilenet_v2": ({"num_classes": 10, "stem": "cifar"}, (2, 32, 32, 3), (2, 10)),
    "mobilenet_v2_tiny": ({}, (2, 16, 16, 3), (2, 10)),
    "wavenet": ({}, (2, 50, 1), (2, 50, 1)),
    "wavenet_tiny": ({"mode": "classification", "num_classes": 16}, (2, 20, 16), (2, 20, 16)),
    "cnn1d": ({"batch_norm": True, "dropout_rate": 0.2}, (2, 40), (2, 10)),
    "cnn3d": ({"num_classes": 4}, (2, 8, 8, 8, 2), (2, 4)),
}
# models small enough to compile and run here; the others are traced (jit + eval_shape)
RUN = {
    "lwls_cnn",
    "lwls_cnn_blurpool",
    "mlp",
    "lenet5",
    "alexnet_tiny",
    "vgg_tiny",
    "resnet_tiny",
    "wavenet_tiny",
    "cnn1d",
    "cnn3d",
    "mobilenet_v2_tiny",
}


def test_table_covers_every_registered_model():
    assert sorted(SMALL) == list_models()
    assert set(SMALL) >= RUN


def _steps(model):
    def train(v, x, key):
        return model.apply(v, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])

    def evaluate(v, x):
        return model.apply(v, x, train=False)

    return jax.jit(train), jax.jit(evaluate)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_model_under_jit_train_and_eval(name, rng):
    kwargs, shape, out_shape = SMALL[name]
    model = get_model(name, **kwargs)
    train, evaluate = _steps(model)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    if name not in RUN:
        v = abstract_init(model, shape)
        y, upd = jax.eval_shape(train, v, x, KEY)
        assert y.shape == out_shape and y.dtype == jnp.float32
        assert jax.tree.map(lambda a: a.shape, upd.get("batch_stats", {})) == jax.tree.map(
            lambda a: a.shape, v.get("batch_stats", {})
        )
        assert jax.eval_shape(evaluate, v, x).shape == out_shape
        return
    v = model.init(KEY, x)
    y_eval = evaluate(v, x)
    assert y_eval.shape == out_shape and y_eval.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(y_eval)))
    np.testing.assert_array_equal(np.asarray(evaluate(v, x)), np.asarray(y_eval))  # deterministic
    y1, upd = train(v, x, jax.random.key(1, impl="rbg"))
    assert y1.shape == out_shape and np.all(np.isfinite(np.asarray(y1)))
    if "batch_stats" in v:  # training moved the running statistics
        changed = jax.tree.map(
            lambda a, b: not np.array_equal(np.asarray(a), np.asarray(b)), v["batch_stats"], upd["batch_stats"]
        )
        assert all(jax.tree.leaves(changed))
    else:
        assert upd == {}
    if (
        getattr(model, "dropout_rate", 0) > 0
    ):  # different dropout keys, different outputs; the same key, the same output
        y2, _ = train(v, x, jax.random.key(2, impl="rbg"))
        y1b, _ = train(v, x, jax.random.key(1, impl="rbg"))
        assert not np.array_equal(np.asarray(y1), np.asarray(y2))
        np.testing.assert_array_equal(np.asarray(y1), np.asarray(y1b))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(SMALL) - RUN))
def test_full_size_models_really_run(name, rng):
    """The models traced above, initialized and run for real (large: VGG holds 130M+ parameters)."""
    kwargs, shape, out_shape = SMALL[name]
    model = get_model(name, **kwargs)
    train, evaluate = _steps(model)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    v = jax.jit(model.init)(KEY, x)
    y, upd = train(v, x, jax.random.key(1, impl="rbg"))
    assert y.shape == out_shape and np.all(np.isfinite(np.asarray(y)))
    y_eval = evaluate(v, x)
    assert y_eval.shape == out_shape and np.all(np.isfinite(np.asarray(y_eval)))


@pytest.mark.parametrize(
    "name, kwargs, shape",
    [
        ("mlp", {"widths": (16,), "batch_norm": True, "dropout_rate": 0.5}, (16, 4, 4, 1)),
        ("cnn1d", {"features": (4, 4), "strides": (1, 2), "batch_norm": True, "dropout_rate": 0.5}, (16, 12)),
        ("resnet_tiny", {"width": 4}, (16, 6, 6, 3)),
    ],
)
def test_data_parallel_axis_name_equals_single_device_on_the_global_batch(name, kwargs, shape, rng):
    """Under pmap on 8 devices with ``axis_name``, a training forward pass (BatchNorm statistics,
    their update, dropout masks) equals the single-device pass on the whole batch."""
    n_dev = jax.device_count()
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    single = get_model(name, **kwargs)
    parallel = get_model(name, axis_name="batch", **kwargs)
    v = jax.jit(single.init)(KEY, x)
    key = jax.random.key(5, impl="rbg")

    def fwd(model, xb):
        return model.apply(v, xb, train=True, rngs={"dropout": key}, mutable=["batch_stats"])

    y1, s1 = jax.jit(lambda x: fwd(single, x))(x)
    yp, sp = jax.pmap(lambda xb: fwd(parallel, xb), axis_name="batch")(x.reshape(n_dev, -1, *shape[1:]))
    np.testing.assert_allclose(np.asarray(yp).reshape(y1.shape), np.asarray(y1), rtol=1e-4, atol=1e-5)
    for a, b in zip(jax.tree.leaves(sp), jax.tree.leaves(s1)):
        for d in range(n_dev):
            np.testing.assert_allclose(np.asarray(a[d]), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_layers_are_named_submodules():
    params = abstract_init(get_model("vgg_tiny"), (1, 8, 8, 3))["params"]
    assert sorted(params) == ["bn1_1", "bn2_1", "conv1_1", "conv2_1", "dense1", "dense2", "head"]
    params = abstract_init(get_model("wavenet_tiny"), (1, 8, 1))["params"]
    assert {"input_conv", "stack1_layer1", "stack2_layer3", "head_conv", "head"} <= set(params)
    assert sorted(params["stack1_layer2"]) == ["filter_conv", "gate_conv", "residual_conv", "skip_conv"]
    for name in list_models():
        model = get_model(name)
        kw, shape, _ = SMALL[name]
        assert model.head_name in abstract_init(get_model(name, **kw), shape)["params"], name


def test_bf16_model_keeps_f32_params_and_statistics():
    model = get_model("resnet_tiny", dtype=jnp.bfloat16)
    v = abstract_init(model, (2, 8, 8, 3))
    assert {a.dtype for a in jax.tree.leaves(v)} == {jnp.dtype(jnp.float32)}
    y, upd = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 8, 8, 3)), train=True, mutable=["batch_stats"]), v)
    assert y.dtype == jnp.bfloat16
    assert {a.dtype for a in jax.tree.leaves(upd)} == {jnp.dtype(jnp.float32)}


# ------------------------------------------------------------- WaveNet ---


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, 1 * (1 + 2 + 4) * 2 + 1),  # wavenet_tiny: k=2, L=3, S=2
        ({"kernel_size": 3, "num_stacks": 1}, 2 * (1 + 2 + 4) + 1),
    ],
)
def test_wavenet_is_causal_with_the_formula_receptive_field(kwargs, expected):
    model = get_model("wavenet_tiny", **kwargs)
    assert model.receptive_field == expected
    T = 40
    x = jax.random.normal(jax.random.key(3, impl="rbg"), (1, T, 1))
    v = model.init(KEY, x)

    @jax.jit
    def grads(x, t):
        return jax.grad(lambda x: model.apply(v, x)[0, t, 0])(x)[0, :, 0]

    for t in (T - 1, 25, 5):
        g = np.asarray(grads(x, t))
        nonzero = np.flatnonzero(g != 0)
        assert nonzero.max() == t, "output at t must depend on x[t] and nothing after it"
        assert np.all(g[t + 1 :] == 0)
        assert nonzero.min() == max(t - expected + 1, 0)
        assert len(nonzero) == min(expected, t + 1)  # every step inside the field contributes


def test_wavenet_dilations_and_default_receptive_field():
    model = get_model("wavenet")
    assert model.dilations == tuple(2**i for i in range(10))
    assert model.receptive_field == 1024
    assert get_model("wavenet", num_stacks=3, num_layers_per_stack=4).dilations == (1, 2, 4, 8) * 3


# ------------------------------------------------------------ registry ---


def test_registry_errors_and_listing():
    names = list_models()
    assert names == sorted(names) and {"lwls_cnn", "resnet18", "wavenet", "vgg16_bn"} <= set(names)
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*resnet18"):
        get_model("resnet19")
    with pytest.raises(TypeError, match="num_clases"):
        get_model("resnet18", num_clases=10)
    with pytest.raises(TypeError, match="colour, num_clases"):
        get_model("lwls_cnn", num_clases=10, colour=True)
    for name in names:  # the data-parallel option is uniform across the zoo
        assert "axis_name" in get_model(name).__dataclass_fields__, name
    model = get_model("resnet18", num_classes=10, stem="cifar")
    assert (model.num_classes, model.stem, model.stage_sizes) == (10, "cifar", (2, 2, 2, 2))
    with pytest.raises(ValueError, match="stem"):
        abstract_init(get_model("resnet18", stem="tiny"), (1, 32, 32, 3))


# ------------------------------------------------------------ transfer ---


def test_freezing_the_feature_extractor_with_multi_transform(rng):
    model = get_model("lwls_cnn")
    x = jnp.asarray(rng.standard_normal((4, 28, 28, 1)), jnp.float32)
    labels_y = jnp.arange(4) % 10
    params = jax.jit(model.init)(KEY, x)["params"]
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), labels_y).mean()  # noqa: E731
    # labels for multi_transform: frozen params get set_to_zero (and no Adam state)
    tx = optax.multi_transform(
        {"train": optax.adam(1e-2), "freeze": optax.set_to_zero()}, freeze_labels(params, trainable="dense2")
    )
    # the same with the bool mask (True = trains) as labels, and with optax.masked
    mask = freeze_mask(params, frozen=["conv1", "conv2", "conv3", "dense1"])
    tx2 = optax.multi_transform({True: optax.adam(1e-2), False: optax.set_to_zero()}, mask)
    tx3 = optax.chain(optax.adam(1e-2), optax.masked(optax.set_to_zero(), jax.tree.map(lambda t: not t, mask)))

    @jax.jit
    def steps(params):
        grads = jax.grad(loss)(params)
        new = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
        new2 = optax.apply_updates(params, tx2.update(grads, tx2.init(params), params)[0])
        new3 = optax.apply_updates(params, tx3.update(grads, tx3.init(params), params)[0])
        return grads, new, new2, new3

    grads, new, new2, new3 = steps(params)
    for name in ("conv1", "conv2", "conv3", "dense1"):
        for k in ("kernel", "bias"):
            assert np.array_equal(np.asarray(new[name][k]), np.asarray(params[name][k])), name
            assert np.any(np.asarray(grads[name][k]) != 0)  # it would have moved
    moved = np.asarray(new["dense2"]["kernel"]) != np.asarray(params["dense2"]["kernel"])
    np.testing.assert_array_equal(
        moved, np.asarray(grads["dense2"]["kernel"]) != 0
    )  # Adam moves every entry with a gradient
    assert moved.any() and np.all(np.asarray(new["dense2"]["bias"]) != np.asarray(params["dense2"]["bias"]))
    for other in (new2, new3):
        assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), new, other))


def test_freeze_mask_patterns():
    params = {"conv1": {"kernel": 0.0, "bias": 0.0}, "conv10": {"kernel": 0.0}, "head": {"kernel": 0.0}}
    # True = trains
    assert freeze_mask(params, trainable="head") == {
        "conv1": {"kernel": False, "bias": False},
        "conv10": {"kernel": False},
        "head": {"kernel": True},
    }
    # a prefix matches whole path components: "conv1" is not "conv10"
    assert freeze_mask(params, frozen="conv1") == {
        "conv1": {"kernel": False, "bias": False},
        "conv10": {"kernel": True},
        "head": {"kernel": True},
    }
    assert freeze_mask(params, frozen=re.compile(r"^conv\d+/kernel$")) == {
        "conv1": {"kernel": False, "bias": True},
        "conv10": {"kernel": False},
        "head": {"kernel": True},
    }
    assert freeze_mask(params, frozen="conv1/bias")["conv1"] == {"kernel": True, "bias": False}
    assert freeze_labels(params, trainable=["head", "conv10"]) == {
        "conv1": {"kernel": "freeze", "bias": "freeze"},
        "conv10": {"kernel": "train"},
        "head": {"kernel": "train"},
    }
    with pytest.raises(ValueError, match="'hed' matches no parameter; top-level names: conv1, conv10, head"):
        freeze_mask(params, trainable="hed")
    with pytest.raises(TypeError, match="exactly one"):
        freeze_mask(params, trainable="head", frozen="conv1")
    with pytest.raises(TypeError, match="exactly one"):
        freeze_mask(params)


def test_transfer_params_head_swap_and_report():
    x = jnp.zeros((1, 8, 8, 3))
    pretrained = get_model("resnet_tiny", num_classes=10).init(jax.random.key(1, impl="rbg"), x)["params"]
    fresh = get_model("resnet_tiny", num_classes=5).init(jax.random.key(2, impl="rbg"), x)["params"]
    params, report = transfer_params(pretrained, fresh)
    assert report.skipped == {"head/kernel": "shape (16, 10) != (16, 5)", "head/bias": "shape (10,) != (5,)"}
    assert report.unused == []
    assert len(report.kept) == len(jax.tree.leaves(fresh)) - 2
    np.testing.assert_array_equal(
        np.asarray(params["layer2_block1"]["conv1"]["kernel"]),
        np.asarray(pretrained["layer2_block1"]["conv1"]["kernel"]),
    )
    np.testing.assert_array_equal(np.asarray(params["head"]["kernel"]), np.asarray(fresh["head"]["kernel"]))
    assert jax.tree.structure(params) == jax.tree.structure(fresh)
    # exclude by prefix and by regex
    _, rep = transfer_params(pretrained, fresh, exclude=["layer2_block1", re.compile("bn1/scale$")])
    assert rep.skipped["layer2_block1/conv1/kernel"] == "excluded" and rep.skipped["bn1/scale"] == "excluded"
    assert rep.skipped["layer1_block1/bn1/scale"] == "excluded"
    assert "layer1_block1/bn1/bias" in rep.kept
    # a body without a head: unused / not in pretrained are reported
    body = drop_head(pretrained, "head")
    assert "head" not in body and "head" in pretrained
    _, rep = transfer_params(body, fresh)
    assert rep.skipped == {"head/kernel": "not in pretrained", "head/bias": "not in pretrained"}
    _, rep = transfer_params(pretrained, body)
    assert rep.unused == ["head/bias", "head/kernel"] and rep.skipped == {}
    # replace_head gives a tree a new model accepts
    swapped = replace_head(pretrained, "head", fresh["head"])
    assert swapped["head"]["kernel"].shape == (16, 5) and pretrained["head"]["kernel"].shape == (16, 10)
    y = get_model("resnet_tiny", num_classes=5).apply(
        {"params": swapped, "batch_stats": get_model("resnet_tiny").init(KEY, x)["batch_stats"]}, x
    )
    assert y.shape == (1, 5)
    with pytest.raises(ValueError, match="'fc' is not in the parameters"):
        drop_head(pretrained, "fc")


def test_transfer_exclude_typo_is_an_error():
    with pytest.raises(ValueError, match="matches no parameter"):
        transfer_params({"a": {"w": 1.0}}, {"a": {"w": 2.0}}, exclude="b")
