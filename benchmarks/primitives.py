"""Primitive ops, forward and forward+backward: jaxcnn.functional vs raw lax/jnp vs torch.nn.functional.

Every case runs the same op on the same float32 data in three ways:

* ``jaxcnn``: the public ``jaxcnn.functional`` op under ``jax.jit`` (NHWC).
* ``lax``: the raw XLA op a JAX user would write without jaxcnn
  (``lax.conv_general_dilated``, ``lax.reduce_window``, batch norm in plain
  ``jnp`` with Flax's one-pass variance), under ``jax.jit`` (NHWC).
* ``torch``: ``torch.nn.functional`` on NCHW tensors, as PyTorch users call it.

"fwd+bwd" is the forward pass and the gradients of a fixed output cotangent
with respect to every input (``x`` and, for convs, the kernel and bias; for
batch norm, scale and bias): ``jax.vjp`` in JAX, ``y.backward(g)`` in PyTorch.
The input gradient is included even for a first layer, where a training step
would not need it.

Convolution FLOPs are ``2 * MACs`` forward and ``3 * 2 * MACs`` forward+backward
(the input and the weight gradient each cost one forward's MACs); GFLOP/s is
reported next to the XLA:CPU float32 matmul peak measured in the same run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as TF
from jax import lax

import jaxcnn.functional as F
from benchmarks._timing import Case, Stats, measure, torch_variants, with_torch_threads
from benchmarks.primitives_transpose import (
    TransposeSpec,
    transpose_cases,
    transpose_specs,
)

PEERS = ("jaxcnn", "lax", "torch", "torch 1-thread")


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A convolution: input ``x_shape`` (N, *spatial, C_in), a ``window`` of ``c_out`` filters.

    ``padding`` is jaxcnn's spec (and lax's where lax knows it: "SAME");
    ``torch_padding`` is what a PyTorch user passes for the same output shape
    (an int, or "causal": ``F.pad`` on the left then no padding).
    """

    name: str
    x_shape: tuple[int, ...]
    window: tuple[int, ...]
    c_out: int
    strides: int = 1
    dilation: int = 1
    groups: int = 1
    padding: Any = "SAME"
    torch_padding: Any = 0
    bias: bool = False
    note: str = ""

    @property
    def nd(self) -> int:
        return len(self.window)

    def out_spatial(self) -> tuple[int, ...]:
        return tuple(math.ceil(n / self.strides) for n in self.x_shape[1:-1])

    def macs(self) -> int:
        n, c_in = self.x_shape[0], self.x_shape[-1]
        return n * math.prod(self.out_spatial()) * self.c_out * math.prod(self.window) * (c_in // self.groups)

    def describe(self) -> str:
        sp = "x".join(map(str, self.x_shape[1:-1]))
        k = "x".join(map(str, self.window))
        extra = "".join(
            [
                f" s{self.strides}" if self.strides > 1 else "",
                f" d{self.dilation}" if self.dilation > 1 else "",
                f" g{self.groups}" if self.groups > 1 else "",
                " +b" if self.bias else "",
            ]
        )
        return f"N={self.x_shape[0]} {sp}x{self.x_shape[-1]} -> {self.c_out}, k{k}{extra} {self.padding if isinstance(self.padding, str) else 'pad ' + str(self.padding)}"


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """A pooling or normalization op on ``x_shape`` (N, H, W, C)."""

    name: str
    kind: str  # "max_pool" | "avg_pool" | "batch_norm"
    x_shape: tuple[int, ...]
    window: int = 2
    stride: int | None = None  # None: the window
    padding: int = 0
    note: str = ""

    @property
    def strides(self) -> int:
        return self.window if self.stride is None else self.stride

    def describe(self) -> str:
        sp = "x".join(map(str, self.x_shape[1:]))
        pad = f" pad {self.padding}" if self.padding else ""
        what = (
            f"{self.window}x{self.window}/{self.strides}{pad}"
            if self.kind != "batch_norm"
            else "training, momentum 0.9 (torch 0.1)"
        )
        return f"N={self.x_shape[0]} {sp}, {what}"


def conv_specs(quick: bool) -> list[ConvSpec]:
    """The shapes of issue 7: LWLS layers at batch 128, ResNet-18 layers at batch 32, depthwise, 1-D causal."""
    specs = [
        ConvSpec(
            "lwls_conv1", (128, 28, 28, 1), (5, 5), 4, padding="SAME", torch_padding=2, bias=True, note="LWLS conv1"
        ),
        ConvSpec(
            "lwls_conv2",
            (128, 28, 28, 4),
            (5, 5),
            8,
            strides=2,
            padding="SAME",
            torch_padding=2,
            bias=True,
            note="LWLS conv2 (torch pads 2/2, jaxcnn SAME 1/2: same shape and cost)",
        ),
        ConvSpec(
            "lwls_conv3",
            (128, 14, 14, 8),
            (4, 4),
            12,
            strides=2,
            padding="SAME",
            torch_padding=1,
            bias=True,
            note="LWLS conv3",
        ),
        ConvSpec(
            "resnet_56x56x64", (32, 56, 56, 64), (3, 3), 64, padding=1, torch_padding=1, note="ResNet-18 layer1 conv"
        ),
        ConvSpec(
            "resnet_14x14x256", (32, 14, 14, 256), (3, 3), 256, padding=1, torch_padding=1, note="ResNet-18 layer3 conv"
        ),
        ConvSpec(
            "depthwise_28x28x256",
            (32, 28, 28, 256),
            (3, 3),
            256,
            groups=256,
            padding=1,
            torch_padding=1,
            note="depthwise 3x3 (MobileNet)",
        ),
        ConvSpec(
            "depthwise_s2_16x16x192",
            (128, 16, 16, 192),
            (3, 3),
            192,
            strides=2,
            groups=192,
            padding=1,
            torch_padding=1,
            note="MobileNetV2 CIFAR stage-3 depthwise, stride 2, batch 128",
        ),
        ConvSpec(
            "causal1d_d8",
            (32, 2048, 64),
            (2,),
            64,
            dilation=8,
            padding="CAUSAL",
            torch_padding="causal",
            bias=True,
            note="WaveNet dilated causal conv",
        ),
    ]
    if quick:
        specs = [s for s in specs if s.name in ("lwls_conv1", "resnet_14x14x256")]
    return specs


def op_specs(quick: bool) -> list[OpSpec]:
    specs = [
        OpSpec("max_pool", "max_pool", (32, 56, 56, 64), 2),
        OpSpec(
            "max_pool_3x3s2",
            "max_pool",
            (32, 112, 112, 64),
            3,
            stride=2,
            padding=1,
            note="ResNet ImageNet stem max-pool",
        ),
        OpSpec("avg_pool", "avg_pool", (32, 56, 56, 64), 2),
        OpSpec("batch_norm", "batch_norm", (32, 56, 56, 64)),
    ]
    if quick:
        specs = [s for s in specs if s.name in ("max_pool", "batch_norm")]
    return specs


# ---------------------------------------------------------------- implementations


def _jax_case(name: str, fn: Callable, args: tuple) -> Case:
    def first():
        jax.block_until_ready(fn(*args))

    def body(n: int):
        out = None
        for _ in range(n):
            out = fn(*args)
        jax.block_until_ready(out)

    return Case(name, first, body)


def _torch_case(name: str, fn: Callable[[], Any], threads: int | None = None) -> Case:
    def body(n: int):
        for _ in range(n):
            fn()

    return Case(name, with_torch_threads(fn, threads), with_torch_threads(body, threads))


def _torch_cases(fn: Callable[[], Any]) -> dict[str, Case]:
    """ "torch" (all cores) and, on a multi-core machine, "torch 1-thread"."""
    return {name: _torch_case(name, fn, threads) for name, threads in torch_variants()}


def _vjp_all(f: Callable) -> Callable:
    """``(g, *args) -> (f(*args), grads of <f(*args), g> w.r.t. every arg)`` in one jit.

    The output is returned so that XLA cannot drop the forward pass where the
    backward does not read it (a convolution's gradients need only ``x``, ``w``
    and ``g``): PyTorch's ``y.backward(g)`` row always runs its forward.
    """

    def fb(g, *args):
        y, pull = jax.vjp(f, *args)
        return y, pull(g)

    return jax.jit(fb)


def _lax_padding(spec: ConvSpec) -> Any:
    if spec.padding == "CAUSAL":
        return [((spec.window[0] - 1) * spec.dilation, 0)]
    if isinstance(spec.padding, int):
        return [(spec.padding, spec.padding)] * spec.nd
    return spec.padding  # "SAME": lax's own rule


def conv_cases(spec: ConvSpec, seed: int = 0) -> dict[str, dict[str, Case]]:
    """``{"fwd": {peer: Case}, "fwd+bwd": {peer: Case}}`` for one convolution."""
    rng = np.random.default_rng(seed)
    c_in = spec.x_shape[-1]
    x = rng.standard_normal(spec.x_shape, np.float32)
    w = (
        rng.standard_normal((*spec.window, c_in // spec.groups, spec.c_out), np.float32)
        / math.sqrt(math.prod(spec.window) * c_in / spec.groups)
    ).astype(np.float32)
    b = rng.standard_normal((spec.c_out,), np.float32) * 0.1 if spec.bias else None
    g = rng.standard_normal((spec.x_shape[0], *spec.out_spatial(), spec.c_out), np.float32)

    def jx(x, w, b=None):
        return F.conv(x, w, b, strides=spec.strides, padding=spec.padding, dilation=spec.dilation, groups=spec.groups)

    lhs = "N" + "DHW"[-spec.nd :] + "C"
    dn = (lhs, "DHW"[-spec.nd :] + "IO", lhs)

    def lx(x, w, b=None):
        y = lax.conv_general_dilated(
            x,
            w,
            (spec.strides,) * spec.nd,
            _lax_padding(spec),
            rhs_dilation=(spec.dilation,) * spec.nd,
            dimension_numbers=dn,
            feature_group_count=spec.groups,
        )
        return y if b is None else y + b.reshape((1,) * (y.ndim - 1) + (-1,))

    args = tuple(jnp.asarray(a) for a in ((x, w) if b is None else (x, w, b)))
    gj = jnp.asarray(g)

    # PyTorch: NCHW input, (O, I, *window) weight.
    nd = spec.nd
    tx = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
    tw = torch.from_numpy(np.ascontiguousarray(np.transpose(w, (nd + 1, nd, *range(nd)))))
    tb = None if b is None else torch.from_numpy(b.copy())
    tg = torch.from_numpy(np.ascontiguousarray(np.moveaxis(g, -1, 1)))
    conv_fn = {1: TF.conv1d, 2: TF.conv2d, 3: TF.conv3d}[nd]

    def tconv(x, w, b):
        if spec.torch_padding == "causal":
            x = TF.pad(x, ((spec.window[0] - 1) * spec.dilation, 0))
            pad = 0
        else:
            pad = spec.torch_padding
        return conv_fn(x, w, b, stride=spec.strides, padding=pad, dilation=spec.dilation, groups=spec.groups)

    def t_fwd():
        with torch.no_grad():
            return tconv(tx, tw, tb)

    txg, twg = tx.clone().requires_grad_(True), tw.clone().requires_grad_(True)
    tbg = None if tb is None else tb.clone().requires_grad_(True)

    def t_fwdbwd():
        txg.grad = twg.grad = None
        if tbg is not None:
            tbg.grad = None
        tconv(txg, twg, tbg).backward(tg)

    return {
        "fwd": {
            "jaxcnn": _jax_case("jaxcnn", jax.jit(jx), args),
            "lax": _jax_case("lax", jax.jit(lx), args),
            **_torch_cases(t_fwd),
        },
        "fwd+bwd": {
            "jaxcnn": _jax_case("jaxcnn", _vjp_all(jx), (gj, *args)),
            "lax": _jax_case("lax", _vjp_all(lx), (gj, *args)),
            **_torch_cases(t_fwdbwd),
        },
    }


def op_cases(spec: OpSpec, seed: int = 0) -> dict[str, dict[str, Case]]:
    """``{"fwd": {peer: Case}, "fwd+bwd": {peer: Case}}`` for a pooling or batch-norm op."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.x_shape, np.float32)
    c = spec.x_shape[-1]
    k = spec.window
    tx = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
    if spec.kind in ("max_pool", "avg_pool"):
        st, p = spec.strides, spec.padding
        out_shape = (spec.x_shape[0], *((n + 2 * p - k) // st + 1 for n in spec.x_shape[1:3]), c)
        win = (1, k, k, 1)
        if spec.kind == "max_pool":
            jx = lambda x: F.max_pool(x, k, st, p)
            lx = lambda x: lax.reduce_window(
                x, -jnp.inf, lax.max, win, (1, st, st, 1), ((0, 0), (p, p), (p, p), (0, 0))
            )
            tf = lambda x: TF.max_pool2d(x, k, st, p)
        else:
            jx = lambda x: F.avg_pool(x, k)
            lx = lambda x: lax.reduce_window(x, 0.0, lax.add, win, win, "VALID") / (k * k)
            tf = lambda x: TF.avg_pool2d(x, k, k)
        args = (jnp.asarray(x),)
        targs_fwd = (tx,)
        targs_grad = (tx.clone().requires_grad_(True),)
    elif spec.kind == "batch_norm":
        out_shape = spec.x_shape
        scale = (1 + 0.1 * rng.standard_normal(c)).astype(np.float32)
        bias = (0.1 * rng.standard_normal(c)).astype(np.float32)
        mean, var = np.zeros(c, np.float32), np.ones(c, np.float32)

        def jx(x, scale, bias, mean, var):
            return F.batch_norm(x, mean, var, scale, bias, training=True, momentum=0.9, epsilon=1e-5)

        def lx(x, scale, bias, mean, var):  # Flax's default: one-pass (fast) variance
            m = jnp.mean(x, axis=(0, 1, 2))
            v = jnp.maximum(jnp.mean(jnp.square(x), axis=(0, 1, 2)) - jnp.square(m), 0.0)
            y = (x - m) * (scale * lax.rsqrt(v + 1e-5)) + bias
            return y, (0.9 * mean + 0.1 * m, 0.9 * var + 0.1 * v)

        tmean, tvar = torch.zeros(c), torch.ones(c)

        def tf(x, scale, bias):
            return TF.batch_norm(x, tmean, tvar, scale, bias, training=True, momentum=0.1, eps=1e-5)

        args = tuple(jnp.asarray(a) for a in (x, scale, bias, mean, var))
        targs_fwd = (tx, torch.from_numpy(scale), torch.from_numpy(bias))
        targs_grad = tuple(a.clone().requires_grad_(True) for a in targs_fwd)
    else:
        raise ValueError(f"unknown op kind {spec.kind!r}")
    g = rng.standard_normal(out_shape, np.float32)
    tg = torch.from_numpy(np.ascontiguousarray(np.moveaxis(g, -1, 1)))

    def t_fwd():
        with torch.no_grad():
            return tf(*targs_fwd)

    def t_fwdbwd():
        for a in targs_grad:
            a.grad = None
        tf(*targs_grad).backward(tg)

    vjp = _bn_vjp if spec.kind == "batch_norm" else _vjp_all
    fb_j, fb_l = vjp(jx), vjp(lx)
    gj = jnp.asarray(g)
    return {
        "fwd": {
            "jaxcnn": _jax_case("jaxcnn", jax.jit(jx), args),
            "lax": _jax_case("lax", jax.jit(lx), args),
            **_torch_cases(t_fwd),
        },
        "fwd+bwd": {
            "jaxcnn": _jax_case("jaxcnn", fb_j, (gj, *args)),
            "lax": _jax_case("lax", fb_l, (gj, *args)),
            **_torch_cases(t_fwdbwd),
        },
    }


def _bn_vjp(f: Callable) -> Callable:
    """Batch norm ``f(x, scale, bias, mean, var) -> (y, stats)``: gradients w.r.t. x, scale, bias, and the new stats."""

    def fb(g, x, scale, bias, mean, var):
        y, pull, stats = jax.vjp(lambda x, s, b: f(x, s, b, mean, var), x, scale, bias, has_aux=True)
        return y, pull(g), stats

    return jax.jit(fb)


# ---------------------------------------------------------------- the section


def matmul_peak(*, n: int = 2048, repeats: int = 5, min_time: float = 0.3, log=None) -> dict[str, Any]:
    """float32 ``(n, n) @ (n, n)`` GFLOP/s of XLA:CPU (``jnp.dot`` under jit) and of PyTorch (``torch.mm``)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    cases = [_jax_case("xla", jax.jit(jnp.dot), (ja, jb)), _torch_case("torch", lambda: torch.mm(ta, tb))]
    stats = measure(cases, repeats=repeats, min_time=min_time, log=log)
    flops = 2 * n**3
    return {
        "n": n,
        "flops": flops,
        "xla_gflops": flops / stats["xla"].median_s / 1e9,
        "torch_gflops": flops / stats["torch"].median_s / 1e9,
        "xla_best_gflops": flops / stats["xla"].min_s / 1e9,
        "stats": {k: v.to_dict() for k, v in stats.items()},
    }


def run(*, quick: bool, repeats: int, min_time: float, select: str | None = None, log=print) -> list[dict[str, Any]]:
    """Time every primitive (interleaving the three peers per case) and return one record per (op, pass)."""
    records = []
    specs: list[Any] = [*conv_specs(quick), *transpose_specs(quick), *op_specs(quick)]
    for spec in specs:
        if select and select not in spec.name:
            continue
        if isinstance(spec, TransposeSpec):
            cases = transpose_cases(spec, _jax_case, _vjp_all, _torch_cases)
        else:
            cases = conv_cases(spec) if isinstance(spec, ConvSpec) else op_cases(spec)
        for pass_name, by_peer in cases.items():
            log(f"primitives: {spec.name} {pass_name}")
            stats: dict[str, Stats] = measure(list(by_peer.values()), repeats=repeats, min_time=min_time, log=log)
            rec: dict[str, Any] = {
                "name": spec.name,
                "pass": pass_name,
                "what": spec.describe(),
                "note": spec.note,
                "x_shape": list(spec.x_shape),
                "stats": {k: v.to_dict() for k, v in stats.items()},
            }
            if isinstance(spec, (ConvSpec, TransposeSpec)):
                rec["macs"] = spec.macs()
                rec["flops"] = 2 * spec.macs() * (1 if pass_name == "fwd" else 3)
            records.append(rec)
            del stats
        del cases
    return records
