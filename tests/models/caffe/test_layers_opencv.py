"""Every supported Caffe layer type in small nets written here (prototxt by hand, caffemodel
with the project's schema), read by robustcnn and by OpenCV's Caffe importer: each layer's
output agrees within float32 tolerance.

Two options OpenCV 4.11 does not read, checked against NumPy instead: LRN's ``k`` (OpenCV
keeps 1) and InnerProduct's ``transpose`` (OpenCV reads the (in, out) blob as (out, in)).
"""

import numpy as np
import pytest
from caffe_files import caffemodel_bytes, layer_outputs, opencv_outputs, random_caffe_weights
from helpers import assert_close

from robustcnn.models.caffe import load_caffe

pytest.importorskip("google.protobuf", reason="protobuf (the caffe extra) writes the test files")


def header(shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'name: "t"\ninput: "data"\ninput_shape {{ {dims} }}\n'


def layer(name, ltype, bottom, top=None, body=""):
    bottoms = "".join(f' bottom: "{b}"' for b in ([bottom] if isinstance(bottom, str) else bottom))
    return f'layer {{ name: "{name}" type: "{ltype}"{bottoms} top: "{top or name}" {body} }}\n'


def conv(name, bottom, body, top=None):
    return layer(name, "Convolution", bottom, top, f"convolution_param {{ {body} }}")


CASES = {
    "conv": ((4, 9, 9), [conv("c", "data", "num_output: 5 kernel_size: 3 pad: 1 stride: 2")]),
    "conv_per_axis": ((3, 9, 8), [conv("c", "data", "num_output: 4 kernel_h: 3 kernel_w: 2 "
                                                     "stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0")]),
    "conv_two_values": ((3, 9, 8), [conv("c", "data", "num_output: 4 kernel_size: 3 "
                                                       "kernel_size: 1 stride: 1 stride: 2 "
                                                       "pad: 0 pad: 1")]),
    "conv_group_dilation": ((4, 11, 10), [conv("c", "data", "num_output: 6 kernel_size: 3 "
                                                             "group: 2 dilation: 2 pad: 2 "
                                                             "bias_term: false")]),
    "conv_depthwise": ((4, 7, 7), [conv("c", "data", "num_output: 4 group: 4 kernel_size: 3")]),
    "inner_product": ((3, 4, 5), [layer("fc", "InnerProduct", "data", body=
                                        "inner_product_param { num_output: 7 }")]),
    "max_pool": ((3, 10, 9), [layer("p", "Pooling", "data", body="pooling_param { pool: MAX "
                                    "kernel_size: 3 stride: 2 pad: 1 }")]),
    "ave_pool": ((3, 10, 9), [layer("p", "Pooling", "data", body="pooling_param { pool: AVE "
                                    "kernel_size: 3 stride: 2 pad: 1 }")]),
    "pool_per_axis": ((3, 10, 9), [layer("p", "Pooling", "data", body=
                                         "pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 "
                                         "stride_h: 2 stride_w: 1 }")]),
    "global_ave": ((5, 6, 7), [layer("p", "Pooling", "data", body=
                                     "pooling_param { pool: AVE global_pooling: true }")]),
    "global_max": ((5, 6, 7), [layer("p", "Pooling", "data", body=
                                     "pooling_param { pool: MAX global_pooling: true }")]),
    "leaky_relu": ((3, 5, 5), [conv("c", "data", "num_output: 4 kernel_size: 1"),
                               layer("r", "ReLU", "c", "c", "relu_param { negative_slope: 0.1 }")]),
    "prelu": ((3, 5, 5), [layer("p", "PReLU", "data")]),
    "prelu_shared": ((3, 5, 5), [layer("p", "PReLU", "data", body=
                                       "prelu_param { channel_shared: true }")]),
    "prelu_flat": ((6,), [layer("p", "PReLU", "data")]),
    "lrn": ((7, 4, 4), [layer("n", "LRN", "data", body=
                              "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 }")]),
    "lrn_within": ((3, 6, 5), [layer("n", "LRN", "data", body=
                                     "lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 "
                                     "alpha: 0.5 beta: 0.75 }")]),
    "dropout": ((3, 4, 4), [layer("d", "Dropout", "data", "data",
                                  "dropout_param { dropout_ratio: 0.3 }"),
                            layer("fc", "InnerProduct", "data", body=
                                  "inner_product_param { num_output: 3 }")]),
    "softmax": ((3, 4, 4), [layer("fc", "InnerProduct", "data", body=
                                  "inner_product_param { num_output: 6 }"),
                            layer("prob", "Softmax", "fc")]),
    "softmax_over_pool": ((5, 6, 6), [layer("p", "Pooling", "data", body=
                                            "pooling_param { pool: AVE global_pooling: true }"),
                                      layer("prob", "Softmax", "p")]),
    "concat": ((3, 6, 6), [conv("a", "data", "num_output: 2 kernel_size: 1"),
                           conv("b", "data", "num_output: 3 kernel_size: 3 pad: 1"),
                           layer("cat", "Concat", ["a", "b"])]),
    "concat_axis2": ((3, 6, 6), [conv("a", "data", "num_output: 2 kernel_size: 1"),
                                 conv("b", "data", "num_output: 2 kernel_h: 3 kernel_w: 1"),
                                 layer("cat", "Concat", ["a", "b"], body=
                                       "concat_param { axis: 2 }")]),
    "eltwise_sum": ((3, 5, 5), [conv("a", "data", "num_output: 4 kernel_size: 1"),
                                conv("b", "data", "num_output: 4 kernel_size: 3 pad: 1"),
                                layer("s", "Eltwise", ["a", "b", "a"], body=
                                      "eltwise_param { operation: SUM coeff: 0.5 coeff: -2 "
                                      "coeff: 1.5 }")]),
    "eltwise_prod": ((3, 5, 5), [conv("a", "data", "num_output: 4 kernel_size: 1"),
                                 conv("b", "data", "num_output: 4 kernel_size: 3 pad: 1"),
                                 layer("s", "Eltwise", ["a", "b"], body=
                                       "eltwise_param { operation: PROD }")]),
    "eltwise_max": ((3, 5, 5), [conv("a", "data", "num_output: 4 kernel_size: 1"),
                                conv("b", "data", "num_output: 4 kernel_size: 3 pad: 1"),
                                layer("s", "Eltwise", ["a", "b"], body=
                                      "eltwise_param { operation: MAX }")]),
    "batch_norm_scale_in_place": ((3, 6, 6), [
        conv("c", "data", "num_output: 4 kernel_size: 3"),
        layer("bn", "BatchNorm", "c", "c", "batch_norm_param { use_global_stats: true "
                                           "eps: 0.001 }"),
        layer("sc", "Scale", "c", "c", "scale_param { bias_term: true }"),
        layer("relu", "ReLU", "c", "c")]),
    "scale_no_bias": ((3, 4, 4), [layer("sc", "Scale", "data")]),
    "flatten": ((3, 4, 5), [layer("f", "Flatten", "data"),
                            layer("fc", "InnerProduct", "f", body=
                                  "inner_product_param { num_output: 3 }")]),
    "flatten_axis2": ((3, 4, 5), [layer("f", "Flatten", "data", body=
                                        "flatten_param { axis: 2 }")]),
    "reshape": ((4, 6, 5), [layer("r", "Reshape", "data", body=
                                  "reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 5 } }")]),
    "reshape_axis": ((4, 6, 5), [layer("r", "Reshape", "data", body=
                                       "reshape_param { shape { dim: 3 dim: 2 } axis: 2 "
                                       "num_axes: 1 }")]),
}


def run_case(tmp_path, cv2, shape, body, seed=0, v1_weights=False):
    text = header((2,) + shape) + "".join(body)
    proto = tmp_path / "net.prototxt"
    proto.write_text(text)
    rng = np.random.default_rng(seed)
    weights = random_caffe_weights(load_caffe(proto), rng)
    model = tmp_path / "net.caffemodel"
    model.write_bytes(caffemodel_bytes(weights, v1=v1_weights))
    net = load_caffe(proto, model)
    x = rng.standard_normal((2,) + shape).astype(np.float32)
    ours = layer_outputs(net, x)
    theirs = opencv_outputs(cv2, proto, model, x, list(ours))
    for name, y in ours.items():
        assert_close(y, theirs[name].reshape(y.shape), 1e-5, f"{name} vs OpenCV", atol=1e-6)
    return net, ours


@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_layer_matches_opencv(case, tmp_path, cv2):
    shape, body = CASES[case]
    net, ours = run_case(tmp_path, cv2, shape, body)
    assert len(ours) == len(body)


V1_NET = '''name: "v1"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
         convolution_param { num_output: 4 kernel_size: 3 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "pool" type: POOLING bottom: "conv" top: "pool"
         pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "ip" type: INNER_PRODUCT bottom: "pool" top: "ip"
         inner_product_param { num_output: 5 } }
layers { name: "prob" type: SOFTMAX bottom: "ip" top: "prob" }
'''


def test_v1_layers_with_legacy_blob_shapes_match_opencv(tmp_path, cv2):
    """The deprecated format: ``layers`` entries, enum types, blobs shaped by num/channels/
    height/width (the inner product's weight as (1, 1, 5, 36))."""
    proto = tmp_path / "net.prototxt"
    proto.write_text(V1_NET)
    rng = np.random.default_rng(1)
    weights = random_caffe_weights(load_caffe(proto), rng)
    model = tmp_path / "net.caffemodel"
    model.write_bytes(caffemodel_bytes(weights, v1=True, legacy=True))
    net = load_caffe(proto, model)
    assert [l.type for l in net.layers] == ["Convolution", "ReLU", "Pooling", "InnerProduct",
                                            "Softmax"]
    np.testing.assert_array_equal(net.layer("ip").params["weight"],
                                  weights["ip"][0].astype(np.float32))
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    ours = layer_outputs(net, x)
    theirs = opencv_outputs(cv2, proto, model, x, list(ours))
    for name, y in ours.items():
        assert_close(y, theirs[name].reshape(y.shape), 1e-5, f"V1 {name} vs OpenCV", atol=1e-6)


def test_lrn_k_and_inner_product_transpose_match_numpy(tmp_path):
    text = header((2, 5, 2, 3)) + layer("n", "LRN", "data", body=
                                        "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }") \
        + layer("fc", "InnerProduct", "n", body="inner_product_param { num_output: 4 "
                                                "transpose: true }")
    proto = tmp_path / "net.prototxt"
    proto.write_text(text)
    rng = np.random.default_rng(2)
    w, b = rng.standard_normal((30, 4)), rng.standard_normal(4)  # Caffe's (in, out) blob
    model = tmp_path / "net.caffemodel"
    model.write_bytes(caffemodel_bytes({"fc": [w, b]}))
    net = load_caffe(proto, model)
    x = rng.standard_normal((2, 5, 2, 3))
    padded = np.pad(x.astype(np.float32).astype(np.float64) ** 2, ((0, 0), (1, 1), (0, 0), (0, 0)))
    window = padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]
    lrn = x.astype(np.float32) * (2.0 + 0.5 / 3 * window) ** -0.75
    ref = lrn.reshape(2, 30) @ w.astype(np.float32) + b.astype(np.float32)
    ours = layer_outputs(net, x.astype(np.float32))
    assert_close(ours["n"], lrn, 1e-6, "LRN with k = 2")
    assert_close(ours["fc"], ref, 1e-5, "InnerProduct with transpose")
