"""NNX spectral normalization by the convolution's true operator norm: :class:`SpectralNormConv`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.linen.dtypes import promote_dtype

from jaxcnn import _validate
from jaxcnn.functional.conv import conv
from jaxcnn.functional.spectral import conv_power_iteration
from jaxcnn.nnx import _args
from jaxcnn.nnx.convert import COLLECTIONS

Initializer = Any


class SpectralNormConv(nnx.Module):
    r"""A convolution with its kernel divided by its operator norm; wraps :func:`jaxcnn.functional.conv`.

    The NNX twin of :class:`jaxcnn.nn.SpectralNormConv`.

    .. math::

        y = \mathrm{conv}\big(x, W / \hat\sigma\big) + b, \qquad
        \hat\sigma \approx \sigma_{max}(A_W) = \max_{\|x\| = 1} \|\mathrm{conv}(x, W)\|

    ``sigma`` comes from power iteration through ``F.conv`` and its adjoint
    (:func:`jaxcnn.functional.conv_power_iteration`) on inputs ``(*input_shape,
    in_features)``, then the kernel is divided by it and :func:`jaxcnn.functional.conv`
    applied -- the Linen layer's calls, in the same order, so outputs and state
    are identical. The operator depends on the spatial size, so NNX (which builds
    everything up front) needs ``input_shape``.

    State: :class:`flax.nnx.Param` ``kernel`` ``(*window, in_features,
    out_features)`` and ``bias`` ``(out_features,)``; the iterate ``u`` ``(1,
    *input_shape, in_features)`` (a normal draw from the "params" stream, then
    ``n_init_iter`` iterations, as Linen's ``init``) and the estimate ``sigma``
    ``()``, of the NNX variable type of the Linen ``collection``:
    :class:`jaxcnn.nnx.convert.SpectralStat` for ``"spectral_stats"``,
    :class:`flax.nnx.BatchStat` for ``"batch_stats"`` -- so
    :func:`jaxcnn.nnx.from_linen` / :func:`jaxcnn.nnx.to_linen` move them path for path.

    Args:
      in_features: input channels ``C_in``.
      out_features: output channels (Linen's ``features``).
      kernel_size: one size per spatial dim, or an int (repeated ``len(input_shape)`` times).
      input_shape: the spatial size of the inputs, e.g. ``(28, 28)``.
      strides, padding, dilation: as :func:`jaxcnn.functional.conv` (zero padding, "SAME" default).
      use_bias, kernel_init, bias_init, dtype, param_dtype: as :class:`jaxcnn.nnx.Conv`.
      n_iter: power iterations per training call (1).
      n_init_iter: power iterations at construction (20).
      eps: lower bound on ``sigma`` (no division by ~0).
      collection: the Linen collection of ``u`` and ``sigma``, ``"spectral_stats"``
        (default) or ``"batch_stats"``.
      use_running_average: ``True``: use the stored ``sigma`` and change nothing
        (inference); ``False`` (the NNX training default): iterate, store the new
        ``u``/``sigma`` and divide by the fresh, differentiable estimate.
        ``model.train()`` / ``model.eval()`` set it.
      rngs: :class:`flax.nnx.Rngs` for the kernel, bias and ``u``.

    ``__call__(x, *, train=None)``: ``x`` ``(N, *input_shape, in_features)`` ->
    ``(N, *out_spatial, out_features)``; ``train`` (Linen's keyword) overrides
    ``not use_running_average``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> import jaxcnn.nnx as jnnx
      >>> layer = jnnx.SpectralNormConv(1, 4, (3, 3), (8, 8), rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 8, 8, 1)), train=True).shape, layer.u.shape
      ((2, 8, 8, 4), (1, 8, 8, 1))

    Reference: Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for
    Generative Adversarial Networks", ICLR 2018.
    """

    kernel: nnx.Param  # created by _args.conv_params
    bias: nnx.Param | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Any,
        input_shape: Any,
        *,
        strides: Any = 1,
        padding: Any = "SAME",
        dilation: Any = 1,
        use_bias: bool = True,
        kernel_init: Initializer = _args.LECUN_NORMAL,
        bias_init: Initializer = _args.ZEROS,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        n_iter: int = 1,
        n_init_iter: int = 20,
        eps: float = 1e-12,
        collection: str = "spectral_stats",
        use_running_average: bool = False,
        rngs: nnx.Rngs,
    ):
        in_features = _args.features(in_features, "in_features")
        out_features = _args.features(out_features, "out_features")
        if isinstance(input_shape, int) or not hasattr(input_shape, "__len__"):
            raise TypeError(
                f"input_shape must be the spatial size, one int per dim (e.g. (28, 28)), got {input_shape!r}"
            )
        input_shape = _validate.tuple_arg(tuple(input_shape), len(input_shape), "input_shape")
        if len(input_shape) not in (1, 2, 3) or min(input_shape) < 1:
            raise ValueError(f"input_shape must be 1-3 sizes >= 1 (the spatial dims), got {input_shape!r}")
        window = _args.kernel_window(kernel_size, len(input_shape))
        if collection == "params" or collection not in COLLECTIONS:
            raise ValueError(
                f"collection must be one of {sorted(set(COLLECTIONS) - {'params'})} (an NNX variable type "
                f"converts it), got {collection!r}"
            )
        rngs = _args.check_rngs(rngs)
        self.in_features, self.out_features, self.kernel_size, self.input_shape = (
            in_features,
            out_features,
            window,
            input_shape,
        )
        self.strides, self.padding, self.dilation, self.use_bias = strides, padding, dilation, use_bias
        self.dtype, self.param_dtype, self.collection = dtype, param_dtype, collection
        self.n_iter = _validate.as_int(n_iter, "n_iter")
        self.n_init_iter = _validate.as_int(n_init_iter, "n_init_iter")
        self.eps = _validate.check_nonnegative(eps, "eps")
        self.use_running_average = _validate.check_bool(use_running_average, "use_running_average")
        _args.conv_params(self, (*window, in_features, out_features), out_features, kernel_init, bias_init, rngs)
        u0 = jax.random.normal(rngs.params(), (1, *input_shape, in_features), jnp.float32)
        s, u = conv_power_iteration(
            self.kernel[...].astype(jnp.float32), u0, n_iter=self.n_init_iter, **self._geometry()
        )
        kind = COLLECTIONS[collection]
        self.u, self.sigma = kind(u), kind(s[0])

    def _geometry(self) -> dict:
        return dict(strides=self.strides, padding=self.padding, dilation=self.dilation)

    def __call__(self, x: Any, *, train: bool | None = None) -> jnp.ndarray:
        train = _validate.check_bool(not self.use_running_average if train is None else train, "train")
        x = _validate.check_array(x, "x")
        if tuple(x.shape[1:]) != (*self.input_shape, self.in_features):
            raise ValueError(
                f"x of shape {tuple(x.shape)} does not match input_shape={self.input_shape} and "
                f"in_features={self.in_features}; expected (N, {', '.join(map(str, self.input_shape))}, {self.in_features})"
            )
        kernel = self.kernel[...]
        if train:
            s, self.u[...] = conv_power_iteration(
                kernel.astype(jnp.float32), self.u[...], n_iter=self.n_iter, **self._geometry()
            )
            self.sigma[...] = jax.lax.stop_gradient(s[0])
            scale = s[0]  # differentiable in the kernel
        else:
            scale = self.sigma[...]
        kernel = kernel / jnp.maximum(scale, self.eps).astype(kernel.dtype)
        bias = None if self.bias is None else self.bias[...]
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv(x, kernel, bias, **self._geometry())
