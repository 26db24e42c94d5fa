"""LWLS Example 6.3: the lecture's digit CNN, layer by layer, trained on MNIST and compared with MLPs.

Lindholm, Wahlström, Lindsten & Schön, *Machine Learning: A First Course for
Engineers and Scientists*, Example 6.3: three convolutional layers (4, 8, 12
filters) and two dense layers, 122,270 parameters. The table of shapes and
parameters comes from ``jaxcnn.analysis.summary``; the network is then trained
with Adam on MNIST next to two fully connected baselines, the 784-200-10 MLP
(159,010 parameters) and a 784-154-10 MLP with about the CNN's count (122,440).
MNIST here is the 10,000 t10k images split 8,000/2,000 (the 60k training file
is not available offline), so the numbers are not those of the official split.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.figure import Figure

import jaxcnn
from experiments._common import MNIST_DIR, Context, main
from jaxcnn.analysis import summary
from jaxcnn.models import get_model
from jaxcnn.train import evaluate, fit, make_optimizer, make_schedule
from jaxcnn.train.callbacks import EvaluateEach

# The lecture's table: layer -> (parameters, output shape).
LECTURE = {
    "conv1": (104, "28x28x4"),
    "conv2": (808, "14x14x8"),
    "conv3": (1548, "7x7x12"),
    "dense1": (117800, "200"),
    "dense2": (2010, "10"),
}
CNN, MLP_200, MATCHED = "CNN (LWLS 6.3)", "MLP 784-200-10", "MLP 784-154-10 (matched)"
MODELS = {CNN: ("lwls_cnn", {}), MLP_200: ("mlp", {"widths": (200,)}), MATCHED: ("mlp", {"widths": (154,)})}


def run(ctx: Context) -> None:
    # --- the architecture, as the lecture tabulates it
    s = summary(get_model("lwls_cnn"), (28, 28, 1))
    rows = {r.name: r for r in s.rows}
    ctx.table(
        "LWLS Example 6.3: jaxcnn.analysis.summary vs the lecture",
        ["layer", "type", "output shape", "params", "lecture shape", "lecture params", "MACs"],
        [
            (r.name, r.type, r.shape_str, r.params, *(LECTURE[r.name][::-1] if r.name in LECTURE else ("", "")), r.macs)
            for r in s.rows
        ]
        + [("total", "", "", s.total_params, "", 122270, s.total_macs)],
    )
    for name, (params, shape) in LECTURE.items():
        got = rows.get(name)
        ok = got is not None and got.params == params and got.shape_str == shape
        ctx.check(
            f"{name}: {params:,} parameters, output {shape}",
            ok,
            f"measured {got.params:,}, {got.shape_str}" if got else "layer missing",
        )
    ctx.check("122,270 parameters in all", s.total_params == 122270, f"measured {s.total_params:,}")

    # --- training: Adam 2e-3 with cosine decay, batch 64, the same for every model and seed
    ds = jaxcnn.data.mnist(MNIST_DIR)
    epochs, seeds = (4, (ctx.seed,)) if ctx.quick else (10, tuple(ctx.seed + i for i in range(3)))
    steps = (len(ds.x_train) // 64) * epochs
    tx = make_optimizer("adam", make_schedule("cosine", 2e-3, total_steps=steps))
    results = {}
    for label, (name, kw) in MODELS.items():
        model = get_model(name, **kw)
        runs = [
            fit(
                model,
                ds,
                tx,
                epochs=epochs,
                batch_size=64,
                seed=seed,
                progress=False,
                callbacks=[EvaluateEach(model, ds.x_test, ds.y_test)],
            )
            for seed in seeds
        ]
        train = [evaluate(model, r.state, ds.x_train, ds.y_train)["accuracy"] for r in runs]
        results[label] = {
            "params": summary(model, (28, 28, 1)).total_params,
            "test": np.array([r.final["test_accuracy"] for r in runs]),
            "train": np.array(train),
            "test_loss": np.array([r.final["test_loss"] for r in runs]),
            "curves": {
                k: np.mean([[h[k] for h in r.history] for r in runs], axis=0)
                for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy")
            },
            "seconds": np.mean([sum(h["seconds"] for h in r.history[1:]) / max(len(r.history) - 1, 1) for r in runs]),
        }
    ctx.table(
        f"Trained on MNIST (8,000 train / 2,000 test from the t10k set), Adam 2e-3 cosine, batch 64, "
        f"{epochs} epochs; mean (min-max) over {len(seeds)} seed(s)",
        ["model", "params", "train accuracy", "test accuracy", "test loss", "s / epoch"],
        [
            (
                label,
                r["params"],
                r["train"].mean(),
                f"{r['test'].mean():.4f} ({r['test'].min():.4f}-{r['test'].max():.4f})",
                r["test_loss"].mean(),
                r["seconds"],
            )
            for label, r in results.items()
        ],
    )

    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    ep = np.arange(1, epochs + 1)
    for (label, r), color in zip(results.items(), ("C0", "C1", "C2")):
        c = r["curves"]
        ax1.plot(ep, c["train_loss"], "--", color=color, label=f"{label}, train")
        ax1.plot(ep, c["test_loss"], "-", color=color, marker="o", ms=3, label=f"{label}, test")
        ax2.plot(ep, 100 * c["train_accuracy"], "--", color=color)
        ax2.plot(ep, 100 * c["test_accuracy"], "-", color=color, marker="o", ms=3)
    ax1.set_yscale("log")
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy", ylim=(90, 100.2))
    ax1.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    ctx.save_figure(
        fig,
        dpi=110,
        caption=f"Learning curves (mean over {len(seeds)} seed(s)): dashed = training batches "
        "during the epoch, solid = the 2,000 held-out images after it.",
    )

    cnn, mlp, matched = results[CNN], results[MLP_200], results[MATCHED]
    target = 0.95 if ctx.quick else 0.97
    ctx.check(
        f"the CNN reaches >= {target:.0%} test accuracy (mean over seeds)",
        cnn["test"].mean() >= target,
        f"{cnn['test'].mean():.4f}",
    )
    ctx.check(
        "the CNN beats the 784-200-10 MLP (more parameters, no weight sharing)",
        cnn["test"].mean() > mlp["test"].mean(),
        f"{cnn['test'].mean():.4f} vs {mlp['test'].mean():.4f}",
    )
    ctx.check(
        "the CNN beats the MLP with the same parameter budget",
        cnn["test"].mean() > matched["test"].mean(),
        f"{cnn['test'].mean():.4f} vs {matched['test'].mean():.4f}",
    )
    err = {k: 1 - r["test"].mean() for k, r in results.items()}
    gap = {k: r["train"].mean() - r["test"].mean() for k, r in results.items()}
    ctx.text(
        f"`summary` reproduces the lecture's table exactly: 104 / 808 / 1,548 / 117,800 / 2,010 = {s.total_params:,} "
        "parameters, 96% of them in dense1, whose 588 inputs are the 7x7x12 feature maps. Trained the same way "
        f"(Adam 2e-3, cosine decay, batch 64, {epochs} epochs, {len(seeds)} seed(s)) on the 8,000 training images, "
        f"the CNN reaches {cnn['test'].mean():.2%} on the 2,000 held-out ones against {mlp['test'].mean():.2%} for "
        f"the 784-200-10 MLP ({mlp['params']:,} parameters) and {matched['test'].mean():.2%} for a 784-154-10 MLP "
        f"with the CNN's budget ({matched['params']:,}): the MLPs make {err[MLP_200] / err[CNN]:.1f}x and "
        f"{err[MATCHED] / err[CNN]:.1f}x the CNN's errors. Their train-test gaps are {gap[MLP_200]:.2%} and "
        f"{gap[MATCHED]:.2%} against the CNN's {gap[CNN]:.2%}. The CNN costs more compute per image (430k "
        "multiply-accumulates against 159k and 122k), which shows in the seconds per epoch. Data: the MNIST t10k "
        "images split 8,000/2,000 with seed 0 (the 60k training file is not available offline), not the official "
        "60k/10k split."
    )
    ctx.set_headline(
        f"summary = the lecture's table (122,270 params); MNIST 8k/2k: CNN {cnn['test'].mean():.2%} vs "
        f"MLP {mlp['test'].mean():.2%} (784-200-10) / {matched['test'].mean():.2%} (matched)"
    )


if __name__ == "__main__":
    raise SystemExit(main("07_lwls_example_6_3", run, __doc__))
