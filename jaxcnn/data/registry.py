"""Data sets by name: ``load("mnist", num_train=8000)``, ``list_datasets()``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jaxcnn.data.dataset import Dataset
from jaxcnn.data.sources.cifar10 import cifar10
from jaxcnn.data.sources.digits import digits
from jaxcnn.data.sources.mnist import mnist
from jaxcnn.data.sources.mnist1d import mnist1d
from jaxcnn.data.sources.synthetic import synthetic

# A fixed table (no registration at run time, so no hidden global state);
# the embedded default comes first.
_LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": digits,
    "mnist": mnist,
    "mnist1d": mnist1d,
    "cifar10": cifar10,
    "synthetic": synthetic,
}


def list_datasets() -> tuple[str, ...]:
    """Names accepted by :func:`load`, the embedded default (``"digits"``) first."""
    return tuple(_LOADERS)


def load(name: str, **kwargs: Any) -> Dataset:
    """Load a data set by name; ``kwargs`` go to its loader.

    ========== ============================================ ==========================
    name       loader                                       needs
    ========== ============================================ ==========================
    digits     :func:`~jaxcnn.data.digits` (embedded)       nothing
    mnist      :func:`~jaxcnn.data.mnist` (IDX files)       the files (``path=``)
    mnist1d    :func:`~jaxcnn.data.mnist1d` (procedural)    ``pip install mnist1d``
    cifar10    :func:`~jaxcnn.data.cifar10` (pickles)       ``path=`` to the batches
    synthetic  :func:`~jaxcnn.data.synthetic` (random)      ``input_shape=``
    ========== ============================================ ==========================

    Args:
      name: one of :func:`list_datasets` (case-insensitive).
      **kwargs: keyword arguments of that loader.

    Returns:
      A :class:`~jaxcnn.data.Dataset`.

    Example:
      >>> import jaxcnn.data as D
      >>> D.load("synthetic", input_shape=(8, 8, 1), num_train=16, num_test=4).num_train
      16
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, one of {', '.join(map(repr, _LOADERS))}; got {name!r}")
    key = name.lower()
    if key not in _LOADERS:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(map(repr, _LOADERS))}")
    return _LOADERS[key](**kwargs)
