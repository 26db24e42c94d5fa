"""The model zoo in either API: ``get_model(name, api="linen" | "nnx", ...)``.

``jaxcnn.models`` sits below ``jaxcnn.nnx`` in the package's layering and
cannot import it, so the API dispatch lives here and ``jaxcnn.get_model`` is
this function (``jaxcnn.models.get_model`` stays Linen-only).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import _validate
from jaxcnn.models import registry
from jaxcnn.nnx.mirror import Mirror

#: name -> the sample input shape an NNX zoo model is built for (any batch size works later;
#: channels and, for models with dense heads, the spatial size are fixed by it).
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "lwls_cnn": (1, 28, 28, 1),
    "lwls_cnn_blurpool": (1, 28, 28, 1),
    "mlp": (1, 28, 28, 1),
    "lenet5": (1, 28, 28, 1),
    "alexnet": (1, 224, 224, 3),
    "alexnet_tiny": (1, 32, 32, 3),
    "vgg11": (1, 224, 224, 3),
    "vgg11_bn": (1, 224, 224, 3),
    "vgg16": (1, 224, 224, 3),
    "vgg16_bn": (1, 224, 224, 3),
    "vgg_tiny": (1, 12, 12, 3),
    "resnet18": (1, 224, 224, 3),
    "resnet18_blurpool": (1, 224, 224, 3),
    "resnet34": (1, 224, 224, 3),
    "resnet50": (1, 224, 224, 3),
    "resnet_tiny": (1, 8, 8, 3),
    "wavenet": (1, 50, 1),
    "wavenet_tiny": (1, 20, 1),
    "cnn1d": (1, 40),
    "cnn3d": (1, 8, 8, 8, 1),
    "mobilenet_v2": (1, 224, 224, 3),
    "mobilenet_v2_tiny": (1, 32, 32, 3),
}
APIS = ("linen", "nnx")


def _rngs(rngs: Any) -> nnx.Rngs:
    """``rngs`` as :class:`flax.nnx.Rngs`; an int seed (default 0) gives an "rbg" "params" stream.

    XLA:CPU compiles initializers drawn from threefry keys many times more
    slowly than from "rbg" keys (as :func:`jaxcnn.train.create_train_state`
    notes), so a seed builds the parameters from ``jax.random.key(seed,
    impl="rbg")`` and the "dropout" stream from ``jax.random.key(seed)``.
    """
    if isinstance(rngs, nnx.Rngs):
        return rngs
    seed = _validate.as_int(rngs, "rngs")
    return nnx.Rngs(params=jax.random.key(seed, impl="rbg"), dropout=jax.random.key(seed))


def get_model(
    name: str, api: str = "linen", *, rngs: nnx.Rngs | int | None = None, input_shape: Any = None, **kwargs: Any
) -> Any:
    """Build a registered model as a Flax Linen module or as an NNX module.

    Args:
      name: a name of :func:`jaxcnn.models.list_models`.
      api: "linen" (default: :func:`jaxcnn.models.get_model`) or "nnx": a
        :class:`jaxcnn.nnx.Mirror` of the Linen model -- its layers are
        :mod:`jaxcnn.nnx` layers at the Linen paths, so parameter counts are
        equal and :func:`jaxcnn.nnx.from_linen` copies trained Linen weights in.
      rngs: ``api="nnx"`` only: :class:`flax.nnx.Rngs` for the parameters and
        the stored dropout stream, or an int seed (default 0; see :func:`_rngs`).
      input_shape: ``api="nnx"`` only: the input shape to build for,
        ``(N, *spatial, C)`` (default :data:`INPUT_SHAPES` ``[name]``).
      **kwargs: the model's options (:func:`jaxcnn.models.options`).

    Returns:
      A ``flax.linen.Module`` or a :class:`jaxcnn.nnx.Mirror`; call the latter as
      ``model(x, train=False)`` (or ``model.eval(); model(x)``), train it with
      ``nnx.jit`` + ``nnx.Optimizer`` or with :mod:`jaxcnn.train` through
      :func:`jaxcnn.nnx.as_linen_like`.

    Example:
      >>> import jax
      >>> from flax import nnx
      >>> import jaxcnn
      >>> model = jaxcnn.get_model("lwls_cnn", api="nnx", rngs=nnx.Rngs(0))
      >>> sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
      122270
    """
    api = _validate.check_choice(api, "api", APIS)
    if api == "linen":
        if rngs is not None or input_shape is not None:
            raise ValueError(
                "rngs and input_shape are for api='nnx'; a Linen model is initialized by model.init(key, x)"
            )
        return registry.get_model(name, **kwargs)
    linen = registry.get_model(name, **kwargs)
    if input_shape is None:
        input_shape = INPUT_SHAPES[name]
    elif not isinstance(input_shape, (tuple, list)) or not input_shape:
        raise TypeError(f"input_shape must be a tuple like (1, 28, 28, 1), got {input_shape!r}")
    shape = _validate.tuple_arg(tuple(input_shape), len(input_shape), "input_shape")
    return Mirror(linen, jax.ShapeDtypeStruct(shape, jnp.float32), rngs=_rngs(0 if rngs is None else rngs))
