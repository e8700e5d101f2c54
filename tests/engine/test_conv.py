"""engine/conv.py: conv2d_forward / conv2d_backward against SciPy and a NumPy tap-loop reference,
finite differences in float64, torch as a cross-check, and argument checking."""

from unittest import mock

import numba
import numpy as np
import pytest
import scipy.signal
from helpers import F32, F64, assert_close, check_op
from hypothesis import given, settings
from hypothesis import strategies as st

from robustcnn.engine import conv
from robustcnn.engine import conv2d_backward, conv2d_forward

# ---------------------------------------------------------------------------------------------
# References (float64, independent of the engine)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d_ref(x, w, b, stride=1, padding=0, dilation=1, groups=1):
    """SciPy: each output plane is a 'valid' correlation of the zero-padded input with the
    dilated kernel (zeros inserted between taps), subsampled by the stride."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    Og = O // groups
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    wd = np.zeros((O, Cg, dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    wd[:, :, ::dh, ::dw] = w
    oh = (H + 2 * ph - wd.shape[2]) // sh + 1
    ow = (W + 2 * pw - wd.shape[3]) // sw + 1
    y = np.empty((N, O, oh, ow))
    for n in range(N):
        for o in range(O):
            g = o // Og
            full = scipy.signal.correlate(xp[n, g * Cg:(g + 1) * Cg], wd[o], mode="valid",
                                          method="direct")
            y[n, o] = full[0, ::sh, ::sw][:oh, :ow]
    if b is not None:
        y += b[None, :, None, None]
    return y


def conv2d_ref_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1):
    """The adjoint of y = Σ_taps W[:, :, i, j] · (strided slice of the padded x), tap by tap."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    Og = O // groups
    oh, ow = dy.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp = np.zeros_like(xp)
    dw_ = np.zeros_like(w)
    for g in range(groups):
        cs, os_ = slice(g * Cg, (g + 1) * Cg), slice(g * Og, (g + 1) * Og)
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
                cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
                patch = xp[:, cs, rows, cols]  # (N, Cg, oh, ow)
                dw_[os_, :, i, j] = np.einsum("noyx,ncyx->oc", dy[:, os_], patch)
                dxp[:, cs, rows, cols] += np.einsum("noyx,oc->ncyx", dy[:, os_], w[os_, :, i, j])
    return dxp[:, :, ph:ph + H, pw:pw + W], dw_, dy.sum(axis=(0, 2, 3))


def run_conv(x, w, b, dtype, **geom):
    """Everything check_op checks, for one convolution."""
    return check_op(
        lambda x, w, b: conv2d_forward(x, w, b, **geom),
        lambda x, w, b: conv2d_ref(x, w, b, **geom),
        [x, w, b],
        backward=lambda dy, x, w, b: conv2d_backward(dy, x, w, **geom),
        ref_backward=lambda dy, x, w, b: conv2d_ref_backward(dy, x, w, **geom),
        wrt=(0, 1, 2) if b is not None else (0, 1),
        dtype=dtype, what="conv2d")


def _no_bias_backward(geom):
    return lambda dy, x, w: conv2d_backward(dy, x, w, **geom)[:2]


# ---------------------------------------------------------------------------------------------
# Forward and backward against the references

