"""robustcnn.models.onnx: each supported operator and option in small models built here,
against onnxruntime on the same file, at the opsets whose semantics differ; each imported net
written back with save_onnx reads back with the same spec and weights, and onnxruntime runs the
written file with the same outputs."""

import numpy as np
import pytest
from helpers import assert_close
from onnx import helper
from onnx_files import model, ort_outputs

from robustcnn.models.onnx import load_onnx, onnx_model

RNG = np.random.default_rng(0)


def w(*shape, low=-1.0, high=1.0):
    return RNG.uniform(low, high, shape).astype(np.float32)


N = helper.make_node


def conv_cases():
    yield "conv_groups_dilation_pads", [
        N("Conv", ["x", "W", "B"], ["y"], group=2, dilations=[2, 1], pads=[1, 2, 1, 2],
          strides=[1, 2])], (4, 9, 8), {"W": w(6, 2, 3, 3), "B": w(6)}, 17
    yield "conv_uneven_pads_no_bias", [
        N("Conv", ["x", "W"], ["y"], pads=[0, 1, 2, 0], kernel_shape=[3, 2])], \
        (3, 7, 6), {"W": w(4, 3, 3, 2)}, 11
    for auto in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        yield f"conv_auto_pad_{auto.lower()}", [
            N("Conv", ["x", "W", "B"], ["y"], auto_pad=auto, strides=[2, 2])], \
            (3, 8, 7), {"W": w(5, 3, 4, 3), "B": w(5)}, 7
    yield "depthwise_then_add_bias", [
        N("Conv", ["x", "W"], ["c"], group=4, pads=[1, 1, 1, 1]),
        N("Add", ["c", "b"], ["y"])], (4, 6, 6), {"W": w(4, 1, 3, 3), "b": w(1, 4, 1, 1)}, 13


def dense_cases():
    yield "gemm_alpha_beta_transB", [
        N("Flatten", ["x"], ["f"]),
        N("Gemm", ["f", "W", "C"], ["y"], alpha=0.5, beta=2.0, transB=1)], \
        (2, 3, 2), {"W": w(5, 12), "C": w(5)}, 9
    yield "gemm_no_trans_row_bias", [
        N("Gemm", ["x", "W", "C"], ["y"])], (6,), {"W": w(6, 4), "C": w(1, 4)}, 11
    yield "matmul_add", [
        N("MatMul", ["x", "W"], ["m"]), N("Add", ["m", "b"], ["y"])], \
        (7,), {"W": w(7, 3), "b": w(3)}, 13
    yield "matmul_relu_matmul", [
        N("MatMul", ["x", "W1"], ["h"]), N("Relu", ["h"], ["r"]),
        N("MatMul", ["r", "W2"], ["y"])], \
        (5,), {"W1": w(5, 6), "W2": w(6, 2)}, 17


