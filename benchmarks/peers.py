"""The peers jaxcnn is measured against: the same networks in PyTorch (eager) and in plain Flax + optax.

Each peer is written the way its own users write it, not weakened:

* PyTorch: NCHW tensors, ``torch.nn`` layers (``ReLU(inplace=True)`` in the
  ResNet, as torchvision), the loop ``optimizer.zero_grad(); loss.backward();
  optimizer.step()`` with ``F.cross_entropy``, float32, ``torch.optim`` defaults.
  ResNet-18 (CIFAR stem) is torchvision's BasicBlock layout rebuilt here
  (torchvision is not a dependency).
* Flax: ``flax.linen.Conv/BatchNorm/Dense``, NHWC, ``flax.training.train_state``,
  and the train step of the Flax examples: ``jax.value_and_grad`` of the mean
  cross-entropy, ``apply_gradients``, loss and accuracy as metrics, one
  ``@jax.jit`` with the state donated.

The module names of both peers equal jaxcnn's (``conv1``, ``layer2_block1``,
``downsample_conv``, ``head``, ...), so jaxcnn's parameters can be copied into
them and the first training steps compared (``tests/test_benchmarks.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn as tnn
import torch.nn.functional as TF
from flax.training import train_state

# ---------------------------------------------------------------- PyTorch


class TorchLWLSCNN(tnn.Module):
    """LWLS Example 6.3 in PyTorch for ``(N, C, 28, 28)`` input: 3 convs + 2 dense, 122,270 parameters.

    ``exact_padding=False`` (the benchmark) pads conv2 (k5, stride 2) with 2 on
    every side, as a PyTorch user writes it: same output shape and cost as
    jaxcnn's "SAME" (1 before, 2 after), but shifted by one pixel.
    ``exact_padding=True`` pads (1, 2) explicitly, so that the network computes
    exactly jaxcnn's function (for the equality tests).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, exact_padding: bool = False):
        super().__init__()
        self.exact_padding = exact_padding
        self.conv1 = tnn.Conv2d(in_channels, 4, 5, padding=2)
        self.conv2 = tnn.Conv2d(4, 8, 5, stride=2, padding=0 if exact_padding else 2)
        self.conv3 = tnn.Conv2d(8, 12, 4, stride=2, padding=1)
        self.dense1 = tnn.Linear(12 * 7 * 7, 200)
        self.dense2 = tnn.Linear(200, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = TF.relu(self.conv1(x))
        if self.exact_padding:
            x = TF.pad(x, (1, 2, 1, 2))
        x = TF.relu(self.conv2(x))
        x = TF.relu(self.conv3(x))
        x = torch.flatten(x, 1)
        x = TF.relu(self.dense1(x))
        return self.dense2(x)


class TorchBasicBlock(tnn.Module):
    """torchvision's ``BasicBlock``: conv3x3(stride)-BN-ReLU-conv3x3-BN, + shortcut, ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = tnn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(channels)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(channels)
        self.has_downsample = stride != 1 or in_channels != channels
        if self.has_downsample:
            self.downsample_conv = tnn.Conv2d(in_channels, channels, 1, stride=stride, bias=False)
            self.downsample_bn = tnn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.downsample_bn(self.downsample_conv(x)) if self.has_downsample else x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TorchResNet18(tnn.Module):
    """ResNet-18 with the CIFAR stem (conv 3x3 stride 1, no max-pool), torchvision's block layout.

    The same layers, in the same order, as ``jaxcnn.get_model("resnet18",
    stem="cifar")``: 11,173,962 parameters for 10 classes.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64):
        super().__init__()
        self.conv1 = tnn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.relu = tnn.ReLU(inplace=True)
        blocks, c = [], width
        for i in range(4):
            for j in range(2):
                out = width * 2**i
                block = TorchBasicBlock(c, out, stride=2 if i > 0 and j == 0 else 1)
                self.add_module(f"layer{i + 1}_block{j + 1}", block)
                blocks.append(block)
                c = out
        self.blocks = blocks  # a plain list: the modules are registered by their names above
        self.avgpool = tnn.AdaptiveAvgPool2d(1)
        self.head = tnn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(torch.flatten(self.avgpool(x), 1))


