"""Run a PyTorch model and its jaxcnn port side by side and say, layer by layer, where they part: :func:`compare`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxcnn import _validate
from jaxcnn.interop.torch import layout
from jaxcnn.interop.torch._deps import require_torch, to_numpy
from jaxcnn.interop.torch.convert import MappingLike, _path_mapping, plan
from jaxcnn.interop.torch.ported import PortedCNN
from jaxcnn.interop.torch.structure import call_kwargs, trace


class LayerDiff(NamedTuple):
    """One layer's outputs compared.

    Attributes:
      jax_name, torch_name: the module path and the PyTorch module name.
      shape: the (channels-last) output shape, or a note when the shapes differ.
      max_abs: ``max |a - b|``.
      max_rel: ``max |a - b| / max |b|`` (relative to the layer's largest PyTorch output).
      ok: ``|a - b| <= atol + rtol * |b|`` everywhere (``np.allclose``).
    """

    jax_name: str
    torch_name: str
    shape: str
    max_abs: float
    max_rel: float
    ok: bool


class Comparison(NamedTuple):
    """The result of :func:`compare`: ``rows`` in PyTorch's execution order; ``str()`` is a table."""

    rows: tuple[LayerDiff, ...]
    atol: float
    rtol: float

    @property
    def first_divergence(self) -> LayerDiff | None:
        """The first layer whose outputs differ beyond the tolerance, or ``None``."""
        return next((r for r in self.rows if not r.ok), None)

    @property
    def ok(self) -> bool:
        return self.first_divergence is None

    def __str__(self) -> str:
        head = ("jaxcnn layer", "PyTorch layer", "shape", "max abs diff", "max rel diff", "")
        body = [
            (r.jax_name, r.torch_name, r.shape, f"{r.max_abs:.3e}", f"{r.max_rel:.3e}", "ok" if r.ok else "DIFFERS")
            for r in self.rows
        ]
        widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        first = self.first_divergence
        lines.append(
            f"(atol={self.atol:g}, rtol={self.rtol:g}) "
            + (
                "all layers agree"
                if first is None
                else f"first divergence: {first.jax_name} (PyTorch {first.torch_name}), max abs diff {first.max_abs:.3e}"
            )
        )
        return "\n".join(lines)


def _pairs(model: nn.Module, mapping: MappingLike, input_shape: Sequence[int]) -> list[tuple[str, str]]:
    """``(jaxcnn module path, PyTorch module name)`` of every layer to compare."""
    if isinstance(model, PortedCNN):
        return [(f"layers_{i}", name) for i, name in enumerate(model.torch_names)]
    structure = trace(model, input_shape)
    seen: dict[str, str] = {}
    for leaf in plan(structure, _path_mapping(model, mapping)):
        seen.setdefault(leaf.path, leaf.torch_key.rsplit(".", 1)[0])
    return list(seen.items())


def _diff(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> tuple[float, float, bool]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    err = np.abs(a - b)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    max_abs = float(err.max()) if err.size else 0.0
    return max_abs, max_abs / scale if scale > 0 else max_abs, bool(np.allclose(a, b, atol=atol, rtol=rtol))


def compare(
    torch_model: Any,
    model: nn.Module,
    variables: Any,
    x: Any,
    *,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    mapping: MappingLike = None,
) -> Comparison:
    """Run both models on ``x`` (inference mode) and compare every layer's output.

    The PyTorch model is run in ``eval()`` mode (its mode is restored after)
    with forward hooks on the compared modules; the jaxcnn model with
    ``train=False`` and ``capture_intermediates``. Layers are paired by the
    conversion's correspondence: position for a :func:`from_torch_module`
    model, the zoo's torchvision names, or ``mapping`` (as :func:`from_torch`);
    every module with variables is compared, then the final output.

    Args:
      torch_model: the ``torch.nn.Module``.
      model: the jaxcnn model, ``variables`` its variables.
      x: one batch in PyTorch's layout ``(N, C, *spatial)`` (array or tensor);
        the jaxcnn model gets it channels-last unless it takes channels-first.
      atol, rtol: a layer agrees when ``|a - b| <= atol + rtol * |b|``.
      mapping: jaxcnn module path -> PyTorch module name, for other models.

    Returns:
      A :class:`Comparison`; ``print`` it for the table, ``.first_divergence``
      names the first layer beyond tolerance.
    """
    torch = require_torch("compare")
    if not isinstance(torch_model, torch.nn.Module):
        raise TypeError(f"torch_model must be a torch.nn.Module, got {type(torch_model).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a flax.linen.Module, got {_validate.fmt(model)}")
    atol, rtol = _validate.check_nonnegative(atol, "atol"), _validate.check_nonnegative(rtol, "rtol")
    x_np = to_numpy(x).astype(np.float32)
    if x_np.ndim < 2:
        raise ValueError(f"x must be a batch (N, C, *spatial) or (N, F), got shape {x_np.shape}")
    x_jax = x_np if getattr(model, "channels_first", False) else layout.channels_last(x_np)
    pairs = _pairs(model, mapping, x_jax.shape)
    modules = dict(torch_model.named_modules())
    unknown = [t for _, t in pairs if t not in modules]
    if unknown:
        raise ValueError(f"the PyTorch model has no module(s) {', '.join(map(repr, unknown))}; check mapping")
    captured: dict[str, list[np.ndarray]] = {}
    hooks = [
        modules[t].register_forward_hook(
            lambda mod, args, out, t=t: captured.setdefault(t, []).append(out.detach().cpu().numpy().copy())
        )
        for _, t in pairs
    ]
    was_training = torch_model.training
    try:
        torch_model.eval()
        with torch.no_grad():
            torch_out = to_numpy(torch_model(torch.from_numpy(x_np)))
    finally:
        for h in hooks:
            h.remove()
        torch_model.train(was_training)
    jax_out, state = model.apply(
        variables, jnp.asarray(x_jax), capture_intermediates=True, mutable=["intermediates"], **call_kwargs(model)
    )
    inter = state["intermediates"]
    order = {t: i for i, t in enumerate(captured)}
    rows = []
    for jax_name, torch_name in sorted(pairs, key=lambda p: order.get(p[1], len(order))):
        node = inter
        for k in jax_name.split("/"):
            node = node.get(k, {}) if isinstance(node, Mapping) else {}
        ours = node.get("__call__", (None,))[0] if isinstance(node, Mapping) else None
        theirs = captured.get(torch_name, [None])[0]
        if ours is None or theirs is None:
            rows.append(LayerDiff(jax_name, torch_name, "not run", float("nan"), float("nan"), False))
            continue
        theirs = layout.channels_last(theirs)  # inside, every jaxcnn layer is channels-last
        ours = np.asarray(ours)
        if ours.shape != theirs.shape:
            rows.append(
                LayerDiff(jax_name, torch_name, f"{ours.shape} vs {theirs.shape}", float("inf"), float("inf"), False)
            )
            continue
        rows.append(LayerDiff(jax_name, torch_name, str(ours.shape), *_diff(ours, theirs, atol, rtol)))
    theirs = torch_out if getattr(model, "channels_first", False) else layout.channels_last(torch_out)
    ours = np.asarray(jax_out)
    if ours.shape == theirs.shape:
        rows.append(LayerDiff("(output)", "(output)", str(ours.shape), *_diff(ours, theirs, atol, rtol)))
    else:
        rows.append(
            LayerDiff("(output)", "(output)", f"{ours.shape} vs {theirs.shape}", float("inf"), float("inf"), False)
        )
    return Comparison(tuple(rows), atol, rtol)
