"""Flax NNX front-end: the :mod:`jaxcnn.nn` layers as ``nnx.Module``\\ s over the same functional core.

``import jaxcnn.nnx as jnnx``. Every layer is one call of one function of
:mod:`jaxcnn.functional` with NNX conventions: built eagerly from
``in_features`` / ``num_features`` with ``rngs=nnx.Rngs(...)``, parameters
as :class:`flax.nnx.Param`, running statistics as :class:`flax.nnx.BatchStat` (power-iteration state
as :class:`SpectralStat`),
modes set by ``model.train()`` / ``model.eval()`` (or per call).

======================  ====================================  ==========================
layer                   wraps                                 Linen twin (jaxcnn.nn)
======================  ====================================  ==========================
Conv, ConvTranspose     F.conv, F.conv_transpose              Conv, ConvTranspose
MaxPool, AvgPool        F.max_pool, F.avg_pool                MaxPool, AvgPool
GlobalAvgPool/Max       F.global_avg_pool / max_pool          GlobalAvgPool/Max
AdaptiveAvgPool/Max     F.adaptive_avg_pool / max_pool        AdaptiveAvgPool/Max
MaxPoolWithIndices      F.max_pool_with_indices               MaxPoolWithIndices
MaxUnpool               F.max_unpool                          MaxUnpool
Flatten                 jnp.reshape                           Flatten
BatchNorm               F.batch_norm                          BatchNorm
GroupNorm, LayerNorm    F.group_norm, F.layer_norm            GroupNorm, LayerNorm
Dropout                 F.dropout ("dropout" stream)          Dropout
BlurPool, MaxBlurPool   F.blur_pool, F.max_blur_pool          BlurPool, MaxBlurPool
SpectralNormConv        F.conv_power_iteration + F.conv       SpectralNormConv
======================  ====================================  ==========================

``flax.linen.Dense`` -> ``flax.nnx.Linear``. The pairs live in one registry,
:data:`jaxcnn.nnx.twins.TWINS`. Also here:

* :func:`from_linen` / :func:`to_linen`: Linen variables <-> NNX state (same paths).
* :class:`Mirror` and :func:`get_model` (``jaxcnn.get_model(name, api="nnx")``):
  every zoo model as an NNX model of these layers.
* :func:`as_linen_like`: an NNX model with Linen's ``init``/``apply``, for
  :mod:`jaxcnn.train` and any code written for Linen modules.
"""

from jaxcnn.nnx.adapter import LinenLike, as_linen_like
from jaxcnn.nnx.blur import BlurPool, MaxBlurPool
from jaxcnn.nnx.context import layer_defaults
from jaxcnn.nnx.conv import Conv, ConvTranspose
from jaxcnn.nnx.convert import SpectralStat, from_linen, linen_key, to_linen
from jaxcnn.nnx.dropout import Dropout
from jaxcnn.nnx.mirror import Mirror
from jaxcnn.nnx.norm import BatchNorm, GroupNorm, LayerNorm
from jaxcnn.nnx.pool import (
    AdaptiveAvgPool,
    AdaptiveMaxPool,
    AvgPool,
    Flatten,
    GlobalAvgPool,
    GlobalMaxPool,
    MaxPool,
    MaxPoolWithIndices,
    MaxUnpool,
)
from jaxcnn.nnx.spectral import SpectralNormConv
from jaxcnn.nnx.zoo import INPUT_SHAPES, get_model

__all__ = [
    "INPUT_SHAPES",
    "AdaptiveAvgPool",
    "AdaptiveMaxPool",
    "AvgPool",
    "BatchNorm",
    "BlurPool",
    "Conv",
    "ConvTranspose",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "GroupNorm",
    "LayerNorm",
    "LinenLike",
    "MaxBlurPool",
    "MaxPool",
    "MaxPoolWithIndices",
    "MaxUnpool",
    "Mirror",
    "SpectralNormConv",
    "SpectralStat",
    "as_linen_like",
    "from_linen",
    "get_model",
    "layer_defaults",
    "linen_key",
    "to_linen",
]
