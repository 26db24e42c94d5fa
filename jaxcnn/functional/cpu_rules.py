"""Every rule for how a convolution runs on CPU, in one module: algorithm, thresholds, tiles, chunks, compiler options.

A newcomer looking for "why does ``F.conv`` do this on CPU" reads this file:

* :func:`choose_algorithm` -- which formulation ``F.conv(..., algorithm=None)``
  traces: XLA's own convolution ("xla"), the fused sum over kernel taps
  ("taps", few channels), XLA's forward with derivatives in batch chunks
  ("chunked"), or the depthwise taps sum ("depthwise", ``groups == C_in``).
  :func:`default_conv_algorithm` scopes a choice.
* :data:`TILE`, :data:`BACKWARD_CHUNK`, :data:`DEPTHWISE_CHUNK_BYTES` -- the
  batch tile of the taps layout, the batch chunk of the derivative
  convolutions and of the depthwise weight gradient (:func:`tile_size`,
  :func:`chunk_size`, :func:`depthwise_chunk`).
* :func:`gradient_operands_once` -- whether the weight gradient's operands
  are materialized before XLA's layout transposes read them.
* :data:`TRANSPOSE_CHUNK_BYTES` -- the batch chunk of the strided transposed
  convolution's derivatives (:func:`transpose_chunk`).
* :func:`cpu_compiler_options` -- the XLA:CPU options for a compiled function
  whose convolution kernels are known; the one helper both a user's own
  ``jax.jit`` and :mod:`jaxcnn.train` call::

      step = jax.jit(train_step, compiler_options=F.cpu_compiler_options(params))

Every threshold here was measured with ``benchmarks/`` on a 2-core AVX-512 CPU;
the figures behind each one are in ``benchmarks/results/cpu-rules.md``. All
choices compute the same numbers up to float rounding; only the speed differs.
This module imports nothing else from :mod:`jaxcnn.functional`, so every
convolution module can import it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import jax

from jaxcnn import _validate

ALGORITHMS = ("xla", "taps", "chunked", "depthwise")

#: "taps" for groups=1 convolutions with ``C_in * C_out`` at most this (cpu-rules.md, "taps").
TAPS_MAX_CHANNEL_PAIRS = 32
#: Eigen's convolution (not YNNPACK's) once some kernel has ``C_in * C_out`` at least this (cpu-rules.md, "library").
EIGEN_MIN_CHANNEL_PAIRS = 128
#: The weight gradient's operands computed once from ``C_in * C_out`` at least this (cpu-rules.md, "cond-grad").
ONCE_MIN_CHANNEL_PAIRS = EIGEN_MIN_CHANNEL_PAIRS
#: Examples per tile of the taps loop's batch-last layout (cpu-rules.md, "tile").
TILE = 16
#: Examples per chunk of the derivative convolutions (cpu-rules.md, "chunk").
BACKWARD_CHUNK = 128
#: Bytes of input per batch chunk of the depthwise weight gradient (cpu-rules.md, "depthwise").
DEPTHWISE_CHUNK_BYTES = 4 * 2**20
#: Bytes of im2col columns per batch chunk of the transposed convolution's derivatives (cpu-rules.md, "transpose").
TRANSPOSE_CHUNK_BYTES = 4 * 2**20
#: YNNPACK kept for dots and reductions only, so convolutions go to Eigen.
YNN_WITHOUT_CONVOLUTIONS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"

_DEFAULT = threading.local()


def check_algorithm(algorithm: Any) -> str | None:
    """``None`` or one of :data:`ALGORITHMS`, else a ``ValueError`` naming the argument."""
    return None if algorithm is None else _validate.check_choice(algorithm, "algorithm", ALGORITHMS)


@contextlib.contextmanager
def default_conv_algorithm(algorithm: str | None) -> Iterator[None]:
    """Within the block, trace ``conv(..., algorithm=None)`` with ``algorithm`` instead of the rule.

    Like ``jax.default_matmul_precision``: scoped and thread-local. It acts
    while a function is *traced*; a function already compiled outside the block
    keeps the algorithm it was traced with. ``None`` restores the measured rule.
    A choice that does not fit a convolution's groups ("taps"/"chunked" need
    ``groups == 1``, "depthwise" ``groups == C_in``) falls back to "xla" for
    it. :mod:`jaxcnn.analysis` traces under ``default_conv_algorithm("xla")``
    so every convolution shows up as one ``conv_general_dilated`` with its
    geometry.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> with F.default_conv_algorithm("xla"):
      ...     y = F.conv(jnp.ones((1, 5, 5, 1)), jnp.ones((3, 3, 1, 4)))
    """
    algorithm = check_algorithm(algorithm)
    previous = getattr(_DEFAULT, "algorithm", None)
    _DEFAULT.algorithm = algorithm
    try:
        yield
    finally:
        _DEFAULT.algorithm = previous


def fits(algorithm: str, c_in: int, groups: int) -> bool:
    """Whether ``algorithm`` can compute a convolution with ``c_in`` input channels in ``groups`` groups."""
    if algorithm in ("taps", "chunked"):
        return groups == 1
    if algorithm == "depthwise":
        return groups == c_in
    return True


def choose_algorithm(
    x_shape: tuple[int, ...], kernel_shape: tuple[int, ...], strides: tuple[int, ...], groups: int
) -> str:
    """The algorithm :func:`jaxcnn.functional.conv` uses when ``algorithm=None``.

    The rule, in order:

    1. Inside :func:`default_conv_algorithm`, the algorithm it names (when it
       fits the groups, else "xla").
    2. On GPU and TPU, "xla": the vendor libraries are fast there.
    3. On CPU, depthwise (``groups == C_in``): "depthwise", the sum over
       taps vectorized over channels (XLA:CPU's grouped convolution is one to
       two orders of magnitude slower, its weight gradient more; cpu-rules.md,
       "depthwise").
    4. Other grouped convolutions: "xla".
    5. ``groups == 1``: "taps" for ``C_in * C_out <= TAPS_MAX_CHANNEL_PAIRS``
       (where XLA:CPU's library convolution is weakest), else "chunked".

    Measurements behind each step: ``benchmarks/results/cpu-rules.md``.
    """
    c_in = x_shape[-1]
    scoped = getattr(_DEFAULT, "algorithm", None)
    if scoped is not None:
        return scoped if fits(scoped, c_in, groups) else "xla"
    if jax.default_backend() != "cpu":
        return "xla"
    if groups != 1:
        return "depthwise" if groups == c_in else "xla"
    return "taps" if kernel_shape[-2] * kernel_shape[-1] <= TAPS_MAX_CHANNEL_PAIRS else "chunked"


#: The formulations of :func:`jaxcnn.functional.conv_transpose` (its ``algorithm=``).
TRANSPOSE_ALGORITHMS = ("xla", "subpixel")


def check_transpose_algorithm(algorithm: Any) -> str | None:
    """``None`` or one of :data:`TRANSPOSE_ALGORITHMS`, else a ``ValueError`` naming the argument."""
    return None if algorithm is None else _validate.check_choice(algorithm, "algorithm", TRANSPOSE_ALGORITHMS)


def choose_transpose_algorithm(strides: tuple[int, ...], dilation: tuple[int, ...]) -> str:
    """The algorithm :func:`jaxcnn.functional.conv_transpose` uses when ``algorithm=None``.

    The rule, in order:

    1. Inside ``default_conv_algorithm("xla")``, "xla" (so :mod:`jaxcnn.analysis`
       sees one ``conv_general_dilated`` per layer).
    2. On GPU and TPU, "xla": the vendor libraries are fast there.
    3. On CPU, "subpixel" when some stride is > 1 and the dilation is 1
       everywhere: one stride-1 convolution with the ``prod(strides)`` phase
       sub-kernels stacked on the output channels, then depth-to-space, instead
       of XLA's convolution of the zero-inserted input (slower everywhere, by up
       to two orders of magnitude in 3-D and with gradients; cpu-rules.md,
       "transpose").
    4. Otherwise (stride 1, or a dilated kernel) "xla".
    """
    if getattr(_DEFAULT, "algorithm", None) == "xla" or jax.default_backend() != "cpu":
        return "xla"
    return "subpixel" if max(strides) > 1 and max(dilation) == 1 else "xla"


def tile_size(n: int, cap: int = TILE) -> int:
    """The largest divisor of the batch size ``n`` not above ``cap``."""
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def chunk_size(n: int) -> int:
    """Examples per chunk of the derivative convolutions: ``n`` itself for small batches.

    A divisor of ``n`` near :data:`BACKWARD_CHUNK`, or ``n`` when the only
    divisors are much smaller (chunks that small cost more than they save).
    """
    chunk = tile_size(n, BACKWARD_CHUNK)
    return n if chunk == n or chunk < BACKWARD_CHUNK // 2 else chunk


def gradient_operands_once(c_in: int, c_out: int) -> bool:
    """Whether a convolution's weight gradient reads its operands computed once, into one buffer.

    The rule: yes when ``C_in * C_out >= ONCE_MIN_CHANNEL_PAIRS``. XLA:CPU
    reads the weight gradient's operands (the layer input, the output
    gradient) in a transposed layout and fuses their producers into that
    transposing copy. Wide layers (ResNet's BatchNorm/ReLU/residual chains)
    then recompute those producers at great cost, so the operands are
    materialized (:func:`jaxcnn.functional._conv_cpu.computed_once`); for
    narrow layers the producers are cheap and the extra buffer costs more
    than the recomputation it saves. Measurements: cpu-rules.md, "cond-grad".
    """
    return c_in * c_out >= ONCE_MIN_CHANNEL_PAIRS


def depthwise_chunk(n: int, example_bytes: int) -> int:
    """Examples per chunk of the depthwise weight gradient: the largest divisor of ``n`` within the budget.

    The largest divisor of the batch size ``n`` whose chunk holds at most
    :data:`DEPTHWISE_CHUNK_BYTES` of input (``example_bytes`` per example), at
    least 1, so that the per-tap reductions of a chunk read it from cache.
    """
    return _chunk_within(n, example_bytes, DEPTHWISE_CHUNK_BYTES)


def transpose_chunk(n: int, example_bytes: int) -> int:
    """Examples per chunk of the transposed convolution's derivatives: the largest divisor of ``n`` within budget.

    The largest divisor of the batch size ``n`` whose chunk's im2col columns
    (``example_bytes`` per example) hold at most :data:`TRANSPOSE_CHUNK_BYTES`,
    at least 1.
    """
    return _chunk_within(n, example_bytes, TRANSPOSE_CHUNK_BYTES)


def _chunk_within(n: int, example_bytes: int, budget: int) -> int:
    """The largest divisor of ``n`` whose chunk of ``example_bytes`` per example fits in ``budget`` bytes, at least 1."""
    return tile_size(n, max(1, budget // max(1, example_bytes)))


def cpu_compiler_options(params: Any) -> dict[str, str] | None:
    """XLA:CPU compiler options for a compiled function whose convolution kernels are in ``params``.

    The rule: XLA:CPU (jaxlib 0.10) hands convolutions to YNNPACK by default;
    when some kernel (a leaf of rank >= 3, laid out ``(*window, C_in, C_out)``)
    has ``C_in * C_out >= EIGEN_MIN_CHANNEL_PAIRS``, return the options that
    keep YNNPACK for dots and reductions only, so convolutions go to Eigen's
    (faster for wide layers, slower for narrow ones); else ``None`` (XLA's
    defaults). Measurements: ``benchmarks/results/cpu-rules.md``, "library".

    The options are per compiled function. This is the one helper to call,
    from a user's own ``jax.jit`` or from :mod:`jaxcnn.train`; off CPU pass
    nothing (the options name an XLA:CPU flag)::

        opts = F.cpu_compiler_options(params) if jax.default_backend() == "cpu" else None
        step = jax.jit(train_step, compiler_options=opts)

    Numbers are the same up to float rounding; only the speed differs.

    Args:
      params: any pytree holding the convolution kernels (e.g. a Flax
        ``params`` collection, or abstract ``jax.ShapeDtypeStruct`` leaves).

    Returns:
      a ``dict`` for ``jax.jit(..., compiler_options=...)``, or ``None``.
    """
    pairs = [leaf.shape[-2] * leaf.shape[-1] for leaf in jax.tree.leaves(params) if getattr(leaf, "ndim", 0) >= 3]
    if max(pairs, default=0) < EIGEN_MIN_CHANNEL_PAIRS:
        return None
    return {"xla_cpu_experimental_ynn_fusion_type": YNN_WITHOUT_CONVOLUTIONS}
