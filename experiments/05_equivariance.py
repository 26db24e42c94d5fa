"""Equivariance and invariance: convolution commutes with shifts exactly; max pooling is only nearly shift invariant.

MNIST digits (the 2,000-image test part of the 8,000/2,000 split of the t10k
set), placed on a 40x40 canvas with a zero margin, are shifted right by k = 0..4
pixels. A bank of 8 random 5x5 filters followed by ReLU gives feature maps
``f(x)``. Claim 1 (exact): ``f(shift_k x) == shift_k f(x)`` away from the borders.
Claim 2 (approximate): after max pooling with a window w (stride w) the
representation changes much less under a small shift than the unpooled map;
measured as the relative change ``||r(shift_k x) - r(x)|| / ||r(x)||``,
averaged over the images, for w = 2 and 4, 2x2 average pooling and global max
pooling. Pooling with window w turns a shift by w into an exact shift by one
pooled pixel: equivariance on the coarser grid, not invariance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.figure import Figure

import jaxcnn.functional as F
from experiments._common import MNIST_DIR, Context, main
from jaxcnn.data import mnist

CANVAS, MARGIN, K = 40, 6, 5
SHIFTS = (0, 1, 2, 3, 4)
REPS = {
    "no pooling": lambda f: f,
    "max pool 2x2 / 2": lambda f: F.max_pool(f, 2),
    "max pool 4x4 / 4": lambda f: F.max_pool(f, 4),
    "avg pool 2x2 / 2": lambda f: F.avg_pool(f, 2),
    "global max pool": lambda f: F.global_max_pool(f),
}


def shift(x: np.ndarray, k: int, axis: int = 2) -> np.ndarray:
    """Move the content ``k`` pixels towards higher indices along ``axis`` (zeros come in)."""
    out = np.zeros_like(x)
    src = [slice(None)] * x.ndim
    dst = [slice(None)] * x.ndim
    src[axis], dst[axis] = slice(0, x.shape[axis] - k), slice(k, None)
    out[tuple(dst)] = x[tuple(src)]
    return out


def run(ctx: Context) -> None:
    ds = mnist(MNIST_DIR)
    n = 200 if ctx.quick else 2000
    x = np.zeros((n, CANVAS, CANVAS, 1), np.float32)
    x[:, MARGIN : MARGIN + 28, MARGIN : MARGIN + 28] = ds.x_test[:n]
    w = jnp.asarray(np.random.default_rng(ctx.seed).standard_normal((K, K, 1, 8)) / K, jnp.float32)
    # one compiled function: the feature maps and every pooled representation of them
    reps = jax.jit(lambda x: {name: rep(jax.nn.relu(F.conv(x, w, padding="SAME"))) for name, rep in REPS.items()})
    run_reps = lambda x: {k: np.asarray(v) for k, v in reps(x).items()}
    base = run_reps(x)
    f0 = base["no pooling"]

    # --- 1. equivariance, exact: compare away from the borders (columns the shift or the padding touches)
    eq_rows, eq_err, shifted = [], [], {}
    r = K // 2
    for k in SHIFTS[1:]:
        for axis, name in ((2, "right"), (1, "down")):
            out = run_reps(shift(x, k, axis))
            if axis == 2:
                shifted[k] = out
            a, b = out["no pooling"], shift(f0, k, axis)
            inner = [slice(None)] * 4
            inner[axis] = slice(k + r, CANVAS - r)
            err = float(np.max(np.abs(a[tuple(inner)] - b[tuple(inner)])))
            whole = float(np.max(np.abs(a - b)))
            eq_err.append(err)
            eq_rows.append((k, name, err, whole))
    ctx.table(
        f"Equivariance: max |f(shift x) - shift f(x)| over {n} digits x 8 feature maps",
        ["shift k", "direction", "away from borders", "whole 40x40 canvas"],
        eq_rows,
    )

    # --- 2. invariance, approximate: relative change of each representation vs shift size
    shifted[0] = base
    curves, changed = {name: [] for name in REPS}, {}
    for k in SHIFTS:
        for name in REPS:
            a, b = shifted[k][name].reshape(n, -1), base[name].reshape(n, -1)
            curves[name].append(float(np.mean(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1))))
            if k == 1:  # among units active (non-zero) before or after the shift, the fraction whose value changed
                active = (a != 0) | (b != 0)
                changed[name] = float(np.sum((a != b) & active) / np.sum(active))
    ctx.table(
        f"Relative change ||r(shift_k x) - r(x)|| / ||r(x)||, mean over {n} digits",
        ["representation", *[f"k={k}" for k in SHIFTS], "active units changed by k=1"],
        [(name, *curves[name], changed[name]) for name in REPS],
    )

    # pooling with window w: a shift by w is an exact shift by one pooled pixel (away from borders)
    coarse = []
    for wdw, name in ((2, "max pool 2x2 / 2"), (4, "max pool 4x4 / 4")):
        a, b = shifted[wdw][name], shift(base[name], 1)
        coarse.append(float(np.max(np.abs(a[:, :, 1:] - b[:, :, 1:]))))

    # --- figure
    fig = Figure(figsize=(12.5, 5))
    gs = fig.add_gridspec(2, 4, width_ratios=[1, 1, 1, 3.2])
    digit = 0
    show = [
        (x[digit, :, :, 0], "digit x", "gray_r"),
        (shift(x, 2)[digit, :, :, 0], "x shifted by 2", "gray_r"),
        (f0[digit, :, :, 0], "f(x), map 1", "viridis"),
        (shifted[2]["no pooling"][digit, :, :, 0], "f(shift x): shifted", "viridis"),
        (base["max pool 4x4 / 4"][digit, :, :, 0], "max pool 4 of f(x)", "viridis"),
        (shifted[2]["max pool 4x4 / 4"][digit, :, :, 0], "max pool 4, shifted", "viridis"),
    ]
    for i, (img, title, cmap) in enumerate(show):
        ax = fig.add_subplot(gs[i % 2, i // 2])
        ax.imshow(np.asarray(img), cmap=cmap)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(gs[:, 3])
    for name, style in zip(REPS, ("o-", "s-", "^-", "v--", "x:")):
        ax.plot(SHIFTS, curves[name], style, label=name)
    ax.set_xlabel("shift k (pixels)")
    ax.set_ylabel("relative change of the representation")
    ax.set_xticks(SHIFTS)
    ax.set_title(f"mean over {n} MNIST digits; 8 random 5x5 filters + ReLU", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout(h_pad=2)
    ctx.save_figure(
        fig,
        dpi=100,
        caption="Left: a digit, its shift, a feature map (shifted by the same amount) and the "
        "4x4 max-pooled map (barely changed). Right: how much each representation changes with the shift.",
    )

    worst = max(eq_err)
    ctx.check(
        "convolution is shift equivariant: f(shift x) = shift f(x) away from the borders (max |diff| 0 up to "
        "float rounding, <= 1e-6)",
        worst <= 1e-6,
        f"worst {worst:.1e} over {len(eq_err)} shifts",
    )
    unpooled, mp2, mp4, gmp = (
        curves[k] for k in ("no pooling", "max pool 2x2 / 2", "max pool 4x4 / 4", "global max pool")
    )
    ctx.check(
        "a 1-pixel shift changes the 2x2 max-pooled representation less than the unpooled one",
        mp2[1] < unpooled[1],
        f"{mp2[1]:.3f} vs {unpooled[1]:.3f}",
    )
    ctx.check(
        "... and the 4x4 max-pooled one less still, for every shift 1-3 (smaller than the window)",
        all(mp4[k] < mp2[k] < unpooled[k] for k in (1, 2, 3)),
        ", ".join(f"k={k}: {mp4[k]:.3f}" for k in (1, 2, 3)),
    )
    ctx.check(
        "pooling gives approximate invariance only: every pooled representation but the global one still "
        "changes (relative change > 0.05 at k=1)",
        min(mp2[1], mp4[1]) > 0.05,
    )
    ctx.check(
        "a 1-pixel shift alters most active units of the unpooled map but far fewer after 4x4 max pooling",
        changed["max pool 4x4 / 4"] < 0.75 * changed["no pooling"],
        f"{changed['no pooling']:.0%} vs {changed['max pool 4x4 / 4']:.0%}",
    )
    ctx.check(
        "the 2x2 max-pooled representation changes more at k=2 (a whole window) than at k=1",
        mp2[2] > mp2[1],
        f"{mp2[2]:.3f} vs {mp2[1]:.3f}",
    )
    ctx.check(
        "a shift by the window w is an exact one-pixel shift of the pooled map (w = 2, 4; equivariance on "
        "the coarse grid)",
        max(coarse) <= 1e-6,
        f"max |diff| {max(coarse):.1e}",
    )
    ctx.check(
        "global max pooling is exactly invariant while the digit stays on the canvas",
        max(gmp) <= 1e-6,
        f"max relative change {max(gmp):.1e}",
    )
    ctx.text(
        f"Data: the first {n} images of the 2,000-image test part ({ds.description}), each on a 40x40 zero canvas. "
        f"Shifting the input shifts every feature map by the same amount: over {n} digits, 8 maps and shifts of 1-4 "
        f"pixels right and down, the largest difference away from the borders is {worst:.1e}; this is exact because "
        "every output applies the same weights to its own window (weight sharing). (Here even the whole canvas "
        "agrees, because the digits sit on a zero margin wider than the shift plus the kernel radius; content at "
        "the border would meet the zero padding there.) Invariance is different: pooling reduces the change, it "
        "does not remove it. A 1-pixel "
        f"shift changes the unpooled maps by {unpooled[1]:.0%} (relative L2) and alters the value of "
        f"{changed['no pooling']:.0%} of their active units; after 2x2 max pooling the change is {mp2[1]:.0%} "
        f"({changed['max pool 2x2 / 2']:.0%} of active units altered), after 4x4 max pooling {mp4[1]:.0%} "
        f"({changed['max pool 4x4 / 4']:.0%}), because a window's maximum usually stays inside the window when the input moves by less than "
        f"the window. This invariance is only approximate and only for small shifts: at k=2 the 2x2-pooled "
        f"representation changes by {mp2[2]:.0%} (more than at k=1), and a shift by exactly the window size is an exact "
        f"one-pixel shift of the pooled map (difference {max(coarse):.1e}), i.e. equivariance on the coarser grid. "
        f"2x2 average pooling changes by {curves['avg pool 2x2 / 2'][1]:.0%} at k=1, about as much as 2x2 max "
        f"pooling, and more at larger shifts ({curves['avg pool 2x2 / 2'][2]:.0%} vs {mp2[2]:.0%} at k=2), but it "
        f"alters {changed['avg pool 2x2 / 2']:.0%} of its active units: an average moves with every input value. "
        "Only global max pooling is exactly invariant (0 for every shift), at the price of forgetting where the "
        "features were."
    )
    ctx.set_headline(
        f"conv equivariance exact (max diff {worst:g}); 1-px shift changes features by {unpooled[1]:.0%} unpooled, "
        f"{mp2[1]:.0%} after 2x2 max pool, {mp4[1]:.0%} after 4x4"
    )


if __name__ == "__main__":
    raise SystemExit(main("05_equivariance", run, __doc__))
