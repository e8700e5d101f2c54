"""engine/linear.py: linear_forward / linear_backward (Caffe's InnerProduct) against a loop
reference, finite differences and argument checks."""

import numba
import numpy as np
import pytest
from helpers import F32, F64, assert_close, check_op

from robustcnn.engine import linear_backward, linear_forward

# ---------------------------------------------------------------------------------------------
# Reference (float64, explicit loops over output features)


def linear_ref(x, w, b):
    y = np.empty((x.shape[0], w.shape[0]))
    for o in range(w.shape[0]):
        y[:, o] = (x * w[o]).sum(axis=1) + (0.0 if b is None else b[o])
    return y


def linear_ref_backward(dy, x, w):
    dx = np.zeros_like(x)
    dw = np.empty_like(w)
    for o in range(w.shape[0]):
        dx += dy[:, o:o + 1] * w[o]
        dw[o] = (dy[:, o:o + 1] * x).sum(axis=0)
    return dx, dw, dy.sum(axis=0)


def run_linear(x, w, b, dtype):
    return check_op(
        linear_forward, linear_ref, [x, w, b],
        backward=lambda dy, x, w, b: linear_backward(dy, x, w),
        ref_backward=lambda dy, x, w, b: linear_ref_backward(dy, x, w),
        wrt=(0, 1, 2), dtype=dtype, what="linear")


# (N, I, O): single example and single feature (BLAS's gemv path), blocks narrower and wider
# than the per-thread minimum of 64 output features, odd sizes.
SHAPES = [(1, 7, 5), (4, 1, 3), (5, 6, 1), (1, 1, 1), (3, 13, 11), (8, 130, 70), (2, 300, 129)]


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_matches_reference(shape, dtype, rng):
    N, I, O = shape
    run_linear(rng.standard_normal((N, I)), rng.standard_normal((O, I)), rng.standard_normal(O),
               dtype)


def test_linear_without_bias(rng):
    x, w = rng.standard_normal((3, 9)), rng.standard_normal((4, 9))
    check_op(lambda x, w: linear_forward(x, w, None), lambda x, w: linear_ref(x, w, None),
             [x, w], backward=lambda dy, x, w: linear_backward(dy, x, w)[:2],
             ref_backward=lambda dy, x, w: linear_ref_backward(dy, x, w)[:2], wrt=(0, 1),
             what="linear without bias")


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_does_not_change_results(threads, rng):
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("needs 2 Numba threads")
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        run_linear(rng.standard_normal((6, 200)), rng.standard_normal((150, 200)),
                   rng.standard_normal(150), F64)
    finally:
        numba.set_num_threads(old)


def test_non_contiguous_inputs(rng):
    x = rng.standard_normal((6, 20))[::2, ::2]
    w = rng.standard_normal((10, 4)).T
    assert_close(linear_forward(x, w), linear_ref(x, w, None), 1e-10, "linear on views")


def test_empty_batch(rng):
    w = rng.standard_normal((4, 3))
    y = linear_forward(np.zeros((0, 3)), w, np.ones(4))
    assert y.shape == (0, 4)
    dx, dw, db = linear_backward(np.zeros((0, 4)), np.zeros((0, 3)), w)
    assert dx.shape == (0, 3) and dw.shape == (4, 3) and db.shape == (4,)
    assert not dw.any() and not db.any()


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_input(rng):
    x, w, b = rng.standard_normal((2, 5)), rng.standard_normal((3, 5)), np.zeros(3)
    with pytest.raises(ValueError, match=r"ip1 \(InnerProduct\): input must have 2 axes"):
        linear_forward(x[None], w, b, name="ip1")
    with pytest.raises(ValueError, match=r"ip1 \(InnerProduct\): weight shape \(3, 4\) does not "
                                         r"match input features 5"):
        linear_forward(x, w[:, :4], b, name="ip1")
    with pytest.raises(ValueError, match=r"bias shape \(2,\) does not match output features 3"):
        linear_forward(x, w, b[:2])
    with pytest.raises(TypeError, match="input must be float32 or float64, got int64"):
        linear_forward(x.astype(np.int64), w, b)
    with pytest.raises(TypeError, match="weight is float32 but the input is float64"):
        linear_forward(x, w.astype(np.float32), b)
    with pytest.raises(TypeError, match="bias is float32 but the input is float64"):
        linear_forward(x, w, b.astype(np.float32))
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match="input has 1 non-finite"):
        linear_forward(x, w, b)


def test_bad_output_gradient(rng):
    x, w = rng.standard_normal((2, 5)), rng.standard_normal((3, 5))
    with pytest.raises(ValueError, match=r"output gradient shape \(2, 4\) does not match the "
                                         r"output \(2, 3\)"):
        linear_backward(np.zeros((2, 4)), x, w)
    with pytest.raises(TypeError, match="output gradient is float32"):
        linear_backward(np.zeros((2, 3), np.float32), x, w)
