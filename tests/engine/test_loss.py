"""engine/loss.py: the fused softmax + cross-entropy (stability, gradients, label checks) and
softmax forward/backward, against SciPy's logsumexp/softmax and an explicit Jacobian."""

import numpy as np
import pytest
import scipy.special
from helpers import F32, F64, assert_close, check_op

from robustcnn.engine import softmax_backward, softmax_cross_entropy, softmax_forward

# ---------------------------------------------------------------------------------------------
# References (float64)


def ce_ref(z, labels):
    """loss[n] = logsumexp(z[n]) − z[n, y_n] (SciPy's logsumexp)."""
    return scipy.special.logsumexp(z, axis=1) - z[np.arange(len(z)), labels]


def ce_ref_backward(dloss, z, labels):
    """d Σ_n dloss[n] · loss[n] / dz = dloss[n] · (softmax(z[n]) − onehot(y_n))."""
    onehot = np.zeros_like(z)
    onehot[np.arange(len(z)), labels] = 1.0
    return dloss[:, None] * (scipy.special.softmax(z, axis=1) - onehot)


def softmax_ref_backward(dy, z):
    """dx[n] = J[n]ᵀ dy[n] with the explicit Jacobian J[j, k] = p_j · ([j = k] − p_k)."""
    p = scipy.special.softmax(z, axis=1)
    dx = np.empty_like(z)
    for n in range(len(z)):
        J = np.diag(p[n]) - np.outer(p[n], p[n])
        dx[n] = J.T @ dy[n]
    return dx


def run_ce(z, labels, dtype, **kw):
    return check_op(lambda z, y: softmax_cross_entropy(z, y)[0], ce_ref, [z, labels],
                    backward=lambda d, z, y: d[:, None] * softmax_cross_entropy(z, y)[1],
                    ref_backward=ce_ref_backward, dtype=dtype, what="softmax_cross_entropy",
                    **kw)


# ---------------------------------------------------------------------------------------------
# Softmax cross-entropy


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("N,K", [(1, 2), (5, 10), (3, 1), (64, 7), (2, 1000)])
def test_cross_entropy_matches_reference(N, K, dtype, rng):
    z = 3 * rng.standard_normal((N, K))
    run_ce(z, rng.integers(0, K, N), dtype)


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_cross_entropy_is_stable_for_huge_logits(dtype):
    z = np.array([[1e4, -1e4, 0.0],
                  [-1e4, -1e4, -1e4 + 1],
                  [1e4, 1e4, 1e4],
                  [-1e4, 1e4, -1e4]])
    labels = np.array([1, 2, 0, 1])
    loss, dz = softmax_cross_entropy(z.astype(dtype), labels)
    assert np.isfinite(loss).all() and np.isfinite(dz).all()
    # log-sum-exp by hand: 2e4, log(1 + 2e^−1), log 3, e^−2e4 ≈ 0.
    want = np.array([2e4, np.log1p(2 * np.exp(-1.0)), np.log(3.0), 0.0])
    assert_close(loss, want, 1e-12 if dtype == F64 else 1e-6, "cross-entropy of ±1e4 logits")
    assert_close(loss, ce_ref(z, labels), 1e-12 if dtype == F64 else 1e-6, "vs logsumexp")
    want_dz = ce_ref_backward(np.ones(4), z, labels)
    assert_close(dz, want_dz, 1e-12 if dtype == F64 else 1e-6, "gradient of ±1e4 logits")
    run_ce(z, labels, dtype, fd_rtol=1e-5)


def test_cross_entropy_is_stable_near_float32_max():
    z = np.array([[3e38, -3e38, 0.0], [-3e38, 3e38, 1.0]], np.float32)
    loss, dz = softmax_cross_entropy(z, np.array([0, 1]))
    assert np.isfinite(dz).all()
    assert_close(loss, [0.0, 0.0], 0.0, "confident and right", atol=1e-30)
    assert_close(dz, [[0, 0, 0], [0, 0, 0]], 0.0, "nothing to learn", atol=1e-30)


