"""study/models.py: models travel as model-file bytes, checked like a file; a run killed while
training a model resumes from its checkpoint."""

import pytest
from study_helpers import tiny_config

from robustcnn.study.config import parse_config
from robustcnn.study.data import load_data
from robustcnn.study.models import net_from_bytes, obtain_model
from robustcnn.study.store import Store


def test_training_resumes_from_its_checkpoint(tiny_mnist, tmp_path, monkeypatch):
    """A run killed while training a model resumes from its last finished epoch and ends with
    the weights of an uninterrupted run."""
    study = parse_config(tiny_config(tiny_mnist))
    data = load_data(study)
    with Store(tmp_path / "a" / "db.sqlite") as store:
        whole, _ = obtain_model(study, store, "dense", 0, data)

    key = study.model_key("dense", 0)
    ckpt = tmp_path / "b" / "models" / f"dense-s0-{key}.training.h5"
    ckpt.parent.mkdir(parents=True)
    epochs = []
    import robustcnn.engine.train as train

    def killed_after_one_epoch(line):
        raise KeyboardInterrupt  # fit logs an epoch before checkpointing it: epoch 1 is saved

    fit = train.fit

    def fit_spy(*args, **kwargs):
        if not ckpt.exists():  # the first, interrupted run
            kwargs["log"] = lambda line: (epochs.append(line), len(epochs) == 2 and
                                          killed_after_one_epoch(line))
        else:
            kwargs["log"] = epochs.append
        return fit(*args, **kwargs)

    monkeypatch.setattr(train, "fit", fit_spy)  # the study imports fit when it trains
    with Store(tmp_path / "b" / "db.sqlite") as store:
        with pytest.raises(KeyboardInterrupt):
            obtain_model(study, store, "dense", 0, data)
        assert ckpt.exists() and len(epochs) == 2
        resumed, _ = obtain_model(study, store, "dense", 0, data)
    # The resumed run trained epoch 2 only.
    assert epochs[2].startswith("resuming") and epochs[2].endswith("after epoch 1")
    assert [e.split()[:2] for e in epochs[3:]] == [["epoch", "2"]]
    assert not ckpt.exists()
    xt = data[2]
    assert (whole.predict(xt) == resumed.predict(xt)).all()


def test_damaged_model_bytes_are_refused_naming_the_model():
    with pytest.raises(ValueError, match="model dense: too short"):
        net_from_bytes(b"RCNNMDL", "dense")
    with pytest.raises(ValueError, match="model dense: not a robustcnn model file"):
        net_from_bytes(bytes(64), "dense")


def test_a_quantized_model_is_its_methods_output(tiny_mnist, tmp_path):
    raw = tiny_config(tiny_mnist)
    raw["models"].append({"name": "q8", "kind": "quantized", "base": "dense", "method": "int8",
                          "options": {"calibration": 64}})
    study = parse_config(raw)
    data = load_data(study)
    with Store(tmp_path / "db.sqlite") as store:
        net, _ = obtain_model(study, store, "q8", 0, data)
        dense, _ = obtain_model(study, store, "dense", 0, data)
    kinds = {layer.name: layer.weight_format.kind for layer in net.layers
             if hasattr(layer, "weight_format")}
    assert kinds == {"ip1": "int8", "ip2": "int8", "ip3": "int8"}
    assert [l.name for l in net.layers if l.type == "QuantizeActivation"] == [
        "ip1_quant", "ip2_quant", "ip3_quant"]
    xt = data[2]
    assert (net.predict(xt) == dense.predict(xt)).mean() >= 0.9
