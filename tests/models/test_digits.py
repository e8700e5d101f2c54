"""Tests for robustcnn.models.digits: the bilinear upsampling against its definition and torch,
the stratified split (sizes, classes, disjointness, reproducibility) and the loaded dataset."""

import hashlib

import numpy as np
import pytest

from robustcnn.models import digits
from robustcnn.models.datasets import DATASETS, input_shape, load_dataset, load_mnist_like
from robustcnn.models.digits import (
    bilinear_matrix,
    load_digits_split,
    split_indices,
    upsample_bilinear,
)

sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def source():
    bunch = sklearn_datasets.load_digits()
    return bunch.images, bunch.target


@pytest.fixture(scope="module")
def splits():
    return {split: load_digits_split(split) for split in ("train", "test")}


# --- upsampling ----------------------------------------------------------------------------


def _bilinear_reference(image, size):
    """Bilinear interpolation written out pixel by pixel (aligned centres, clamped edges)."""
    h, w = image.shape
    out = np.empty((size, size))
    for i in range(size):
        for j in range(size):
            y = min(max((i + 0.5) * h / size - 0.5, 0.0), h - 1.0)
            x = min(max((j + 0.5) * w / size - 0.5, 0.0), w - 1.0)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = y - y0, x - x0
            out[i, j] = ((1 - dy) * (1 - dx) * image[y0, x0] + (1 - dy) * dx * image[y0, x1]
                         + dy * (1 - dx) * image[y1, x0] + dy * dx * image[y1, x1])
    return out


def test_bilinear_matrix_rows_are_convex_weights_of_two_neighbours():
    m = bilinear_matrix(28, 8)
    assert m.shape == (28, 8)
    assert (m >= 0).all()
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert ((m > 0).sum(axis=1) <= 2).all()
    # Aligned centres: the output pixel at the centre of input pixel k (i + ½ = (k + ½)·3.5)
    # copies it; the first and last rows are clamped to the edge pixels.
    np.testing.assert_allclose(m[0], np.eye(8)[0], atol=1e-12)
    np.testing.assert_allclose(m[-1], np.eye(8)[-1], atol=1e-12)


@pytest.mark.parametrize("size", [28, 16, 5])
def test_upsampling_matches_its_definition(size):
    rng = np.random.default_rng(size)
    images = rng.random((3, 8, 8))
    out = upsample_bilinear(images, size)
    assert out.shape == (3, size, size) and out.dtype == np.float64
    for image, got in zip(images, out):
        np.testing.assert_allclose(got, _bilinear_reference(image, size), rtol=0, atol=1e-12)


def test_upsampling_matches_torch_bilinear(source):
    torch = pytest.importorskip("torch")
    images = source[0][:20] / 16.0
    ref = torch.nn.functional.interpolate(torch.tensor(images[:, None]), size=(28, 28),
                                          mode="bilinear", align_corners=False)
    np.testing.assert_allclose(upsample_bilinear(images, 28), ref.numpy()[:, 0], rtol=0,
                               atol=1e-12)


def test_upsampling_keeps_constants_and_the_range():
    np.testing.assert_allclose(upsample_bilinear(np.full((1, 8, 8), 0.7), 28), 0.7, atol=1e-12)
    rng = np.random.default_rng(0)
    out = upsample_bilinear(rng.random((4, 8, 8)), 28)
    assert out.min() >= 0.0 and out.max() <= 1.0


# --- the split -----------------------------------------------------------------------------


def test_split_sizes_and_strata(source):
    labels = source[1]
    train, test = split_indices(labels)
    assert (len(train), len(test)) == (1198, 599)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(len(labels)))
    assert (np.diff(train) > 0).all() and (np.diff(test) > 0).all()  # ascending
    counts = np.bincount(labels, minlength=10)
    # Each class: a third (rounded) of its images to test, the rest to train.
    np.testing.assert_array_equal(np.bincount(labels[test], minlength=10),
                                  np.round(counts / 3).astype(int))
    np.testing.assert_array_equal(np.bincount(labels[train], minlength=10),
                                  counts - np.round(counts / 3).astype(int))