def torch_model(name: str, num_classes: int = 10, **kwargs: Any) -> tnn.Module:
    """``"lwls_cnn"``, ``"resnet18_cifar"`` or ``"mobilenet_v2_cifar"`` as a PyTorch module (NCHW, float32)."""
    if name == "lwls_cnn":
        return TorchLWLSCNN(num_classes, **kwargs)
    if name == "resnet18_cifar":
        return TorchResNet18(num_classes, **kwargs)
    if name == "mobilenet_v2_cifar":
        from benchmarks.peers_mobilenet import TorchMobileNetV2

        return TorchMobileNetV2(num_classes, stem="cifar", **kwargs)
    raise ValueError(f"model must be 'lwls_cnn', 'resnet18_cifar' or 'mobilenet_v2_cifar', got {name!r}")


def torch_optimizer(name: str, params: Any, lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    """``"adam"`` -> ``torch.optim.Adam(lr)``; ``"momentum"`` -> ``torch.optim.SGD(lr, momentum)`` (defaults otherwise)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    raise ValueError(f"optimizer must be 'adam' or 'momentum', got {name!r}")


def torch_train_step(
    model: tnn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    autocast_dtype: torch.dtype | None = None,
) -> Callable[[], torch.Tensor]:
    """The eager training loop body every PyTorch tutorial writes; returns the loss tensor.

    ``autocast_dtype`` (e.g. ``torch.bfloat16``): the forward pass and loss under ``torch.autocast`` on
    ``x``'s device, the backward pass outside it, as PyTorch's AMP recipe says (bfloat16 needs no GradScaler).
    """
    model.train()
    device_type = x.device.type

    def step() -> torch.Tensor:
        optimizer.zero_grad()
        if autocast_dtype is None:
            loss = TF.cross_entropy(model(x), y)
        else:
            with torch.autocast(device_type=device_type, dtype=autocast_dtype):
                loss = TF.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def _np(a: Any) -> np.ndarray:
    """A writable float32 NumPy copy (``torch.from_numpy`` warns about read-only arrays)."""
    return np.array(jax.device_get(a), np.float32, copy=True)


def copy_jaxcnn_to_torch(
    params: Any, batch_stats: Any, model: tnn.Module, hwc_inputs: dict[str, tuple[int, int, int]] | None = None
) -> None:
    """Load jaxcnn (Flax) variables into a PyTorch module whose submodules carry the same names.

    Conv kernels ``(*window, I, O)`` -> ``(O, I, *window)``; Dense ``(in, out)``
    -> Linear ``(out, in)``; BatchNorm scale/bias/mean/var -> weight/bias/
    running_mean/running_var. ``hwc_inputs`` names the Linear layers fed by a
    flattened ``(H, W, C)`` map (jaxcnn flattens NHWC, PyTorch NCHW): their input
    rows are permuted from HWC to CHW order.
    """
    hwc_inputs = hwc_inputs or {}
    stats = batch_stats or {}

    def lookup(tree: Any, path: list[str]) -> Any:
        for p in path:
            tree = tree[p]
        return tree

    with torch.no_grad():
        for name, mod in model.named_modules():
            path = name.split(".")
            if isinstance(mod, (tnn.Conv1d, tnn.Conv2d, tnn.Conv3d)):
                p = lookup(params, path)
                k = _np(p["kernel"])
                nd = k.ndim - 2
                mod.weight.copy_(torch.from_numpy(np.transpose(k, (nd + 1, nd, *range(nd))).copy()))
                if mod.bias is not None:
                    mod.bias.copy_(torch.from_numpy(_np(p["bias"])))
            elif isinstance(mod, tnn.Linear):
                p = lookup(params, path)
                k = _np(p["kernel"])
                if name in hwc_inputs:
                    h, w, c = hwc_inputs[name]
                    k = k.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
                mod.weight.copy_(torch.from_numpy(k.T.copy()))
                mod.bias.copy_(torch.from_numpy(_np(p["bias"])))
            elif isinstance(mod, (tnn.BatchNorm1d, tnn.BatchNorm2d, tnn.BatchNorm3d)):
                p, s = lookup(params, path), lookup(stats, path)
                mod.weight.copy_(torch.from_numpy(_np(p["scale"])))
                mod.bias.copy_(torch.from_numpy(_np(p["bias"])))
                mod.running_mean.copy_(torch.from_numpy(_np(s["mean"])))
                mod.running_var.copy_(torch.from_numpy(_np(s["var"])))


#: The Linear layers of each peer model fed by a flattened feature map, and the map's (H, W, C).
HWC_INPUTS = {"lwls_cnn": {"dense1": (7, 7, 12)}, "resnet18_cifar": {}}


# ---------------------------------------------------------------- plain Flax + optax


class FlaxLWLSCNN(nn.Module):
    """LWLS Example 6.3 with ``flax.linen`` layers only (NHWC, "SAME" padding as the book)."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.relu(nn.Conv(4, (5, 5), padding="SAME", name="conv1")(x))
        x = nn.relu(nn.Conv(8, (5, 5), strides=2, padding="SAME", name="conv2")(x))
        x = nn.relu(nn.Conv(12, (4, 4), strides=2, padding="SAME", name="conv3")(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(200, name="dense1")(x))
        return nn.Dense(self.num_classes, name="dense2")(x)


class FlaxBasicBlock(nn.Module):
    """The ResNet BasicBlock of the Flax ImageNet example, padding 1 as torchvision."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = functools.partial(
            nn.Conv, use_bias=False, kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal")
        )
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5)
        y = nn.relu(norm(name="bn1")(conv(self.features, (3, 3), self.strides, padding=1, name="conv1")(x)))
        y = norm(name="bn2")(conv(self.features, (3, 3), padding=1, name="conv2")(y))
        if self.strides != 1 or x.shape[-1] != self.features:
            x = norm(name="downsample_bn")(
                conv(self.features, (1, 1), self.strides, padding="VALID", name="downsample_conv")(x)
            )
        return nn.relu(y + x)


class FlaxResNet18(nn.Module):
    """ResNet-18, CIFAR stem (3x3 stride 1, no max-pool), ``flax.linen`` layers only."""

    num_classes: int = 10
    width: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Conv(
            self.width,
            (3, 3),
            padding=1,
            use_bias=False,
            name="conv1",
            kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
        )(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn1")(x))
        for i in range(4):
            for j in range(2):
                x = FlaxBasicBlock(self.width * 2**i, 2 if i > 0 and j == 0 else 1, name=f"layer{i + 1}_block{j + 1}")(
                    x, train
                )
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


def flax_model(name: str, num_classes: int = 10) -> nn.Module:
    if name == "lwls_cnn":
        return FlaxLWLSCNN(num_classes)
    if name == "resnet18_cifar":
        return FlaxResNet18(num_classes)
    raise ValueError(f"model must be 'lwls_cnn' or 'resnet18_cifar', got {name!r}")


def flax_optimizer(name: str, lr: float, momentum: float = 0.9) -> optax.GradientTransformation:
    if name == "adam":
        return optax.adam(lr)
    if name == "momentum":
        return optax.sgd(lr, momentum)
    raise ValueError(f"optimizer must be 'adam' or 'momentum', got {name!r}")


class FlaxTrainState(train_state.TrainState):
    """``TrainState`` plus the ``batch_stats`` collection, as in the Flax ImageNet example."""

    batch_stats: Any


def flax_create_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    input_shape: tuple[int, ...],
    *,
    seed: int = 0,
    params: Any = None,
    batch_stats: Any = None,
) -> FlaxTrainState:
    """Initialize (jit-compiled ``model.init``) or wrap given variables into a :class:`FlaxTrainState`."""
    if params is None:
        variables = jax.jit(functools.partial(model.init, train=False))(
            jax.random.key(seed, impl="rbg"), jnp.zeros((1, *input_shape), jnp.float32)
        )
        params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return FlaxTrainState.create(apply_fn=model.apply, params=params, tx=tx, batch_stats=batch_stats or {})


def flax_train_step(state: FlaxTrainState, batch: dict[str, jax.Array]) -> tuple[FlaxTrainState, dict[str, jax.Array]]:
    """One step of the Flax examples: mean cross-entropy, ``value_and_grad``, ``apply_gradients``."""
    with_stats = bool(state.batch_stats)

    def loss_fn(params):
        variables = {"params": params, **({"batch_stats": state.batch_stats} if with_stats else {})}
        if with_stats:
            logits, updates = state.apply_fn(variables, batch["x"], train=True, mutable=["batch_stats"])
        else:
            logits, updates = state.apply_fn(variables, batch["x"], train=True), {}
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return loss, (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    if with_stats:
        state = state.replace(batch_stats=updates["batch_stats"])
    metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}
    return state, metrics


#: The compiled Flax step: ``state, metrics = flax_train_step_jit(state, batch)``; the state is donated.
flax_train_step_jit = jax.jit(flax_train_step, donate_argnums=0)
