"""WaveNet: dilated causal convolutions see 2^L steps back with L layers, and use it to predict a signal.

With kernel 2 and dilations 1, 2, 4, ..., 2^(L-1), output ``t`` of a causal
stack depends on inputs ``t - 2^L + 1 .. t``; without dilation it sees only
``L + 1`` steps. Both fields are measured by gradients for L = 1..8, on a bare
stack of ``F.conv(padding="CAUSAL")`` (``jaxcnn.analysis.receptive_field``)
and on the ``wavenet`` model itself (``jax.grad`` of its last output).

Then a small WaveNet (6 gated residual layers, dilations 1..32, field 64,
``mode="regression"``) learns to predict ``x[t+1]`` from ``x[<= t]`` on
synthetic audio-like signals: every sequence is a sum of sines -- the first 4
harmonics of a 32-step period, with amplitudes and phases drawn anew for each
sequence -- plus white noise of standard deviation 0.5 (signal RMS 1). The
waveform of a sequence can only be estimated from the past, and the longer the
past the better the noise averages out. The comparison is the same network
with every dilation 1 (``WaveNetLayer`` with ``dilation=1``: an identical
parameter tree, field 7). A control signal with only short-range structure, an
AR(2) process (the best predictor uses the last 2 samples), shows that the gain
comes from the field, not from the architecture.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.figure import Figure

import jaxcnn.functional as F
import jaxcnn.nn as jnn
from experiments._common import Context, main
from jaxcnn.analysis import receptive_field
from jaxcnn.data import batches
from jaxcnn.models import WaveNetLayer, get_model
from jaxcnn.train import (
    create_train_state,
    make_optimizer,
    make_schedule,
    make_train_step,
)

LAYERS, RES, SKIP = 6, 16, 16  # the trained networks
PERIOD, HARMONICS, NOISE = 32, 4, 0.5  # the periodic signals
AR_R, AR_W = 0.8, 0.5  # the AR(2) control: poles r exp(+-iw)
LENGTH, BATCH = 256, 16


class PlainCausalNet(nn.Module):
    """WaveNet's architecture with every dilation 1: the same layers and parameter tree, field ``L + 1``.

    ``jaxcnn.models.WaveNet`` fixes its dilations to ``1, 2, ..., 2^(L-1)``; this
    module repeats its ``__call__`` (input 1x1 conv, ``L`` gated residual
    :class:`~jaxcnn.models.WaveNetLayer` s, summed skips, two 1x1 convs) with
    ``dilation=1`` in every layer.
    """

    num_layers_per_stack: int = LAYERS
    residual_channels: int = RES
    skip_channels: int = SKIP

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = jnn.Conv(self.residual_channels, 1, name="input_conv")(x)
        skips = []
        for i in range(self.num_layers_per_stack):
            x, s = WaveNetLayer(self.residual_channels, self.skip_channels, 2, 1, name=f"stack1_layer{i + 1}")(x)
            skips.append(s)
        y = jax.nn.relu(sum(skips[1:], skips[0]))
        y = jax.nn.relu(jnn.Conv(self.skip_channels, 1, name="head_conv")(y))
        return jnn.Conv(1, 1, name="head")(y)


def causal_stack(dilations):
    """``x -> conv(... conv(x))`` with positive kernel-2 weights, CAUSAL padding and the given dilations."""
    w = jnp.full((2, 1, 1), 0.5)

    def f(x):
        for d in dilations:
            x = F.conv(x, w, padding="CAUSAL", dilation=d)
        return x

    return f


def field_size(rf) -> int:
    lo, hi = rf.measured[0]
    return hi - lo + 1


def count(params) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def signals(n: int, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, float]:
    """``n`` sequences of ``LENGTH + 1`` steps and the MSE floor of one-step prediction.

    "periodic": ``sum_k a_k sin(2 pi k t / PERIOD + phi_k)`` for k = 1..HARMONICS,
    ``a_k ~ U(0.2, 1)`` and ``phi_k ~ U(0, 2 pi)`` per sequence, scaled to RMS 1,
    plus N(0, NOISE^2) white noise: the floor is ``NOISE^2`` (the noise of x[t+1]).
    "ar2": ``s_t = 2 r cos(w) s_{t-1} - r^2 s_{t-2} + e_t`` (e_t ~ N(0, 1)),
    divided by its stationary standard deviation: the floor is the scaled
    innovation variance ``1 / gamma_0``, reached by a 2-tap linear predictor.
    """
    t = np.arange(LENGTH + 1)
    out = np.empty((n, LENGTH + 1))
    if kind == "periodic":
        k = np.arange(1, HARMONICS + 1)[:, None]
        for i in range(n):
            amp, phase = rng.uniform(0.2, 1.0, (HARMONICS, 1)), rng.uniform(0, 2 * np.pi, (HARMONICS, 1))
            s = (amp * np.sin(2 * np.pi * k * t / PERIOD + phase)).sum(0)
            out[i] = s / np.sqrt(np.mean(s**2))
        return (out + NOISE * rng.standard_normal(out.shape)).astype(np.float32), NOISE**2
    a1, a2 = 2 * AR_R * np.cos(AR_W), -(AR_R**2)
    gamma0 = (1 - a2) / ((1 + a2) * ((1 - a2) ** 2 - a1**2))  # stationary variance for unit innovations
    e = rng.standard_normal((n, LENGTH + 101))
    s = np.zeros_like(e)
    for j in range(2, e.shape[1]):
        s[:, j] = a1 * s[:, j - 1] + a2 * s[:, j - 2] + e[:, j]
    return (s[:, 100:] / np.sqrt(gamma0)).astype(np.float32), 1 / gamma0


def next_step_data(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``x[:, :-1]`` and targets ``x[:, 1:]`` as ``(N, T, 1)``: output t predicts x[t + 1]."""
    return x[:, :-1, None], x[:, 1:, None]


