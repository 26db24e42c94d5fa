"""Convolution and transposed convolution for 1, 2 and 3 spatial dims, channels-last."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax

from jaxcnn import _validate
from jaxcnn.functional._conv_cpu import conv_cpu
from jaxcnn.functional._conv_depthwise import depthwise_conv
from jaxcnn.functional._conv_transpose_cpu import conv_transpose_subpixel
from jaxcnn.functional._geometry import dimension_numbers
from jaxcnn.functional._unbatched import kernel_pins_rank
from jaxcnn.functional.cpu_rules import (  # noqa: F401 - re-exported: the public names live here too
    ALGORITHMS,
    TRANSPOSE_ALGORITHMS,
    check_algorithm,
    check_transpose_algorithm,
    choose_algorithm,
    choose_transpose_algorithm,
    cpu_compiler_options,
    default_conv_algorithm,
    fits,
)

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _check_conv_shapes(x, kernel, bias, groups: int, *, x_name: str, c_in_axis: int) -> int:
    """Shared shape checks of conv and conv_transpose; returns the number of spatial dims.

    ``c_in_axis`` is the kernel axis that must equal ``x``'s channels: ``-2`` (I,
    times ``groups``) for conv, ``-1`` (O) for conv_transpose.
    """
    x, nd = _validate.spatial_input(x, x_name)
    kernel = _validate.check_array(kernel, "kernel")
    if kernel.ndim != x.ndim:
        raise ValueError(
            f"kernel must have shape (*window, C_in // groups, C_out) with {nd} window dims "
            f"to match {x_name} of shape {tuple(x.shape)}, got kernel shape {tuple(kernel.shape)}"
        )
    _validate.check_floating(x, x_name)
    _validate.check_floating(kernel, "kernel")
    if any(k < 1 for k in kernel.shape):
        raise ValueError(f"kernel must have no zero-sized axis, got shape {tuple(kernel.shape)}")
    k_in, k_out = kernel.shape[-2], kernel.shape[-1]
    c = x.shape[-1]
    if c_in_axis == -2:
        c_in, c_out = c, k_out
        if c_in % groups:
            raise ValueError(f"groups={groups} must divide the input channels C_in={c_in} of {x_name}")
        if k_in * groups != c_in:
            raise ValueError(
                f"kernel has {k_in} input channels per group (shape {tuple(kernel.shape)}); with "
                f"groups={groups} that needs C_in = {k_in * groups}, but {x_name} has C_in = {c_in} "
                f"(shape {tuple(x.shape)})"
            )
    else:
        c_in, c_out = k_in * groups, k_out
        if k_out != c:
            raise ValueError(
                f"{x_name} has {c} channels (shape {tuple(x.shape)}) but the kernel's C_out is "
                f"{k_out} (kernel shape {tuple(kernel.shape)}); conv_transpose maps C_out "
                f"channels back to C_in"
            )
    if c_out % groups:
        raise ValueError(f"groups={groups} must divide the output channels C_out={c_out} of the kernel")
    out_channels = c_out if c_in_axis == -2 else c_in
    _validate.check_vector(bias, out_channels, "bias", "C_out" if c_in_axis == -2 else "C_in")
    return nd


def _promote(*arrays):
    dtype = jnp.result_type(*[a for a in arrays if a is not None])
    return [None if a is None else jnp.asarray(a, dtype) for a in arrays]


def _add_bias(y, bias):
    return y if bias is None else y + _validate.channel_vector(bias, y.ndim)


@kernel_pins_rank  # unbatched (*spatial, C) input, one rank short of the kernel
def conv(
    x: Any,
    kernel: Any,
    bias: Any = None,
    *,
    strides: Any = 1,
    padding: _validate.PaddingLike = "SAME",
    dilation: Any = 1,
    groups: int = 1,
    flip: bool = False,
    padding_mode: str = "zeros",
    precision: Any = None,
    algorithm: str | None = None,
) -> jnp.ndarray:
    r"""N-d convolution (cross-correlation by default), channels-last.

    .. math::

        y[n, \mathbf{o}, c_o] = b[c_o] + \sum_{\mathbf{k}} \sum_{c_i \in g(c_o)}
            x_p[n, \mathbf{s} \odot \mathbf{o} + \mathbf{d} \odot \mathbf{k}, c_i]\,
            w[\mathbf{k}, c_i \bmod (C_{in}/G), c_o]

    where ``x_p`` is ``x`` padded as ``padding``/``padding_mode`` say and ``g(c_o)``
    is the input-channel group of output channel ``c_o``. With ``flip=True`` the
    kernel is reversed along every spatial axis first, which makes this a true
    convolution (``scipy.signal.convolve``); the default, like every deep-learning
    library, is cross-correlation (``scipy.signal.correlate``).

    Output size per spatial dim: ``floor((n + lo + hi - k_eff) / s) + 1`` with
    ``k_eff = (k - 1) * d + 1``; "VALID" gives ``floor((n - k_eff) / s) + 1``,
    "SAME" ``ceil(n / s)``, "FULL" ``n + k_eff - 1`` (stride 1), "CAUSAL" ``n``
    (stride 1, output at t depends only on inputs at positions <= t).

    Args:
      x: input ``(N, *spatial, C_in)`` with 1, 2 or 3 spatial dims, or unbatched ``(*spatial, C_in)``.
      kernel: ``(*window, C_in // groups, C_out)`` ("HWIO").
      bias: optional ``(C_out,)``.
      strides: int or one int per spatial dim, >= 1.
      padding: "VALID", "SAME", "FULL", "CAUSAL" (any case), an int, one int per
        spatial dim, or one ``(low, high)`` pair per spatial dim.
      dilation: kernel (atrous) dilation, int or one per spatial dim, >= 1.
      groups: number of channel groups; ``groups == C_in`` with
        ``C_out = m * C_in`` is a depthwise convolution.
      flip: reverse the kernel spatially (true convolution).
      padding_mode: what the padding holds: "zeros", "reflect" (mirror without
        repeating the edge), "replicate" (repeat the edge) or "circular" (wrap
        around), as PyTorch's ``padding_mode``.
      precision: passed to :func:`jax.lax.conv_general_dilated` (the "taps"
        forward computes in float32 for float32 and narrower inputs, i.e. at
        the highest precision, whatever this says).
      algorithm: how to compute it: "xla" (``lax.conv_general_dilated`` and
        JAX's derivatives of it), "taps" (a fused sum over kernel taps; XLA's
        derivatives, in batch chunks), "chunked" (XLA's forward; its
        derivatives in batch chunks) -- the last two ``groups=1`` only, see
        :mod:`jaxcnn.functional._conv_cpu` --, "depthwise" (``groups ==
        C_in`` only: a sum over taps vectorized over channels, see
        :mod:`jaxcnn.functional._conv_depthwise`) or ``None`` (default): the
        measured rule of :func:`jaxcnn.functional.cpu_rules.choose_algorithm`. All give the same numbers up
        to float rounding, and all work with ``grad``, ``jvp`` and ``vmap``;
        only the speed differs.

    Returns:
      ``(N, *out_spatial, C_out)``, in the promoted dtype of ``x`` and ``kernel``.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> x = jnp.array([0., 0, 1, 1, 1]).reshape(1, 5, 1)      # a step
      >>> F.conv(x, jnp.array([-1., 1]).reshape(2, 1, 1), padding="VALID")[0, :, 0]
      Array([0., 1., 0., 0.], dtype=float32)

    Reference: Goodfellow, Bengio & Courville, *Deep Learning*, 2016, ch. 9.1-9.5.
    """
    groups = _validate.as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    nd = _check_conv_shapes(x, kernel, bias, groups, x_name="x", c_in_axis=-2)
    x, kernel = _validate.check_array(x, "x"), _validate.check_array(kernel, "kernel")
    strides = _validate.tuple_arg(strides, nd, "strides")
    dilation = _validate.tuple_arg(dilation, nd, "dilation")
    flip = _validate.check_bool(flip, "flip")
    precision = _validate.check_precision(precision)
    padding_mode = _validate.check_choice(padding_mode, "padding_mode", PADDING_MODES)
    window = tuple(kernel.shape[:nd])
    k_eff = _validate.effective_size(window, dilation)
    sizes = tuple(x.shape[1:-1])
    pads = _validate.padding_pairs(padding, sizes, k_eff, strides)
    _validate.check_pad_fits(sizes, pads, k_eff, what=f"kernel of window {window} with dilation {dilation}")

    x, kernel, bias = _promote(x, kernel, bias)
    if flip:
        kernel = jnp.flip(kernel, axis=tuple(range(nd)))
    if padding_mode != "zeros":
        x = pad_input(x, pads, padding_mode)
        pads = ((0, 0),) * nd
    algorithm = check_algorithm(algorithm)
    if algorithm is not None and not fits(algorithm, x.shape[-1], groups):
        need = "groups == C_in" if algorithm == "depthwise" else "groups=1 only"
        raise ValueError(f"algorithm={algorithm!r} supports {need}, got groups={groups} with C_in={x.shape[-1]}")
    if algorithm is None:
        algorithm = choose_algorithm(x.shape, kernel.shape, strides, groups)
    if algorithm == "depthwise":
        return _add_bias(depthwise_conv(x, kernel, strides, pads, dilation), bias)
    if algorithm != "xla":
        forward = "taps" if algorithm == "taps" else "xla"
        return _add_bias(conv_cpu(x, kernel, strides, pads, dilation, precision, forward), bias)
    y = lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=pads,
        rhs_dilation=dilation,
        dimension_numbers=dimension_numbers(nd),
        feature_group_count=groups,
        precision=precision,
    )
    return _add_bias(y, bias)


def pad_input(x: Any, pads: tuple[tuple[int, int], ...], mode: str) -> jnp.ndarray:
    """Pad the spatial axes of ``(N, *spatial, C)`` with PyTorch's non-zero padding modes.

    ``mode``: "reflect" needs every pad < the input size, "circular" every pad <=
    the input size (as PyTorch); "replicate" accepts any pad.
    """
    sizes = x.shape[1:-1]
    for i, (n, (lo, hi)) in enumerate(zip(sizes, pads)):
        if mode == "reflect" and max(lo, hi) >= n:
            raise ValueError(
                f"padding_mode='reflect' needs padding < input size in every spatial dim; "
                f"dim {i} has size {n} and padding ({lo}, {hi})"
            )
        if mode == "circular" and max(lo, hi) > n:
            raise ValueError(
                f"padding_mode='circular' needs padding <= input size in every spatial dim; "
                f"dim {i} has size {n} and padding ({lo}, {hi})"
            )
    return jnp.pad(x, ((0, 0), *pads, (0, 0)), mode=_NUMPY_PAD_MODE[mode])


@kernel_pins_rank
def conv_transpose(
    y: Any,
    kernel: Any,
    bias: Any = None,
    *,
    strides: Any = 1,
    padding: _validate.PaddingLike = 0,
    output_padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    algorithm: str | None = None,
) -> jnp.ndarray:
    r"""Transposed convolution: the adjoint (VJP) of :func:`conv` with the same kernel.

    For a linear map ``x -> conv(x, w)`` with matrix ``M``, this computes
    ``M^T y``: every input value of ``y`` scatters ``w`` (scaled by it) into the
    output at stride ``s``, and the padding is then cropped. It is what the
    backward pass of a convolution does to the output gradient, and the
    "deconvolution" of decoder and GAN generators.

    Output size per spatial dim, as PyTorch's ``conv_transpose{1,2,3}d``::

        (n - 1) * s - lo - hi + d * (k - 1) + output_padding + 1

    Args:
      y: ``(N, *spatial, C_out)``, or unbatched ``(*spatial, C_out)``.
      kernel: laid out as for the forward conv, ``(*window, C_in // groups, C_out)``.
        PyTorch's ``ConvTransposeNd.weight`` is the same tensor as
        ``(C_out, C_in // groups, *window)`` (PyTorch calls our ``C_out`` its
        ``in_channels``): move its first two axes to the end in reverse order,
        ``weight.permute(2, 3, 1, 0)`` in 2D.
      bias: optional ``(C_in,)``, added to the result.
      strides: the forward conv's stride (here an input dilation), int or per dim.
      padding: the forward conv's padding, cropped from the result: an int, one
        int per spatial dim, ``(low, high)`` pairs, or "VALID" / "FULL" /
        "CAUSAL" / "SAME" (the adjoint of a SAME conv on an input of ``n * s``,
        so the output is ``n * s`` plus ``output_padding``).
      output_padding: extra size added at the high end of each spatial dim, to
        pick one of the ``s`` input sizes that a strided conv maps to the same
        output size; must be smaller than the stride or the dilation.
      dilation: kernel dilation, int or per dim.
      groups: channel groups, as for :func:`conv`.
      algorithm: how to compute it: "xla" (one ``lax.conv_general_dilated`` of
        ``y`` dilated by the stride), "subpixel" (``dilation == 1`` only: one
        stride-1 convolution with the stride-phase sub-kernels, then
        depth-to-space, see :mod:`jaxcnn.functional._conv_transpose_cpu`) or
        ``None`` (default): the rule of
        :func:`jaxcnn.functional.cpu_rules.choose_transpose_algorithm`
        ("subpixel" on CPU for strides > 1). Both give the same numbers up to
        float rounding and work with ``grad``, ``jvp`` and ``vmap``.

    Returns:
      ``(N, *out_spatial, C_in)``.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcnn.functional as F
      >>> w = jnp.ones((3, 3, 2, 4)); y = jnp.ones((1, 5, 5, 4))
      >>> F.conv_transpose(y, w, strides=2, padding=1, output_padding=1).shape
      (1, 10, 10, 2)

    Reference: Dumoulin & Visin, "A guide to convolution arithmetic for deep
    learning", 2016, sec. 4.
    """
    groups = _validate.as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    algorithm = check_transpose_algorithm(algorithm)
    nd = _check_conv_shapes(y, kernel, bias, groups, x_name="y", c_in_axis=-1)
    y, kernel = _validate.check_array(y, "y"), _validate.check_array(kernel, "kernel")
    strides = _validate.tuple_arg(strides, nd, "strides")
    dilation = _validate.tuple_arg(dilation, nd, "dilation")
    output_padding = _validate.tuple_arg(output_padding, nd, "output_padding", minimum=0)
    for i, (op, s, d) in enumerate(zip(output_padding, strides, dilation)):
        if op >= max(s, d):
            raise ValueError(
                f"output_padding must be smaller than the stride or the dilation in every "
                f"spatial dim; dim {i} has output_padding={op}, stride={s}, dilation={d}"
            )
    window = tuple(kernel.shape[:nd])
    k_eff = _validate.effective_size(window, dilation)
    sizes = tuple(y.shape[1:-1])
    forward_sizes = tuple(n * s for n, s in zip(sizes, strides))  # only "SAME" reads it
    pads = _validate.padding_pairs(padding, forward_sizes, k_eff, strides)
    extra = list(output_padding)
    if isinstance(padding, str) and padding.upper() == "SAME":
        for i, ((lo, hi), k, s) in enumerate(zip(pads, k_eff, strides)):
            extra[i] += s - k + lo + hi  # lifts the size to n * s when k_eff < s
    out_sizes = [(n - 1) * s - lo - hi + k + e for n, s, (lo, hi), k, e in zip(sizes, strides, pads, k_eff, extra)]
    if any(o < 1 for o in out_sizes):
        raise ValueError(
            f"conv_transpose output size would be {tuple(out_sizes)} for y of spatial shape "
            f"{sizes} with padding {pads}; the padding crops more than the output has"
        )

    if algorithm == "subpixel" and max(dilation) > 1:
        raise ValueError(f"algorithm='subpixel' supports dilation 1 only, got dilation={dilation}")
    if algorithm is None:
        algorithm = choose_transpose_algorithm(strides, dilation)

    y, kernel, bias = _promote(y, kernel, bias)
    if algorithm == "subpixel":
        return _add_bias(conv_transpose_subpixel(y, kernel, strides, pads, tuple(extra), groups), bias)
    # The adjoint as a forward conv: dilate y by the stride, pad by k_eff - 1 - pad,
    # and correlate with the spatially flipped kernel whose I and O swap within groups.
    c_in_g, c_out = kernel.shape[-2], kernel.shape[-1]
    flipped = jnp.flip(kernel, axis=tuple(range(nd)))
    flipped = flipped.reshape(window + (c_in_g, groups, c_out // groups))
    flipped = jnp.swapaxes(flipped, -1, -3).reshape(window + (c_out // groups, groups * c_in_g))
    lax_pads = [(kk - 1 - lo, kk - 1 - hi + e) for (lo, hi), kk, e in zip(pads, k_eff, extra)]
    x = lax.conv_general_dilated(
        y,
        flipped,
        window_strides=(1,) * nd,
        padding=[(max(0, lo), max(0, hi)) for lo, hi in lax_pads],
        lhs_dilation=strides,
        rhs_dilation=dilation,
        dimension_numbers=dimension_numbers(nd),
        feature_group_count=groups,
    )
    # A padding > k_eff - 1 crops: afterwards, as XLA:CPU's convolution returns garbage for negative padding.
    start = (0, *(max(0, -lo) for lo, _ in lax_pads), 0)
    limit = (x.shape[0], *(n - max(0, -hi) for n, (_, hi) in zip(x.shape[1:-1], lax_pads)), x.shape[-1])
    x = lax.slice(x, start, limit)
    return _add_bias(x, bias)
