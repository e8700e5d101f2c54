"""models/onnx/exporter.py: engine nets written as ONNX and run by onnxruntime — LeNet-5, the
Deep Compression SqueezeNet (dense, and with its pruned weights as sparse initializers), a
Caffe-imported and a Keras-imported net, every layer type the exporter writes — and read back
by load_onnx; written atomically; layers with no ONNX operator refused."""

import json

import numpy as np
import onnx
import pytest
from helpers import assert_close
from net_helpers import randomised
from onnx_files import ort_outputs

from robustcnn.engine import (LRN, AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, EltwiseMax,
                              EltwiseProd, EltwiseSum, Flatten, GlobalAvgPool2d, HardSigmoid,
                              HardSwish, Linear, LRNWithin, MaxPool2d, Net, Pad2d, Permute,
                              PReLU, ReLU, ReLU6, Reshape, Scale, Sigmoid, Softmax)
from robustcnn.models.lenet import lenet5
from robustcnn.models.onnx import load_onnx, save_onnx

TOL = 1e-5  # of each output's scale: the outputs within 1e-5


def every_layer_net():
    return randomised(Net([
        Conv2d("conv1", 6, kernel=(3, 2), stride=(1, 2), padding=(1, 0), bottom="data",
               top="c1"),
        BatchNorm("bn1", eps=1e-3, bottom="c1", top="c1"),
        PReLU("prelu1", bottom="c1", top="c1"),
        Conv2d("dw", 6, kernel=3, padding=2, dilation=2, groups=3, bias=False, bottom="c1",
               top="d"),
        Scale("scale", bias=True, bottom="d", top="d"),
        ReLU("leaky", negative_slope=0.05, bottom="d", top="d"),
        EltwiseSum("sum", coeffs=[0.5, -1.0], bottom=["c1", "d"], top="s"),
        EltwiseSum("diff", coeffs=[1.0, -1.0], bottom=["s", "d"], top="s2"),
        EltwiseProd("prod", bottom=["c1", "d", "s2"], top="p"),
        EltwiseMax("max", bottom=["s", "p"], top="m"),
        HardSwish("hswish", bottom="m", top="m"),
        Concat("cat", bottom=["m", "c1"], top="cat"),
        LRN("lrn", local_size=3, alpha=0.3, beta=0.75, bottom="cat", top="lrn"),
        BatchNorm("bn_plain", affine=False, bottom="lrn", top="lrn"),
        Pad2d("pad", ((0, 1), (2, 0)), bottom="lrn", top="padded"),
        MaxPool2d("pool", kernel=3, stride=2, padding=1, bottom="padded", top="pool"),
        AvgPool2d("avg", kernel=2, stride=1, bottom="pool", top="avg"),
        AvgPool2d("avg_same", kernel=3, stride=1, padding=1, count_pad=False, bottom="avg",
                  top="avg2"),
        ReLU6("relu6", bottom="avg2", top="avg2"),
        Sigmoid("sigmoid", bottom="avg2", top="sig"),
        HardSigmoid("hsig", alpha=0.3, beta=0.4, bottom="sig", top="sig"),
        PReLU("prelu2", channel_shared=True, bottom="sig", top="sig"),
        Dropout("drop", p=0.2, bottom="sig", top="sig"),
        Permute("perm", (1, 2, 0), bottom="sig", top="hwc"),
        Reshape("reshape", (12, -1), bottom="hwc", top="r"),
        Flatten("flat", bottom="r", top="f"),
        Linear("fc", 5, bottom="f", top="fc"),
        Scale("fc_scale", bias=False, bottom="fc", top="fc"),
        GlobalAvgPool2d("gap", bottom="pool", top="g"),
        Linear("fc_g", 5, bottom="g", top="fcg"),
        EltwiseSum("logits", bottom=["fc", "fcg"], top="logits"),
        Softmax("prob", bottom="logits", top="prob"),
    ], (3, 9, 8), name="every_layer"), seed=3)


def check_written(net, path, ort, x, *, sparse=False, rtol=TOL):
    """Write ``net``; onnxruntime's output and load_onnx's net agree with it → the read net."""
    save_onnx(net, path, sparse=sparse)
    # (the checker's shape inference does not take a sparse initializer as a weight; ORT does)
    onnx.checker.check_model(onnx.load(str(path)), full_check=not sparse)
    want = net.forward(x)
    (theirs,) = ort_outputs(ort, path, x)
    assert_close(theirs, want, rtol, f"{net.name} in onnxruntime", atol=1e-7)
    again = load_onnx(path)
    assert_close(again.forward(x), want, rtol, f"{net.name} read back", atol=1e-7)
    return again


