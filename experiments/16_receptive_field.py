"""Receptive fields: the analytic recurrences and the gradient-measured field agree, layer by layer.

For every layer of the LWLS Example 6.3 CNN (``lwls_cnn``, 28x28 input) and of
ResNet-18 with the CIFAR stem (``get_model("resnet18", stem="cifar")``, full
width), ``jaxcnn.analysis.receptive_field`` gives the analytic field (the
recurrences ``r_l = r_{l-1} + (k_l - 1) j_{l-1}``, ``j_l = j_{l-1} s_l`` read off
the traced jaxpr, residual branches joined by union) and the measured one (the
input pixels with a non-zero gradient of one output unit, with positive weights
so nothing cancels). Each layer is probed through a function that returns that
layer's output. ResNet-18 is probed on a 128x128 input: on CIFAR's 32x32 every
unit from layer 3 on sees the whole image, so agreement there would only show
the clipping.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from experiments._common import Context, main
from jaxcnn.analysis import positive_params, receptive_field
from jaxcnn.models import get_model


def measuring_variables(model, input_shape):
    """Variables without running init: positive params, BatchNorm statistics mean 0 / var 1 (init's values)."""
    shapes = jax.eval_shape(
        lambda x: model.init(jax.random.key(0, impl="rbg"), x, train=False),
        jax.ShapeDtypeStruct((1, *input_shape), jnp.float32),
    )

    @jax.jit  # one compiled call instead of a few eager ops per parameter
    def build():
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        variables = {"params": positive_params(zeros["params"])}
        if "batch_stats" in zeros:
            variables["batch_stats"] = jax.tree_util.tree_map_with_path(
                lambda p, a: jnp.ones_like(a) if p[-1].key == "var" else a, zeros["batch_stats"]
            )
        return variables

    return build()


def probe(model, variables, path: tuple):
    """``x -> `` the output of the submodule at ``path`` (its ``__call__``), in inference mode."""

    def f(x):
        keep = lambda m, method: method == "__call__" and tuple(m.path) == path
        _, state = model.apply(variables, x, train=False, capture_intermediates=keep, mutable=["intermediates"])
        node = state["intermediates"]
        for name in path:
            node = node[name]
        return node["__call__"][0]

    return f


def fields(model, input_shape, layers, row_name, positions=("centre",)):
    """Probe every layer; return table rows, the centre units' measured masks and the analytic rows."""
    analytic_rows = receptive_field(model, input_shape, measure=False).layers
    table = {r.name: r for r in analytic_rows}
    variables = measuring_variables(model, input_shape)
    rows, masks, agree, consistent = [], [], [], []
    for layer in layers:
        row = table[row_name(layer)]
        for where in positions:
            pos = None if where == "centre" else (0, 0)
            rf = receptive_field(probe(model, variables, (layer,)), input_shape, pos)
            agree.append(rf.agrees)
            # the per-layer (size, jump, start) row predicts this unit's field: start + p j -/+ (r - 1) / 2
            consistent.append(
                all(
                    (lo, hi) == (s + p * j - (r - 1) / 2, s + p * j + (r - 1) / 2)
                    for (lo, hi), s, p, j, r in zip(rf.analytic, row.start, rf.position, row.jump, row.size)
                )
            )
            fmt = lambda t: "x".join(map(str, t))
            span = lambda f: ", ".join(f"{lo}..{hi}" for lo, hi in f)
            rows.append(
                (
                    layer,
                    fmt(rf.output_shape[:-1]),
                    fmt(row.size),
                    fmt(row.jump),
                    ", ".join(f"{v:g}" for v in row.start),
                    str(rf.position),
                    span(rf.analytic),
                    span(rf.clipped),
                    span(rf.measured),
                    "yes" if rf.agrees else "**NO**",
                )
            )
            if where == "centre":
                masks.append((layer, rf.measured_mask, rf.clipped))
    return rows, masks, all(agree), all(consistent), len(agree), analytic_rows


HEADERS = ["layer", "output", "r", "j", "start", "unit", "analytic field", "clipped", "measured", "equal"]


def run(ctx: Context) -> None:
    # --- LWLS Example 6.3: three convs, probed at the centre unit and at the corner (0, 0)
    lwls = get_model("lwls_cnn")
    l_rows, l_masks, l_agree, l_cons, l_n, _ = fields(
        lwls, (28, 28, 1), ["conv1", "conv2", "conv3"], lambda n: n, positions=("centre", "corner")
    )
    ctx.table(
        "lwls_cnn (28x28x1): analytic vs measured field per conv layer (rows: input index ranges, per dim)",
        HEADERS,
        l_rows,
    )
    logits = receptive_field(lwls, (28, 28, 1))

    # --- ResNet-18, CIFAR stem, full width, on 128x128
    n = 128
    r18 = get_model("resnet18", stem="cifar", num_classes=10)
    blocks = [f"layer{i}_block{j}" for i in range(1, 5) for j in (1, 2)]
    layers = ["conv1", *blocks] if not ctx.quick else ["conv1", "layer2_block2", "layer4_block2"]
    r_rows, r_masks, r_agree, r_cons, r_n, every = fields(
        r18, (n, n, 3), layers, lambda name: name if name == "conv1" else f"{name}/conv2"
    )
    ctx.table(
        f"resnet18, CIFAR stem ({n}x{n}x3): centre unit of the stem and of every residual block's output",
        HEADERS,
        r_rows,
    )
    ctx.table(
        "resnet18 (CIFAR stem): the analytic recurrences over all 20 convolutions",
        ["conv", "window", "stride", "padding (lo, hi)", "output", "r", "j"],
        [
            (
                r.name,
                "x".join(map(str, r.window)),
                r.strides[0],
                str(r.padding[0]),
                "x".join(map(str, r.output_shape)),
                r.size[0],
                r.jump[0],
            )
            for r in every
        ],
    )
    # on CIFAR's own 32x32, the last block's units see the whole image
    small = receptive_field(probe(r18, measuring_variables(r18, (32, 32, 3)), ("layer4_block2",)), (32, 32, 3))

    # --- figure: nested measured fields of the centre units, analytic boxes dashed
    fig = Figure(figsize=(12.5, 5.8))
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.25]})
    for ax, masks, title, size in (
        (axes[0], l_masks, "lwls_cnn, 28x28", 28),
        (axes[1], r_masks, f"resnet18 (CIFAR stem), {n}x{n}", n),
    ):
        level = np.full((size, size), np.nan)
        for i, (_, mask, _) in reversed(list(enumerate(masks))):
            level[mask] = i
        cmap = matplotlib.colormaps["viridis"].resampled(len(masks))
        im = ax.imshow(level, cmap=cmap, vmin=-0.5, vmax=len(masks) - 0.5)
        for _, _, ((r0, r1), (c0, c1)) in masks:
            ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False, ls="--", lw=1, ec="red"))
        cb = fig.colorbar(im, ax=ax, ticks=range(len(masks)), fraction=0.046)
        cb.ax.set_yticklabels([m[0] for m in masks], fontsize=8)
        ax.set_title(f"{title}: measured field of the centre unit per layer", fontsize=10)
        ax.set_xlabel("input column")
        ax.set_ylabel("input row")
    fig.tight_layout()
    ctx.save_figure(
        fig,
        dpi=100,
        caption="Colour = the first layer whose centre unit's gradient reaches that input pixel "
        "(nested squares: each layer sees more); red dashed = the analytic field, clipped to the image.",
    )

    ctx.check(
        "lwls_cnn: analytic (clipped) field = gradient-measured field for conv1-3, centre and corner units",
        l_agree,
        f"{l_n} units",
    )
    ctx.check(
        "lwls_cnn: the textbook sizes r = 5, 9, 15 and jumps j = 1, 2, 4",
        [r[2] for r in l_rows[::2]] == ["5x5", "9x9", "15x15"] and [r[3] for r in l_rows[::2]] == ["1x1", "2x2", "4x4"],
    )
    ctx.check(
        "lwls_cnn: each logit sees the whole 28x28 image (analytic and measured)",
        logits.measured == ((0, 27), (0, 27)) and logits.agrees and bool(logits.measured_mask.all()),
    )
    ctx.check(
        f"resnet18: analytic = measured for the centre unit of {'every' if not ctx.quick else 'each probed'} "
        "block (residual branches joined by union)",
        r_agree,
        f"{r_n} units",
    )
    ctx.check(
        "the per-layer (r, j, start) table predicts each probed unit's field (start + p*j -/+ (r-1)/2)",
        l_cons and r_cons,
    )
    last = every[-1]
    ctx.check(
        "resnet18's last conv has r = 109, j = 8 (= 3 + 4*2 + (2 + 3*4) + (4 + 3*8) + (8 + 3*16) by hand)",
        last.size == (109, 109) and last.jump == (8, 8),
        f"r {last.size}, j {last.jump}",
    )
    ctx.check(
        "on 32x32 inputs a layer-4 unit of resnet18 sees the whole image (field clipped to 0..31)",
        small.measured == ((0, 31), (0, 31)) and small.agrees,
        f"unclipped {small.analytic}",
    )
    ctx.text(
        "The receptive field grows by (k - 1) times the current jump at every layer, and the jump multiplies by the "
        f"stride. In lwls_cnn the three convolutions see 5, 9 and 15 pixels (jumps 1, 2, 4); the gradient of one "
        f"unit reaches exactly the analytic square, clipped to the image, for centre and corner units ({l_n} units), "
        "and the logits see all 784 pixels. ResNet-18 with the CIFAR stem (3x3 stem, no pooling) grows by 2 pixels "
        "per 3x3 conv at jump 1 (stem and layer1: 3 to 11), then by 4, 8 and 16 per conv after each stride-2 stage, "
        f"ending at {last.size[0]}x{last.size[1]} with jump {last.jump[0]}; the strided 1x1 shortcut sees less than "
        "the main path, so the union at each addition is the main path's field. On a 128x128 input every probed "
        f"block's centre unit has exactly the analytic field as its measured field ({r_n} units); on CIFAR's "
        f"32x32 images a layer-4 unit's field ({small.size[0]} pixels wide) is clipped to the whole image. The field "
        "is an upper bound on what a unit can see; how much each pixel matters (the 'effective' field) is a "
        "different, Gaussian-like measurement not made here."
    )
    ctx.set_headline(
        f"analytic = measured field in {l_n + r_n}/{l_n + r_n} probed units; lwls_cnn r = 5/9/15, resnet18 (CIFAR "
        f"stem) r = 3 -> {last.size[0]}"
    )


if __name__ == "__main__":
    raise SystemExit(main("16_receptive_field", run, __doc__))
