"""Unbatched inputs for ops whose kernel pins the spatial rank, as PyTorch accepts ``(C, H, W)``.

A convolution kernel ``(*window, C_in // groups, C_out)`` has as many window
dims as the input has spatial dims, so an input one rank short of the kernel
is unambiguously one example without its batch axis: ``(*spatial, C)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp


def kernel_pins_rank(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Let ``fn(x, kernel, ...)`` take unbatched ``x``: ``(*spatial, C)`` with ``x.ndim == kernel.ndim - 1``.

    The batch axis is added before ``fn`` and removed from its result; any
    other rank goes to ``fn`` unchanged (which validates it).

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> F.conv(jnp.ones((5, 5, 1)), jnp.ones((3, 3, 1, 2)), padding="VALID").shape
      (3, 3, 2)
    """

    @functools.wraps(fn)
    def wrapper(x: Any, kernel: Any, *args: Any, **kwargs: Any) -> Any:
        x_nd, k_nd = getattr(x, "ndim", None), getattr(kernel, "ndim", None)
        if x_nd is not None and k_nd is not None and x_nd == k_nd - 1 and x_nd >= 2:
            return fn(jnp.expand_dims(x, 0), kernel, *args, **kwargs)[0]
        return fn(x, kernel, *args, **kwargs)

    return wrapper
