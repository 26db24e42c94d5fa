"""Dropout: a smaller train-test gap, inverted = scaled dropout, and Monte-Carlo averaging vs weight scaling.

A wide MLP (784-800-800-10) trained on 1,000 MNIST images overfits: it fits
them perfectly and generalizes much worse. Dropout (rate 0.5 after each hidden
layer) narrows the gap. The two ways to write dropout, "inverted" (scale by
1/p while training) and "scaled" (the paper's: multiply by p at inference),
are the same family of functions: with the weights after each dropout layer
multiplied by 1/p, and those weights' learning rate by 1/p^2 under SGD, the
scaled network follows the inverted one's training exactly, mask for mask. At
rate 0.5 every such rescaling is by a power of two, hence exact in floating
point, so the check is bit-for-bit. Finally the weight-scaling rule (one
deterministic pass) is compared with averaging the softmax of 50 random masks.
MNIST here is the 10,000 t10k images split 8,000/2,000 (the 60k training file
is not available offline); the 1,000 training images are the first of the
8,000.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import numpy as np
import optax
from matplotlib.figure import Figure

import jaxcnn
import jaxcnn.nn as jnn
from experiments._common import MNIST_DIR, Context, main
from jaxcnn.models import get_model
from jaxcnn.train import create_train_state, evaluate, fit, make_optimizer
from jaxcnn.train.callbacks import EvaluateEach

RATE = 0.5
WIDTHS = (800, 800)


class DropoutMLP(nn.Module):
    """Flatten, then ``Dense -> ReLU -> Dropout(rate, mode)`` per hidden layer, then a Dense head."""

    widths: tuple = WIDTHS
    rate: float = RATE
    mode: str = "inverted"

    @nn.compact
    def __call__(self, x: Any, *, train: bool = False) -> jnp.ndarray:
        x = jnn.Flatten()(x)
        for i, w in enumerate(self.widths, start=1):
            x = jax.nn.relu(nn.Dense(w, name=f"dense{i}")(x))
            x = jnn.Dropout(self.rate, mode=self.mode, name=f"dropout{i}")(x, deterministic=not train)
        return nn.Dense(10, name="head")(x)


def after_dropout(params: Any) -> Any:
    """True for the kernels that read a dropout layer's output (every Dense kernel but dense1's)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: path[0].key != "dense1" and path[-1].key == "kernel", params
    )


def logits_fn(model: nn.Module):
    return jax.jit(lambda params, x: model.apply({"params": params}, x))


