"""Tests for jaxcnn.data: loaders, IDX/CIFAR parsing, batching, sharding, prefetch, augmentation.

Oracles: IDX and CIFAR files written here with ``struct``/``pickle`` and decoded
here with plain NumPy slicing; scikit-learn's ``load_digits``; the mnist1d
package's own reference call; PyTorch's bilinear ``interpolate``; NumPy
least squares (synthetic labels are learnable); NumPy slicing and loops for
crops, flips, normalization and batch order.
"""

from __future__ import annotations

import gzip
import os
import pickle
import random
import struct
import sys
import threading
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxcnn.data as D
from jaxcnn.data.prefetch import THREAD_NAME
from jaxcnn.data.sources.digits import load_embedded

REPO = Path(__file__).resolve().parents[1]


def _mnist_dir() -> Path | None:
    for candidate in (
        os.environ.get("JAXCNN_MNIST_DIR"),
        REPO / ".." / "shared" / "data" / "mnist",
        REPO / "shared" / "data" / "mnist",
    ):
        if candidate and (Path(candidate) / "t10k-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    return None


# ----------------------------------------------------------------------------- IDX writer (oracle)

IDX_CODES = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}


def idx_bytes(array: np.ndarray, big_endian: str) -> bytes:
    """IDX bytes written by hand: 00 00 type ndim, big-endian uint32 sizes, big-endian data."""
    header = bytes([0, 0, IDX_CODES[big_endian], array.ndim])
    header += b"".join(struct.pack(">I", s) for s in array.shape)
    return header + np.ascontiguousarray(array).astype(big_endian).tobytes()


def write(path: Path, content: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def write_mnist_like(folder: Path, n: int, seed: int, prefix: str = "t10k", gz: bool = True) -> tuple:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(images, "u1"), gz)
    write(folder / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels, "u1"), gz)
    return images, labels


# ----------------------------------------------------------------------------- the real MNIST files


@pytest.fixture(scope="module")
def real_mnist():
    folder = _mnist_dir()
    if folder is None:
        pytest.skip("the MNIST t10k files are not available (../shared/data/mnist or $JAXCNN_MNIST_DIR)")
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "rb") as f:
        raw_images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "rb") as f:
        raw_labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return folder, raw_images, raw_labels, D.mnist(folder)


def test_real_mnist_facts_and_split(real_mnist):
    folder, raw_images, raw_labels, ds = real_mnist
    assert raw_images.shape == (10000, 28, 28) and raw_labels.shape == (10000,)
    assert ds.x_train.shape == (8000, 28, 28, 1) and ds.x_test.shape == (2000, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10 and ds.name == "mnist"
    assert set(np.unique(ds.y_train)) == set(range(10)) == set(np.unique(ds.y_test))
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    # the documented rule, written out here: perm[:8000] trains, the rest tests
    perm = np.random.default_rng(0).permutation(10000)
    np.testing.assert_array_equal(ds.x_train[..., 0], raw_images[perm[:8000]] / np.float32(255))
    np.testing.assert_array_equal(ds.y_train, raw_labels[perm[:8000]])
    np.testing.assert_array_equal(ds.x_test[..., 0], raw_images[perm[8000:]] / np.float32(255))
    np.testing.assert_array_equal(ds.y_test, raw_labels[perm[8000:]])
    assert "8000/2000" in ds.description and "seed 0" in ds.description
    assert "60k training file was not available" in ds.description
    assert "train=8000" in repr(ds) and "test=2000" in repr(ds)


def test_real_mnist_split_is_deterministic_and_seeded(real_mnist):
    folder, _, raw_labels, ds = real_mnist
    again = D.mnist(folder)
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    other = D.mnist(folder, num_train=5000, seed=1)
    assert other.num_train == 5000 and other.num_test == 5000
    assert not np.array_equal(other.y_train[:100], ds.y_train[:100])
    assert np.array_equal(np.sort(np.concatenate([other.y_train, other.y_test])), np.sort(raw_labels))


def test_real_mnist_default_path_and_env_var(real_mnist, monkeypatch, tmp_path):
    folder, _, _, ds = real_mnist
    monkeypatch.setenv("JAXCNN_MNIST_DIR", str(folder))
    monkeypatch.chdir(tmp_path)
    np.testing.assert_array_equal(D.load("mnist").y_train, ds.y_train)
    monkeypatch.delenv("JAXCNN_MNIST_DIR")
    (tmp_path / "work").mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "mnist").symlink_to(folder.resolve())
    monkeypatch.chdir(tmp_path / "work")
    np.testing.assert_array_equal(D.mnist().y_test, ds.y_test)


