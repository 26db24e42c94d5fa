"""Sparse connectivity and weight sharing: a convolution is a dense layer with most weights zero and the rest tied.

The lecture's 1-D example: 5 inputs to 5 outputs cost a dense layer 5*5+5 = 30
parameters and a convolution with a 3-tap kernel 3+1 = 4. Here the counts come
from the models' own parameter trees, the matrix of the convolution from
``jaxcnn.analysis.conv_matrix``, and the same comparison is made for 28x28
images, where the gap is over four orders of magnitude.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import numpy as np
from flax import linen as nn
from matplotlib.figure import Figure

import jaxcnn.functional as F
import jaxcnn.nn as jnn
from experiments._common import Context, main
from jaxcnn.analysis import conv_matrix, conv_matrix_stats


def count(module: nn.Module, shape: tuple[int, ...]) -> int:
    """Parameters of ``module`` on an input of ``shape`` (batch included), by shape inference only."""
    variables = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(shape))
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))


def run(ctx: Context) -> None:
    # --- the lecture's 1-D example: 5 -> 5
    dense_1d = count(nn.Dense(5), (1, 5))
    conv_1d = count(jnn.Conv(1, 3, padding="SAME"), (1, 5, 1))
    kernel = np.array([1.0, 2.0, 3.0], np.float32).reshape(3, 1, 1)
    m = conv_matrix(kernel, (5, 1), padding="SAME")
    stats = conv_matrix_stats(m, kernel)
    x = np.random.default_rng(ctx.seed).standard_normal(5).astype(np.float32)
    same = np.allclose(m @ x, np.asarray(F.conv(x.reshape(1, 5, 1), kernel, padding="SAME")).ravel(), atol=1e-6)

    # --- 28x28 images: one layer mapping 28x28x1 to 28x28xC
    rows = [("1-D, 5 -> 5 (lecture)", "3-tap kernel", dense_1d, conv_1d, dense_1d / conv_1d)]
    for c_out, k in ((1, 3), (4, 5), (32, 3)):
        dense = (28 * 28) * (28 * 28 * c_out) + 28 * 28 * c_out  # counted by formula: 10^7-10^8 weights
        conv = count(jnn.Conv(c_out, k), (1, 28, 28, 1))
        rows.append((f"28x28x1 -> 28x28x{c_out}", f"{k}x{k} kernel", dense, conv, dense / conv))
    dense_check = count(nn.Dense(28 * 28), (1, 28 * 28))
    ctx.table(
        "Parameters of one layer: dense vs convolution",
        ["mapping", "conv", "dense params", "conv params", "ratio"],
        rows,
    )
    ctx.table(
        "The 1-D convolution as a matrix (conv_matrix)",
        ["matrix", "non-zeros", "sparsity", "distinct values", "uses per weight"],
        [("5x5", stats.nonzeros, stats.sparsity, stats.distinct_values, stats.uses_per_weight)],
    )

    fig = Figure(figsize=(7, 3))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.imshow(np.ones((5, 5)), cmap="Greys", vmin=0, vmax=1.5)
    ax1.set_title("dense: 25 free weights")
    im = ax2.imshow(np.where(m == 0, np.nan, m), cmap="viridis")
    ax2.set_title("conv: 3 shared weights")
    for ax in (ax1, ax2):
        ax.set_xlabel("input")
        ax.set_ylabel("output")
    fig.colorbar(im, ax=ax2, fraction=0.046)
    fig.tight_layout()
    ctx.save_figure(
        fig,
        dpi=110,
        caption="Left: every output sees every input. Right: the conv matrix is banded (sparse) and constant along diagonals (shared).",
    )

    ctx.check("dense 5->5 layer has 5*5+5 = 30 parameters", dense_1d == 30, f"measured {dense_1d}")
    ctx.check("3-tap conv 5->5 has 3+1 = 4 parameters", conv_1d == 4, f"measured {conv_1d}")
    ctx.check("the conv matrix times x equals F.conv(x)", same)
    ctx.check(
        "the 5x5 conv matrix has 13 non-zeros (3 diagonals, 2 clipped corners)",
        stats.nonzeros == 13,
        f"{stats.nonzeros}",
    )
    ctx.check("a dense 784->784 layer has 784*784+784 parameters", dense_check == 784 * 785, f"{dense_check}")
    ctx.check(
        "for 28x28 images a 3x3 conv layer needs over 10^4 times fewer parameters",
        rows[1][4] > 1e4,
        f"ratio {rows[1][4]:,.0f}",
    )
    ctx.text(
        "A convolution is a dense layer whose weight matrix is banded (each output sees only k inputs: "
        "sparse connectivity) and Toeplitz (the same k weights on every row: weight sharing). In 1-D "
        "this shrinks 30 parameters to 4; for a 28x28 image mapped to one feature map of the same size "
        f"it shrinks {rows[1][2]:,} to {rows[1][3]}, and the count no longer depends on the image size."
    )
    ctx.set_headline(
        f"5->5: dense 30 vs conv 4 parameters; 28x28->28x28: {rows[1][2]:,} vs {rows[1][3]} ({rows[1][4]:,.0f}x)"
    )


if __name__ == "__main__":
    raise SystemExit(main("01_sparse_connectivity", run, __doc__))
