"""Independent reference implementations and PyTorch bridges shared by the tests.

Nothing here calls jaxcnn: these are the oracles the library is checked against.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

torch.set_num_threads(1)


def to_torch(x: np.ndarray) -> torch.Tensor:
    """Channels-last ``(N, *spatial, C)`` -> PyTorch's channels-first ``(N, C, *spatial)``."""
    return torch.tensor(np.moveaxis(np.asarray(x, np.float32), -1, 1).copy())


def from_torch(t: torch.Tensor) -> np.ndarray:
    """PyTorch's ``(N, C, *spatial)`` -> channels-last ``(N, *spatial, C)``."""
    return np.moveaxis(t.detach().numpy(), 1, -1)


def kernel_to_torch(w: np.ndarray) -> torch.Tensor:
    """``(*window, I, O)`` -> PyTorch conv weight ``(O, I, *window)``."""
    nd = w.ndim - 2
    return torch.tensor(np.transpose(np.asarray(w, np.float32), (nd + 1, nd, *range(nd))).copy())


def conv_loops(x, w, strides, pads, dilation, groups=1):
    """Direct cross-correlation by explicit loops over output positions (NumPy, float64).

    ``x``: (N, *spatial, C_in); ``w``: (*window, C_in // groups, C_out);
    ``pads``: one (low, high) pair per spatial dim (zeros).
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    nd = x.ndim - 2
    xp = np.pad(x, ((0, 0), *pads, (0, 0)))
    window = w.shape[:nd]
    c_in, c_out = x.shape[-1], w.shape[-1]
    gi, go = c_in // groups, c_out // groups
    out_sizes = [(xp.shape[1 + i] - ((window[i] - 1) * dilation[i] + 1)) // strides[i] + 1 for i in range(nd)]
    y = np.zeros((x.shape[0], *out_sizes, c_out))
    for o in itertools.product(*(range(s) for s in out_sizes)):
        for k in itertools.product(*(range(s) for s in window)):
            pos = tuple(o[i] * strides[i] + k[i] * dilation[i] for i in range(nd))
            patch = xp[(slice(None), *pos)]  # (N, C_in)
            for g in range(groups):
                y[(slice(None), *o, slice(g * go, (g + 1) * go))] += (
                    patch[:, g * gi : (g + 1) * gi] @ w[k][:, g * go : (g + 1) * go]
                )
    return y


def padding_from_spec(spec: str, n: int, k_eff: int, s: int) -> tuple[int, int]:
    """The padding pair DESIGN.md specifies for a string, written out from the text."""
    if spec == "VALID":
        return (0, 0)
    if spec == "FULL":
        return (k_eff - 1, k_eff - 1)
    if spec == "CAUSAL":
        return (k_eff - 1, 0)
    out = -(-n // s)  # SAME: output ceil(n / s), the smaller half of the total before
    total = max((out - 1) * s + k_eff - n, 0)
    return (total // 2, total - total // 2)
