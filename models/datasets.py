"""MNIST and Fashion-MNIST from their IDX files.

Files are looked up in ``$ROBUSTCNN_DATA`` (either a ``<name>/`` sub-directory or the files
directly), then in ``/usr/share/datasets/<name>``, where Debian's ``dataset-fashion-mnist``
package installs them. Each split is two files, e.g. ``t10k-images-idx3-ubyte.gz`` and
``t10k-labels-idx1-ubyte.gz``, with or without ``.gz``.
"""

from __future__ import annotations

import os

import numpy as np

from .idx import read_idx

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
MNIST_CLASSES = tuple(str(d) for d in range(10))

# Known datasets -> class names, indexed by label.
DATASETS = {"fashion-mnist": FASHION_MNIST_CLASSES, "mnist": MNIST_CLASSES}

ENV_VAR = "ROBUSTCNN_DATA"
SYSTEM_DIR = "/usr/share/datasets"

# split -> (images file, labels file), without the optional ".gz".
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGE_SHAPE = (28, 28)
_NUM_CLASSES = 10


def data_dir(name: str) -> str:
    """Return the directory holding the files of dataset ``name``.

    Tried in order: ``$ROBUSTCNN_DATA/<name>``, ``$ROBUSTCNN_DATA`` itself, then
    ``/usr/share/datasets/<name>``. A directory qualifies if it holds at least one of the
    dataset's files (with or without ``.gz``); a missing split is reported when loading.
    Files placed directly in ``$ROBUSTCNN_DATA`` are found for every name, since MNIST and
    Fashion-MNIST use the same file names: use sub-directories to keep both.

    Raises
    ------
    FileNotFoundError
        If no place holds the files; the message lists the places tried and how to fix it.
    ValueError
        If ``name`` is not a plain directory name.
    """
    return _locate(name)


def _locate(name: str) -> str:
    # data_dir's body; load_mnist_like's argument of the same name shadows data_dir.
    _check_name(name)
    root = os.environ.get(ENV_VAR)
    places = [os.path.join(root, name), root] if root else []
    places.append(os.path.join(SYSTEM_DIR, name))
    for place in places:
        if _has_files(place):
            return place
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
        If ``split`` is unknown, or the files are malformed or inconsistent (wrong type
        or shape, different counts, labels >= 10); the message names the files.
    """
    if split not in _FILES:
        raise ValueError(f"{name}: unknown split {split!r} (expected 'train' or 'test')")
    if data_dir is None:
        directory = _locate(name)
    else:
        _check_name(name)
        directory = os.fspath(data_dir)
        sub = os.path.join(directory, name)
        if _has_files(sub):
            directory = sub
        elif not os.path.isdir(directory):
            raise FileNotFoundError(f"{directory}: data directory does not exist")

    images_path, labels_path = (_find_file(directory, f, name) for f in _FILES[split])
    images, labels = read_idx(images_path), read_idx(labels_path)

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

    Returns ``(images, labels)`` as :func:`load_mnist_like` does; class names are
    ``DATASETS[name][label]``.

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists the known names), or as
        :func:`load_mnist_like`.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(sorted(DATASETS))})")
    # Every known dataset is MNIST-shaped today; a differently shaped one gets its own loader.
    return load_mnist_like(name, split, data_dir)


def _check_name(name: str) -> None:
    # The name becomes a path component: refuse anything that could leave the directory.
    if not isinstance(name, str) or name in ("", ".", "..") or os.path.basename(name) != name:
        raise ValueError(f"bad dataset name {name!r} (expected a plain name like 'mnist')")


def _has_files(directory: str) -> bool:
    return any(
        os.path.isfile(os.path.join(directory, base + ext))
        for pair in _FILES.values()
        for base in pair
        for ext in (".gz", "")
    )


def _find_file(directory: str, base: str, name: str) -> str:
    for ext in (".gz", ""):
        path = os.path.join(directory, base + ext)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{os.path.join(directory, base)}[.gz]: file not found. " + _fix_hint(name)
    )


def _fix_hint(name: str) -> str:
    install = ""
    if name == "fashion-mnist":
        install = "install them with 'apt-get install dataset-fashion-mnist', or "
    return (
        f"To fix: {install}set ${ENV_VAR} to a directory holding the files "
        f"(or a '{name}/' sub-directory with them), or pass data_dir=."
    )
