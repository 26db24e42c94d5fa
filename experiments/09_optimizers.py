"""Optimizers: SGD, momentum, Adagrad, RMSprop and Adam on the same CNN, each with its best learning rate; cross-entropy vs MSE.

The LWLS Example 6.3 CNN is trained on MNIST (the 10,000 t10k images split
8,000/2,000; the 60k training file is not available offline) from the same
initial weights and the same batches with each optimizer of
``jaxcnn.train.make_optimizer`` at a constant learning rate taken from a small
grid; the rate with the lowest final training loss wins (picking it on the test
set would tune on the test set). The learning rate is a state entry
(``optax.inject_hyperparams(optax.scale)`` after ``make_optimizer(name, 1.0)``,
which is the same update as ``make_optimizer(name, lr)``) so one compiled step
serves a whole grid. Then Adam trains the same network with three losses:
cross-entropy, the squared error of the raw outputs against one-hot targets
(``loss="mse"``), and the squared error of the softmax probabilities (the
saturating combination that the lecture warns about).
"""

from __future__ import annotations

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
from jaxcnn.train import (
    create_train_state,
    evaluate,
    make_optimizer,
    make_train_step,
    mse,
)

# Half-decade grids around each optimizer's usual range (momentum 0.9; optax's defaults otherwise).
GRIDS = {
    "sgd": (0.03, 0.1, 0.3, 1.0),
    "momentum": (0.01, 0.03, 0.1, 0.3),
    "adagrad": (0.01, 0.03, 0.1, 0.3),
    "rmsprop": (3e-4, 1e-3, 3e-3, 1e-2),
    "adam": (1e-3, 3e-3, 1e-2, 3e-2),
}
LOSS_LRS = (1e-3, 3e-3, 1e-2)  # Adam, for the comparison of losses (a subset of its grid)
BATCH = 64


def optimizer(name: str) -> optax.GradientTransformation:
    """``make_optimizer(name, lr)`` with ``lr`` moved into the optimizer state (set by :func:`with_lr`)."""
    return optax.chain(make_optimizer(name, 1.0), optax.inject_hyperparams(optax.scale)(step_size=1.0))


def with_lr(state, lr: float):
    scale = state.opt_state[1]
    scale = scale._replace(hyperparams={"step_size": jnp.asarray(lr, jnp.float32)})
    return state.replace(opt_state=(state.opt_state[0], scale))


def train(model, state, ds, loss: str, epochs: int, seed: int):
    """Epochs of steps in ``batches(seed, epoch)`` order: per-step losses and accuracies, test accuracy per epoch."""
    step = make_train_step(model, loss, "jit")
    placed, metrics, test = step.place_state(state), [], []
    for epoch in range(epochs):
        for batch in jaxcnn.data.batches(ds.x_train, ds.y_train, BATCH, seed=seed, epoch=epoch):
            placed, m = step(placed, step.place_batch(batch))
            metrics.append(m)
        weights = step.fetch_state(placed).replace(tx=None, opt_state=None)  # one eval compile for all optimizers
        test.append(evaluate(model, weights, ds.x_test, ds.y_test, loss=loss)["accuracy"])
    metrics = jax.device_get(metrics)
    return np.array([m["loss"] for m in metrics]), np.array([m["accuracy"] for m in metrics]), np.array(test)


def mse_softmax(logits, labels):
    """Squared error between the softmax probabilities and the one-hot labels, per example (saturates)."""
    return mse(jax.nn.softmax(logits), labels)


LOSSES = {"cross-entropy": "cross_entropy", "MSE on raw outputs": "mse", "MSE on softmax": mse_softmax}


def smooth(values: np.ndarray, width: int) -> np.ndarray:
    return np.convolve(values, np.ones(width) / width, mode="valid")


