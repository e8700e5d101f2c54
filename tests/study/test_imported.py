"""An imported model file (ONNX here) as a study arm, beside its compressed version: issue 16
item 4. The file's bounds and preprocessing (ONNX metadata) are applied in front of the net,
so the study's [0, 1] images and eps mean the same for it as for every other model."""

import numpy as np
import pytest
from study_helpers import tiny_config

from robustcnn.study.config import parse_config
from robustcnn.study.runner import run_study
from robustcnn.study.store import Store

onnx = pytest.importorskip("onnx")


def _user_model(path):
    """A user's LeNet-300-100 taking 0–255 images minus a mean, divided by a std (as many
    exported models do), written as ONNX with that in its metadata."""
    from robustcnn.models.lenet import build_model
    from robustcnn.models.onnx import save_onnx

    net = build_model("lenet-300-100", input_shape=(1, 28, 28), num_classes=10, seed=3)
    net.bounds = (0, 255)
    net.preprocessing = {"mean": 33.0, "std": 78.0}
    save_onnx(net, path)
    return net


def _config(data_dir, path, **model):
    raw = tiny_config(data_dir)
    raw["models"] = [{"name": "mine", "kind": "imported", "path": str(path), **model},
                     {"name": "mine-dc", "kind": "compressed", "base": "mine",
                      "preset": "lenet-300-100",
                      "settings": {"rounds": 1, "retrain_epochs": 1, "finetune_epochs": 1,
                                   "batch_size": 16}}]
    raw["attacks"] = [{"name": "fgsm", "eps": [0.1]}]
    return raw


def test_an_onnx_model_and_its_compressed_version_are_study_arms(tiny_mnist, tmp_path):
    from robustcnn.engine.preprocess import apply, to_bounds
    from robustcnn.models.datasets import load_dataset

    path = tmp_path / "mine.onnx"
    user = _user_model(path)
    study = parse_config(_config(tiny_mnist, path), source=str(tmp_path / "s.toml"))
    assert study.arch("mine") == study.arch("mine-dc") == "mine.onnx"
    db = tmp_path / "db.sqlite"
    assert run_study(study, db, progress=False, log=lambda s: None)["written"] == 2
    with Store(db) as store:
        rows = {r["model"]: r for r in store.rows()}
    # Untrained by the study (epochs 0): its clean accuracy is the file's own on the images
    # mapped onto 0–255 and preprocessed as its metadata says.
    xt, yt = load_dataset("mnist", "test", data_dir=str(tiny_mnist))
    xt, yt = xt[:32], yt[:32]
    expected = user.accuracy(apply(to_bounds(xt, user.bounds), user.preprocessing), yt)
    assert rows["mine"]["clean_accuracy"] == pytest.approx(expected)
    assert rows["mine"]["kind"] == "imported" and rows["mine-dc"]["kind"] == "compressed"
    assert rows["mine-dc"]["model_info"]["compression_ratio"] > 5
    # Another file is another model: the identity holds the file's digest.
    other = tmp_path / "other.onnx"
    _user_model(other)
    with open(other, "ab") as f:
        f.write(b"")
    assert parse_config(_config(tiny_mnist, other)).model_key("mine", 0) == \
        study.model_key("mine", 0)  # same bytes, same model
    user.layers[0].params["bias"] += 1
    from robustcnn.models.onnx import save_onnx
    save_onnx(user, other)
    assert parse_config(_config(tiny_mnist, other)).model_key("mine", 0) != \
        study.model_key("mine", 0)


def test_the_study_file_gives_bounds_and_preprocessing_the_file_does_not(tiny_mnist,
                                                                          tmp_path):
    from robustcnn.study.build import imported

    path = tmp_path / "plain.onnx"
    user = _user_model(path)
    plain = onnx.load(str(path))
    del plain.metadata_props[:]
    onnx.save(plain, str(path))
    study = parse_config(_config(tiny_mnist, path, bounds=[0, 255],
                                 preprocessing={"mean": 33.0, "std": 78.0}))
    x = np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32)
    net = imported(study, study.model("mine"), x)
    assert net.bounds == (0.0, 1.0)
    np.testing.assert_allclose(net.forward(x), user.forward(
        ((x * 255 - 33) / 78).astype(np.float32)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model,message", [
    ({"path": "nowhere.onnx"}, "models[0] (mine).path: no file"),
    ({"bounds": [0]}, "models[0] (mine).bounds: expected [low, high]"),
    ({"arch": "lenet5"}, "unknown key"),
])
def test_bad_imported_entries_name_the_key(tiny_mnist, tmp_path, model, message):
    path = tmp_path / "mine.onnx"
    _user_model(path)
    raw = _config(tiny_mnist, path)
    raw["models"][0].update(model)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        parse_config(raw, source="s.toml")
