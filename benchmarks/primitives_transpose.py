"""Transposed convolution rows of the primitives table: jaxcnn vs raw lax vs PyTorch, 2-D and 3-D, stride 2.

jax#23783 and jax#31662 report XLA's transposed convolution far behind
PyTorch on CPU (ConvTranspose3D 32x). Each case runs the same op three ways:
``jaxcnn.functional.conv_transpose`` under jit with its default ``algorithm=None``
(on CPU the rule of ``F.choose_transpose_algorithm`` picks "subpixel" for these
stride-2 cases), ``jax.lax.conv_transpose``
(what a JAX user writes; ``transpose_kernel=True`` makes it the gradient of a
convolution with the same kernel, as PyTorch's), and
``torch.nn.functional.conv_transpose{2,3}d`` on channels-first tensors.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as TF
from jax import lax

import jaxcnn.functional as F


@dataclasses.dataclass(frozen=True)
class TransposeSpec:
    """``y`` ``(N, *spatial, C_out)`` -> ``(N, *(s * spatial), C_in)`` with a ``window`` kernel, stride 2, padding ``pad``."""

    name: str
    y_shape: tuple[int, ...]
    window: tuple[int, ...]
    c_in: int
    strides: int = 2
    pad: int = 1
    note: str = ""

    @property
    def nd(self) -> int:
        return len(self.window)

    @property
    def x_shape(self) -> tuple[int, ...]:
        """The op's input (``y``), under the name every primitives record uses."""
        return self.y_shape

    def out_spatial(self) -> tuple[int, ...]:
        return tuple((n - 1) * self.strides - 2 * self.pad + k for n, k in zip(self.y_shape[1:-1], self.window))

    def macs(self) -> int:
        return math.prod(self.y_shape) * self.c_in * math.prod(self.window)

    def describe(self) -> str:
        sp = "x".join(map(str, self.y_shape[1:-1]))
        k = "x".join(map(str, self.window))
        return f"N={self.y_shape[0]} {sp}x{self.y_shape[-1]} -> {self.c_in}, k{k} s{self.strides} pad {self.pad} (transposed)"


def transpose_specs(quick: bool) -> list[TransposeSpec]:
    specs = [
        TransposeSpec("conv_transpose2d_s2", (32, 16, 16, 128), (4, 4), 64, note="DCGAN-style upsampling, 16 -> 32"),
        TransposeSpec(
            "conv_transpose3d_s2", (8, 8, 8, 8, 64), (4, 4, 4), 32, note="3-D decoder upsampling, 8 -> 16 (jax#31662)"
        ),
    ]
    return [] if quick else specs


def transpose_cases(spec: TransposeSpec, jax_case, vjp_all, torch_cases, seed: int = 0) -> dict[str, dict[str, Any]]:
    """``{"fwd": {peer: Case}, "fwd+bwd": {peer: Case}}``; the case builders come from :mod:`benchmarks.primitives`."""
    rng = np.random.default_rng(seed)
    nd, c_out = spec.nd, spec.y_shape[-1]
    y = rng.standard_normal(spec.y_shape, np.float32)
    w = (
        rng.standard_normal((*spec.window, spec.c_in, c_out), np.float32) / math.sqrt(math.prod(spec.window) * c_out)
    ).astype(np.float32)
    g = rng.standard_normal((spec.y_shape[0], *spec.out_spatial(), spec.c_in), np.float32)
    spatial = "DHW"[-nd:]
    dn = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
    k_pad = [(k - 1 - spec.pad, k - 1 - spec.pad) for k in spec.window]

    def jx(y, w):
        return F.conv_transpose(y, w, strides=spec.strides, padding=spec.pad)

    def lx(y, w):  # transpose_kernel=True: the gradient of conv with w, as F.conv_transpose and PyTorch
        return lax.conv_transpose(y, w, (spec.strides,) * nd, k_pad, dimension_numbers=dn, transpose_kernel=True)

    args = (jnp.asarray(y), jnp.asarray(w))
    ty = torch.from_numpy(np.ascontiguousarray(np.moveaxis(y, -1, 1)))
    tw = torch.from_numpy(np.ascontiguousarray(np.transpose(w, (nd + 1, nd, *range(nd)))))  # (C_out, C_in, *window)
    tg = torch.from_numpy(np.ascontiguousarray(np.moveaxis(g, -1, 1)))
    fn = {2: TF.conv_transpose2d, 3: TF.conv_transpose3d}[nd]

    def t_fwd():
        with torch.no_grad():
            return fn(ty, tw, None, spec.strides, spec.pad)

    tyg, twg = ty.clone().requires_grad_(True), tw.clone().requires_grad_(True)

    def t_fwdbwd():
        tyg.grad = twg.grad = None
        fn(tyg, twg, None, spec.strides, spec.pad).backward(tg)

    gj = jnp.asarray(g)
    return {
        "fwd": {
            "jaxcnn": jax_case("jaxcnn", jax.jit(jx), args),
            "lax": jax_case("lax", jax.jit(lx), args),
            **torch_cases(t_fwd),
        },
        "fwd+bwd": {
            "jaxcnn": jax_case("jaxcnn", vjp_all(jx), (gj, *args)),
            "lax": jax_case("lax", vjp_all(lx), (gj, *args)),
            **torch_cases(t_fwdbwd),
        },
    }
