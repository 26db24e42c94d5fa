"""Figures: first-layer filters and feature maps of a named layer (training curves: :mod:`jaxcnn._curves`).

Figures are built with ``matplotlib.figure.Figure`` directly, never through
``pyplot``: no display, no backend choice, no global list of open figures. Each
function returns the ``Figure`` and, given ``path``, writes a PNG there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from jaxcnn import _validate
from jaxcnn._curves import plot_curves, read_records
from jaxcnn._figures import grid, save

__all__ = ["plot_curves", "plot_feature_maps", "plot_filters", "read_records"]


def plot_filters(
    kernel: Any,
    path: Any = None,
    *,
    ncols: int | None = None,
    title: str | None = None,
    layer: str | None = None,
    scale: str = "filter",
    dpi: int = 100,
) -> Figure:
    r"""A grid of first-layer kernels, one tile per output channel, with a title and a colour scale.

    2-D kernels ``(kh, kw, C_in, C_out)`` are drawn as images: RGB when
    ``C_in = 3`` (AlexNet's 96 filters of 11x11x3), grey for ``C_in = 1``. With
    ``scale="filter"`` each filter is scaled to [0, 1] on its own,
    ``(w - min w) / (max w - min w)`` (a constant filter shows as mid-grey), and
    the colour bar reads in that scaled unit; with ``scale="shared"`` every tile
    uses one range ``[-m, m]``, ``m = max |w|``, and the colour bar reads in
    weight units (0 is mid-grey). 1-D kernels ``(k, C_in, C_out)`` are drawn as
    curves, one per input channel, against the tap index, on one y scale (the
    weight) shared by all tiles.

    Args:
      kernel: ``(kh, kw, C_in, C_out)`` with ``C_in`` 1 or 3 (for another
        ``C_in``, pick channels first, ``kernel[..., :1, :]``), or ``(k, C_in, C_out)``.
      path: where to write the PNG (parent folders are created); ``None``: don't.
      ncols: tiles per row; default ``ceil(sqrt(C_out))``.
      title: figure title; default ``"<layer>: C_out filters kh x kw x C_in"``.
      layer: the layer's name, for the default title (e.g. ``"conv1"``).
      scale: ``"filter"`` or ``"shared"`` (2-D kernels; see above).
      dpi: resolution of the PNG.

    Returns:
      The ``matplotlib.figure.Figure``: ``C_out`` tile axes, then (2-D kernels) the colour bar's axes.

    Example:
      >>> import numpy as np
      >>> from jaxcnn.analysis import plot_filters
      >>> len(plot_filters(np.random.randn(11, 11, 3, 96)).axes)  # 96 tiles and the colour bar
      97

    Reference: Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep
    Convolutional Neural Networks", NeurIPS 2012, fig. 3.
    """
    kernel = np.asarray(_validate.check_array(kernel, "kernel"), np.float64)
    if kernel.ndim not in (3, 4):
        raise ValueError(
            f"kernel must have shape (k, C_in, C_out) (a 1-D conv kernel, rank 3) or (kh, kw, C_in, C_out) "
            f"(a 2-D conv kernel, rank 4), got shape {kernel.shape} (rank {kernel.ndim})"
        )
    scale = _validate.check_choice(scale, "scale", ("filter", "shared"))
    *window, c_in, c_out = kernel.shape
    if min(kernel.shape) < 1 or (kernel.ndim == 4 and c_in not in (1, 3)):
        raise ValueError(
            f"kernel must have C_in = 1 (grey) or 3 (RGB) input channels, got shape {kernel.shape}; "
            f"select channels first, e.g. kernel[..., :1, :]"
        )
    if title is None:
        title = f"{layer + ': ' if layer else ''}{c_out} filters {'x'.join(map(str, window))}x{c_in}"
    nrows, ncols = grid(c_out, ncols)
    size = 1.4 if kernel.ndim == 3 else 0.9
    fig = Figure(figsize=(max(3.0, size * ncols + 1.0), max(2.4, size * nrows + 0.6)), layout="constrained")
    if kernel.ndim == 3:
        _filter_curves(fig, kernel, nrows, ncols)
    else:
        _filter_images(fig, kernel, nrows, ncols, scale)
    fig.suptitle(title)
    save(fig, path, dpi)
    return fig


def _filter_images(fig: Figure, kernel: np.ndarray, nrows: int, ncols: int, scale: str) -> None:
    """2-D kernels as image tiles, and one colour bar for all of them."""
    c_in, c_out = kernel.shape[-2:]
    m = float(np.max(np.abs(kernel))) or 1.0
    axes = []
    for o in range(c_out):
        tile = kernel[..., o]
        if scale == "shared":
            tile = (tile + m) / (2 * m)
        else:
            lo, hi = tile.min(), tile.max()
            tile = (tile - lo) / (hi - lo) if hi > lo else np.full_like(tile, 0.5)
        ax = fig.add_subplot(nrows, ncols, o + 1)
        if c_in == 3:
            ax.imshow(tile, interpolation="nearest")
        else:
            ax.imshow(tile[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_axis_off()
        axes.append(ax)
    if scale == "shared":  # the tiles show (w + m) / 2m: the bar reads in weight units
        bar = ScalarMappable(Normalize(-m, m), cmap="gray")
        label = "weight" if c_in == 1 else "weight (per colour channel)"
    else:
        bar = ScalarMappable(Normalize(0.0, 1.0), cmap="gray")
        label = "weight scaled per filter (0: its min, 1: its max)"
    fig.colorbar(bar, ax=axes, shrink=0.8, label=label)


def _filter_curves(fig: Figure, kernel: np.ndarray, nrows: int, ncols: int) -> None:
    """1-D kernels as curves: weight against tap, one line per input channel, one y scale for all."""
    k, c_in, c_out = kernel.shape
    lo, hi = float(kernel.min()), float(kernel.max())
    pad = 0.05 * (hi - lo) or 0.5
    for o in range(c_out):
        ax = fig.add_subplot(nrows, ncols, o + 1)
        for i in range(c_in):
            ax.plot(
                np.arange(k), kernel[:, i, o], marker="o" if k <= 16 else None, markersize=2, label=f"input channel {i}"
            )
        ax.set_ylim(lo - pad, hi + pad)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.axhline(0.0, color="0.7", linewidth=0.5)
        ax.set_title(f"filter {o}", fontsize="small")
        ax.tick_params(labelsize="x-small")
        if o % ncols == 0:
            ax.set_ylabel("weight", fontsize="small")
        if o >= c_out - ncols:
            ax.set_xlabel("tap", fontsize="small")
    if 1 < c_in <= 4:
        fig.axes[0].legend(fontsize="x-small")


def _intermediates(tree: Mapping, prefix: tuple = ()) -> dict[str, Any]:
    """``{"a/b": first output array}`` from a Flax ``intermediates`` collection."""
    found = {}
    for key, value in tree.items():
        if key == "__call__":
            leaves = [leaf for leaf in jax.tree_util.tree_leaves(value) if hasattr(leaf, "shape")]
            if leaves and prefix:
                found["/".join(prefix)] = leaves[0]
        elif isinstance(value, Mapping):
            found.update(_intermediates(value, prefix + (key,)))
    return found


def plot_feature_maps(
    model: Any,
    variables: Any,
    x: Any,
    layer: str,
    path: Any = None,
    *,
    max_maps: int = 64,
    ncols: int | None = None,
    dpi: int = 100,
    **call_kwargs: Any,
) -> Figure:
    """The feature maps one named layer produces for one input, one tile per channel.

    The model runs once with ``capture_intermediates=True``; the named layer's
    output ``(1, *spatial, C)`` is drawn channel by channel: 2-D maps as grey
    images (each scaled to its own range), 1-D maps as curves.

    Args:
      model: a ``flax.linen.Module``.
      variables: its variables (``{"params": ..., "batch_stats": ...}``).
      x: ONE input, ``(*spatial, C)`` without the batch axis.
      layer: the module path, ``"/"``-joined (``"Conv_0"``, ``"block1/conv2"``),
        as :func:`jaxcnn.analysis.summary` lists it.
      path: where to write the PNG; ``None``: don't.
      max_maps: draw at most this many channels (the first ones).
      ncols: tiles per row; default ``ceil(sqrt(maps))``.
      dpi: resolution of the PNG.
      **call_kwargs: passed to the model (``train=False``, ...).

    Returns:
      The ``Figure``, one axes per drawn channel.

    Raises:
      ValueError: unknown ``layer`` (the message lists the known ones), or a
        layer whose output has no spatial axes.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from jaxcnn.analysis import plot_feature_maps
      >>> m = nn.Sequential([nn.Conv(4, (3, 3)), nn.relu])
      >>> v = m.init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))
      >>> len(plot_feature_maps(m, v, jnp.ones((8, 8, 1)), "layers_0").axes)
      4

    Reference: Zeiler & Fergus, "Visualizing and Understanding Convolutional
    Networks", ECCV 2014.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a flax.linen.Module, got {_validate.fmt(model)}")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a module path string such as 'Conv_0', got {_validate.fmt(layer)}")
    max_maps = _validate.as_int(max_maps, "max_maps")
    if max_maps < 1:
        raise ValueError(f"max_maps must be >= 1, got {max_maps}")
    x = jnp.asarray(_validate.check_array(x, "x"))

    def forward(variables, x):
        return model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"], **call_kwargs)

    _, state = jax.jit(forward)(variables, x[None])
    outputs = _intermediates(state.get("intermediates", {}))
    if layer not in outputs:
        known = ", ".join(sorted(outputs)) or "none"
        raise ValueError(f"layer {layer!r} is not a module of this model; known layers: {known}")
    fmap = np.asarray(outputs[layer], np.float64)[0]
    if fmap.ndim not in (2, 3):
        raise ValueError(
            f"layer {layer!r} outputs shape {fmap.shape} per example; feature maps need (L, C) or (H, W, C)"
        )
    n = min(fmap.shape[-1], max_maps)
    nrows, ncols = grid(n, ncols)
    fig = Figure(figsize=(max(2.0, 1.2 * ncols), max(2.0, 1.2 * nrows + 0.4)))
    for c in range(n):
        ax = fig.add_subplot(nrows, ncols, c + 1)
        if fmap.ndim == 3:
            ax.imshow(fmap[..., c], cmap="gray", interpolation="nearest")
            ax.set_axis_off()
        else:
            ax.plot(fmap[:, c])
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{layer}: {'x'.join(map(str, fmap.shape))}")
    save(fig, path, dpi)
    return fig
