"""Effective receptive field (Luo et al. 2016): the input-gradient map of a centre output unit."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from jaxcnn import _validate
from jaxcnn._figures import grid, save
from jaxcnn.analysis._models import linen_view
from jaxcnn.models.call import train_kwargs


def _apply_fn(model: Any, variables: Any):
    """``x -> output`` of a linen model (``train=False`` when it takes ``train``), an NNX model or a function."""
    model, variables = linen_view(model, variables)
    if isinstance(model, nn.Module):
        if variables is None:
            raise TypeError("variables must be the model's variables (from model.init), got None")
        kw: dict[str, Any] = train_kwargs(model, False)
        return lambda x: model.apply(variables, x, **kw)
    if callable(model):
        return model
    raise TypeError(f"model must be a flax.linen.Module or a function x -> array, got {_validate.fmt(model)}")


def _shape(input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(f"input_shape must be a sequence of ints (*spatial, C), got {_validate.fmt(input_shape)}")
    shape = tuple(_validate.as_int(s, f"input_shape[{i}]") for i, s in enumerate(input_shape))
    if len(shape) - 1 not in _validate.SPATIAL_DIMS or any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be (*spatial, C) of positive sizes with 1-3 spatial dims, got {shape}")
    return shape


STATISTICS = ("abs", "square")


def erf_gradient_map(
    model: Any,
    variables: Any,
    input_shape: Sequence[int],
    *,
    n_samples: int = 16,
    key: Any = None,
    statistic: str = "abs",
) -> jnp.ndarray:
    r"""The mean absolute input gradient of the centre output unit: Luo et al.'s ERF map (not normalized).

    .. math::

        E[\mathbf{p}] = \frac{1}{S} \sum_{s=1}^{S} \sum_{c}
            \left| \frac{\partial}{\partial x^{(s)}[\mathbf{p}, c]}
            \sum_{c'} y^{(s)}[\mathbf{o}_{centre}, c'] \right|,
        \qquad x^{(s)} \sim \mathcal{N}(0, I)

    The output gradient is 1 at the centre position ``(m - 1) // 2`` of every
    output spatial dim (all output channels) and 0 elsewhere, as Luo et al.
    set it; one backward pass serves the whole batch of ``S`` inputs (the
    examples are independent: a model is run with ``train=False``).
    ``statistic="square"`` averages ``g^2`` instead of ``|g|``: the variance of
    the gradient, the quantity of Luo et al.'s random-weight analysis (sec. 2.3;
    with zero-mean random weights ``E[g] = 0``, and ``E[g^2]`` of a linear stack
    has exactly the shape of the uniform-weight map).

    Args:
      model: a ``flax.linen.Module`` (called ``model.apply(variables, x,
        train=False)`` if it takes ``train``) or a function ``x -> y``.
      variables: the model's variables (ignored for a function).
      input_shape: one example, ``(*spatial, C)``.
      n_samples: random inputs ``S`` to average over, >= 1.
      key: PRNG key of the inputs; default ``jax.random.key(0)``.
      statistic: "abs" (mean ``|g|``, default) or "square" (mean ``g^2``).

    Returns:
      ``(*spatial,)`` float32, non-negative.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> f = lambda x: F.conv(x, jnp.ones((3, 3, 1, 1)))
      >>> erf_gradient_map(f, None, (5, 5, 1), n_samples=2)[1:4, 1:4]
      Array([[1., 1., 1.],
             [1., 1., 1.],
             [1., 1., 1.]], dtype=float32)

    Reference: W. Luo, Y. Li, R. Urtasun, R. Zemel, "Understanding the Effective
    Receptive Field in Deep Convolutional Neural Networks", NeurIPS 2016, sec. 2.
    """
    shape = _shape(input_shape)
    n_samples = _validate.as_int(n_samples, "n_samples")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    key = jax.random.key(0) if key is None else _validate.check_key(key)
    statistic = _validate.check_choice(statistic, "statistic", STATISTICS)
    fn = _apply_fn(model, variables)
    x = jax.random.normal(key, (n_samples, *shape), jnp.float32)
    y, vjp = jax.vjp(fn, x)
    if not hasattr(y, "ndim") or y.ndim != len(shape) + 1:
        raise ValueError(
            f"the model's output must be (N, *spatial, C) with the input's {len(shape) - 1} spatial dims, got "
            f"{_validate.fmt(y)}; probe a convolutional layer, not the logits"
        )
    centre = tuple((m - 1) // 2 for m in y.shape[1:-1])
    index = (slice(None), *centre, slice(None))
    seed = jnp.zeros(y.shape, y.dtype).at[index].set(1.0)
    (g,) = vjp(seed)
    g = jnp.abs(g) if statistic == "abs" else jnp.square(g)
    return jnp.mean(jnp.sum(g, axis=-1), axis=0).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class EffectiveReceptiveField:
    """What :func:`effective_receptive_field` returns.

    Attributes:
      map: ``(*spatial,)`` the gradient map normalized to sum 1 (a distribution over input positions).
      raw: ``(*spatial,)`` the map before normalizing (:func:`erf_gradient_map`).
      centre: per spatial dim, the map's mean position.
      std: per spatial dim, the map's standard deviation (pixels).
      radius: ``2 * sqrt(mean_d std_d^2)``: the 2-sigma radius (Luo et al.'s "two standard deviations").
      mass_radius: smallest half-width ``r`` of the box centred on the rounded
        ``centre`` holding at least ``mass`` of the map.
      mass: the fraction ``mass_radius`` holds.
    """

    map: np.ndarray
    raw: np.ndarray
    centre: tuple
    std: tuple
    radius: float
    mass_radius: int
    mass: float


def effective_receptive_field(
    model: Any,
    variables: Any,
    input_shape: Sequence[int],
    *,
    n_samples: int = 16,
    key: Any = None,
    statistic: str = "abs",
    mass: float = 0.95,
) -> EffectiveReceptiveField:
    r"""Effective receptive field of the centre output unit, with its size.

    The map ``E`` of :func:`erf_gradient_map` (computed under ``jax.jit``) is
    normalized to a distribution ``P = E / sum E`` over input positions; then

    .. math::

        \mu_d = \sum_{\mathbf{p}} P[\mathbf{p}]\, p_d,\quad
        \sigma_d^2 = \sum_{\mathbf{p}} P[\mathbf{p}]\, (p_d - \mu_d)^2,\quad
        \text{radius} = 2 \sqrt{\tfrac{1}{D}\textstyle\sum_d \sigma_d^2}

    (Luo et al. measure the ERF by two standard deviations: for a Gaussian it
    holds 95% of the mass per dim). For a stack of ``L`` uniform 3x3 convs the
    map is the ``L``-fold self-convolution of ``[1, 1, 1]`` per dim, ``sigma =
    sqrt(2 L / 3)``: the radius grows like ``sqrt(L)`` while the theoretical field
    ``2 L + 1`` grows like ``L``. ``mass_radius`` is a second, distribution-free size.

    Args:
      model, variables, input_shape, n_samples, key, statistic: as :func:`erf_gradient_map`.
      mass: fraction in ``(0, 1]`` for ``mass_radius`` (0.95).

    Returns:
      An :class:`EffectiveReceptiveField`.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> f = lambda x: F.conv(F.conv(x, jnp.ones((3, 3, 1, 1))), jnp.ones((3, 3, 1, 1)))
      >>> e = effective_receptive_field(f, None, (9, 9, 1), n_samples=1)
      >>> round(e.std[0] ** 2, 6)                      # 2 convs: variance 2 * 2/3
      1.333333

    Reference: W. Luo, Y. Li, R. Urtasun, R. Zemel, "Understanding the Effective
    Receptive Field in Deep Convolutional Neural Networks", NeurIPS 2016.
    """
    shape = _shape(input_shape)
    key = jax.random.key(0) if key is None else _validate.check_key(key)
    statistic = _validate.check_choice(statistic, "statistic", STATISTICS)
    raw = jax.jit(lambda v, k: erf_gradient_map(model, v, shape, n_samples=n_samples, key=k, statistic=statistic))(
        variables, key
    )
    return erf_from_map(raw, mass=mass)


def erf_from_map(raw: Any, *, mass: float = 0.95) -> EffectiveReceptiveField:
    """The statistics of :func:`effective_receptive_field` for a given non-negative gradient map.

    Use it for a map averaged over several weight draws (average the
    normalized maps, then call this).

    Args:
      raw: ``(*spatial,)`` non-negative map, 1-3 dims.
      mass: as :func:`effective_receptive_field`.

    Returns:
      An :class:`EffectiveReceptiveField` (``raw`` kept as given).

    Example:
      >>> erf_from_map(np.array([0., 1, 2, 1, 0])).std
      (0.7071067811865476,)
    """
    mass = _validate.check_unit_interval(mass, "mass")
    if mass == 0.0:
        raise ValueError("mass must be in (0, 1], got 0")
    raw = np.asarray(_validate.check_array(raw, "raw"), np.float64)
    if raw.ndim not in _validate.SPATIAL_DIMS:
        raise ValueError(f"raw must be a map with 1-3 spatial dims, got shape {raw.shape}")
    total = raw.sum()
    if not np.isfinite(total) or total <= 0 or (raw < 0).any():
        raise ValueError(f"the gradient map must be non-negative with a positive finite sum, got sum {total}")
    p = raw / total
    axes = np.indices(p.shape)
    centre = tuple(float((p * a).sum()) for a in axes)
    std = tuple(float(np.sqrt((p * (a - c) ** 2).sum())) for a, c in zip(axes, centre))
    middle = tuple(int(round(c)) for c in centre)
    dist = np.max(np.abs(axes - np.reshape(middle, (-1,) + (1,) * p.ndim)), axis=0)
    cum = np.cumsum(np.bincount(dist.ravel(), weights=p.ravel()))
    mass_radius = int(np.searchsorted(cum, mass * cum[-1] * (1 - 1e-12)))
    radius = 2.0 * float(np.sqrt(np.mean(np.square(std))))
    return EffectiveReceptiveField(p.astype(np.float32), raw.astype(np.float32), centre, std, radius, mass_radius, mass)


def plot_erf(
    fields: Sequence[tuple[str, EffectiveReceptiveField, Any]],
    path: Any = None,
    *,
    ncols: int | None = None,
    dpi: int = 100,
) -> Figure:
    """ERF maps side by side, each with its 2-sigma circle and (optionally) the theoretical field's box.

    Args:
      fields: ``(title, erf, theoretical)`` triples; ``erf`` 2-D (a 1-D/3-D map
        is drawn as its middle row/slice), ``theoretical`` ``((lo, hi), (lo, hi))``
        input index ranges (e.g. ``jaxcnn.analysis.receptive_field(...).clipped``) or ``None``.
      path: where to write the PNG; ``None``: don't.
      ncols: panels per row; default about square.
      dpi: resolution.

    Returns:
      The ``matplotlib.figure.Figure``, one panel per field.

    Example:
      >>> import jax.numpy as jnp, jaxcnn.functional as F
      >>> e = effective_receptive_field(lambda x: F.conv(x, jnp.ones((3, 3, 1, 1))), None, (9, 9, 1))
      >>> len(plot_erf([("one conv", e, ((3, 5), (3, 5)))]).axes)
      1

    Reference: Luo et al., NeurIPS 2016, fig. 1.
    """
    from matplotlib.patches import Circle, Rectangle

    if isinstance(fields, (str, bytes)) or not isinstance(fields, Sequence) or not fields:
        raise TypeError(
            f"fields must be a non-empty sequence of (title, erf, theoretical), got {_validate.fmt(fields)}"
        )
    nrows, ncols = grid(len(fields), ncols)
    fig = Figure(figsize=(3.2 * ncols, 3.2 * nrows))
    for i, item in enumerate(fields):
        if not isinstance(item, (tuple, list)) or len(item) != 3 or not isinstance(item[1], EffectiveReceptiveField):
            raise TypeError(
                f"fields[{i}] must be (title, EffectiveReceptiveField, theoretical or None), got {_validate.fmt(item)}"
            )
        title, erf, box = item
        img = erf.map
        while img.ndim > 2:
            img = img[img.shape[0] // 2]
        img = img[None] if img.ndim == 1 else img
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(img, cmap="inferno", interpolation="nearest")
        if erf.map.ndim == 2:
            ax.add_patch(Circle((erf.centre[1], erf.centre[0]), erf.radius, fill=False, ec="cyan", lw=1))
            if box is not None:
                (r0, r1), (c0, c1) = box
                ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False, ls="--", ec="white"))
        ax.set_title(f"{title}\nERF radius {erf.radius:.1f}", fontsize=8)
        ax.set_axis_off()
    fig.tight_layout()
    save(fig, path, dpi)
    return fig
