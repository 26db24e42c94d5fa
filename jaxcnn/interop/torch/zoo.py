"""torchvision's key names for the zoo models whose layout mirrors torchvision's.

==========  ==============================================  ==========================================
jaxcnn      module paths                                    PyTorch prefixes (torchvision names)
==========  ==============================================  ==========================================
ResNet      ``conv1``, ``bn1``, ``layer{i}_block{j}/conv1``  ``conv1``, ``bn1``, ``layer{i}.{j-1}.conv1``
            ``.../downsample_conv``, ``.../downsample_bn``  ``layer{i}.{j-1}.downsample.0``, ``.1``
            ``head``                                        ``fc``
VGG         ``conv{s}_{i}``, ``bn{s}_{i}``                  ``features.{k}`` (k counts conv, BN, ReLU
                                                            and pool modules, as torchvision's list)
            ``dense1``, ``dense2``, ``head``                ``classifier.0``, ``.3``, ``.6``
AlexNet     ``conv1`` ... ``conv5``                         ``features.0``, ``.3``, ``.6``, ``.8``, ``.10``
            ``dense1``, ``dense2``, ``head``                ``classifier.1``, ``.4``, ``.6``
LeNet5      ``conv1``, ``conv2``, ``dense1``, ``dense2``,   ``conv1``, ``conv2``, ``fc1``, ``fc2``,
            ``head``                                        ``fc3`` (the PyTorch tutorial's names)
MobileNetV2 ``features/{k}/...``, ``classifier/1``          ``features.{k}...``, ``classifier.1`` (the
                                                            module names are torchvision's already)
==========  ==============================================  ==========================================

jaxcnn's AlexNet has the paper's widths by default (96, 256, 384, 384, 256
filters); torchvision's has 64, 192, 384, 256, 256: build it with
``channels=TORCHVISION_CHANNELS`` (``model_kwargs={"channels": (64, 192, 384,
256, 256)}``) to load torchvision's checkpoints; with the paper's widths the
keys correspond, the shapes do not, and strict mode reports the mismatched
convs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn

from jaxcnn.models.alexnet import TORCHVISION_CHANNELS, AlexNet
from jaxcnn.models.lenet import LeNet5
from jaxcnn.models.mobilenet import MobileNetV2
from jaxcnn.models.resnet import ResNet
from jaxcnn.models.vgg import VGG


class ZooSpec(NamedTuple):
    """How one zoo model's variables meet torchvision's state_dict.

    Attributes:
      mapping: jaxcnn module path -> PyTorch key prefix (``None``: none).
      first_conv: the PyTorch key of the first conv's weight (its input channels fix the input shape).
      image_size: a spatial size the model accepts (for tracing its variable shapes).
      hint: a line added to a strict-mode error with shape mismatches (``""``: none).
    """

    mapping: Callable[[str], str | None]
    first_conv: str
    image_size: int
    hint: str = ""


def _resnet(model: ResNet) -> ZooSpec:
    inner = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}

    def mapping(path: str) -> str | None:
        if path == "head":
            return "fc"
        parts = path.split("/")
        if len(parts) == 2 and parts[0].startswith("layer") and "_block" in parts[0]:
            stage, block = parts[0][len("layer") :].split("_block")
            return f"layer{stage}.{int(block) - 1}.{inner.get(parts[1], parts[1])}"
        return path

    return ZooSpec(mapping, "conv1.weight", 32 if model.stem == "cifar" else 224)


def _vgg(model: VGG) -> ZooSpec:
    table = {"dense1": "classifier.0", "dense2": "classifier.3", "head": "classifier.6"}
    k, stage, i = 0, 1, 1
    for item in model.config:
        if item == "M":
            k, stage, i = k + 1, stage + 1, 1
            continue
        table[f"conv{stage}_{i}"] = f"features.{k}"
        if model.batch_norm:
            table[f"bn{stage}_{i}"] = f"features.{k + 1}"
        k, i = k + (3 if model.batch_norm else 2), i + 1
    return ZooSpec(table.get, "features.0.weight", 224)


def _alexnet(model: AlexNet) -> ZooSpec:
    if model.batch_norm:
        raise ValueError(
            "AlexNet(batch_norm=True) has no torchvision counterpart (torchvision's AlexNet has no "
            "BatchNorm); give a mapping for your own PyTorch model instead"
        )
    table = {f"conv{i + 1}": f"features.{k}" for i, k in enumerate((0, 3, 6, 8, 10))}
    table.update(dense1="classifier.1", dense2="classifier.4", head="classifier.6")
    hint = (
        f"torchvision's AlexNet has {TORCHVISION_CHANNELS} filters, this model {tuple(model.channels)}: for a "
        f"torchvision checkpoint pass model_kwargs={{'channels': {TORCHVISION_CHANNELS}}} "
        f"(jaxcnn.models.alexnet.TORCHVISION_CHANNELS)"
        if tuple(model.channels) != TORCHVISION_CHANNELS
        else ""
    )
    return ZooSpec(table.get, "features.0.weight", 32 if model.small_inputs else 224, hint)


def _lenet(model: LeNet5) -> ZooSpec:
    table = {"conv1": "conv1", "conv2": "conv2", "dense1": "fc1", "dense2": "fc2", "head": "fc3"}
    return ZooSpec(table.get, "conv1.weight", 32)


def _mobilenet_v2(model: MobileNetV2) -> ZooSpec:
    return ZooSpec(lambda path: path.replace("/", "."), "features.0.0.weight", 32 if model.stem == "cifar" else 224)


_SPECS: dict[type, Callable[[Any], ZooSpec]] = {
    ResNet: _resnet,
    VGG: _vgg,
    AlexNet: _alexnet,
    LeNet5: _lenet,
    MobileNetV2: _mobilenet_v2,
}


def zoo_spec(model: nn.Module) -> ZooSpec | None:
    """The torchvision correspondence of a zoo model instance, or ``None`` if it has none."""
    make = _SPECS.get(type(model))
    return None if make is None else make(model)
