"""Flax linen modules, one thin class per function of :mod:`jaxcnn.functional`.

``import jaxcnn.nn as jnn``. Every module holds its parameters (and, for
BatchNorm, running statistics in the ``"batch_stats"`` collection) and calls one
pure function; no math is written twice. Layout is channels-last,
``(N, *spatial, C)``; input channels are read from the input at ``init``.

===================  ==========================================  =========================
module               wraps                                       output shape
===================  ==========================================  =========================
Conv                 F.conv                                      (N, *out, features)
ConvTranspose        F.conv_transpose                            (N, *out, features)
MaxPool, AvgPool     F.max_pool, F.avg_pool                      (N, *out, C)
GlobalAvgPool/Max    F.global_avg_pool, F.global_max_pool        (N, C)
AdaptiveAvgPool/Max  F.adaptive_avg_pool, F.adaptive_max_pool    (N, *output_size, C)
MaxPoolWithIndices   F.max_pool_with_indices                     (values, indices)
MaxUnpool            F.max_unpool                                (N, *output_size, C)
Flatten              jnp.reshape                                 (N, prod(rest))
BatchNorm            F.batch_norm                                x's shape
GroupNorm            F.group_norm                                x's shape
LayerNorm            F.layer_norm                                x's shape
Dropout              F.dropout (key from the "dropout" stream)   x's shape
BlurPool             F.blur_pool                                 (N, *ceil(n / s), C)
MaxBlurPool          F.max_blur_pool                             (N, *out, C)
SpectralNormConv     F.conv, kernel / F.conv_power_iteration     (N, *out, features)
===================  ==========================================  =========================

``Dense`` is ``flax.linen.Dense`` with its input checked against its kernel
(a clear error naming the layer instead of Flax's ``ScopeParamShapeError``);
``Sequential`` is ``flax.linen``'s and the activations are ``jax.nn``'s,
re-exported here for convenience.
"""

from flax.linen import Sequential, initializers
from jax.nn import (
    celu,
    elu,
    gelu,
    glu,
    hard_tanh,
    leaky_relu,
    log_softmax,
    relu,
    relu6,
    selu,
    sigmoid,
    silu,
    softmax,
    softplus,
    swish,
)
from jax.numpy import tanh

from jaxcnn.nn.blur import BlurPool, MaxBlurPool
from jaxcnn.nn.conv import Conv, ConvTranspose
from jaxcnn.nn.dense import Dense
from jaxcnn.nn.dropout import Dropout
from jaxcnn.nn.norm import BatchNorm, GroupNorm, LayerNorm
from jaxcnn.nn.pool import (
    AdaptiveAvgPool,
    AdaptiveMaxPool,
    AvgPool,
    Flatten,
    GlobalAvgPool,
    GlobalMaxPool,
    MaxPool,
)
from jaxcnn.nn.spectral import SpectralNormConv
from jaxcnn.nn.unpool import MaxPoolWithIndices, MaxUnpool

__all__ = [
    "AdaptiveAvgPool",
    "AdaptiveMaxPool",
    "AvgPool",
    "BatchNorm",
    "BlurPool",
    "Conv",
    "ConvTranspose",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "GroupNorm",
    "LayerNorm",
    "MaxBlurPool",
    "MaxPool",
    "MaxPoolWithIndices",
    "MaxUnpool",
    "Sequential",
    "SpectralNormConv",
    "celu",
    "elu",
    "gelu",
    "glu",
    "hard_tanh",
    "initializers",
    "leaky_relu",
    "log_softmax",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "swish",
    "tanh",
]
