"""Spectral normalization by the true operator norm of the convolution: :class:`SpectralNormConv`."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import initializers
from flax.linen.dtypes import promote_dtype

from jaxcnn import _validate
from jaxcnn.functional.conv import conv
from jaxcnn.functional.spectral import conv_power_iteration
from jaxcnn.nn.conv import KernelSize, check_channels, window_shape


class SpectralNormConv(nn.Module):
    r"""A convolution whose kernel is divided by its operator norm on the actual input shape.

    .. math::

        y = \mathrm{conv}\big(x, W / \hat\sigma\big) + b, \qquad
        \hat\sigma \approx \sigma_{max}(A_W) = \max_{\|x\| = 1} \|\mathrm{conv}(x, W)\|

    where ``A_W`` is the convolution as a linear map on inputs ``(*spatial,
    C_in)`` (zero padding, strides and dilation included). ``sigma`` comes from
    power iteration through ``F.conv`` and its adjoint ``F.conv_transpose``
    (:func:`jaxcnn.functional.conv_power_iteration`), not from the norm of the
    kernel reshaped to a ``(k*k*C_in, C_out)`` matrix, which is a different
    number (neither a bound above nor below in general). So the layer is
    1-Lipschitz (``||y(x) - y(x')|| <= ||x - x'||``) once the iteration has
    converged.

    State: the iterate ``u`` ``(1, *spatial, C_in)`` (a random normal draw at
    ``init``) and the estimate ``sigma`` ``()`` live in the collection
    ``collection`` (default ``"spectral_stats"``). With ``train=True`` each call
    runs ``n_iter`` iterations from ``u`` (1 by default, as Miyato et al.: the
    vector is carried across steps, so the estimate converges as training
    proceeds) and stores the new ``u`` and ``sigma`` (pass
    ``mutable=[collection]``); ``init`` runs ``n_init_iter`` iterations. With
    ``train=False`` the stored ``sigma`` is used and nothing changes.
    ``sigma`` is differentiable in the kernel (``u`` is a constant), as in
    Miyato et al. ``collection="batch_stats"`` lets :func:`jaxcnn.train.fit`
    carry the state (it carries that collection), as ``flax.linen.SpectralNorm`` does.

    Parameters: ``"kernel"`` ``(*window, C_in, features)``, ``"bias"`` ``(features,)``.

    Attributes:
      features, kernel_size, strides, padding, dilation, use_bias, kernel_init,
        bias_init, dtype, param_dtype: as :class:`jaxcnn.nn.Conv` (zero padding, ``groups=1``).
      n_iter: power iterations per training call (1).
      n_init_iter: power iterations at ``init`` (20).
      eps: lower bound on ``sigma`` (no division by ~0).
      collection: the variable collection of ``u`` and ``sigma``.

    Returns (``__call__(x, *, train)``):
      ``(N, *out_spatial, features)``, as :class:`jaxcnn.nn.Conv`.

    Example:
      >>> import jax, jax.numpy as jnp, jaxcnn.nn as jnn
      >>> layer = jnn.SpectralNormConv(4, 3)
      >>> x = jnp.ones((2, 8, 8, 1))
      >>> variables = layer.init(jax.random.key(0), x, train=False)
      >>> y, state = layer.apply(variables, x, train=True, mutable=["spectral_stats"])
      >>> y.shape, state["spectral_stats"]["u"].shape
      ((2, 8, 8, 4), (1, 8, 8, 1))

    Reference: Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for
    Generative Adversarial Networks", ICLR 2018; Sedghi, Gupta & Long, "The
    Singular Values of Convolutional Layers", ICLR 2019 (the conv's true norm).
    """

    features: int
    kernel_size: KernelSize
    strides: Any = 1
    padding: Any = "SAME"
    dilation: Any = 1
    use_bias: bool = True
    kernel_init: Any = initializers.lecun_normal()
    bias_init: Any = initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32
    n_iter: int = 1
    n_init_iter: int = 20
    eps: float = 1e-12
    collection: str = "spectral_stats"

    @nn.compact
    def __call__(self, x: Any, *, train: bool) -> jnp.ndarray:
        train = _validate.check_bool(train, "train")
        window = window_shape(self.kernel_size, x, "SpectralNormConv")
        features, _ = check_channels(self.features, 1, x.shape[-1], "SpectralNormConv")
        n_iter = _validate.as_int(self.n_iter, "n_iter")
        n_init_iter = _validate.as_int(self.n_init_iter, "n_init_iter")
        eps = _validate.check_nonnegative(self.eps, "eps")
        if not isinstance(self.collection, str) or self.collection in ("params", ""):
            raise ValueError(
                f"collection must be a variable collection name other than 'params', got {self.collection!r}"
            )
        kernel = self.param("kernel", self.kernel_init, (*window, x.shape[-1], features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (features,), self.param_dtype) if self.use_bias else None
        geometry = dict(strides=self.strides, padding=self.padding, dilation=self.dilation)
        k32 = kernel.astype(jnp.float32)
        initializing = self.is_initializing()
        u = self.variable(
            self.collection, "u", lambda: jax.random.normal(self.make_rng("params"), (1, *x.shape[1:]), jnp.float32)
        )
        sigma = self.variable(
            self.collection, "sigma", lambda: conv_power_iteration(k32, u.value, n_iter=n_init_iter, **geometry)[0][0]
        )
        if initializing:
            _, u.value = conv_power_iteration(k32, u.value, n_iter=n_init_iter, **geometry)
        if train and not initializing:
            s, u.value = conv_power_iteration(k32, u.value, n_iter=n_iter, **geometry)
            sigma.value = jax.lax.stop_gradient(s[0])
            scale = s[0]  # differentiable in the kernel
        else:
            scale = sigma.value
        kernel = kernel / jnp.maximum(scale, eps).astype(kernel.dtype)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv(x, kernel, bias, **geometry)
