"""The options a conv layer hands on to its functional op, named once for the Linen and NNX layers."""

from __future__ import annotations

from typing import Any

#: Attributes of :class:`jaxcnn.nn.Conv` / :class:`jaxcnn.nnx.Conv` passed on to :func:`jaxcnn.functional.conv`.
CONV = ("strides", "padding", "dilation", "flip", "padding_mode", "precision", "algorithm")
#: Attributes of the ``ConvTranspose`` layers passed on to :func:`jaxcnn.functional.conv_transpose`.
CONV_TRANSPOSE = ("strides", "padding", "output_padding", "dilation")


def options(layer: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """``{name: getattr(layer, name)}`` for each of ``names``: a layer's keyword arguments for its functional op.

    Example:
      >>> import jaxcnn.nn as jnn
      >>> options(jnn.ConvTranspose(2, 3, strides=2), CONV_TRANSPOSE)
      {'strides': 2, 'padding': 0, 'output_padding': 0, 'dilation': 1}
    """
    return {name: getattr(layer, name) for name in names}
