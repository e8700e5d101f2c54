"""engine/dropout.py: inverted dropout (Caffe): keep rate, scaling, determinism, p = 0, bad p."""

import numpy as np
import pytest
from helpers import F32, F64, assert_close, check_op

from robustcnn.engine import dropout_backward, dropout_forward


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9])
def test_dropout_matches_reference(p, dtype, rng):
    """With a fixed seed the op is a fixed linear map y = x · mask: the reference applies the
    kept set (mask ≠ 0) with Caffe's scale 1/(1 − p) written out here."""
    x = rng.standard_normal((4, 3, 5, 5))
    _, mask = dropout_forward(x.astype(dtype), p, np.random.default_rng(7))
    kept = mask != 0

    def op(x):
        return dropout_forward(x, p, np.random.default_rng(7))[0]

    check_op(op, lambda x: np.where(kept, x / (1 - p), 0.0), [x],
             backward=lambda dy, x: dropout_backward(
                 dy, dropout_forward(x, p, np.random.default_rng(7))[1]),
             ref_backward=lambda dy, x: np.where(kept, dy / (1 - p), 0.0),
             dtype=dtype, what=f"dropout(p={p})")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_mask_keep_rate_and_scale(p):
    x = np.ones((200, 1000), np.float32)
    y, mask = dropout_forward(x, p, np.random.default_rng(0))
    assert mask.dtype == np.float32 and mask.shape == x.shape
    kept = mask != 0
    # Kept entries are scaled by 1/(1 − p); dropped ones are exactly zero.
    assert_close(mask[kept], np.full(kept.sum(), 1 / (1 - p)), 1e-7, "kept scale")
    assert_close(y, mask, 0.0, "y = x · mask for x = 1")
    # The keep rate is 1 − p within 5 standard deviations of a binomial over 200 000 draws.
    n = kept.size
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(kept.mean() - (1 - p)) < 5 * sigma, kept.mean()
    # Unbiased: E[y] = x.
    assert abs(y.mean() - 1.0) < 5 * sigma / (1 - p)


def test_p_zero_is_identity(rng):
    x = rng.standard_normal((3, 4))
    y, mask = dropout_forward(x, 0.0, np.random.default_rng(0))
    assert_close(y, x, 0.0, "p = 0")
    assert_close(mask, np.ones_like(x), 0.0, "p = 0 mask")


def test_same_seed_same_mask_different_seed_different_mask(rng):
    x = rng.standard_normal((50, 40))
    _, m1 = dropout_forward(x, 0.5, np.random.default_rng(42))
    _, m2 = dropout_forward(x, 0.5, np.random.default_rng(42))
    _, m3 = dropout_forward(x, 0.5, np.random.default_rng(43))
    # Deliberately exact: the mask is a deterministic function of the seed.
    assert np.array_equal(m1, m2)
    assert not np.array_equal(m1, m3)
    # One generator advances: two draws differ.
    g = np.random.default_rng(42)
    assert not np.array_equal(dropout_forward(x, 0.5, g)[1], dropout_forward(x, 0.5, g)[1])


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, np.nan, np.inf])
def test_p_outside_range_is_rejected(p, rng):
    with pytest.raises(ValueError, match=r"drop6 \(Dropout\): dropout ratio must be in \[0, 1\)"):
        dropout_forward(rng.standard_normal(4), p, np.random.default_rng(0), name="drop6")


def test_bad_input(rng):
    with pytest.raises(TypeError, match="input must be float32 or float64"):
        dropout_forward(np.arange(4), 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="non-finite"):
        dropout_forward(np.array([np.nan]), 0.5, np.random.default_rng(0))
    _, mask = dropout_forward(rng.standard_normal((2, 3)), 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"output gradient shape \(3, 2\) does not match the "
                                         r"mask \(2, 3\)"):
        dropout_backward(np.zeros((3, 2)), mask)
