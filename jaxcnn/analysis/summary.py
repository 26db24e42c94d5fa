"""Per-layer table of a Flax model: output shape, parameters and multiply-accumulates."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import _validate
from jaxcnn.analysis import _jaxpr
from jaxcnn.analysis._inputs import default_rngs, per_example_shape
from jaxcnn.analysis._models import linen_view
from jaxcnn.functional.conv import default_conv_algorithm

_MARK = "jaxcnn_summary_call_"


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One row of a :class:`Summary`: one call of one module.

    Attributes:
      name: the module's path in the variable tree, ``"/"``-joined (``"Conv_0"``,
        ``"block1/conv2"``); the class name for the top-level module.
      type: the module's class name (``"Conv"``, ``"Dense"``, ``"BatchNorm"``).
      output_shape: shape of the output for one example (the batch axis dropped),
        a tuple of ints; a tuple of such tuples if the module returns several arrays.
      params: number of parameters the module holds itself (its ``params``
        collection, children excluded); 0 on repeated calls of a shared module.
      macs: multiply-accumulates per example the module computes itself
        (children excluded), see :func:`summary` for the rules.
    """

    name: str
    type: str
    output_shape: tuple
    params: int
    macs: int

    @property
    def shape_str(self) -> str:
        """The output shape written ``28x28x4`` (several outputs joined by ``", "``)."""
        shapes = self.output_shape
        if shapes and all(isinstance(s, tuple) for s in shapes):
            return ", ".join(_shape_str(s) for s in shapes)
        return _shape_str(shapes)


def _shape_str(shape: tuple) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


@dataclasses.dataclass(frozen=True)
class Summary:
    """What :func:`summary` returns: the rows and the totals.

    Attributes:
      rows: list of :class:`LayerRow`, in call order.
      total_params: parameters in the model's whole ``params`` collection.
      total_macs: multiply-accumulates per example of the whole forward pass.
      input_shape: the per-example input shape the model was traced with.
    """

    rows: list
    total_params: int
    total_macs: int
    input_shape: tuple

    def _table(self) -> tuple[list[str], list[list[str]]]:
        head = ["Layer", "Type", "Output shape", "Params", "MACs"]
        body = [[r.name, r.type, r.shape_str, f"{r.params:,}", f"{r.macs:,}"] for r in self.rows]
        body.append(["Total", "", "", f"{self.total_params:,}", f"{self.total_macs:,}"])
        return head, body

    def to_markdown(self) -> str:
        """The table as GitHub markdown, numbers right-aligned, a totals row last."""
        head, body = self._table()
        lines = [
            f"Input: {_shape_str(self.input_shape)}",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "|".join(["---", "---", "---", "---:", "---:"]) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)

    def to_text(self) -> str:
        """The table as aligned plain text (names left-aligned, numbers right-aligned)."""
        head, body = self._table()
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

        def line(row):
            cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
            return "  ".join(cells).rstrip()

        rule = "-" * len(line(head))
        rows = [line(head), rule, *map(line, body[:-1]), rule, line(body[-1])]
        return "\n".join([f"Input: {_shape_str(self.input_shape)}", *rows])

    def __str__(self) -> str:
        return self.to_text()


def eqn_macs(eqn: Any) -> int:
    """Multiply-accumulates of one jaxpr equation (0 for everything but conv and dot).

    * ``conv_general_dilated``: ``positions * prod(window) * I * O`` where ``I``
      is the kernel's input channels per group and ``O`` its output channels;
      ``positions`` is the number of output positions times the batch, or, when
      the input is dilated (``lhs_dilation > 1``: a transposed convolution), the
      number of *input* positions times the batch — each input value is
      scattered over the window, and the zeros XLA inserts between inputs are
      not counted.
    * ``dot_general``: ``output size * prod(contracted sizes)``.
    """
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
        out = eqn.outvars[0].aval.shape
        dn = eqn.params["dimension_numbers"]
        window = math.prod(rhs[i] for i in dn.rhs_spec[2:])
        i_per_group, o = rhs[dn.rhs_spec[1]], rhs[dn.rhs_spec[0]]
        if any(d != 1 for d in eqn.params["lhs_dilation"]):
            positions = math.prod(lhs[i] for i in (dn.lhs_spec[0], *dn.lhs_spec[2:]))
        else:
            positions = math.prod(out[i] for i in (dn.out_spec[0], *dn.out_spec[2:]))
        return positions * window * i_per_group * o
    if name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in lhs_contract)
    return 0


@dataclasses.dataclass
class _Call:
    path: tuple
    type: str
    parent: int | None
    out_shapes: tuple = ()
    children: int = 0
    macs: int = 0


def _own_params(tree: Any, path: tuple) -> int:
    node = tree
    for name in path:
        if not isinstance(node, Mapping) or name not in node:
            return 0
        node = node[name]
    if not isinstance(node, Mapping):
        return 0
    return sum(int(np.prod(v.shape)) for v in node.values() if not isinstance(v, Mapping) and hasattr(v, "shape"))


