"""Small helpers for reading jaxprs: what a traced function asks XLA to compute.

The analysis tools read the jaxpr of a model instead of the attributes of its
modules, so they work for any function and any Flax module (``flax.linen.Conv``,
``jaxcnn.nn.Conv`` or a module written yesterday): a convolution is whatever
emits ``conv_general_dilated``, a matrix product whatever emits ``dot_general``,
a pooling layer whatever emits ``reduce_window_*``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from jax.extend import core as jcore


def is_literal(v: Any) -> bool:
    """True for a constant written into the jaxpr (no producing equation)."""
    return isinstance(v, jcore.Literal)


def sub_jaxprs(eqn: Any) -> list[Any]:
    """The open jaxprs held in ``eqn``'s parameters (branches, bodies, called functions)."""
    return list(jcore.jaxprs_in_params(eqn.params))


def called_jaxpr(eqn: Any) -> Any | None:
    """The jaxpr a call-like equation runs on its own inputs, or ``None``.

    Returns a jaxpr only when it lines up one-to-one with the equation's inputs
    and outputs, which is what every call-like primitive (``pjit``,
    ``custom_jvp_call``, ``remat``, ...) does.
    """
    subs = sub_jaxprs(eqn)
    if len(subs) != 1:
        return None
    sub = subs[0]
    if len(sub.invars) == len(eqn.invars) and len(sub.outvars) == len(eqn.outvars):
        return sub
    return None


def closed_called(eqn: Any) -> Any | None:
    """Like :func:`called_jaxpr` but returns the ``ClosedJaxpr`` (with its constants) if there is one."""
    for val in eqn.params.values():
        vals = val if isinstance(val, tuple) else (val,)
        for v in vals:
            if isinstance(v, jcore.ClosedJaxpr) and len(v.jaxpr.invars) == len(eqn.invars):
                return v
    return None


def scope_names(eqn: Any) -> list[str]:
    """The entries of ``eqn``'s name stack (``jax.named_scope`` and Flax module names).

    Flax names a module's other methods ``"<module>.<method>"`` (a ResNet block's
    ``residual``); they are the module's own layers, so that entry is dropped:
    ``layer1_block1/conv1``, not ``layer1_block1/layer1_block1.residual/conv1``.
    """
    out: list[str] = []
    for s in str(eqn.source_info.name_stack).split("/"):
        if s and not (out and s.startswith(out[-1] + ".")):
            out.append(s)
    return out


def walk(jaxpr: Any, outer: tuple[str, ...] = (), multiplier: int = 1) -> Iterator[tuple[Any, tuple[str, ...], int]]:
    """Yield ``(eqn, name_stack, multiplier)`` for every equation, sub-jaxprs included.

    ``name_stack`` is the full scope path (the caller's scopes first: inside a
    ``jit`` the inner equations only know their own scopes). ``multiplier`` is
    how often the equation runs per call: a ``scan`` body runs ``length`` times;
    a ``while`` body is counted once (its trip count is not static); each
    ``cond`` branch is visited (callers take what they need).
    """
    for eqn in jaxpr.eqns:
        names = outer + tuple(scope_names(eqn))
        subs = sub_jaxprs(eqn)
        if not subs:
            yield eqn, names, multiplier
            continue
        times = multiplier * int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else multiplier
        for sub in subs:
            yield from walk(sub, names, times)


def interpret(
    jaxpr: Any,
    args: Sequence[Any],
    rule: Callable[[Any, list[Any], tuple[str, ...]], Sequence[Any]],
    *,
    consts: Sequence[Any] = (),
    literal: Callable[[Any], Any] = lambda v: v.val,
    outer: tuple[str, ...] = (),
) -> list[Any]:
    r"""Run ``jaxpr`` equation by equation with ``rule``: the one jaxpr interpreter of the analysis tools.

    .. math::

        \text{env}[\text{eqn.outvars}] = \text{rule}(\text{eqn}, \text{env}[\text{eqn.invars}], \text{names})

    in program order. A value is whatever ``rule`` computes: concrete arrays
    (an evaluator that swaps one primitive for another), or abstract facts such
    as the receptive field of every tensor. Variables never written read as
    ``None`` (a constant ``rule`` did not care about).

    Args:
      jaxpr: an open jaxpr (``closed.jaxpr``).
      args: one value per ``jaxpr.invars``.
      rule: ``rule(eqn, in_values, names) -> out_values`` (one per ``eqn.outvars``);
        ``names`` is the full scope path (``outer`` plus the equation's own). To
        enter a sub-jaxpr, ``rule`` calls :func:`interpret` again with ``outer=names``.
      consts: one value per ``jaxpr.constvars`` (``closed.consts``); fewer: ``None``.
      literal: the value of a literal (a constant written into the jaxpr).
      outer: the caller's scope names.

    Returns:
      One value per ``jaxpr.outvars``.
    """
    env: dict[Any, Any] = dict(zip(jaxpr.constvars, consts))

    def read(v: Any) -> Any:
        return literal(v) if is_literal(v) else env.get(v)

    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        outs = rule(eqn, [read(v) for v in eqn.invars], outer + tuple(scope_names(eqn)))
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]
