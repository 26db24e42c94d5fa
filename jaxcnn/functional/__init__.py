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

from jaxcnn.functional.blur import binomial_filter, blur_pool, max_blur_pool
from jaxcnn.functional.conv import conv, conv_transpose
from jaxcnn.functional.cpu_rules import (
    choose_algorithm,
    choose_transpose_algorithm,
    cpu_compiler_options,
    default_conv_algorithm,
)
from jaxcnn.functional.dropout import dropout, row_keys
from jaxcnn.functional.norm import batch_norm, group_norm, layer_norm
from jaxcnn.functional.pool import (
    adaptive_avg_pool,
    adaptive_max_pool,
    adaptive_max_pool_with_indices,
    avg_pool,
    global_avg_pool,
    global_max_pool,
    max_pool,
    max_pool_with_indices,
    max_unpool,
)
from jaxcnn.functional.spectral import conv_power_iteration

__all__ = [
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "adaptive_max_pool_with_indices",
    "avg_pool",
    "batch_norm",
    "binomial_filter",
    "blur_pool",
    "celu",
    "choose_algorithm",
    "choose_transpose_algorithm",
    "conv",
    "conv_transpose",
    "conv_power_iteration",
    "cpu_compiler_options",
    "default_conv_algorithm",
    "dropout",
    "row_keys",
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
    "max_blur_pool",
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