def run(ctx: Context) -> None:
    full = jaxcnn.data.mnist(MNIST_DIR)
    n = 1000
    ds = jaxcnn.data.Dataset(
        full.x_train[:n],
        full.y_train[:n],
        full.x_test,
        full.y_test,
        10,
        full.name,
        full.description + f"; first {n} training images",
    )
    epochs, seeds = (30, (ctx.seed,)) if ctx.quick else (50, (ctx.seed, ctx.seed + 1, ctx.seed + 2))
    setups = {"SGD 0.1": (make_optimizer("sgd", 0.1), seeds)}
    if not ctx.quick:
        setups["Adam 1e-3"] = (make_optimizer("adam", 1e-3), seeds[:1])

    # --- 1. the gap: same network, same data, rate 0 vs 0.5
    runs, rows, gap = {}, [], {}
    for setup, (tx, setup_seeds) in setups.items():
        for rate in (0.0, RATE):
            model = get_model("mlp", widths=WIDTHS, dropout_rate=rate)
            for seed in setup_seeds:
                r = fit(
                    model,
                    ds,
                    tx,
                    epochs=epochs,
                    batch_size=50,
                    seed=seed,
                    progress=False,
                    callbacks=[EvaluateEach(model, ds.x_test, ds.y_test)],
                )
                runs[setup, rate, seed] = {
                    "result": r,
                    "model": model,
                    "train": evaluate(model, r.state, ds.x_train, ds.y_train),
                    "test": evaluate(model, r.state, ds.x_test, ds.y_test),
                }
            m = {
                k: np.mean([runs[setup, rate, s][part][metric] for s in setup_seeds])
                for k, (part, metric) in {
                    "tr": ("train", "accuracy"),
                    "te": ("test", "accuracy"),
                    "trl": ("train", "loss"),
                    "tel": ("test", "loss"),
                }.items()
            }
            gap[setup, rate] = (m["tr"] - m["te"], m["tel"] - m["trl"], m["te"], m["tel"], m["trl"])
            rows.append(
                (
                    setup,
                    len(setup_seeds),
                    f"{rate:g}",
                    m["tr"],
                    m["te"],
                    m["tr"] - m["te"],
                    m["trl"],
                    m["tel"],
                    m["tel"] - m["trl"],
                )
            )
    ctx.table(
        f"784-800-800-10 MLP on {n:,} MNIST training images (t10k split 8,000/2,000), batch 50, {epochs} epochs; "
        "mean over the seeds; train metrics in inference mode",
        [
            "optimizer",
            "seeds",
            "dropout rate",
            "train acc",
            "test acc",
            "acc gap",
            "train loss",
            "test loss",
            "loss gap",
        ],
        rows,
    )

    # --- 2. inverted vs scaled dropout: the same training run up to a rescaling of the next weights
    sample = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    inv, sca = DropoutMLP(mode="inverted"), DropoutMLP(mode="scaled")
    lr, eq_epochs, keep = 0.1, (5 if ctx.quick else 10), 1.0 - RATE
    tx_inv = make_optimizer("sgd", lr)
    params = create_train_state(inv, tx_inv, sample, seed=ctx.seed).params
    mask = after_dropout(params)
    tx_sca = optax.chain(make_optimizer("sgd", lr), optax.masked(optax.scale(1 / keep**2), mask))
    params_sca = jax.tree.map(lambda p, m: p / keep if m else p, params, mask)
    r_inv = fit(
        inv,
        ds,
        tx_inv,
        epochs=eq_epochs,
        batch_size=50,
        seed=ctx.seed,
        progress=False,
        state=create_train_state(inv, tx_inv, sample, seed=ctx.seed, params=params),
    )
    r_sca = fit(
        sca,
        ds,
        tx_sca,
        epochs=eq_epochs,
        batch_size=50,
        seed=ctx.seed,
        progress=False,
        state=create_train_state(sca, tx_sca, sample, seed=ctx.seed, params=params_sca),
    )
    r_naive = fit(
        sca,
        ds,
        tx_inv,
        epochs=eq_epochs,
        batch_size=50,
        seed=ctx.seed,
        progress=False,
        state=create_train_state(sca, tx_inv, sample, seed=ctx.seed, params=params),
    )
    mapped = jax.tree.map(lambda p, m: p * keep if m else p, r_sca.state.params, mask)
    param_diff = max(
        float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(mapped), jax.tree.leaves(r_inv.state.params))
    )
    z_inv = np.asarray(logits_fn(inv)(r_inv.state.params, ds.x_test))
    z_sca = np.asarray(logits_fn(sca)(r_sca.state.params, ds.x_test))
    z_naive = np.asarray(logits_fn(sca)(r_naive.state.params, ds.x_test))
    acc = {k: float(np.mean(z.argmax(1) == ds.y_test)) for k, z in (("inv", z_inv), ("sca", z_sca), ("naive", z_naive))}
    ctx.table(
        f"Inverted vs scaled dropout (rate {RATE}), SGD lr {lr}, {eq_epochs} epochs, same seed: same masks, same batches",
        [
            "scaled network",
            "max |param diff| (after x p)",
            "max |test logit diff|",
            "same test predictions",
            "test acc",
        ],
        [
            ("inverted (reference)", 0.0, 0.0, "-", acc["inv"]),
            (
                "scaled, next weights x 1/p, their lr x 1/p^2",
                param_diff,
                float(np.abs(z_sca - z_inv).max()),
                f"{np.mean(z_sca.argmax(1) == z_inv.argmax(1)):.2%}",
                acc["sca"],
            ),
            (
                "scaled, same init and lr (naive)",
                "-",
                float(np.abs(z_naive - z_inv).max()),
                f"{np.mean(z_naive.argmax(1) == z_inv.argmax(1)):.2%}",
                acc["naive"],
            ),
        ],
    )

    # --- 3. Monte-Carlo dropout vs the weight-scaling rule, on the dropout runs of part 1
    model, state = runs["SGD 0.1", RATE, seeds[0]]["model"], runs["SGD 0.1", RATE, seeds[0]]["result"].state
    probs = jax.jit(lambda p, x, k: jax.nn.softmax(model.apply({"params": p}, x, train=True, rngs={"dropout": k})))
    samples = np.stack([np.asarray(probs(state.params, ds.x_test, jax.random.key(1000 + i))) for i in range(50)])
    det = np.asarray(jax.nn.softmax(logits_fn(model)(state.params, ds.x_test)))
    counts = (1, 2, 5, 10, 20, 50)
    mc_acc = [float(np.mean(samples[:k].mean(0).argmax(1) == ds.y_test)) for k in counts]
    mc = samples.mean(0)
    det_acc, agree = float(np.mean(det.argmax(1) == ds.y_test)), float(np.mean(det.argmax(1) == mc.argmax(1)))
    single = float(np.mean([np.mean(s.argmax(1) == ds.y_test) for s in samples]))

    def nll(p: np.ndarray) -> float:
        return float(-np.mean(np.log(p[np.arange(len(ds.y_test)), ds.y_test] + 1e-12)))

    tv = float(0.5 * np.abs(mc - det).sum(1).mean())  # total variation between the two predictive distributions
    ctx.table(
        "Monte-Carlo dropout (softmax averaged over masks) vs the weight-scaling rule (one pass), "
        f"rate-{RATE} network of part 1 (SGD), seed {seeds[0]}",
        ["prediction", "test acc", "test NLL", "agreement with weight scaling"],
        [
            ("weight scaling (deterministic)", det_acc, nll(det), "-"),
            ("one random mask (mean over 50)", single, float(np.mean([nll(s) for s in samples])), "-"),
            *(
                (
                    f"MC average of {k} masks",
                    a,
                    nll(samples[:k].mean(0)),
                    f"{np.mean(samples[:k].mean(0).argmax(1) == det.argmax(1)):.2%}",
                )
                for k, a in zip(counts[1:], mc_acc[1:])
            ),
        ],
    )

    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    for rate, color in ((0.0, "C3"), (RATE, "C0")):
        h = runs["SGD 0.1", rate, seeds[0]]["result"].history
        ep = np.arange(1, len(h) + 1)
        ax1.plot(ep, [x["train_loss"] for x in h], "--", color=color, label=f"rate {rate:g}, train (with masks)")
        ax1.plot(ep, [x["test_loss"] for x in h], "-", color=color, label=f"rate {rate:g}, test")
    ax1.set(yscale="log", xlabel="epoch", ylabel="cross-entropy", title=f"{n:,} training images: overfitting")
    ax2.semilogx(counts, 100 * np.array(mc_acc), "o-", label="MC average of k masks")
    ax2.axhline(100 * det_acc, color="k", ls="--", label="weight scaling (1 pass)")
    ax2.set(xlabel="masks averaged (k)", ylabel="test accuracy (%)", title="MC dropout vs weight scaling")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.save_figure(
        fig,
        dpi=110,
        caption="Left: training (with masks) and test loss per epoch, seed "
        f"{seeds[0]}. Right: test accuracy of the softmax averaged over k dropout masks vs one deterministic pass.",
    )

    sgd, no = gap["SGD 0.1", RATE], gap["SGD 0.1", 0.0]
    ctx.check(
        "dropout narrows the train-test accuracy gap (SGD, mean over seeds)",
        sgd[0] < no[0],
        f"{sgd[0]:.4f} vs {no[0]:.4f}",
    )
    ctx.check(
        "dropout narrows the train-test loss gap (SGD, mean over seeds)", sgd[1] < no[1], f"{sgd[1]:.4f} vs {no[1]:.4f}"
    )
    ctx.check(
        "inverted and rescaled scaled dropout train to bit-identical parameters (rate 0.5: powers of two)",
        param_diff == 0.0,
        f"max diff {param_diff:.3g}",
    )
    ctx.check(
        "... and give bit-identical test logits",
        np.array_equal(z_sca, z_inv),
        f"max diff {np.abs(z_sca - z_inv).max():.3g}",
    )
    ctx.check(
        "the MC average of 50 masks and weight scaling agree on >= 98% of test predictions",
        agree >= 0.98,
        f"{agree:.2%}",
    )
    ctx.check(
        "their test accuracies differ by <= 1 point",
        abs(mc_acc[-1] - det_acc) <= 0.01,
        f"{mc_acc[-1]:.4f} vs {det_acc:.4f}",
    )
    ctx.check(
        "one random mask alone is worse than either (the ensemble matters)",
        single < min(det_acc, mc_acc[-1]),
        f"{single:.4f}",
    )
    adam = ""
    if ("Adam 1e-3", RATE) in gap:
        ad, ad0 = gap["Adam 1e-3", RATE], gap["Adam 1e-3", 0.0]
        smaller = ad0[0] - ad[0] < no[0] - sgd[0] and ad0[1] - ad[1] < no[1] - sgd[1]
        adam = (
            f" With Adam at 1e-3 (one seed), which drives the dropout network's training loss down to {ad[4]:.1e} "
            f"as well, the gaps are {ad[0]:.2%} / {ad[1]:.3f} with dropout against {ad0[0]:.2%} / {ad0[1]:.3f} "
            f"without{': a smaller effect than with SGD' if smaller else ''}."
        )
    match_k = next((k for k, a in zip(counts, mc_acc) if a >= det_acc), None)
    naive_agree = float(np.mean(z_naive.argmax(1) == z_inv.argmax(1)))
    ctx.text(
        f"On {n:,} training images the 784-800-800-10 MLP fits its training set ({no[0] + no[2]:.2%} train accuracy "
        f"without dropout) and reaches {no[2]:.2%} on the 2,000 test images (SGD, lr 0.1, {epochs} epochs, mean of "
        f"{len(seeds)} seed(s)). Dropout 0.5 after both hidden layers raises the test accuracy to {sgd[2]:.2%} and "
        f"lowers the test loss from {no[3]:.3f} to {sgd[3]:.3f}: the accuracy gap shrinks from {no[0]:.2%} to "
        f"{sgd[0]:.2%} and the loss gap from {no[1]:.3f} to {sgd[1]:.3f}, while the training images are still fitted "
        f"({sgd[0] + sgd[2]:.2%} train accuracy with dropout).{adam} Inverted and scaled dropout are one model in two "
        "parametrizations: started from the inverted network's weights with every post-dropout kernel multiplied "
        f"by 1/p = 2 and trained with SGD whose rate for those kernels is multiplied by 1/p^2 = 4, the scaled "
        f"network draws the same masks and ends, after {eq_epochs} epochs, with parameters equal to the inverted "
        f"one's (times 2) to the last bit (max difference {param_diff:g}) and identical test logits. Started from "
        f"the same weights with the same rate instead, it learns a different function ({naive_agree:.2%} of the "
        f"test predictions agree, accuracy {acc['naive']:.2%} vs {acc['inv']:.2%}), since its post-dropout weights "
        "start p times smaller in function space and move p^2 times slower. At test time, one deterministic pass "
        f"with the weight-scaling rule ({det_acc:.2%}) and the average of 50 random masks ({mc_acc[-1]:.2%}) agree "
        f"on {agree:.2%} of the test images (mean total variation between their predictive distributions {tv:.3f}); "
        f"a single thinned network is worse ({single:.2%} on average); the Monte-Carlo average "
        + (
            f"matches the one pass in accuracy from {match_k} masks on"
            if match_k
            else "stays below the one pass in accuracy even with 50 masks"
        )
        + f", and its log-loss is {'lower' if nll(mc) < nll(det) else 'higher'} ({nll(mc):.3f} vs {nll(det):.3f}). Data: the MNIST t10k images split 8,000/2,000 with seed 0 (the 60k "
        f"training file is not available offline), of whose training part only the first {n:,} are used."
    )
    ctx.set_headline(
        f"1,000 MNIST images: dropout 0.5 narrows the train-test gap {no[0]:.2%} -> {sgd[0]:.2%} (test loss "
        f"{no[3]:.3f} -> {sgd[3]:.3f}); scaled = inverted bit for bit after rescaling; MC(50) {mc_acc[-1]:.2%} vs "
        f"weight scaling {det_acc:.2%}, {agree:.2%} agreement"
    )


if __name__ == "__main__":
    raise SystemExit(main("10_dropout", run, __doc__))
