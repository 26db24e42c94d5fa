r"""Receptive fields: analytic (the recurrences, read off the jaxpr) and measured (gradients).

The analytic field follows the standard recurrences for a layer of effective
kernel size ``k_eff = (k - 1) * d + 1``, stride ``s`` and low padding ``p_lo``:

.. math::

    r_{out} = r_{in} + (k_{eff} - 1)\, j_{in}, \qquad
    j_{out} = j_{in}\, s, \qquad
    \text{start}_{out} = \text{start}_{in} + \left(\tfrac{k_{eff} - 1}{2} - p_{lo}\right) j_{in}

(Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019). Here they are applied to every convolution and pooling
window of the traced function's jaxpr, so any function of ``x`` and any Flax
module work, and branches (residual connections) are handled by taking the union
of the fields where paths join.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.analysis import _jaxpr
from jaxcnn.analysis.summary import _default_rngs, _per_example_shape
from jaxcnn import _validate
from jaxcnn.functional.conv import default_conv_algorithm


class _Dim(NamedTuple):
    """The field along one input spatial dim of every element of a tensor.

    Element at position ``p`` along ``axis`` sees input positions
    ``[lo + p * jump, hi + p * jump]``. ``axis=None``: the same interval
    ``[lo, hi]`` for every element (the spatial axis was reduced or mixed).
    """

    axis: int | None
    lo: int
    hi: int
    jump: int


Field = tuple  # one _Dim per input spatial dim, or None for "does not depend on x"


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


def _step(dim: _Dim, k_eff: int, stride: int, pad_lo: int, axis: int | None) -> _Dim:
    """The recurrence for one window: output ``o`` reads inputs ``o*s - pad_lo + [0, k_eff - 1]``."""
    if dim.axis is None:
        return dim
    return _Dim(axis, dim.lo - pad_lo * dim.jump, dim.hi + (k_eff - 1 - pad_lo) * dim.jump, dim.jump * stride)


def _collapse(dim: _Dim, extent: int) -> _Dim:
    """Union of the fields of all ``extent`` positions along ``dim.axis``."""
    if dim.axis is None:
        return dim
    span = (extent - 1) * dim.jump
    return _Dim(None, dim.lo + min(0, span), dim.hi + max(0, span), 0)


def _layer_row(name, kind, window, strides, dilation, pads, out_sizes, dims) -> FieldLayer:
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
    ``jaxcnn.functional._validate.padding_pairs`` against the size the layer sees.

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
    shape = _per_example_shape(input_shape)
    sizes = shape[:-1]
    nd = len(sizes)
    if nd not in _validate.SPATIAL_DIMS:
        raise ValueError(f"input_shape must be (*spatial, C) with 1, 2 or 3 spatial dims, got {shape}")
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
        raise TypeError(f"layers must be a non-empty sequence of LayerSpec, got {_validate.fmt(layers)}")
    dims = tuple(_Dim(i, 0, 0, 1) for i in range(nd))
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
        dims = tuple(_step(d, k, s, p[0], d.axis) for d, k, s, p in zip(dims, k_eff, strides, pads))
        rows.append(_layer_row(spec.name or f"layer{i}", "layer", window, strides, dilation, pads, sizes, dims))
    return rows


class _Unsupported(ValueError):
    pass


def _unsupported(eqn, why: str = "") -> _Unsupported:
    return _Unsupported(
        f"receptive_field: cannot follow the analytic field through the primitive "
        f"'{eqn.primitive.name}' applied to a tensor that depends on the input"
        f"{' (' + why + ')' if why else ''}; only convolutions (without input dilation), pooling "
        f"windows, elementwise ops, matrix products, reductions, reshapes, pads and slices are "
        f"followed. Use the measured field (measure=True) for this model."
    )


def _union(fields: list, shapes: list, eqn) -> Field:
    """The field of an element that depends on all of ``fields`` (same-shaped operands)."""
    present = [(f, s) for f, s in zip(fields, shapes) if f is not None]
    if not present:
        return None
    nd = len(present[0][0])
    dims = []
    for d in range(nd):
        ds = [f[d] for f, _ in present]
        axes = {x.axis for x in ds}
        if len(axes) > 1:
            ds = [_collapse(x, s[x.axis]) if x.axis is not None else x for x, (_, s) in zip(ds, present)]
        elif None not in axes and len({x.jump for x in ds}) > 1:
            raise _unsupported(eqn, f"branches with different strides {sorted({x.jump for x in ds})} meet")
        dims.append(_Dim(ds[0].axis, min(x.lo for x in ds), max(x.hi for x in ds), ds[0].jump))
    return tuple(dims)


def _remap(field: Field, shape: tuple, axis_map: Callable[[int], int | None]) -> Field:
    """Move each field axis to ``axis_map(axis)``; ``None`` collapses it."""
    if field is None:
        return None
    out = []
    for d in field:
        if d.axis is None:
            out.append(d)
            continue
        new = axis_map(d.axis)
        out.append(_collapse(d, shape[d.axis]) if new is None else d._replace(axis=new))
    return tuple(out)


_ORDER_SENSITIVE = ("rev", "sort", "cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp", "argsort", "top_k")
_REDUCTIONS = ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or", "reduce_xor")
_REDUCTIONS += ("argmax", "argmin")
_WINDOW_KIND = {
    "reduce_window_max": "max_pool",
    "reduce_window_min": "min_pool",
    "reduce_window_sum": "avg_pool",
    "reduce_window": "pool",
}


class _Tracer:
    """Propagates fields through a jaxpr and records one row per conv/pool window."""

    def __init__(self, strip: str | None):
        self.rows: list[FieldLayer] = []
        self.strip = strip

    def label(self, names: tuple, kind: str) -> str:
        names = list(names)
        if names and names[0] == self.strip:
            names = names[1:]
        return "/".join(names) or f"{kind}{sum(r.kind == kind for r in self.rows)}"

    def run(self, jaxpr, fields_in: list, outer: tuple = ()) -> list:
        env: dict = {}

        def read(v):
            return None if _jaxpr.is_literal(v) else env.get(v)

        for v, f in zip(jaxpr.invars, fields_in):
            env[v] = f
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            if all(f is None for f in ins):
                continue
            names = outer + tuple(_jaxpr.scope_names(eqn))
            outs = self.eqn(eqn, ins, names)
            for v, f in zip(eqn.outvars, outs):
                env[v] = f
        return [read(v) for v in jaxpr.outvars]

    def window_op(self, eqn, field, names, kind, window, strides, dilation, pads, axes, out_shape):
        """Apply the recurrence along the spatial ``axes`` of a window op (conv or pooling)."""
        in_shape = eqn.invars[0].aval.shape
        sizes = [in_shape[a] for a in axes]
        k_eff = _validate.effective_size(window, dilation)
        if all(lo >= 0 and hi >= 0 for lo, hi in pads):  # the one padding rule, as conv/pool use it
            pads = _validate.padding_pairs(tuple(pads), sizes, k_eff, strides)
        dims = []
        for d in field:
            if d.axis in axes:
                i = axes.index(d.axis)
                dims.append(_step(d, k_eff[i], strides[i], pads[i][0], d.axis))
            else:
                dims.append(d)
        row_dims = [dims[i] for i, d in enumerate(field) if d.axis in axes] or dims
        out_sizes = [out_shape[a] for a in axes]
        name = self.label(names, kind)
        self.rows.append(_layer_row(name, kind, window, strides, dilation, pads, out_sizes, row_dims))
        return tuple(dims)

    def eqn(self, eqn, ins, names) -> list:
        prim = eqn.primitive.name
        p = eqn.params
        out_shapes = [v.aval.shape for v in eqn.outvars]
        in_shapes = [getattr(v.aval, "shape", ()) for v in eqn.invars]

        if prim == "conv_general_dilated":
            if ins[1] is not None:
                raise _unsupported(eqn, "the kernel depends on the input")
            if any(d != 1 for d in p["lhs_dilation"]):
                raise _unsupported(eqn, "a transposed convolution (input dilation) has no affine field")
            dn = p["dimension_numbers"]
            lhs_sp, out_sp = list(dn.lhs_spec[2:]), list(dn.out_spec[2:])
            window = [in_shapes[1][a] for a in dn.rhs_spec[2:]]
            batch_in, batch_out = dn.lhs_spec[0], dn.out_spec[0]
            # spatial axes keep their lhs index until the recurrence ran; features mix: collapse
            field = _remap(ins[0], in_shapes[0], lambda a: a if a in lhs_sp else (batch_out if a == batch_in else None))
            field = self.window_op(
                eqn, field, names, "conv", window, p["window_strides"], p["rhs_dilation"], p["padding"], lhs_sp,
                out_shapes[0],
            )
            return [tuple(d._replace(axis=out_sp[lhs_sp.index(d.axis)]) if d.axis in lhs_sp else d for d in field)]

        if prim in _WINDOW_KIND:
            n_ops = len(eqn.outvars)
            if any(f is not None for f in ins[n_ops:]):
                raise _unsupported(eqn, "the initial value depends on the input")
            if any(b != 1 for b in p["base_dilation"]):
                raise _unsupported(eqn, "base dilation")
            outs = []
            for f, shape in zip(ins[:n_ops], out_shapes):
                if f is None:
                    outs.append(None)
                    continue
                axes = sorted({d.axis for d in f if d.axis is not None})
                keys = ("window_dimensions", "window_strides", "window_dilation", "padding")
                window, strides, dilation, pads = ([p[key][a] for a in axes] for key in keys)
                kind = _WINDOW_KIND[prim]
                outs.append(self.window_op(eqn, f, names, kind, window, strides, dilation, pads, axes, shape))
            return outs

        if prim == "dot_general":
            (lc, rc), (lb, rb) = p["dimension_numbers"]
            lhs_free = [a for a in range(len(in_shapes[0])) if a not in lc and a not in lb]
            rhs_free = [a for a in range(len(in_shapes[1])) if a not in rc and a not in rb]

            def lhs_map(a):
                return None if a in lc else (lb.index(a) if a in lb else len(lb) + lhs_free.index(a))

            def rhs_map(a):
                return None if a in rc else (rb.index(a) if a in rb else len(lb) + len(lhs_free) + rhs_free.index(a))

            fields = [_remap(ins[0], in_shapes[0], lhs_map), _remap(ins[1], in_shapes[1], rhs_map)]
            return [_union(fields, [out_shapes[0]] * 2, eqn)]

        if prim == "broadcast_in_dim":
            bd, shape = p["broadcast_dimensions"], out_shapes[0]
            # a size-1 axis broadcast to n: every copy sees the same field (constant along it)
            return [_remap(ins[0], in_shapes[0], lambda a: None if in_shapes[0][a] == 1 < shape[bd[a]] else bd[a])]

        if prim == "reshape":
            src, dst = in_shapes[0], out_shapes[0]

            def reshape_map(a):
                before = math.prod(src[:a])
                for b in range(len(dst)):
                    if math.prod(dst[:b]) == before and dst[b] == src[a]:
                        return b
                return None  # merged with other axes (a flatten): the union over the axis

            return [_remap(ins[0], src, reshape_map)]

        if prim == "transpose":
            perm = list(p["permutation"])
            return [_remap(ins[0], in_shapes[0], lambda a: perm.index(a))]

        if prim == "squeeze":
            gone = sorted(a % len(in_shapes[0]) for a in p["dimensions"])
            return [_remap(ins[0], in_shapes[0], lambda a: None if a in gone else a - sum(g < a for g in gone))]

        if prim in _REDUCTIONS:
            axes = sorted(p["axes"])
            return [_remap(ins[0], in_shapes[0], lambda a: None if a in axes else a - sum(g < a for g in axes))]

        if prim == "pad":
            if ins[1] is not None:
                raise _unsupported(eqn, "the padding value depends on the input")
            config = p["padding_config"]
            out = []
            for d in ins[0]:
                if d.axis is None:
                    out.append(d)
                    continue
                lo, _, interior = config[d.axis]
                if interior:
                    raise _unsupported(eqn, "interior padding")
                out.append(_Dim(d.axis, d.lo - lo * d.jump, d.hi - lo * d.jump, d.jump))
            return [tuple(out)]

        if prim == "slice":
            starts, steps = p["start_indices"], p["strides"] or (1,) * len(in_shapes[0])

            def cut(d):
                offset = starts[d.axis] * d.jump
                return _Dim(d.axis, d.lo + offset, d.hi + offset, d.jump * steps[d.axis])

            return [tuple(d if d.axis is None else cut(d) for d in ins[0])]

        if prim == "split":
            axis, outs, offset = p["axis"], [], 0
            for size in p["sizes"]:
                shift = lambda d: _Dim(d.axis, d.lo + offset * d.jump, d.hi + offset * d.jump, d.jump)  # noqa: E731
                outs.append(tuple(shift(d) if d.axis == axis else d for d in ins[0]))
                offset += size
            return outs

        if prim == "concatenate":
            axis = p["dimension"]
            if any(f is not None and any(d.axis == axis for d in f) for f in ins):
                raise _unsupported(eqn, "concatenation along a spatial axis")
            return [_union(ins, in_shapes, eqn)]

        if prim in ("device_put", "optimization_barrier"):
            return list(ins)

        sub = _jaxpr.called_jaxpr(eqn)
        if sub is not None:
            return self.run(sub, ins, names)

        if prim in _ORDER_SENSITIVE:
            axes = p.get("dimensions", (p.get("axis", p.get("dimension")),))
            if any(f is not None and any(d.axis in tuple(axes) for d in f) for f in ins):
                raise _unsupported(eqn, "it reorders or accumulates along a spatial axis")
        elif _jaxpr.sub_jaxprs(eqn) or len({tuple(s) for s in out_shapes}) != 1:
            raise _unsupported(eqn)
        shape = out_shapes[0]
        if any(f is not None and tuple(s) != tuple(shape) for f, s in zip(ins, in_shapes)):
            raise _unsupported(eqn, "it changes the shape")
        field = _union(ins, in_shapes, eqn)  # elementwise: every input at the same position
        return [field] * len(eqn.outvars)


def _relaxed(closed, fn: Callable) -> Callable:
    """``fn(leaves, x)``, or, if it max-pools, its jaxpr evaluated with sum pooling instead.

    Max/min pooling windows become sum windows of the same geometry.
    The gradient of a max reaches one input per window (the arg-max), so it
    depends on the data; a window sum's reaches every input in the window,
    which is the set that *can* influence the output.
    """

    def has_max(jaxpr) -> bool:
        return any(e.primitive.name in ("reduce_window_max", "reduce_window_min") for e, _, _ in _jaxpr.walk(jaxpr))

    def evaluate(jaxpr, consts, *args):
        env = {}

        def read(v):
            return v.val if _jaxpr.is_literal(v) else env[v]

        env.update(zip(jaxpr.constvars, consts))
        env.update(zip(jaxpr.invars, args))
        for eqn in jaxpr.eqns:
            vals = [read(v) for v in eqn.invars]
            name = eqn.primitive.name
            sub = _jaxpr.called_jaxpr(eqn)
            if name in ("reduce_window_max", "reduce_window_min"):
                p = eqn.params
                zero = np.zeros((), vals[0].dtype)  # a concrete init value: lax then emits a differentiable window sum
                keys = ("window_dimensions", "window_strides", "padding", "base_dilation", "window_dilation")
                geometry = [p[k] for k in keys]
                outs = [lax.reduce_window(vals[0], zero, lax.add, *geometry)]
            elif sub is not None and has_max(sub):
                closed_sub = _jaxpr.closed_called(eqn)
                outs = evaluate(sub, closed_sub.consts if closed_sub is not None else (), *vals)
            else:
                bind = eqn.primitive.get_bind_params(eqn.params)  # (subfuns, params) in older JAX
                subfuns, params = bind if isinstance(bind, tuple) else ((), bind)
                outs = eqn.primitive.bind(*subfuns, *vals, **params)
                outs = outs if eqn.primitive.multiple_results else [outs]
            for v, o in zip(eqn.outvars, outs):
                env[v] = o
        return [read(v) for v in jaxpr.outvars]

    if not has_max(closed.jaxpr):
        return fn
    return lambda leaves, x: evaluate(closed.jaxpr, closed.consts, *leaves, x)[0]


def positive_params(params: Any) -> Any:
    r"""Weights for measuring a receptive field: positive, so no gradient cancels or vanishes.

    .. math::

        v = 1 + |w| / \max|w| \in [1, 2], \qquad
        w' = v / \textstyle\sum_{\text{all axes but the last}} v \quad (\text{rank} \ge 2)

    Every weight and bias is then > 0, so with a positive input every
    pre-activation is > 0: ReLU passes its gradient (never exactly 0), and no
    sum of terms of opposite signs can cancel. Kernels (rank >= 2, last axis the
    output) are normalized so each output unit's weights sum to 1 (an average),
    which keeps activations O(1) through deep networks (no overflow/underflow).

    Args:
      params: a pytree of arrays (a Flax ``params`` collection).

    Returns:
      The same pytree with the weights above.

    Example:
      >>> import numpy as np
      >>> from jaxcnn.analysis import positive_params
      >>> positive_params({"bias": np.array([0.0, -2.0])})["bias"]
      Array([1., 2.], dtype=float32)

    Reference: Luo, Li, Urtasun & Zemel, "Understanding the Effective Receptive
    Field in Deep Convolutional Neural Networks", NeurIPS 2016 (fields measured by
    gradients; they set weights to one for the same reason).
    """

    def one(w):
        w = jnp.asarray(w)
        if not jnp.issubdtype(w.dtype, jnp.floating) or w.size == 0:
            return w
        a = jnp.abs(w)
        m = jnp.max(a)
        v = 1.0 + jnp.where(m > 0, a / jnp.where(m > 0, m, 1.0), 0.0)
        if w.ndim >= 2:
            v = v / jnp.sum(v, axis=tuple(range(w.ndim - 1)), keepdims=True)
        return v.astype(w.dtype)

    return jax.tree_util.tree_map(one, nn.meta.unbox(params))


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """What :func:`receptive_field` returns.

    Attributes:
      layers: the analytic table, one :class:`FieldLayer` per conv/pool window.
      input_shape: one example, ``(*spatial, C)``.
      output_shape: the probed output's shape for one example (batch dropped).
      position: per input spatial dim, the probed unit's index along the output
        axis that carries that dim (``None`` where the output has no such axis).
      analytic: per input spatial dim, ``(lo, hi)`` of the unit's field, unclipped.
      measured: per input spatial dim, ``(min, max)`` index with non-zero gradient
        (``None`` in a dim where no gradient reached the input), or ``None`` if
        not measured.
      measured_mask: the input positions (spatial shape) with non-zero gradient.
    """

    layers: list
    input_shape: tuple
    output_shape: tuple | None
    position: tuple
    analytic: tuple
    measured: tuple | None
    measured_mask: np.ndarray | None

    @property
    def size(self) -> tuple:
        """Analytic field size per input spatial dim, unclipped (``hi - lo + 1``)."""
        return tuple(hi - lo + 1 for lo, hi in self.analytic)

    @property
    def clipped(self) -> tuple:
        """The analytic ``(lo, hi)`` clipped to the input, per spatial dim."""
        return tuple((max(lo, 0), min(hi, n - 1)) for (lo, hi), n in zip(self.analytic, self.input_shape[:-1]))

    def mismatches(self) -> list[str]:
        """Where the clipped analytic field and the measured one differ (empty: they agree)."""
        if self.measured is None:
            raise ValueError("this receptive field was not measured (measure=False or no model/function given)")
        return [
            f"spatial dim {d}: analytic (clipped) {a}, measured {m if m is not None else 'no input reached'}"
            for d, (a, m) in enumerate(zip(self.clipped, self.measured))
            if m is None or tuple(a) != tuple(m)
        ]

    @property
    def agrees(self) -> bool:
        """True when the clipped analytic field equals the measured one in every dim."""
        return not self.mismatches()

    def to_markdown(self) -> str:
        """The analytic table as markdown: layer, kind, window, stride, dilation, padding, r, j, start."""
        lines = [
            "| Layer | Kind | Window | Stride | Dilation | Padding | Output | r | j | start |",
            "|---|---|---|---|---|---|---|---:|---:|---:|",
        ]
        fmt = lambda t: "x".join(map(str, t))  # noqa: E731
        for r in self.layers:
            start = ", ".join(f"{s:g}" for s in r.start)
            cells = [r.name, r.kind, fmt(r.window), fmt(r.strides), fmt(r.dilation), str(r.padding)]
            cells += [fmt(r.output_shape), fmt(r.size), fmt(r.jump), start]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _positions(position: Any, field: Field, out_shape: tuple) -> tuple:
    nd = len(field)
    if position is not None:
        if isinstance(position, (str, bytes)) or not isinstance(position, Sequence) or len(position) != nd:
            raise TypeError(
                f"position must be None or a sequence of {nd} ints (one per input spatial dim), "
                f"got {_validate.fmt(position)}"
            )
    result = []
    for d, dim in enumerate(field):
        given = None if position is None else position[d]
        if dim.axis is None:
            if given is not None:
                raise ValueError(
                    f"position[{d}]={given!r}, but the output (shape {out_shape}) has no axis along input "
                    f"spatial dim {d} (it was reduced or flattened); pass None there"
                )
            result.append(None)
            continue
        n = out_shape[dim.axis]
        p = (n - 1) // 2 if given is None else _validate.as_int(given, f"position[{d}]")
        if not 0 <= p < n:
            raise ValueError(f"position[{d}]={p} is outside the output's axis of size {n}")
        result.append(p)
    return tuple(result)


def receptive_field(
    model_or_fn: Any,
    input_shape: Sequence[int],
    position: Sequence[int | None] | None = None,
    *,
    layers: Sequence[Any] | None = None,
    variables: Any = None,
    x: Any = None,
    measure: bool = True,
    dtype: Any = jnp.float32,
    rngs: Any = None,
    **call_kwargs: Any,
) -> ReceptiveField:
    r"""Analytic and measured receptive field of one output unit of a model or function.

    Analytic: the function is traced to a jaxpr and the field of every tensor is
    propagated from the input: at each convolution or pooling window (kernel
    size, stride, dilation and the resolved ``(lo, hi)`` padding read from the
    operation; padding through ``_validate.padding_pairs``)

    .. math::

        r_{out} = r_{in} + (k_{eff} - 1) j_{in},\quad j_{out} = j_{in} s,\quad
        \text{start}_{out} = \text{start}_{in} + \left(\tfrac{k_{eff}-1}{2} - p_{lo}\right) j_{in}

    Elementwise ops where paths join (residual additions) take the union of the
    fields; reductions, flattening and matrix products over a spatial axis give
    every output the union over that axis (a Dense layer after a flatten sees
    the whole input).

    Measured: the input positions where the gradient of the one output unit is
    non-zero, ``jax.vjp`` of the output against the input. To keep gradients
    from vanishing by accident: the input is uniform in ``[0.5, 1.5]`` (positive),
    a Flax model's parameters are replaced by :func:`positive_params` (positive,
    normalized; so every pre-activation is positive, ReLU passes the gradient,
    and nothing cancels), and max/min pooling is measured as sum pooling of the
    same geometry (the gradient of a max reaches only the arg-max of each window;
    the sum's reaches every input that *can* influence the output). A plain
    function keeps its own weights: give it positive ones. Normalization that
    centres the activations (layer/group norm, batch norm in training mode) can
    still send pre-activations below 0; run norms in inference mode.

    Args:
      model_or_fn: a ``flax.linen.Module``, a function ``x -> array`` of a
        batched input ``(N, *spatial, C)``, or ``None`` with ``layers``.
      input_shape: one example, ``(*spatial, C)`` (channels last); traced with N = 1.
      position: the output unit, one index per input spatial dim along the
        output axis that carries it (``None`` entries: the centre, ``(n - 1) // 2``;
        must be ``None`` where the output has no such axis, e.g. logits). All
        other output axes (batch, channel) are probed at index 0.
      layers: optional :class:`LayerSpec` chain: the analytic field then comes
        from :func:`chain_receptive_field` (e.g. a paper's architecture table),
        ``position`` indexes the chain's last output, and the measurement (if a
        model is given) probes the model output at the same position.
      variables: a Flax model's variables. Their ``params`` are replaced by
        :func:`positive_params` for measuring, so by default none are
        initialized: parameters start as ones (-> :func:`positive_params`), and
        other collections (``batch_stats``) come from ``model.init`` with ``rngs``.
      x: the example to measure at, ``input_shape``; default uniform [0.5, 1.5].
      measure: compute the measured field.
      dtype: input dtype.
      rngs: PRNG streams for a Flax model; default ``{"params": key(0), "dropout": key(1)}``
        with ``impl="rbg"`` keys (threefry initializers compile slowly on CPU).
      **call_kwargs: passed to the model's ``__call__`` (``train=False``, ...).

    Returns:
      A :class:`ReceptiveField`; ``.agrees`` compares the clipped analytic field
      with the measured one, ``.layers`` is the per-layer table.

    Raises:
      ValueError: the function's output does not depend on the input, or the
        analytic field cannot be followed through an operation (transposed
        convolution, gather, scan, ...; the message names the primitive).

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> from jaxcnn.analysis import receptive_field
      >>> w = jnp.ones((2, 1, 1))
      >>> def wavenet(x):
      ...     for d in (1, 2, 4, 8):
      ...         x = F.conv(x, w, padding="CAUSAL", dilation=d)
      ...     return x
      >>> rf = receptive_field(wavenet, (32, 1), position=(31,))
      >>> rf.size, rf.analytic, rf.measured
      ((16,), ((16, 31),), ((16, 31),))

    Reference: Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional
    Neural Networks", Distill, 2019; Luo, Li, Urtasun & Zemel, "Understanding the
    Effective Receptive Field in Deep Convolutional Neural Networks", NeurIPS 2016
    (the gradient measurement).
    """
    shape = _per_example_shape(input_shape)
    nd = len(shape) - 1
    if nd not in _validate.SPATIAL_DIMS:
        raise ValueError(f"input_shape must be (*spatial, C) with 1, 2 or 3 spatial dims, got {shape}")
    measure = _validate.check_bool(measure, "measure")
    if model_or_fn is None and layers is None:
        raise ValueError("receptive_field needs a model or function, or layers=[LayerSpec, ...], got neither")
    if model_or_fn is not None and not (isinstance(model_or_fn, nn.Module) or callable(model_or_fn)):
        raise TypeError(f"model_or_fn must be a flax.linen.Module or a function of x, got {_validate.fmt(model_or_fn)}")

    if x is None:
        x = np.random.default_rng(0).uniform(0.5, 1.5, shape)
    x = np.asarray(_validate.check_array(x, "x"))
    if tuple(x.shape) != shape:
        raise ValueError(f"x must have the per-example shape input_shape={shape}, got shape {tuple(x.shape)}")
    xb = jnp.asarray(x[None], dtype)  # host-side reshape: no op to compile

    # g(v, x) is the output to probe; prepare(v, x) gives the variables to measure with.
    g, v, strip, prepare = None, (), None, lambda v, x: v
    if isinstance(model_or_fn, nn.Module):
        if rngs is None:  # "rbg" keys: XLA compiles threefry initializers very slowly on CPU
            rngs = {"params": jax.random.key(0, impl="rbg"), "dropout": jax.random.key(1, impl="rbg")}
        model, rngs = model_or_fn, _default_rngs(rngs)
        init = lambda x: model.init(rngs, x, **call_kwargs)  # noqa: E731
        fresh = variables is None
        v = jax.eval_shape(init, xb) if fresh else variables
        # Parameters are replaced anyway: without other collections (batch_stats) skip init.
        only_params = fresh and all(c == "params" for c in v)

        def prepare(v, x):  # runs inside the one jitted measurement
            if only_params:
                v = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), v_shapes)
            elif fresh:
                v = init(x)
            v = dict(v)
            if "params" in v:
                v["params"] = positive_params(v["params"])
            return v

        v_shapes = v
        strip = model.name or type(model).__name__
        g = lambda v, x: model.apply(v, x, rngs=rngs, **call_kwargs)  # noqa: E731
    elif model_or_fn is not None:
        g = lambda v, x: model_or_fn(x)  # noqa: E731
    leaves, treedef = jax.tree_util.tree_flatten(v)

    def h(leaves, x):
        return g(jax.tree_util.tree_unflatten(treedef, leaves), x)

    closed = out_field = out_shape = None
    if g is not None:
        abstract = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in leaves]
        with default_conv_algorithm("xla"):  # convolutions as conv_general_dilated, with their geometry
            closed = jax.make_jaxpr(h)(abstract, jax.ShapeDtypeStruct(xb.shape, dtype))
        if len(closed.jaxpr.outvars) != 1:
            raise ValueError(
                f"the model/function must return one array, it returns {len(closed.jaxpr.outvars)}; "
                f"wrap it in a function that returns the output to probe"
            )
        out_shape = tuple(closed.jaxpr.outvars[0].aval.shape)

    if layers is not None:
        rows = chain_receptive_field(layers, shape)
        last = rows[-1]
        field = tuple(
            _Dim(1 + d, round(c - (r - 1) / 2), round(c + (r - 1) / 2), j)
            for d, (c, r, j) in enumerate(zip(last.start, last.size, last.jump))
        )
        chain_shape = (1, *last.output_shape)
        if out_shape is not None and tuple(out_shape[1 : 1 + nd]) != last.output_shape:
            raise ValueError(
                f"layers end in spatial shape {last.output_shape}, but the model's output has shape "
                f"{out_shape[1:]}; the chain must describe the model up to its output"
            )
        out_field, probe_shape = field, chain_shape
    else:
        tracer = _Tracer(strip)
        in_field = tuple(_Dim(1 + d, 0, 0, 1) for d in range(nd))
        try:
            (out_field,) = tracer.run(closed.jaxpr, [None] * (len(closed.jaxpr.invars) - 1) + [in_field])
        except _Unsupported as err:
            raise ValueError(str(err)) from None
        if out_field is None:
            raise ValueError(f"the output (shape {out_shape}) does not depend on the input x")
        rows, probe_shape = tracer.rows, out_shape

    pos = _positions(position, out_field, probe_shape)
    analytic = tuple(
        (d.lo, d.hi) if d.axis is None else (d.lo + p * d.jump, d.hi + p * d.jump) for d, p in zip(out_field, pos)
    )

    measured = mask = None
    if measure and closed is not None:
        f = _relaxed(closed, h)
        index = [0] * len(out_shape)
        for d, p in zip(out_field, pos):
            if d.axis is not None:
                index[d.axis] = p

        @jax.jit
        def gradient(leaves, x):
            ready = jax.tree_util.tree_leaves(prepare(jax.tree_util.tree_unflatten(treedef, leaves), x))
            y, vjp = jax.vjp(lambda x: f(ready, x), x)
            return vjp(jnp.zeros_like(y).at[tuple(index)].set(1))[0]

        concrete = [None if isinstance(a, jax.ShapeDtypeStruct) else a for a in leaves]
        grad = np.asarray(gradient(concrete, xb))
        if not np.all(np.isfinite(grad)):
            raise ValueError("the measured gradient is not finite (overflow); try a smaller input or model")
        mask = np.any(grad[0] != 0, axis=-1)
        measured = []
        for d in range(nd):
            hit = np.nonzero(np.any(mask, axis=tuple(a for a in range(nd) if a != d)))[0]
            measured.append((int(hit.min()), int(hit.max())) if hit.size else None)
        measured = tuple(measured)
    out_example = None if out_shape is None else out_shape[1:]
    return ReceptiveField(list(rows), shape, out_example, pos, analytic, measured, mask)


def check_receptive_field(
    model_or_fn: Any, input_shape: Sequence[int], position: Any = None, **kwargs: Any
) -> ReceptiveField:
    """:func:`receptive_field`, raising ``ValueError`` unless analytic (clipped) == measured.

    Args:
      model_or_fn, input_shape, position, **kwargs: as :func:`receptive_field`.

    Returns:
      The :class:`ReceptiveField` when the two agree.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> from jaxcnn.analysis import check_receptive_field
      >>> rf = check_receptive_field(lambda x: F.conv(x, jnp.ones((3, 1, 1)), dilation=2), (9, 1))
      >>> rf.size, rf.measured
      ((5,), ((2, 6),))

    Reference: as :func:`receptive_field`.
    """
    rf = receptive_field(model_or_fn, input_shape, position, **kwargs)
    problems = rf.mismatches()
    if problems:
        raise ValueError("analytic and measured receptive fields differ: " + "; ".join(problems))
    return rf
