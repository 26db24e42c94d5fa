"""Shift invariance: anti-aliased pooling (BlurPool) makes a CNN's prediction more consistent under shifts than max pooling.

Zhang (ICML 2019) measures *classification consistency*: how often a network
predicts the same class for two randomly shifted copies of one test image. Max
pooling with stride (and strided convolution) subsamples without low-pass
filtering, so a one-pixel shift can change the features a lot (aliasing);
MaxBlurPool (max at stride 1, then a binomial blur at stride 2) filters first.

Here: the LWLS Example 6.3 CNN (``lwls_cnn``) with its two stride-2 stages done
as a stride-1 conv + ReLU followed by 2x2 max pooling (``downsample="max"``),
MaxBlurPool with the 3-tap filter (``"blur"``, the ``lwls_cnn_blurpool`` zoo
entry) or 2x2 average pooling (``"avg"``), trained identically (Adam 2e-3 with
cosine decay, batch 64, random translations of up to ``MAX_SHIFT`` pixels as
augmentation, as Zhang trains with random crops) on the MNIST t10k images split 8,000/2,000 (the 60k
training file is not available offline). Consistency: for every test image two
independent random circular shifts of up to ``MAX_SHIFT`` pixels in each
direction (MNIST's empty border makes a circular shift a translation), and the
fraction of images whose two predicted classes agree; a second figure, the
fraction unchanged by a shift of exactly ``d`` pixels diagonally. Several seeds.

CIFAR-10 too when ``JAXCNN_CIFAR10_DIR`` names a local copy (the python batches).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.figure import Figure

import jaxcnn
from experiments._common import MNIST_DIR, Context, main
from jaxcnn.data.augment import random_crop
from jaxcnn.models import get_model
from jaxcnn.train import evaluate, fit, make_optimizer, make_schedule

POOLS = ("max", "blur", "avg")
LABEL = {"max": "MaxPool 2x2", "blur": "MaxBlurPool (m=3)", "avg": "AvgPool 2x2"}
MAX_SHIFT = 4


def shift_augment(key, x):
    """Training augmentation as Zhang's (random crops): random translations of up to MAX_SHIFT px, zero fill."""
    return random_crop(key, x, MAX_SHIFT)


def predict_fn(model):
    return jax.jit(lambda params, x: jnp.argmax(model.apply({"params": params}, x), -1))


def predictions(predict, params, x, batch=500):
    return np.concatenate([np.asarray(predict(params, x[i : i + batch])) for i in range(0, len(x), batch)])


def shifted(x, shifts):
    """Each image rolled by its own (dy, dx), circularly."""
    return np.stack([np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(x, shifts)])


def measure(model, params, x, y, seed):
    """Zhang's consistency under two random shifts, and the agreement with the unshifted prediction per diagonal shift."""
    predict = predict_fn(model)
    rng = np.random.default_rng(seed + 1000)
    a, b = (rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, (len(x), 2)) for _ in range(2))
    pa, pb = predictions(predict, params, shifted(x, a)), predictions(predict, params, shifted(x, b))
    base = predictions(predict, params, x)
    per_shift = [
        float(np.mean(predictions(predict, params, np.roll(x, (d, d), axis=(1, 2))) == base))
        for d in range(MAX_SHIFT + 1)
    ]
    return float(np.mean(pa == pb)), float(np.mean(pa == y)), per_shift


