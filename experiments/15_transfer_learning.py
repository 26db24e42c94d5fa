"""Transfer learning: features learned on MNIST help on scikit-learn's digits when labels are few.

The LWLS Example 6.3 CNN (``lwls_cnn``) is pretrained on MNIST -- the 10,000
t10k images split 8,000/2,000 with a fixed seed, because the 60k training file
is not available offline -- and then trained on scikit-learn's 8x8 digits
(``jaxcnn.data.digits``: 1,438 train / 359 test) with only 10, 20, 50, 100 or
300 labelled training images (the same number of each digit, drawn with fixed
seeds). Three ways:

(a) **scratch**: random initialization, all layers trained;
(b) **frozen**: the pretrained conv1-3 and dense1 kept fixed, a new dense2 head
    trained (``make_optimizer(..., trainable=freeze_mask(params, trainable="dense2"))``);
(c) **fine-tune**: the pretrained weights with a new head, all layers trained.

The head is new in (b) and (c): ``transfer_params`` copies every pretrained
weight but ``dense2``. Every run takes the same number of Adam steps.

The digits are brought to 28x28 in two ways. ``digits(size=28)`` stretches
each digit over the whole 28x28 frame; MNIST digits are about 20 pixels high,
centred with a 4-pixel margin, and cover 13% of the pixels, against 31% for
the stretched ones. ``digits(size=20)`` padded by 4 pixels on each side
("MNIST framing") matches MNIST's size and ink (16%). Transfer is measured in
both; the claims are checked on the MNIST framing.

**Starting from a PyTorch checkpoint** (``--init-from FILE``): instead of
pretraining on MNIST here, the pretrained weights are read from a ``.pt`` /
``.pth`` / ``.safetensors`` state_dict of the same network written in
PyTorch, with keys ``conv1``, ``conv2``, ``conv3`` (``Conv2d(1, 4, 5)``,
``Conv2d(4, 8, 5, stride=2)``, ``Conv2d(8, 12, 4, stride=2)``), ``dense1``
(``Linear(588, 200)``, after PyTorch's NCHW flatten) and ``dense2``
(``Linear(200, 10)``), converted strictly by
:func:`jaxcnn.interop.torch.load_weights` (layouts and the flatten order
handled there). Its MNIST accuracy is reported in place of the pretraining's,
and the transfer claims are checked as usual, so they hold only for a
checkpoint that really learned MNIST (a random one runs, and fails them)::

    python -m experiments.15_transfer_learning --init-from lwls_mnist.pt
"""

from __future__ import annotations

import argparse
import functools
import os

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.figure import Figure

import jaxcnn
from experiments._common import MNIST_DIR, Context, main
from jaxcnn.data import batches
from jaxcnn.interop.torch import load_weights
from jaxcnn.models import freeze_mask, get_model, transfer_params
from jaxcnn.train import (
    create_train_state,
    evaluate,
    fit,
    make_optimizer,
    make_schedule,
    make_train_step,
)

METHODS = ("scratch", "frozen", "fine-tune")
BATCH = 10


def subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n / 10`` training images of each digit, drawn with ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), n // 10, replace=False) for c in range(10)]))


def train(step, model, tx, params, x, y, steps: int, seed: int):
    """``steps`` Adam steps on ``(x, y)`` in shuffled batches of ``BATCH``, from ``params``; returns the state."""
    state = step.place_state(
        create_train_state(model, tx, jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32), seed=seed, params=params)
    )
    done, epoch = 0, 0
    while done < steps:
        for batch in batches(x, y, BATCH, seed=seed, epoch=epoch):
            state, _ = step(state, step.place_batch(batch))
            done += 1
            if done == steps:
                break
        epoch += 1
    return jax.device_get(step.fetch_state(state))


def framed(ds, pad: int):
    """``ds`` with ``pad`` zero pixels added around every image."""
    widths = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    return np.pad(ds.x_train, widths), ds.y_train, np.pad(ds.x_test, widths), ds.y_test


def transfer_curve(model, pretrained, data, counts, seeds, steps: int):
    """Test accuracy ``{method: (len(counts), len(seeds))}`` and whether every frozen run kept its body bit-identical."""
    x_train, y_train, x_test, y_test = data
    sample = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32)
    tx_all = make_optimizer("adam", 1e-3)  # one optimizer object per kind: the compiled step is reused
    mask = freeze_mask(pretrained, trainable="dense2")
    tx_head = make_optimizer("adam", 1e-3, trainable=mask)
    step = make_train_step(model, "cross_entropy")
    acc = {m: np.zeros((len(counts), len(seeds))) for m in METHODS}
    identical, moved, report = True, True, None
    for i, n in enumerate(counts):
        for j, s in enumerate(seeds):
            idx = subset(y_train, n, s)
            fresh = jax.device_get(create_train_state(model, tx_all, sample, seed=s).params)
            start, report = transfer_params(pretrained, fresh, exclude="dense2")
            for method, tx, params in (
                ("scratch", tx_all, fresh),
                ("frozen", tx_head, start),
                ("fine-tune", tx_all, start),
            ):
                final = train(step, model, tx, params, x_train[idx], y_train[idx], steps, s)
                acc[method][i, j] = evaluate(model, final, x_test, y_test)["accuracy"]
                if method == "frozen":  # True = trains: frozen leaves must come back bit-identical
                    same = jax.tree.map(lambda t, a, b: t or np.array_equal(a, b), mask, params, final.params)
                    identical &= all(jax.tree.leaves(same))
                    moved &= not np.array_equal(params["dense2"]["kernel"], final.params["dense2"]["kernel"])
        print(f"n={n}: " + ", ".join(f"{m} {acc[m][i].mean():.3f}" for m in METHODS), flush=True)
    return acc, identical, moved, report, mask


