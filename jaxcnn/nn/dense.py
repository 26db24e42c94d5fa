"""Dense: ``flax.linen.Dense`` with its input checked against its kernel first."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn import _validate
from jaxcnn.nn._checks import check_param_shape


class Dense(nn.Dense):
    r"""A fully connected layer, ``y = x W + b`` over the last axis: exactly ``flax.linen.Dense``.

    The one addition: at ``apply``, an input whose last axis does not match the
    kernel's rows is a ``ValueError`` naming the layer's path, the input shape and
    the kernel shape (Flax raises ``ScopeParamShapeError`` without them). The
    usual cause in a CNN is a Dense after a flatten fed an image of another size
    than at ``init``.

    Attributes: those of ``flax.linen.Dense`` (``features``, ``use_bias``,
    ``dtype``, ``param_dtype``, ``kernel_init``, ``bias_init``, ...).

    Returns (``__call__``): ``(..., features)``.
    """

    def __call__(self, inputs: Any) -> jnp.ndarray:
        x = _validate.check_array(inputs, "x")
        if x.ndim < 1:
            raise ValueError(f"x must have at least one axis (..., features_in), got shape {tuple(x.shape)}")
        features = _validate.as_int(self.features, "features")
        if features < 1:
            raise ValueError(f"features must be >= 1, got {features}")
        check_param_shape(
            self,
            "kernel",
            (x.shape[-1], features),
            x.shape,
            "; after a flatten this means the model's input has another spatial size or channel count than at init",
        )
        return super().__call__(x)
