"""Reading IDX files, the format of MNIST, Fashion-MNIST, EMNIST and KMNIST."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

GZIP_MAGIC = b"\x1f\x8b"

# IDX type byte -> big-endian NumPy dtype (Y. LeCun's description of the format).
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes(path: PathLike) -> tuple[bytes, bool]:
    """The content of ``path``, gunzipped when it starts with the gzip magic ``1f 8b``.

    Returns:
      ``(content, was_gzip)``.

    Compression is detected from the bytes, not from the file name, so
    ``x.gz`` holding raw data and ``x`` holding gzip data both read correctly.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: the gzip stream is corrupt or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    raw = path.read_bytes()
    if raw[:2] != GZIP_MAGIC:
        return raw, False
    try:
        return gzip.decompress(raw), True
    except (EOFError, OSError, zlib.error) as err:
        raise ValueError(
            f"{str(path)!r} starts with the gzip magic bytes 1f 8b but is not a complete "
            f"gzip stream ({len(raw)} bytes on disk): {err}"
        ) from None


def read_idx(path: PathLike, *, magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not) into a NumPy array.

    An IDX file is a 4-byte magic number ``00 00 TT DD`` (``TT`` the element
    type, ``DD`` the number of dimensions), then ``DD`` big-endian uint32 sizes,
    then the elements, big-endian, row-major. Its size must therefore be exactly

        4 + 4 * DD + prod(sizes) * itemsize(TT)  bytes

    (after gunzipping). Element types: ``0x08`` uint8, ``0x09`` int8, ``0x0B``
    int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64. MNIST images have
    magic 2051 (``00 00 08 03``), MNIST labels 2049 (``00 00 08 01``).

    Args:
      path: the file; gzip is detected from its first two bytes (``1f 8b``),
        not from its name.
      magic: if given, the magic number the file must carry (e.g. 2051).

    Returns:
      An array of shape ``sizes`` in the native byte order of the element type
      (``uint8`` for MNIST).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: not an IDX file, the wrong magic number, or a size that does
        not match the header (truncated or with trailing bytes); the message
        names the file and the expected and actual byte counts.

    Example:
      >>> import jaxcnn.data as D
      >>> images = D.read_idx("../shared/data/mnist/t10k-images-idx3-ubyte.gz")  # doctest: +SKIP
      >>> images.shape, images.dtype                                             # doctest: +SKIP
      ((10000, 28, 28), dtype('uint8'))

    Reference: Y. LeCun, C. Cortes, C. Burges, "The MNIST database of handwritten
    digits", file formats section.
    """
    name = str(path)
    data, was_gzip = read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{name!r} is too short to be an IDX file: {len(data)} bytes, the header alone needs 4")
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        raise ValueError(f"{name!r} has magic number {found} (0x{found:08x}), expected {magic} (0x{magic:08x})")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in IDX_TYPES or ndim == 0:
        raise ValueError(
            f"{name!r} is not an IDX file: its magic number is 0x{found:08x}; an IDX magic is "
            f"00 00 TT DD with TT in {{{', '.join(f'{t:02x}' for t in IDX_TYPES)}}} and DD >= 1"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{name!r} is truncated: its {ndim}-dimension header needs {header} bytes, the file has {len(data)} bytes"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_TYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(
            f"{name!r} is {what}: its header promises shape {shape} of {dtype.name} "
            f"({expected} bytes in all), the file has {len(data)} bytes" + (" after gunzipping" if was_gzip else "")
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)
