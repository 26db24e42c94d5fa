"""MobileNetV2 in PyTorch eager, torchvision's layout and module names, for the training benchmark.

torchvision is not a dependency, so ``torchvision.models.mobilenet_v2`` is
rebuilt here module for module (``features.N`` = ``Conv2dNormActivation`` /
``InvertedResidual`` with ``conv`` = a ``Sequential``; ``classifier`` =
dropout + linear): 3,504,872 parameters for 1000 classes, the same names as
``jaxcnn.get_model("mobilenet_v2")``, so :func:`benchmarks.peers.copy_jaxcnn_to_torch`
loads jaxcnn's variables into it (``tests/test_mobilenet.py``).
``stem="cifar"`` takes stride 1 in the stem and in stage 2, as jaxcnn's.
"""

from __future__ import annotations

import torch
import torch.nn as tnn

from jaxcnn.models.mobilenet import SETTING, make_divisible


def _conv_bn_act(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> tnn.Sequential:
    return tnn.Sequential(
        tnn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        tnn.BatchNorm2d(c_out),
        tnn.ReLU6(inplace=True),
    )


class TorchInvertedResidual(tnn.Module):
    """torchvision's ``InvertedResidual``: expand 1x1, depthwise 3x3, project 1x1 + BN, identity when shapes allow."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = round(c_in * expand)
        layers = [_conv_bn_act(c_in, hidden, 1)] if expand != 1 else []
        layers += [
            _conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
            tnn.Conv2d(hidden, c_out, 1, bias=False),
            tnn.BatchNorm2d(c_out),
        ]
        self.conv = tnn.Sequential(*layers)
        self.use_res_connect = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class TorchMobileNetV2(tnn.Module):
    """``torchvision.models.mobilenet_v2(num_classes=...)`` rebuilt; ``stem="cifar"`` for 32x32 inputs."""

    def __init__(self, num_classes: int = 1000, stem: str = "imagenet", width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        first = 2 if stem == "imagenet" else 1
        c = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        layers: list[tnn.Module] = [_conv_bn_act(3, c, 3, first)]
        for stage, (t, ch, n, s) in enumerate(SETTING):
            if stage == 1:
                s = min(s, first)
            out = make_divisible(ch * width_mult)
            for j in range(n):
                layers.append(TorchInvertedResidual(c, out, s if j == 0 else 1, t))
                c = out
        layers.append(_conv_bn_act(c, last, 1))
        self.features = tnn.Sequential(*layers)
        self.classifier = tnn.Sequential(tnn.Dropout(dropout), tnn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = tnn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))