def test_gradient_is_per_example_not_of_the_mean(rng):
    # dlogits[n] is d loss[n] / d z[n]: rows of a batch equal single-example runs.
    z = rng.standard_normal((4, 5))
    labels = np.array([0, 4, 2, 2])
    loss, dz = softmax_cross_entropy(z, labels)
    for n in range(4):
        l1, d1 = softmax_cross_entropy(z[n:n + 1], labels[n:n + 1])
        assert_close(l1, loss[n:n + 1], 1e-14, "loss row")
        assert_close(d1, dz[n:n + 1], 1e-14, "gradient row")


def test_empty_batch():
    loss, dz = softmax_cross_entropy(np.zeros((0, 3)), np.zeros(0, np.int64))
    assert loss.shape == (0,) and dz.shape == (0, 3)


@pytest.mark.parametrize("labels,error,match", [
    (np.array([0, 3]), ValueError, r"labels must lie in \[0, 3\), found range \[0, 3\]"),
    (np.array([-1, 0]), ValueError, r"labels must lie in \[0, 3\), found range \[-1, 0\]"),
    (np.array([[0], [1]]), ValueError, r"labels shape \(2, 1\) does not match the batch \(2,\)"),
    (np.array([0, 1, 2]), ValueError, r"labels shape \(3,\) does not match the batch \(2,\)"),
    (np.array([0.0, 1.0]), TypeError, "labels must be integers, got float64"),
    (np.array([True, False]), TypeError, "labels must be integers, got bool"),
    ([0.5, 1], TypeError, "labels must be integers"),
])
def test_bad_labels(labels, error, match, rng):
    with pytest.raises(error, match=r"loss \(SoftmaxWithLoss\): " + match):
        softmax_cross_entropy(rng.standard_normal((2, 3)), labels)


def test_labels_as_list_and_unsigned(rng):
    z = rng.standard_normal((3, 4))
    want = ce_ref(z, np.array([3, 0, 1]))
    assert_close(softmax_cross_entropy(z, [3, 0, 1])[0], want, 1e-12, "list labels")
    assert_close(softmax_cross_entropy(z, np.array([3, 0, 1], np.uint8))[0], want, 1e-12,
                 "uint8 labels")


def test_bad_logits(rng):
    with pytest.raises(ValueError, match="logits must have 2 axes"):
        softmax_cross_entropy(rng.standard_normal(3), np.array([0]))
    z = rng.standard_normal((2, 3))
    z[1, 1] = np.inf
    with pytest.raises(ValueError, match="logits has 1 non-finite"):
        softmax_cross_entropy(z, np.array([0, 1]))
    with pytest.raises(TypeError, match="logits must be float32 or float64"):
        softmax_cross_entropy(np.zeros((2, 3), np.int32), np.array([0, 1]))


# ---------------------------------------------------------------------------------------------
# Softmax


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("N,K", [(1, 1), (4, 10), (3, 257)])
def test_softmax_matches_reference(N, K, dtype, rng):
    z = 4 * rng.standard_normal((N, K))
    y, _, _ = check_op(softmax_forward, lambda z: scipy.special.softmax(z, axis=1), [z],
                       backward=lambda dy, z: softmax_backward(dy, softmax_forward(z)),
                       ref_backward=softmax_ref_backward, dtype=dtype, what="softmax")
    assert_close(y.sum(axis=1), np.ones(N), 1e-14 if dtype == F64 else 1e-6, "probabilities")


def test_softmax_is_stable_for_huge_logits():
    z = np.array([[1e4, -1e4, 1e4], [-1e4, -1e4 + 1, -1e4]])
    p = softmax_forward(z)
    e = np.exp(-1.0)
    assert_close(p, [[0.5, 0, 0.5], [e / (1 + 2 * e), 1 / (1 + 2 * e), e / (1 + 2 * e)]], 1e-14,
                 "softmax of ±1e4 logits")


def test_softmax_bad_input(rng):
    with pytest.raises(ValueError, match=r"prob \(Softmax\): input must have 2 axes"):
        softmax_forward(rng.standard_normal((2, 3, 1, 1)), name="prob")
    y = softmax_forward(rng.standard_normal((2, 3)))
    with pytest.raises(ValueError, match=r"output gradient shape \(2, 2\) does not match the "
                                         r"output \(2, 3\)"):
        softmax_backward(np.zeros((2, 2)), y)
    with pytest.raises(TypeError, match="output gradient is float32"):
        softmax_backward(np.zeros((2, 3), np.float32), y)
