"""Argument parsing and validation shared by every layer of jaxcnn (functional, nn, models, data, train).

One helper per rule (the style of Flax's ``canonicalize_padding``): convolution,
pooling and the analysis tools all normalize their arguments here, so a padding
spec, a stride or a PRNG key means the same thing, and fails with the same
message, everywhere.

Every check runs on static Python values or on array *shapes and dtypes*, so it
happens at trace time, before XLA sees anything. Errors are ``TypeError`` (wrong
kind of thing) or ``ValueError`` (right kind, wrong value); each message names
the argument, shows the value received and says what is accepted.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]
PADDING_STRINGS = ("VALID", "SAME", "FULL", "CAUSAL")
SPATIAL_DIMS = (1, 2, 3)


def fmt(value: Any) -> str:
    """A short repr of ``value`` for an error message (arrays show shape and dtype)."""
    if isinstance(value, jax.core.Tracer):
        return f"a traced value of shape {tuple(value.shape)} and dtype {value.dtype}"
    if hasattr(value, "shape") and hasattr(value, "dtype") and not (np.isscalar(value) or isinstance(value, type)):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def as_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """``value`` as a Python int; a ``TypeError`` naming ``name`` for anything else.

    Accepts ``int`` and NumPy integers (anything with ``__index__``) but not
    ``bool``, floats, strings or traced values; with ``minimum``, a
    ``ValueError`` below it (``minimum=1``: a count, a width, a size).
    """
    if isinstance(value, (bool, np.bool_, jax.core.Tracer)):
        raise TypeError(f"{name} must be an int, got {fmt(value)}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {fmt(value)}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    return number


def tuple_arg(value: Any, n: int, name: str, *, minimum: int | None = 1) -> tuple[int, ...]:
    """Normalize an int-or-sequence argument to a tuple of ``n`` ints.

    ``strides=2`` with 2 spatial dims becomes ``(2, 2)``; ``(1, 2)`` stays as it
    is. ``minimum`` (default 1) is the smallest value accepted; ``None`` accepts
    any int.

    Raises:
      TypeError: ``value`` is neither an int nor a sequence of ints.
      ValueError: the sequence does not have ``n`` entries, or an entry is below
        ``minimum``.
    """
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be an int or a sequence of {n} ints, got {fmt(value)}")
    if isinstance(value, Sequence) or (isinstance(value, np.ndarray) and value.ndim == 1):
        items = tuple(as_int(v, f"{name}[{i}]") for i, v in enumerate(value))
        if len(items) != n:
            raise ValueError(
                f"{name} must be an int or a sequence of {n} ints (one per spatial "
                f"dim), got {fmt(value)} with {len(items)} entries"
            )
    else:
        items = (as_int(value, name),) * n
    if minimum is not None and any(v < minimum for v in items):
        raise ValueError(f"{name} must be >= {minimum} in every spatial dim, got {fmt(value)}")
    return items


def effective_size(window: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """Effective window extent ``k_eff = (k - 1) * dilation + 1`` per spatial dim."""
    return tuple((k - 1) * d + 1 for k, d in zip(window, dilation))


def same_pads(size: int, k_eff: int, stride: int) -> tuple[int, int]:
    """XLA/TensorFlow "SAME" padding for one dim: output ``ceil(size / stride)``.

    Total padding ``max((out - 1) * stride + k_eff - size, 0)``, the smaller half
    before. At stride 1 this equals PyTorch's ``padding="same"``, even kernels
    included (PyTorch also puts the extra element after).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


