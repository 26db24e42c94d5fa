"""Convolution as a matrix: the (doubly-block-)Toeplitz matrix of one conv layer."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxcnn import _validate


def _layout(kernel: np.ndarray, input_shape: tuple[int, ...]) -> tuple[int, int, int, bool]:
    """``(nd, c_in, c_out_present, plain)`` from the ranks of ``kernel`` and ``input_shape``."""
    r_k, r_x = kernel.ndim, len(input_shape)
    if r_k == r_x + 1 and r_x - 1 in _validate.SPATIAL_DIMS:  # x (*spatial, C_in), kernel (*window, I, O)
        return r_x - 1, input_shape[-1], True, False
    if r_k == r_x + 2 and r_x in _validate.SPATIAL_DIMS:  # x (*spatial,), kernel (*window, 1, O)
        return r_x, 1, True, False
    if r_k == r_x and r_x in _validate.SPATIAL_DIMS:  # x (*spatial,), kernel (*window,)
        return r_x, 1, False, True
    raise ValueError(
        f"kernel of shape {kernel.shape} does not match input_shape {input_shape}: expected "
        f"input_shape (*spatial, C_in) with kernel (*window, C_in // groups, C_out), input_shape "
        f"(*spatial,) with kernel (*window, 1, C_out), or both plain (*spatial,) and (*window,), "
        f"with 1, 2 or 3 spatial dims"
    )


def conv_matrix(
    kernel: Any,
    input_shape: Sequence[int],
    *,
    strides: Any = 1,
    padding: _validate.PaddingLike = "VALID",
    dilation: Any = 1,
    groups: int = 1,
    flip: bool = False,
    padding_mode: str = "zeros",
) -> np.ndarray:
    r"""The dense matrix ``M`` of a convolution: ``conv(x).ravel() == M @ x.ravel()``.

    Built from the definition of :func:`jaxcnn.functional.conv`, one entry per
    (output position, tap, channel pair), with zero padding:

    .. math::

        M[(\mathbf{o}, c_o), (\mathbf{i}, c_i)] = w[\mathbf{k}, c_i \bmod (C_{in}/G), c_o]
        \quad\text{where}\quad \mathbf{i} = \mathbf{s}\odot\mathbf{o} + \mathbf{d}\odot\mathbf{k}
        - \mathbf{p}_{lo},\ c_i \in g(c_o)

    and every other entry is 0 (taps that land in the padding drop out; with
    ``padding_mode="circular"`` they wrap around, ``\mathbf{i} \bmod \mathbf{n}``,
    and ``M`` is block circulant). In 1D
    ``M`` is a banded Toeplitz matrix (each row the kernel shifted by the
    stride); in 2D it is doubly block Toeplitz. Rows follow the C-order of the
    output ``(*out_spatial, C_out)``, columns the C-order of ``x``.

    Args:
      kernel: ``(*window, C_in // groups, C_out)``; or ``(*window,)`` when
        ``input_shape`` is ``(*spatial,)`` (one channel in and out).
      input_shape: one example, ``(*spatial, C_in)`` or ``(*spatial,)`` (C_in = 1),
        with 1, 2 or 3 spatial dims.
      strides, dilation: int or one per spatial dim.
      padding: any padding spec of :func:`jaxcnn.functional.conv` (default
        "VALID"), resolved by ``_validate.padding_pairs``, the same rule ``conv`` uses.
      groups: channel groups.
      flip: true convolution (kernel reversed spatially), as ``conv(flip=True)``.
      padding_mode: "zeros" (default) or "circular" (wrap around, as
        ``conv(padding_mode="circular")``; every pad must be <= the input size).

    Returns:
      ``M`` of shape ``(prod(out_spatial) * C_out, prod(spatial) * C_in)``, a NumPy
      array in the kernel's floating dtype (float64 for integer kernels).

    Example:
      >>> import numpy as np
      >>> from jaxcnn.analysis import conv_matrix
      >>> conv_matrix(np.array([1., 2, 3]), (5,), padding=1)
      array([[2., 3., 0., 0., 0.],
             [1., 2., 3., 0., 0.],
             [0., 1., 2., 3., 0.],
             [0., 0., 1., 2., 3.],
             [0., 0., 0., 1., 2.]])

    Reference: Goodfellow, Bengio & Courville, *Deep Learning*, 2016, sec. 9.1
    (convolution as multiplication by a doubly block circulant/Toeplitz matrix);
    Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016, sec. 4.1.
    """
    kernel = np.asarray(_validate.check_array(kernel, "kernel"))
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(f"input_shape must be a sequence of ints, got {_validate.fmt(input_shape)}")
    input_shape = tuple(_validate.as_int(s, f"input_shape[{i}]") for i, s in enumerate(input_shape))
    if any(s < 1 for s in input_shape):
        raise ValueError(f"input_shape must hold positive sizes, got {input_shape}")
    if any(s < 1 for s in kernel.shape):
        raise ValueError(f"kernel must have no zero-sized axis, got shape {kernel.shape}")
    nd, c_in, _, plain = _layout(kernel, input_shape)
    if plain:
        kernel = kernel.reshape(kernel.shape + (1, 1))
    groups = _validate.as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    c_in_g, c_out = kernel.shape[-2], kernel.shape[-1]
    if c_in_g * groups != c_in:
        raise ValueError(
            f"kernel has {c_in_g} input channels per group (shape {kernel.shape}); with groups={groups} "
            f"that needs C_in = {c_in_g * groups}, but input_shape {input_shape} has C_in = {c_in}"
        )
    if c_out % groups:
        raise ValueError(f"groups={groups} must divide the output channels C_out={c_out} of the kernel")
    strides = _validate.tuple_arg(strides, nd, "strides")
    dilation = _validate.tuple_arg(dilation, nd, "dilation")
    flip = _validate.check_bool(flip, "flip")
    circular = _validate.check_choice(padding_mode, "padding_mode", ("zeros", "circular")) == "circular"
    window = kernel.shape[:nd]
    sizes = input_shape[:nd]
    k_eff = _validate.effective_size(window, dilation)
    pads = _validate.padding_pairs(padding, sizes, k_eff, strides)
    _validate.check_pad_fits(sizes, pads, k_eff, what=f"kernel of window {window} with dilation {dilation}")
    if circular and any(max(p) > n for p, n in zip(pads, sizes)):
        raise ValueError(
            f"padding_mode='circular' needs padding <= input size in every spatial dim; got {pads} for {sizes}"
        )
    out = tuple(_validate.out_size(n, p, k, s) for n, p, k, s in zip(sizes, pads, k_eff, strides))
    if flip:
        kernel = kernel[tuple(slice(None, None, -1) for _ in range(nd))]

    dtype = kernel.dtype if np.issubdtype(kernel.dtype, np.floating) else np.float64
    matrix = np.zeros((math.prod(out) * c_out, math.prod(sizes) * c_in), dtype)
    grid = np.meshgrid(*(np.arange(o) for o in out), indexing="ij")  # output positions, per dim
    out_flat = np.ravel_multi_index(tuple(grid), out) if nd else np.zeros(1, int)
    o_per_group = c_out // groups
    for tap in itertools.product(*(range(k) for k in window)):
        pos = [g * s + t * d - lo for g, s, t, d, (lo, _) in zip(grid, strides, tap, dilation, pads)]
        if circular:
            pos = [p % n for p, n in zip(pos, sizes)]
        inside = np.ones(out, bool)
        for p, n in zip(pos, sizes):
            inside &= (p >= 0) & (p < n)
        if not inside.any():
            continue
        rows = out_flat[inside] * c_out
        cols = np.ravel_multi_index(tuple(p[inside] for p in pos), sizes) * c_in
        for co in range(c_out):
            group = co // o_per_group
            for ci in range(c_in_g):
                matrix[rows + co, cols + group * c_in_g + ci] += kernel[tap + (ci, co)]
    return matrix


@dataclasses.dataclass(frozen=True)
class ConvMatrixStats:
    """What :func:`conv_matrix_stats` returns.

    Attributes:
      shape: ``(outputs, inputs)`` of the matrix.
      entries: ``outputs * inputs``.
      nonzeros: entries that are not 0 (connections actually present).
      sparsity: fraction of entries that are 0.
      distinct_values: distinct non-zero values (at most the kernel's size: every
        connection reuses one of the kernel's weights).
      uses_per_weight: ``nonzeros / distinct_values``, how often each weight is reused.
      conv_params: kernel size plus one bias per output channel (if ``bias``).
      dense_params: ``inputs * outputs`` plus one bias per output (if ``bias``), a
        fully connected layer of the same in/out size.
      sharing_ratio: ``dense_params / conv_params``.
    """

    shape: tuple[int, int]
    entries: int
    nonzeros: int
    sparsity: float
    distinct_values: int
    uses_per_weight: float
    conv_params: int
    dense_params: int
    sharing_ratio: float


def conv_matrix_stats(
    matrix: Any, kernel: Any, *, bias: bool = True, out_channels: int | None = None
) -> ConvMatrixStats:
    r"""Sparse connectivity and weight sharing of a convolution, read off its matrix.

    .. math::

        \text{sparsity} = \frac{\#\{M_{ij} = 0\}}{mn},\qquad
        \text{sharing ratio} = \frac{mn + m}{|w| + C_{out}}

    for ``M`` of shape ``(m, n)`` and a kernel of ``|w|`` weights (biases
    included when ``bias``).

    Args:
      matrix: ``(outputs, inputs)``, from :func:`conv_matrix`.
      kernel: the kernel the matrix was built from, any shape.
      bias: count one bias per output channel (conv) / per output (dense).
      out_channels: the conv's output channels for the bias count; default the
        kernel's last axis when it has rank >= 3 (``(*window, I, O)``), else 1.

    Returns:
      A :class:`ConvMatrixStats`.

    Example:
      >>> import numpy as np
      >>> from jaxcnn.analysis import conv_matrix, conv_matrix_stats
      >>> k = np.array([1., 2, 3])
      >>> s = conv_matrix_stats(conv_matrix(k, (5,), padding=1), k)
      >>> s.dense_params, s.conv_params, s.nonzeros
      (30, 4, 13)

    Reference: Goodfellow, Bengio & Courville, *Deep Learning*, 2016, sec. 9.2
    (sparse interactions and parameter sharing).
    """
    matrix = np.asarray(_validate.check_array(matrix, "matrix"))
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be 2-D (outputs, inputs), got shape {matrix.shape}")
    kernel = np.asarray(_validate.check_array(kernel, "kernel"))
    bias = _validate.check_bool(bias, "bias")
    if out_channels is None:
        out_channels = kernel.shape[-1] if kernel.ndim >= 3 else 1
    out_channels = _validate.as_int(out_channels, "out_channels")
    m, n = matrix.shape
    nonzero = matrix[matrix != 0]
    distinct = len(np.unique(nonzero))
    conv_params = kernel.size + (out_channels if bias else 0)
    dense_params = m * n + (m if bias else 0)
    return ConvMatrixStats(
        shape=(m, n),
        entries=m * n,
        nonzeros=int(nonzero.size),
        sparsity=1.0 - nonzero.size / (m * n),
        distinct_values=distinct,
        uses_per_weight=nonzero.size / distinct if distinct else 0.0,
        conv_params=int(conv_params),
        dense_params=int(dense_params),
        sharing_ratio=dense_params / conv_params,
    )
