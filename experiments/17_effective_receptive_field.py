"""Effective receptive field: in deep stacks of 3x3 convolutions it grows like sqrt(depth), the theoretical field like depth.

Luo, Li, Urtasun & Zemel (NeurIPS 2016) back-propagate a gradient of 1 at the
centre output unit to the input; the map of input gradients (the *effective*
receptive field, ERF) is Gaussian-like, and for stacks of ``L`` convolutions
with uniform or random weights its radius grows like ``sqrt(L)``, while the
theoretical field grows like ``L``: the effective fraction shrinks like
``1 / sqrt(L)``. Subsampling and dilation enlarge it.

Measured with ``jaxcnn.analysis.effective_receptive_field`` over random N(0, 1)
inputs: for uniform weights the gradient itself (``statistic="abs"``; it is
positive and the same for every input), for random weights the mean squared
gradient (``statistic="square"``, the variance Luo et al. analyse in sec. 2.3;
the mean gradient is 0) averaged over several weight draws; radius = twice the
RMS standard deviation of the normalized map)
on stacks of ``L`` 3x3 SAME convolutions without bias, ``C`` channels: uniform
weights ``1 / (9 C)``, random He-normal weights without activation, and random
weights with ReLU. The theoretical radius ``(r - 1) / 2`` comes from
``jaxcnn.analysis.receptive_field``. Slopes are least-squares fits of log radius
against log depth.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.figure import Figure

from experiments._common import Context, main
from jaxcnn.analysis import effective_receptive_field, erf_from_map, plot_erf, receptive_field
from jaxcnn.nn import Conv


class Stack(nn.Module):
    """``depth`` 3x3 SAME convs without bias; stride 2 at the layers in ``stride_at``; ``dilation`` for every conv."""

    depth: int
    channels: int
    weights: str = "uniform"
    relu: bool = False
    stride_at: tuple = ()
    dilation: int = 1

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            c_in = x.shape[-1]
            kinit = (
                nn.initializers.constant(1.0 / (9 * c_in))
                if self.weights == "uniform"
                else nn.initializers.variance_scaling(2.0, "fan_in", "normal")
            )
            x = Conv(
                self.channels,
                3,
                strides=2 if i in self.stride_at else 1,
                dilation=self.dilation,
                use_bias=False,
                kernel_init=kinit,
                name=f"conv{i + 1}",
            )(x)
            if self.relu and i < self.depth - 1:
                x = jax.nn.relu(x)
        return x


SETTINGS = {
    "uniform": dict(weights="uniform"),
    "random": dict(weights="random"),
    "random + ReLU": dict(weights="random", relu=True),
}


def measure(model, size, channels, draws, samples, seed, statistic="square"):
    """ERF (maps averaged over weight draws) and the theoretical field of ``model`` on ``size x size x channels``."""
    shape = (size, size, channels)
    init = jax.jit(model.init)
    raws = []
    for d in range(draws):
        v = init(jax.random.key(seed + d, impl="rbg"), jnp.zeros((1, *shape)))
        raws.append(
            effective_receptive_field(
                model, v, shape, n_samples=samples, key=jax.random.key(seed + 100 + d, impl="rbg"), statistic=statistic
            )
        )
    # average the normalized maps over the draws, then the statistics of the mean map
    erf = erf_from_map(np.mean([e.map for e in raws], axis=0))
    rf = receptive_field(model, shape, measure=False, variables=v)
    return erf, rf


def run(ctx: Context) -> None:
    depths = (1, 2, 4, 8) if ctx.quick else (1, 2, 4, 8, 16, 32)
    size = 40 if ctx.quick else 80
    channels, draws, samples = (4, 2, 4) if ctx.quick else (8, 4, 8)
    rows, radii, theory, maps = [], {s: [] for s in SETTINGS}, [], {}
    for name, kw in SETTINGS.items():
        for L in depths:
            model = Stack(L, channels, **kw)
            e, rf = measure(
                model,
                size,
                channels,
                1 if name == "uniform" else draws,
                samples,
                ctx.seed,
                "abs" if name == "uniform" else "square",
            )
            r = e.radius
            t = (rf.size[0] - 1) / 2
            radii[name].append(r)
            if name == "uniform":
                theory.append(t)
            maps[name, L] = (e, rf)
            rows.append(
                (
                    name,
                    L,
                    f"{rf.size[0]}x{rf.size[1]}",
                    t,
                    r,
                    r / t,
                    float(np.sqrt(2 * L / 3) * 2) if name == "uniform" else "-",
                )
            )
    ctx.table(
        f"Stacks of L 3x3 convs, {channels} channels, {size}x{size} input; ERF radius = 2 sigma of the normalized "
        f"gradient map (random weights: mean squared gradient, {draws} draws x {samples} inputs)",
        [
            "weights",
            "depth L",
            "theoretical field",
            "theoretical radius (r-1)/2",
            "ERF radius",
            "ERF / theoretical",
            "uniform by hand 2 sqrt(2L/3)",
        ],
        rows,
    )
    logd = np.log(depths)
    slope = {n: float(np.polyfit(logd, np.log(radii[n]), 1)[0]) for n in SETTINGS}
    t_slope = float(np.polyfit(logd, np.log(theory), 1)[0])
    ctx.table(
        "Fitted slopes of log radius vs log depth",
        ["field", "slope", "paper"],
        [*((f"ERF, {n}", slope[n], "0.5") for n in SETTINGS), ("theoretical", t_slope, "1")],
    )

    # --- subsampling and dilation at a fixed depth
    L = 8
    variants = {"plain": {}, "stride 2 at layers 3 and 6": {"stride_at": (2, 5)}, "dilation 2": {"dilation": 2}}
    vrows, vmaps = [], []
    for vname, kw in variants.items():
        e, rf = measure(Stack(L, channels, weights="random", relu=True, **kw), size, channels, draws, samples, ctx.seed)
        r, t = e.radius, (rf.size[0] - 1) / 2
        vrows.append((vname, f"{rf.size[0]}x{rf.size[1]}", t, r, r / t))
        vmaps.append((vname, e, rf))
    ctx.table(
        f"Depth {L}, random weights + ReLU: subsampling and dilation",
        ["variant", "theoretical field", "theoretical radius", "ERF radius", "ERF / theoretical"],
        vrows,
    )

    # --- figures: ERF maps with the theoretical box; radius vs depth on log-log axes
    show = [d for d in depths if d in (2, 8, 32)] or list(depths[-2:])
    panels = [(f"{n}, L={d}", maps[n, d][0], maps[n, d][1].clipped) for n in SETTINGS for d in show]
    panels += [(f"L={L}, {v}", e, rf.clipped) for v, e, rf in vmaps]
    fig = plot_erf(panels, ncols=len(show))
    ctx.save_figure(
        fig,
        suffix="maps",
        dpi=90,
        caption="ERF maps (normalized; uniform: the gradient, random: the mean squared gradient) with the 2-sigma "
        "circle (cyan) inside the theoretical field (white dashed box, clipped to the input).",
    )
    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    ax.loglog(depths, theory, "k--o", label=f"theoretical (r-1)/2, slope {t_slope:.2f}")
    for n in SETTINGS:
        ax.loglog(depths, radii[n], "o-", label=f"ERF {n}, slope {slope[n]:.2f}")
    ax.set_xlabel("depth L (3x3 convs)")
    ax.set_ylabel("radius (pixels)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    ctx.save_figure(
        fig, suffix="slopes", caption="ERF radius grows like sqrt(L) (slope 0.5), the theoretical field like L."
    )

    for n in SETTINGS:
        ctx.check(f"ERF slope for {n} weights is 0.5 +- 0.1", abs(slope[n] - 0.5) <= 0.1, f"{slope[n]:.3f}")
    ctx.check("theoretical field slope is 1 +- 0.05", abs(t_slope - 1) <= 0.05, f"{t_slope:.3f}")
    u = [r for r in rows if r[0] == "uniform"]
    ctx.check(
        "uniform stacks: the ERF radius equals 2 sqrt(2L/3) (the L-fold self-convolution of [1,1,1]) to 1%",
        all(abs(r[4] - r[6]) <= 0.01 * r[6] for r in u),
        ", ".join(f"L={r[1]}: {r[4]:.3f}" for r in u),
    )
    frac = [r[5] for r in rows if r[0] == "random + ReLU"]
    ctx.check(
        "the effective fraction ERF / theoretical shrinks with depth (random + ReLU)",
        all(a > b for a, b in zip(frac[1:], frac[2:])),
        ", ".join(f"{f:.2f}" for f in frac),
    )
    ctx.check(
        "subsampling enlarges the ERF (in input pixels) at the same depth",
        vrows[1][3] > vrows[0][3],
        f"{vrows[1][3]:.2f} vs {vrows[0][3]:.2f}",
    )
    ctx.check(
        "dilation enlarges the ERF at the same depth",
        vrows[2][3] > vrows[0][3],
        f"{vrows[2][3]:.2f} vs {vrows[0][3]:.2f}",
    )
    ctx.text(
        "**What the paper reports.** Luo et al. show that the ERF of a stack of convolutions is Gaussian-like, that "
        "for uniform and random weights its radius grows as O(sqrt(n)) with depth n while the theoretical field grows "
        "as O(n), so the ratio shrinks as O(1/sqrt(n)); ReLU keeps the trend (the map becomes less Gaussian); "
        "subsampling and dilated convolutions increase the ERF. **What jaxcnn measured.** Fitted slopes of log radius "
        f"vs log depth (L = {', '.join(map(str, depths))}): uniform {slope['uniform']:.3f}, random {slope['random']:.3f}, "
        f"random + ReLU {slope['random + ReLU']:.3f}; theoretical {t_slope:.3f}. For uniform weights the map is "
        "exactly the L-fold self-convolution of [1, 1, 1] per axis, so its radius is 2 sqrt(2L/3) and the slope is "
        f"exactly 0.5 (the check above). At depth {L} with ReLU, two stride-2 layers raise the ERF radius from "
        f"{vrows[0][3]:.1f} to {vrows[1][3]:.1f} px, dilation 2 to {vrows[2][3]:.1f} px. **Where they differ.** The "
        "radius here is 2 sigma of the whole normalized map (Luo et al. read the ERF off thresholded maps and fit "
        "Gaussians); small depths (L = 1, 2) are not Gaussian yet (the fits include them); the input is "
        f"{size}x{size}, so the deepest fields stay inside it; random weights are averaged over {draws} draws only; "
        "for random weights the map is the mean squared gradient (the mean |gradient| is wider than it by up to "
        "sqrt(2) at depth, less at depth 1, which bends a log-log fit over small depths)."
    )
    ctx.set_headline(
        f"log-log slopes: ERF uniform {slope['uniform']:.2f}, random {slope['random']:.2f}, random+ReLU "
        f"{slope['random + ReLU']:.2f} vs theoretical {t_slope:.2f}; depth {L}: stride-2 ERF {vrows[1][3]:.1f} px, "
        f"dilation-2 {vrows[2][3]:.1f} px vs plain {vrows[0][3]:.1f} px"
    )


if __name__ == "__main__":
    raise SystemExit(main("17_effective_receptive_field", run, __doc__))
