"""ONNX models with several outputs and a free input size (issue 15 point 2, issue 16 point 4):
every graph output is a net output, both heads of a fully convolutional net written and read
back and run by onnxruntime at another image size than the file declares; the preprocessing
and input bounds travel in the metadata."""

import json

import numpy as np
import onnx
import pytest
from helpers import assert_close
from net_helpers import randomised
from onnx import TensorProto, helper
from onnx_files import model, ort_outputs

from robustcnn.engine import Conv2d, MaxPool2d, Net, PReLU, Softmax
from robustcnn.models.onnx import load_onnx, save_onnx


def pnet():
    """MTCNN's P-Net layout: a face probability map and a box map over the same features."""
    return randomised(Net([
        Conv2d("conv1", 10, kernel=3), PReLU("prelu1"), MaxPool2d("pool1", 2, 2),
        Conv2d("conv2", 16, kernel=3), PReLU("prelu2"),
        Conv2d("conv3", 32, kernel=3), PReLU("prelu3"),
        Conv2d("conv4-1", 2, kernel=1, bottom="conv3", top="conv4-1"),
        Softmax("prob1", bottom="conv4-1", top="prob1"),
        Conv2d("conv4-2", 4, kernel=1, bottom="conv3", top="conv4-2"),
    ], (3, 12, 12), output="prob1", outputs=["conv4-2"], name="pnet"), seed=5)


def free_size(path):
    """The file with its input's and outputs' H and W made symbolic (as exporters that allow
    any image size write them)."""
    m = onnx.load(str(path))
    for value in list(m.graph.input) + list(m.graph.output):
        dims = value.type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "H", "W"
    onnx.save(m, str(path))
    return path


def test_every_output_is_written_and_read(ort, tmp_path):
    net = pnet()
    path = tmp_path / "pnet.onnx"
    save_onnx(net, path)
    m = onnx.load(str(path))
    assert [o.name for o in m.graph.output] == ["prob1", "conv4-2"]
    again = load_onnx(path)
    assert again.output == "prob1" and again.outputs == ("prob1", "conv4-2")
    x = np.random.default_rng(0).uniform(0, 1, (3, 3, 12, 12)).astype(np.float32)
    ours = again.forward(x, output=["prob1", "conv4-2"])
    theirs = ort_outputs(ort, path, x)
    assert_close(ours["prob1"], theirs[0], 1e-5, "prob1")
    assert_close(ours["conv4-2"], theirs[1], 1e-5, "conv4-2")
    assert load_onnx(path, output="conv4-2").outputs == ("conv4-2",)


@pytest.mark.parametrize("shape", [(3, 48, 40), (3, 13, 29)])
def test_another_input_size_matches_onnxruntime(ort, tmp_path, shape):
    net = pnet()
    path = tmp_path / "pnet.onnx"
    save_onnx(net, path)
    free_size(path)
    x = np.random.default_rng(1).uniform(0, 1, (2,) + shape).astype(np.float32)
    theirs = ort_outputs(ort, path, x)
    for ours in (load_onnx(path, input_shape=shape), net.at_input_shape(shape),
                 load_onnx(path, input_shape=(3, 12, 12)).at_input_shape(shape)):
        out = ours.forward(x, output=["prob1", "conv4-2"])
        assert out["prob1"].shape == theirs[0].shape
        assert_close(out["prob1"], theirs[0], 1e-5, f"prob1 at {shape}")
        assert_close(out["conv4-2"], theirs[1], 1e-5, f"conv4-2 at {shape}")
    with pytest.raises(ValueError, match=r"its shape \[None, 3, None, None\] must be known"):
        load_onnx(path)  # symbolic H and W: the size must be given


def test_softmax_over_channels_at_every_position(ort):
    """ONNX Softmax(axis=1) of a 4-D tensor (opset 13+) is the engine's per-position Softmax."""
    m = model([helper.make_node("Softmax", ["x"], ["y"], axis=1)], (3, 4, 5), "y")
    net = load_onnx(m.SerializeToString())
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 5)).astype(np.float32)
    (theirs,) = ort_outputs(ort, m, x)
    assert_close(net.forward(x), theirs, 1e-6, "softmax over axis 1")


def test_an_output_that_cannot_be_built_is_skipped_with_the_reason(ort):
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Erf", ["x"], ["b"])]  # no engine layer for Erf
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    net = load_onnx(m.SerializeToString())
    assert net.outputs == ("a",)
    skipped = net.onnx_info["skipped_outputs"]
    assert skipped["outputs"] == ["b"] and "Erf" in skipped["reason"]
    with pytest.raises(ValueError, match="Erf"):
        load_onnx(m.SerializeToString(), output="b")


def test_preprocessing_and_per_channel_bounds_in_the_metadata(tmp_path):
    net = pnet()
    net.preprocessing = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                         "resize": 14, "crop": 12}
    net.bounds = (0, 1)
    path = tmp_path / "p.onnx"
    save_onnx(net, path)
    again = load_onnx(path)
    assert again.preprocessing == net.preprocessing and again.bounds == (0.0, 1.0)
    assert json.loads(again.metadata["robustcnn.bounds"]) == [0.0, 1.0]
    net.bounds = ([-1, 0, 0], [1, 1, 2])
    save_onnx(net, path)
    assert load_onnx(path).bounds == ([-1.0, 0.0, 0.0], [1.0, 1.0, 2.0])


@pytest.mark.parametrize("key, value, message", [
    ("robustcnn.preprocessing", '{"mean": [1, 2]}', "mean has 2 values for 3 channel"),
    ("robustcnn.preprocessing", '{"colour": "rgb"}', "unknown preprocessing key 'colour'"),
    ("robustcnn.preprocessing", "[1, 2]", "is not a JSON object"),
    ("robustcnn.bounds", '[1, 0]', "low must be below high"),
    ("robustcnn.bounds", '{"low": 0}', r"is not a JSON \[low, high\] pair"),
])
def test_bad_metadata_is_a_clear_error(tmp_path, key, value, message):
    path = tmp_path / "p.onnx"
    save_onnx(pnet(), path)
    m = onnx.load(str(path))
    helper.set_model_props(m, {key: value})
    with pytest.raises(ValueError, match=message):
        load_onnx(m.SerializeToString())
