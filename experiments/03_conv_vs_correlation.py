"""Convolution vs cross-correlation: one flips the kernel, and for a learned kernel that makes no difference.

Deep-learning "convolution" is cross-correlation; ``F.conv(..., flip=True)``
is the true convolution. Both are checked against ``scipy.signal.convolve`` /
``scipy.signal.correlate`` in all three of scipy's modes, in 1-D and 2-D, and
the flip identity ``conv(x, w, flip=True) == conv(x, w[::-1, ::-1])`` is
checked bit for bit. Then the same small CNN is trained on the 8x8 digits
(upsampled to 16x16) three times with the same data order: (A) true
convolutions; (B) cross-correlations starting from the *same* kernels, a
different but equally good starting point; (C) cross-correlations starting from
A's kernels flipped, which is the same function as A, so training follows A's
trajectory exactly, mirrored.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import numpy as np
import scipy.signal
from flax import linen as nn
from matplotlib.figure import Figure

import jaxcnn.functional as F
import jaxcnn.nn as jnn
from experiments._common import Context, main
from jaxcnn.data import batches, digits
from jaxcnn.train import (
    create_train_state,
    evaluate,
    make_optimizer,
    make_schedule,
    make_train_step,
)

MODES = ("full", "same", "valid")


class SmallCNN(nn.Module):
    """conv 3x3x8 - ReLU - maxpool 2 - conv 3x3x16 - ReLU - maxpool 2 - dense 10; ``flip`` for both convs."""

    flip: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = jnn.MaxPool(2)(jax.nn.relu(jnn.Conv(8, 3, flip=self.flip, name="conv1")(x)))
        x = jnn.MaxPool(2)(jax.nn.relu(jnn.Conv(16, 3, flip=self.flip, name="conv2")(x)))
        return nn.Dense(10, name="head")(jnn.Flatten()(x))


def flip_kernels(params):
    """Reverse every conv kernel ``(kh, kw, I, O)`` along its two spatial axes; other leaves unchanged."""
    return {k: ({**v, "kernel": v["kernel"][::-1, ::-1]} if k.startswith("conv") else v) for k, v in params.items()}


def train(model, params, ds, epochs: int, seed: int):
    """Adam (cosine schedule) on ``ds`` from ``params``; per-step losses, per-epoch test accuracy and kernels."""
    steps = epochs * (len(ds.x_train) // 32)
    tx = make_optimizer("adam", make_schedule("cosine", 3e-3, total_steps=steps))
    sample = jax.ShapeDtypeStruct((1, *ds.x_train.shape[1:]), jnp.float32)
    state = create_train_state(model, tx, sample, seed=seed, params=params)
    step = make_train_step(model, "cross_entropy", strategy="jit")
    placed = step.place_state(state)
    losses, accs, kernels = [], [], []
    for epoch in range(epochs):
        for batch in batches(ds.x_train, ds.y_train, 32, seed=seed, epoch=epoch):
            placed, metrics = step(placed, step.place_batch(batch))
            losses.append(float(step.fetch_metrics(metrics)["loss"]))
        state = jax.device_get(step.fetch_state(placed))
        accs.append(evaluate(model, state, ds.x_test, ds.y_test)["accuracy"])
        kernels.append({k: np.asarray(state.params[k]["kernel"]) for k in ("conv1", "conv2")})
    return np.array(losses), accs, kernels


def run(ctx: Context) -> None:
    rng = np.random.default_rng(ctx.seed)

    # --- 1. flip=True is scipy.signal.convolve, the default is scipy.signal.correlate (float64 oracle)
    rows, errs = [], []
    for shape, k in (((11,), 3), ((11,), 5), ((9, 10), 3), ((9, 10), 5)):
        x = rng.standard_normal(shape)
        w = rng.standard_normal((k,) * len(shape))
        xb, wb = x[None, ..., None].astype(np.float32), w[..., None, None].astype(np.float32)
        for mode in MODES:
            for flip, oracle in ((True, scipy.signal.convolve), (False, scipy.signal.correlate)):
                ref = oracle(x, w, mode=mode)
                y = np.asarray(F.conv(xb, wb, padding=mode, flip=flip))[0, ..., 0]
                err = float(np.max(np.abs(y - ref))) if y.shape == ref.shape else float("inf")
                errs.append(err)
                name = f"{len(shape)}-D {'x'.join(map(str, shape))}, k={k}"
                rows.append(
                    (name, mode, f"flip={flip}", f"scipy.signal.{oracle.__name__}", "x".join(map(str, y.shape)), err)
                )
    ctx.table("F.conv against scipy (odd kernels)", ["input", "mode", "F.conv", "oracle", "output", "max |diff|"], rows)

    # even kernels: scipy's "same" keeps the centre of "full" with the larger half of the padding
    # first; jaxcnn's "SAME" (XLA, TensorFlow, PyTorch) puts the smaller half first.
    even_rows, even_same, even_shifted = [], [], []
    for k in (2, 4):
        x, w = rng.standard_normal(10), rng.standard_normal(k)
        xb, wb = x.reshape(1, 10, 1).astype(np.float32), w.reshape(k, 1, 1).astype(np.float32)
        for flip, oracle in ((True, scipy.signal.convolve), (False, scipy.signal.correlate)):
            ref = oracle(x, w, mode="same")
            same = np.asarray(F.conv(xb, wb, padding="SAME", flip=flip))[0, :, 0]
            explicit = np.asarray(F.conv(xb, wb, padding=((k // 2, k // 2 - 1),), flip=flip))[0, :, 0]
            e_same, e_expl = float(np.max(np.abs(same - ref))), float(np.max(np.abs(explicit - ref)))
            even_same.append(e_same)
            even_shifted.append(e_expl)
            even_rows.append((k, oracle.__name__, e_same, f"(({k // 2}, {k // 2 - 1}),)", e_expl))
    ctx.table(
        "Even kernels: scipy's mode='same' vs padding='SAME' (max |diff|)",
        ["k", "scipy", "padding='SAME'", "explicit padding", "explicit: max |diff|"],
        even_rows,
    )

    # --- 2. the flip identity, bit for bit
    x = jnp.asarray(rng.standard_normal((2, 12, 12, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 5, 3, 4)), jnp.float32)
    flip_identity = bool(jnp.array_equal(F.conv(x, w, flip=True), F.conv(x, w[::-1, ::-1])))
    conv_is_not_corr = float(jnp.max(jnp.abs(F.conv(x, w, flip=True) - F.conv(x, w))))

    # --- 3. learning makes the two equivalent
    ds = digits(size=16, seed=ctx.seed)
    epochs = 3 if ctx.quick else 12
    model_conv, model_corr = SmallCNN(flip=True), SmallCNN(flip=False)
    init = jax.jit(lambda k, x: model_conv.init(k, x))
    params_for = lambda seed: jax.device_get(
        init(jax.random.key(seed, impl="rbg"), jnp.zeros((1, 16, 16, 1)))["params"]
    )
    params = params_for(ctx.seed)
    loss_a, acc_a, ker_a = train(model_conv, params, ds, epochs, ctx.seed)
    loss_b, acc_b, _ = train(model_corr, params, ds, epochs, ctx.seed)
    loss_c, acc_c, ker_c = train(model_corr, flip_kernels(params), ds, epochs, ctx.seed)
    # seed noise: the convolution network from other initial draws (same data order)
    other_seeds = [] if ctx.quick else [ctx.seed + 1, ctx.seed + 2, ctx.seed + 3]
    acc_other = [train(model_conv, params_for(s), ds, epochs, ctx.seed)[1][-1] for s in other_seeds]
    mirror = max(float(np.max(np.abs(ka[name][::-1, ::-1] - kc[name]))) for ka, kc in zip(ker_a, ker_c) for name in ka)
    loss_gap = float(np.max(np.abs(loss_a - loss_c)))
    ctx.table(
        "The same CNN trained three ways on digits (16x16; 1,438 train / 359 test images)",
        ["run", "conv layers", "initial kernels", "final test accuracy", "final train loss (last 10 steps)"],
        [
            ("A", "convolution (flip=True)", "W0", acc_a[-1], float(loss_a[-10:].mean())),
            ("B", "cross-correlation", "W0 (same numbers)", acc_b[-1], float(loss_b[-10:].mean())),
            ("C", "cross-correlation", "W0 flipped", acc_c[-1], float(loss_c[-10:].mean())),
        ],
    )
    if other_seeds:
        ctx.table(
            "Seed noise: convolution network A from other initial draws (same batches)",
            ["init seed", "final test accuracy"],
            [(s, a) for s, a in zip(other_seeds, acc_other)],
        )
    else:
        ctx.text("(--quick: the seed-noise runs are not made.)")
    ctx.table(
        "A vs C after every epoch",
        ["epoch", "test acc A", "test acc C", "max |flip(K_A) - K_C| (conv1, conv2)"],
        [
            (e + 1, acc_a[e], acc_c[e], max(float(np.max(np.abs(ka[n][::-1, ::-1] - kc[n]))) for n in ka))
            for e, (ka, kc) in enumerate(zip(ker_a, ker_c))
        ],
    )

    # --- figure: A's learned conv1 kernels, C's (mirrored), and the three loss curves
    fig = Figure(figsize=(12, 3.8))
    ax_k, ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    ka, kc = ker_a[-1]["conv1"][:, :, 0, :], ker_c[-1]["conv1"][:, :, 0, :]
    mosaic = np.full((2 * 4 - 1, 8 * 4 - 1), np.nan)  # 2 rows (A, C) of 8 kernels, 1-pixel gaps
    for i in range(8):
        mosaic[0:3, 4 * i : 4 * i + 3] = ka[:, :, i]
        mosaic[4:7, 4 * i : 4 * i + 3] = kc[:, :, i]
    lim = float(np.abs(ka).max())
    im = ax_k.imshow(mosaic, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax_k.set_yticks([1, 5], ["A: convolution", "C: correlation"])
    ax_k.set_xticks([4 * i + 1 for i in range(8)], [f"filter {i + 1}" for i in range(8)], fontsize=8)
    ax_k.set_title("learned 3x3 conv1 kernels: C's are A's rotated by 180 degrees", fontsize=10)
    fig.colorbar(im, ax=ax_k, fraction=0.02, pad=0.01)
    smooth = lambda v: np.convolve(v, np.ones(10) / 10, mode="valid")
    ax.plot(smooth(loss_a), label=f"A convolution ({acc_a[-1]:.1%} test)", lw=4, alpha=0.4)
    ax.plot(smooth(loss_b), label=f"B correlation, same W0 ({acc_b[-1]:.1%})", lw=1)
    ax.plot(smooth(loss_c), "k--", label=f"C correlation, flipped W0 ({acc_c[-1]:.1%})", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (10-step mean)")
    ax.set_title("training loss: C's curve lies exactly on A's", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout(w_pad=4)
    ctx.save_figure(
        fig,
        dpi=110,
        caption="A learns with true convolutions, C with cross-correlations from A's flipped "
        "start: C's kernels are A's mirrored and the loss curves coincide; B (correlation, unflipped start) "
        "takes a different path to a similar accuracy.",
    )

    worst = max(errs)
    ctx.check(
        "flip=True equals scipy.signal.convolve and the default equals scipy.signal.correlate "
        "(full/same/valid, 1-D and 2-D, odd kernels) to 1e-5",
        worst <= 1e-5,
        f"{len(errs)} cases, worst {worst:.1e}",
    )
    ctx.check(
        "for even kernels scipy's 'same' equals explicit padding (k/2, k/2-1), one place off jaxcnn's 'SAME'",
        max(even_shifted) <= 1e-5 and min(even_same) > 1e-3,
        f"explicit {max(even_shifted):.1e}; 'SAME' differs by >= {min(even_same):.2f}",
    )
    ctx.check("conv(x, w, flip=True) == conv(x, w[::-1, ::-1]) bit for bit", flip_identity)
    ctx.check(
        "for an asymmetric kernel convolution and correlation differ",
        conv_is_not_corr > 0.1,
        f"max |diff| {conv_is_not_corr:.2f}",
    )
    ctx.check(
        "with flipped initial kernels the cross-correlation network's kernels stay the convolution "
        "network's, mirrored, after every epoch (to 1e-6)",
        mirror <= 1e-6,
        f"max |diff| {mirror:.1e}",
    )
    ctx.check(
        "... and the two runs have the same losses at every step and the same test accuracy",
        loss_gap <= 1e-5 and acc_a == acc_c,
        f"max loss gap {loss_gap:.1e}; accuracy {acc_a[-1]:.4f} vs {acc_c[-1]:.4f}",
    )
    spread = [acc_a[-1], *acc_other]
    tol = 0.05 if ctx.quick else max(0.02, max(spread) - min(spread))
    ctx.check(
        f"from the same (unflipped) initial numbers both reach about the same accuracy (within "
        f"{'5%' if ctx.quick else 'the seed-to-seed spread of A, at least 2%'})",
        abs(acc_a[-1] - acc_b[-1]) <= tol,
        f"A {acc_a[-1]:.4f}, B {acc_b[-1]:.4f}"
        + (f"; A over {len(spread)} seeds {min(spread):.4f}-{max(spread):.4f}" if acc_other else ""),
    )
    ctx.text(
        f"With flip=True, F.conv is scipy's convolve and without it scipy's correlate, in full/same/valid modes "
        f"(worst difference {worst:.1e} over {len(errs)} cases; for even kernels scipy's 'same' puts the larger half "
        "of the padding first, jaxcnn's 'SAME' the smaller half as XLA/TensorFlow/PyTorch do, so they are one "
        "position apart). The only difference between the two is the kernel flip, and "
        "conv(x, w, flip=True) equals conv(x, w[::-1, ::-1]) bit for bit. That is why deep learning can use either: "
        "the kernel is learned, and a network of convolutions with kernels W is the network of correlations with "
        f"kernels flip(W). Trained on the same batches, run C (correlation, flipped start) stays the mirror image of "
        f"run A (convolution) for all {len(loss_a)} steps (largest kernel difference {mirror:.1e}, largest loss "
        f"difference {loss_gap:.1e}: bit for bit) and ends at the same test accuracy, {acc_a[-1]:.2%}. Run B starts from the same numbers "
        f"used as correlation kernels, i.e. another draw from the same symmetric initial distribution: it follows a "
        f"different path and reaches {acc_b[-1]:.2%}, {abs(acc_b[-1] - acc_a[-1]) * 100:.2f} points from A"
        + (
            f"; A alone, from {len(spread)} initial draws, spans {min(spread):.2%}-{max(spread):.2%} "
            f"({(max(spread) - min(spread)) * 100:.2f} points)."
            if acc_other
            else "."
        )
    )
    ctx.set_headline(
        f"flip=True = scipy convolve ({worst:.0e}); trained conv vs correlation nets: {acc_a[-1]:.2%} = {acc_c[-1]:.2%}, "
        f"kernels exact mirrors (max diff {mirror:g}); unflipped start: {acc_b[-1]:.2%}"
    )


if __name__ == "__main__":
    raise SystemExit(main("03_conv_vs_correlation", run, __doc__))
