"""jaxcnn: convolutional networks for JAX, as pure functions you can read line by line.

Layers of the package, each importing only the ones above it::

    jaxcnn.functional   pure math: conv, pooling, normalization, dropout
"""

from jaxcnn import functional

__version__ = "0.1.0"
__all__ = ["functional", "__version__"]
