"""jaxcnn: convolutional networks for JAX, as pure functions you can read line by line.

Layers of the package, each importing only the ones above it::

    jaxcnn.functional   pure math: conv, pooling, normalization, dropout
    jaxcnn.nn           Flax linen modules, one thin class per functional op
    jaxcnn.models       model zoo by name: get_model("lwls_cnn"), list_models()
    jaxcnn.data         data sets (embedded digits first), batching, sharding, augmentation
    jaxcnn.nnx          Flax NNX twins of every jaxcnn.nn layer, the zoo in NNX, converters
                        (jaxcnn.get_model(name, api="linen" | "nnx") lives there: models sits below nnx)
    jaxcnn.train        TrainState, optimizers, compiled jit/pmap/sharded steps, fit, checkpoints
    jaxcnn.analysis     parameter/MAC summary, receptive fields, conv as a matrix, plots
    jaxcnn.cli          the ``jaxcnn`` command: train | eval | summary | bench | visualize
"""

from jaxcnn import analysis, data, functional, models, nn, nnx, train
from jaxcnn.models import list_models
from jaxcnn.nnx.zoo import get_model

__version__ = "0.1.0"
__all__ = ["__version__", "analysis", "data", "functional", "get_model", "list_models", "models", "nn", "nnx", "train"]
