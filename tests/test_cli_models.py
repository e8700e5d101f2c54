"""The command line with a user's own model (issue 15, issue 16 item 4): an ONNX file through
info → eval → attack → compress, its bounds and preprocessing read from its metadata or given
on the command line; compress's overrides merged with the preset and checked before any data
loads; train reaching the zoo and model files; --limit, --no-sanity, info --json, the attack
header line."""

import json

import numpy as np
import pytest
from helpers import single_thread, write_tiny_mnist

from robustcnn.cli import main

onnx = pytest.importorskip("onnx")

MEAN, STD = 33.0, 78.0


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    return write_tiny_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    """A LeNet-300-100 trained a little in 0–255 units minus a mean over a std, written as
    ONNX with its bounds and preprocessing in the metadata → (path, net)."""
    from robustcnn.engine.preprocess import apply, to_bounds
    from robustcnn.engine.train import fit
    from robustcnn.models.datasets import load_dataset
    from robustcnn.models.lenet import build_model
    from robustcnn.models.onnx import save_onnx

    data = write_tiny_mnist(tmp_path_factory.mktemp("train"))
    x, y = load_dataset("mnist", "train", data_dir=str(data))
    net = build_model("lenet-300-100", input_shape=(1, 28, 28), num_classes=10, seed=1)
    net.bounds = (0, 255)
    net.preprocessing = {"mean": MEAN, "std": STD}
    with single_thread():
        fit(net, apply(to_bounds(x, net.bounds), net.preprocessing), y, epochs=2,
            batch_size=16, progress=False, log=None)
    path = tmp_path_factory.mktemp("model") / "mine.onnx"
    save_onnx(net, path)
    return path, net


def _common(data):
    return ["--dataset", "mnist", "--data-dir", str(data)]


def _expected_accuracy(net, data, limit=None):
    from robustcnn.engine.preprocess import apply, to_bounds
    from robustcnn.models.datasets import load_dataset

    xt, yt = load_dataset("mnist", "test", data_dir=str(data))
    xt, yt = xt[:limit], yt[:limit]
    return 100 * net.accuracy(apply(to_bounds(xt, net.bounds), net.preprocessing), yt)


def test_info_json_reads_the_metadata(user_model, capsys):
    path, net = user_model
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)  # one JSON document, nothing else
    assert info["format"] == "onnx"
    assert info["input"]["bounds"] == [0.0, 255.0]
    assert info["input"]["preprocessing"] == {"mean": MEAN, "std": STD}
    assert info["parameters"] == net.num_dense_params() == 266_610
    assert list(info["outputs"]) == [net.output]


def test_eval_and_attack_an_onnx_model_in_image_units(user_model, tiny_mnist, capsys):
    path, net = user_model
    expected = _expected_accuracy(net, tiny_mnist, 40)
    assert main(["eval", str(path), "--limit", "40", "--no-progress"] + _common(tiny_mnist)) == 0
    out = capsys.readouterr().out
    assert "40 mnist test images" in out and "[0, 255]" in out
    assert f"clean test accuracy: {expected:.2f}%" in out
    table = pytest.importorskip("pathlib").Path(path).with_suffix(".json")
    with single_thread():
        assert main(["attack", str(path), "--attack", "fgsm", "--eps", "0,40", "--limit", "24",
                     "--no-sanity", "--no-progress", "--json", str(table)]
                    + _common(tiny_mnist)) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("robustcnn attack: ") and "24 mnist test images" in first
    assert "eps in image units of [0, 255]" in first and "sanity checks off" in first
    assert "not run (--no-sanity)" in out
    result = json.loads(table.read_text())
    rows = result["rows"]
    assert rows[0]["adversarial_accuracy"] == pytest.approx(
        _expected_accuracy(net, tiny_mnist, 24) / 100, abs=1e-6)
    # eps 40 of 255 is a real attack: it moves the images by 40 levels, within [0, 255]
    assert rows[1]["linf_mean"] == pytest.approx(40, rel=1e-3)
    assert rows[1]["adversarial_accuracy"] <= rows[0]["adversarial_accuracy"]
    assert result["sanity_run"] is False and result["clip"] == [0.0, 255.0]


def test_the_command_line_gives_what_the_file_does_not(user_model, tiny_mnist, tmp_path,
                                                       capsys):
    path, net = user_model
    plain = onnx.load(str(path))
    del plain.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(plain, str(bare))
    expected = _expected_accuracy(net, tiny_mnist, 40)
    args = ["eval", str(bare), "--limit", "40"] + _common(tiny_mnist)
    assert main(args) == 0
    assert "the model declares no bounds" in capsys.readouterr().out
    assert main(args + ["--bounds", "0,255", "--mean", str(MEAN), "--std", str(STD)]) == 0
    out = capsys.readouterr().out
    assert "[0, 255]" in out and "mean 33.0, std 78.0" in out
    assert f"clean test accuracy: {expected:.2f}%" in out
    for bad, message in ((["--bounds", "5"], "--bounds takes LOW,HIGH"),
                         (["--mean", "1,2"], "mean has 2 values for 1 channel"),
                         (["--bounds", "3,1"], "low must be below high"),
                         (["--input-shape", "1,28"], "--input-shape takes C,H,W")):
        assert main(args + bad) == 2
        assert message in capsys.readouterr().err


