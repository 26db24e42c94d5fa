"""The model zoo: ``get_model(name, **kwargs)``, ``list_models()`` and transfer-learning helpers.

Every model is a Flax linen module called as
``model.apply(variables, x, train=False)`` on channels-last input (input
channels are read from ``x`` at ``init``, so no option is needed for them).
``train=True`` puts BatchNorm in training mode (pass ``mutable=["batch_stats"]``)
and Dropout in training mode (pass ``rngs={"dropout": key}``). Every layer is a
named submodule (``conv1``, ``bn1``, ``dense1``, ``head``, ...), so
``jaxcnn.analysis`` summaries and Flax's ``capture_intermediates=True`` show
the structure; ``Model.head_name`` names the classifier layer.

=============  ===================================================  ==================
name           model                                                default input
=============  ===================================================  ==================
lwls_cnn       LWLS Example 6.3 CNN (122,270 params)                (N, 28, 28, 1)
mlp            flatten + dense layers                               any
lenet5         LeNet-5 (61,706 params)                              (N, 28|32, 28|32, C)
alexnet        AlexNet, single tower (62,378,344 params)            (N, 224, 224, 3)
vgg11[_bn]     VGG-11 (132,863,336 / 132,868,840 params)            (N, 224, 224, 3)
vgg16[_bn]     VGG-16 (138,357,544 / 138,365,992 params)            (N, 224, 224, 3)
resnet18/34/50 ResNet (11,689,512 / 21,797,672 / 25,557,032)        (N, 224, 224, 3)
wavenet        dilated causal conv stacks, output per time step     (N, T[, C])
cnn1d          small 1D classifier (MNIST-1D)                       (N, 40[, C])
cnn3d          small 3D classifier                                  (N, D, H, W[, C])
*_tiny         small variants for tests                             small
=============  ===================================================  ==================

``check_input(model, variables, x)`` checks an input and a set of variables
against a model before anything is compiled (rank, batch axis, every
parameter's shape), with one jaxcnn error naming what differs.
"""

from jaxcnn.models.alexnet import AlexNet
from jaxcnn.models.inputs import check_input, check_sample, check_variables
from jaxcnn.models.lenet import LeNet5
from jaxcnn.models.lwls import LWLSCNN
from jaxcnn.models.mlp import MLP
from jaxcnn.models.registry import MODELS, get_model, list_models, model_class, options
from jaxcnn.models.resnet import ResidualBlock, ResNet
from jaxcnn.models.small import CNN1D, CNN3D
from jaxcnn.models.transfer import TransferReport, drop_head, freeze_labels, freeze_mask, replace_head, transfer_params
from jaxcnn.models.vgg import CONFIGS as VGG_CONFIGS
from jaxcnn.models.vgg import VGG
from jaxcnn.models.wavenet import WaveNet, WaveNetLayer

__all__ = [
    "CNN1D",
    "CNN3D",
    "LWLSCNN",
    "MLP",
    "MODELS",
    "VGG",
    "VGG_CONFIGS",
    "AlexNet",
    "LeNet5",
    "ResNet",
    "ResidualBlock",
    "TransferReport",
    "WaveNet",
    "WaveNetLayer",
    "check_input",
    "check_sample",
    "check_variables",
    "drop_head",
    "freeze_labels",
    "freeze_mask",
    "get_model",
    "list_models",
    "model_class",
    "options",
    "replace_head",
    "transfer_params",
]
