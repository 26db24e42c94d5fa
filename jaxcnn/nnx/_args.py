"""Constructor arguments shared by the NNX layers: feature counts, kernel windows, PRNG streams."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flax import nnx
from flax.linen import initializers

from jaxcnn import _validate


def features(value: Any, name: str) -> int:
    """A channel count (``in_features``, ``out_features``, ``num_features``): an int >= 1."""
    return _validate.as_int(value, name, minimum=1)


def kernel_window(kernel_size: Any, spatial_dims: Any) -> tuple[int, ...]:
    """The kernel window: one size per spatial dim, or an int repeated ``spatial_dims`` times.

    NNX layers are built before they see an input, so an int ``kernel_size``
    needs ``spatial_dims`` (1, 2 or 3) to say how many spatial dims there are.
    """
    if isinstance(kernel_size, Sequence) and not isinstance(kernel_size, (str, bytes)):
        window = _validate.tuple_arg(kernel_size, len(kernel_size), "kernel_size")
        nd = len(window)
    else:
        if spatial_dims is None:
            raise ValueError(
                f"kernel_size={kernel_size!r} is an int: pass one size per spatial dim "
                f"(e.g. kernel_size=({kernel_size}, {kernel_size}) for images) or spatial_dims=1, 2 or 3"
            )
        nd = _validate.as_int(spatial_dims, "spatial_dims")
        if nd not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {nd}")
        window = _validate.tuple_arg(kernel_size, nd, "kernel_size")
    if spatial_dims is not None and _validate.as_int(spatial_dims, "spatial_dims") != nd:
        raise ValueError(f"kernel_size {kernel_size!r} has {nd} spatial dims but spatial_dims={spatial_dims}")
    if nd not in (1, 2, 3):
        raise ValueError(f"kernel_size must have 1, 2 or 3 sizes (spatial dims), got {kernel_size!r}")
    return window


def check_rngs(rngs: Any, name: str = "rngs") -> nnx.Rngs:
    """``rngs`` must be an :class:`flax.nnx.Rngs` (the parameters are drawn from its "params" stream)."""
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"{name} must be a flax.nnx.Rngs (e.g. rngs=nnx.Rngs(0)), got {_validate.fmt(rngs)}")
    return rngs


#: The default initializers, as the Linen layers' (module-level: built once, shared).
LECUN_NORMAL = initializers.lecun_normal()
ZEROS = initializers.zeros_init()
ONES = initializers.ones_init()


def conv_params(
    layer: Any, kernel_shape: tuple[int, ...], bias_size: int, kernel_init: Any, bias_init: Any, rngs: nnx.Rngs
) -> None:
    """Create a conv layer's ``kernel`` ``kernel_shape`` and ``bias`` ``(bias_size,)``.

    Both are :class:`flax.nnx.Param`\\ s of ``layer.param_dtype`` drawn from the
    "params" stream of ``rngs``, kernel first; the bias is ``None`` unless
    ``layer.use_bias``.
    """
    layer.kernel = nnx.Param(kernel_init(rngs.params(), kernel_shape, layer.param_dtype))
    layer.bias = (
        nnx.Param(bias_init(rngs.params(), (bias_size,), layer.param_dtype)) if layer.use_bias else nnx.data(None)
    )