def field_part(ctx: Context):
    n_in = 300
    rows, sizes = [], {}
    for L in range(1, 9):
        dil = causal_stack([2**i for i in range(L)])
        plain = causal_stack([1] * L)
        model = get_model("wavenet", num_layers_per_stack=L, residual_channels=RES, skip_channels=SKIP)
        rd = receptive_field(dil, (n_in, 1), position=(n_in - 1,))
        rp = receptive_field(plain, (n_in, 1), position=(n_in - 1,))
        rm = None if ctx.quick else field_size(receptive_field(model, (n_in, 1), position=(n_in - 1,)))
        sizes[L] = (
            field_size(rd),
            rd.size[0],
            field_size(rp),
            rp.size[0],
            model_field(model, n_in, ctx.seed),
            model.receptive_field,
            rm,
        )
        rows.append((L, 2**L, *sizes[L][:2], L + 1, *sizes[L][2:6], "(full run)" if rm is None else rm))
    ctx.table(
        "Receptive field of output t (kernel 2, causal): measured by gradients vs analytic",
        [
            "layers L",
            "2^L",
            "dilated F.conv stack: measured",
            "analytic",
            "L + 1",
            "plain F.conv stack: measured",
            "analytic",
            "wavenet model: jax.grad",
            "WaveNet.receptive_field",
            "analysis.receptive_field(wavenet model): measured",
        ],
        rows,
    )
    return sizes


def model_field(model, length: int, seed: int) -> int:
    """Inputs with a non-zero ``jax.grad`` of the last output, for the model at its random initialization."""
    x = jnp.asarray(np.random.default_rng(seed).standard_normal((1, length, 1)), jnp.float32)
    variables = model.init(jax.random.key(seed), x)
    g = np.asarray(jax.grad(lambda x: model.apply(variables, x)[0, -1, 0])(x))[0, :, 0]
    hit = np.flatnonzero(g != 0)
    return int(hit.max() - hit.min() + 1) if hit.size else 0