# (id, N, C, H, W, O, kh, kw, geometry)
CASES = [
    ("basic", 2, 3, 7, 8, 4, 3, 3, {}),
    ("odd_sizes", 3, 5, 11, 9, 7, 5, 3, {}),
    ("rect_kernel", 2, 2, 6, 9, 3, 2, 4, {}),
    ("stride2", 2, 3, 9, 9, 4, 3, 3, dict(stride=2)),
    ("stride_hw", 2, 3, 10, 11, 4, 3, 2, dict(stride=(2, 3))),
    ("stride_gt_kernel", 2, 2, 9, 9, 3, 2, 2, dict(stride=3)),
    ("pad1", 2, 3, 7, 7, 4, 3, 3, dict(padding=1)),
    ("pad_hw", 2, 3, 6, 7, 4, 3, 3, dict(padding=(2, 0))),
    ("pad_stride_hw", 2, 3, 8, 9, 5, 3, 5, dict(stride=(2, 1), padding=(1, 2))),
    ("pad_gt_half_kernel", 1, 2, 5, 5, 3, 3, 3, dict(padding=2, stride=2)),
    ("dilation2", 2, 3, 9, 10, 4, 3, 3, dict(dilation=2)),
    ("dilation_hw", 2, 2, 9, 10, 3, 3, 2, dict(dilation=(2, 3), padding=(2, 1), stride=(1, 2))),
    ("groups2", 2, 4, 7, 7, 6, 3, 3, dict(groups=2, padding=1)),
    ("groups3_one_out_per_group", 2, 6, 6, 7, 3, 3, 3, dict(groups=3, stride=2)),
    ("groups_half_depthwise", 2, 6, 6, 6, 6, 3, 3, dict(groups=3, padding=1)),
    ("depthwise", 2, 4, 7, 8, 4, 3, 3, dict(groups=4, padding=1)),
    ("depthwise_multiplier2", 2, 3, 9, 8, 6, 3, 3, dict(groups=3, stride=2, padding=1)),
    ("depthwise_dilated_hw", 2, 3, 9, 10, 3, 3, 2, dict(groups=3, dilation=2, stride=(1, 2),
                                                        padding=(2, 1))),
    ("depthwise_5x5_stride3", 1, 2, 11, 12, 4, 5, 5, dict(groups=2, stride=3, padding=2)),
    ("pointwise", 2, 5, 6, 7, 3, 1, 1, {}),
    ("pointwise_groups", 2, 4, 5, 5, 6, 1, 1, dict(groups=2)),
    ("pointwise_single_channel", 2, 1, 5, 6, 3, 1, 1, {}),
    ("1x1_stride2", 2, 3, 7, 6, 4, 1, 1, dict(stride=2)),
    ("1x1_pad", 2, 3, 4, 5, 4, 1, 1, dict(padding=1)),
    ("1x1_pad_stride_hw", 1, 2, 5, 5, 3, 1, 1, dict(padding=(0, 1), stride=(1, 2))),
    ("kernel_equals_input", 2, 3, 5, 6, 4, 5, 6, {}),
    ("kernel_equals_padded_input", 2, 2, 4, 3, 3, 6, 5, dict(padding=1)),
    ("kernel_larger_than_input", 1, 2, 3, 3, 2, 5, 5, dict(padding=(1, 2))),
    ("batch1", 1, 3, 8, 7, 5, 3, 3, dict(padding=1)),
    ("single_output_channel", 3, 4, 6, 6, 1, 3, 3, {}),
    ("single_pixel_input", 2, 3, 1, 1, 2, 1, 1, {}),
    ("single_pixel_padded", 2, 3, 1, 1, 2, 3, 3, dict(padding=1)),
    # Rows wider than a vector register, plain and strided, through im2col and col2im.
    ("wide_rows", 1, 2, 5, 24, 3, 3, 3, dict(padding=1)),
    ("wide_rows_stride2", 1, 2, 5, 40, 3, 3, 3, dict(stride=(1, 2))),
]


# The dense kernels work channels last from CHANNELS_LAST_MIN input channels per group, im2col
# below: each parameter forces one of them for every shape.
ALGORITHMS = {"channels_last": 1, "im2col": 10 ** 9}