def test_every_layer_type(ort, tmp_path):
    net = every_layer_net()
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 8)).astype(np.float32)
    again = check_written(net, tmp_path / "every.onnx", ort, x)
    # Written again from the read net: the same spec and weights (the round trip is exact).
    save_onnx(again, tmp_path / "again.onnx")
    third = load_onnx(tmp_path / "again.onnx")
    assert third.spec() == again.spec()
    for key, value in again.state_dict().items():
        np.testing.assert_array_equal(third.state_dict()[key], value, err_msg=key)


def test_lenet5(ort, tmp_path):
    net = randomised(lenet5(), seed=1)
    x = np.random.default_rng(1).uniform(0, 1, (4, 1, 28, 28)).astype(np.float32)
    check_written(net, tmp_path / "lenet5.onnx", ort, x)


def test_deep_compression_squeezenet_dense_and_sparse(ort, tmp_path):
    from robustcnn.models.squeezenet_dc import squeezenet_v1_0_deep_compression

    net = squeezenet_v1_0_deep_compression()
    kinds = {l.weight_format.kind for l in net.layers if hasattr(l, "weight_format")}
    assert kinds == {"sparse_codebook"}
    x = np.random.default_rng(2).uniform(-100, 100, (1, 3, 227, 227)).astype(np.float32)
    dense = check_written(net, tmp_path / "dense.onnx", ort, x)
    sparse = check_written(net, tmp_path / "sparse.onnx", ort, x, sparse=True)
    model = onnx.load(str(tmp_path / "sparse.onnx"))
    # (26 weights; ONNX's int64 indices make them no smaller than dense at this 1/3 density)
    assert len(model.graph.sparse_initializer) == 26
    for key, value in dense.state_dict().items():
        np.testing.assert_array_equal(sparse.state_dict()[key], value, err_msg=key)
        layer, _, what = key.partition("/")
        if what == "weight":
            np.testing.assert_array_equal(value, net.layer(layer).dense_weight(), err_msg=key)


def test_caffe_imported_net(ort, tmp_path):
    pytest.importorskip("google.protobuf")
    from robustcnn.models.caffe import load_caffe

    prototxt = '''name: "small"
input: "data"
input_shape { dim: 1 dim: 2 dim: 9 dim: 9 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 2 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "lrn" type: "LRN" bottom: "pool" top: "lrn" lrn_param { local_size: 3 } }
layer { name: "sum" type: "Eltwise" bottom: "pool" bottom: "lrn" top: "sum"
        eltwise_param { coeff: 1 coeff: -0.5 } }
layer { name: "fc" type: "InnerProduct" bottom: "sum" top: "fc"
        inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''
    net = randomised(load_caffe(prototxt), seed=4)
    net.preprocessing = {"mean_value": [104.0, 117.0], "scale": 1.0}
    x = np.random.default_rng(3).standard_normal((2, 2, 9, 9)).astype(np.float32)
    again = check_written(net, tmp_path / "caffe.onnx", ort, x)
    assert again.preprocessing == net.preprocessing
    assert json.loads(again.metadata["robustcnn.preprocessing"]) == net.preprocessing


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras' torch backend, NumPy 2
def test_keras_imported_net(ort, tmp_path):
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from robustcnn.models.keras import load_keras

    L = keras.layers
    inp = keras.Input((8, 7, 3))
    a = L.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inp)
    a = L.BatchNormalization()(a)
    b = L.DepthwiseConv2D(3, padding="same")(a)
    s = L.Add()([a, b])
    p = L.AveragePooling2D(2, padding="same")(s)
    f = L.Flatten()(p)
    model = keras.Model(inp, L.Dense(3, activation="softmax")(L.Dropout(0.1)(f)))
    rng = np.random.default_rng(5)
    for weight in model.weights:
        shape = tuple(weight.shape)
        weight.assign((rng.uniform(0.5, 1.5, shape) if "variance" in weight.path
                       else rng.standard_normal(shape) * 0.5).astype(np.float32))
    model.save(tmp_path / "k.h5")
    net = load_keras(tmp_path / "k.h5")
    x = rng.standard_normal((2, 3, 8, 7)).astype(np.float32)
    check_written(net, tmp_path / "keras.onnx", ort, x)


def test_refused_layers_and_atomic_write(tmp_path):
    path = tmp_path / "net.onnx"
    net = Net([Conv2d("c", 2, kernel=1), LRNWithin("within")], (1, 3, 3))
    with pytest.raises(ValueError, match=r"within \(LRN\) cannot be written as ONNX: ONNX has "
                                         r"no operator for a LRNWithin layer"):
        save_onnx(net, path)
    assert not path.exists() and not list(tmp_path.iterdir())
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="cannot be written as ONNX"):
        save_onnx(net, path)
    assert path.read_bytes() == b"old"
