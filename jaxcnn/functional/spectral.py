"""Power (subspace) iteration for the largest singular values of a convolution as a linear map."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import lax

from jaxcnn import _validate
from jaxcnn.functional.conv import conv, conv_transpose


def _geometry(kernel, v_shape, strides, padding, dilation):
    """Resolved ``(strides, pads, dilation, output_padding)`` making conv_transpose the exact adjoint."""
    nd = len(v_shape) - 2
    strides = _validate.tuple_arg(strides, nd, "strides")
    dilation = _validate.tuple_arg(dilation, nd, "dilation")
    k_eff = _validate.effective_size(tuple(kernel.shape[:nd]), dilation)
    sizes = tuple(v_shape[1:-1])
    pads = _validate.padding_pairs(padding, sizes, k_eff, strides)
    _validate.check_pad_fits(sizes, pads, k_eff, what=f"kernel of window {tuple(kernel.shape[:nd])}")
    # conv_transpose gives (m - 1) s - lo - hi + k_eff + op positions; op = the remainder of the floor
    extra = tuple((n + lo + hi - k) % s for n, (lo, hi), k, s in zip(sizes, pads, k_eff, strides))
    return strides, pads, dilation, extra


def conv_power_iteration(
    kernel: Any,
    v: Any,
    *,
    n_iter: int = 1,
    strides: Any = 1,
    padding: _validate.PaddingLike = "SAME",
    dilation: Any = 1,
    groups: int = 1,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    r"""Largest singular values of ``x -> conv(x, kernel)`` (zero padding) by subspace iteration.

    With ``A`` the convolution's matrix and its adjoint ``A^T`` applied by
    :func:`jaxcnn.functional.conv_transpose` (never formed), each iteration is

    .. math::

        V \leftarrow \operatorname{orth}(A^T A V), \qquad
        \sigma_i = \sqrt{\lambda_i\big((AV)(AV)^T\big)}

    where the rows of ``V`` (``k`` flattened inputs) are orthonormalized by a QR
    decomposition and the Ritz values ``sigma`` are read off at the end
    (Rayleigh-Ritz; ``k = 1`` is plain power iteration, ``sigma = ||A v||``).
    ``sigma`` converges to the top ``k`` singular values from below, at the rate
    ``(sigma_{k+1} / sigma_k)^{2 t}``. The iterate ``V`` is treated as a
    constant (``stop_gradient``), so ``sigma`` is differentiable in ``kernel``
    as in spectral normalization (Miyato et al.).

    Args:
      kernel: ``(*window, C_in // groups, C_out)``.
      v: ``(k, *spatial, C_in)``: ``k`` start vectors shaped like conv inputs
        (a random normal draw, or the ``V`` of the previous call).
      n_iter: iterations, >= 0 (0: only the Ritz values of ``v``).
      strides, padding, dilation, groups: the convolution's, as :func:`conv`
        (zero padding).

    Returns:
      ``(sigma, v)``: ``sigma`` ``(k,)`` descending, ``v`` ``(k, *spatial, C_in)``
      orthonormal rows, rotated to the Ritz vectors (``v[0]`` the top one).

    Example:
      >>> import jax, jax.numpy as jnp, jaxcnn.functional as F
      >>> w = jnp.ones((3, 1, 1)); v = jax.random.normal(jax.random.key(0), (1, 64, 1))
      >>> sigma, v = F.conv_power_iteration(w, v, n_iter=50)   # from below to 3 cos(pi / 65) = 2.9965
      >>> sigma.shape, v.shape
      ((1,), (1, 64, 1))

    Reference: Golub & Van Loan, *Matrix Computations*, 4th ed., sec. 8.2.4 (orthogonal
    iteration); Miyato et al., "Spectral Normalization for GANs", ICLR 2018.
    """
    v, _ = _validate.spatial_input(v, "v")
    kernel = _validate.check_array(kernel, "kernel")
    _validate.check_floating(v, "v")
    n_iter = _validate.as_int(n_iter, "n_iter")
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    if kernel.ndim != v.ndim:
        raise ValueError(
            f"kernel must have shape (*window, C_in // groups, C_out) with {v.ndim - 2} window dims to "
            f"match v of shape {tuple(v.shape)}, got kernel shape {tuple(kernel.shape)}"
        )
    strides, pads, dilation, extra = _geometry(kernel, tuple(v.shape), strides, padding, dilation)
    kw = dict(strides=strides, padding=pads, dilation=dilation, groups=groups)
    forward = lambda x: conv(x, kernel, **kw, precision=lax.Precision.HIGHEST)  # noqa: E731
    k = v.shape[0]

    def orth(block):
        q, _ = jnp.linalg.qr(block.reshape(k, -1).T)
        return q.T.reshape(block.shape)

    def step(_, block):
        return orth(
            conv_transpose(lax.stop_gradient(forward(block)), lax.stop_gradient(kernel), output_padding=extra, **kw)
        )

    block = lax.stop_gradient(lax.fori_loop(0, n_iter, step, orth(v)))
    image = forward(block).reshape(k, -1)
    lam, vecs = jnp.linalg.eigh(image @ image.T)
    lam, vecs = lam[::-1], vecs[:, ::-1]
    block = lax.stop_gradient(jnp.tensordot(vecs.T, block, axes=1))
    return jnp.sqrt(jnp.maximum(lam, 0.0)), block
