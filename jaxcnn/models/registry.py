"""The model registry: ``get_model(name, **kwargs)`` and ``list_models()``."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, cast

import flax.linen as nn

from jaxcnn.models.alexnet import AlexNet
from jaxcnn.models.lenet import LeNet5
from jaxcnn.models.lwls import LWLSCNN
from jaxcnn.models.mlp import MLP
from jaxcnn.models.mobilenet import MobileNetV2
from jaxcnn.models.option_rules import check_options
from jaxcnn.models.resnet import ResNet
from jaxcnn.models.small import CNN1D, CNN3D
from jaxcnn.models.vgg import CONFIGS, VGG
from jaxcnn.models.wavenet import WaveNet

#: name -> constructor (a model class, or a ``functools.partial`` of one fixing a variant).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "lwls_cnn": LWLSCNN,
    "lwls_cnn_blurpool": functools.partial(LWLSCNN, downsample="blur"),
    "mlp": MLP,
    "lenet5": LeNet5,
    "alexnet": AlexNet,
    "alexnet_tiny": functools.partial(AlexNet, width=1 / 16, hidden=4096 // 16, small_inputs=True, num_classes=10),
    "vgg11": functools.partial(VGG, config=CONFIGS["A"]),
    "vgg11_bn": functools.partial(VGG, config=CONFIGS["A"], batch_norm=True),
    "vgg16": functools.partial(VGG, config=CONFIGS["D"]),
    "vgg16_bn": functools.partial(VGG, config=CONFIGS["D"], batch_norm=True),
    "vgg_tiny": functools.partial(VGG, config=CONFIGS["tiny"], hidden=32, pool_size=1, batch_norm=True, num_classes=10),
    "resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block="basic"),
    "resnet18_blurpool": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block="basic", blur_filter=3),
    "resnet34": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="basic"),
    "resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck"),
    "resnet_tiny": functools.partial(ResNet, stage_sizes=(1, 1), block="basic", width=8, stem="cifar", num_classes=10),
    "mobilenet_v2": MobileNetV2,
    "mobilenet_v2_tiny": functools.partial(
        MobileNetV2,
        width_mult=0.25,
        setting=((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 1, 2)),
        last_channel=64,
        stem="cifar",
        num_classes=10,
    ),
    "wavenet": WaveNet,
    "wavenet_tiny": functools.partial(
        WaveNet, num_layers_per_stack=3, num_stacks=2, residual_channels=8, skip_channels=8
    ),
    "cnn1d": CNN1D,
    "cnn3d": CNN3D,
}


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(MODELS)


def model_class(name: str) -> type[nn.Module]:
    """The model class behind a registered name (unwrapping the variant's ``partial``)."""
    constructor = _lookup(name)
    return cast(type[nn.Module], constructor.func if isinstance(constructor, functools.partial) else constructor)


def options(name: str) -> dict[str, Any]:
    """The options ``get_model(name, ...)`` accepts, with the variant's defaults."""
    constructor = _lookup(name)
    cls = model_class(name)
    fixed = constructor.keywords if isinstance(constructor, functools.partial) else {}
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in ("parent", "name"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        out[f.name] = fixed.get(f.name, default)
    return out


def _lookup(name: Any) -> Callable[..., nn.Module]:
    if not isinstance(name, str):
        raise TypeError(f"name must be a model name (a string), got {name!r}")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(list_models())}")
    return MODELS[name]


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model: ``get_model("resnet18", num_classes=10, stem="cifar")``.

    Every model is a Flax module called as ``model.apply(variables, x, train=...)``
    with channels-last input; input channels are read from ``x`` at ``init``.
    ``kwargs`` override the variant's defaults (see :func:`options`).

    Raises:
      ValueError: ``name`` is not registered (the message lists the names).
      TypeError: a keyword is not an option of that model (named in the message,
        with the accepted ones).
      TypeError, ValueError: an option of the wrong kind or value (``num_classes=0``,
        ``widths=(0,)``), named with the model (see :mod:`jaxcnn.models.option_rules`).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxcnn.models import get_model
      >>> model = get_model("lwls_cnn")
      >>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> model.apply(variables, jnp.zeros((2, 28, 28, 1))).shape
      (2, 10)
    """
    constructor = _lookup(name)
    if "api" in kwargs:  # models sits below jaxcnn.nnx and cannot build NNX models itself
        raise TypeError(f"jaxcnn.models.get_model builds Linen models; use jaxcnn.get_model({name!r}, api=...)")
    accepted = set(options(name)) | {"name"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(
            f"get_model({name!r}) got unexpected option(s) {', '.join(unknown)}; "
            f"{name} accepts: {', '.join(sorted(accepted - {'name'}))}"
        )
    check_options(name, model_class(name), kwargs)
    return constructor(**kwargs)