def dependency_masks(dilations, length: int) -> list[np.ndarray]:
    """For each layer l = 0 (input) .. L: which positions of layer l the last output of layer L depends on."""
    w = jnp.full((2, 1, 1), 0.5)
    masks = []
    for start in range(len(dilations) + 1):

        def tail(h, start=start):
            for d in dilations[start:]:
                h = F.conv(h, w, padding="CAUSAL", dilation=d)
            return h[0, -1, 0]

        g = jax.grad(tail)(jnp.ones((1, length, 1)))
        masks.append(np.asarray(g[0, :, 0]) != 0)
    return masks


def draw_stack(ax, dilations, length: int, title: str) -> None:
    masks = dependency_masks(dilations, length)
    n = len(dilations)
    for lvl in range(1, n + 1):
        for t in np.flatnonzero(masks[lvl]):
            for src in (t, t - dilations[lvl - 1]):
                if src >= 0:
                    ax.plot([src, t], [lvl - 1, lvl], color="C3", lw=1.2, zorder=1)
    for lvl, m in enumerate(masks):
        ax.scatter(
            np.arange(length),
            np.full(length, lvl),
            s=40,
            c=np.where(m, "C3", "lightgrey"),
            zorder=2,
            edgecolors="k",
            linewidths=0.4,
        )
    ax.set_yticks(
        range(n + 1),
        ["input"] + [f"hidden {i} (d={d})" for i, d in enumerate(dilations[:-1], 1)] + [f"output (d={dilations[-1]})"],
    )
    ax.set_xticks([])
    ax.set_xlabel("time")
    ax.set_title(title, fontsize=10)
    for s in ("top", "right", "bottom"):
        ax.spines[s].set_visible(False)


def train(model, tx, x, y, x_test, y_test, steps: int, start: int, seed: int):
    """Adam on the MSE of every output in batches of ``BATCH``; returns the state and the test MSE every 25 steps.

    A loop over ``make_train_step`` (``fit`` takes a ``Dataset``, whose targets must be class labels).
    The test MSE counts outputs ``t >= start`` only.
    """
    step = make_train_step(model, "mse")
    state = step.place_state(
        create_train_state(model, tx, jax.ShapeDtypeStruct((1, *x.shape[1:]), jnp.float32), seed=seed)
    )
    predict = jax.jit(model.apply)

    def test_mse(state):
        pred = np.asarray(predict({"params": step.fetch_state(state).params}, x_test))
        return float(np.mean((pred - y_test)[:, start:] ** 2))

    curve, done, epoch = [], 0, 0
    while done < steps:
        for batch in batches(x, y, BATCH, seed=seed, epoch=epoch):
            state, _ = step(state, step.place_batch(batch))
            done += 1
            if done % 25 == 0 or done == steps:
                curve.append((done, test_mse(state)))
            if done == steps:
                break
        epoch += 1
    return jax.device_get(step.fetch_state(state)), curve


def train_part(ctx: Context) -> dict:
    n_train, steps = (256, 150) if ctx.quick else (512, 400)
    rng = np.random.default_rng(ctx.seed)
    dilated = get_model("wavenet", num_layers_per_stack=LAYERS, residual_channels=RES, skip_channels=SKIP)
    plain = PlainCausalNet()
    start = dilated.receptive_field - 1  # score only outputs with a full field for both networks
    tx = make_optimizer("adam", make_schedule("cosine", 3e-3, total_steps=steps), clip_norm=1.0)
    out = {}
    for kind in ("periodic", "ar2"):
        x_tr, y_tr = next_step_data(signals(n_train, rng, kind)[0])
        test, floor = signals(64, rng, kind)
        x_te, y_te = next_step_data(test)
        res = {"floor": floor}
        for label, model in (("dilated", dilated), ("plain", plain)):
            state, curve = train(model, tx, x_tr, y_tr, x_te, y_te, steps, start, ctx.seed)
            res[label] = {
                "mse": curve[-1][1],
                "params": count(state.params),
                "curve": curve,
                "pred": np.asarray(model.apply({"params": state.params}, x_te[:1]))[0, :, 0],
            }
        res["last value"] = {"mse": float(np.mean((x_te - y_te)[:, start:] ** 2))}
        res["y"] = y_te[0, :, 0]
        out[kind] = res
    return {"results": out, "start": start, "steps": steps, "n_train": n_train}


