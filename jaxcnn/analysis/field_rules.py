"""How each jaxpr primitive moves the receptive field: a table ``{primitive: rule}`` and the trace that uses it.

A rule is ``rule(trace, eqn, fields) -> one field per output``, where a field
is a tuple of :class:`~jaxcnn.analysis.field_chain.Dim` (one per input spatial
dim) or ``None`` ("does not depend on the input"). Windows (convolution,
pooling) apply the recurrence :func:`~jaxcnn.analysis.field_chain.step` and add
a row to the table; ops that move axes (reshape, transpose, matrix products,
reductions) move or collapse the field's axes; elementwise ops take the union
of their operands' fields (where residual branches join). A primitive that is
in no row of the table is followed as elementwise when it keeps the shape, or
into its body when it calls a jaxpr (``pjit``, ``custom_jvp_call``); anything
else raises, naming the primitive.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from jaxcnn import _validate
from jaxcnn.analysis import _jaxpr
from jaxcnn.analysis.field_chain import Dim, Field, FieldLayer, collapse, layer_row, step


class Unsupported(ValueError):
    """The analytic field cannot be followed through an equation (the message names its primitive)."""


def unsupported(eqn: Any, why: str = "") -> Unsupported:
    """The error for ``eqn``, with ``why`` in parentheses."""
    return Unsupported(
        f"receptive_field: cannot follow the analytic field through the primitive "
        f"'{eqn.primitive.name}' applied to a tensor that depends on the input"
        f"{' (' + why + ')' if why else ''}; only convolutions (without input dilation), pooling "
        f"windows, elementwise ops, matrix products, reductions, reshapes, pads and slices are "
        f"followed. Use the measured field (measure=True) for this model."
    )


def union(fields: list, shapes: list, eqn: Any) -> Field | None:
    """The field of an element that depends on all of ``fields`` (same-shaped operands).

    Per spatial dim: ``[min lo, max hi]``; operands that carry the dim on
    different axes are collapsed first; the same axis with different jumps
    (branches of different strides) cannot be joined.
    """
    present = [(f, s) for f, s in zip(fields, shapes) if f is not None]
    if not present:
        return None
    dims = []
    for d in range(len(present[0][0])):
        ds = [f[d] for f, _ in present]
        axes = {x.axis for x in ds}
        if len(axes) > 1:
            ds = [collapse(x, s[x.axis]) if x.axis is not None else x for x, (_, s) in zip(ds, present)]
        elif None not in axes and len({x.jump for x in ds}) > 1:
            raise unsupported(eqn, f"branches with different strides {sorted({x.jump for x in ds})} meet")
        dims.append(Dim(ds[0].axis, min(x.lo for x in ds), max(x.hi for x in ds), ds[0].jump))
    return tuple(dims)


def remap(field: Field | None, shape: tuple, axis_map: Callable[[int], int | None]) -> Field | None:
    """Move each field axis to ``axis_map(axis)``; ``None`` collapses it (see :func:`collapse`)."""
    if field is None:
        return None
    out = []
    for d in field:
        if d.axis is None:
            out.append(d)
            continue
        new = axis_map(d.axis)
        out.append(collapse(d, shape[d.axis]) if new is None else d._replace(axis=new))
    return tuple(out)


class FieldTrace:
    """Propagates fields through a jaxpr (with :func:`jaxcnn.analysis._jaxpr.interpret`), one row per window.

    Attributes:
      rows: the :class:`FieldLayer` of every convolution and pooling window, in program order.
      strip: a leading scope name to drop from row names (the top-level module's).
    """

    def __init__(self, strip: str | None):
        self.rows: list[FieldLayer] = []
        self.strip = strip
        self.names: tuple[str, ...] = ()

    def run(self, jaxpr: Any, fields_in: list, outer: tuple = ()) -> list:
        """The field of every output of ``jaxpr`` given those of its inputs."""
        return _jaxpr.interpret(jaxpr, fields_in, self._eqn, literal=lambda v: None, outer=outer)

    def _eqn(self, eqn: Any, fields: list, names: tuple) -> list:
        if all(f is None for f in fields):
            return [None] * len(eqn.outvars)
        self.names = names
        rule = RULES.get(eqn.primitive.name)
        if rule is not None:
            return rule(self, eqn, fields)
        sub = _jaxpr.called_jaxpr(eqn)
        if sub is not None:
            return self.run(sub, fields, names)
        return elementwise(self, eqn, fields)

    def label(self, kind: str) -> str:
        """The current equation's scope path, or ``kind`` plus a counter."""
        names = list(self.names)
        if names and names[0] == self.strip:
            names = names[1:]
        return "/".join(names) or f"{kind}{sum(r.kind == kind for r in self.rows)}"

    def window(self, eqn, field, kind, window, strides, dilation, pads, axes, out_shape) -> Field:
        """Apply the recurrence along the spatial ``axes`` of a window op and record its row."""
        sizes = [eqn.invars[0].aval.shape[a] for a in axes]
        k_eff = _validate.effective_size(window, dilation)
        if all(lo >= 0 and hi >= 0 for lo, hi in pads):  # the one padding rule, as conv/pool use it
            pads = _validate.padding_pairs(tuple(pads), sizes, k_eff, strides)
        dims = []
        for d in field:
            if d.axis in axes:
                i = axes.index(d.axis)
                dims.append(step(d, k_eff[i], strides[i], pads[i][0], d.axis))
            else:
                dims.append(d)
        row_dims = [dims[i] for i, d in enumerate(field) if d.axis in axes] or dims
        out_sizes = [out_shape[a] for a in axes]
        self.rows.append(layer_row(self.label(kind), kind, window, strides, dilation, pads, out_sizes, row_dims))
        return tuple(dims)


def _shapes(eqn: Any) -> tuple[list, list]:
    return [getattr(v.aval, "shape", ()) for v in eqn.invars], [v.aval.shape for v in eqn.outvars]


def conv(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """``conv_general_dilated``: the recurrence along the lhs spatial axes; feature axes mix (collapse)."""
    p, (in_shapes, out_shapes) = eqn.params, _shapes(eqn)
    if fields[1] is not None:
        raise unsupported(eqn, "the kernel depends on the input")
    if any(d != 1 for d in p["lhs_dilation"]):
        raise unsupported(eqn, "a transposed convolution (input dilation) has no affine field")
    dn = p["dimension_numbers"]
    lhs_sp, out_sp = list(dn.lhs_spec[2:]), list(dn.out_spec[2:])
    window = [in_shapes[1][a] for a in dn.rhs_spec[2:]]
    batch_in, batch_out = dn.lhs_spec[0], dn.out_spec[0]
    # spatial axes keep their lhs index until the recurrence ran; features mix: collapse
    field = remap(fields[0], in_shapes[0], lambda a: a if a in lhs_sp else (batch_out if a == batch_in else None))
    field = trace.window(
        eqn, field, "conv", window, p["window_strides"], p["rhs_dilation"], p["padding"], lhs_sp, out_shapes[0]
    )
    return [tuple(d._replace(axis=out_sp[lhs_sp.index(d.axis)]) if d.axis in lhs_sp else d for d in field)]


_WINDOW_KIND = {
    "reduce_window_max": "max_pool",
    "reduce_window_min": "min_pool",
    "reduce_window_sum": "avg_pool",
    "reduce_window": "pool",
}


def pool(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """``reduce_window_*``: the recurrence along every axis that carries a spatial dim."""
    p, n_ops = eqn.params, len(eqn.outvars)
    if any(f is not None for f in fields[n_ops:]):
        raise unsupported(eqn, "the initial value depends on the input")
    if any(b != 1 for b in p["base_dilation"]):
        raise unsupported(eqn, "base dilation")
    outs: list[Field | None] = []
    for f, shape in zip(fields[:n_ops], _shapes(eqn)[1]):
        if f is None:
            outs.append(None)
            continue
        axes = sorted({d.axis for d in f if d.axis is not None})
        keys = ("window_dimensions", "window_strides", "window_dilation", "padding")
        window, strides, dilation, pads = ([p[key][a] for a in axes] for key in keys)
        kind = _WINDOW_KIND[eqn.primitive.name]
        outs.append(trace.window(eqn, f, kind, window, strides, dilation, pads, axes, shape))
    return outs


def dot_general(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """Matrix products: contracted axes collapse; batch and free axes move to the output's order."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    in_shapes, out_shapes = _shapes(eqn)
    lhs_free = [a for a in range(len(in_shapes[0])) if a not in lc and a not in lb]
    rhs_free = [a for a in range(len(in_shapes[1])) if a not in rc and a not in rb]

    def lhs_map(a):
        return None if a in lc else (lb.index(a) if a in lb else len(lb) + lhs_free.index(a))

    def rhs_map(a):
        return None if a in rc else (rb.index(a) if a in rb else len(lb) + len(lhs_free) + rhs_free.index(a))

    moved = [remap(fields[0], in_shapes[0], lhs_map), remap(fields[1], in_shapes[1], rhs_map)]
    return [union(moved, [out_shapes[0]] * 2, eqn)]


def broadcast_in_dim(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """A size-1 axis broadcast to n: every copy sees the same field (constant along it)."""
    bd = eqn.params["broadcast_dimensions"]
    (src, *_), (dst,) = _shapes(eqn)
    return [remap(fields[0], src, lambda a: None if src[a] == 1 < dst[bd[a]] else bd[a])]


def reshape(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """An axis kept whole keeps its field; one merged with others (a flatten) collapses."""
    (src, *_), (dst,) = _shapes(eqn)

    def reshape_map(a):
        before = math.prod(src[:a])
        for b in range(len(dst)):
            if math.prod(dst[:b]) == before and dst[b] == src[a]:
                return b
        return None

    return [remap(fields[0], src, reshape_map)]


def transpose(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """Axes move with the permutation."""
    perm = list(eqn.params["permutation"])
    return [remap(fields[0], _shapes(eqn)[0][0], lambda a: perm.index(a))]


def _drop_axes(gone: list, eqn: Any, fields: list) -> list:
    return [remap(fields[0], _shapes(eqn)[0][0], lambda a: None if a in gone else a - sum(g < a for g in gone))]


def squeeze(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """Removed (size-1) axes collapse; the others shift down."""
    rank = len(_shapes(eqn)[0][0])
    return _drop_axes(sorted(a % rank for a in eqn.params["dimensions"]), eqn, fields)


def reduction(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """Reduced axes collapse (every output sees the union over them); the others shift down."""
    return _drop_axes(sorted(eqn.params["axes"]), eqn, fields)


def pad(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """Low padding ``lo`` shifts the field by ``-lo * jump``; interior padding is not affine."""
    if fields[1] is not None:
        raise unsupported(eqn, "the padding value depends on the input")
    config = eqn.params["padding_config"]
    out = []
    for d in fields[0]:
        if d.axis is None:
            out.append(d)
            continue
        lo, _, interior = config[d.axis]
        if interior:
            raise unsupported(eqn, "interior padding")
        out.append(Dim(d.axis, d.lo - lo * d.jump, d.hi - lo * d.jump, d.jump))
    return [tuple(out)]


def slice_(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """A slice from ``start`` with step ``t``: the field shifts by ``start * jump`` and the jump grows ``t``-fold."""
    p = eqn.params
    starts, steps = p["start_indices"], p["strides"] or (1,) * len(_shapes(eqn)[0][0])

    def cut(d):
        offset = starts[d.axis] * d.jump
        return Dim(d.axis, d.lo + offset, d.hi + offset, d.jump * steps[d.axis])

    return [tuple(d if d.axis is None else cut(d) for d in fields[0])]


def split(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """Each piece is a slice starting at its offset along the split axis."""
    axis, outs, offset = eqn.params["axis"], [], 0
    for size in eqn.params["sizes"]:
        outs.append(
            tuple(
                Dim(d.axis, d.lo + offset * d.jump, d.hi + offset * d.jump, d.jump) if d.axis == axis else d
                for d in fields[0]
            )
        )
        offset += size
    return outs


def concatenate(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """Along a non-spatial axis (channels): the union of the operands' fields."""
    axis = eqn.params["dimension"]
    if any(f is not None and any(d.axis == axis for d in f) for f in fields):
        raise unsupported(eqn, "concatenation along a spatial axis")
    return [union(fields, _shapes(eqn)[0], eqn)]


def identity(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """Placement and barriers: each output is its input."""
    return list(fields)


_ORDER_SENSITIVE = ("rev", "sort", "cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp", "argsort", "top_k")


def order_sensitive(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """Reversals, sorts and scans: elementwise along the axes they do not reorder, an error along a spatial one."""
    p = eqn.params
    axes = p.get("dimensions", (p.get("axis", p.get("dimension")),))
    if any(f is not None and any(d.axis in tuple(axes) for d in f) for f in fields):
        raise unsupported(eqn, "it reorders or accumulates along a spatial axis")
    return _same_position(eqn, fields)


def elementwise(trace: FieldTrace, eqn: Any, fields: list) -> list:
    """Every other primitive that keeps the shape: an output element sees its operands at the same position."""
    if _jaxpr.sub_jaxprs(eqn) or len({tuple(s) for s in _shapes(eqn)[1]}) != 1:
        raise unsupported(eqn)
    return _same_position(eqn, fields)


def _same_position(eqn: Any, fields: list) -> list:
    in_shapes, out_shapes = _shapes(eqn)
    if any(f is not None and tuple(s) != tuple(out_shapes[0]) for f, s in zip(fields, in_shapes)):
        raise unsupported(eqn, "it changes the shape")
    return [union(fields, in_shapes, eqn)] * len(eqn.outvars)


_REDUCTIONS = ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or", "reduce_xor")

#: ``{primitive name: rule}``; primitives not listed: a call's body, or :func:`elementwise`.
RULES: dict[str, Callable[[FieldTrace, Any, list], list]] = {
    "conv_general_dilated": conv,
    **{name: pool for name in _WINDOW_KIND},
    "dot_general": dot_general,
    "broadcast_in_dim": broadcast_in_dim,
    "reshape": reshape,
    "transpose": transpose,
    "squeeze": squeeze,
    **{name: reduction for name in (*_REDUCTIONS, "argmax", "argmin")},
    "pad": pad,
    "slice": slice_,
    "split": split,
    "concatenate": concatenate,
    "device_put": identity,
    "optimization_barrier": identity,
    **{name: order_sensitive for name in _ORDER_SENSITIVE},
}
