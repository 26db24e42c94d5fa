r"""Max pooling with an index-based (arg-max) derivative: deterministic by construction, PyTorch's ties.

JAX differentiates ``lax.reduce_window(max)`` through XLA's *select-and-scatter*:
slow on CPU, and on GPU an atomic scatter that is not deterministic (it fails
under ``--xla_gpu_deterministic_ops``; flax#4233, jax#13672). Here the
derivative is written out instead. For each output ``o`` the window's arg-max
is its **first** maximum in scan order (row-major over the window), the rule of
PyTorch's ``max_pool{1,2,3}d``:

.. math::

    t^*(o) = \min \{ t : x_p[\mathbf{s} \odot o + \mathbf{d} \odot t] = y[o] \}, \qquad
    \frac{\partial L}{\partial x[i]} = \sum_{o,\; \mathbf{s} \odot o + \mathbf{d} \odot t^*(o) - lo = i}
        \frac{\partial L}{\partial y[o]}

computed in the forward pass as ``which`` = the first tap whose slice equals
``y`` (a reverse scan of selects). The derivative is a ``custom_jvp`` whose
tangent gathers ``dx`` at those taps: a sum over taps of one contiguous slice
of one *stride phase* of the zero-padded ``dx`` under a select
(:mod:`jaxcnn.functional._pool_phases`). JAX transposes it for reverse mode
into, per phase, a sum of output-sized plain pads, one concatenate and one
depth-to-space transpose: about ``taps x output + input`` elements written,
where the strided-slice form wrote ``taps x input`` (interior-padded pads).
No scatter, so every input gradient is one fixed sum: the same bits on every
run and every backend. Where windows overlap (an input element can sit in
several windows, e.g. 3x3 stride 2), ``which`` is computed one example at a
time in a ``lax.map`` on CPU: a loop is a fusion boundary, so XLA:CPU keeps ``which``
instead of fusing the select chain into the gradient and recomputing it for
every window that reads it (``optimization_barrier`` does not stop that on
CPU). Positions in the padding never win: a
window whose real entries all equal ``-inf`` sends its gradient to its first
real element, as PyTorch does. Without ties this is exactly XLA's gradient
(each window has one maximum); with ties it is PyTorch's, not XLA's (XLA picks
an implementation-defined one). A window holding NaN sends its gradient to its
first NaN (PyTorch: its last).

Forward mode (``jax.jvp``, ``jacfwd``) and reverse mode both work, to any
order (the second derivative w.r.t. ``x`` is zero almost everywhere, as for
any piecewise-linear function). Speed against
PyTorch and against XLA's select-and-scatter: ``benchmarks/results/``
(primitives, ``max_pool`` rows; ``cpu-rules.md``, "max-pool backward by phases").
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn.functional._geometry import kernel_positions, tap_slice
from jaxcnn.functional._pool_phases import phase_layout, phase_tap, split_phases

Pads = tuple[tuple[int, int], ...]


def _window_max(x, window, strides, pads, dilation):
    init = np.array(-np.inf, x.dtype)  # a concrete NumPy scalar: a jnp constant is a tracer under jit
    return lax.reduce_window(
        x, init, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0)), window_dilation=(1, *dilation, 1)
    )


def _real(tap, sizes, strides, pads, dilation, out) -> np.ndarray | None:
    """Static mask ``(1, *out, 1)``: where kernel position ``tap`` meets a real input element (``None``: everywhere)."""
    mask = np.ones((), bool)
    for i, (n, (lo, _), s, d, o, t) in enumerate(zip(sizes, pads, strides, dilation, out, tap)):
        pos = np.arange(o) * s + t * d - lo
        shape = [1] * len(out)
        shape[i] = o
        mask = mask & ((pos >= 0) & (pos < n)).reshape(shape)
    if mask.all():
        return None
    return np.broadcast_to(mask, out).reshape((1, *out, 1))


def first_argmax(x, y, window, strides, pads, dilation) -> jnp.ndarray:
    """The tap number (scan order) of each window's first maximum, ``(N, *out, C)`` (int8 up to 127 taps).

    ``y`` is the window maximum; a padded position never counts.
    """
    sizes = x.shape[1:-1]
    out = y.shape[1:-1]
    xp = lax.pad(x, np.array(-np.inf, x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)])
    taps = kernel_positions(window)
    which = jnp.full(y.shape, len(taps), jnp.int8 if len(taps) < 127 else jnp.int32)
    for k in reversed(range(len(taps))):  # reverse scan of selects: the first match wins
        hit = tap_slice(xp, taps[k], strides, dilation, out) == y
        real = _real(taps[k], sizes, strides, pads, dilation, out)
        if real is not None:
            hit = hit & real
        which = jnp.where(hit, k, which)
    return which


def overlapping(window, strides, dilation) -> bool:
    """Whether an input element can lie in more than one window: ``(k - 1) d + 1 > s`` in some dim."""
    return any((k - 1) * d + 1 > s for k, s, d in zip(window, strides, dilation))


def kept_argmax(x, y, window, strides, pads, dilation) -> jnp.ndarray:
    """:func:`first_argmax`; on CPU one example at a time where windows overlap (module docstring: why).

    Other backends take the plain form (a loop of small kernels would cost more there).
    """
    plain = lambda x, y: first_argmax(x, y, window, strides, pads, dilation)
    if x.shape[0] == 1 or not overlapping(window, strides, dilation):
        return plain(x, y)
    one = lambda xy: plain(xy[0][None], xy[1][None])[0]
    return lax.platform_dependent(x, y, cpu=lambda x, y: lax.map(one, (x, y)), default=plain)


def gather_at_argmax(dx, which, window, strides, pads, dilation) -> jnp.ndarray:
    """``dy[o] = dx_p[s * o + d * which(o) - lo]``: the tangent of max pooling, linear in ``dx``.

    A sum over taps of a contiguous slice of one stride phase of the
    zero-padded ``dx`` where ``which`` names that tap. JAX transposes it for
    reverse mode into plain pads per phase, a concatenate and a depth-to-space
    transpose (slice -> pad, select -> select, split -> concatenate): no
    scatter, so the gradient is deterministic.
    """
    out = which.shape[1:-1]
    zero = np.array(0, dx.dtype)
    layout = phase_layout(dx.shape[1:-1], window, strides, pads, dilation, out)
    phases = split_phases(dx, layout, zero)
    parts = [jnp.where(which == k, phase_tap(phases, layout, k, out), zero) for k in range(len(layout.phase))]
    return functools.reduce(operator.add, parts)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3, 4))
def max_pool_argmax(
    x: Any, window: tuple[int, ...], strides: tuple[int, ...], pads: Pads, dilation: tuple[int, ...]
) -> jnp.ndarray:
    """``lax.reduce_window`` max of floating ``x`` ``(N, *spatial, C)`` with the arg-max derivative (module docstring).

    ``pads``: ``(low, high)`` per spatial dim, >= 0, ``-inf`` filled (``ceil_mode``'s
    overhang included); every window must meet at least one real element.
    """
    return _window_max(x, window, strides, pads, dilation)


@max_pool_argmax.defjvp
def _max_pool_argmax_jvp(window, strides, pads, dilation, primals, tangents):
    (x,), (dx,) = primals, tangents
    y = _window_max(x, window, strides, pads, dilation)
    which = kept_argmax(x, y, window, strides, pads, dilation)
    return y, gather_at_argmax(dx, which, window, strides, pads, dilation)
