r"""The receptive-field recurrences: one window (conv or pooling) at a time, and a chain given on paper.

For a layer of effective kernel size ``k_eff = (k - 1) * d + 1``, stride ``s``
and low padding ``p_lo``:

.. math::

    r_{out} = r_{in} + (k_{eff} - 1)\, j_{in}, \qquad
    j_{out} = j_{in}\, s, \qquad
    \text{start}_{out} = \text{start}_{in} + \left(\tfrac{k_{eff} - 1}{2} - p_{lo}\right) j_{in}

(Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019). A field is kept as one :class:`Dim` per input spatial
dim: element ``p`` along ``axis`` sees inputs ``[lo + p * jump, hi + p * jump]``,
so ``r = hi - lo + 1``, ``j = jump`` and ``start = (lo + hi) / 2``.
:mod:`jaxcnn.analysis.field_rules` applies :func:`step` at every window of a
traced jaxpr; :func:`chain_receptive_field` applies it to a list of layers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

from jaxcnn import _validate
from jaxcnn.analysis._inputs import per_example_shape


class Dim(NamedTuple):
    """The field along one input spatial dim of every element of a tensor.

    Element at position ``p`` along ``axis`` sees input positions
    ``[lo + p * jump, hi + p * jump]``. ``axis=None``: the same interval
    ``[lo, hi]`` for every element (the spatial axis was reduced or mixed).
    """

    axis: int | None
    lo: int
    hi: int
    jump: int


#: One :class:`Dim` per input spatial dim (``None`` where a tensor does not depend on x).
Field = tuple


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One conv or pooling layer of a chain, as a paper's architecture table gives it.

    Attributes:
      window: kernel/window size, int or one per spatial dim.
      strides: int or one per spatial dim.
      dilation: int or one per spatial dim.
      padding: any padding spec of :func:`jaxcnn.functional.conv`.
      name: a label for the table.
    """

    window: Any
    strides: Any = 1
    dilation: Any = 1
    padding: _validate.PaddingLike = "VALID"
    name: str = ""


@dataclasses.dataclass(frozen=True)
class FieldLayer:
    """One row of the analytic table: a conv or pooling layer and the field of its outputs.

    Attributes:
      name: the layer's name scope (Flax module path) or ``kind`` plus a counter.
      kind: ``"conv"``, ``"max_pool"``, ``"avg_pool"`` (a window sum), ``"min_pool"``,
        ``"pool"`` (another reduction) or ``"layer"`` (a :class:`LayerSpec`).
      window, strides, dilation: per spatial dim.
      padding: the resolved ``(low, high)`` pairs, per spatial dim.
      output_shape: spatial size of the layer's output.
      size: receptive-field size ``r`` per input spatial dim, unclipped.
      jump: cumulative stride ``j`` per input spatial dim.
      start: centre of the first output's field, in input coordinates (may be
        negative: the field hangs into the padding).
    """

    name: str
    kind: str
    window: tuple
    strides: tuple
    dilation: tuple
    padding: tuple
    output_shape: tuple
    size: tuple
    jump: tuple
    start: tuple


def step(dim: Dim, k_eff: int, stride: int, pad_lo: int, axis: int | None) -> Dim:
    r"""The recurrence for one window: output ``o`` reads inputs ``o*s - pad_lo + [0, k_eff - 1]``.

    .. math::

        lo_{out} = lo_{in} - p_{lo} j_{in},\quad hi_{out} = hi_{in} + (k_{eff} - 1 - p_{lo}) j_{in},
        \quad j_{out} = j_{in} s

    Args:
      dim: the field of the window's input along one spatial dim.
      k_eff: effective window size ``(k - 1) * d + 1``.
      stride: the window's stride ``s``.
      pad_lo: the padding before the first input, ``p_lo``.
      axis: the output axis that carries this dim.

    Returns:
      The field of the window's output (unchanged if ``dim.axis`` is ``None``).
    """
    if dim.axis is None:
        return dim
    return Dim(axis, dim.lo - pad_lo * dim.jump, dim.hi + (k_eff - 1 - pad_lo) * dim.jump, dim.jump * stride)


def collapse(dim: Dim, extent: int) -> Dim:
    r"""Union of the fields of all ``extent`` positions along ``dim.axis`` (a reduced or mixed axis).

    .. math::

        [lo, hi] \cup [lo + (n - 1) j, hi + (n - 1) j]

    Args:
      dim: the field along the axis.
      extent: the axis' size ``n``.

    Returns:
      A :class:`Dim` with ``axis=None``: the same interval for every element.
    """
    if dim.axis is None:
        return dim
    span = (extent - 1) * dim.jump
    return Dim(None, dim.lo + min(0, span), dim.hi + max(0, span), 0)