def run(ctx: Context) -> None:
    sizes = field_part(ctx)
    tr = train_part(ctx)
    res = tr["results"]
    per, ar = res["periodic"], res["ar2"]
    rf_dil, rf_plain = 2**LAYERS, LAYERS + 1
    ctx.table(
        f"Next-step prediction: test MSE on outputs t >= {tr['start']} of 64 test sequences ({tr['n_train']} training "
        f"sequences of {LENGTH} steps, {tr['steps']} Adam steps, batch {BATCH})",
        ["predictor", "params", "receptive field", "MSE, periodic + noise (long-range)", "MSE, AR(2) (short-range)"],
        [
            (
                f"WaveNet, {LAYERS} layers, dilations 1..{2 ** (LAYERS - 1)}",
                per["dilated"]["params"],
                rf_dil,
                per["dilated"]["mse"],
                ar["dilated"]["mse"],
            ),
            (
                "same network, all dilations 1",
                per["plain"]["params"],
                rf_plain,
                per["plain"]["mse"],
                ar["plain"]["mse"],
            ),
            ("repeat the last value", 0, 1, per["last value"]["mse"], ar["last value"]["mse"]),
            ("floor: expected MSE of the best predictor", "", "", per["floor"], ar["floor"]),
        ],
    )

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    draw_stack(ax1, [1, 2, 4, 8], 16, "dilated: kernel 2, dilations 1, 2, 4, 8 -> sees 16 inputs")
    draw_stack(ax2, [1, 1, 1, 1], 16, "not dilated: kernel 2, dilation 1 -> sees 5 inputs")
    ctx.save_figure(
        fig,
        dpi=110,
        caption="Which units the last output depends on (red; found by jax.grad of that output with "
        "respect to every layer), for 4 causal layers with and without dilation.",
    )

    fig = Figure(figsize=(11, 5.5), layout="constrained")
    gs = fig.add_gridspec(2, 3)
    ax = fig.add_subplot(gs[0, 0])
    L = np.arange(1, 9)
    ax.plot(L, [sizes[k][0] for k in L], "o-", label="dilated F.conv stack")
    ax.plot(L, [sizes[k][4] for k in L], "x", ms=8, label="wavenet model")
    ax.plot(L, [sizes[k][2] for k in L], "s-", label="plain F.conv stack")
    ax.plot(L, 2.0**L, "k:", label="2^L")
    ax.set(yscale="log", xlabel="layers L", ylabel="receptive field (steps)", title="fields measured by gradients")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    for j, (kind, title) in enumerate((("periodic", "periodic + noise"), ("ar2", "AR(2) control"))):
        ax = fig.add_subplot(gs[0, 1 + j])
        for label in ("dilated", "plain"):
            steps, mse = zip(*res[kind][label]["curve"])
            ax.plot(steps, mse, label=label)
        ax.axhline(res[kind]["floor"], color="k", ls=":", lw=0.8, label="floor")
        ax.set(xlabel="training step", ylabel="test MSE", title=title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    ax = fig.add_subplot(gs[1, :])
    t = np.arange(tr["start"], LENGTH)
    ax.plot(t, per["y"][t], color="lightgrey", lw=2, label="target x[t+1] (noisy)")
    ax.plot(t, per["dilated"]["pred"][t], color="C0", lw=1, label="dilated")
    ax.plot(t, per["plain"]["pred"][t], color="C1", lw=1, label="plain")
    ax.set(xlabel="t", title="one periodic test sequence: one-step predictions")
    ax.legend(fontsize=7, ncol=3)
    ctx.save_figure(
        fig,
        suffix="training",
        dpi=110,
        caption="Top left: receptive fields for L = 1..8. Top: test MSE during training "
        "(outputs with a full field). Bottom: predictions on a periodic test sequence.",
    )

    for L in range(1, 9):
        d_meas, d_an, p_meas, p_an, m_meas, m_prop, _ = sizes[L]
        ok = d_meas == d_an == m_meas == m_prop == 2**L and p_meas == p_an == L + 1
        ctx.check(
            f"L={L}: dilated field {2**L} = 2^L, plain field {L + 1} (gradients = analytic = model property)",
            ok,
            f"dilated {d_meas}/{d_an}, wavenet {m_meas}/{m_prop}, plain {p_meas}/{p_an}",
        )
    ctx.check(
        "the dilated and the plain network have the same parameter count",
        per["dilated"]["params"] == per["plain"]["params"],
        f"{per['dilated']['params']:,} each",
    )
    ratio = per["plain"]["mse"] / per["dilated"]["mse"]
    need = 1.3 if ctx.quick else 1.5
    ctx.check(
        f"periodic + noise: the dilated WaveNet's test MSE is >= {need}x lower than the plain stack's",
        ratio >= need,
        f"{per['dilated']['mse']:.4f} vs {per['plain']['mse']:.4f} ({ratio:.2f}x)",
    )
    ar_ratio = ar["plain"]["mse"] / ar["dilated"]["mse"]
    ctx.check(
        "AR(2) control (short-range): the two networks are within 10% of each other",
        abs(ar_ratio - 1) <= 0.10,
        f"{ar['dilated']['mse']:.4f} vs {ar['plain']['mse']:.4f} ({ar_ratio:.2f}x)",
    )
    ctx.check(
        "AR(2) control: both networks learned it (MSE within 20% of the floor)",
        max(ar["dilated"]["mse"], ar["plain"]["mse"]) <= 1.2 * ar["floor"],
        f"floor {ar['floor']:.4f}",
    )

    model_rf = sizes[8][6]
    note = ""
    if model_rf is not None and model_rf != 2**8:
        note = (
            f" (`jaxcnn.analysis.receptive_field` measures only {model_rf} for the 8-layer model: with its "
            f"positive test weights the gated units' tanh and sigmoid saturate and their float32 derivatives are "
            f"exactly 0; the model's field is measured here with `jax.grad` at its random initialization instead)"
        )
    ctx.text(
        f"Gradients confirm the geometry: with kernel 2 and dilations 1, 2, ..., 2^(L-1) the last output depends on "
        f"exactly the last 2^L inputs ({', '.join(str(sizes[k][0]) for k in range(1, 9))} for L = 1..8), on a bare "
        f"`F.conv` stack and on the `wavenet` model alike (whose `receptive_field` property agrees), while the same "
        f"stack without dilation sees L + 1 ({', '.join(str(sizes[k][2]) for k in range(1, 9))}): exponential against "
        f"linear growth for the same number of weights{note}. Trained to predict the next sample of noisy periodic "
        f"signals whose waveform is new in every sequence, the {LAYERS}-layer WaveNet (field {rf_dil}, "
        f"{per['dilated']['params']:,} parameters) reaches a test MSE of {per['dilated']['mse']:.3f}, {ratio:.1f}x lower "
        f"than the same network with every dilation 1 (field {rf_plain}, {per['plain']['mse']:.3f}); the noise alone "
        f"costs {per['floor']:.2f} and repeating the last value {per['last value']['mse']:.3f}. Two periods of context "
        f"let the dilated net average the noise away and lock onto the waveform; 7 noisy samples do not. On the AR(2) "
        f"control, where the best predictor needs only the last 2 samples, the two are equal "
        f"({ar['dilated']['mse']:.3f} vs {ar['plain']['mse']:.3f}, floor {ar['floor']:.3f}): the gain is the field, not "
        f"the architecture."
    )
    ctx.set_headline(
        f"field 2^L by gradients for L=1..8 (plain: L+1); noisy periodic signal: dilated test MSE "
        f"{per['dilated']['mse']:.3f} vs plain {per['plain']['mse']:.3f} ({ratio:.1f}x; floor "
        f"{per['floor']:.2f}), same {per['dilated']['params']:,} params"
    )


if __name__ == "__main__":
    raise SystemExit(main("13_wavenet", run, __doc__))