@pytest.fixture(params=list(ALGORITHMS))
def algorithm(request, monkeypatch):
    monkeypatch.setattr(conv, "CHANNELS_LAST_MIN", ALGORITHMS[request.param])
    return request.param


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_conv2d_matches_reference(case, dtype, algorithm, rng):
    _, N, C, H, W, O, kh, kw, geom = case
    groups = geom.get("groups", 1)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C // groups, kh, kw))
    b = rng.standard_normal(O)
    y, grads, _ = run_conv(x, w, b, dtype, **geom)
    # The geometry helper agrees with the output the kernel produced.
    (sh, sw), (ph, pw), (dh, dw) = (_pair(geom.get(k, d)) for k, d in
                                    (("stride", 1), ("padding", 0), ("dilation", 1)))
    assert y.shape[2:] == (conv.conv_output_size(H, kh, sh, ph, dh),
                           conv.conv_output_size(W, kw, sw, pw, dw))


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in
                                  ("basic", "depthwise", "pointwise", "pad_stride_hw")],
                         ids=lambda c: c[0])
def test_conv2d_without_bias(case, algorithm, rng):
    _, N, C, H, W, O, kh, kw, geom = case
    groups = geom.get("groups", 1)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C // groups, kh, kw))
    check_op(lambda x, w: conv2d_forward(x, w, None, **geom),
             lambda x, w: conv2d_ref(x, w, None, **geom), [x, w],
             backward=_no_bias_backward(geom),
             ref_backward=lambda dy, x, w: conv2d_ref_backward(dy, x, w, **geom)[:2],
             wrt=(0, 1), what="conv2d without bias")


def test_hand_computed_example():
    # A 3×3 image, a 2×2 kernel, padding 1 (Caffe/torch cross-correlation), worked by hand.
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[1 2 3] [4 5 6] [7 8 9]]
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])  # y = x[top-left] − x[bottom-right]
    want = np.array([[-1, -2, -3, 0], [-4, -4, -4, 3], [-7, -4, -4, 6], [0, 7, 8, 9]], float)
    for y in (conv2d_forward(x, w, np.array([0.5]), padding=1)[0, 0] - 0.5,
              conv2d_ref(x, w, np.array([0.5]), padding=1)[0, 0] - 0.5):
        assert_close(y, want, 1e-15, "hand-computed convolution")


@pytest.mark.parametrize("slab_bytes", [1, 600, 10 ** 9], ids=["one_row", "partial", "whole"])
@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_im2col_slabs(slab_bytes, dtype, algorithm, rng, monkeypatch):
    # The GEMM path builds im2col columns a slab of output rows at a time; a tiny budget forces
    # one row per slab, 600 bytes a partial last slab (oh = 7 is odd), a huge one a single slab.
    monkeypatch.setattr(conv, "SLAB_BYTES", slab_bytes)
    x = rng.standard_normal((3, 3, 9, 7))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    run_conv(x, w, b, dtype, padding=(0, 1))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("slab_rows", [1, 2, 3, 100], ids=["1", "2", "3", "all"])
