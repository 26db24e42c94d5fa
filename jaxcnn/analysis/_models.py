"""NNX models for the analysis tools: every tool reads a Linen module, and an NNX model is shown as one.

* a :class:`jaxcnn.nnx.Mirror` (the zoo in NNX) *is* a Linen model with NNX layers:
  the tools read its Linen model (same layers, same paths, same parameter
  counts) and its values (:func:`jaxcnn.nnx.to_linen`);
* any other ``flax.nnx.Module`` becomes the function ``x -> model(x)`` in
  inference mode (through :func:`jaxcnn.nnx.as_linen_like`), which the tools that
  take a function (receptive fields, effective receptive fields) accept.
"""

from __future__ import annotations

from typing import Any

from flax import nnx


def linen_view(model: Any, variables: Any = None) -> tuple[Any, Any]:
    """``(model, variables)`` as the analysis tools take them; Linen models pass through unchanged."""
    if not isinstance(model, nnx.Module):
        return model, variables
    from jaxcnn.nnx import Mirror, as_linen_like, to_linen

    if isinstance(model, Mirror):
        return model.linen_model, to_linen(model) if variables is None else variables
    adapted = as_linen_like(model)
    values = adapted.init() if variables is None else variables
    return (lambda x: adapted.apply(values, x, train=False)), None
