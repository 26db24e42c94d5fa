"""MNIST (or any MNIST-shaped IDX data set) from local files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jaxcnn import _validate
from jaxcnn.data.dataset import Dataset, split_indices
from jaxcnn.data.idx import PathLike, read_idx

ENV_VAR = "JAXCNN_MNIST_DIR"
DEFAULT_DIR = Path("..") / "shared" / "data" / "mnist"
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def mnist(
    path: PathLike | None = None,
    *,
    train_images: PathLike | None = None,
    train_labels: PathLike | None = None,
    test_images: PathLike | None = None,
    test_labels: PathLike | None = None,
    num_train: int = 8000,
    seed: int = 0,
) -> Dataset:
    """MNIST from IDX files on disk: ``(N, 28, 28, 1)`` float32 in ``[0, 1]``, 10 classes.

    Pixels are ``uint8 / 255``; labels are int32 0-9. Files are looked for in
    ``path`` under their standard names, with or without ``.gz`` (compression is
    detected from the first bytes, not the name)::

        train-images-idx3-ubyte  train-labels-idx1-ubyte    (60,000; optional)
        t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte     (10,000; required)

    Any of the four can instead be named explicitly (``test_images=...``), which
    also reads other IDX data sets with the same layout (Fashion-MNIST, KMNIST);
    with explicit test files and no ``path``, no folder is searched.

    The split:

    * training and test files both present: the official split (all of each);
      ``num_train`` and ``seed`` are not used;
    * only the test (t10k) files present -- the case of this project, where the
      60k training file is not available: the 10,000 t10k images are split with
      ``perm = np.random.default_rng(seed).permutation(10000)``, training part
      ``perm[:num_train]``, test part ``perm[num_train:]`` (8000/2000 by default).
      ``description`` says so; report it with every result.

    Checks, each a clear error naming the file: magic numbers (2051 images,
    2049 labels), 3-D images and 1-D labels, file size equal to the header's
    promise (a truncated file gives the expected and actual byte counts), as many
    labels as images, labels in 0-9.

    Args:
      path: the folder. Default: the environment variable ``JAXCNN_MNIST_DIR``,
        else ``../shared/data/mnist`` relative to the current directory.
      train_images, train_labels, test_images, test_labels: explicit file paths,
        overriding the folder. Images and labels of one part go together.
      num_train: size of the training part when only the t10k files are
        available, ``1 <= num_train < 10000``.
      seed: seed of that split (a non-negative int).

    Returns:
      A :class:`~jaxcnn.data.Dataset` named ``"mnist"``.

    Raises:
      FileNotFoundError: the folder or a needed file does not exist (the message
        names the path, the file names looked for and the environment variable).
      ValueError: a file is not a valid IDX file of the expected kind.

    Example:
      >>> import jaxcnn.data as D
      >>> ds = D.mnist("../shared/data/mnist")   # doctest: +SKIP
      >>> ds.num_train, ds.num_test              # doctest: +SKIP
      (8000, 2000)

    Reference: Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based
    learning applied to document recognition", Proc. IEEE 86(11), 1998.
    """
    explicit = {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }
    for part in ("train", "test"):
        a, b = explicit[f"{part}_images"], explicit[f"{part}_labels"]
        if (a is None) != (b is None):
            raise ValueError(
                f"{part}_images and {part}_labels go together: got {part}_images={a!r}, {part}_labels={b!r}"
            )
    files = dict(explicit)
    folder = None
    if files["test_images"] is None or (files["train_images"] is None and path is not None):
        folder = _resolve_folder(path)
        for key, stem in FILES.items():
            if files[key] is None:
                files[key] = _find(folder, stem)
    if files["test_images"] is None or files["test_labels"] is None:
        missing = [f"{FILES[k]}[.gz]" for k in ("test_images", "test_labels") if files[k] is None]
        raise FileNotFoundError(
            f"MNIST test files not found in {str(folder)!r}: looked for "
            f"{' and '.join(missing)} (folder from {_origin(path)})"
        )
    if (files["train_images"] is None) != (files["train_labels"] is None):
        have = "train_images" if files["train_images"] is not None else "train_labels"
        lack = "train_labels" if have == "train_images" else "train_images"
        raise FileNotFoundError(
            f"found {str(files[have])!r} but not {FILES[lack]}[.gz] in {str(folder)!r}; "
            f"MNIST training images and labels go together"
        )

    x_test, y_test = _read_pair(files["test_images"], files["test_labels"])
    if files["train_images"] is not None and files["train_labels"] is not None:  # both or neither (checked above)
        x_train, y_train = _read_pair(files["train_images"], files["train_labels"])
        description = (
            f"MNIST official split {len(y_train)}/{len(y_test)} from {str(Path(files['test_images']).parent)!r}"
        )
    else:
        train_idx, test_idx = split_indices(len(y_test), num_train, seed)
        x_train, y_train = x_test[train_idx], y_test[train_idx]
        x_test, y_test = x_test[test_idx], y_test[test_idx]
        description = (
            f"MNIST t10k images split {len(train_idx)}/{len(test_idx)} with seed "
            f"{_validate.as_int(seed, 'seed')} (np.random.default_rng(seed).permutation); the 60k "
            f"training file was not available"
        )
    return Dataset(x_train, y_train, x_test, y_test, 10, "mnist", description)


def _resolve_folder(path: PathLike | None) -> Path:
    """The folder to read: ``path``, else ``$JAXCNN_MNIST_DIR``, else ``../shared/data/mnist``."""
    origin = _origin(path)
    folder = Path(path if path is not None else os.environ.get(ENV_VAR) or DEFAULT_DIR)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"MNIST folder {str(folder)!r} (resolved to {str(folder.absolute())!r}, from "
            f"{origin}) does not exist or is not a folder; it should hold "
            f"{FILES['test_images']}[.gz] and {FILES['test_labels']}[.gz] (and optionally the "
            f"train-* files). Pass path=... or set {ENV_VAR}"
        )
    return folder


def _origin(path: PathLike | None) -> str:
    if path is not None:
        return "the path argument"
    if os.environ.get(ENV_VAR):
        return f"${ENV_VAR}"
    return f"the default; set {ENV_VAR} or pass path=... to change it"


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_pair(images_path: PathLike, labels_path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, magic=IMAGES_MAGIC)
    labels = read_idx(labels_path, magic=LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(
            f"{str(images_path)!r} has {len(images)} images but {str(labels_path)!r} has {len(labels)} labels"
        )
    if len(labels) and labels.max() > 9:
        raise ValueError(f"{str(labels_path)!r} holds labels up to {int(labels.max())}; MNIST labels are 0-9")
    x = (images.astype(np.float32) / np.float32(255.0))[..., None]
    return x, labels.astype(np.int32)
