"""robustcnn.load: every model format, told apart by content, with one-line errors."""

import shutil

import numpy as np
import pytest
from net_helpers import randomised

import robustcnn
from robustcnn.cli import main
from robustcnn.compress.modelfile import save_model
from robustcnn.engine.checkpoint import save_checkpoint
from robustcnn.loading import detect_format, load
from robustcnn.models.lenet import lenet5


@pytest.fixture(scope="module")
def net():
    return randomised(lenet5(num_classes=10), seed=3)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)


def _same_logits(a, b, x, tol=1e-5):
    np.testing.assert_allclose(a.logits(x), b.logits(x), rtol=tol, atol=tol)


def test_checkpoint_and_rcnn_by_content_not_name(net, x, tmp_path):
    # a checkpoint named like a model file and a model file named like a checkpoint
    save_checkpoint(tmp_path / "model.rcnn", net, meta={"dataset": "fashion-mnist"})
    save_model(tmp_path / "checkpoint.h5", net, meta={"dataset": "mnist"})
    for name, kind, dataset in (("model.rcnn", "checkpoint", "fashion-mnist"),
                                ("checkpoint.h5", "rcnn", "mnist")):
        path = tmp_path / name
        assert detect_format(path) == kind
        loaded, meta = robustcnn.load(path)
        _same_logits(net, loaded, x)
        assert meta["dataset"] == dataset
        assert meta["loaded_from"] == {"format": kind, "path": str(path), "weights": None}


def test_dtype(net, x, tmp_path):
    save_model(tmp_path / "m.rcnn", net)
    loaded, _ = load(tmp_path / "m.rcnn", dtype=np.float64)
    assert loaded.dtype == np.float64
    _same_logits(net, loaded, x)


def test_keras(net, x, tmp_path):
    pytest.importorskip("h5py")
    from robustcnn.models.keras import save_keras

    save_keras(net, tmp_path / "k.h5")
    assert detect_format(tmp_path / "k.h5") == "keras"
    loaded, meta = load(tmp_path / "k.h5")
    # Keras nets are channels-last inside but take NCHW here (the importer transposes)
    _same_logits(net, loaded, x)
    assert meta["loaded_from"]["format"] == "keras"


def test_caffe_prototxt_with_and_without_weights(net, x, tmp_path):
    pytest.importorskip("google.protobuf")
    from robustcnn.models.caffe import save_caffe

    save_caffe(net, tmp_path / "deploy.prototxt", tmp_path / "w.caffemodel")
    assert detect_format(tmp_path / "deploy.prototxt") == "caffe"
    loaded, meta = load(tmp_path / "deploy.prototxt", weights=tmp_path / "w.caffemodel")
    _same_logits(net, loaded, x)
    assert meta["loaded_from"]["weights"] == str(tmp_path / "w.caffemodel")
    architecture_only, meta = load(tmp_path / "deploy.prototxt")
    assert architecture_only.spec()["layers"] == loaded.spec()["layers"]
    assert "random" in meta["weights"]


def test_deep_compression_file_through_its_prototxt():
    from robustcnn.models import squeezenet_dc as dc

    net, meta = load(dc.PROTOTXT, weights=dc.WEIGHTS)
    assert meta["loaded_from"]["format"] == "caffe"
    reference = dc.squeezenet_v1_0_deep_compression()
    assert [type(l.weight_format).__name__ for l in net.layers if hasattr(l, "weight_format")] \
        == [type(l.weight_format).__name__ for l in reference.layers
            if hasattr(l, "weight_format")]
    x = np.random.default_rng(1).normal(0, 50, (1, 3, 227, 227)).astype(np.float32)
    _same_logits(reference, net, x, tol=1e-4)


def test_weights_that_fit_neither_caffe_format(tmp_path):
    pytest.importorskip("google.protobuf")
    from robustcnn.models import squeezenet_dc as dc

    bad = tmp_path / "w.net"
    bad.write_bytes(dc.WEIGHTS.read_bytes()[:-7])
    with pytest.raises(ValueError, match="neither a binary caffemodel .* nor a Deep Compression"):
        load(dc.PROTOTXT, weights=bad)


def test_errors_name_the_file(net, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        load(tmp_path / "missing.rcnn")
    with pytest.raises(ValueError, match="is a directory"):
        load(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a model\n")
    with pytest.raises(ValueError, match=r"notes\.txt: not a model file"):
        load(text)
    save_model(tmp_path / "m.rcnn", net)
    with pytest.raises(ValueError, match="only for a Caffe prototxt"):
        load(tmp_path / "m.rcnn", weights=tmp_path / "m.rcnn")
    truncated = tmp_path / "t.rcnn"
    truncated.write_bytes((tmp_path / "m.rcnn").read_bytes()[:200])
    with pytest.raises(ValueError, match=r"t\.rcnn"):
        load(truncated)


def test_caffe_weights_alone_say_what_to_do():
    from robustcnn.models import squeezenet_dc as dc

    with pytest.raises(ValueError, match="pass the net's .prototxt as the model"):
        load(dc.WEIGHTS)


def test_every_command_takes_a_prototxt_and_its_weights(tmp_path, capsys):
    from robustcnn.models import squeezenet_dc as dc

    assert main(["info", str(dc.PROTOTXT), "--weights", str(dc.WEIGHTS)]) == 0
    out = capsys.readouterr().out
    assert "fire9/conv3x3_2" in out and '"format": "caffe"' in out
    shutil.copy(dc.WEIGHTS, tmp_path / "copy.net")
    assert main(["info", str(tmp_path / "copy.net")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "copy.net" in err[0] and "--weights" in err[0]


def test_onnx_by_content(net, x, tmp_path, capsys):
    pytest.importorskip("onnx")
    from robustcnn.models.onnx import save_onnx

    save_onnx(net, tmp_path / "model.bin")  # any name: the content tells
    assert detect_format(tmp_path / "model.bin") == "onnx"
    loaded, meta = load(tmp_path / "model.bin")
    _same_logits(net, loaded, x)
    assert meta["loaded_from"]["format"] == "onnx" and "opset" in meta["onnx"]
    assert main(["info", str(tmp_path / "model.bin")]) == 0
    assert '"format": "onnx"' in capsys.readouterr().out