def padding_pairs(
    padding: PaddingLike,
    sizes: Sequence[int],
    k_eff: Sequence[int],
    strides: Sequence[int],
    *,
    name: str = "padding",
    allowed: Sequence[str] = PADDING_STRINGS,
) -> tuple[tuple[int, int], ...]:
    """Resolve any padding spec to one ``(low, high)`` pair per spatial dim.

    Accepted specs (strings in any case):

    ======================  ============================================
    ``"VALID"``             ``(0, 0)``: output ``floor((n - k_eff) / s) + 1``
    ``"SAME"``              output ``ceil(n / s)``; see :func:`same_pads`
    ``"FULL"``              ``(k_eff - 1, k_eff - 1)``, scipy's ``mode="full"``
    ``"CAUSAL"``            ``(k_eff - 1, 0)``: output at t sees inputs <= t
    ``p`` (int)             ``(p, p)`` in every dim
    ``(p1, ..., pd)``       ``(p_i, p_i)`` in dim i
    ``((l1, h1), ...)``     explicit pairs, one per spatial dim
    ======================  ============================================

    Args:
      padding: the spec.
      sizes: input size per spatial dim (only "SAME" uses it).
      k_eff: effective window size per spatial dim.
      strides: stride per spatial dim.
      name: argument name for error messages.
      allowed: the strings this caller accepts.

    Returns:
      A tuple of ``(low, high)`` int pairs, all non-negative.
    """
    n = len(k_eff)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in allowed:
            raise ValueError(
                f"{name} must be one of {', '.join(map(repr, allowed))} (any case), an int, "
                f"{n} ints or {n} (low, high) pairs, got {padding!r}"
            )
        if mode == "VALID":
            return ((0, 0),) * n
        if mode == "SAME":
            return tuple(same_pads(sz, k, s) for sz, k, s in zip(sizes, k_eff, strides))
        if mode == "FULL":
            return tuple((k - 1, k - 1) for k in k_eff)
        return tuple((k - 1, 0) for k in k_eff)  # CAUSAL
    if isinstance(padding, (bytes, float)) or padding is None or isinstance(padding, bool):
        raise TypeError(f"{name} must be a string, an int, {n} ints or {n} (low, high) pairs, got {fmt(padding)}")
    if (
        isinstance(padding, Sequence)
        and padding
        and all(isinstance(p, Sequence) and not isinstance(p, str) for p in padding)
    ):
        if len(padding) != n:
            raise ValueError(
                f"{name} must have one (low, high) pair per spatial dim ({n}), got {len(padding)} pairs: {fmt(padding)}"
            )
        pair_list = []
        for i, p in enumerate(padding):
            if not isinstance(p, Sequence) or len(p) != 2:  # a Sequence already (checked above)
                raise ValueError(f"{name}[{i}] must be a (low, high) pair, got {fmt(p)}")
            pair_list.append((as_int(p[0], f"{name}[{i}][0]"), as_int(p[1], f"{name}[{i}][1]")))
        pairs = tuple(pair_list)
    else:
        pairs = tuple((p, p) for p in tuple_arg(padding, n, name, minimum=None))
    if any(lo < 0 or hi < 0 for lo, hi in pairs):
        raise ValueError(f"{name} must be non-negative, got {fmt(padding)}")
    return pairs


def check_floating(x: Any, name: str) -> None:
    """``TypeError`` unless ``x`` has a floating-point dtype."""
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{name} must have a floating-point dtype, got {fmt(x)}")


def floating_dtype(value: Any, name: str) -> np.dtype:
    """``value`` (``jnp.float32``, ``"bfloat16"``, ...) as a floating dtype; ``TypeError`` otherwise."""
    try:
        dtype = jnp.dtype(value)
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating dtype (jnp.float32, 'bfloat16', ...), got {fmt(value)}")
    return dtype


def check_array(x: Any, name: str) -> Any:
    """Return ``x`` as an array-like with ``shape``/``dtype``; ``TypeError`` otherwise."""
    if isinstance(x, (str, bytes, dict)) or x is None:
        raise TypeError(f"{name} must be an array, got {fmt(x)}")
    if not hasattr(x, "shape"):
        try:
            x = jnp.asarray(x)
        except TypeError:
            raise TypeError(f"{name} must be an array, got {fmt(x)}") from None
    return x


def spatial_input(x: Any, name: str = "x") -> tuple[Any, int]:
    """Check ``x`` is channels-last ``(N, *spatial, C)`` with 1-3 spatial dims.

    Returns:
      ``(x, num_spatial_dims)``.
    """
    x = check_array(x, name)
    nd = x.ndim - 2
    if nd not in SPATIAL_DIMS:
        raise ValueError(
            f"{name} must have shape (N, *spatial, C) with 1, 2 or 3 spatial dims "
            f"(rank 3, 4 or 5), got shape {tuple(x.shape)} (rank {x.ndim})"
        )
    return x, nd


def check_pad_fits(sizes: Sequence[int], pads: Sequence[tuple[int, int]], k_eff: Sequence[int], *, what: str) -> None:
    """``ValueError`` if a window of size ``k_eff`` does not fit the padded input."""
    for i, (n, (lo, hi), k) in enumerate(zip(sizes, pads, k_eff)):
        if n + lo + hi < k:
            raise ValueError(
                f"{what} (effective size {k}) is larger than the padded input along "
                f"spatial dim {i}: input size {n}, padding ({lo}, {hi}); make the "
                f"input larger, pad more, or use a smaller window"
            )


def out_size(size: int, pads: tuple[int, int], k_eff: int, stride: int, ceil_mode: bool = False) -> int:
    """Output length ``floor((n + lo + hi - k_eff) / s) + 1`` (``ceil`` if ``ceil_mode``).

    With ``ceil_mode`` the last window must start inside the input or the low
    padding, as in PyTorch; a window starting in the high padding is dropped.
    """
    span = size + pads[0] + pads[1] - k_eff
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pads[0]:
        out -= 1
    return out


