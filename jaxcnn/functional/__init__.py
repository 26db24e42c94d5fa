"""Pure functions for convolutional networks: ``import jaxcnn.functional as F``.

Every function takes all its inputs as arguments (weights, running statistics,
PRNG keys) and returns all its outputs; nothing is hidden or global, so each one
composes with ``jax.jit``, ``jax.grad``, ``jax.vmap`` and sharding. Layout is
channels-last, ``(N, *spatial, C)`` with 1, 2 or 3 spatial dims; kernels are
``(*window, C_in // groups, C_out)``.

Activations, losses and initializers are not rewritten here: the ones from
``jax.nn``, ``optax`` and ``jax.nn.initializers`` are re-exported for convenience.
"""

from jax.nn import (  # activations, as jax.nn defines them
    celu,
    elu,
    gelu,
    glu,
    hard_tanh,
    initializers,  # he_normal, glorot_uniform, lecun_normal, zeros, ...
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
from optax import (  # losses, as optax defines them
    l2_loss,
    sigmoid_binary_cross_entropy,
    softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
    squared_error,
)

from jaxcnn.functional.conv import conv, conv_transpose
from jaxcnn.functional.cpu_rules import (
    choose_algorithm,
    cpu_compiler_options,
    default_conv_algorithm,
)
from jaxcnn.functional.dropout import dropout
from jaxcnn.functional.norm import batch_norm, group_norm, layer_norm
from jaxcnn.functional.pool import (
    adaptive_avg_pool,
    adaptive_max_pool,
    avg_pool,
    global_avg_pool,
    global_max_pool,
    max_pool,
    max_pool_with_indices,
    max_unpool,
)

__all__ = [
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "avg_pool",
    "batch_norm",
    "celu",
    "choose_algorithm",
    "conv",
    "conv_transpose",
    "cpu_compiler_options",
    "default_conv_algorithm",
    "dropout",
    "elu",
    "gelu",
    "global_avg_pool",
    "global_max_pool",
    "glu",
    "group_norm",
    "hard_tanh",
    "initializers",
    "l2_loss",
    "layer_norm",
    "leaky_relu",
    "log_softmax",
    "max_pool",
    "max_pool_with_indices",
    "max_unpool",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "sigmoid_binary_cross_entropy",
    "silu",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "softplus",
    "squared_error",
    "swish",
    "tanh",
]
