"""Regenerate ``digits.npz``, the embedded copy of scikit-learn's 8x8 digits.

Run once from the repository root (needs scikit-learn; the package itself does not)::

    python -m jaxcnn.data._make_digits

It writes ``jaxcnn/data/digits.npz`` (``np.savez_compressed``, about 45 kB) with

* ``images``: ``(1797, 8, 8)`` uint8, grey levels 0-16, exactly
  ``sklearn.datasets.load_digits().images``;
* ``labels``: ``(1797,)`` uint8, 0-9, exactly ``load_digits().target``.

The data are the test part of the UCI "Optical Recognition of Handwritten Digits"
set (Alpaydin & Kaynak, 1998), as scikit-learn bundles it (BSD-3-Clause; UCI data
CC BY 4.0). ``tests/test_data.py`` checks the file against scikit-learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("digits.npz")


def main(out: Path = OUT) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images
    if not (np.all(images == np.round(images)) and images.min() >= 0 and images.max() <= 16):
        raise ValueError("load_digits().images are not integers in 0..16; refusing to cast to uint8")
    np.savez_compressed(out, images=images.astype(np.uint8), labels=bunch.target.astype(np.uint8))
    print(f"wrote {out} ({out.stat().st_size} bytes): images {images.shape}, labels {bunch.target.shape}")


if __name__ == "__main__":
    main()