def converted_params(path: str) -> dict:
    """The ``lwls_cnn`` parameters from a PyTorch state_dict file (strict: every key, every shape)."""
    return jax.device_get(load_weights(path, "lwls_cnn", input_shape=(1, 28, 28, 1))["params"])


def run(ctx: Context, init_from: str | None = None) -> None:
    model = get_model("lwls_cnn")

    # --- pretraining on MNIST (8,000 of the t10k images), or a converted PyTorch checkpoint
    mnist = jaxcnn.data.mnist(MNIST_DIR)
    pre_epochs = 2 if ctx.quick else 5
    if init_from is None:
        pre = fit(
            model,
            mnist,
            make_optimizer("adam", make_schedule("cosine", 2e-3, total_steps=pre_epochs * (8000 // 64))),
            epochs=pre_epochs,
            batch_size=64,
            seed=ctx.seed,
            progress=False,
        )
        pretrained, pre_state, pre_acc = jax.device_get(pre.state.params), pre.state, pre.test["accuracy"]
    else:
        pretrained = converted_params(init_from)
        pre_state = {"params": pretrained}
        pre_acc = evaluate(model, pre_state, mnist.x_test, mnist.y_test)["accuracy"]
        ctx.text(
            f"Pretrained weights converted from the PyTorch checkpoint `{os.path.basename(init_from)}` "
            f"(no MNIST pretraining here); their accuracy on the 2,000 MNIST images: {pre_acc:.1%}."
        )

    # --- few labels on the digits, in two framings
    counts = (10, 50, 300) if ctx.quick else (10, 20, 50, 100, 300)
    seeds = tuple(ctx.seed + i for i in range(2 if ctx.quick else 3))
    steps = 150 if ctx.quick else 300
    framings = {
        "MNIST framing (20x20 + 4-pixel margin)": framed(jaxcnn.data.digits(size=20), 4),
        "stretched (digits(size=28))": framed(jaxcnn.data.digits(size=28), 0),
    }
    results = {}
    for name, data in framings.items():
        acc, identical, moved, report, mask = transfer_curve(model, pretrained, data, counts, seeds, steps)
        zero_shot = evaluate(model, pre_state, data[2], data[3])["accuracy"]
        ink = float(np.mean(data[0] > 0.5))
        results[name] = {"acc": acc, "identical": identical, "moved": moved, "zero_shot": zero_shot, "ink": ink}
    main_name, other_name = framings

    n_frozen = sum(int(np.size(v)) for v, t in zip(jax.tree.leaves(pretrained), jax.tree.leaves(mask)) if not t)
    ctx.table(
        f"Pretraining: lwls_cnn on MNIST (t10k images split 8,000/2,000, seed 0), {pre_epochs} epochs, and the MNIST "
        f"network applied to the digits test images as they are (no digits training)",
        ["data", "pixels > 0.5", "test accuracy of the MNIST network"],
        [("MNIST (2,000 held out)", float(np.mean(mnist.x_train > 0.5)), pre_acc)]
        + [(f"digits, {name}", r["ink"], r["zero_shot"]) for name, r in results.items()],
    )
    for name, r in results.items():
        acc = r["acc"]
        ctx.table(
            f"Digits, {name}: test accuracy on the 359 test images vs labelled training images; mean (min-max) "
            f"over seeds {', '.join(map(str, seeds))}; {steps} Adam steps (1e-3, batch {BATCH}) in every run",
            ["labels", *METHODS, "frozen - scratch", "fine-tune - scratch"],
            [
                (
                    n,
                    *(f"{acc[m][i].mean():.3f} ({acc[m][i].min():.3f}-{acc[m][i].max():.3f})" for m in METHODS),
                    f"{acc['frozen'][i].mean() - acc['scratch'][i].mean():+.3f}",
                    f"{acc['fine-tune'][i].mean() - acc['scratch'][i].mean():+.3f}",
                )
                for i, n in enumerate(counts)
            ],
        )
    ctx.table(
        "What was transferred (transfer_params, exclude='dense2') and frozen (freeze_mask, trainable='dense2')",
        ["copied from MNIST", "new (re-initialized)", "frozen in (b)", "trained in (b)"],
        [
            (
                ", ".join(report.kept),
                ", ".join(f"{p} ({why})" for p, why in report.skipped.items()),
                f"{n_frozen:,} parameters",
                "dense2: 2,010 parameters",
            )
        ],
    )

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    for ax, (name, r) in zip(fig.subplots(1, 2, sharey=True), results.items()):
        for m, marker in zip(METHODS, "osd"):
            a = 100 * r["acc"][m]
            mean = a.mean(1)
            ax.errorbar(counts, mean, yerr=[mean - a.min(1), a.max(1) - mean], marker=marker, capsize=3, label=m)
        ax.axhline(100 * r["zero_shot"], color="grey", ls=":", label="MNIST network, no digits labels")
        ax.set(xscale="log", xlabel="labelled digits training images", title=f"digits, {name}")
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylabel("test accuracy (%)")
    fig.axes[0].legend(fontsize=8)
    ctx.save_figure(
        fig,
        dpi=110,
        caption=f"Mean test accuracy over {len(seeds)} label draws (bars: min-max), for the two ways "
        "of bringing the 8x8 digits to 28x28.",
    )

    main_r, other_r = results[main_name], results[other_name]
    acc = main_r["acc"]
    for m in ("frozen", "fine-tune"):
        for i, n in enumerate(counts[: 1 if ctx.quick else 2]):  # the smallest label counts
            a, b = acc[m][i].mean(), acc["scratch"][i].mean()
            ctx.check(f"MNIST framing, {n} labels: {m} beats scratch (mean over seeds)", a > b, f"{a:.3f} vs {b:.3f}")
    ctx.check(
        "(b) frozen: conv1-3 and dense1 are bit-identical after training, in every run of both framings",
        main_r["identical"] and other_r["identical"],
    )
    ctx.check("(b) frozen: the new head did train, in every run", main_r["moved"] and other_r["moved"])
    if init_from is None:
        ctx.check("pretraining works: >= 90% on the 2,000 MNIST test images", pre_acc >= 0.90, f"{pre_acc:.3f}")

    def at(r, m, i):
        return f"{r['acc'][m][i].mean():.1%}"

    def gain(r, i):
        return r["acc"]["frozen"][i].mean() - r["acc"]["scratch"][i].mean()

    last = len(counts) - 1
    source = (
        f"Pretrained for {pre_epochs} epochs on 8,000 MNIST images"
        if init_from is None
        else f"Starting from the PyTorch checkpoint {os.path.basename(init_from)}"
    )
    ctx.text(
        f"{source} ({pre_acc:.1%} on the 2,000 held "
        f"out), the LWLS CNN recognizes {main_r['zero_shot']:.1%} of the scikit-learn test digits in MNIST framing "
        f"without seeing a single labelled one, but only {other_r['zero_shot']:.1%} of the stretched ones, which are "
        f"bigger and bolder than anything in MNIST. In MNIST framing, with {counts[0]} labelled digits (one per class), "
        f"training from scratch reaches {at(main_r, 'scratch', 0)}, a new head on the frozen MNIST features "
        f"{at(main_r, 'frozen', 0)} and fine-tuning everything {at(main_r, 'fine-tune', 0)}; with {counts[1]}: "
        f"{at(main_r, 'scratch', 1)}, {at(main_r, 'frozen', 1)}, {at(main_r, 'fine-tune', 1)}; with {counts[last]}: "
        f"{at(main_r, 'scratch', last)}, {at(main_r, 'frozen', last)}, {at(main_r, 'fine-tune', last)}. On the stretched "
        f"digits the frozen features change the {counts[0]}-label accuracy by {gain(other_r, 0):+.1%} (in MNIST framing "
        f"{gain(main_r, 0):+.1%}; {counts[0]} labels: scratch {at(other_r, 'scratch', 0)}, frozen "
        f"{at(other_r, 'frozen', 0)}, fine-tune {at(other_r, 'fine-tune', 0)}; {counts[last]}: "
        f"{at(other_r, 'scratch', last)}, {at(other_r, 'frozen', last)}, {at(other_r, 'fine-tune', last)}): transfer "
        f"pays when the new data look like the old, and fine-tuning recovers part of what a mismatch costs. Freezing "
        f"is exact: in every frozen run the {n_frozen:,} parameters of conv1-3 and dense1 are bit-identical before and "
        f"after training (the optimizer's `set_to_zero` branch), and only the 2,010 of the head move."
    )
    ctx.set_headline(
        f"MNIST framing, {counts[0]} labels: scratch {at(main_r, 'scratch', 0)}, frozen MNIST features "
        f"{at(main_r, 'frozen', 0)}, fine-tuned {at(main_r, 'fine-tune', 0)}; {counts[last]} labels: "
        f"{at(main_r, 'scratch', last)} / {at(main_r, 'frozen', last)} / {at(main_r, 'fine-tune', last)}"
    )


def cli(argv: list[str] | None = None) -> int:
    """The experiment's command line: the common options plus ``--init-from FILE``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="FILE",
        help="start from this PyTorch state_dict (.pt/.pth/.safetensors) instead of pretraining",
    )
    args, rest = parser.parse_known_args(argv)
    if args.init_from is not None and not os.path.isfile(args.init_from):
        parser.error(f"--init-from {args.init_from!r}: no such file")
    return main("15_transfer_learning", functools.partial(run, init_from=args.init_from), __doc__, rest)


if __name__ == "__main__":
    raise SystemExit(cli())
