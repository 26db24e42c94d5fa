"""Convolution is a matrix product: the (doubly block) Toeplitz matrix of a conv layer.

A convolution is linear in its input, so it is ``y = M x`` for one matrix ``M``.
``jaxcnn.analysis.conv_matrix`` builds ``M`` from the definition; here ``M @ x``
is compared with ``F.conv(x)`` for 1-D and 2-D inputs, every padding mode and
strides 1-3; the structure is checked against ``scipy.linalg.toeplitz`` (1-D,
stride 1: constant along every diagonal) and, in 2-D, block by block (a
Toeplitz matrix of Toeplitz blocks); and the sparsity is reported.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np
import scipy.linalg
from matplotlib.figure import Figure

import jaxcnn.functional as F
from experiments._common import Context, main
from jaxcnn.analysis import conv_matrix, conv_matrix_stats

PADDINGS = ("VALID", "SAME", "FULL", "CAUSAL")


def max_error(m: np.ndarray, kernel: np.ndarray, x: np.ndarray, **kw) -> float:
    """``max |M x - conv(x)|`` for one example ``x`` of shape ``(*spatial, C)``."""
    y = np.asarray(F.conv(x[None], kernel, **kw))[0]
    return float(np.max(np.abs(m @ x.ravel() - y.ravel())))


def is_toeplitz(m: np.ndarray) -> bool:
    """``m`` equals the Toeplitz matrix scipy builds from its first column and first row."""
    return np.array_equal(m, scipy.linalg.toeplitz(m[:, 0], m[0, :]))


def is_doubly_block_toeplitz(m: np.ndarray, out_hw: tuple[int, int], in_hw: tuple[int, int]) -> bool:
    """Blocks ``(out_w, in_w)`` are Toeplitz and block ``(a, b)`` depends only on ``b - a``."""
    (oh, ow), (ih, iw) = out_hw, in_hw
    block = lambda a, b: m[a * ow : (a + 1) * ow, b * iw : (b + 1) * iw]
    blocks_toeplitz = all(is_toeplitz(block(a, b)) for a in range(oh) for b in range(ih))
    shared = all(np.array_equal(block(a, b), block(a + 1, b + 1)) for a in range(oh - 1) for b in range(ih - 1))
    return blocks_toeplitz and shared


def run(ctx: Context) -> None:
    rng = np.random.default_rng(ctx.seed)
    strides = (1, 2) if ctx.quick else (1, 2, 3)
    rows, errors = [], []

    # --- 1-D: a 3-tap kernel on 8 inputs; one channel
    k1 = rng.standard_normal((3, 1, 1)).astype(np.float32)
    x1 = rng.standard_normal((8, 1)).astype(np.float32)
    toeplitz_1d = []
    for pad in PADDINGS:
        for s in strides:
            m = conv_matrix(k1, x1.shape, padding=pad, strides=s)
            err = max_error(m, k1, x1, padding=pad, strides=s)
            st = conv_matrix_stats(m, k1)
            errors.append(err)
            if s == 1:
                toeplitz_1d.append(is_toeplitz(m))
            rows.append(("1-D n=8, k=3", pad, s, f"{m.shape[0]}x{m.shape[1]}", st.nonzeros, st.sparsity, err))

    # --- 2-D: a 3x3 kernel on 6x6, 2 channels in, 3 out (blocks of channels inside each entry)
    n2 = 6
    k2 = rng.standard_normal((3, 3, 2, 3)).astype(np.float32)
    x2 = rng.standard_normal((n2, n2, 2)).astype(np.float32)
    for pad in PADDINGS:
        for s in strides:
            m = conv_matrix(k2, x2.shape, padding=pad, strides=s)
            err = max_error(m, k2, x2, padding=pad, strides=s)
            st = conv_matrix_stats(m, k2)
            errors.append(err)
            rows.append(
                (f"2-D {n2}x{n2}x2 -> 3, k=3x3", pad, s, f"{m.shape[0]}x{m.shape[1]}", st.nonzeros, st.sparsity, err)
            )

    # doubly block Toeplitz: one channel, 3x3 on 5x5, stride 1 (SAME and VALID)
    k_img = rng.standard_normal((3, 3)).astype(np.float32)
    m_same = conv_matrix(k_img, (5, 5), padding="SAME")
    m_valid = conv_matrix(k_img, (5, 5), padding="VALID")
    dbt_same = is_doubly_block_toeplitz(m_same, (5, 5), (5, 5))
    dbt_valid = is_doubly_block_toeplitz(m_valid, (3, 3), (5, 5))
    # a strided conv is not Toeplitz (row i is row i-1 shifted by s, not by 1) but each row shifts by s
    m_s2 = conv_matrix(k1, x1.shape, padding="VALID", strides=2)
    shifted_by_s = all(np.array_equal(m_s2[i, 2:], m_s2[i - 1, :-2]) for i in range(1, m_s2.shape[0]))
    # with fixed padding (not SAME, whose padding depends on the stride) stride s keeps every s-th row
    every_sth_row = all(
        np.array_equal(conv_matrix(k1, x1.shape, padding=pad, strides=s), conv_matrix(k1, x1.shape, padding=pad)[::s])
        for pad in ("VALID", "FULL", "CAUSAL")
        for s in strides
    )

    # --- sparsity at image size: 28x28, 3x3 and 5x5, SAME
    big = []
    for n, k in ((28, 3), (28, 5)) if not ctx.quick else ((14, 3),):
        kern = rng.standard_normal((k, k, 1, 1)).astype(np.float32)
        x = rng.standard_normal((n, n, 1)).astype(np.float32)
        m = conv_matrix(kern, x.shape, padding="SAME")
        err = max_error(m, kern, x, padding="SAME")
        errors.append(err)
        st = conv_matrix_stats(m, kern)
        big.append(st)
        rows.append((f"2-D {n}x{n}, k={k}x{k}", "SAME", 1, f"{m.shape[0]}x{m.shape[1]}", st.nonzeros, st.sparsity, err))

    ctx.table(
        "M @ x against F.conv(x), per input, padding and stride",
        ["input / kernel", "padding", "stride", "M shape", "non-zeros", "sparsity", "max |Mx - conv(x)|"],
        rows,
    )

    # --- figure: the 1-D matrix, a strided one, and the doubly block Toeplitz 2-D one
    fig = Figure(figsize=(12, 4.2))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.6]})
    m_1d = conv_matrix(np.array([1.0, 2.0, 3.0]), (8,), padding="SAME")
    panels = [
        (axes[0], m_1d, "1-D, k=[1,2,3], SAME, stride 1\n(Toeplitz: constant diagonals)", None),
        (
            axes[1],
            conv_matrix(np.array([1.0, 2.0, 3.0]), (8,), padding="VALID", strides=2),
            "1-D, VALID, stride 2\n(each row shifted by 2)",
            None,
        ),
        (
            axes[2],
            conv_matrix(np.arange(1.0, 10.0).reshape(3, 3), (5, 5), padding="SAME"),
            "2-D, 3x3 kernel 1..9 on 5x5, SAME\n(5x5 grid of 5x5 Toeplitz blocks)",
            5,
        ),
    ]
    for ax, m, title, block in panels:
        im = ax.imshow(np.where(m == 0, np.nan, m), cmap="viridis", interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("input index")
        ax.set_ylabel("output index")
        ax.set_facecolor("#f2f2f2")
        for (i, j), v in np.ndenumerate(m):
            if v:
                ax.text(
                    j,
                    i,
                    f"{v:g}",
                    ha="center",
                    va="center",
                    fontsize=8 if block is None else 5,
                    color="white" if v < m.max() * 0.6 else "black",
                )
        if block:
            for b in range(1, m.shape[0] // block):
                ax.axhline(b * block - 0.5, color="k", lw=0.6)
            for b in range(1, m.shape[1] // block):
                ax.axvline(b * block - 0.5, color="k", lw=0.6)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    fig.tight_layout()
    ctx.save_figure(
        fig,
        dpi=110,
        caption="Conv matrices (grey = 0). Left: banded Toeplitz. Middle: stride 2 skips rows of the "
        "stride-1 matrix. Right: 2-D conv = block Toeplitz matrix whose blocks are Toeplitz (one block per kernel row).",
    )

    worst = max(errors)
    ctx.check(
        "M @ x equals F.conv(x) to 1e-5 for every input, padding and stride",
        worst <= 1e-5,
        f"{len(errors)} cases, worst |error| {worst:.2e}",
    )
    ctx.check(
        "every 1-D stride-1 conv matrix is Toeplitz (== scipy.linalg.toeplitz of its first column/row)",
        all(toeplitz_1d),
        f"{sum(toeplitz_1d)}/{len(toeplitz_1d)} paddings",
    )
    ctx.check("a stride-2 conv matrix has each row equal to the previous one shifted by 2 columns", shifted_by_s)
    ctx.check(
        "with VALID/FULL/CAUSAL padding the stride-s matrix is the stride-1 matrix's every s-th row", every_sth_row
    )
    ctx.check("the 2-D conv matrix is doubly block Toeplitz (SAME and VALID, 5x5 input)", dbt_same and dbt_valid)
    ctx.check(
        "each row of a 1-D SAME matrix has at most k=3 non-zeros (sparse connectivity)",
        int(np.max(np.count_nonzero(m_1d, axis=1))) == 3,
    )
    sp = big[0]  # 3x3 kernel
    side = 28 if not ctx.quick else 14
    ctx.check(
        f"the {side}x{side} SAME conv matrix is over 95% zeros", sp.sparsity > 0.95, f"sparsity {sp.sparsity:.4f}"
    )
    ctx.text(
        f"For every case above ({len(errors)} of them: 1-D and multi-channel 2-D inputs, VALID/SAME/FULL/CAUSAL "
        f"padding, strides {', '.join(map(str, strides))}) the product of the matrix with the flattened input equals "
        f"the convolution to {worst:.1e} (float32 rounding). At stride 1 the matrix is Toeplitz: the same kernel "
        "weights slide one column per row, which is weight sharing; padding only decides which rows are clipped at "
        "the corners. A stride s keeps every s-th row of that matrix (exactly, for VALID/FULL/CAUSAL padding; SAME re-centres its padding for each stride), so rows shift by s columns. In 2-D, flattening "
        "row by row turns the kernel's rows into Toeplitz blocks arranged in a Toeplitz pattern (doubly block "
        f"Toeplitz). The matrix is mostly zeros: a {side}x{side} image with a 3x3 kernel gives a {sp.shape[0]}x{sp.shape[1]} matrix with {sp.nonzeros:,} non-zeros "
        f"({sp.sparsity:.2%} zeros) built from only {sp.distinct_values} distinct weights."
    )
    ctx.set_headline(
        f"M @ x = conv(x) to {worst:.1e} in {len(errors)} cases; the {side}x{side} 3x3 SAME conv matrix is "
        f"{sp.sparsity:.2%} zeros, {sp.distinct_values} distinct weights"
    )


if __name__ == "__main__":
    raise SystemExit(main("02_toeplitz", run, __doc__))
