"""Tests for robustcnn.models.datasets on small synthetic IDX and CIFAR-10 binary files, and the
real Fashion-MNIST."""

import io
import os
import tarfile

import numpy as np
import pytest

from robustcnn.models import datasets
from robustcnn.models.datasets import (
    DATASETS,
    data_dir,
    load_cifar10,
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
    assert sorted(DATASETS) == ["cifar-10", "digits", "fashion-mnist", "mnist"]
    assert DATASETS["fashion-mnist"][0] == "T-shirt/top"
    assert DATASETS["fashion-mnist"][9] == "Ankle boot"
    assert DATASETS["mnist"] == tuple("0123456789")
    assert DATASETS["cifar-10"] == (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
    )
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
    with pytest.raises(ValueError, match="'cifar10'.*cifar-10, digits, fashion-mnist, mnist"):
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


# --- CIFAR-10, binary version --------------------------------------------------------------

CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = ("test_batch.bin",)
CIFAR_LAYOUTS = ("flat", "nested", "tar")


def cifar_batch(n=20, seed=0):
    """Random images (n, 3, 32, 32) and labels of one batch: labels cycle from ``seed`` so
    that each batch starts differently; the first image holds 0 and 255."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    images[0, 0, 0, 0], images[0, 2, 31, 31] = 0, 255
    labels = ((np.arange(n) + seed) % 10).astype(np.uint8)
    return images, labels


def cifar_bytes(images, labels):
    """The binary format, spelled out: per record the label, then the red, green and blue
    planes, each row by row."""
    out = bytearray()
    for image, label in zip(images, labels):
        out.append(int(label))
        for plane in image:
            for row in plane:
                out += bytes(row.tolist())
    return bytes(out)


def write_cifar(root, layout="flat", n=20, blobs=None, skip=()):
    """Write the six batches (``blobs`` overrides a file's bytes, ``skip`` leaves files out)
    in one layout under ``root``: the files, a ``cifar-10-batches-bin/`` directory, or
    ``cifar-10-binary.tar.gz``. Returns {file: (images, labels)}."""
    blobs = dict(blobs or {})
    batches = {}
    for seed, f in enumerate(CIFAR_TRAIN + CIFAR_TEST):
        batches[f] = cifar_batch(n, seed)
        blobs.setdefault(f, cifar_bytes(*batches[f]))
    blobs["batches.meta.txt"] = "\n".join(DATASETS["cifar-10"]).encode() + b"\n"
    blobs = {f: b for f, b in blobs.items() if f not in skip}
    os.makedirs(root, exist_ok=True)
    if layout == "tar":
        with tarfile.open(os.path.join(root, "cifar-10-binary.tar.gz"), "w:gz") as tar:
            for f, blob in blobs.items():
                info = tarfile.TarInfo(f"cifar-10-batches-bin/{f}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    else:
        where = os.path.join(root, "cifar-10-batches-bin") if layout == "nested" else root
        os.makedirs(where, exist_ok=True)
        for f, blob in blobs.items():
            with open(os.path.join(where, f), "wb") as out:
                out.write(blob)
    return batches


def expected_cifar(batches, split):
    files = CIFAR_TRAIN if split == "train" else CIFAR_TEST
    images = np.concatenate([batches[f][0] for f in files])
    labels = np.concatenate([batches[f][1] for f in files])
    return images, labels


def check_cifar(x, y, images, labels):
    n = len(images)
    assert x.shape == (n, 3, 32, 32) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    np.testing.assert_allclose(x, images / 255.0, rtol=0, atol=1e-7)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0  # exact at both ends
    assert y.tolist() == labels.tolist()


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("layout", CIFAR_LAYOUTS)
def test_cifar_layouts(tmp_path, no_system_data, layout, split):
    batches = write_cifar(tmp_path, layout)
    x, y = load_dataset("cifar-10", split, data_dir=tmp_path)
    check_cifar(x, y, *expected_cifar(batches, split))
    assert len(y) == (100 if split == "train" else 20)


def test_cifar_train_is_the_five_batches_in_order(tmp_path, no_system_data):
    batches = write_cifar(tmp_path)
    x, y = load_cifar10("train", data_dir=tmp_path)
    for i, f in enumerate(CIFAR_TRAIN):
        images, labels = batches[f]
        assert y[20 * i:20 * (i + 1)].tolist() == labels.tolist()
        np.testing.assert_allclose(x[20 * i:20 * (i + 1)], images / 255.0, rtol=0, atol=1e-7)


def test_cifar_channel_order_and_row_major(tmp_path, no_system_data):
    # One record, by byte offset: red (row 0, col 5), green (row 2, col 0), blue (row 31, col 31).
    record = np.zeros(3073, np.uint8)
    record[0] = 7
    record[1 + 5] = 255
    record[1 + 1024 + 2 * 32] = 128
    record[1 + 2048 + 31 * 32 + 31] = 1
    write_cifar(tmp_path, blobs={"test_batch.bin": record.tobytes()})
    x, y = load_cifar10("test", data_dir=tmp_path)
    assert x.shape == (1, 3, 32, 32) and y.tolist() == [7]
    assert x[0, 0, 0, 5] == 1.0
    np.testing.assert_allclose(x[0, 1, 2, 0], 128 / 255, rtol=1e-7)
    np.testing.assert_allclose(x[0, 2, 31, 31], 1 / 255, rtol=1e-7)
    assert np.count_nonzero(x) == 3


def test_cifar_via_env_var_and_system_dir(tmp_path, no_system_data, monkeypatch):
    make_split(tmp_path / "data", "test")  # MNIST files directly in the root: not CIFAR-10's
    batches = write_cifar(tmp_path / "data" / "cifar-10", "tar")
    monkeypatch.setenv("ROBUSTCNN_DATA", str(tmp_path / "data"))
    assert data_dir("cifar-10") == str(tmp_path / "data" / "cifar-10")
    check_cifar(*load_dataset("cifar-10", "test"), *expected_cifar(batches, "test"))

    monkeypatch.setenv("ROBUSTCNN_DATA", str(tmp_path / "elsewhere"))
    batches = write_cifar(no_system_data / "cifar-10", "nested")
    assert data_dir("cifar-10") == str(no_system_data / "cifar-10")
    check_cifar(*load_dataset("cifar-10", "train"), *expected_cifar(batches, "train"))


def test_cifar_files_directly_in_env_var_are_not_mnist(tmp_path, no_system_data, monkeypatch):
    batches = write_cifar(tmp_path, "nested")
    monkeypatch.setenv("ROBUSTCNN_DATA", str(tmp_path))
    assert data_dir("cifar-10") == str(tmp_path)
    check_cifar(*load_dataset("cifar-10", "test"), *expected_cifar(batches, "test"))
    with pytest.raises(FileNotFoundError, match="dataset files not found"):
        data_dir("mnist")


def test_cifar_data_dir_may_hold_a_name_subdirectory_or_be_the_tarball(tmp_path, no_system_data):
    batches = write_cifar(tmp_path / "cifar-10", "flat")
    check_cifar(*load_cifar10("test", data_dir=tmp_path), *expected_cifar(batches, "test"))
    batches = write_cifar(tmp_path / "t", "tar", n=3)
    x, y = load_cifar10("test", data_dir=tmp_path / "t" / "cifar-10-binary.tar.gz")
    check_cifar(x, y, *expected_cifar(batches, "test"))


def test_cifar_tarball_is_not_extracted(tmp_path, monkeypatch):
    write_cifar(tmp_path / "d", "tar")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    load_cifar10("train", data_dir=tmp_path / "d")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["cifar-10-binary.tar.gz", "cwd", "d"]


# --- CIFAR-10 errors -----------------------------------------------------------------------


@pytest.mark.parametrize("layout", CIFAR_LAYOUTS)
def test_cifar_truncated_batch(tmp_path, layout):
    good = cifar_bytes(*cifar_batch())
    write_cifar(tmp_path, layout, blobs={"data_batch_3.bin": good[:-5]})
    load_cifar10("test", data_dir=tmp_path)  # the test split does not read the train batches
    with pytest.raises(ValueError) as info:
        load_cifar10("train", data_dir=tmp_path)
    msg = str(info.value)
    assert "data_batch_3.bin" in msg and f"size {len(good) - 5} bytes" in msg
    assert "3,073" in msg and "truncated" in msg


def test_cifar_empty_batch(tmp_path):
    write_cifar(tmp_path, blobs={"test_batch.bin": b""})
    with pytest.raises(ValueError, match="test_batch.bin: size 0 bytes is not a positive"):
        load_cifar10("test", data_dir=tmp_path)


@pytest.mark.parametrize("layout", CIFAR_LAYOUTS)
def test_cifar_label_out_of_range(tmp_path, layout):
    images, labels = cifar_batch(seed=2)
    labels[7] = 10
    write_cifar(tmp_path, layout, blobs={"data_batch_3.bin": cifar_bytes(images, labels)})
    with pytest.raises(ValueError, match=r"data_batch_3\.bin: label 10 of record 7 is out of"):
        load_cifar10("train", data_dir=tmp_path)


@pytest.mark.parametrize("layout", CIFAR_LAYOUTS)
def test_cifar_missing_batches_are_named(tmp_path, layout):
    write_cifar(tmp_path, layout, skip=("data_batch_2.bin", "data_batch_4.bin"))
    load_cifar10("test", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10("train", data_dir=tmp_path)
    msg = str(info.value)
    assert "data_batch_2.bin, " in msg and "data_batch_4.bin" in msg
    assert "data_batch_1.bin" not in msg and "cifar-10-binary.tar.gz" in msg


def test_cifar_nothing_found_says_where_and_how(tmp_path, no_system_data):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10("test", data_dir=tmp_path / "empty")
    msg = str(info.value)
    assert "test_batch.bin" in msg and "cifar-10-binary.tar.gz" in msg and "cifar.html" in msg
    with pytest.raises(FileNotFoundError) as info:
        data_dir("cifar-10")
    msg = str(info.value)
    assert str(no_system_data / "cifar-10") in msg and "ROBUSTCNN_DATA" in msg
    assert "binary version" in msg


def pickled_hint(info):
    msg = str(info.value)
    return "Python (pickled) version" in msg and "cifar-10-binary.tar.gz" in msg


@pytest.mark.parametrize("where", ["batches-py", "parent", "name-subdirectory", "tarball"])
def test_cifar_pickled_version_is_refused(tmp_path, no_system_data, where):
    # Dummy bytes: if anything tried to unpickle them it would fail differently.
    py = tmp_path / "cifar-10" / "cifar-10-batches-py"
    py.mkdir(parents=True)
    for f in ("data_batch_1", "test_batch", "batches.meta"):
        (py / f).write_bytes(b"not a pickle")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tarball")
    data = {"batches-py": py, "parent": py.parent, "name-subdirectory": tmp_path,
            "tarball": tmp_path / "cifar-10-python.tar.gz"}[where]
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar-10", "test", data_dir=data)
    assert pickled_hint(info)


def test_cifar_pickled_version_is_refused_via_env_var(tmp_path, no_system_data, monkeypatch):
    (tmp_path / "cifar-10").mkdir()
    (tmp_path / "cifar-10" / "batches.meta").write_bytes(b"not a pickle")
    monkeypatch.setenv("ROBUSTCNN_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        data_dir("cifar-10")
    assert pickled_hint(info) and "batches.meta" in str(info.value)


def test_cifar_binary_wins_over_pickled_beside_it(tmp_path, no_system_data):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"not a pickle")
    batches = write_cifar(tmp_path, "nested")
    check_cifar(*load_cifar10("test", data_dir=tmp_path), *expected_cifar(batches, "test"))


def test_cifar_tar_member_must_be_a_regular_file(tmp_path):
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ValueError, match="test_batch.bin: not a regular file"):
        load_cifar10("test", data_dir=tmp_path)


def test_cifar_unreadable_tarball(tmp_path):
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(ValueError, match="cifar-10-binary.tar.gz: not a readable tar archive"):
        load_cifar10("test", data_dir=tmp_path)
    # tarfile lists every compression it tried, one per line: the message stays one line
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match="not a readable tar archive") as e:
        load_cifar10("test", data_dir=tmp_path)
    assert "\n" not in str(e.value)


def test_cifar_unknown_split_and_wrong_loader(tmp_path):
    with pytest.raises(ValueError, match="'valid'.*'train' or 'test'"):
        load_cifar10("valid", data_dir=tmp_path)
    with pytest.raises(ValueError, match="load_cifar10"):
        load_mnist_like("cifar-10", "test", data_dir=tmp_path)


# --- CIFAR-10 in a study and a model -------------------------------------------------------


def test_cifar_study_config_and_lenet5_forward(tmp_path, no_system_data):
    from robustcnn.models.lenet import build_model
    from robustcnn.study.build import architecture
    from robustcnn.study.config import parse_config
    from robustcnn.study.data import load_data

    batches = write_cifar(tmp_path, "tar", n=4)
    study = parse_config({
        "study": {"name": "tiny", "dataset": "cifar-10", "data_dir": str(tmp_path),
                  "seeds": [0], "test_examples": 3, "sanity": False},
        "models": [{"name": "dense", "kind": "dense", "arch": "lenet5"}],
        "attacks": [{"name": "fgsm", "eps": [0.05]}],
    })
    assert study.dataset == "cifar-10" and study.data_dir == str(tmp_path)
    x, y, xt, yt = load_data(study)
    assert x.shape == (20, 3, 32, 32) and xt.shape == (3, 3, 32, 32)
    assert yt.tolist() == batches["test_batch.bin"][1][:3].tolist()

    net, _ = architecture(study, study.model("dense"), 0, x)
    logits = net.forward(xt)
    assert logits.shape == (3, 10) and np.isfinite(logits).all()
    net = build_model("lenet5", input_shape=(3, 32, 32), num_classes=10)
    logits = net.forward(x)
    assert logits.shape == (20, 10) and logits.dtype == np.float32 and np.isfinite(logits).all()
