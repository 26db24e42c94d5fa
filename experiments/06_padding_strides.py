"""Padding and strides: output sizes of VALID, SAME, FULL and CAUSAL convolutions, by formula and by measurement.

For input size n, kernel size k (effective size ``(k - 1) d + 1`` with
dilation d) and stride s, the lecture's formulas are written out here by hand::

    VALID   floor((n - k) / s) + 1          no padding
    SAME    ceil(n / s)                     pad so every input position starts a window (stride 1: n out)
    FULL    floor((n + k - 2) / s) + 1      pad k - 1 on both sides: every partial overlap
    CAUSAL  floor((n - 1) / s) + 1          pad k - 1 before only: output t sees inputs <= t
    int p   floor((n + 2p - k) / s) + 1

and compared with the shape ``F.conv`` returns (``jax.eval_shape``, every
combination), with PyTorch's ``conv1d`` (the same padding given its way) and
with scipy's ``correlate`` modes. A figure shows which input positions each
output of a 7-sample signal sees, read off the Jacobian of ``F.conv``.
"""

from __future__ import annotations

import itertools
import math
import warnings

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import numpy as np
import scipy.signal
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

import jaxcnn.functional as F
from experiments._common import Context, main

MODES = ("VALID", "SAME", "FULL", "CAUSAL")


def formula(mode, n: int, k: int, s: int) -> int:
    """The output size by the lecture's formulas (``k`` already the effective size)."""
    if mode == "VALID":
        return (n - k) // s + 1
    if mode == "SAME":
        return math.ceil(n / s)
    if mode == "FULL":
        return (n + k - 2) // s + 1
    if mode == "CAUSAL":
        return (n - 1) // s + 1
    return (n + 2 * mode - k) // s + 1  # an int padding p


def measured(mode, n: int, k: int, s: int, d: int) -> int:
    """The length of ``F.conv``'s output, by shape inference (no compilation)."""
    x = jax.ShapeDtypeStruct((1, n, 1), jnp.float32)
    w = jax.ShapeDtypeStruct((k, 1, 1), jnp.float32)
    return jax.eval_shape(lambda x, w: F.conv(x, w, padding=mode, strides=s, dilation=d), x, w).shape[1]


def torch_length(mode, n: int, k: int, s: int, d: int) -> int | None:
    """PyTorch's conv1d output length for the same padding (None where torch has no such mode)."""
    x, w = torch.zeros(1, 1, n), torch.zeros(1, 1, k)
    k_eff = (k - 1) * d + 1
    if mode == "VALID":
        y = torch.nn.functional.conv1d(x, w, stride=s, dilation=d)
    elif mode == "FULL":
        y = torch.nn.functional.conv1d(x, w, stride=s, dilation=d, padding=k_eff - 1)
    elif mode == "CAUSAL":
        y = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (k_eff - 1, 0)), w, stride=s, dilation=d)
    elif mode == "SAME":
        if s != 1:
            return None  # torch refuses padding="same" with strides
        with warnings.catch_warnings():  # torch notes it copies the input for even kernels; irrelevant here
            warnings.simplefilter("ignore", UserWarning)
            y = torch.nn.functional.conv1d(x, w, dilation=d, padding="same")
    else:
        y = torch.nn.functional.conv1d(x, w, stride=s, dilation=d, padding=mode)
    return y.shape[-1]


