"""MobileNetV2: torchvision's parameter count and names, and the same function as a PyTorch twin."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

import jaxcnn
from benchmarks import peers
from benchmarks.peers_mobilenet import TorchMobileNetV2


def _init_shapes(model, shape):
    return jax.eval_shape(lambda k, x: model.init(k, x), jax.random.key(0), jnp.zeros(shape))


def test_torchvision_parameter_count_and_names():
    v = _init_shapes(jaxcnn.get_model("mobilenet_v2"), (1, 224, 224, 3))
    assert sum(a.size for a in jax.tree.leaves(v["params"])) == 3_504_872  # torchvision's mobilenet_v2
    net = TorchMobileNetV2(1000)
    assert sum(p.numel() for p in net.parameters()) == 3_504_872
    flat = {".".join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(v["params"])}
    rename = {"kernel": "weight", "scale": "weight"}
    ours = {name.rsplit(".", 1)[0] + "." + rename.get(name.rsplit(".", 1)[1], name.rsplit(".", 1)[1]) for name in flat}
    assert ours == {k for k, _ in net.named_parameters()}  # features.3.conv.1.0.weight, classifier.1.bias, ...
    assert v["params"]["features"]["2"]["conv"]["1"]["0"]["kernel"].shape == (3, 3, 1, 96)  # depthwise


def test_same_logits_and_gradients_as_the_pytorch_twin():
    """Random weights and statistics, training-mode BatchNorm, no dropout: same logits and input gradient."""
    model = jaxcnn.get_model("mobilenet_v2", num_classes=10, stem="cifar", width_mult=0.5, dropout_rate=0.0)
    abstract = _init_shapes(model, (1, 16, 16, 3))
    rng = np.random.default_rng(0)

    def draw(a):  # well-conditioned: kernels at fan-in scale, BN scale/bias near 0.5
        if a.ndim == 1:
            return (0.5 + 0.1 * rng.standard_normal(a.shape)).astype(np.float32)
        return (rng.standard_normal(a.shape) / np.sqrt(np.prod(a.shape[:-1]))).astype(np.float32)

    params = jax.tree.map(draw, abstract["params"])
    stats = jax.tree.map(lambda a: (1 + 0.1 * rng.random(a.shape)).astype(np.float32), abstract["batch_stats"])
    x = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)

    def loss(x):
        logits, _ = model.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(logits * jnp.arange(10.0)[None]), logits

    (_, logits), dx = jax.jit(jax.value_and_grad(loss, has_aux=True))(jnp.asarray(x))
    net = TorchMobileNetV2(10, stem="cifar", width_mult=0.5, dropout=0.0)
    peers.copy_jaxcnn_to_torch(params, stats, net)
    net.train()
    tx = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1))).requires_grad_(True)
    tl = net(tx)
    (tl * torch.arange(10.0)).sum().backward()
    scale = float(np.max(np.abs(tl.detach().numpy())))
    np.testing.assert_allclose(np.asarray(logits), tl.detach().numpy(), atol=1e-4 * scale)
    dref = np.moveaxis(tx.grad.numpy(), 1, -1)
    np.testing.assert_allclose(np.asarray(dx), dref, atol=1e-4 * float(np.max(np.abs(dref))))
