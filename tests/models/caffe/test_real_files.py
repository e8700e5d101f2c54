"""Real third-party Caffe files against OpenCV's importer: Yahoo's open_nsfw ResNet-50-1by2
(Convolution, BatchNorm, Scale, ReLU, Eltwise, Pooling, InnerProduct, Softmax) compared layer
by layer, and the Deep Compression SqueezeNet prototxt shipped with the package, read by
protobuf and by the project's text-format parser."""

import numpy as np
import pytest
from caffe_files import layer_outputs, opencv_outputs
from helpers import assert_close

from robustcnn.engine import Net
from robustcnn.models.caffe import load_caffe, read_caffemodel, read_prototxt
from robustcnn.models.squeezenet_dc import PROTOTXT

pytest.importorskip("google.protobuf", reason="protobuf (the caffe extra) writes the test files")


def nsfw_input(n=2, seed=0):
    """Pixels in 0–255 minus open_nsfw's BGR mean (its classify script's preprocessing)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, 3, 224, 224)) - np.array([104.0, 117.0, 123.0])[:, None, None]
    return x.astype(np.float32)


def test_open_nsfw_matches_opencv_layer_by_layer(nsfw_files, cv2):
    prototxt, caffemodel = nsfw_files
    net = load_caffe(prototxt, caffemodel)
    assert isinstance(net, Net) and net.input_shape == (3, 224, 224)
    assert net.output_shape == (2,)
    # Every weight of the file is in the net: 53 convolutions, 53 batch norms, 53 scales, 1 FC.
    counts = {}
    for layer in net.layers:
        counts[layer.type] = counts.get(layer.type, 0) + 1
    assert {k: counts[k] for k in ("Convolution", "BatchNorm", "Scale", "Eltwise",
                                   "InnerProduct")} == {"Convolution": 53, "BatchNorm": 53,
                                                        "Scale": 53, "Eltwise": 16,
                                                        "InnerProduct": 1}
    x = nsfw_input()
    ours = layer_outputs(net, x)
    theirs = opencv_outputs(cv2, prototxt, caffemodel, x, list(ours))
    for name, y in ours.items():
        # float32 through up to 50 layers: 1e-4 of each blob's scale (measured: 1.1e-5)
        assert_close(y, theirs[name].reshape(y.shape), 1e-4, f"open_nsfw {name}")
    probs = ours["prob"]
    assert_close(probs, theirs["prob"].reshape(probs.shape), 0, "open_nsfw prob", atol=1e-6)
    # The whole net as a Net agrees with the layer walk.
    assert_close(net.forward(x), probs, 1e-6, "Net.forward vs layer walk")


def test_open_nsfw_caffemodel_holds_the_training_net(nsfw_files):
    """The caffemodel is the training net (MemoryData, SoftmaxWithLoss, auto-inserted Split
    layers); its blobs match the deploy net's layers by name."""
    msg = read_caffemodel(nsfw_files[1])
    types = {layer.type for layer in msg.layer}
    assert {"MemoryData", "SoftmaxWithLoss", "Split"} <= types
    deploy = read_prototxt(nsfw_files[0])
    assert deploy.name == "ResNet_50_1by2_nsfw"
    blob_layers = {layer.name for layer in msg.layer if len(layer.blobs)}
    assert blob_layers == {layer.name for layer in deploy.layer
                           if layer.type in ("Convolution", "BatchNorm", "Scale",
                                             "InnerProduct")}


def test_squeezenet_prototxt_builds_the_same_net_with_either_reader():
    ours = load_caffe(PROTOTXT, parser="protobuf")
    minimal = load_caffe(PROTOTXT, parser="text")
    spec, ref = ours.spec(), minimal.spec()
    assert spec["input_shape"] == ref["input_shape"] == [3, 227, 227]
    assert [(l["name"], l["class"]) for l in spec["layers"]] == \
        [(l["name"], l["class"]) for l in ref["layers"]]
    assert spec["layers"] == ref["layers"]
    assert ours.num_params() == minimal.num_params() == 1248424


def test_squeezenet_prototxt_with_random_weights_matches_opencv(tmp_path, cv2):
    """The Deep Compression SqueezeNet deploy file with weights drawn here, written as a
    caffemodel with the schema, read by both importers."""
    from caffe_files import caffemodel_bytes

    net = load_caffe(PROTOTXT)
    rng = np.random.default_rng(3)
    weights = {}
    for layer in net.layers:
        if layer.params:
            w = layer.params["weight"]
            fan_in = np.prod(w.shape[1:])
            weights[layer.name] = [rng.standard_normal(w.shape) * np.sqrt(2.0 / fan_in),
                                   rng.standard_normal(w.shape[0]) * 0.1]
    model = tmp_path / "squeezenet.caffemodel"
    model.write_bytes(caffemodel_bytes(weights))
    net = load_caffe(PROTOTXT, model)
    x = rng.standard_normal((1, 3, 227, 227)).astype(np.float32) * 50
    ours = layer_outputs(net, x)
    names = ["conv1", "pool1", "fire2/concat", "fire5/concat", "pool8", "conv_final", "pool_final"]
    theirs = opencv_outputs(cv2, PROTOTXT, model, x, names)
    for name in names:
        assert_close(ours[name], theirs[name].reshape(ours[name].shape), 1e-4,
                     f"squeezenet {name}")