# ----------------------------------------------------------------------------- IDX parsing


@pytest.mark.parametrize("big_endian", list(IDX_CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_all_types_raw_and_gzip(tmp_path, big_endian, gz):
    a = np.arange(2 * 3 * 5).reshape(2, 3, 5) * 3 - 7
    a = a % 256 if big_endian == "u1" else a
    a = a.astype(big_endian)
    out = D.read_idx(write(tmp_path / "a.idx", idx_bytes(a, big_endian), gz))
    assert out.shape == (2, 3, 5) and out.dtype == np.dtype(big_endian).newbyteorder("=")
    np.testing.assert_array_equal(out, a)


def test_gzip_is_detected_from_bytes_not_name(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw_named_gz = write(tmp_path / "raw.gz", idx_bytes(a, "u1"))
    gz_named_raw = write(tmp_path / "compressed", idx_bytes(a, "u1"), gz=True)
    np.testing.assert_array_equal(D.read_idx(raw_named_gz), a)
    np.testing.assert_array_equal(D.read_idx(gz_named_raw), a)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_names_file_and_byte_counts(tmp_path, gz):
    content = idx_bytes(np.zeros((10, 28, 28), np.uint8), "u1")  # 16 + 7840 bytes
    path = write(tmp_path / "t10k-images-idx3-ubyte", content[:-100], gz)
    with pytest.raises(ValueError, match="truncated") as info:
        D.read_idx(path)
    assert str(path) in str(info.value) and "7856" in str(info.value) and "7756" in str(info.value)


def test_idx_with_trailing_bytes_and_short_header(tmp_path):
    content = idx_bytes(np.zeros((4,), np.uint8), "u1")
    with pytest.raises(ValueError, match="longer than its header says.*12 bytes.*13 bytes"):
        D.read_idx(write(tmp_path / "a", content + b"\x00"))
    with pytest.raises(ValueError, match="truncated: its 3-dimension header needs 16 bytes"):
        D.read_idx(write(tmp_path / "b", bytes([0, 0, 8, 3, 0, 0, 0, 1])))
    with pytest.raises(ValueError, match="too short"):
        D.read_idx(write(tmp_path / "c", b"\x00\x00"))


def test_wrong_magic_and_not_idx(tmp_path):
    labels = write(tmp_path / "labels", idx_bytes(np.zeros(5, np.uint8), "u1"))
    with pytest.raises(ValueError, match=r"magic number 2049 \(0x00000801\), expected 2051"):
        D.read_idx(labels, magic=2051)
    with pytest.raises(ValueError, match="not an IDX file"):
        D.read_idx(write(tmp_path / "png", b"\x89PNG\r\n\x1a\n" + bytes(20)))
    # mnist() checks the magic of each role: labels given as images
    with pytest.raises(ValueError, match="expected 2051"):
        D.mnist(test_images=labels, test_labels=labels)


def test_corrupt_gzip_and_missing_file(tmp_path):
    broken = gzip.compress(idx_bytes(np.zeros(1000, np.uint8), "u1"))[:-20]
    path = write(tmp_path / "x.gz", broken)
    with pytest.raises(ValueError, match="not a complete gzip stream") as info:
        D.read_idx(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="nope"):
        D.read_idx(tmp_path / "nope")


def test_mnist_missing_folder_and_files(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXCNN_MNIST_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="JAXCNN_MNIST_DIR") as info:
        D.mnist(tmp_path / "absent")
    assert "absent" in str(info.value) and "t10k-images-idx3-ubyte" in str(info.value)
    monkeypatch.setenv("JAXCNN_MNIST_DIR", str(tmp_path / "also-absent"))
    with pytest.raises(FileNotFoundError, match=r"also-absent.*\$JAXCNN_MNIST_DIR"):
        D.mnist()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\[\.gz\] and t10k-labels"):
        D.mnist(tmp_path / "empty")
    write_mnist_like(tmp_path / "half", 5, 0, prefix="train")
    write_mnist_like(tmp_path / "half", 5, 0)
    (tmp_path / "half" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        D.mnist(tmp_path / "half")
    with pytest.raises(ValueError, match="test_images and test_labels go together"):
        D.mnist(test_images=tmp_path / "x")


def test_mnist_small_folders_split_and_official(tmp_path):
    images, labels = write_mnist_like(tmp_path / "t10k-only", 50, 1, gz=False)
    ds = D.mnist(tmp_path / "t10k-only", num_train=30, seed=3)
    perm = np.random.default_rng(3).permutation(50)
    np.testing.assert_array_equal(ds.x_train[..., 0], images[perm[:30]] / np.float32(255))
    np.testing.assert_array_equal(ds.y_test, labels[perm[30:]])
    assert "30/20 with seed 3" in ds.description
    # explicit files, no folder searched
    explicit = D.mnist(
        test_images=tmp_path / "t10k-only" / "t10k-images-idx3-ubyte",
        test_labels=tmp_path / "t10k-only" / "t10k-labels-idx1-ubyte",
        num_train=30,
        seed=3,
    )
    np.testing.assert_array_equal(explicit.x_test, ds.x_test)
    # training files present: the official split, nothing shuffled
    train_images, train_labels = write_mnist_like(tmp_path / "both", 12, 2, prefix="train")
    test_images, _ = write_mnist_like(tmp_path / "both", 7, 4)
    full = D.mnist(tmp_path / "both")
    np.testing.assert_array_equal(full.x_train[..., 0], train_images / np.float32(255))
    np.testing.assert_array_equal(full.y_train, train_labels)
    np.testing.assert_array_equal(full.x_test[..., 0], test_images / np.float32(255))
    assert "official split 12/7" in full.description
    with pytest.raises(ValueError, match=r"num_train must be in \[1, 49\]"):
        D.mnist(tmp_path / "t10k-only", num_train=50)


def test_mnist_count_mismatch_and_bad_labels(tmp_path):
    img = write(tmp_path / "i", idx_bytes(np.zeros((3, 28, 28), np.uint8), "u1"))
    two = write(tmp_path / "l2", idx_bytes(np.zeros(2, np.uint8), "u1"))
    with pytest.raises(ValueError, match="3 images but .* has 2 labels"):
        D.mnist(test_images=img, test_labels=two)
    bad = write(tmp_path / "l3", idx_bytes(np.array([0, 12, 3], np.uint8), "u1"))
    with pytest.raises(ValueError, match="labels up to 12"):
        D.mnist(test_images=img, test_labels=bad, num_train=2)


# ----------------------------------------------------------------------------- digits


def test_embedded_digits_equal_sklearn():
    datasets = pytest.importorskip("sklearn.datasets")
    reference = datasets.load_digits()
    images, labels = load_embedded()
    assert images.dtype == np.uint8 and images.shape == (1797, 8, 8)
    np.testing.assert_array_equal(images.astype(np.float64), reference.images)
    np.testing.assert_array_equal(labels, reference.target)


def test_digits_split_and_scaling():
    images, labels = load_embedded()
    ds = D.digits()
    assert (ds.num_train, ds.num_test, ds.input_shape) == (1438, 359, (8, 8, 1))
    perm = np.random.default_rng(0).permutation(1797)
    np.testing.assert_array_equal(ds.x_train[..., 0], images[perm[:1438]].astype(np.float32) / 16)
    np.testing.assert_array_equal(ds.y_test, labels[perm[1438:]])
    assert ds.x_train.max() == 1.0 and ds.x_train.min() == 0.0
    assert D.digits(test_fraction=0.5, seed=1).num_test == 898  # round(898.5) -> banker's 898
    with pytest.raises(ValueError, match="size must be an int >= 8"):
        D.digits(size=4)
    with pytest.raises(ValueError, match="test_fraction must be in"):
        D.digits(test_fraction=1.0)


def test_digits_resize_matches_torch_bilinear():
    torch = pytest.importorskip("torch")
    images, _ = load_embedded()
    ds = D.digits(size=28, test_fraction=0.2)
    perm = np.random.default_rng(0).permutation(1797)
    src = torch.from_numpy(images[perm[:64]].astype(np.float32)[:, None] / 16)
    ref = torch.nn.functional.interpolate(src, size=(28, 28), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ds.x_train[:64, ..., 0], ref[:, 0].numpy(), atol=1e-6)
    assert ds.x_train.shape == (1438, 28, 28, 1) and ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0


# ----------------------------------------------------------------------------- MNIST-1D


def test_mnist1d_default_equals_reference_and_keeps_global_rng():
    m1d = pytest.importorskip("mnist1d.data")
    random.seed(123)
    np.random.seed(123)
    py_before, np_before = random.getstate(), np.random.get_state()
    ds = D.mnist1d()
    assert random.getstate() == py_before
    np_after = np.random.get_state()
    assert np_after[0] == np_before[0] and np.array_equal(np_after[1], np_before[1])
    assert np_after[2:] == np_before[2:]
    ref = m1d.make_dataset(m1d.get_dataset_args())
    assert ds.x_train.shape == (4000, 40, 1) and ds.x_test.shape == (1000, 40, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.x_train[..., 0], ref["x"].astype(np.float32))
    np.testing.assert_array_equal(ds.x_test[..., 0], ref["x_test"].astype(np.float32))
    np.testing.assert_array_equal(ds.y_train, ref["y"])
    np.testing.assert_array_equal(ds.y_test, ref["y_test"])


def test_mnist1d_sizes_and_missing_package(monkeypatch):
    pytest.importorskip("mnist1d.data")
    ds = D.mnist1d(num_train=103, num_test=50, seed=7)  # 160 generated, 7 dropped
    assert (ds.num_train, ds.num_test, ds.input_shape) == (103, 50, (40, 1))
    assert "160 samples" in ds.description and "seed 7" in ds.description
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match="pip install mnist1d"):
        D.mnist1d()


# ----------------------------------------------------------------------------- CIFAR-10


def write_cifar(folder: Path, n: int = 3, seed: int = 0) -> dict:
    """Six batch files in the official format: dict of bytes keys, (N, 3072) uint8, list labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = (data, labels)
    return written


def test_cifar10_reads_official_layout(tmp_path):
    written = write_cifar(tmp_path / "cifar-10-batches-py")
    # the official files were pickled under NumPy 1.x, whose module was numpy.core
    test_file = tmp_path / "cifar-10-batches-py" / "test_batch"
    test_file.write_bytes(test_file.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in test_file.read_bytes()
    ds = D.cifar10(tmp_path)  # finds the archive's subfolder
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    data, labels = written["data_batch_2"]
    row, image = data[1], ds.x_train[3 + 1]
    for c in range(3):  # the CIFAR layout: 1024 red, then green, then blue, each row-major
        for h in (0, 5, 31):
            for w in (0, 17, 31):
                assert image[h, w, c] == np.float32(row[c * 1024 + h * 32 + w]) / np.float32(255)
    np.testing.assert_array_equal(ds.y_train[3:6], labels)
    np.testing.assert_array_equal(ds.y_test, written["test_batch"][1])
    assert "official split 15" in ds.description


def test_cifar10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.cifar10(tmp_path / "absent")
    write_cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_4").unlink()
    (tmp_path / "c" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4, test_batch"):
        D.cifar10(tmp_path / "c")
    write_cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="data_batch_3.*not a readable CIFAR-10 batch"):
        D.cifar10(tmp_path / "c")
    with open(tmp_path / "c" / "data_batch_3", "wb") as f:
        pickle.dump({b"labels": [0]}, f, protocol=2)
    with pytest.raises(ValueError, match="data_batch_3.*no b'data' entry"):
        D.cifar10(tmp_path / "c")
    with open(tmp_path / "c" / "data_batch_3", "wb") as f:
        pickle.dump({b"labels": [0], b"data": np.zeros((1, 3000), np.uint8)}, f, protocol=2)
    with pytest.raises(ValueError, match=r"shape \(N, 3072\)"):
        D.cifar10(tmp_path / "c")
    with open(tmp_path / "c" / "data_batch_3", "wb") as f:
        pickle.dump({b"labels": [10], b"data": np.zeros((1, 3072), np.uint8)}, f, protocol=2)
    with pytest.raises(ValueError, match="labels must be in 0-9"):
        D.cifar10(tmp_path / "c")

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    with open(tmp_path / "c" / "data_batch_3", "wb") as f:
        pickle.dump({b"labels": Evil(), b"data": np.zeros((1, 3072), np.uint8)}, f, protocol=2)
    with pytest.raises(ValueError, match="refusing to load"):
        D.cifar10(tmp_path / "c")


# ----------------------------------------------------------------------------- synthetic, registry, Dataset


def test_synthetic_rule_and_learnable_labels():
    ds = D.synthetic((4, 4, 1), num_train=2000, num_test=500, seed=0)
    # the documented rule, written out
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2500, 4, 4, 1), dtype=np.float32)
    w = rng.standard_normal((16, 10))
    np.testing.assert_array_equal(ds.x_train, x[:2000])
    np.testing.assert_array_equal(ds.y_test, np.argmax(x[2000:].reshape(500, 16) @ w, axis=1))
    # learnable: a least-squares linear classifier fit on the training part generalizes
    xt, xv = ds.x_train.reshape(2000, 16), ds.x_test.reshape(500, 16)
    coef = np.linalg.lstsq(xt, np.eye(10)[ds.y_train], rcond=None)[0]
    assert np.mean(np.argmax(xv @ coef, axis=1) == ds.y_test) > 0.7  # chance is 0.1
    assert len(np.unique(ds.y_train)) == 10


def test_synthetic_shapes_dtypes_and_registry():
    ds = D.load("Synthetic", input_shape=(6, 5, 4, 2), num_classes=3, num_train=8, num_test=4, dtype=jnp.bfloat16)
    assert ds.x_train.shape == (8, 6, 5, 4, 2) and ds.x_train.dtype == jnp.bfloat16
    assert ds.input_shape == (6, 5, 4, 2) and ds.num_classes == 3 and ds.y_train.max() < 3
    with pytest.raises(TypeError, match="floating dtype"):
        D.synthetic((4,), dtype=np.int32)
    assert D.list_datasets()[0] == "digits"
    assert set(D.list_datasets()) == {"digits", "mnist", "mnist1d", "cifar10", "synthetic"}
    with pytest.raises(ValueError, match="unknown data set 'imagenet'.*'digits', 'mnist'"):
        D.load("imagenet")


def test_dataset_validation_repr_and_channel_stats(rng):
    x = rng.standard_normal((6, 3, 3, 2)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2], np.int32)
    ds = D.Dataset(x[:4], y[:4], x[4:], y[4:], 3, "toy", "six random images")
    assert repr(ds).startswith("Dataset(name='toy', train=4, test=2, input_shape=(3, 3, 2)")
    mean, std = ds.channel_stats()
    np.testing.assert_allclose(mean, x[:4].reshape(-1, 2).mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, x[:4].reshape(-1, 2).std(0), rtol=1e-6)
    with pytest.raises(ValueError, match="x_train has 4 examples but y_train has 3"):
        D.Dataset(x[:4], y[:3], x[4:], y[4:], 3, "toy", "")
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        D.Dataset(x[:4], y[:4], x[4:], y[4:], 2, "toy", "")
    with pytest.raises(ValueError, match="int32"):
        D.Dataset(x[:4], y[:4].astype(np.int64), x[4:], y[4:], 3, "toy", "")
    with pytest.raises(ValueError, match="same per-example shape"):
        D.Dataset(x[:4], y[:4], x[4:, :2], y[4:], 3, "toy", "")


# ----------------------------------------------------------------------------- batching


def test_batches_cover_every_example_once_and_follow_the_documented_order():
    n, bs = 23, 5
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    y = np.arange(n, dtype=np.int32)
    for epoch in (0, 1):
        got = list(D.batches(x, y, bs, seed=4, epoch=epoch, drop_remainder=False))
        assert [len(b["y"]) for b in got] == [5, 5, 5, 5, 3] and len(got) == D.num_batches(n, bs, False)
        order = np.concatenate([b["y"] for b in got])
        np.testing.assert_array_equal(np.sort(order), y)  # each exactly once
        np.testing.assert_array_equal(order, np.random.default_rng((4, epoch)).permutation(n))
        np.testing.assert_array_equal(np.concatenate([b["x"] for b in got])[:, 0], order)
    first = np.concatenate([b["y"] for b in D.batches(x, y, bs, seed=4, epoch=0)])
    second = np.concatenate([b["y"] for b in D.batches(x, y, bs, seed=4, epoch=1)])
    assert not np.array_equal(first, second)
    again = np.concatenate([b["y"] for b in D.batches(x, y, bs, seed=4, epoch=1)])
    np.testing.assert_array_equal(second, again)


def test_batches_drop_remainder_both_ways_and_resume():
    x, y = np.zeros((10, 2), np.float32), np.arange(10, dtype=np.int32)
    dropped = list(D.batches(x, y, 4, seed=0))
    assert [len(b["y"]) for b in dropped] == [4, 4] and D.num_batches(10, 4) == 2
    perm = np.random.default_rng((0, 0)).permutation(10)
    np.testing.assert_array_equal(np.concatenate([b["y"] for b in dropped]), perm[:8])
    kept = list(D.batches(x, y, 4, shuffle=False, drop_remainder=False))
    assert [b["y"].tolist() for b in kept] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all("weight" not in b for b in kept)
    resumed = list(D.batches(x, y, 4, seed=0, start=1))
    np.testing.assert_array_equal(resumed[0]["y"], dropped[1]["y"])
    assert len(resumed) == 1


def test_batches_padding_weights():
    x = np.arange(1, 11, dtype=np.float32).reshape(10, 1, 1)
    y = np.arange(10, dtype=np.int32)
    got = list(D.batches(x, y, 4, shuffle=False, drop_remainder=False, pad_remainder=True))
    assert [b["x"].shape for b in got] == [(4, 1, 1)] * 3
    assert [b["weight"].tolist() for b in got] == [[1.0] * 4, [1.0] * 4, [1, 1, 0, 0]]
    assert got[2]["weight"].dtype == np.float32
    assert got[2]["x"][:, 0, 0].tolist() == [9.0, 10.0, 0.0, 0.0] and got[2]["y"].tolist() == [8, 9, 0, 0]
    # a weighted mean over the padded batches equals the plain mean over the data
    total = sum((b["weight"] * b["x"][:, 0, 0]).sum() for b in got) / sum(b["weight"].sum() for b in got)
    assert total == pytest.approx(x.mean())


def test_batches_errors_are_raised_at_the_call():
    x, y = np.zeros((10, 2), np.float32), np.zeros(10, np.int32)
    with pytest.raises(ValueError, match="needs drop_remainder=False"):
        D.batches(x, y, 4, pad_remainder=True)
    with pytest.raises(ValueError, match="batch_size 16 is larger than the 10 examples"):
        D.batches(x, y, 16)
    with pytest.raises(ValueError, match="same number of rows"):
        D.batches(x, y[:9], 4)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        D.batches(x, y, 0)
    with pytest.raises(TypeError, match="shuffle must be True or False"):
        D.batches(x, y, 4, shuffle="yes")


# ----------------------------------------------------------------------------- sharding and prefetch


def test_shard_batch_splits_rows_over_the_data_axis():
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()), ("data",))
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    y = np.arange(16, dtype=np.int32)
    out = D.shard_batch({"x": x, "y": y}, mesh)
    assert isinstance(out["x"], jax.Array) and out["x"].shape == (16, 3)
    for shard in out["x"].addressable_shards:
        assert shard.data.shape == (2, 3)
        k = list(mesh.devices).index(shard.device)
        np.testing.assert_array_equal(np.asarray(shard.data), x[2 * k : 2 * k + 2])
    assert all(s.data.shape == (2,) for s in out["y"].addressable_shards)
    with pytest.raises(ValueError, match=r"batch size 12 of \['x'\] is not divisible by the 8 devices"):
        D.shard_batch({"x": np.zeros((12, 3))}, mesh)
    with pytest.raises(ValueError, match="'batch' is not an axis of the mesh"):
        D.shard_batch({"x": x}, mesh, axis="batch")


def test_shard_batch_on_a_2d_mesh_and_from_a_named_sharding():
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    x = np.arange(6 * 5, dtype=np.float32).reshape(6, 5)
    out = D.shard_batch({"x": x}, mesh)
    for shard in out["x"].addressable_shards:  # 2 row blocks, replicated over "model"
        row = np.argwhere(mesh.devices == shard.device)[0][0]
        np.testing.assert_array_equal(np.asarray(shard.data), x[3 * row : 3 * row + 3])
    named = NamedSharding(mesh, PartitionSpec(("data", "model"), None))
    out = D.device_put_batch({"x": np.zeros((8, 5)), "y": np.zeros(8)}, named)
    assert {s.data.shape for s in out["y"].addressable_shards} == {(1,)}
    single = D.device_put_batch({"x": x})
    np.testing.assert_array_equal(np.asarray(single["x"]), x)


def test_prefetch_same_batches_in_order_and_sharded():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20, dtype=np.int32)
    expected = list(D.batches(x, y, 8, seed=1, drop_remainder=False))
    got = list(D.prefetch(D.batches(x, y, 8, seed=1, drop_remainder=False), size=2))
    assert len(got) == len(expected) == 3
    for g, e in zip(got, expected):
        assert isinstance(g["x"], jax.Array)
        np.testing.assert_array_equal(np.asarray(g["x"]), e["x"])
        np.testing.assert_array_equal(np.asarray(g["y"]), e["y"])
    mesh = Mesh(np.array(jax.devices()), ("data",))
    put = partial(D.shard_batch, sharding_or_mesh=mesh)
    sharded = list(D.prefetch(D.batches(x, y, 8, seed=1), size=1, put=put))
    assert {s.data.shape for s in sharded[0]["x"].addressable_shards} == {(1, 2)}
    np.testing.assert_array_equal(np.asarray(sharded[1]["y"]), expected[1]["y"])
    assert list(D.prefetch(range(5), put=None)) == [0, 1, 2, 3, 4]


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == THREAD_NAME and t.is_alive()]


def test_prefetch_propagates_errors_and_stops_cleanly():
    def source():
        yield 1
        yield 2
        raise RuntimeError("producer broke")

    it = D.prefetch(source(), put=None)
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(RuntimeError, match="producer broke"):
        next(it)
    assert not _prefetch_threads()

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = D.prefetch(endless(), size=2, put=None)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert not _prefetch_threads()
    assert len(produced) <= 3 + 2 + 1  # consumed + queue + the item in hand when stopped
    with pytest.raises(ValueError, match="size must be >= 1"):
        D.prefetch([], size=0)


# ----------------------------------------------------------------------------- augmentation


def test_random_flip_under_jit(rng):
    x = jnp.asarray(rng.standard_normal((32, 5, 6, 2)).astype(np.float32))
    flip = jax.jit(D.random_flip)
    out = np.asarray(flip(jax.random.key(0), x))
    xn = np.asarray(x)
    flipped = [np.array_equal(out[i], xn[i, :, ::-1]) for i in range(32)]
    kept = [np.array_equal(out[i], xn[i]) for i in range(32)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 4 <= sum(flipped) <= 28  # both happen (fixed key, Bernoulli(0.5) over 32 draws)
    np.testing.assert_array_equal(np.asarray(flip(jax.random.key(0), x)), out)  # same key
    assert not np.array_equal(np.asarray(flip(jax.random.key(1), x)), out)
    all_flipped = jax.jit(partial(D.random_flip, prob=1.0))(jax.random.key(3), x)
    np.testing.assert_array_equal(np.asarray(all_flipped), xn[:, :, ::-1])


def test_random_crop_is_a_window_of_the_zero_padded_image(rng):
    p = 2
    x = rng.standard_normal((16, 6, 7, 3)).astype(np.float32)
    crop = jax.jit(partial(D.random_crop, padding=p))
    out = np.asarray(crop(jax.random.key(5), jnp.asarray(x)))
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    offsets = []
    for i in range(16):
        matches = [
            (a, b)
            for a in range(2 * p + 1)
            for b in range(2 * p + 1)
            if np.array_equal(out[i], padded[i, a : a + 6, b : b + 7])
        ]
        assert len(matches) == 1, f"example {i} is not a window of its padded image"
        offsets.append(matches[0])
    assert len(set(offsets)) > 3  # per-example offsets, not one shift for the batch
    np.testing.assert_array_equal(np.asarray(crop(jax.random.key(5), jnp.asarray(x))), out)
    assert not np.array_equal(np.asarray(crop(jax.random.key(6), jnp.asarray(x))), out)
    identity = jax.jit(partial(D.random_crop, padding=0))(jax.random.key(1), jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(identity), x)


def test_random_crop_1d_per_dim_padding_and_vmap(rng):
    x = rng.standard_normal((4, 9, 1)).astype(np.float32)
    crop = jax.jit(lambda k: D.random_crop(k, jnp.asarray(x), (3,)))
    out = np.asarray(crop(jax.random.key(0)))
    padded = np.pad(x, ((0, 0), (3, 3), (0, 0)))
    for i in range(4):
        assert any(np.array_equal(out[i], padded[i, a : a + 9]) for a in range(7))
    # vmapped over several augmentation rounds: each round equals the direct call
    keys = jax.random.split(jax.random.key(2), 3)
    rounds = jax.jit(jax.vmap(crop))(keys)
    np.testing.assert_array_equal(np.asarray(rounds[1]), np.asarray(crop(keys[1])))
    with pytest.raises(ValueError, match="padding must be >= 0"):
        D.random_crop(jax.random.key(0), jnp.asarray(x), -1)
    with pytest.raises(TypeError, match="key must be a single PRNG key"):
        D.random_crop(0, jnp.asarray(x), 1)


def test_normalize_against_numpy(rng):
    x = rng.random((3, 4, 4, 3)).astype(np.float32)
    mean, std = np.array([0.1, 0.5, 0.9], np.float32), np.array([0.2, 0.25, 2.0], np.float32)
    out = jax.jit(D.normalize)(x, mean, std)
    expected = np.empty_like(x)
    for c in range(3):
        expected[..., c] = (x[..., c] - mean[c]) / std[c]
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(D.normalize(x, 0.5, 0.25)), (x - 0.5) / 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match="std must be positive"):
        D.normalize(x, mean, np.array([1.0, 0.0, 1.0], np.float32))
    with pytest.raises(ValueError, match=r"mean must have shape \(C,\) = \(3,\)"):
        D.normalize(x, np.zeros(2, np.float32), std)
