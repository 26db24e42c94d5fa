r"""Every layout rule between PyTorch and jaxcnn tensors, in one place.

=======================  ==========================================  ===========================================
what                     PyTorch                                     jaxcnn
=======================  ==========================================  ===========================================
activations              ``(N, C, *spatial)``                        ``(N, *spatial, C)``
conv weight              ``(O, I/g, *k)``                            ``(*k, I/g, O)``
transposed conv weight   ``(C_y, F/g, *k)`` (its ``in_channels``      ``(*k, F/g, C_y)``: the *forward* conv's
                         ``C_y``, ``out_channels`` ``F``)             kernel, :func:`jaxcnn.functional.conv_transpose`
dense weight             ``(out, in)``                               ``(in, out)``
dense after a flatten    rows ordered ``(c, *spatial)``              rows ordered ``(*spatial, c)``
LayerNorm weight         ``(C, *spatial)``                           ``(*spatial, C)``
BatchNorm                ``weight, bias, running_mean, running_var``  ``scale, bias`` + ``batch_stats/mean, var``
BN momentum              ``m`` (weight of the *new* batch)           ``1 - m`` (weight of the *old* statistics)
BN running variance      updated with the unbiased batch variance    updated with the biased one
``num_batches_tracked``  a step counter                              not kept (ignored on import, written on export)
=======================  ==========================================  ===========================================

The transposed-conv rule is the conv rule: PyTorch's ``ConvTransposeNd``
weight is the weight of the forward ``ConvNd`` it is the adjoint of, laid out
as PyTorch lays out any conv weight, and jaxcnn's ``conv_transpose`` takes
the forward conv's kernel too. No flip is involved.

Every function takes and returns NumPy arrays (exact copies; nothing is
rounded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def conv_from_torch(w: Any) -> np.ndarray:
    """Conv weight ``(O, I/g, *k)`` -> kernel ``(*k, I/g, O)``."""
    w = np.asarray(w)
    return np.ascontiguousarray(np.transpose(w, (*range(2, w.ndim), 1, 0)))


def conv_to_torch(k: Any) -> np.ndarray:
    """Kernel ``(*k, I/g, O)`` -> conv weight ``(O, I/g, *k)``."""
    k = np.asarray(k)
    nd = k.ndim - 2
    return np.ascontiguousarray(np.transpose(k, (nd + 1, nd, *range(nd))))


def conv_transpose_from_torch(w: Any) -> np.ndarray:
    """``ConvTransposeNd.weight`` ``(C_y, F/g, *k)`` -> jaxcnn ``ConvTranspose`` kernel ``(*k, F/g, C_y)``.

    The same permutation as :func:`conv_from_torch`: both hold the forward conv's weight.
    """
    return conv_from_torch(w)


def conv_transpose_to_torch(k: Any) -> np.ndarray:
    """The inverse of :func:`conv_transpose_from_torch`."""
    return conv_to_torch(k)


def dense_from_torch(w: Any, flatten_shape: Sequence[int] | None = None) -> np.ndarray:
    """Linear weight ``(out, in)`` -> Dense kernel ``(in, out)``.

    ``flatten_shape``: the channels-last ``(*spatial, C)`` shape of the map
    flattened just before this layer. PyTorch flattens ``(C, *spatial)``, so
    its input rows are ordered ``(c, *spatial)`` and jaxcnn's ``(*spatial, c)``:
    the rows are permuted, ``w.reshape(out, C, *spatial)`` moved to
    ``(*spatial, C, out)`` -- the conv rule on the reshaped weight.
    """
    w = np.asarray(w)
    if flatten_shape is None:
        return np.ascontiguousarray(w.T)
    *spatial, c = flatten_shape
    return conv_from_torch(w.reshape(w.shape[0], c, *spatial)).reshape(-1, w.shape[0])


def dense_to_torch(k: Any, flatten_shape: Sequence[int] | None = None) -> np.ndarray:
    """Dense kernel ``(in, out)`` -> Linear weight ``(out, in)`` (the inverse of :func:`dense_from_torch`)."""
    k = np.asarray(k)
    if flatten_shape is None:
        return np.ascontiguousarray(k.T)
    out = k.shape[-1]
    return conv_to_torch(k.reshape(*flatten_shape, out)).reshape(out, -1)


def channels_last(x: Any) -> np.ndarray:
    """``(N, C, *spatial)`` -> ``(N, *spatial, C)``; ``(N, F)`` unchanged. Also LayerNorm weights without ``N``."""
    x = np.asarray(x)
    return x if x.ndim <= 2 else np.moveaxis(x, 1, -1)


def channels_first(x: Any) -> np.ndarray:
    """``(N, *spatial, C)`` -> ``(N, C, *spatial)``; ``(N, F)`` unchanged."""
    x = np.asarray(x)
    return x if x.ndim <= 2 else np.moveaxis(x, -1, 1)


def layer_norm_from_torch(w: Any) -> np.ndarray:
    """LayerNorm elementwise weight ``(C, *spatial)`` -> ``(*spatial, C)`` (1-D weights unchanged)."""
    w = np.asarray(w)
    return w if w.ndim <= 1 else np.ascontiguousarray(np.moveaxis(w, 0, -1))


def layer_norm_to_torch(w: Any) -> np.ndarray:
    """The inverse of :func:`layer_norm_from_torch`."""
    w = np.asarray(w)
    return w if w.ndim <= 1 else np.ascontiguousarray(np.moveaxis(w, -1, 0))


def momentum_from_torch(momentum: float) -> float:
    """PyTorch's BatchNorm ``momentum`` (weight of the batch, 0.1) -> jaxcnn's (weight of the old value, 0.9)."""
    if momentum is None:
        raise ValueError(
            "momentum=None (PyTorch's cumulative moving average) has no jaxcnn equivalent; "
            "give the BatchNorm a number, e.g. momentum=0.1"
        )
    return 1.0 - float(momentum)


def momentum_to_torch(momentum: float) -> float:
    """jaxcnn's BatchNorm ``momentum`` -> PyTorch's: ``1 - momentum``."""
    return 1.0 - float(momentum)


def torch_running_var(new_var: Any, old_var: Any, momentum: float, count: int) -> np.ndarray:
    r"""The running variance PyTorch would hold after the training step that took jaxcnn's to ``new_var``.

    Both update ``running = m_old * old + (1 - m_old) * batch_var`` (``m_old``
    the jaxcnn momentum), but PyTorch's ``batch_var`` is the unbiased
    ``s^2 * count / (count - 1)`` where jaxcnn's is the biased ``s^2``
    (``count``: the number of values per channel, ``N * prod(spatial)``)::

        torch_new = m_old * old + (new_var - m_old * old) * count / (count - 1)

    Args:
      new_var: jaxcnn's running variance after the step, ``(C,)``.
      old_var: the running variance before it, ``(C,)``.
      momentum: jaxcnn's momentum (0.9 is PyTorch's 0.1).
      count: values per channel in the batch, ``> 1``.

    Returns:
      ``(C,)`` float64.
    """
    if int(count) < 2:
        raise ValueError(f"count must be >= 2 (the unbiased variance divides by count - 1), got {count}")
    new_var, old_var = np.asarray(new_var, np.float64), np.asarray(old_var, np.float64)
    kept = float(momentum) * old_var
    return kept + (new_var - kept) * count / (count - 1)