def check_unit_interval(value: Any, name: str) -> float:
    """A concrete number in ``[0, 1]`` (a drop probability, a momentum)."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{name} must be a concrete number in [0, 1], got {fmt(value)}; pass it as a "
            f"static argument (e.g. jax.jit(..., static_argnames='{name}'))"
        )
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise TypeError(f"{name} must be a number in [0, 1], got {fmt(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in [0, 1], got {fmt(value)}") from None
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return number


def check_nonnegative(value: Any, name: str) -> float:
    """A concrete, finite number >= 0 (an epsilon): :func:`check_number` with ``low=0``."""
    return check_number(value, name, low=0.0)


def check_key(key: Any, name: str = "key") -> Any:
    """A single JAX PRNG key: typed (``jax.random.key``) or raw ``uint32`` key data.

    Raw key data (``jax.random.PRNGKey``, or the same as a NumPy array, e.g.
    restored from a checkpoint) must have the default implementation's shape,
    ``(2,)`` for threefry.
    """
    if isinstance(key, (jax.Array, np.ndarray, jax.core.Tracer)):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape == ():
                return key
        elif key.dtype == np.uint32 and tuple(key.shape) == _raw_key_shape():
            return key
    raise TypeError(
        f"{name} must be a single PRNG key from jax.random.key(seed) or jax.random.PRNGKey(seed), got {fmt(key)}"
    )


def _raw_key_shape() -> tuple[int, ...]:
    return tuple(jax.eval_shape(jax.random.PRNGKey, 0).shape)


def check_bool(value: Any, name: str) -> bool:
    """A Python/NumPy bool; ``TypeError`` for anything else (a traced bool included)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {fmt(value)}")


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """One of ``choices`` (case-insensitive); returns the canonical lower-case form."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {', '.join(map(repr, choices))}, got {fmt(value)}")
    low = value.lower()
    if low not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return low


def check_vector(v: Any, size: int, name: str, what: str = "C") -> Any:
    """``v`` must be ``None`` or an array of shape ``(size,)``."""
    if v is None:
        return None
    v = check_array(v, name)
    if tuple(v.shape) != (size,):
        raise ValueError(f"{name} must have shape ({what},) = ({size},), got shape {tuple(v.shape)}")
    return v


def channel_vector(v: Any, ndim: int) -> Any:
    """Reshape a per-channel ``(C,)`` vector to broadcast against rank ``ndim`` channels-last.

    Explicit reshapes keep every op valid under ``jax_numpy_rank_promotion="raise"``.
    """
    return jnp.reshape(v, (1,) * (ndim - 1) + (-1,))


def axes_arg(axes: Any, ndim: int, name: str) -> tuple[int, ...]:
    """Normalize an int or a sequence of ints to sorted non-negative axes of a rank-``ndim`` array."""
    if isinstance(axes, (str, bytes)) or axes is None:
        raise TypeError(f"{name} must be an int or a sequence of ints, got {fmt(axes)}")
    items = axes if isinstance(axes, Sequence) else (axes,)
    out = []
    for i, a in enumerate(items):
        a = as_int(a, f"{name}[{i}]" if isinstance(axes, Sequence) else name)
        if not -ndim <= a < ndim:
            raise ValueError(f"{name} has axis {a}, out of range for an input of rank {ndim}")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has repeated axes: {fmt(axes)}")
    return tuple(sorted(out))


def check_precision(precision: Any, name: str = "precision") -> Any:
    """``None``, a ``lax.Precision`` (or its name, e.g. "highest"), or a pair of them, as ``lax`` accepts."""
    from jax import lax

    if precision is None or isinstance(precision, lax.Precision):
        return precision
    if isinstance(precision, (tuple, list)) and len(precision) == 2:
        return tuple(check_precision(p, f"{name}[{i}]") for i, p in enumerate(precision))
    if isinstance(precision, str):
        try:
            return lax.Precision(precision)
        except ValueError:
            pass
    raise ValueError(
        f"{name} must be None, a jax.lax.Precision, one of "
        f"{', '.join(repr(m.lower()) for m in lax.Precision.__members__)}, or a pair of them, got {fmt(precision)}"
    )


def check_number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A concrete, finite real number in a range (a learning rate, a beta, a decay), as a float.

    Args:
      value: an int, float or NumPy/JAX scalar (not bool, str, None or a traced value).
      name: argument name for the message.
      low, high: the bounds (``None``: unbounded); ``low_open``/``high_open`` exclude them.

    Returns:
      ``float(value)``; ``TypeError`` for a non-number, ``ValueError`` for NaN, infinity or out of range.
    """
    if high is None:
        what = "a finite number" + ("" if low is None else f" {'>' if low_open else '>='} {low:g}")
    else:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        what = f"a finite number in {lo}, {high:g}" + (")" if high_open else "]")
    scalar = hasattr(value, "shape") and np.ndim(value) == 0 and jnp.issubdtype(jnp.result_type(value), jnp.number)
    if isinstance(value, (bool, np.bool_, jax.core.Tracer)) or not (
        isinstance(value, (int, float, np.integer, np.floating)) or scalar
    ):
        raise TypeError(f"{name} must be {what}, got {fmt(value)}")
    x = float(value)
    if (
        not np.isfinite(x)
        or (low is not None and (x <= low if low_open else x < low))
        or (high is not None and (x >= high if high_open else x > high))
    ):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return x
