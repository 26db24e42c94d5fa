"""Singular values of a convolution layer as a linear map: exact (circular) or the top ones (zero padding)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import _validate
from jaxcnn.functional.spectral import conv_power_iteration


def _input_shape(input_shape: Any, kernel: Any) -> tuple[int, ...]:
    """``input_shape`` as ``(*spatial, C_in)`` positive ints matching ``kernel`` ``(*window, C_in, C_out)``."""
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(f"input_shape must be a sequence of ints (*spatial, C_in), got {_validate.fmt(input_shape)}")
    shape = tuple(_validate.as_int(s, f"input_shape[{i}]") for i, s in enumerate(input_shape))
    if any(s < 1 for s in shape):
        raise ValueError(f"input_shape must hold positive sizes, got {shape}")
    if kernel.ndim != len(shape) + 1 or len(shape) - 1 not in _validate.SPATIAL_DIMS:
        raise ValueError(
            f"kernel of shape {tuple(kernel.shape)} does not match input_shape {shape}: expected input_shape "
            f"(*spatial, C_in) with 1-3 spatial dims and kernel (*window, C_in, C_out) of one more axis"
        )
    if kernel.shape[-2] != shape[-1]:
        raise ValueError(
            f"kernel has C_in = {kernel.shape[-2]} (shape {tuple(kernel.shape)}) but input_shape {shape} has "
            f"C_in = {shape[-1]} (groups are not supported: pass the dense kernel)"
        )
    if any(k < 1 for k in kernel.shape):
        raise ValueError(f"kernel must have no zero-sized axis, got shape {tuple(kernel.shape)}")
    return shape


def circular_transfer(kernel: Any, sizes: Sequence[int], dilation: Sequence[int]) -> jnp.ndarray:
    r"""Per-frequency ``C_in x C_out`` matrices of a circular convolution: the kernel's zero-padded DFT.

    .. math::

        P[\mathbf{f}] = \sum_{\mathbf{k}} w[\mathbf{k}]\, e^{-2\pi i\, \langle \mathbf{f},
        \mathbf{d} \odot \mathbf{k} \rangle / \mathbf{n}}

    Taps of a kernel larger than the input wrap around (``d k mod n``), as the
    circular padding does.

    Returns:
      complex ``(*sizes, C_in, C_out)``.
    """
    nd = len(sizes)
    big = jnp.zeros((*sizes, *kernel.shape[-2:]), jnp.result_type(kernel, jnp.float32))
    for tap in itertools.product(*(range(k) for k in kernel.shape[:nd])):
        at = tuple((t * d) % n for t, d, n in zip(tap, dilation, sizes))
        big = big.at[at].add(kernel[tap])
    return jnp.fft.fftn(big, axes=tuple(range(nd)))


def conv_singular_values(
    kernel: Any,
    input_shape: Sequence[int],
    *,
    padding: _validate.PaddingLike = "circular",
    strides: Any = 1,
    dilation: Any = 1,
    k: int | None = None,
    n_iter: int = 500,
    key: Any = None,
) -> jnp.ndarray:
    r"""Singular values of ``x -> conv(x, kernel)`` on inputs of ``input_shape`` (the conv's operator norm first).

    **Circular padding** (exact, all of them; Sedghi, Gupta & Long 2019, Thm. 6):
    the matrix of a circular convolution is block circulant, so the 2-D (n-D) DFT
    block-diagonalizes it and

    .. math::

        \sigma(A) = \bigcup_{\mathbf{f}} \sigma\big(P[\mathbf{f}]\big),\qquad
        P[\mathbf{f}] = \textstyle\sum_{\mathbf{k}} w[\mathbf{k}]\,
            e^{-2\pi i \langle \mathbf{f}, \mathbf{k} \rangle / \mathbf{n}} \in \mathbb{C}^{C_{in} \times C_{out}}

    one SVD of a ``C_in x C_out`` matrix per frequency: ``prod(n) * min(C_in,
    C_out)`` values. Strides > 1 are refused here: subsampling mixes the
    frequencies (aliasing), the operator is no longer block circulant.

    **Zero padding** (``padding`` = "zeros", meaning "SAME", or any padding spec
    of :func:`jaxcnn.functional.conv`): the top ``k`` singular values by subspace
    iteration on ``A^T A`` through ``F.conv`` and its adjoint ``F.conv_transpose``
    (:func:`jaxcnn.functional.conv_power_iteration`, ``n_iter`` iterations, Ritz
    values: they approach the true values from below; the gap ``sigma_{k+1} /
    sigma_k`` sets the rate). Strides and dilation are supported.

    Args:
      kernel: ``(*window, C_in, C_out)`` with 1-3 spatial dims (``groups = 1``).
      input_shape: one example, ``(*spatial, C_in)``.
      padding: "circular" (default), "zeros", or a zero-padding spec of ``F.conv``.
      strides: 1 for "circular"; any for zero padding.
      dilation: kernel dilation, int or one per spatial dim.
      k: how many to return (largest first). Default: all for "circular", 1 (the
        operator norm) for zero padding.
      n_iter: iterations for zero padding (ignored for "circular").
      key: PRNG key of the random start block (zero padding); default ``jax.random.key(0)``.

    Returns:
      ``(k,)`` singular values, descending, float32 (float64 under x64).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxcnn.analysis import conv_singular_values
      >>> w = jnp.ones((3, 3, 1, 1)) / 9                       # a box blur
      >>> float(conv_singular_values(w, (8, 8, 1))[0])        # DC passes unchanged
      1.0

    Reference: H. Sedghi, V. Gupta, P. M. Long, "The Singular Values of
    Convolutional Layers", ICLR 2019; Golub & Van Loan, *Matrix Computations*, sec. 8.2.4.
    """
    kernel = _validate.check_array(kernel, "kernel")
    _validate.check_floating(kernel, "kernel")
    shape = _input_shape(input_shape, kernel)
    nd = len(shape) - 1
    strides = _validate.tuple_arg(strides, nd, "strides")
    dilation = _validate.tuple_arg(dilation, nd, "dilation")
    circular = isinstance(padding, str) and padding.lower() == "circular"
    if k is not None:
        k = _validate.as_int(k, "k")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
    if circular:
        if strides != (1,) * nd:
            raise ValueError(
                f"strides must be 1 with padding='circular', got {strides}: a strided circular convolution is "
                f"not block circulant (subsampling aliases frequencies), so the DFT method does not apply; use "
                f"padding='zeros'/a padding spec (top singular values by power iteration) or "
                f"jaxcnn.analysis.conv_matrix with an SVD"
            )
        p = circular_transfer(kernel, shape[:nd], dilation).reshape(-1, *kernel.shape[-2:])
        s = jnp.sort(jnp.linalg.svd(p, compute_uv=False).ravel())[::-1]
        return s if k is None else s[:k]
    if isinstance(padding, str) and padding.lower() == "zeros":
        padding = "SAME"
    k = 1 if k is None else k
    total = int(np.prod(shape))
    if k > total:
        raise ValueError(f"k must be <= the input dimension {total} (input_shape {shape}), got {k}")
    key = jax.random.key(0) if key is None else _validate.check_key(key)
    v = jax.random.normal(key, (k, *shape), jnp.result_type(kernel, jnp.float32))
    sigma, _ = conv_power_iteration(kernel, v, n_iter=n_iter, strides=strides, padding=padding, dilation=dilation)
    return sigma
