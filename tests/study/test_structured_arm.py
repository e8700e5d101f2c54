"""The study's structured arm (kind = "structured", study/config.py): the example grid parses,
bad structure and rank values name their key, and the model builds and trains through the
study's model step."""

from importlib import resources

import pytest
from study_helpers import tiny_config

from robustcnn.study.build import build_model
from robustcnn.study.config import COMPACT_KINDS, load_config, parse_config
from robustcnn.study.data import load_data


def test_the_example_grid_parses():
    study = load_config(resources.files("robustcnn.study") / "examples" / "structured.toml")
    assert [m.kind for m in study.models] == ["dense"] + ["structured"] * 4
    assert study.model("toeplitz-r4").kwargs == {"structure": "toeplitz-like", "rank": 4}
    assert study.model("circulant").arch == "lenet-300-100-structured"
    assert study.model("toeplitz-r2").train["lr"] == pytest.approx(0.002)
    assert "structured" in COMPACT_KINDS
    assert len(study.cells()) == 5 * 2 * 3 + 5


@pytest.mark.parametrize("fields,key,message", [
    ({"structure": "banded"}, "structure", "expected one of circulant, toeplitz-like"),
    ({"structure": "toeplitz-like", "rank": 0}, "rank", "expected an integer >= 1"),
    ({"structure": "circulant", "rank": 2}, "rank", "a circulant matrix has rank 1"),
    ({"structure": "circulant", "kwargs": {"rank": 1}}, "", "unknown key"),
])
def test_bad_structured_models_name_the_key(tiny_mnist, fields, key, message):
    raw = tiny_config(tiny_mnist)
    raw["models"].append({"name": "s", "kind": "structured", **fields})
    with pytest.raises(ValueError, match=rf"^bad.toml: models\[3\] \(s\)\.?{key}.*{message}"):
        parse_config(raw, source="bad.toml")


def test_a_structured_model_trains_in_the_study(tiny_mnist):
    raw = tiny_config(tiny_mnist)
    raw["models"].append({"name": "s", "kind": "structured", "structure": "toeplitz-like",
                          "rank": 2, "train": {"epochs": 1, "lr": 0.002}})
    study = parse_config(raw)
    net, _ = build_model(study, "s", 0, load_data(study), {})
    assert [l.type for l in net.layers if l.params] == ["StructuredInnerProduct"] * 2 + [
        "InnerProduct"]
    assert net.num_params() == 4 * 784 + 300 + 4 * 300 + 100 + 1010