def run(ctx: Context) -> None:
    sizes = (7, 28) if ctx.quick else (5, 7, 8, 28)
    kernels = (1, 2, 3, 5)
    strides = (1, 2, 3)
    dilations = (1,) if ctx.quick else (1, 2)
    modes = MODES + (1, 2)
    n_cases, mismatches, torch_cases, torch_bad = 0, [], 0, []
    table = {}
    for mode, k, s, d, n in itertools.product(modes, kernels, strides, dilations, sizes):
        k_eff = (k - 1) * d + 1
        if mode == "VALID" and k_eff > n or isinstance(mode, int) and n + 2 * mode < k_eff:
            continue  # the kernel does not fit: F.conv raises (and so does torch)
        want, got = formula(mode, n, k_eff, s), measured(mode, n, k, s, d)
        n_cases += 1
        if want != got:
            mismatches.append((mode, n, k, s, d, want, got))
        t = torch_length(mode, n, k, s, d)
        if t is not None:
            torch_cases += 1
            if t != got:
                torch_bad.append((mode, n, k, s, d, t, got))
        if d == 1:
            table[(mode, k, s, n)] = got

    # scipy's modes at stride 1 (scipy has no stride)
    scipy_bad = []
    for n, k in itertools.product(sizes, kernels):
        for mode in ("valid", "same", "full"):
            if mode == "valid" and k > n:
                continue
            ref = scipy.signal.correlate(np.zeros(n), np.zeros(k), mode=mode).shape[0]
            if ref != measured(mode.upper(), n, k, 1, 1):
                scipy_bad.append((mode, n, k))

    show = [m for m in modes if isinstance(m, str)] + [1]
    rows = []
    for mode in show:
        for k in (2, 3, 5):
            for s in strides:
                expr = {
                    "VALID": "floor((n-k)/s)+1",
                    "SAME": "ceil(n/s)",
                    "FULL": "floor((n+k-2)/s)+1",
                    "CAUSAL": "floor((n-1)/s)+1",
                }.get(mode, "floor((n+2p-k)/s)+1")
                rows.append(
                    (
                        mode if isinstance(mode, str) else f"p={mode}",
                        k,
                        s,
                        expr,
                        *[table[(mode, k, s, n)] for n in sizes],
                    )
                )
    ctx.table(
        "Output length of F.conv (measured) for input lengths n = " + ", ".join(map(str, sizes)),
        ["padding", "k", "stride", "formula", *[f"n={n}" for n in sizes]],
        rows,
    )

    # --- figure: which inputs each output sees, from the Jacobian of F.conv (n=7, k=3, ones kernel)
    n, k = 7, 3
    signal = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 1.0, 2.0], np.float32)
    w = jnp.ones((k, 1, 1), jnp.float32)
    fig = Figure(figsize=(13, 7.2))
    axes = fig.subplots(2, 4)
    span_ok = True
    for (r, s), (c, mode) in itertools.product(enumerate((1, 2)), enumerate(MODES)):
        f = lambda x, mode=mode, s=s: F.conv(x.reshape(1, n, 1), w, padding=mode, strides=s)[0, :, 0]
        jac = np.asarray(jax.jacfwd(f)(jnp.asarray(signal)))  # (outputs, inputs): 1 where output o reads input i
        y = np.asarray(f(jnp.asarray(signal)))
        same_total = max((math.ceil(n / s) - 1) * s + k - n, 0)  # by hand: what SAME needs for ceil(n/s) outputs
        lo, hi = {
            "VALID": (0, 0),
            "SAME": (same_total // 2, same_total - same_total // 2),
            "FULL": (k - 1, k - 1),
            "CAUSAL": (k - 1, 0),
        }[mode]
        ax = axes[r, c]
        left, right = -(k - 1), n + k - 2
        for i in range(-lo, n + hi):  # the input row, this mode's padding in grey
            inside = 0 <= i < n
            ax.add_patch(
                Rectangle((i, -1.5), 1, 1, facecolor="#c6dbef" if inside else "#eeeeee", edgecolor="k", lw=0.5)
            )
            ax.text(
                i + 0.5,
                -1,
                f"{signal[i]:g}" if inside else "0",
                ha="center",
                va="center",
                fontsize=8,
                color="k" if inside else "0.5",
            )
        for o in range(len(y)):
            start = o * s - lo  # the window of output o, in input coordinates (padding included)
            seen = [i for i in range(start, start + k)]
            span_ok &= set(np.nonzero(jac[o])[0]) == {i for i in seen if 0 <= i < n}
            for i in seen:
                pad = not 0 <= i < n
                ax.add_patch(
                    Rectangle(
                        (i, o),
                        1,
                        0.8,
                        facecolor="#eeeeee" if pad else "#6baed6",
                        edgecolor="k",
                        lw=0.5,
                        hatch="//" if pad else None,
                    )
                )
            ax.text(right + 1.4, o + 0.4, f"y{o} = {y[o]:g}", va="center", fontsize=8)
        ax.set_xlim(left - 0.2, right + 4.2)
        ax.set_ylim(max(len(y), 4) + 0.2, -1.7)
        ax.set_xticks([i + 0.5 for i in range(left, right + 1)], [str(i) for i in range(left, right + 1)], fontsize=7)
        ax.set_yticks([])
        ax.set_title(f"{mode}, stride {s}: {len(y)} outputs", fontsize=10)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    fig.suptitle(
        "Top row of each panel: the input (7 samples, blue) and this mode's zero padding (grey).\n"
        "Below: the window each output reads (kernel [1, 1, 1], so y = window sum); hatched = padding",
        fontsize=11,
    )
    fig.tight_layout()
    ctx.save_figure(
        fig,
        dpi=90,
        caption="n = 7, k = 3. VALID reads only real inputs (5 outputs); SAME pads one zero per "
        "side (7); FULL pads k-1 = 2 per side (9 outputs, the first and last see one real input); CAUSAL pads "
        "2 on the left only, so y_t reads x_{t-2..t}. Stride 2 keeps every other window.",
    )

    ctx.check(
        "the formulas give F.conv's output length for every padding, kernel, stride and input size",
        not mismatches,
        f"{n_cases} cases (dilation {', '.join(map(str, dilations))})"
        + (f"; mismatches {mismatches[:3]}" if mismatches else ""),
    )
    ctx.check(
        "PyTorch's conv1d with the same padding gives the same lengths (SAME only at stride 1: torch refuses "
        "'same' with strides)",
        not torch_bad,
        f"{torch_cases} cases" + (f"; {torch_bad[:3]}" if torch_bad else ""),
    )
    ctx.check(
        "scipy.signal.correlate's valid/same/full lengths equal VALID/SAME/FULL at stride 1",
        not scipy_bad,
        f"{len(sizes) * len(kernels) * 3 - sum(1 for n in sizes for k in kernels if k > n)} cases",
    )
    ctx.check(
        "each output reads exactly its window (Jacobian of F.conv vs the span [o*s - pad_lo, o*s - pad_lo + k - 1] "
        "clipped to the input), all 8 panels",
        span_ok,
    )
    ctx.check(
        "at stride 1 SAME and CAUSAL keep the length (n out), FULL grows it by k-1 and VALID shrinks it by k-1",
        all(
            table[("SAME", k, 1, n)] == n == table[("CAUSAL", k, 1, n)]
            and table[("FULL", k, 1, n)] == n + k - 1
            and table[("VALID", k, 1, n)] == n - k + 1
            for k in kernels
            for n in sizes
        ),
    )
    ctx.text(
        f"All {n_cases} combinations of padding mode (VALID, SAME, FULL, CAUSAL, p = 1, 2), kernel size 1-5, stride "
        f"1-3{', dilation 1-2' if len(dilations) > 1 else ''} and input length {', '.join(map(str, sizes))} give "
        "exactly the length the formula predicts, and PyTorch agrees wherever it has the same padding "
        f"({torch_cases} cases). At stride 1, VALID loses k-1 samples, FULL gains k-1 (every partial overlap, as "
        "scipy's full), SAME and CAUSAL keep n; they differ in where the k-1 zeros go (split around the window "
        "vs all before it, which makes output t depend only on inputs up to t). A stride s then keeps every s-th "
        "window, dividing the length by about s: SAME gives exactly ceil(n/s), the others floor(.../s) + 1, so "
        "trailing inputs that do not fill another window are never read (VALID, n = 8, k = 3, s = 3: 2 outputs "
        "reading inputs 0-5, inputs 6 and 7 unread)."
    )
    ctx.set_headline(
        f"output-size formulas = F.conv in {n_cases}/{n_cases} cases (= PyTorch in {torch_cases - len(torch_bad)}/{torch_cases})"
    )


if __name__ == "__main__":
    raise SystemExit(main("06_padding_strides", run, __doc__))