def run_dataset(ctx, ds, epochs, seeds, lr, name):
    steps = (len(ds.x_train) // 64) * epochs
    res = {p: [] for p in POOLS}
    for pool in POOLS:
        model = get_model("lwls_cnn", downsample=pool, num_classes=ds.num_classes)
        for seed in seeds:
            tx = make_optimizer("adam", make_schedule("cosine", lr, total_steps=steps))
            r = fit(model, ds, tx, epochs=epochs, batch_size=64, seed=seed, progress=False, augment=shift_augment)
            acc = evaluate(model, r.state, ds.x_test, ds.y_test)["accuracy"]
            cons, shift_acc, per_shift = measure(model, r.state.params, ds.x_test, ds.y_test, seed)
            res[pool].append((acc, cons, shift_acc, per_shift))
            print(f"{name} {pool} seed {seed}: acc {acc:.4f} consistency {cons:.4f}", flush=True)
    rows = []
    for pool in POOLS:
        a = np.array([r[:3] for r in res[pool]])
        rows.append(
            (
                LABEL[pool],
                len(seeds),
                f"{a[:, 0].mean():.2%} ± {a[:, 0].std():.2%}",
                f"{a[:, 1].mean():.2%} ± {a[:, 1].std():.2%}",
                f"{a[:, 2].mean():.2%}",
                " / ".join(f"{c:.2%}" for c in a[:, 1]),
            )
        )
    ctx.table(
        f"{name}: lwls_cnn with three downsampling layers, {epochs} epochs, mean ± std over {len(seeds)} seeds "
        f"(consistency: two random circular shifts of up to ±{MAX_SHIFT} px per axis)",
        ["downsampling", "seeds", "test accuracy", "consistency", "accuracy on shifted", "consistency per seed"],
        rows,
    )
    return res


def avg_note(mean):
    """The average-pooling comparison, in words (Zhang found the blurred max pool ahead of plain average pooling)."""
    if abs(mean["avg"] - mean["blur"]) < 0.002:
        return (
            f"MaxBlurPool and plain average pooling are level here ({mean['blur']:.2%} vs {mean['avg']:.2%}, within "
            "0.2 points); 2x2 average pooling is itself a low-pass filter then subsampling (Zhang's 'Rect-2')."
        )
    if mean["avg"] > mean["blur"]:
        return (
            f"Unlike Zhang's ImageNet results, average pooling (a 2x2 box blur before subsampling) is here at least as "
            f"consistent as MaxBlurPool ({mean['avg']:.2%} vs {mean['blur']:.2%}); 2x2 average pooling is itself a "
            "low-pass filter then subsampling (Zhang's 'Rect-2' BlurPool), and on this small task it is enough."
        )
    return f"As in Zhang's results, MaxBlurPool is ahead of plain average pooling ({mean['blur']:.2%} vs {mean['avg']:.2%})."


def reading(mean, acc, wins, n_seeds):
    """The result page's paragraph: what Zhang reports, what was measured, where they differ."""
    spread = max(mean.values()) - min(mean.values())
    return (
        "**What the paper reports.** Zhang (ICML 2019) trains on ImageNet and CIFAR-10 (with random-crop "
        "augmentation) and measures consistency (the same class for two random shifts); anti-aliasing (MaxBlurPool, "
        "and the blurred versions of strided convolution and average pooling) raises it for every architecture "
        "tested, by about one to a few points on ImageNet depending on the filter, with accuracy equal or higher. "
        f"**What jaxcnn measured.** On MNIST (8,000/2,000 t10k split, lwls_cnn, {n_seeds} seeds, trained with "
        f"random shifts) consistency under shifts of up to ±{MAX_SHIFT} px is {mean['max']:.2%} with max pooling, "
        f"{mean['blur']:.2%} with MaxBlurPool and {mean['avg']:.2%} with average pooling; accuracy {acc['max']:.2%} / "
        f"{acc['blur']:.2%} / {acc['avg']:.2%}. MaxBlurPool beats max pooling in {wins}/{n_seeds} seeds. "
        f"**Where they differ.** The direction is Zhang's, but the effect is small: the three poolings lie within "
        f"{spread * 100:.2f} points of each other, about the size of the seed-to-seed spread, so a few seeds cannot "
        "rank them firmly; the shifts here are circular on MNIST's empty border (Zhang shifts crops of larger "
        "images); the network is the 3-conv LWLS CNN with a dense head (no global pooling), not VGG/ResNet; no "
        "CIFAR-10 copy was given unless a CIFAR table appears above. " + avg_note(mean)
    )


def run(ctx: Context) -> None:
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        ctx.text(f"MNIST is not at {MNIST_DIR} (set JAXCNN_MNIST_DIR); nothing was measured.")
        ctx.check("MNIST t10k files present", False, str(MNIST_DIR))
        return
    ds = jaxcnn.data.mnist(MNIST_DIR)
    if ctx.quick:
        ds = jaxcnn.data.Dataset(
            ds.x_train[:4000],
            ds.y_train[:4000],
            ds.x_test[:1000],
            ds.y_test[:1000],
            ds.num_classes,
            ds.name,
            ds.description + "; quick: 4,000/1,000",
        )
    epochs, seeds = (3, (ctx.seed, ctx.seed + 1)) if ctx.quick else (5, tuple(ctx.seed + i for i in range(3)))
    res = run_dataset(ctx, ds, epochs, seeds, 2e-3, "MNIST 8k/2k" if not ctx.quick else "MNIST 4k/1k (quick)")
    mean = {p: np.mean([r[1] for r in res[p]]) for p in POOLS}
    acc = {p: np.mean([r[0] for r in res[p]]) for p in POOLS}
    wins = sum(b[1] > m[1] for b, m in zip(res["blur"], res["max"]))

    cifar = os.environ.get("JAXCNN_CIFAR10_DIR")
    if cifar:
        c = jaxcnn.data.load("cifar10", path=cifar)
        n_tr, n_te = (5000, 1000) if ctx.quick else (len(c.x_train), len(c.x_test))
        c = jaxcnn.data.Dataset(
            c.x_train[:n_tr], c.y_train[:n_tr], c.x_test[:n_te], c.y_test[:n_te], 10, c.name, c.description
        )
        cres = run_dataset(ctx, c, 2 if ctx.quick else 10, seeds[:2], 2e-3, "CIFAR-10")
        cmean = {p: np.mean([r[1] for r in cres[p]]) for p in POOLS}
        ctx.check(
            "CIFAR-10: MaxBlurPool more consistent than max pooling (mean over seeds)",
            cmean["blur"] > cmean["max"],
            f"{cmean['blur']:.2%} vs {cmean['max']:.2%}",
        )

    fig = Figure(figsize=(6.2, 4))
    ax = fig.subplots()
    for pool in POOLS:
        curve = np.mean([r[3] for r in res[pool]], axis=0)
        ax.plot(range(MAX_SHIFT + 1), curve, "o-", label=LABEL[pool])
    ax.set_xlabel("diagonal shift d (pixels, circular)")
    ax.set_ylabel("prediction unchanged vs unshifted")
    ax.set_title("lwls_cnn on MNIST: agreement with the unshifted prediction", fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    ctx.save_figure(
        fig, caption="Fraction of test images whose predicted class is unchanged by a (d, d) shift, mean over seeds."
    )

    ctx.check(
        "MaxBlurPool is more consistent under random shifts than max pooling (mean over seeds), Zhang's direction",
        mean["blur"] > mean["max"],
        f"{mean['blur']:.2%} vs {mean['max']:.2%}",
    )
    if not ctx.quick:  # 2 quick seeds of 3 epochs on 4,000 images: a seed-by-seed ranking is noise there
        ctx.check("... and in the majority of seeds", wins * 2 > len(seeds), f"{wins}/{len(seeds)} seeds")
    tol = 0.02 if ctx.quick else 0.005
    ctx.check(
        f"anti-aliasing costs no accuracy: MaxBlurPool within {tol * 100:.1f} points of max pooling (or better)",
        acc["blur"] >= acc["max"] - tol,
        f"{acc['blur']:.2%} vs {acc['max']:.2%}",
    )
    ctx.text(reading(mean, acc, wins, len(seeds)))
    ctx.set_headline(
        f"MNIST 8k/2k, shifts ≤ ±{MAX_SHIFT} px, {len(seeds)} seeds: consistency max pool {mean['max']:.2%}, MaxBlurPool "
        f"{mean['blur']:.2%}, avg pool {mean['avg']:.2%}; accuracy {acc['max']:.2%} / {acc['blur']:.2%} / {acc['avg']:.2%}"
    )


if __name__ == "__main__":
    raise SystemExit(main("18_shift_invariance", run, __doc__))
