"""CIFAR-10 from the python-pickle batches of the official archive, read from a local folder."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from jaxcnn.data.dataset import Dataset
from jaxcnn.data.idx import PathLike

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
ARCHIVE_DIR = "cifar-10-batches-py"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# The only globals a CIFAR-10 batch pickle refers to: NumPy's array reconstruction
# (and, for arrays pickled with protocol 2 on Python 3, ``_codecs.encode`` of the buffer).
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only: no other code can run."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a CIFAR-10 batch holds only a dict of bytes, lists and NumPy arrays"
        )


def cifar10(path: PathLike) -> Dataset:
    """CIFAR-10 from its python batches: ``(N, 32, 32, 3)`` float32 in ``[0, 1]``, 10 classes.

    The folder (or its ``cifar-10-batches-py`` subfolder, as the official
    ``cifar-10-python.tar.gz`` unpacks) must hold ``data_batch_1`` ...
    ``data_batch_5`` (training, 50,000 images) and ``test_batch`` (10,000), each a
    pickled dict with ``b"data"``: uint8 ``(N, 3072)``, every row the red, green
    and blue 32x32 planes in row-major order, and ``b"labels"``: N ints 0-9.
    Each row becomes ``row.reshape(3, 32, 32).transpose(1, 2, 0) / 255``. The
    official split is kept.

    The files are read with an unpickler that accepts only NumPy arrays and
    plain containers, so a tampered file cannot run code.

    Args:
      path: the folder.

    Returns:
      A :class:`~jaxcnn.data.Dataset` named ``"cifar10"``; class names are in
      ``jaxcnn.data.sources.cifar10.CLASSES``.

    Raises:
      FileNotFoundError: the folder or one of the six files is missing (all
        missing names are listed).
      ValueError: a file is not a readable pickle or does not hold the expected
        dict, shapes, dtype or labels (the message names the file).

    Example:
      >>> import jaxcnn.data as D
      >>> ds = D.cifar10("~/data/cifar-10-batches-py")   # doctest: +SKIP
      >>> ds.x_train.shape                               # doctest: +SKIP
      (50000, 32, 32, 3)

    Reference: A. Krizhevsky, "Learning Multiple Layers of Features from Tiny
    Images", technical report, University of Toronto, 2009.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 folder {str(folder)!r} does not exist or is not a folder; it should hold "
            f"{', '.join(TRAIN_FILES)} and {TEST_FILE} (the python version of the archive)"
        )
    if not (folder / TEST_FILE).exists() and (folder / ARCHIVE_DIR).is_dir():
        folder = folder / ARCHIVE_DIR
    missing = [n for n in TRAIN_FILES + (TEST_FILE,) if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 files missing in {str(folder)!r}: {', '.join(missing)} (expected "
            f"{', '.join(TRAIN_FILES)} and {TEST_FILE})"
        )
    parts = [_read_batch(folder / n) for n in TRAIN_FILES]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = _read_batch(folder / TEST_FILE)
    description = (
        f"CIFAR-10 python batches from {str(folder)!r}: official split "
        f"{len(y_train)} (data_batch_1-5) / {len(y_test)} (test_batch)"
    )
    return Dataset(x_train, y_train, x_test, y_test, 10, "cifar10", description)


def _read_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> ``(images (N, 32, 32, 3) float32, labels (N,) int32)``."""
    try:
        with open(file, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        ImportError,
        OverflowError,
    ) as err:
        raise ValueError(f"{str(file)!r} is not a readable CIFAR-10 batch pickle: {err}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{str(file)!r} should hold a dict, got {type(batch).__name__}")
    data, labels = _get(batch, "data", file), _get(batch, "labels", file)
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(
            f"{str(file)!r}: b'data' must be uint8 of shape (N, 3072), got shape {data.shape} and dtype {data.dtype}"
        )
    labels = np.asarray(labels)
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{str(file)!r}: b'labels' must be {len(data)} ints (one per image), got "
            f"shape {labels.shape} and dtype {labels.dtype}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{str(file)!r}: labels must be in 0-9, got {labels.min()} to {labels.max()}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / np.float32(255.0)
    return images, labels.astype(np.int32)


def _get(batch: dict, key: str, file: Path) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise ValueError(f"{str(file)!r} has no {key.encode()!r} entry; keys found: {sorted(map(repr, batch))}")
