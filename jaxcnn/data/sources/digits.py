"""scikit-learn's 8x8 handwritten digits, embedded in the package: the default data set."""

from __future__ import annotations

import importlib.resources

import numpy as np

from jaxcnn import _validate
from jaxcnn.data.dataset import Dataset, split_indices

NUM_EXAMPLES = 1797


def load_embedded() -> tuple[np.ndarray, np.ndarray]:
    """The embedded file as stored: ``(images (1797, 8, 8) uint8 0-16, labels (1797,) uint8)``.

    Exactly ``sklearn.datasets.load_digits().images`` and ``.target`` (see
    ``jaxcnn/data/_make_digits.py``, which wrote ``jaxcnn/data/digits.npz``).
    """
    resource = importlib.resources.files("jaxcnn.data").joinpath("digits.npz")
    with resource.open("rb") as f, np.load(f) as npz:
        return npz["images"], npz["labels"]


def digits(*, size: int = 8, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The 1,797 8x8 digits of scikit-learn, shipped with jaxcnn: ``(N, size, size, 1)`` float32.

    Grey levels 0-16 are scaled to ``[0, 1]`` by ``/ 16``. No download and no
    scikit-learn needed: the images live in ``jaxcnn/data/digits.npz``.

    Split (plain shuffle, not stratified): ``num_test = round(1797 * test_fraction)``
    (359 by default), ``perm = np.random.default_rng(seed).permutation(1797)``,
    training part ``perm[:1797 - num_test]``, test part the rest.

    ``size > 8`` resizes bilinearly with half-pixel centres, the rule of
    ``jax.image.resize(..., "linear")`` and of PyTorch's
    ``interpolate(mode="bilinear", align_corners=False)`` when upsampling: output
    pixel ``i`` samples the input at ``(i + 0.5) * 8 / size - 0.5``, clamped to
    ``[0, 7]``, interpolating linearly between its two neighbours along each
    axis. ``size=28`` feeds models built for MNIST. Values stay in ``[0, 1]``.

    Args:
      size: output height and width, an int >= 8 (8 keeps the original pixels).
      test_fraction: fraction of the 1,797 images in the test part, in ``(0, 1)``.
      seed: seed of the split, a non-negative int.

    Returns:
      A :class:`~jaxcnn.data.Dataset` named ``"digits"``, 10 classes.

    Example:
      >>> import jaxcnn.data as D
      >>> ds = D.digits(size=28)
      >>> ds.x_train.shape, ds.x_test.shape
      ((1438, 28, 28, 1), (359, 28, 28, 1))

    Reference: E. Alpaydin, C. Kaynak, "Optical Recognition of Handwritten Digits",
    UCI Machine Learning Repository, 1998 (the test part, as scikit-learn bundles it).
    """
    size = _validate.as_int(size, "size")
    if size < 8:
        raise ValueError(f"size must be an int >= 8 (8 is the original resolution), got {size}")
    if isinstance(test_fraction, (bool, str)) or not isinstance(test_fraction, (int, float)):
        raise TypeError(f"test_fraction must be a number in (0, 1), got {_validate.fmt(test_fraction)}")
    num_test = int(round(NUM_EXAMPLES * float(test_fraction)))
    if not 0.0 < test_fraction < 1.0 or not 1 <= num_test < NUM_EXAMPLES:
        raise ValueError(
            f"test_fraction must be in (0, 1) and leave at least one image on each side, "
            f"got {test_fraction!r} ({num_test} of {NUM_EXAMPLES} test images)"
        )
    images, labels = load_embedded()
    x = images.astype(np.float32) / np.float32(16.0)
    if size != 8:
        x = resize_bilinear(x, size)
    x = x[..., None]
    y = labels.astype(np.int32)
    train_idx, test_idx = split_indices(NUM_EXAMPLES, NUM_EXAMPLES - num_test, seed)
    resized = "" if size == 8 else f", resized bilinearly to {size}x{size}"
    description = (
        f"scikit-learn 8x8 digits (embedded copy, {NUM_EXAMPLES} images, grey/16){resized}; "
        f"shuffled split {len(train_idx)}/{len(test_idx)} with seed {seed}"
    )
    return Dataset(x[train_idx], y[train_idx], x[test_idx], y[test_idx], 10, "digits", description)


def interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` float64 matrix of 1-D linear interpolation with half-pixel centres.

    Row ``i`` samples the input at ``s = clip((i + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)``
    with weights ``1 - (s - floor(s))`` and ``s - floor(s)`` on pixels ``floor(s)``
    and ``floor(s) + 1``. Each row sums to 1.
    """
    s = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1)
    lo = np.floor(s).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = s - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def resize_bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(N, H, W)`` images to ``(N, size, size)`` float32, bilinear, half-pixel centres.

    Separable: ``A_h @ x @ A_w.T`` with :func:`interpolation_matrix` on each axis,
    computed in float64 on the host (the same numbers on every backend).
    """
    a_h = interpolation_matrix(x.shape[1], size)
    a_w = interpolation_matrix(x.shape[2], size)
    return np.einsum("ih,nhw,jw->nij", a_h, x.astype(np.float64), a_w).astype(np.float32)