def run(ctx: Context) -> None:
    ds = jaxcnn.data.mnist(MNIST_DIR)
    n_train, epochs = (2000, 2) if ctx.quick else (8000, 2)
    ds = jaxcnn.data.Dataset(
        ds.x_train[:n_train],
        ds.y_train[:n_train],
        ds.x_test,
        ds.y_test,
        10,
        ds.name,
        ds.description + f"; first {n_train} training images",
    )
    grids = {name: lrs[1:3] if ctx.quick else lrs for name, lrs in GRIDS.items()}
    loss_lrs = grids["adam"][:2] if ctx.quick else LOSS_LRS
    seeds = (ctx.seed,) if ctx.quick else (ctx.seed, ctx.seed + 1, ctx.seed + 2)
    model = get_model("lwls_cnn")
    sample = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    inits = {seed: create_train_state(model, optimizer("sgd"), sample, seed=seed).params for seed in seeds}
    txs = {name: optimizer(name) for name in GRIDS}

    def result(name: str, lr: float, loss: str = "cross_entropy", seed: int = ctx.seed) -> dict:
        """One run from the seed's initial weights, in the seed's batch order (memoized)."""
        if (name, lr, loss, seed) not in runs:
            state = with_lr(create_train_state(model, txs[name], sample, seed=seed, params=inits[seed]), lr)
            losses, accs, test = train(model, state, ds, loss, epochs, seed)
            last = slice(-len(losses) // epochs, None)  # the last epoch's batches, as fit reports them
            runs[name, lr, loss, seed] = {
                "losses": losses,
                "accs": accs,
                "test": test,
                "train_loss": losses[last].mean(),
                "train_acc": accs[last].mean(),
            }
        return runs[name, lr, loss, seed]

    # --- every optimizer on its grid: same initial weights, same batches; the lowest training loss wins
    runs, best = {}, {}
    for name, lrs in grids.items():
        best[name] = min(lrs, key=lambda lr: np.nan_to_num(result(name, lr)["train_loss"], nan=np.inf))
    start = result("sgd", best["sgd"])["losses"][0]
    ctx.table(
        f"Training loss (mean over the last epoch's batches) after {epochs} epochs, batch {BATCH}, "
        "by learning rate (bold: the winner)",
        ["optimizer", *(f"lr #{i + 1}" for i in range(len(grids["sgd"])))],
        [
            (
                name,
                *(
                    f"**{lr:g}: {result(name, lr)['train_loss']:.4f}**"
                    if lr == best[name]
                    else f"{lr:g}: {result(name, lr)['train_loss']:.4f}"
                    for lr in lrs
                ),
            )
            for name, lrs in grids.items()
        ],
    )
    ctx.table(
        f"Each optimizer at its best learning rate: MNIST t10k split 8,000/2,000, {n_train:,} training images, "
        f"{epochs} epochs, seed {ctx.seed}",
        ["optimizer", "best lr", "mean loss, epoch 1", "final train loss", "test accuracy"],
        [
            (
                name,
                f"{lr:g}" + (" (grid edge)" if lr in (grids[name][0], grids[name][-1]) else ""),
                float(result(name, lr)["losses"][: len(result(name, lr)["losses"]) // epochs].mean()),
                float(result(name, lr)["train_loss"]),
                float(result(name, lr)["test"][-1]),
            )
            for name, lr in best.items()
        ],
    )

    # --- three losses with Adam: each at the rate of its best training accuracy, then over every seed
    loss_lr = {
        label: max(loss_lrs, key=lambda lr: result("adam", lr, loss)["train_acc"]) for label, loss in LOSSES.items()
    }
    test = {
        label: np.array([result("adam", loss_lr[label], loss, seed)["test"] for seed in seeds])
        for label, loss in LOSSES.items()
    }
    ctx.table(
        f"Adam with three losses: test accuracy, mean (min-max) over {len(seeds)} seed(s), each loss at the "
        f"learning rate of its best training accuracy among {', '.join(f'{lr:g}' for lr in loss_lrs)}",
        ["loss", "lr", *(f"test acc, epoch {e + 1}" for e in range(epochs))],
        [
            (
                label,
                f"{loss_lr[label]:g}",
                *(f"{t[:, e].mean():.4f} ({t[:, e].min():.4f}-{t[:, e].max():.4f})" for e in range(epochs)),
            )
            for label, t in test.items()
        ],
    )

    ctx.table(
        f"Adam with three losses, seed {ctx.seed}: test accuracy after {epochs} epochs by learning rate",
        ["loss", *(f"lr {lr:g}" for lr in loss_lrs)],
        [(label, *(float(result("adam", lr, loss)["test"][-1]) for lr in loss_lrs)) for label, loss in LOSSES.items()],
    )

    n_steps = len(result("sgd", best["sgd"])["losses"])
    width = max(5, n_steps // 12)
    fig = Figure(figsize=(13, 3.8))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for name, lr in best.items():
        ax1.plot(np.arange(width, n_steps + 1), smooth(result(name, lr)["losses"], width), label=f"{name} (lr {lr:g})")
        ax2.plot(grids[name], [result(name, x)["train_loss"] for x in grids[name]], "o-", label=name)
    ax1.set(yscale="log", xlabel="step", ylabel=f"training loss ({width}-step mean)", title="best learning rates")
    ax2.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="final training loss", title="the grids")
    for label, loss in LOSSES.items():
        accs = result("adam", loss_lr[label], loss)["accs"]
        ax3.plot(np.arange(width, n_steps + 1), 100 * smooth(accs, width), label=f"{label} (lr {loss_lr[label]:g})")
    ax3.set(xlabel="step", ylabel="training-batch accuracy (%)", title="Adam: three losses", ylim=(60, 100.5))
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.save_figure(
        fig,
        dpi=110,
        caption="Left: training loss of each optimizer at its best learning rate (same initial "
        "weights, same batches). Middle: final training loss over each grid (a diverged run ends near "
        "log 10 = 2.3). Right: Adam with three losses, accuracy on the training batches.",
    )

    sgd = result("sgd", best["sgd"])["train_loss"]
    fraction = 2 if ctx.quick else 4
    for name, lr in best.items():
        final = result(name, lr)["train_loss"]
        ctx.check(
            f"{name} reduces the training loss well below its start (< 1/{fraction})",
            final < start / fraction,
            f"{start:.3f} -> {final:.4f}",
        )
    for name in ("momentum", "adagrad", "rmsprop", "adam"):
        final = result(name, best[name])["train_loss"]
        ctx.check(
            f"{name} ends with a lower training loss than plain SGD (each at its best rate)",
            final < sgd,
            f"{final:.4f} vs {sgd:.4f}",
        )
    ce, raw, soft = (test[label].mean(0) for label in LOSSES)
    for e in (0, epochs - 1):
        ctx.check(
            f"cross-entropy beats the squared error of softmax outputs after epoch {e + 1}",
            ce[e] > soft[e],
            f"{ce[e]:.4f} vs {soft[e]:.4f}",
        )
    order = sorted(best, key=lambda n: result(n, best[n])["train_loss"])
    diverged = [f"{n} at {lr:g}" for n, lrs in grids.items() for lr in lrs if result(n, lr)["train_loss"] > 2.0]
    raw_wins = test["MSE on raw outputs"][:, -1].min() > test["cross-entropy"][:, -1].max()
    ctx.text(
        f"From the same initial weights and the same {n_steps} batches ({epochs} epochs of {n_train:,} images, batch "
        f"{BATCH}), each optimizer at the constant learning rate that gave its lowest final training loss, the "
        f"ranking is {' < '.join(order)} ("
        + ", ".join(f"{n} {result(n, best[n])['train_loss']:.3f} at lr {best[n]:g}" for n in order)
        + f"); every one takes the loss from {start:.2f} (ln 10: chance) to a small fraction of it, and tuned plain SGD "
        f"{'ends highest' if order[-1] == 'sgd' else 'does not end highest'}, already after one epoch (mean loss "
        f"{result('sgd', best['sgd'])['losses'][: n_steps // epochs].mean():.3f} against "
        f"{result('adam', best['adam'])['losses'][: n_steps // epochs].mean():.3f} for Adam). "
        + (
            f"The grids show the price of a wrong rate: {', '.join(diverged)} did not train (final loss above 2). "
            if diverged
            else ""
        )
        + f"Test accuracy after {epochs} epochs: "
        + ", ".join(f"{n} {result(n, best[n])['test'][-1]:.2%}" for n in best)
        + f". With Adam, cross-entropy beats the squared error of the softmax probabilities ({ce[-1]:.2%} vs "
        f"{soft[-1]:.2%} after {epochs} epochs, mean of {len(seeds)} seed(s)), whose gradient vanishes through a "
        "saturated softmax, as the lecture says. "
        + (
            f"It also beats the squared error of the raw outputs against one-hot targets (jaxcnn's `loss='mse'`), "
            f"{ce[-1]:.2%} vs {raw[-1]:.2%}. "
            if ce[-1] > raw[-1]
            else f"It does not beat the squared error of the raw outputs against one-hot targets (jaxcnn's `loss='mse'`): "
            f"{raw[-1]:.2%} "
            + ("on average and better on every seed" if raw_wins else "on average")
            + f" against cross-entropy's {ce[-1]:.2%}, so here the lecture's 'cross-entropy trains faster' holds "
            "against a saturating output, not against squared error as such. "
        )
        + "Data: MNIST t10k images split "
        f"8,000/2,000 (seed 0; the 60k training file is not available offline), {n_train:,} training images used."
    )
    ctx.set_headline(
        f"train loss after {epochs} epochs at each best lr: "
        + ", ".join(f"{n} {result(n, best[n])['train_loss']:.3f}" for n in order)
        + f"; Adam test acc: CE {ce[-1]:.2%}, MSE on outputs {raw[-1]:.2%}, MSE on softmax {soft[-1]:.2%}"
    )


if __name__ == "__main__":
    raise SystemExit(main("09_optimizers", run, __doc__))