def layer_row(name, kind, window, strides, dilation, pads, out_sizes, dims) -> FieldLayer:
    """The table row of one window: its geometry and ``r = hi - lo + 1``, ``j``, ``start = (lo + hi) / 2``.

    Args:
      name, kind: labels of the row.
      window, strides, dilation, pads, out_sizes: per spatial dim of the window.
      dims: the :class:`Dim` fields of the window's output.

    Returns:
      A :class:`FieldLayer`.
    """
    return FieldLayer(
        name=name,
        kind=kind,
        window=tuple(window),
        strides=tuple(strides),
        dilation=tuple(dilation),
        padding=tuple(pads),
        output_shape=tuple(out_sizes),
        size=tuple(d.hi - d.lo + 1 for d in dims),
        jump=tuple(d.jump for d in dims),
        start=tuple((d.lo + d.hi) / 2 for d in dims),
    )


def chain_receptive_field(layers: Sequence[Any], input_shape: Sequence[int]) -> list[FieldLayer]:
    r"""The recurrences over a chain of layers given on paper (no model needed).

    .. math::

        r_{l} = r_{l-1} + (k_{eff,l} - 1) j_{l-1},\quad j_l = j_{l-1} s_l,\quad
        \text{start}_l = \text{start}_{l-1} + \left(\tfrac{k_{eff,l}-1}{2} - p_{lo,l}\right) j_{l-1}

    with ``r_0 = 1, j_0 = 1, start_0 = 0``. Each padding spec is resolved by
    ``jaxcnn._validate.padding_pairs`` against the size the layer sees.

    Args:
      layers: :class:`LayerSpec` objects (or dicts with the same keys).
      input_shape: one example, ``(*spatial, C)``.

    Returns:
      One :class:`FieldLayer` per layer.

    Example:
      >>> from jaxcnn.analysis import LayerSpec, chain_receptive_field
      >>> rows = chain_receptive_field([LayerSpec(3), LayerSpec(3, strides=2)], (32, 1))
      >>> [(r.size, r.jump) for r in rows]
      [((3,), (1,)), ((5,), (2,))]

    Reference: Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional
    Neural Networks", Distill, 2019, eq. (1)-(3).
    """
    shape = per_example_shape(input_shape)
    sizes = shape[:-1]
    nd = len(sizes)
    if nd not in _validate.SPATIAL_DIMS:
        raise ValueError(f"input_shape must be (*spatial, C) with 1, 2 or 3 spatial dims, got {shape}")
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
        raise TypeError(f"layers must be a non-empty sequence of LayerSpec, got {_validate.fmt(layers)}")
    dims = tuple(Dim(i, 0, 0, 1) for i in range(nd))
    rows = []
    for i, spec in enumerate(layers):
        if isinstance(spec, dict):
            spec = LayerSpec(**spec)
        if not isinstance(spec, LayerSpec):
            raise TypeError(f"layers[{i}] must be a LayerSpec or a dict of its fields, got {_validate.fmt(spec)}")
        window = _validate.tuple_arg(spec.window, nd, f"layers[{i}].window")
        strides = _validate.tuple_arg(spec.strides, nd, f"layers[{i}].strides")
        dilation = _validate.tuple_arg(spec.dilation, nd, f"layers[{i}].dilation")
        k_eff = _validate.effective_size(window, dilation)
        pads = _validate.padding_pairs(spec.padding, sizes, k_eff, strides, name=f"layers[{i}].padding")
        _validate.check_pad_fits(sizes, pads, k_eff, what=f"layers[{i}] window {window}")
        sizes = tuple(_validate.out_size(n, p, k, s) for n, p, k, s in zip(sizes, pads, k_eff, strides))
        dims = tuple(step(d, k, s, p[0], d.axis) for d, k, s, p in zip(dims, k_eff, strides, pads))
        rows.append(layer_row(spec.name or f"layer{i}", "layer", window, strides, dilation, pads, sizes, dims))
    return rows


def last_field(row: FieldLayer) -> Field:
    """The field of the outputs of a chain's last row, as :class:`Dim` per spatial dim (batch axis 0 first).

    Args:
      row: the last :class:`FieldLayer` of :func:`chain_receptive_field`.

    Returns:
      One :class:`Dim` per spatial dim, ``axis = 1 + d`` (the output is ``(N, *spatial, C)``).
    """
    return tuple(
        Dim(1 + d, round(c - (r - 1) / 2), round(c + (r - 1) / 2), j)
        for d, (c, r, j) in enumerate(zip(row.start, row.size, row.jump))
    )
