"""models/caffe/exporter.py: engine nets written as Caffe files, read back by robustcnn (same
weights, same outputs) and by OpenCV (same outputs within float32 tolerance)."""

import numpy as np
import pytest
from caffe_files import layer_outputs, opencv_outputs
from helpers import assert_close
from net_helpers import randomised

from robustcnn.engine import (LRN, AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, EltwiseMax,
                              EltwiseProd, EltwiseSum, Flatten, GlobalAvgPool2d, Linear,
                              LRNWithin, MaxPool2d, Net, PReLU, ReLU, ReLU6, Reshape, Scale,
                              Softmax)
from robustcnn.models.caffe import load_caffe, read_prototxt, save_caffe
from robustcnn.models.lenet import lenet5

pytest.importorskip("google.protobuf", reason="protobuf (the caffe extra) writes the test files")


def every_layer_net(shared_prelu=False):
    """Every layer type the exporter writes. Caffe writes a shared PReLU slope as a 0-axis
    blob, which OpenCV 4.11 cannot read: the OpenCV comparison uses a per-channel one."""
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
        EltwiseProd("prod", bottom=["c1", "d"], top="p"),
        EltwiseMax("max", bottom=["s", "p"], top="m"),
        Concat("cat", bottom=["m", "c1"], top="cat"),
        LRN("lrn", local_size=3, alpha=0.3, beta=0.75, bottom="cat", top="lrn"),
        LRNWithin("lrn_within", local_size=3, alpha=0.4, beta=0.75, bottom="lrn", top="lrn"),
        MaxPool2d("pool", kernel=3, stride=2, padding=1, bottom="lrn", top="pool"),
        AvgPool2d("avg", kernel=2, stride=1, bottom="pool", top="avg"),
        PReLU("prelu2", channel_shared=shared_prelu, bottom="avg", top="avg"),
        Dropout("drop", p=0.2, bottom="avg", top="avg"),
        Reshape("reshape", (12, -1), bottom="avg", top="r"),
        Flatten("flat", bottom="r", top="f"),
        Linear("fc", 5, bottom="f", top="fc"),
        Softmax("prob", bottom="fc", top="prob"),
    ], (3, 9, 8), name="every_layer"))


NETS = {"every_layer": every_layer_net, "lenet5": lambda: randomised(lenet5())}


@pytest.mark.parametrize("make", NETS.values(), ids=NETS.keys())
def test_round_trip_through_robustcnn_and_opencv(make, tmp_path, cv2):
    net = make()
    proto, model = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    save_caffe(net, proto, model)
    again = load_caffe(proto, model)
    x = np.random.default_rng(1).standard_normal((2,) + net.input_shape).astype(np.float32)
    assert_close(again.forward(x), net.forward(x), 1e-6, f"{net.name} read back")
    ours = layer_outputs(again, x)
    tops = {layer.name: (layer.top or [layer.name])[0] for layer in again.layers}
    theirs = opencv_outputs(cv2, proto, model, x, list(ours), tops=tops)
    for name, y in ours.items():
        assert_close(y, theirs[name].reshape(y.shape), 1e-5, f"{net.name} {name} vs OpenCV",
                     atol=1e-6)
    # Same weights, exactly: each layer's arrays, BatchNorm's affine moved into a Scale.
    for layer in net.layers:
        for key, value in layer.params.items():
            target = again.layer(f"{layer.name}/scale" if key in ("gamma", "beta") else layer.name)
            other = target.params[{"gamma": "weight", "beta": "bias"}.get(key, key)]
            np.testing.assert_array_equal(other, value, err_msg=f"{layer.name}/{key}")


def test_shared_prelu_is_written_as_caffe_writes_it(tmp_path):
    net = every_layer_net(shared_prelu=True)
    proto, model = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    save_caffe(net, proto, model)
    from robustcnn.models.caffe import read_caffemodel

    (blob,) = [l for l in read_caffemodel(model).layer if l.name == "prelu2"][0].blobs
    assert blob.HasField("shape") and list(blob.shape.dim) == [] and len(blob.data) == 1
    again = load_caffe(proto, model)
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 8)).astype(np.float32)
    assert_close(again.forward(x), net.forward(x), 1e-6, "shared PReLU read back")


def test_open_nsfw_round_trip_is_exact(nsfw_files, tmp_path):
    net = load_caffe(*nsfw_files)
    proto, model = tmp_path / "nsfw.prototxt", tmp_path / "nsfw.caffemodel"
    save_caffe(net, proto, model)
    again = load_caffe(proto, model)
    assert [l.config() for l in again.layers] == [l.config() for l in net.layers]
    state, other = net.state_dict(), again.state_dict()
    assert sorted(state) == sorted(other)
    for key in state:
        np.testing.assert_array_equal(other[key], state[key], err_msg=key)
    assert read_prototxt(proto).name == "ResNet_50_1by2_nsfw"


def test_floor_mode_global_pool_and_compressed_weights(tmp_path):
    net = randomised(Net([Conv2d("c", 4, kernel=3), MaxPool2d("p", kernel=2, stride=2,
                                                               ceil_mode=False),
                          GlobalAvgPool2d("g"), Linear("fc", 3)], (2, 8, 8)))
    net.layer("fc").params["weight"][:, ::2] = 0.0
    net.convert("fc", "csr")
    proto = tmp_path / "net.prototxt"
    save_caffe(net, proto, tmp_path / "net.caffemodel")
    assert "round_mode: FLOOR" in proto.read_text()
    assert "global_pooling: true" in proto.read_text()
    again = load_caffe(proto, tmp_path / "net.caffemodel")
    assert again.layer("p").ceil_mode is False
    np.testing.assert_array_equal(again.layer("fc").params["weight"],
                                  net.layer("fc").dense_weight())
    x = np.random.default_rng(0).standard_normal((2, 2, 8, 8)).astype(np.float32)
    assert_close(again.forward(x), net.forward(x), 1e-6, "floor mode, CSR layer")


def test_layers_without_a_caffe_equivalent_are_refused(tmp_path):
    net = Net([Conv2d("c", 2, kernel=1), ReLU6("r6")], (1, 3, 3))
    with pytest.raises(ValueError, match=r"r6 \(ReLU6\) has no Caffe equivalent"):
        save_caffe(net, tmp_path / "x.prototxt")
    assert not (tmp_path / "x.prototxt").exists()
    net = Net([AvgPool2d("avg", kernel=3, stride=1, padding=1, count_pad=False)], (1, 4, 4))
    with pytest.raises(ValueError, match=r"avg \(Pooling\): an average pool that leaves the "
                                         r"padding out of the mean has no Caffe equivalent"):
        save_caffe(net, tmp_path / "x.prototxt")
