"""MNIST and Fashion-MNIST from their IDX files, CIFAR-10 from its binary version, and
scikit-learn's handwritten digits (``"digits"``, upsampled to 28×28: ``models/digits.py``).

Files are looked up in ``$ROBUSTCNN_DATA`` (either a ``<name>/`` sub-directory or the files
directly), then in ``/usr/share/datasets/<name>``, where Debian's ``dataset-fashion-mnist``
package installs them.

- MNIST, Fashion-MNIST: each split is two files, e.g. ``t10k-images-idx3-ubyte.gz`` and
  ``t10k-labels-idx1-ubyte.gz``, with or without ``.gz``.
- CIFAR-10 (``"cifar-10"``): the "binary version" of https://www.cs.toronto.edu/~kriz/cifar.html,
  as the ``.bin`` files themselves, the ``cifar-10-batches-bin/`` directory holding them, or the
  downloaded ``cifar-10-binary.tar.gz`` (read in place, never extracted). Train is
  ``data_batch_1.bin`` … ``data_batch_5.bin`` in that order, test is ``test_batch.bin``; each
  record is 1 label byte then 3,072 pixel bytes (the red, green, blue planes, each 32×32
  row-major). The Python version (``cifar-10-batches-py``) is refused: robustcnn never
  unpickles data files.
- digits: read from the scikit-learn package (its ``digits`` extra), not from files: a
  ``data_dir`` is not used.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib

import numpy as np

from .. import limits
from .digits import DIGITS, load_digits_split
from .idx import read_idx

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

# Known datasets -> class names, indexed by label.
DATASETS = {
    "cifar-10": CIFAR10_CLASSES,
    DIGITS: MNIST_CLASSES,
    "fashion-mnist": FASHION_MNIST_CLASSES,
    "mnist": MNIST_CLASSES,
}

ENV_VAR = "ROBUSTCNN_DATA"
SYSTEM_DIR = "/usr/share/datasets"

# split -> (images file, labels file), without the optional ".gz".
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGE_SHAPE = (28, 28)
_NUM_CLASSES = 10

CIFAR10 = "cifar-10"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
# split -> batch files, read and concatenated in this order.
_CIFAR_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
_CIFAR_DIR = "cifar-10-batches-bin"  # the tarball's top directory
_CIFAR_TARBALL = "cifar-10-binary.tar.gz"
_CIFAR_SHAPE = (3, 32, 32)
_CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte + red, green, blue planes: 3,073 bytes
# Names of the Python (pickled) version, which is refused.
_CIFAR_PICKLED = ("cifar-10-python.tar.gz", "cifar-10-batches-py", "data_batch_1", "batches.meta")


def input_shape(name: str) -> tuple[int, int, int]:
    """The (C, H, W) shape of one image of the known dataset ``name``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(sorted(DATASETS))})")
    return _CIFAR_SHAPE if name == CIFAR10 else (1, *_IMAGE_SHAPE)


def data_dir(name: str) -> str:
    """Return the directory holding the files of dataset ``name``.

    Tried in order: ``$ROBUSTCNN_DATA/<name>``, ``$ROBUSTCNN_DATA`` itself, then
    ``/usr/share/datasets/<name>``. A directory qualifies if it holds at least one of the
    dataset's files (with or without ``.gz``; for CIFAR-10 a ``.bin`` batch, directly or in
    ``cifar-10-batches-bin/``, or ``cifar-10-binary.tar.gz``); a missing split is reported
    when loading. MNIST files placed directly in ``$ROBUSTCNN_DATA`` are found for both
    ``"mnist"`` and ``"fashion-mnist"``, which use the same file names: use sub-directories
    to keep both. CIFAR-10's files have names of their own.

    Raises
    ------
    FileNotFoundError
        If no place holds the files; the message lists the places tried and how to fix it.
    ValueError
        If ``name`` is not a plain directory name, or is ``"digits"`` (no files: its images
        ship with scikit-learn).
    """
    return _locate(name)