def test_compress_merges_the_preset_and_refuses_bad_values_before_the_data(
        user_model, tiny_mnist, tmp_path, capsys):
    path, _ = user_model
    nowhere = ["--dataset", "mnist", "--data-dir", str(tmp_path / "no-data")]
    out = tmp_path / "m.rcnn"
    for bad, message in ((["--prune", "ip1=93"], "did you mean 0.93?"),
                         (["--prune", "conv9=0.5"], "no layer 'conv9' with a weight"),
                         (["--bits", "ip1=12"], "--bits: ip1's value must be in 1..8")):
        assert main(["compress", str(path), "-o", str(out), "--preset", "lenet-300-100"]
                    + bad + nowhere) == 2
        assert message in capsys.readouterr().err  # not "no dataset files in …"
    assert main(["compress", str(path), "-o", str(out), "--preset", "lenet-300-100", "--prune",
                 "ip1=0.5", "--rounds", "1", "--retrain-epochs", "1", "--finetune-epochs", "1",
                 "--limit", "64", "--no-progress"] + _common(tiny_mnist)) == 0
    text = capsys.readouterr().out
    # ip1 as asked, ip2 and ip3 as the preset (Deep Compression's 92% and 91% … not dense)
    from robustcnn.compress.pipeline import PRESETS

    kept = PRESETS["lenet-300-100"]["kept"]
    assert "ip1 50%" in text
    for layer in ("ip2", "ip3"):
        assert f"{layer} {100 * (1 - kept[layer]):g}%" in text
    from robustcnn.loading import load

    compressed, _ = load(out)
    assert compressed.bounds == (0.0, 255.0)  # the model file keeps what the images are
    assert main(["attack", str(out), "--attack", "fgsm", "--eps", "20", "--limit", "8",
                 "--no-sanity", "--no-progress"] + _common(tiny_mnist)) == 0
    assert "[0, 255]" in capsys.readouterr().out


def test_train_reaches_the_zoo_and_model_files(user_model, tiny_mnist, tmp_path, capsys):
    path, net = user_model
    common = _common(tiny_mnist) + ["--epochs", "1", "--batch-size", "16", "--no-progress",
                                    "--limit", "48"]
    out = tmp_path / "sq.h5"
    with single_thread():
        assert main(["train", "--model", "squeezenet_small", "--arch-options", "width=0.25",
                     "-o", str(out)] + common) == 0
    text = capsys.readouterr().out
    assert "squeezenet_small on mnist: 48 training and 48 test images" in text
    tuned = tmp_path / "tuned.h5"
    with single_thread():
        assert main(["train", "--from", str(path), "-o", str(tuned)] + common) == 0
    assert "fine-tuned from its file" in capsys.readouterr().out
    from robustcnn.loading import load

    again, meta = load(tuned)
    assert again.bounds == (0.0, 255.0) and meta["from"] == str(path)
    assert main(["train", "--model", "nope", "-o", str(out)] + common) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_a_finished_run_extends_to_more_epochs(tiny_mnist, tmp_path, capsys):
    ckpt, out = tmp_path / "c.h5", tmp_path / "m.h5"
    base = ["train", "--model", "lenet-300-100", "--batch-size", "32", "--no-progress",
            "--checkpoint", str(ckpt), "-o", str(out)] + _common(tiny_mnist)
    assert main(base + ["--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(base + ["--epochs", "2"]) == 2
    assert "--extend" in capsys.readouterr().err
    assert main(base + ["--epochs", "2", "--extend"]) == 0
    from robustcnn.loading import load

    assert len(load(out)[1]["history"]) == 2


def test_certify_reads_the_models_bounds_and_preprocessing(user_model, tiny_mnist, capsys,
                                                           tmp_path):
    """certify model.onnx: the images in the model's units, its preprocessing in front (the
    interval bounds pass through it); eps 0 certifies exactly the net's clean accuracy on its
    own inputs, and smoothing's radii are in image units too."""
    path, net = user_model
    out = tmp_path / "c.json"
    for method in ("ibp", "crown-ibp"):
        with single_thread():
            assert main(["certify", str(path), "--method", method, "--eps", "0,2", "--limit",
                         "32", "--no-progress", "--json", str(out)] + _common(tiny_mnist)) == 0
        assert "eps in image units of [0, 255]" in capsys.readouterr().out
        rows = json.loads(out.read_text())["rows"]
        expected = _expected_accuracy(net, tiny_mnist, limit=32)
        assert 100 * rows[0]["certified_accuracy"] == pytest.approx(expected, abs=1e-9)
        assert rows[1]["certified_accuracy"] <= rows[0]["certified_accuracy"]
    with single_thread():
        assert main(["certify", str(path), "--method", "smoothing", "--sigma", "20", "--n", "200",
                     "--eps", "0,5", "--limit", "16", "--no-progress", "--json", str(out)]
                    + _common(tiny_mnist)) == 0
    assert "eps in image units of [0, 255]" in capsys.readouterr().out
    assert json.loads(out.read_text())["examples"] == 16
