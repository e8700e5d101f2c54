"""Tests for robustcnn.models.datasets on small synthetic IDX files and the real Fashion-MNIST."""

import os

import numpy as np
import pytest

from robustcnn.models import datasets
from robustcnn.models.datasets import (
    DATASETS,
    data_dir,
    load_dataset,
    load_mnist_like,
)
from robustcnn.models.idx import write_idx

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
REAL = "/usr/share/datasets/fashion-mnist"


def make_split(directory, split="train", n=12, gz=True, images=None, labels=None, seed=0):
    """Write a synthetic split into ``directory``; return the uint8 images and labels."""
    rng = np.random.default_rng(seed)
    if images is None:
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255  # both ends of the range
    if labels is None:
        labels = (np.arange(n) % 10).astype(np.uint8)
    os.makedirs(directory, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(os.path.join(directory, FILES[split][0] + ext), images, gzip=gz)
    write_idx(os.path.join(directory, FILES[split][1] + ext), labels, gzip=gz)
    return images, labels


def check_loaded(x, y, images, labels):
    n = len(images)
    assert x.shape == (n, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0], images / 255.0, rtol=0, atol=1e-7)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert y.tolist() == labels.tolist()


@pytest.fixture
def no_system_data(tmp_path, monkeypatch):
    """Isolate from the machine: no $ROBUSTCNN_DATA, an empty system directory."""
    monkeypatch.delenv("ROBUSTCNN_DATA", raising=False)
    empty = tmp_path / "system"
    empty.mkdir()
    monkeypatch.setattr(datasets, "SYSTEM_DIR", str(empty))
    return empty


# --- loading -------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_via_data_dir(tmp_path, no_system_data, split, gz):
    images, labels = make_split(tmp_path / "d", split, gz=gz)
    x, y = load_mnist_like("fashion-mnist", split, data_dir=tmp_path / "d")
    check_loaded(x, y, images, labels)


def test_data_dir_argument_may_hold_a_name_subdirectory(tmp_path, no_system_data):
    images, labels = make_split(tmp_path / "mnist", "test")
    x, y = load_mnist_like("mnist", "test", data_dir=tmp_path)
    check_loaded(x, y, images, labels)


def test_load_via_env_var_subdirectory(tmp_path, no_system_data, monkeypatch):
    fashion = make_split(tmp_path / "fashion-mnist", "test", seed=1)
    digits = make_split(tmp_path / "mnist", "test", seed=2)
    monkeypatch.setenv("ROBUSTCNN_DATA", str(tmp_path))
    assert data_dir("fashion-mnist") == str(tmp_path / "fashion-mnist")
    check_loaded(*load_mnist_like("fashion-mnist", "test"), *fashion)
    check_loaded(*load_dataset("mnist", "test"), *digits)


def test_load_via_env_var_files_directly(tmp_path, no_system_data, monkeypatch):
    images, labels = make_split(tmp_path, "train", gz=False)
    monkeypatch.setenv("ROBUSTCNN_DATA", str(tmp_path))
    assert data_dir("mnist") == str(tmp_path)
    check_loaded(*load_dataset("mnist", "train"), images, labels)


def test_env_var_without_files_falls_back_to_system_dir(tmp_path, no_system_data, monkeypatch):
    monkeypatch.setenv("ROBUSTCNN_DATA", str(tmp_path / "elsewhere"))
    make_split(no_system_data / "fashion-mnist", "test")
    assert data_dir("fashion-mnist") == str(no_system_data / "fashion-mnist")


def test_gz_and_raw_may_be_mixed(tmp_path, no_system_data):
    images, labels = make_split(tmp_path, "test", gz=True)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, gzip=False)
    check_loaded(*load_mnist_like("mnist", "test", data_dir=tmp_path), images, labels)


def test_gzipped_file_without_gz_suffix(tmp_path, no_system_data):
    images, labels = make_split(tmp_path, "test", gz=True)
    os.rename(tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-images-idx3-ubyte")
    check_loaded(*load_mnist_like("mnist", "test", data_dir=tmp_path), images, labels)


def test_class_names():
    assert sorted(DATASETS) == ["fashion-mnist", "mnist"]
    assert DATASETS["fashion-mnist"][0] == "T-shirt/top"
    assert DATASETS["fashion-mnist"][9] == "Ankle boot"
    assert DATASETS["mnist"] == tuple("0123456789")
    assert all(len(names) == 10 for names in DATASETS.values())


# --- errors --------------------------------------------------------------------------------


def test_nothing_found_says_where_and_how(no_system_data):
    with pytest.raises(FileNotFoundError) as info:
        data_dir("fashion-mnist")
    msg = str(info.value)
    assert "ROBUSTCNN_DATA" in msg and str(no_system_data / "fashion-mnist") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "data_dir" in msg


def test_nothing_found_lists_env_places(tmp_path, no_system_data, monkeypatch):
    monkeypatch.setenv("ROBUSTCNN_DATA", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("mnist", "test")
    assert str(tmp_path / "data" / "mnist") in str(info.value)


def test_missing_split_names_the_file(tmp_path, no_system_data):
    make_split(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist_like("mnist", "test", data_dir=tmp_path)


def test_missing_data_dir_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist_like("mnist", "test", data_dir=tmp_path / "nope")


BAD_SPLITS = {
    "float images": (dict(images=np.zeros((3, 28, 28), np.float32)), "images", "float32"),
    "2-D images": (dict(images=np.zeros((3, 784), np.uint8)), "images", "(3, 784)"),
    "27-wide images": (dict(images=np.zeros((3, 28, 27), np.uint8)), "images", "(3, 28, 27)"),
    "int32 labels": (dict(labels=np.zeros(3, np.int32)), "labels", "int32"),
    "2-D labels": (dict(labels=np.zeros((3, 1), np.uint8)), "labels", "(3, 1)"),
    "count mismatch": (dict(labels=np.zeros(4, np.uint8)), "images", "4 labels"),
    "label 10": (dict(labels=np.array([0, 10, 3], np.uint8)), "labels", "label 10 at index 1"),
}


@pytest.mark.parametrize("case", list(BAD_SPLITS))
def test_bad_files_name_the_file(tmp_path, case):
    kwargs, which, fragment = BAD_SPLITS[case]
    kwargs.setdefault("images", np.zeros((3, 28, 28), np.uint8))
    kwargs.setdefault("labels", np.zeros(3, np.uint8))
    make_split(tmp_path, "test", **kwargs)
    with pytest.raises(ValueError) as info:
        load_mnist_like("mnist", "test", data_dir=tmp_path)
    msg = str(info.value)
    assert f"t10k-{which}-idx" in msg and fragment in msg


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match="'cifar10'.*fashion-mnist, mnist"):
        load_dataset("cifar10", "test")


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="'validation'.*'train' or 'test'"):
        load_mnist_like("mnist", "validation", data_dir=tmp_path)


@pytest.mark.parametrize("name", ["", "..", "a/b"])
def test_bad_name(name):
    with pytest.raises(ValueError, match="bad dataset name"):
        data_dir(name)


# --- the real data -------------------------------------------------------------------------


@pytest.mark.skipif(
    not os.path.isdir(REAL),
    reason=f"{REAL} not found (apt-get install dataset-fashion-mnist to run this test)",
)
def test_real_fashion_mnist_test_split():
    x, y = load_mnist_like("fashion-mnist", "test", data_dir=REAL)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert y.dtype == np.int64
    assert np.bincount(y, minlength=10).tolist() == [1000] * 10
