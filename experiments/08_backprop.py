"""Backpropagation through pooling and convolution: where the gradients go, checked by finite differences.

For a loss ``L = sum(g * op(x))`` with a random upstream gradient ``g``:

* max pooling sends each window's ``g`` to the window's arg-max only (the rest
  get 0), so with non-overlapping windows exactly one input per window has a
  non-zero gradient; overlapping windows add up where they share a maximum;
* average pooling splits each window's ``g`` equally, ``g / |window|``;
* a convolution's gradient w.r.t. its input is the transposed convolution of
  ``g`` (``F.conv_transpose``), and w.r.t. its kernel the cross-correlation of
  the (padded) input with ``g``, dilated by the stride (again an ``F.conv``).

Everything is computed in float64 (``with jax.enable_x64(True):``) and checked
against NumPy formulas written out here and against central finite
differences of every input entry.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.figure import Figure

import jaxcnn.functional as F
from experiments._common import Context, main

H = 1e-6  # finite-difference step (float64)


def finite_differences(loss, x: jnp.ndarray) -> np.ndarray:
    """Central differences ``(L(x + h e_i) - L(x - h e_i)) / 2h`` for every entry i, one vmapped call."""
    eye = jnp.eye(x.size, dtype=x.dtype).reshape((x.size, *x.shape)) * H
    f = jax.jit(jax.vmap(lambda d: (loss(x + d) - loss(x - d)) / (2 * H)))
    return np.asarray(f(eye)).reshape(x.shape)


def rel_err(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def numpy_max_pool_grad(x: np.ndarray, g: np.ndarray, k: int, s: int) -> np.ndarray:
    """Scatter-add each window's upstream gradient onto its arg-max (loops; VALID padding)."""
    out = np.zeros_like(x)
    n, hh, ww, c = x.shape
    for b in range(n):
        for ch in range(c):
            for i in range((hh - k) // s + 1):
                for j in range((ww - k) // s + 1):
                    win = x[b, i * s : i * s + k, j * s : j * s + k, ch]
                    a, bb = np.unravel_index(np.argmax(win), win.shape)
                    out[b, i * s + a, j * s + bb, ch] += g[b, i, j, ch]
    return out


def numpy_conv_grads(x, w, g, s: int, pads) -> tuple[np.ndarray, np.ndarray]:
    """dL/dx and dL/dw of ``y[n, o] = sum_k x_p[n, s*o + k] . w[k]`` (2-D, channels-last), tap by tap."""
    (lo_h, hi_h), (lo_w, hi_w) = pads
    xp = np.pad(x, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    ho, wo = g.shape[1:3]
    for a in range(w.shape[0]):
        for b in range(w.shape[1]):
            rows, cols = slice(a, a + s * (ho - 1) + 1, s), slice(b, b + s * (wo - 1) + 1, s)
            dw[a, b] = np.einsum("nhwc,nhwd->cd", xp[:, rows, cols], g)
            dxp[:, rows, cols] += np.einsum("nhwd,cd->nhwc", g, w[a, b])
    return dxp[:, lo_h : lo_h + x.shape[1], lo_w : lo_w + x.shape[2]], dw


def run(ctx: Context) -> None:
    rng = np.random.default_rng(ctx.seed)
    with jax.enable_x64(True):
        dtype_ok = jnp.asarray(rng.standard_normal(3)).dtype == jnp.float64
        fd_errs = []

        # --- pooling
        x = jnp.asarray(rng.standard_normal((2, 8, 8, 3)))
        ones_max = np.asarray(jax.grad(lambda x: F.max_pool(x, 2).sum())(x))
        ones_avg = np.asarray(jax.grad(lambda x: F.avg_pool(x, 2).sum())(x))
        windows = 2 * 4 * 4 * 3
        argmax_mask = numpy_max_pool_grad(np.asarray(x), np.ones((2, 4, 4, 3)), 2, 2)
        pool_cases = [
            ("max pool 2x2 / 2", lambda x: F.max_pool(x, 2), (2, 8, 8, 3), 2, 2),
            ("max pool 3x3 / 2 (overlapping)", lambda x: F.max_pool(x, 3, 2), (2, 9, 9, 3), 3, 2),
            ("avg pool 2x2 / 2", lambda x: F.avg_pool(x, 2), (2, 8, 8, 3), 2, 2),
            ("avg pool 3x3 / 3", lambda x: F.avg_pool(x, 3), (2, 9, 9, 3), 3, 3),
        ]
        pool_rows, pool_exact, overlap_nnz = [], [], None
        for name, op, shape, k, s in pool_cases:
            x = jnp.asarray(rng.standard_normal(shape))
            g = jnp.asarray(rng.standard_normal(op(x).shape))
            loss = lambda x, op=op, g=g: jnp.sum(g * op(x))
            ad = np.asarray(jax.grad(loss)(x))
            if name.startswith("max"):
                ref = numpy_max_pool_grad(np.asarray(x), np.asarray(g), k, s)
            else:  # each input gets g / k^2 from every window that contains it (these windows tile the input)
                ref = np.repeat(np.repeat(np.asarray(g), k, axis=1), k, axis=2) / k**2
            fd = finite_differences(loss, x)
            nnz = int(np.count_nonzero(ad))
            if "overlapping" in name:
                overlap_nnz = (nnz, int(np.prod(g.shape)))
            pool_exact.append(float(np.max(np.abs(ad - ref))))
            fd_errs.append(rel_err(fd, ad))
            pool_rows.append((name, "x".join(map(str, shape)), int(np.prod(g.shape)), nnz, pool_exact[-1], fd_errs[-1]))
        ctx.table(
            "Pooling: autodiff gradient vs the NumPy scatter rule and vs central differences (float64, h = 1e-6)",
            ["op", "x", "windows", "non-zero grads", "max |AD - NumPy rule|", "rel. error vs finite diff."],
            pool_rows,
        )

        # --- convolution
        conv_cases = [(10, 3, 1, "SAME"), (10, 3, 2, 1), (10, 4, 2, "VALID"), (10, 5, 3, 2)]
        if ctx.quick:
            conv_cases = conv_cases[1:3]
        conv_rows, transpose_err, numpy_err, corr_err = [], [], [], []
        for n, k, s, pad in conv_cases:
            x = jnp.asarray(rng.standard_normal((2, n, n, 2)))
            w = jnp.asarray(rng.standard_normal((k, k, 2, 3)))
            y, vjp = jax.vjp(lambda x, w, s=s, pad=pad: F.conv(x, w, strides=s, padding=pad), x, w)
            g = jnp.asarray(rng.standard_normal(y.shape))
            dx, dw = vjp(g)
            m = y.shape[1]
            # the padding F.conv used, by hand: SAME at stride 1 is (k-1)//2 before, the rest after
            lo, hi = {"SAME": ((k - 1) // 2, k - 1 - (k - 1) // 2), "VALID": (0, 0)}.get(pad, (pad, pad))
            out_pad = n - ((m - 1) * s - lo - hi + k)  # picks n among the sizes a stride-s conv maps to m
            tr = F.conv_transpose(g, w, strides=s, padding=((lo, hi), (lo, hi)), output_padding=out_pad)
            ref_dx, ref_dw = numpy_conv_grads(np.asarray(x), np.asarray(w), np.asarray(g), s, ((lo, hi), (lo, hi)))
            # dL/dw as a correlation: input channels as the batch, the batch as channels, g (dilated by s) as kernel
            xp = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
            corr = F.conv(jnp.transpose(xp, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)), padding="VALID", dilation=s)
            corr = jnp.transpose(corr, (1, 2, 0, 3))[:k, :k]  # (kh, kw, C_in, C_out)
            loss_x = lambda x, w=w, g=g, s=s, pad=pad: jnp.sum(g * F.conv(x, w, strides=s, padding=pad))
            loss_w = lambda w, x=x, g=g, s=s, pad=pad: jnp.sum(g * F.conv(x, w, strides=s, padding=pad))
            fx, fw = rel_err(finite_differences(loss_x, x), dx), rel_err(finite_differences(loss_w, w), dw)
            transpose_err.append(float(np.max(np.abs(np.asarray(tr) - np.asarray(dx)))))
            numpy_err.append(max(float(np.max(np.abs(ref_dx - dx))), float(np.max(np.abs(ref_dw - dw)))))
            corr_err.append(float(np.max(np.abs(np.asarray(corr) - np.asarray(dw)))))
            fd_errs += [fx, fw]
            conv_rows.append(
                (
                    f"{n}x{n}x2, k={k}, s={s}, pad={pad}",
                    f"{m}x{m}x3",
                    transpose_err[-1],
                    corr_err[-1],
                    numpy_err[-1],
                    fx,
                    fw,
                )
            )
        ctx.table(
            "Convolution: jax.vjp of F.conv vs conv_transpose, the correlation formula, NumPy and finite differences",
            [
                "conv",
                "y",
                "|dx - conv_transpose(g)|",
                "|dw - corr(x, g)|",
                "|AD - NumPy|",
                "FD rel. err dx",
                "FD rel. err dw",
            ],
            conv_rows,
        )

    # --- figure: one channel of an 8x8 input, and the gradients of sum(pool(x)) for max and avg pooling
    x0 = np.asarray(rng.standard_normal((1, 8, 8, 1)))
    with jax.enable_x64(True):
        gmax = np.asarray(jax.grad(lambda x: F.max_pool(x, 2).sum())(jnp.asarray(x0)))
        gavg = np.asarray(jax.grad(lambda x: F.avg_pool(x, 2).sum())(jnp.asarray(x0)))
        gover = np.asarray(jax.grad(lambda x: F.max_pool(x, 3, 2, padding=1).sum())(jnp.asarray(x0)))
    fig = Figure(figsize=(13, 3.7))
    axes = fig.subplots(1, 4)
    panels = [
        (x0, "x (one 8x8 channel), 2x2 windows", "RdBu_r", ".1f"),
        (gmax, "d sum(max_pool 2x2) / dx: 1 at each arg-max", "Oranges", "g"),
        (gavg, "d sum(avg_pool 2x2) / dx: 1/4 everywhere", "Oranges", "g"),
        (gover, "max_pool 3x3 / 2 (pad 1): shared maxima add up", "Oranges", "g"),
    ]
    for ax, (m, title, cmap, fmt) in zip(axes, panels):
        m = m[0, :, :, 0]
        vmax = np.abs(m).max() if cmap == "RdBu_r" else 4.0  # one light scale for every gradient panel
        ax.imshow(m, cmap=cmap, vmin=-vmax if cmap == "RdBu_r" else 0, vmax=vmax)
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, format(v, fmt).replace("-0.0", "0.0") if v else "0", ha="center", va="center", fontsize=7)
        if "2x2" in title:
            for b in (1.5, 3.5, 5.5):
                ax.axhline(b, color="tab:red", lw=1)
                ax.axvline(b, color="tab:red", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    ctx.save_figure(
        fig, dpi=100, caption="Where the gradient of a pooling layer goes (upstream gradient 1 per window)."
    )

    worst_fd = max(fd_errs)
    ctx.check("jax.enable_x64(True) works as a context in this JAX version (arrays inside are float64)", dtype_ok)
    ctx.check(
        "max pooling 2x2/2: exactly one non-zero gradient per window (96 windows), each 1, at the NumPy arg-max",
        np.count_nonzero(ones_max) == windows
        and set(np.unique(ones_max)) == {0.0, 1.0}
        and np.array_equal(ones_max, argmax_mask),
        f"{np.count_nonzero(ones_max)} non-zeros",
    )
    ctx.check("average pooling 2x2: every input gets exactly 1/4 of its window's gradient", np.all(ones_avg == 0.25))
    ctx.check(
        "overlapping max pooling (3x3/2): gradients of shared maxima add up (fewer non-zeros than windows), as the "
        "NumPy scatter-add",
        overlap_nnz[0] < overlap_nnz[1] and max(pool_exact) <= 1e-12,
        f"{overlap_nnz[0]} non-zeros for {overlap_nnz[1]} windows",
    )
    ctx.check(
        "the input gradient of a conv is conv_transpose of the output gradient (to 1e-12)",
        max(transpose_err) <= 1e-12,
        f"{len(transpose_err)} convs, worst {max(transpose_err):.1e}",
    )
    ctx.check(
        "the kernel gradient is the correlation of the padded input with the output gradient dilated by the "
        "stride (an F.conv), to 1e-12",
        max(corr_err) <= 1e-12,
        f"worst {max(corr_err):.1e}",
    )
    ctx.check(
        "both conv gradients equal the NumPy tap-by-tap formulas (to 1e-12)",
        max(numpy_err) <= 1e-12,
        f"worst {max(numpy_err):.1e}",
    )
    ctx.check(
        "every autodiff gradient equals central finite differences in float64 to 1e-6 relative",
        worst_fd <= 1e-6,
        f"{len(fd_errs)} gradients, worst {worst_fd:.1e}",
    )
    ctx.text(
        f"Max pooling routes the gradient like a switch: of the 192 inputs (8x8x3) under 48 2x2 windows per example, "
        f"exactly one per window (the arg-max NumPy finds) receives the window's upstream gradient, all others 0 "
        f"({np.count_nonzero(ones_max)} non-zeros for {windows} windows). With overlapping 3x3/2 windows an input "
        f"that is the maximum of two windows collects both ({overlap_nnz[0]} non-zeros for {overlap_nnz[1]} "
        "windows). Average pooling spreads each window's gradient evenly: exactly 1/4 (2x2) or 1/9 (3x3) per input. "
        "For a convolution, the vector-Jacobian product w.r.t. the input is the transposed convolution of the output "
        f"gradient (largest difference {max(transpose_err):g}), and w.r.t. the kernel it is the cross-correlation of the "
        f"padded input with the output gradient, dilated by the stride (largest difference {max(corr_err):g}); both equal "
        f"the tap-by-tap NumPy formulas. Central differences in float64 (h = 1e-6) agree with every autodiff gradient "
        f"to {worst_fd:.1e} relative ({len(fd_errs)} gradients, every entry perturbed)."
    )
    ctx.set_headline(
        f"max-pool grads: {np.count_nonzero(ones_max)} non-zeros for {windows} windows; avg 1/4 each; conv dx = "
        f"conv_transpose(g) (max diff {max(transpose_err):g}); all = finite differences to {worst_fd:.0e} (float64)"
    )


if __name__ == "__main__":
    raise SystemExit(main("08_backprop", run, __doc__))