def pool_cases():
    for ceil in (0, 1):
        for count in (0, 1):
            yield f"avgpool_ceil{ceil}_count{count}", [
                N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                  pads=[1, 1, 1, 1], ceil_mode=ceil, count_include_pad=count)], \
                (2, 8, 9), {}, 11
        yield f"maxpool_ceil{ceil}_uneven", [
            N("MaxPool", ["x"], ["y"], kernel_shape=[3, 2], strides=[2, 2],
              pads=[1, 0, 1, 1], ceil_mode=ceil)], (3, 9, 8), {}, 12
    yield "avgpool_uneven_count_pad", [
        N("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], pads=[0, 0, 1, 1],
          count_include_pad=1)], (2, 5, 5), {}, 7
    yield "maxpool_auto_same", [
        N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")], \
        (2, 7, 8), {}, 8
    yield "global_pools_and_mean", [
        N("GlobalMaxPool", ["x"], ["a"]), N("GlobalAveragePool", ["x"], ["b"]),
        N("ReduceMean", ["x"], ["c"], axes=[2, 3], keepdims=1),
        N("Sum", ["a", "b", "c"], ["y"])], (3, 5, 4), {}, 13
    yield "reduce_mean_opset18", [
        N("ReduceMean", ["x", "axes"], ["y"], keepdims=0)], (3, 5, 4), \
        {"axes": np.array([-1, -2], np.int64)}, 18


def activation_cases():
    yield "relu_leaky_prelu", [
        N("LeakyRelu", ["x"], ["a"], alpha=0.1), N("PRelu", ["a", "s"], ["b"]),
        N("Relu", ["b"], ["c"]), N("PRelu", ["c", "t"], ["y"])], (3, 4, 4), \
        {"s": w(3, 1, 1), "t": np.array([0.3], np.float32)}, 9
    yield "clip_relu6_opset7", [N("Clip", ["x"], ["y"], min=0.0, max=6.0)], (3, 4), {}, 7
    yield "clip_relu6_inputs", [
        N("Mul", ["x", "k"], ["m"]), N("Clip", ["m", "lo", "hi"], ["y"])], (3, 4, 4), \
        {"k": np.float32(5.0), "lo": np.float32(0), "hi": np.float32(6)}, 13
    yield "sigmoid_hard_sigmoid_hard_swish", [
        N("Sigmoid", ["x"], ["a"]), N("HardSigmoid", ["x"], ["b"], alpha=0.3, beta=0.4),
        N("HardSwish", ["x"], ["c"]), N("Sum", ["a", "b", "c"], ["y"])], (2, 3, 3), {}, 14
    yield "softmax_opset11_over_chw", [N("Softmax", ["x"], ["y"], axis=1)], (2, 3, 4), {}, 11
    yield "softmax_opset13_k11", [N("Softmax", ["x"], ["y"], axis=1)], (5, 1, 1), {}, 13
    yield "softmax_last_axis", [N("Softmax", ["x"], ["y"])], (7,), {}, 17
    yield "lrn_batchnorm_dropout", [
        N("LRN", ["x"], ["l"], size=3, alpha=0.2, beta=0.6, bias=2.0),
        N("BatchNormalization", ["l", "g", "b", "m", "v"], ["n"], epsilon=1e-3),
        N("Dropout", ["n"], ["y"], ratio=0.3)], (4, 3, 3), \
        {"g": w(4), "b": w(4), "m": w(4), "v": w(4, low=0.5, high=2.0)}, 7


def arithmetic_cases():
    yield "scale_mul_add_sub_div", [
        N("Mul", ["x", "a"], ["m"]), N("Add", ["m", "b"], ["p"]), N("Sub", ["p", "c"], ["s"]),
        N("Div", ["s", "d"], ["y"])], (3, 2, 2), \
        {"a": w(3, 1, 1), "b": w(1, 3, 1, 1), "c": np.float32(0.5),
         "d": w(3, 1, 1, low=1, high=2)}, 13
    yield "tensor_add_sub_mul_max_concat", [
        N("Relu", ["x"], ["r"]), N("Add", ["x", "r"], ["a"]), N("Sub", ["a", "x"], ["s"]),
        N("Mul", ["s", "x"], ["m"]), N("Max", ["m", "x", "s"], ["mx"]),
        N("Concat", ["mx", "x"], ["y"], axis=-3)], (2, 3, 3), {}, 13


def shape_cases():
    # torch's x.view(x.size(0), -1): Shape → Gather → Unsqueeze → Concat → Reshape
    yield "shape_driven_reshape", [
        N("Shape", ["x"], ["sh"]), N("Gather", ["sh", "zero"], ["n"], axis=0),
        N("Unsqueeze", ["n"], ["n1"], axes=[0]), N("Concat", ["n1", "minus1"], ["t"], axis=0),
        N("Reshape", ["x", "t"], ["y"])], (2, 3, 4), \
        {"zero": np.array(0, np.int64), "minus1": np.array([-1], np.int64)}, 11
    yield "shape_driven_reshape_opset13", [
        N("Shape", ["x"], ["sh"]), N("Slice", ["sh", "s0", "s1"], ["n1"]),
        N("Concat", ["n1", "rest"], ["t"], axis=0), N("Reshape", ["x", "t"], ["r"]),
        N("Unsqueeze", ["r", "ax"], ["u"]), N("Squeeze", ["u", "ax"], ["y"])], (2, 3, 4), \
        {"s0": np.array([0], np.int64), "s1": np.array([1], np.int64),
         "rest": np.array([6, 4], np.int64), "ax": np.array([2], np.int64)}, 13
    yield "channel_shuffle", [
        N("Reshape", ["x", "s1"], ["r"]), N("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
        N("Reshape", ["t", "s2"], ["y"])], (6, 3, 2), \
        {"s1": np.array([0, 2, 3, 3, 2], np.int64), "s2": np.array([0, -1, 3, 2], np.int64)}, 9
    yield "flatten_axis2_pad_identity_constant", [
        N("Constant", [], ["pads"], value=helper.make_tensor(
            "p", 7, [8], [0, 0, 1, 0, 0, 0, 2, 3])),
        N("Pad", ["x", "pads"], ["p"]), N("Identity", ["p"], ["i"]),
        N("Reshape", ["i", "s"], ["r"]), N("Flatten", ["r"], ["y"], axis=2)], (2, 3, 3), \
        {"s": np.array([0, 1, 2, 6, 6], np.int64)}, 13
    yield "pad_opset7_constant_of_shape_weights", [
        N("Pad", ["x"], ["p"], pads=[0, 0, 1, 1, 0, 0, 1, 1]),
        N("ConstantOfShape", ["wshape"], ["W"], value=helper.make_tensor("v", 1, [1], [0.25])),
        N("Conv", ["p", "W"], ["y"])], (2, 3, 3), \
        {"wshape": np.array([3, 2, 2, 2], np.int64)}, 9


CASES = {c[0]: c[1:] for gen in (conv_cases, dense_cases, pool_cases, activation_cases,
                                 arithmetic_cases, shape_cases) for c in gen()}


@pytest.mark.parametrize("name", CASES)
def test_operator_matches_onnxruntime(name, ort, tmp_path):
    nodes, x_shape, inits, opset = CASES[name]
    m = model(nodes, x_shape, nodes[-1].output[0], inits=inits, opset=opset)
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(m.SerializeToString())
    net = load_onnx(path)
    x = RNG.standard_normal((2, *x_shape)).astype(np.float32) * 2
    (theirs,) = ort_outputs(ort, m, x)
    ours = net.forward(x)
    assert_close(ours, theirs, 1e-5, f"{name} vs onnxruntime", atol=1e-6)
    # Written back: the same spec and weights, and onnxruntime agrees.
    written = onnx_model(net)
    again = load_onnx(written.SerializeToString())
    assert again.spec() == net.spec()
    state, other = net.state_dict(), again.state_dict()
    assert sorted(state) == sorted(other)
    for key in state:
        np.testing.assert_array_equal(other[key], state[key], err_msg=key)
    (rerun,) = ort_outputs(ort, written, x)
    assert_close(rerun, ours, 1e-5, f"{name} written, in onnxruntime", atol=1e-6)
