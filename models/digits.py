"""scikit-learn's handwritten digits as a 28×28 dataset: the study's second dataset.

``sklearn.datasets.load_digits`` ships 1,797 images of 8×8 pixels (UCI's "optdigits": 32×32
bitmaps of digits written by 43 people, counted in 4×4 blocks, so each pixel is 0..16) inside
the scikit-learn wheel: no download. ``load_digits_split`` makes them look like MNIST to the
engine:

- pixels scaled from 0..16 to [0, 1] (``/ 16``, exact at both ends);
- upsampled to 28×28 bilinearly (``upsample_bilinear``), with pixel centres aligned (the
  convention of PIL, OpenCV and ``torch.nn.functional.interpolate(align_corners=False)``).
  Bilinear, not nearest: 28 / 8 = 3.5 is not a whole factor, so nearest would draw the pixels
  as blocks of 3 and 4 rows and columns (uneven strokes), and its step edges would be a
  feature no MNIST-like digit has; bilinear gives smooth ramps, and each output pixel is a
  convex combination of input pixels, so the values stay in [0, 1];
- one fixed stratified split (``split_indices``): in each class, the images in a random order
  drawn by ``np.random.RandomState(DIGITS_SPLIT_SEED)`` (whose stream NumPy keeps fixed across
  versions), the first third (rounded) to the test set. 1,198 training and 599 test images;
  each split's indices in ascending order, i.e. in the file's order, which mixes the classes,
  so the first 100 images of a split (``test_examples``) hold every class (5 of each at least).
"""

import numpy as np

DIGITS = "digits"
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SHARE = 1 / 3  # of each class, rounded: 599 test images, 1,198 training
DIGITS_SIZE = 28  # upsampled to MNIST's 28×28
_SOURCE_SIZE = 8
_SOURCE_MAX = 16.0  # a pixel counts the set bits of a 4×4 block: 0..16
_NUM_CLASSES = 10


def bilinear_matrix(n_out, n_in):
    """The (n_out, n_in) matrix of 1-D linear interpolation with aligned pixel centres: output
    pixel i samples the input at s = (i + ½)·n_in/n_out − ½, clamped to [0, n_in − 1], as
    (1 − w)·in[⌊s⌋] + w·in[⌊s⌋ + 1] with w = s − ⌊s⌋. Each row is ≥ 0 and sums to 1."""
    s = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.floor(s).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    w = s - low
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), low), 1 - w)
    np.add.at(m, (np.arange(n_out), high), w)
    return m


def upsample_bilinear(images, size):
    """Images (N, H, W) → (N, size, size) by bilinear interpolation, separably: rows then
    columns (out = R · image · Cᵀ with ``bilinear_matrix`` R and C), in float64."""
    images = np.asarray(images, dtype=np.float64)
    rows = bilinear_matrix(size, images.shape[1])
    cols = bilinear_matrix(size, images.shape[2])
    return np.einsum("ij,njk,lk->nil", rows, images, cols, optimize=True)


def split_indices(labels, *, seed=DIGITS_SPLIT_SEED, test_share=DIGITS_TEST_SHARE):
    """The stratified split of ``labels`` → (train indices, test indices), each ascending:
    per class (ascending), its indices permuted by ``np.random.RandomState(seed)`` (one stream
    for all classes, in class order), the first ``round(count · test_share)`` to test."""
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        test.append(rng.permutation(members)[:int(round(len(members) * test_share))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)  # sorted
    return train, test


def _load_digits():
    """(images (1797, 8, 8) float64 0..16, labels (1797,) int) from scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise FileNotFoundError(
            f"{DIGITS}: its images ship with scikit-learn, which is not installed: "
            f"pip install 'robustcnn[digits]' (or scikit-learn)") from None
    bunch = load_digits()
    return bunch.images, bunch.target


def load_digits_split(split="train"):
    """One split of the digits dataset.

    Parameters
    ----------
    split : {"train", "test"}
        1,198 training or 599 test images (``split_indices``).

    Returns
    -------
    images : np.ndarray
        float32, shape (N, 1, 28, 28), in [0, 1] (see the module's docstring).
    labels : np.ndarray
        int64, shape (N,), values 0..9 (the digit).

    Raises
    ------
    ValueError
        If ``split`` is unknown, or scikit-learn's images are not the 8×8 images of 0..16
        with labels 0..9 this module expects (another scikit-learn's data).
    FileNotFoundError
        If scikit-learn is not installed (the message says how to install it).
    """
    if split not in ("train", "test"):
        raise ValueError(f"{DIGITS}: unknown split {split!r} (expected 'train' or 'test')")
    images, labels = _load_digits()
    if (images.ndim != 3 or images.shape[1:] != (_SOURCE_SIZE, _SOURCE_SIZE)
            or len(labels) != len(images) or images.min() < 0 or images.max() > _SOURCE_MAX
            or labels.min() < 0 or labels.max() >= _NUM_CLASSES):
        raise ValueError(
            f"{DIGITS}: scikit-learn's load_digits returned images of shape {images.shape} "
            f"with values {images.min():g}..{images.max():g} and labels "
            f"{labels.min()}..{labels.max()}; expected (N, 8, 8) of 0..16 and 0..9")
    train, test = split_indices(labels)
    chosen = train if split == "train" else test
    x = upsample_bilinear(images[chosen] / _SOURCE_MAX, DIGITS_SIZE)
    x = np.clip(x, 0.0, 1.0)  # rounding of the weighted sums, by at most an ulp
    return x.astype(np.float32)[:, None], labels[chosen].astype(np.int64)