@pytest.mark.parametrize("case", [
    ("plain_batch1", 1, 3, 9, 7, 4, 3, 3, dict(padding=(0, 1))),
    ("groups_stride", 3, 4, 9, 8, 6, 3, 2, dict(groups=2, stride=(2, 1), padding=1)),
    ("dilated_odd_batch", 5, 3, 8, 9, 5, 2, 3, dict(dilation=(2, 2), padding=(1, 2))),
], ids=lambda c: c[0])
def test_slabs_across_examples(case, slab_rows, threads, rng, monkeypatch):
    monkeypatch.setattr(conv, "CHANNELS_LAST_MIN", 1)
    # Slabs of the flattened (example, output row) index may span examples; a slab of 2 or 3
    # rows with an odd output height ends mid-example, and with 2 threads the backward's
    # examples split between chunks. SLAB_BYTES is set to give exactly ``slab_rows`` rows.
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("needs 2 Numba threads")
    _, N, C, H, W, O, kh, kw, geom = case
    groups = geom.get("groups", 1)
    ow = conv.conv2d_geometry((C, H, W), (O, C // groups, kh, kw), **geom).out_width
    monkeypatch.setattr(conv, "SLAB_BYTES", slab_rows * C // groups * kh * kw * ow * 8)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C // groups, kh, kw))
    b = rng.standard_normal(O)
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        run_conv(x, w, b, F64, **geom)
    finally:
        numba.set_num_threads(old)


@pytest.mark.parametrize("dw_block", [1, 5, 64])
def test_weight_gradient_blocks(dw_block, rng, monkeypatch):
    # The backward forms dW a block of ``DW_BLOCK`` output positions at a time: one position,
    # blocks that do not divide a slab (5 into 3 × 7 = 21 positions), and one block.
    monkeypatch.setattr(conv, "DW_BLOCK", dw_block)
    monkeypatch.setattr(conv, "DW_BLOCK_BYTES", 0)
    monkeypatch.setattr(conv, "CHANNELS_LAST_MIN", 1)
    x = rng.standard_normal((3, 4, 7, 7))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    run_conv(x, w, b, F64, groups=2, padding=(1, 0))


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_does_not_change_results(threads, algorithm, rng):
    # Work is split into one chunk per thread; the result must not depend on the split.
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("needs 2 Numba threads")
    x = rng.standard_normal((5, 4, 8, 8))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        run_conv(x, w, b, F64, groups=2, padding=1)
    finally:
        numba.set_num_threads(old)


def test_non_contiguous_inputs(rng):
    x = rng.standard_normal((2, 3, 10, 14))[:, :, ::2, 1::2]
    w = np.asfortranarray(rng.standard_normal((4, 3, 3, 3)))
    b = rng.standard_normal(8)[::2]
    assert not x.flags.c_contiguous and not w.flags.c_contiguous
    assert_close(conv2d_forward(x, w, b, padding=1), conv2d_ref(x, w, b, padding=1), 1e-10,
                 "conv2d on views")


def test_empty_batch(rng):
    w = rng.standard_normal((4, 3, 3, 3))
    x = np.zeros((0, 3, 6, 6))
    y = conv2d_forward(x, w, None, padding=1)
    assert y.shape == (0, 4, 6, 6) and y.dtype == F64
    dx, dw, db = conv2d_backward(np.zeros((0, 4, 6, 6)), x, w, padding=1)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (4,)
    assert not dw.any() and not db.any()


def random_conv_case(draw):
    """Random shapes, strides, paddings, dilations and groups; float64 with finite differences."""
    groups = draw(st.sampled_from([1, 1, 2, 3]), label="groups")
    C = groups * draw(st.integers(1, 3), label="C/groups")
    O = groups * draw(st.integers(1, 3), label="O/groups")
    kh, kw = draw(st.integers(1, 4), label="kh"), draw(st.integers(1, 4), label="kw")
    sh, sw = draw(st.integers(1, 3), label="sh"), draw(st.integers(1, 3), label="sw")
    ph, pw = draw(st.integers(0, 2), label="ph"), draw(st.integers(0, 2), label="pw")
    dh, dw = draw(st.integers(1, 2), label="dh"), draw(st.integers(1, 2), label="dw")
    H = draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), 9), label="H")
    W = draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), 9), label="W")
    N = draw(st.integers(1, 3), label="N")
    seed = draw(st.integers(0, 2 ** 16), label="seed")
    r = np.random.default_rng(seed)
    x = r.standard_normal((N, C, H, W))
    w = r.standard_normal((O, C // groups, kh, kw))
    b = r.standard_normal(O)
    run_conv(x, w, b, F64, stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups)


@pytest.mark.parametrize("min_channels", ALGORITHMS.values(), ids=list(ALGORITHMS))
@settings(max_examples=25, deadline=None, derandomize=True)
@given(data=st.data())
def test_conv2d_random_geometry(data, min_channels):
    with mock.patch.object(conv, "CHANNELS_LAST_MIN", min_channels):
        random_conv_case(data.draw)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@pytest.mark.parametrize("min_channels", ALGORITHMS.values(), ids=list(ALGORITHMS))
@given(data=st.data())
def test_conv2d_random_geometry_thorough(data, min_channels):
    # Not derandomised: each slow run explores new cases (failures are kept in .hypothesis/).
    with mock.patch.object(conv, "CHANNELS_LAST_MIN", min_channels):
        random_conv_case(data.draw)


# ---------------------------------------------------------------------------------------------
# torch as a cross-check (float32)

TORCH_CASES = [
    ("basic", 2, 3, 12, 12, 8, 3, 3, dict(padding=1)),
    ("strided_dilated", 2, 4, 15, 13, 6, 3, 5,
     dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))),
    ("grouped", 3, 6, 10, 10, 9, 3, 3, dict(groups=3, stride=2)),
    ("depthwise", 2, 8, 14, 14, 16, 3, 3, dict(groups=8, padding=1)),
    ("pointwise", 2, 16, 7, 7, 8, 1, 1, {}),
    ("lenet_conv2", 4, 20, 12, 12, 50, 5, 5, {}),
]


