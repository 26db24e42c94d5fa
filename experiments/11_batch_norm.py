"""Batch normalization: faster training at high learning rates, running vs batch statistics at inference, and small batches.

Three measurements on MNIST (the 10,000 t10k images split 8,000/2,000; the 60k
training file is not available offline). (1) The LWLS Example 6.3 CNN with and
without BatchNorm after each convolution (``get_model("lwls_cnn",
batch_norm=...)``), plain SGD over a grid of learning rates up to 3.0, the
same seed and the same batches for every run. (2) Inference with the
running statistics (``train=False``) against normalizing every test batch by
its own statistics (``train=True``), for test batches of 1 to 2,000 images.
(3) Training with batches of 2, 8 and 128 images, for the CNN, whose BatchNorm
statistics pool every spatial position of the batch, and for a 784-200-10 MLP
with BatchNorm on its dense layer, whose statistics come from the batch alone.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import numpy as np
import optax
from matplotlib.figure import Figure

import jaxcnn
from experiments._common import MNIST_DIR, Context, main
from jaxcnn.models import get_model
from jaxcnn.train import create_train_state, evaluate, make_optimizer, make_train_step

LRS = (0.1, 0.3, 1.0, 3.0)
TEST_BATCHES = (1, 2, 8, 40, 125, 2000)
MODELS = {"CNN (lwls_cnn)": "lwls_cnn", "MLP 784-200-10": "mlp"}


def optimizer(name: str, lr: float = 1.0) -> optax.GradientTransformation:
    """``make_optimizer(name, lr)`` with ``lr`` in the optimizer state, so a grid needs one compiled step."""
    return optax.chain(make_optimizer(name, 1.0), optax.inject_hyperparams(optax.scale)(step_size=lr))


def with_lr(state, lr: float):
    scale = state.opt_state[1]._replace(hyperparams={"step_size": jnp.asarray(lr, jnp.float32)})
    return state.replace(opt_state=(state.opt_state[0], scale))


def train(model, state, x, y, batch: int, epochs: int, seed: int):
    """Epochs of steps in ``batches(seed, epoch)`` order: the final state and the per-step losses and accuracies."""
    step = make_train_step(model, "cross_entropy", "jit")
    placed, metrics = step.place_state(state), []
    for epoch in range(epochs):
        for b in jaxcnn.data.batches(x, y, batch, seed=seed, epoch=epoch):
            placed, m = step(placed, step.place_batch(b))
            metrics.append(m)
    metrics = jax.device_get(metrics)
    return step.fetch_state(placed), np.array([m["loss"] for m in metrics]), np.array([m["accuracy"] for m in metrics])


def batch_stat_accuracy(model, state, x, y, batch: int) -> float:
    """Accuracy when every group of ``batch`` test images is normalized by its own statistics (``train=True``)."""
    n = len(x) // batch * batch
    groups = x[:n].reshape(n // batch, batch, *x.shape[1:])
    apply = jax.vmap(lambda xb: model.apply(state.variables(), xb, train=True, mutable=["batch_stats"])[0])
    logits = jax.jit(apply)(groups).reshape(n, -1)
    return float(np.mean(np.asarray(logits).argmax(1) == y[:n]))


def smooth(values: np.ndarray, width: int) -> np.ndarray:
    return np.convolve(values, np.ones(width) / width, mode="valid")


def run(ctx: Context) -> None:
    ds = jaxcnn.data.mnist(MNIST_DIR)
    sample = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    epochs, lrs = (1, (0.1, 1.0)) if ctx.quick else (2, LRS)
    train_batches = (8, 128) if ctx.quick else (2, 8, 128)

    # --- 1. with and without BN, plain SGD at rising learning rates
    curves, rows, conv = {}, [], {}
    for bn in (False, True):
        model, tx = get_model("lwls_cnn", batch_norm=bn), optimizer("sgd")
        init = create_train_state(model, tx, sample, seed=ctx.seed)  # one init, one compiled step for the grid
        for lr in lrs:
            state = with_lr(init, lr)
            state, losses, accs = train(model, state, ds.x_train, ds.y_train, 64, epochs, ctx.seed)
            test = evaluate(model, state, ds.x_test, ds.y_test)["accuracy"]
            reach = np.flatnonzero(smooth(accs, 25) >= 0.9)
            per_epoch = len(losses) // epochs
            conv[bn, lr] = {
                "state": state,
                "first": losses[:50].mean(),
                "epoch1": losses[:per_epoch].mean(),
                "last": losses[-per_epoch:].mean(),
                "test": test,
            }
            curves[bn, lr] = losses
            rows.append(
                (
                    "yes" if bn else "no",
                    f"{lr:g}",
                    conv[bn, lr]["first"],
                    conv[bn, lr]["epoch1"],
                    conv[bn, lr]["last"],
                    int(reach[0]) + 25 if reach.size else "never",
                    test,
                )
            )
    ctx.table(
        f"lwls_cnn with and without BatchNorm, plain SGD, batch 64, {epochs} epoch(s) of 8,000 MNIST images "
        "(a loss of 2.30 = chance; larger = diverged)",
        [
            "BatchNorm",
            "lr",
            "mean loss, steps 1-50",
            "mean loss, epoch 1",
            "mean loss, last epoch",
            "steps to 90% (25-step mean)",
            "test accuracy",
        ],
        rows,
    )

    # --- 3. batch size in training: BN's statistics over B*H*W values (conv) or B values (dense)
    trained, size_rows, gains = {}, [], {}
    for label, name in MODELS.items():
        for batch in train_batches:
            acc = {}
            for bn in (False, True):
                model = get_model(name, batch_norm=bn)
                tx = make_optimizer("adam", 1e-3)
                state, _, _ = train(
                    model,
                    create_train_state(model, tx, sample, seed=ctx.seed),
                    ds.x_train,
                    ds.y_train,
                    batch,
                    1,
                    ctx.seed,
                )
                acc[bn] = evaluate(model, state, ds.x_test, ds.y_test)["accuracy"]
                trained[label, batch, bn] = (model, state)
            gains[label, batch] = acc[True] - acc[False]
            size_rows.append((label, batch, acc[False], acc[True], acc[True] - acc[False]))
    ctx.table(
        "Training batch size: test accuracy (running statistics) after 1 epoch, Adam 1e-3",
        ["model", "batch", "without BN", "with BN", "BN gain"],
        size_rows,
    )

    # --- 2. running statistics vs the test batch's own statistics
    best_lr = max(lrs, key=lambda lr: conv[True, lr]["test"])
    nets = {
        "CNN (lwls_cnn)": (get_model("lwls_cnn", batch_norm=True), conv[True, best_lr]["state"]),
        "MLP 784-200-10": trained["MLP 784-200-10", 128, True],
    }
    running = {
        label: evaluate(model, state, ds.x_test, ds.y_test)["accuracy"] for label, (model, state) in nets.items()
    }
    batch_acc = {
        (label, b): batch_stat_accuracy(model, state, ds.x_test, ds.y_test, b)
        for label, (model, state) in nets.items()
        for b in TEST_BATCHES
    }
    ctx.table(
        f"Inference: running statistics vs each test batch's own statistics (CNN of part 1 at lr {best_lr:g}; "
        "MLP of part 3 at batch 128); 2,000 test images in groups of B",
        ["model", "running statistics", *(f"batch stats, B={b}" for b in TEST_BATCHES)],
        [(label, running[label], *(batch_acc[label, b] for b in TEST_BATCHES)) for label in nets],
    )

    fig = Figure(figsize=(13, 3.8))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    width = max(5, len(curves[False, lrs[0]]) // 25)
    for (bn, lr), losses in curves.items():
        if lr in (lrs[0], 1.0):
            ax1.plot(
                np.arange(width, len(losses) + 1),
                smooth(np.minimum(losses, 10.0), width),
                "-" if bn else "--",
                color="C0" if lr == lrs[0] else "C3",
                label=f"{'BN' if bn else 'no BN'}, lr {lr:g}",
            )
    ax1.set(yscale="log", xlabel="step", ylabel=f"training loss ({width}-step mean)", title="SGD: with and without BN")
    for (label, _), color in zip(nets.items(), ("C0", "C1")):
        ax2.semilogx(
            TEST_BATCHES,
            [100 * batch_acc[label, b] for b in TEST_BATCHES],
            "o-",
            color=color,
            label=f"{label}: batch statistics",
        )
        ax2.axhline(100 * running[label], color=color, ls="--", label=f"{label}: running statistics")
    ax2.set(xlabel="test batch size B", ylabel="test accuracy (%)", title="inference statistics")
    for (label, _), color in zip(MODELS.items(), ("C0", "C1")):
        ax3.semilogx(train_batches, [100 * gains[label, b] for b in train_batches], "o-", color=color, label=label)
    ax3.axhline(0, color="k", lw=0.8)
    ax3.set(xlabel="training batch size", ylabel="BN gain in test accuracy (points)", title="BN vs batch size")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.save_figure(
        fig,
        dpi=110,
        caption="Left: SGD training loss with (solid) and without (dashed) BatchNorm. Middle: "
        "test accuracy when each test batch is normalized by its own statistics, against the running "
        "statistics (dashed). Right: what BatchNorm adds to test accuracy after one epoch, by training batch size.",
    )

    trains = [lr for lr in lrs if conv[False, lr]["last"] < 1.0]
    for lr in trains:
        ctx.check(
            f"at lr {lr:g}, BN lowers the mean loss of the first epoch",
            conv[True, lr]["epoch1"] < conv[False, lr]["epoch1"],
            f"{conv[True, lr]['epoch1']:.4f} vs {conv[False, lr]['epoch1']:.4f}",
        )
    ctx.check(
        "at lr 1.0, SGD without BN does not train (loss stays near chance, > 2) and with BN it does (< 1)",
        conv[False, 1.0]["last"] > 2.0 and conv[True, 1.0]["last"] < 1.0,
        f"{conv[False, 1.0]['last']:.3f} vs {conv[True, 1.0]['last']:.3f}",
    )
    best_no = max(conv[False, lr]["test"] for lr in lrs)
    ctx.check(
        "the best BN run beats the best run without BN in test accuracy",
        conv[True, best_lr]["test"] > best_no,
        f"{conv[True, best_lr]['test']:.4f} vs {best_no:.4f}",
    )
    mlp, cnn = "MLP 784-200-10", "CNN (lwls_cnn)"
    ctx.check(
        "MLP: batch statistics of single test images are useless (<= 20% accuracy: the output is the bias)",
        batch_acc[mlp, 1] <= 0.2,
        f"{batch_acc[mlp, 1]:.4f} vs {running[mlp]:.4f} with running statistics",
    )
    ctx.check(
        "MLP: batch statistics of 8 test images still lose >= 2 points",
        batch_acc[mlp, 8] < running[mlp] - 0.02,
        f"{batch_acc[mlp, 8]:.4f} vs {running[mlp]:.4f}",
    )
    ctx.check(
        "CNN: batch statistics of single test images lose accuracy, but < 5 points (statistics over H x W)",
        running[cnn] - 0.05 < batch_acc[cnn, 1] < running[cnn],
        f"{batch_acc[cnn, 1]:.4f} vs {running[cnn]:.4f}",
    )
    for label in nets:
        ctx.check(
            f"{label}: batch statistics of all 2,000 test images are within 1 point of running statistics",
            abs(batch_acc[label, 2000] - running[label]) <= 0.01,
            f"{batch_acc[label, 2000]:.4f} vs {running[label]:.4f}",
        )
    small, large = train_batches[0], train_batches[-1]
    for label in MODELS:
        ctx.check(
            f"{label}: BN's gain is smaller at batch {small} than at batch {large}",
            gains[label, small] < gains[label, large],
            f"{gains[label, small]:+.4f} vs {gains[label, large]:+.4f}",
        )
    if 2 in train_batches:
        ctx.check(
            "MLP: BN at batch 2 hurts (2 values per statistic: every normalized feature is +-1)",
            gains["MLP 784-200-10", 2] < 0,
            f"{gains['MLP 784-200-10', 2]:+.4f}",
        )
        ctx.check(
            "CNN: BN at batch 2 costs less than 1 point (2x28x28 values per first-layer statistic; 1 point = "
            "20 of the 2,000 test images, about twice the standard error)",
            gains["CNN (lwls_cnn)", 2] > -0.01,
            f"{gains['CNN (lwls_cnn)', 2]:+.4f}",
        )
    rate_words = ", ".join(
        f"{conv[True, lr]['epoch1']:.3f} vs {conv[False, lr]['epoch1']:.3f} at lr {lr:g}" for lr in trains
    )
    diverged = [f"{lr:g}" for lr in lrs if conv[True, lr]["last"] > 2.0]
    monotone = all(gains[k, a] < gains[k, b] for k in MODELS for a, b in itertools.pairwise(train_batches))
    best_no_lr = max(lrs, key=lambda lr: conv[False, lr]["test"])
    ctx.text(
        f"(1) With BatchNorm after each convolution, plain SGD trains faster at every rate where the plain network "
        f"trains (mean loss over the first epoch {rate_words}), and it still trains at lr 1.0 "
        f"(last-epoch loss {conv[True, 1.0]['last']:.3f}) where the plain network stays at chance "
        f"({conv[False, 1.0]['last']:.3f})"
        + (f"; at lr {', '.join(diverged)} BatchNorm diverges too" if diverged else "")
        + f". Best test accuracy after {epochs} epoch(s): {conv[True, best_lr]['test']:.2%} with BN (lr {best_lr:g}) "
        f"against {best_no:.2%} without (lr {best_no_lr:g}). (2) With running statistics an image's prediction does "
        "not depend on the rest of its batch. Normalizing by the test batch's own statistics instead ruins the MLP at "
        f"B = 1 ({batch_acc[mlp, 1]:.2%}: x - mean is 0, so every feature becomes its bias) and still costs it "
        f"{100 * (running[mlp] - batch_acc[mlp, 8]):.1f} points at B = 8, while the CNN loses only "
        f"{100 * (running[cnn] - batch_acc[cnn, 1]):.1f} points at B = 1, because each of its statistics pools H x W positions "
        "(784 in conv1, 49 in conv3) even for one image. With all 2,000 test images in one batch both agree with "
        f"the running statistics within {max(abs(batch_acc[k, 2000] - running[k]) for k in nets):.2%}. (3) Trained "
        f"for one epoch with Adam, BatchNorm's gain in test accuracy {'grows' if monotone else 'changes'} with the "
        "batch size: "
        + "; ".join(
            f"{label} " + ", ".join(f"{100 * gains[label, b]:+.1f} points at batch {b}" for b in train_batches)
            for label in MODELS
        )
        + ". Part of the large-batch gain is speed (batch 128 makes 16 times fewer steps per epoch, and BN speeds "
        "up the few it makes); the small-batch end is the statistics' noise"
        + (
            f": at batch 2 a dense BN layer normalizes each feature over 2 values (every normalized value is +-1) "
            f"and {'costs' if gains[mlp, 2] < 0 else 'still adds'} the MLP {100 * abs(gains[mlp, 2]):.1f} points, while the "
            f"CNN's first BN layer still averages 2 x 28 x 28 values per channel ({100 * gains[cnn, 2]:+.1f} points)"
            if 2 in train_batches
            else ""
        )
        + ". Data: MNIST t10k images split 8,000/2,000 with seed 0 (the 60k training "
        "file is not available offline)."
    )
    ctx.set_headline(
        f"SGD lr 1.0: BN trains (loss {conv[True, 1.0]['last']:.3f}), no BN stays at chance; best test "
        f"{conv[True, best_lr]['test']:.2%} vs {best_no:.2%}; batch statistics at B=1: MLP {batch_acc[mlp, 1]:.1%}, "
        f"CNN {batch_acc[cnn, 1]:.1%} (running {running[mlp]:.1%} / {running[cnn]:.1%})"
    )


if __name__ == "__main__":
    raise SystemExit(main("11_batch_norm", run, __doc__))
