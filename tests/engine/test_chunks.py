"""Kernels split into chunks (``engine/_jit.py``: ``run_chunks``, ``work_chunks``): a small call
runs its one chunk in the calling thread, a large one spreads the chunks over threads through
the parallel wrapper. Both give the same outputs; the other tests mostly take the first path,
so this one forces the second (every call as many chunks as threads) and compares."""

import numba
import numpy as np
import pytest
from helpers import assert_close

from robustcnn.engine import (_jit, activation, conv, conv2d_backward, conv2d_forward, linear,
                              linear_forward, max_pool2d_forward, pool, relu_forward)
from robustcnn.engine.formats import CodebookWeight
from robustcnn.engine.layers import Conv2d
from robustcnn.engine.net import Net

rng = np.random.default_rng(0)
X = rng.standard_normal((3, 4, 13, 11)).astype(np.float32)
W = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
# eight input channels or more: the channels-last patch kernels (conv.CHANNELS_LAST_MIN)
X16 = rng.standard_normal((3, 16, 13, 11)).astype(np.float32)
W16 = rng.standard_normal((6, 8, 3, 3)).astype(np.float32)
B = rng.standard_normal(6).astype(np.float32)
XL = rng.standard_normal((3, 300)).astype(np.float32)
WL = rng.standard_normal((200, 300)).astype(np.float32)
BL = rng.standard_normal(200).astype(np.float32)


def _codebook_conv(x):
    net = Net([Conv2d("conv", 6, kernel=3, padding=1)], x.shape[1:], seed=0)
    net.convert("conv", "codebook", bits=3)
    assert isinstance(net.layer("conv").weight_format, CodebookWeight)
    return net.forward(x)


def _max_pool_with_argmax(x):
    """The training pass's pooling: the maxima and where they are (both compared)."""
    y = np.empty(x.shape[:2] + (7, 6), dtype=x.dtype)
    argmax = np.empty(y.shape, dtype=np.int64)
    pool.max_pool2d_nchw(x, 2, 2, 2, 2, 0, 0, y, argmax)
    return np.concatenate([y.ravel(), argmax.ravel().astype(x.dtype)])


CASES = {
    "conv": (lambda: conv2d_forward(X, W, B, stride=1, padding=1), conv.conv2d_forward_im2col),
    "conv codebook": (lambda: _codebook_conv(X), conv.conv2d_forward_im2col),
    "conv channels last": (lambda: conv2d_forward(X16, W16, B, stride=2, padding=1, groups=2),
                           conv.conv2d_forward_patches),
    "conv channels last codebook": (lambda: _codebook_conv(X16[:, :8]),
                                    conv.conv2d_forward_patches),
    "linear": (lambda: linear_forward(XL, WL, BL), linear.linear_forward_gemm),
    "max pool": (lambda: max_pool2d_forward(X, 2, 2, 0, True), pool.max_pool2d_values_nchw),
    "max pool with argmax": (lambda: _max_pool_with_argmax(X), pool.max_pool2d_forward_nchw),
    "relu": (lambda: relu_forward(X, 0.1), activation.relu_forward_chunks),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_threads_and_calling_thread_agree(case, monkeypatch):
    run, wrapper = CASES[case]
    alone = run()
    monkeypatch.setattr(_jit, "MIN_CHUNK_WORK", 1)
    spread = run()
    assert_close(spread, alone, 1e-6, case, atol=1e-6)
    if numba.get_num_threads() > 1:  # the chunks did go through the parallel wrapper
        assert wrapper.signatures


# The convolution backward splits the batch's examples over the threads (one chunk per thread,
# at most one per example): with one thread its single chunk runs in the calling thread.
BACKWARD = {
    "im2col": (lambda: conv2d_backward(rng_dy(X, W, 1, 1), X, W, 1, 1),
               conv.conv2d_backward_im2col),
    "channels last": (lambda: conv2d_backward(rng_dy(X16, W16, 2, 1, 2), X16, W16, 2, 1, groups=2),
                      conv.conv2d_backward_patches),
}


def rng_dy(x, w, stride, padding, groups=1):
    y = conv2d_forward(x, w, None, stride, padding, groups=groups)
    return np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)


@pytest.mark.parametrize("case", sorted(BACKWARD))
def test_backward_threads_and_calling_thread_agree(case):
    run, wrapper = BACKWARD[case]
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        alone = run()
    finally:
        numba.set_num_threads(threads)
    spread = run()
    for got, want, name in zip(spread, alone, ("dx", "dweight", "dbias")):
        assert_close(got, want, 1e-5, f"{case} {name}", atol=1e-5)
    if threads > 1:  # the chunks did go through the parallel wrapper
        assert wrapper.signatures


def test_work_chunks():
    threads = numba.get_num_threads()
    assert _jit.work_chunks(100, _jit.MIN_CHUNK_WORK - 1) == 1
    assert _jit.work_chunks(1, 100 * _jit.MIN_CHUNK_WORK) == 1
    assert _jit.work_chunks(100, 100 * _jit.MIN_CHUNK_WORK) == min(threads, 100)