@pytest.mark.parametrize("case", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_conv2d_matches_torch(case, rng):
    torch = pytest.importorskip("torch")
    _, N, C, H, W, O, kh, kw, geom = case
    groups = geom.get("groups", 1)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((O, C // groups, kh, kw)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, **geom)
    dy = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    (ty * torch.tensor(dy)).sum().backward()
    y = conv2d_forward(x, w, b, **geom)
    assert_close(y, ty.detach().numpy(), 1e-5, "conv2d vs torch")
    dx, dw, db = conv2d_backward(dy, x, w, **geom)
    for mine, theirs, label in ((dx, tx, "dx"), (dw, tw, "dweight"), (db, tb, "dbias")):
        assert_close(mine, theirs.grad.numpy(), 1e-5, f"conv2d {label} vs torch")


# ---------------------------------------------------------------------------------------------
# Bad input


def _ok(rng, dtype=np.float64):
    return (rng.standard_normal((2, 4, 8, 8)).astype(dtype),
            rng.standard_normal((6, 4, 3, 3)).astype(dtype), np.zeros(6, dtype))


def test_wrong_ndim(rng):
    x, w, b = _ok(rng)
    with pytest.raises(ValueError,
                       match=r"conv1 \(Convolution\): input must have 4 axes.*\(4, 8, 8\)"):
        conv2d_forward(x[0], w, b, name="conv1")
    with pytest.raises(ValueError, match=r"weight must have 4 axes"):
        conv2d_forward(x, w[0], b)
    with pytest.raises(ValueError, match=r"bias must have 1 axes"):
        conv2d_forward(x, w, b[None])


def test_channel_mismatch_names_layer_and_shapes(rng):
    x = rng.standard_normal((1, 16, 12, 12))
    w = rng.standard_normal((50, 20, 5, 5))
    with pytest.raises(ValueError) as e:
        conv2d_forward(x, w, name="conv2")
    msg = str(e.value)
    assert msg.startswith("conv2 (Convolution):"), msg
    assert "(50, 20, 5, 5)" in msg and "16" in msg, msg
    with pytest.raises(ValueError, match=r"conv2 \(Convolution\).*\(50, 20, 5, 5\).*16"):
        conv2d_backward(np.zeros((1, 50, 8, 8)), x, w, name="conv2")


def test_groups_must_divide_channels(rng):
    x = rng.standard_normal((1, 6, 5, 5))
    with pytest.raises(ValueError, match=r"groups=4 must divide both input channels 6"):
        conv2d_forward(x, rng.standard_normal((4, 1, 3, 3)), groups=4)
    with pytest.raises(ValueError, match=r"groups=2 must divide .* output channels 3"):
        conv2d_forward(x, rng.standard_normal((3, 3, 3, 3)), groups=2)
    with pytest.raises(ValueError, match=r"expected 3 per group with groups=2"):
        conv2d_forward(x, rng.standard_normal((4, 6, 3, 3)), groups=2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="groups must be a positive integer"):
            conv2d_forward(x, rng.standard_normal((4, 6, 3, 3)), groups=bad)


def test_bias_of_wrong_length(rng):
    x, w, _ = _ok(rng)
    with pytest.raises(ValueError, match=r"bias shape \(5,\) does not match output channels 6"):
        conv2d_forward(x, w, np.zeros(5))


@pytest.mark.parametrize("which", ["input", "weight", "bias"])
def test_int_dtype_is_a_type_error(which, rng):
    args = dict(zip(("input", "weight", "bias"), _ok(rng)))
    args[which] = args[which].astype(np.int32)
    with pytest.raises(TypeError, match=f"{which} must be float32 or float64, got int32"):
        conv2d_forward(args["input"], args["weight"], args["bias"])


@pytest.mark.parametrize("which", ["weight", "bias", "output gradient"])
def test_mixed_float_dtypes_are_a_type_error(which, rng):
    x, w, b = _ok(rng, np.float32)
    dy = np.zeros((2, 6, 6, 6), np.float32)
    if which == "weight":
        w = w.astype(np.float64)
    elif which == "bias":
        b = b.astype(np.float64)
    else:
        dy = dy.astype(np.float64)
    with pytest.raises(TypeError, match=f"{which} is float64 but the input is float32"):
        if which == "output gradient":
            conv2d_backward(dy, x, w)
        else:
            conv2d_forward(x, w, b)


def test_not_an_array_is_a_type_error(rng):
    x, w, b = _ok(rng)
    with pytest.raises(TypeError, match="input must be a numpy array, got list"):
        conv2d_forward(x.tolist(), w, b)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_non_finite_values_are_rejected(bad, which, rng):
    args = list(_ok(rng))
    args[which].flat[3] = bad
    with pytest.raises(ValueError, match=r"1 non-finite value"):
        conv2d_forward(*args, name="conv1")
    if which == 0:
        with pytest.raises(ValueError, match=r"conv1 \(Convolution\): input has 1 non-finite"):
            conv2d_backward(np.zeros((2, 6, 6, 6)), args[0], args[1], name="conv1")


def test_non_finite_output_gradient_is_rejected(rng):
    x, w, _ = _ok(rng)
    dy = np.zeros((2, 6, 6, 6))
    dy[1, 2, 3, 4] = np.nan
    with pytest.raises(ValueError, match="output gradient has 1 non-finite"):
        conv2d_backward(dy, x, w)


def test_output_gradient_of_wrong_shape(rng):
    x, w, _ = _ok(rng)
    with pytest.raises(ValueError, match=r"output gradient shape \(2, 6, 5, 6\) does not match "
                                         r"the output \(2, 6, 6, 6\)"):
        conv2d_backward(np.zeros((2, 6, 5, 6)), x, w)


@pytest.mark.parametrize("shape,geom", [
    ((1, 1, 4, 4), dict()),  # 5×5 kernel on 4×4
    ((1, 1, 6, 9), dict(dilation=3)),  # dilated kernel spans 13 > 6
    ((1, 1, 2, 9), dict(padding=(1, 0))),  # 4 rows padded, still < 5
])
def test_kernel_that_does_not_fit(shape, geom, rng):
    with pytest.raises(ValueError, match="does not fit the input"):
        conv2d_forward(rng.standard_normal(shape), rng.standard_normal((2, 1, 5, 5)), **geom)


@pytest.mark.parametrize("geom,match", [
    (dict(padding=-1), "padding must be >= 0"),
    (dict(padding=(0, -2)), "padding must be >= 0"),
    (dict(stride=0), "stride must be >= 1"),
    (dict(stride=(1, 0)), "stride must be >= 1"),
    (dict(dilation=0), "dilation must be >= 1"),
    (dict(stride=(1, 2, 3)), "stride must be an int or an \\(h, w\\) pair"),
    (dict(padding=1.0), "padding must be an int or an \\(h, w\\) pair"),
    (dict(padding=(1.0, 1)), "padding must be integers"),
])
def test_bad_geometry_arguments(geom, match, rng):
    x, w, b = _ok(rng)
    with pytest.raises(ValueError, match=match):
        conv2d_forward(x, w, b, **geom)