def _locate(name: str) -> str:
    # data_dir's body; load_mnist_like's argument of the same name shadows data_dir.
    _check_name(name)
    if name == DIGITS:
        raise ValueError(f"{name}: has no data directory: its images ship with scikit-learn "
                         f"(load it with load_dataset)")
    root = os.environ.get(ENV_VAR)
    places = [os.path.join(root, name), root] if root else []
    places.append(os.path.join(SYSTEM_DIR, name))
    for place in places:
        if _has_files(place, name):
            return place
    if name == CIFAR10:
        for place in places:
            _refuse_pickled(place)
    tried = ", ".join(places if root else [f"${ENV_VAR} (not set)"] + places)
    raise FileNotFoundError(f"{name}: dataset files not found; tried {tried}. {_fix_hint(name)}")


def load_mnist_like(
    name: str = "fashion-mnist", split: str = "train", data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of an MNIST-format dataset.

    Parameters
    ----------
    name : str
        Dataset name, used to find the files (``"fashion-mnist"`` or ``"mnist"``).
    split : {"train", "test"}
        Which split; "test" reads the ``t10k-*`` files.
    data_dir : str or os.PathLike, optional
        Directory holding the files, or holding a ``<name>/`` sub-directory with them.
        Default: see :func:`data_dir`.

    Returns
    -------
    images : np.ndarray
        float32, shape (N, 1, 28, 28), pixel values scaled from 0..255 to [0, 1].
    labels : np.ndarray
        int64, shape (N,), values 0..9.

    Raises
    ------
    FileNotFoundError
        If the directory or a file of the split is missing.
    ValueError
        If ``split`` is unknown, ``name`` is ``"cifar-10"`` (see :func:`load_cifar10`), or
        the files are malformed or inconsistent (wrong type or shape, different counts,
        labels >= 10); the message names the files.
    """
    if name in (CIFAR10, DIGITS):
        loader = "load_cifar10" if name == CIFAR10 else "load_digits_split"
        raise ValueError(f"{name}: not an MNIST-format dataset; use {loader} or load_dataset")
    if split not in _FILES:
        raise ValueError(f"{name}: unknown split {split!r} (expected 'train' or 'test')")
    directory = _directory(name, data_dir)

    images_path, labels_path = (_find_file(directory, f, name) for f in _FILES[split])
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim and images.shape[0] == 0:
        raise ValueError(f"{images_path}: holds no images (an empty {split} split)")

    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != _IMAGE_SHAPE:
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (N, 28, 28), "
            f"found {images.dtype} of shape {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{labels_path}: expected uint8 labels of shape (N,), "
            f"found {labels.dtype} of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels"
        )
    if labels.size and labels.max() >= _NUM_CLASSES:
        bad = int(np.argmax(labels >= _NUM_CLASSES))
        raise ValueError(
            f"{labels_path}: label {labels[bad]} at index {bad} is out of range "
            f"(expected 0..{_NUM_CLASSES - 1})"
        )

    x = images.astype(np.float32).reshape(len(images), 1, *_IMAGE_SHAPE)
    x /= 255.0  # exact at both ends: 0/255 == 0 and 255/255 == 1 in float32
    return x, labels.astype(np.int64)


def load_dataset(
    name: str, split: str = "train", data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load a split of a known dataset (a key of ``DATASETS``) by name.

    Returns ``(images, labels)`` as :func:`load_cifar10` (for ``"cifar-10"``),
    ``digits.load_digits_split`` (for ``"digits"``, which ships with scikit-learn and ignores
    ``data_dir``) or :func:`load_mnist_like` (the others) does: float32 images (N, C, H, W) in
    [0, 1] and int64 labels; class names are ``DATASETS[name][label]``.

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists the known names), or as the loader.
    FileNotFoundError
        As the loader.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(sorted(DATASETS))})")
    if name == CIFAR10:
        return load_cifar10(split, data_dir)
    if name == DIGITS:
        return load_digits_split(split)
    return load_mnist_like(name, split, data_dir)


def load_cifar10(
    split: str = "train", data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of CIFAR-10 from its binary version.

    Parameters
    ----------
    split : {"train", "test"}
        "train" is ``data_batch_1.bin`` … ``data_batch_5.bin`` concatenated in that order;
        "test" is ``test_batch.bin``.
    data_dir : str or os.PathLike, optional
        Directory holding the ``.bin`` files, the ``cifar-10-batches-bin/`` directory with
        them, or ``cifar-10-binary.tar.gz`` (tried in that order; the first layout found is
        used), or a ``cifar-10/`` sub-directory holding one of these; or the path of the
        tarball itself. The tarball's members are read by name, regular files only,
        without extracting anything to disk. Default: see :func:`data_dir`.

    Returns
    -------
    images : np.ndarray
        float32, shape (N, 3, 32, 32), channels red, green, blue, pixel values scaled from
        0..255 to [0, 1].
    labels : np.ndarray
        int64, shape (N,), values 0..9 (names in ``CIFAR10_CLASSES``).

    Raises
    ------
    FileNotFoundError
        If the directory or a batch of the split is missing (the message names which), or
        only the Python (pickled) version is there: robustcnn never unpickles data files,
        download the binary version instead.
    ValueError
        If ``split`` is unknown, or a batch is malformed: its size is not a positive multiple
        of 3,073 bytes (truncated, or not a CIFAR-10 binary batch), a label byte is above 9,
        or the tarball is unreadable or holds a batch that is not a regular file; the
        message names the file.
    """
    name = CIFAR10
    if split not in _CIFAR_FILES:
        raise ValueError(f"{name}: unknown split {split!r} (expected 'train' or 'test')")
    files = _CIFAR_FILES[split]
    if data_dir is not None and os.path.isfile(data_dir):
        where, layout = os.fspath(data_dir), "tar"  # the tarball itself
        _refuse_pickled(os.path.dirname(where) or ".", where)
    else:
        directory = _directory(name, data_dir)
        found = _cifar_layout(directory)
        if found is None:
            _refuse_pickled(directory)
            raise FileNotFoundError(
                f"{directory}: no CIFAR-10 binary batches ({', '.join(files)}), "
                f"'{_CIFAR_DIR}/' or '{_CIFAR_TARBALL}' found. " + _fix_hint(name)
            )
        where, layout = found

    if layout == "tar":
        chunks = _read_cifar_tar(where, files)
    else:
        paths = [os.path.join(where, f) for f in files]
        missing = [f for f, path in zip(files, paths) if not os.path.isfile(path)]
        if missing:
            raise FileNotFoundError(
                f"{where}: missing CIFAR-10 batch file(s) {', '.join(missing)} of the "
                f"{split} split. " + _fix_hint(name)
            )
        for path in paths:
            _check_cifar_size(path, os.path.getsize(path))
        chunks = [(path, np.fromfile(path, dtype=np.uint8)) for path in paths]

    n = sum(len(data) // _CIFAR_RECORD for _, data in chunks)
    x = np.empty((n, *_CIFAR_SHAPE), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    start = 0
    for path, data in chunks:
        _check_cifar_size(path, len(data))  # the file may have changed since its size was read
        records = data.reshape(-1, _CIFAR_RECORD)
        labels = records[:, 0]
        if labels.max() >= _NUM_CLASSES:
            bad = int(np.argmax(labels >= _NUM_CLASSES))
            raise ValueError(
                f"{path}: label {labels[bad]} of record {bad} is out of range "
                f"(expected 0..{_NUM_CLASSES - 1}); not a CIFAR-10 binary batch?"
            )
        stop = start + len(records)
        x[start:stop] = records[:, 1:].reshape(-1, *_CIFAR_SHAPE)
        y[start:stop] = labels
        start = stop
    x /= 255.0  # exact at both ends: 0/255 == 0 and 255/255 == 1 in float32
    return x, y


def _check_name(name: str) -> None:
    # The name becomes a path component: refuse anything that could leave the directory.
    if not isinstance(name, str) or name in ("", ".", "..") or os.path.basename(name) != name:
        raise ValueError(f"bad dataset name {name!r} (expected a plain name like 'mnist')")


def _directory(name: str, data_dir: str | os.PathLike | None) -> str:
    # The directory to read: data_dir, or its <name>/ sub-directory if that holds files;
    # without data_dir, data_dir(name).
    if data_dir is None:
        return _locate(name)
    _check_name(name)
    directory = os.fspath(data_dir)
    sub = os.path.join(directory, name)
    if _has_files(sub, name):
        return sub
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: data directory does not exist")
    return directory


def _has_files(directory: str, name: str) -> bool:
    if name == CIFAR10:
        return _cifar_layout(directory) is not None
    return any(
        os.path.isfile(os.path.join(directory, base + ext))
        for pair in _FILES.values()
        for base in pair
        for ext in (".gz", "")
    )


def _cifar_layout(directory: str) -> tuple[str, str] | None:
    # (where, "dir") for a directory holding at least one batch, (tarball, "tar"), or None.
    batches = [f for files in _CIFAR_FILES.values() for f in files]
    for where in (directory, os.path.join(directory, _CIFAR_DIR)):
        if any(os.path.isfile(os.path.join(where, f)) for f in batches):
            return where, "dir"
    tarball = os.path.join(directory, _CIFAR_TARBALL)
    return (tarball, "tar") if os.path.isfile(tarball) else None


def _refuse_pickled(directory: str, path: str | None = None) -> None:
    # Raise if `path` is, or `directory`, its cifar-10/ sub-directory or their
    # cifar-10-batches-py/ hold, the Python version.
    places = [directory, os.path.join(directory, CIFAR10)]
    places += [os.path.join(p, "cifar-10-batches-py") for p in places]
    candidates = [path] if path else [os.path.join(p, f) for p in places for f in _CIFAR_PICKLED]
    for candidate in candidates:
        if os.path.basename(candidate) in _CIFAR_PICKLED and os.path.exists(candidate):
            raise FileNotFoundError(
                f"{candidate}: this is CIFAR-10's Python (pickled) version, which robustcnn "
                f"does not read (it never unpickles data files). Download the binary version, "
                f"'{_CIFAR_TARBALL}' (\"CIFAR-10 binary version (suitable for C programs)\" "
                f"at {CIFAR10_URL}), and point data_dir or ${ENV_VAR} at the directory "
                f"holding it."
            )


def _check_cifar_size(path: str, size: int) -> None:
    limits.check_bytes(path, "the batch", size, None)  # before reading it (a tar member too)
    if size == 0 or size % _CIFAR_RECORD:
        raise ValueError(
            f"{path}: size {size} bytes is not a positive multiple of {_CIFAR_RECORD:,} "
            f"(1 label byte + 3,072 pixel bytes per record); the file is truncated or not "
            f"a CIFAR-10 binary batch"
        )


def _read_cifar_tar(tarball: str, files: tuple[str, ...]) -> list[tuple[str, np.ndarray]]:
    # The members cifar-10-batches-bin/<file>, read in one pass over the archive (a gzip
    # stream is cheap to read forwards only). Nothing is extracted to disk.
    wanted = {f"{_CIFAR_DIR}/{f}": f for f in files}
    data = {}
    try:
        with tarfile.open(tarball, "r:*") as tar:
            for member in tar:
                if member.name not in wanted:
                    continue
                where = f"{tarball}:{member.name}"
                if not member.isfile():
                    raise ValueError(f"{where}: not a regular file in the archive")
                _check_cifar_size(where, member.size)
                data[member.name] = np.frombuffer(tar.extractfile(member).read(), np.uint8)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise ValueError(f"{tarball}: not a readable tar archive "
                         f"({limits.one_line(e)})") from e
    missing = [f for member, f in wanted.items() if member not in data]
    if missing:
        raise FileNotFoundError(
            f"{tarball}: missing CIFAR-10 batch member(s) "
            f"{', '.join(f'{_CIFAR_DIR}/{f}' for f in missing)}. " + _fix_hint(CIFAR10)
        )
    return [(f"{tarball}:{member}", data[member]) for member in wanted]


def _find_file(directory: str, base: str, name: str) -> str:
    for ext in (".gz", ""):
        path = os.path.join(directory, base + ext)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{os.path.join(directory, base)}[.gz]: file not found. " + _fix_hint(name)
    )


def _fix_hint(name: str) -> str:
    if name == CIFAR10:
        return (
            f"To fix: download '{_CIFAR_TARBALL}' (the binary version) from {CIFAR10_URL}, "
            f"then set ${ENV_VAR} to a directory holding it, its '{_CIFAR_DIR}/' directory "
            f"or the .bin files (or a '{name}/' sub-directory with one of these), or pass "
            f"data_dir=."
        )
    install = ""
    if name == "fashion-mnist":
        install = "install them with 'apt-get install dataset-fashion-mnist', or "
    return (
        f"To fix: {install}set ${ENV_VAR} to a directory holding the files "
        f"(or a '{name}/' sub-directory with them), or pass data_dir=."
    )