def summary(
    model: nn.Module, input_shape: Sequence[int], *, dtype: Any = jnp.float32, rngs: Any = None, **call_kwargs: Any
) -> Summary:
    r"""Per-layer table of a Flax model: output shape, parameters, multiply-accumulates.

    Works for any ``flax.linen.Module``: the model is initialized under
    ``jax.eval_shape`` (no weights are computed) and its ``apply`` traced once
    with ``jax.make_jaxpr`` while ``flax.linen.intercept_methods`` records every
    module call; each call runs inside its own ``jax.named_scope``, so every
    equation of the jaxpr is attributed to the innermost module that emitted it.

    .. math::

        \text{MACs}_{\text{conv}} = |\text{out positions}| \cdot \prod \text{window}
            \cdot \frac{C_{in}}{G} \cdot C_{out}, \qquad
        \text{MACs}_{\text{dense}} = n_{in} \cdot n_{out}

    Counting rules (read from the jaxpr, so they hold for every module that
    emits these operations):

    * convolution (``conv_general_dilated``): output positions x window size x
      input channels per group x output channels;
    * transposed convolution (a convolution with a dilated input): *input*
      positions x window size x input channels per group x output channels, i.e.
      ``in_positions * prod(window) * C_in_per_group * C_out`` in the kernel
      layout of :func:`jaxcnn.functional.conv_transpose` — each input value is
      scattered over the window once; the zeros inserted between inputs are not
      counted;
    * matrix product (``dot_general``: Dense, einsum, attention): output size x
      contracted size, ``n_in * n_out`` for a Dense layer;
    * everything else counts 0: bias additions, activations, pooling, batch/group/
      layer normalization, dropout, reshapes. (They are O(activations), not
      O(activations x weights).)
    * a ``scan`` body counts ``length`` times, a ``while`` body once, and every
      branch of a ``cond`` is added (an upper bound).

    Rows: one per module call that holds parameters itself, computes MACs itself,
    or calls no other module (a leaf such as ``MaxPool``); containers that only
    call children are not listed. A module called twice (shared weights) gets
    two rows and its parameters are counted on the first.

    Args:
      model: a ``flax.linen.Module``.
      input_shape: shape of ONE example, without the batch axis, e.g.
        ``(28, 28, 1)``; the model is traced with a batch of 1.
      dtype: input dtype.
      rngs: PRNG streams for ``init``/``apply``; default ``{"params": key(0),
        "dropout": key(1)}``.
      **call_kwargs: passed to the model's ``__call__`` (``train=False``, ...).

    Returns:
      A :class:`Summary`: ``rows`` (list of :class:`LayerRow`), ``total_params``
      (the whole ``params`` collection), ``total_macs`` (per example),
      ``to_markdown()``, ``to_text()``.

    Example:
      >>> import flax.linen as nn
      >>> from jaxcnn.analysis import summary
      >>> s = summary(nn.Dense(10), (784,))
      >>> s.total_params, s.total_macs
      (7850, 7840)

    Reference: Lindholm, Wahlström, Lindsten & Schön, *Machine Learning: A First
    Course for Engineers and Scientists* (LWLS), 2022, Example 6.3 (the table of
    parameters per layer).
    """
    model, _ = linen_view(model)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a flax.linen.Module or a jaxcnn NNX zoo model (jaxcnn.nnx.Mirror), got {_validate.fmt(model)}"
        )
    shape = per_example_shape(input_shape)
    rngs = default_rngs(rngs)
    x = jax.ShapeDtypeStruct((1, *shape), dtype)
    variables = jax.eval_shape(lambda x: model.init(rngs, x, **call_kwargs), x)
    mutable = [c for c in variables if c != "params"] or False

    calls: list[_Call] = []
    stack: list[int] = []

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        path = tuple(module.path) if module.scope is not None else ()
        if context.method_name == "setup" or (stack and calls[stack[-1]].path == path):
            return next_fun(*args, **kwargs)  # a helper method of the module being called
        index = len(calls)
        parent = stack[-1] if stack else None
        if parent is not None:
            calls[parent].children += 1
        calls.append(_Call(path, type(module).__name__, parent))
        stack.append(index)
        try:
            with jax.named_scope(f"{_MARK}{index}"):
                out = next_fun(*args, **kwargs)
        finally:
            stack.pop()
        leaves = [leaf for leaf in jax.tree_util.tree_leaves(out) if hasattr(leaf, "shape")]
        calls[index].out_shapes = tuple(tuple(leaf.shape[1:]) for leaf in leaves)
        return out

    def apply(variables, x):
        return model.apply(variables, x, rngs=rngs, mutable=mutable, **call_kwargs)

    # "xla": every convolution appears as one conv_general_dilated (with its geometry) in the jaxpr
    with nn.intercept_methods(interceptor), default_conv_algorithm("xla"):
        closed = jax.make_jaxpr(apply)(variables, x)

    total_macs = 0
    emitted = set()  # calls with at least one equation in the final jaxpr
    for eqn, names, times in _jaxpr.walk(closed.jaxpr):
        owners = [int(n[len(_MARK) :]) for n in names if n.startswith(_MARK)]
        emitted.update(owners)
        macs = eqn_macs(eqn) * times
        total_macs += macs
        if owners:
            calls[owners[-1]].macs += macs
    # Lifted transforms (nn.scan) may trace a module once more just for shapes: such a
    # call emits nothing while another call of the same path does; drop it.
    live_paths = {calls[i].path for i in emitted}
    calls = [c for i, c in enumerate(calls) if i in emitted or c.path not in live_paths]

    params = nn.meta.unbox(variables.get("params", {}))
    seen: set[tuple] = set()
    rows = []
    for call in calls:
        own = 0 if call.path in seen else _own_params(params, call.path)
        seen.add(call.path)
        if not (own or call.macs or call.children == 0):
            continue
        out = call.out_shapes[0] if len(call.out_shapes) == 1 else call.out_shapes
        name = "/".join(call.path) or call.type
        rows.append(LayerRow(name, call.type, out, own, call.macs))
    total_params = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(params))
    return Summary(rows, total_params, total_macs, shape)
