r"""Receptive fields of a model or function: the entry points.

:func:`receptive_field` gives the analytic field of one output unit (the
recurrences of :mod:`jaxcnn.analysis.field_chain`, followed through the traced
jaxpr by the rules of :mod:`jaxcnn.analysis.field_rules`) and the measured one
(gradients, :mod:`jaxcnn.analysis.field_measure`);
:func:`check_receptive_field` demands that they agree.

.. math::

    r_{out} = r_{in} + (k_{eff} - 1)\, j_{in}, \qquad
    j_{out} = j_{in}\, s, \qquad
    \text{start}_{out} = \text{start}_{in} + \left(\tfrac{k_{eff} - 1}{2} - p_{lo}\right) j_{in}

(Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019). Any function of ``x`` and any Flax module work, and
branches (residual connections) are handled by taking the union of the fields
where paths join.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import _validate
from jaxcnn.analysis._inputs import default_rngs, per_example_shape
from jaxcnn.analysis._models import linen_view
from jaxcnn.analysis.field_chain import Dim, Field, chain_receptive_field, last_field
from jaxcnn.analysis.field_measure import measure as measure_gradient
from jaxcnn.analysis.field_measure import positive_params
from jaxcnn.analysis.field_rules import FieldTrace, Unsupported
from jaxcnn.functional.conv import default_conv_algorithm


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
    if position is not None and (
        isinstance(position, (str, bytes)) or not isinstance(position, Sequence) or len(position) != nd
    ):
        raise TypeError(
            f"position must be None or a sequence of {nd} ints (one per input spatial dim), "
            f"got {_validate.fmt(position)}"
        )
    result: list[int | None] = []
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
    shape = per_example_shape(input_shape)
    nd = len(shape) - 1
    if nd not in _validate.SPATIAL_DIMS:
        raise ValueError(f"input_shape must be (*spatial, C) with 1, 2 or 3 spatial dims, got {shape}")
    measure = _validate.check_bool(measure, "measure")
    model_or_fn, variables = linen_view(model_or_fn, variables)
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

    probe = _Probe.of(model_or_fn, xb, variables, rngs, call_kwargs)
    closed = out_shape = None
    if probe.fn is not None:
        abstract = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in probe.leaves]
        with default_conv_algorithm("xla"):  # convolutions as conv_general_dilated, with their geometry
            closed = jax.make_jaxpr(probe.fn)(abstract, jax.ShapeDtypeStruct(xb.shape, dtype))
        if len(closed.jaxpr.outvars) != 1:
            raise ValueError(
                f"the model/function must return one array, it returns {len(closed.jaxpr.outvars)}; "
                f"wrap it in a function that returns the output to probe"
            )
        out_shape = tuple(closed.jaxpr.outvars[0].aval.shape)

    out_field: Field
    if layers is not None:
        rows = chain_receptive_field(layers, shape)
        out_field, probe_shape = last_field(rows[-1]), (1, *rows[-1].output_shape)
        if out_shape is not None and tuple(out_shape[1 : 1 + nd]) != rows[-1].output_shape:
            raise ValueError(
                f"layers end in spatial shape {rows[-1].output_shape}, but the model's output has shape "
                f"{out_shape[1:]}; the chain must describe the model up to its output"
            )
    elif closed is not None:  # (a model or function is given: checked above)
        rows, traced = _traced_field(closed, probe.strip, nd)
        if traced is None:
            raise ValueError(f"the output (shape {out_shape}) does not depend on the input x")
        out_field, probe_shape = traced, tuple(closed.jaxpr.outvars[0].aval.shape)

    pos = _positions(position, out_field, probe_shape)
    analytic = tuple(
        (d.lo, d.hi) if d.axis is None else (d.lo + p * d.jump, d.hi + p * d.jump) for d, p in zip(out_field, pos)
    )
    measured = mask = None
    if measure and closed is not None and probe.fn is not None and out_shape is not None:
        index = [0] * len(out_shape)
        for d, p in zip(out_field, pos):
            if d.axis is not None:
                index[d.axis] = p
        mask, measured = measure_gradient(closed, probe.fn, probe.prepare, probe.treedef, probe.leaves, xb, index)
    out_example = None if out_shape is None else out_shape[1:]
    return ReceptiveField(list(rows), shape, out_example, pos, analytic, measured, mask)


def _traced_field(closed: Any, strip: str | None, nd: int) -> tuple[list, Field | None]:
    """The table rows and the output field of a traced jaxpr whose last input is ``x``."""
    trace = FieldTrace(strip)
    in_field = tuple(Dim(1 + d, 0, 0, 1) for d in range(nd))
    try:
        (out_field,) = trace.run(closed.jaxpr, [None] * (len(closed.jaxpr.invars) - 1) + [in_field])
    except Unsupported as err:
        raise ValueError(str(err)) from None
    return trace.rows, out_field


@dataclasses.dataclass
class _Probe:
    """The function to probe, ``fn(leaves, x)``, its variables as leaves, and how to prepare them.

    ``prepare(variables, x)`` runs inside the one compiled measurement: a Flax
    model's parameters become :func:`positive_params` (initialized only when
    other collections such as ``batch_stats`` need ``init``).
    """

    fn: Callable | None
    leaves: list
    treedef: Any
    strip: str | None
    prepare: Callable

    @classmethod
    def of(cls, model_or_fn: Any, xb: Any, variables: Any, rngs: Any, call_kwargs: dict) -> _Probe:
        if not isinstance(model_or_fn, nn.Module):
            g = None if model_or_fn is None else (lambda leaves, x: model_or_fn(x))
            return cls(g, [], jax.tree_util.tree_structure(()), None, lambda v, x: v)
        if rngs is None:  # "rbg" keys: XLA compiles threefry initializers very slowly on CPU
            rngs = {"params": jax.random.key(0, impl="rbg"), "dropout": jax.random.key(1, impl="rbg")}
        model, rngs = model_or_fn, default_rngs(rngs)
        init = lambda x: model.init(rngs, x, **call_kwargs)  # noqa: E731
        fresh = variables is None
        v_shapes = jax.eval_shape(init, xb) if fresh else variables
        # Parameters are replaced anyway: without other collections (batch_stats) skip init.
        only_params = fresh and all(c == "params" for c in v_shapes)

        def prepare(v, x):
            if only_params:
                v = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), v_shapes)
            elif fresh:
                v = init(x)
            v = dict(v)
            if "params" in v:
                v["params"] = positive_params(v["params"])
            return v

        leaves, treedef = jax.tree_util.tree_flatten(v_shapes)

        def fn(leaves, x):
            return model.apply(jax.tree_util.tree_unflatten(treedef, leaves), x, rngs=rngs, **call_kwargs)

        return cls(fn, leaves, treedef, model.name or type(model).__name__, prepare)


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