def test_split_is_reproducible_and_seeded(source):
    labels = source[1]
    train, test = split_indices(labels)
    again = split_indices(labels)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(test, again[1])
    other = split_indices(labels, seed=1)[1]
    assert len(other) == len(test) and not np.array_equal(other, test)


def test_split_is_the_documented_one(source):
    # The fingerprint of the published split: if NumPy's RandomState stream or scikit-learn's
    # file ever changed, the study's results would be on other images; this test says so.
    _, test = split_indices(source[1])
    digest = hashlib.sha256(test.astype("<i8").tobytes()).hexdigest()
    assert digest == DIGITS_TEST_SHA256, digest
    assert test[:8].tolist() == DIGITS_TEST_FIRST


# Recorded when the split was published (scikit-learn 1.9.1, NumPy 2.4.6).
DIGITS_TEST_SHA256 = "36d04ba8acffbdb63f0e91cff34b9411f4b82fff291676f7842d5016fa2a2648"
DIGITS_TEST_FIRST = [3, 5, 7, 13, 16, 19, 22, 26]


def test_split_on_hand_made_labels():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 2)
    train, test = split_indices(labels, seed=3)
    assert np.bincount(labels[test], minlength=3).tolist() == [2, 1, 1]
    assert sorted(train.tolist() + test.tolist()) == list(range(11))


# --- the dataset ---------------------------------------------------------------------------


def test_loaded_splits(splits, source):
    images, labels = source
    train, test = split_indices(labels)
    for split, chosen in (("train", train), ("test", test)):
        x, y = splits[split]
        assert x.shape == (len(chosen), 1, 28, 28) and x.dtype == np.float32
        assert y.shape == (len(chosen),) and y.dtype == np.int64
        np.testing.assert_array_equal(y, labels[chosen])
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0  # 0 and 16 map to the ends
        expected = upsample_bilinear(images[chosen] / 16.0, 28)
        np.testing.assert_allclose(x[:, 0], expected, rtol=0, atol=1e-6)


def test_first_images_of_a_split_hold_every_class(splits):
    # The file's order mixes the classes: a study's first 100 test images have each digit.
    for split in ("train", "test"):
        assert np.bincount(splits[split][1][:100], minlength=10).min() >= 3


def test_registered_as_a_dataset(splits, tmp_path):
    assert DATASETS["digits"] == tuple(str(d) for d in range(10))
    assert input_shape("digits") == (1, 28, 28)
    x, y = load_dataset("digits", "test", data_dir=tmp_path)  # no files: data_dir unused
    np.testing.assert_array_equal(x, splits["test"][0])
    np.testing.assert_array_equal(y, splits["test"][1])


def test_bad_split_and_wrong_loader():
    from robustcnn.models.datasets import data_dir

    with pytest.raises(ValueError, match="digits: has no data directory"):
        data_dir("digits")
    with pytest.raises(ValueError, match="digits: unknown split 'valid'"):
        load_dataset("digits", "valid")
    with pytest.raises(ValueError, match="load_digits_split"):
        load_mnist_like("digits", "test")


def test_without_scikit_learn_one_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(FileNotFoundError, match=r"scikit-learn, which is not installed: pip "
                                                r"install 'robustcnn\[digits\]'"):
        load_dataset("digits", "train")


def test_unexpected_source_data_is_refused(monkeypatch):
    monkeypatch.setattr(digits, "_load_digits",
                        lambda: (np.full((10, 8, 8), 255.0), np.arange(10)))
    with pytest.raises(ValueError, match=r"digits: scikit-learn's load_digits returned .* "
                                         r"values 255\.\.255"):
        load_digits_split("train")
