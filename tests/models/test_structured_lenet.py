"""models/lenet.py's lenet-300-100-structured (Sindhwani et al. 2015's structured hidden layers):
its parameter counts, and the command line training it and showing it in ``robustcnn info``."""

import json

import pytest
from helpers import single_thread, write_tiny_mnist

from robustcnn.cli import main
from robustcnn.models.architectures import build_architecture

# n = 784 for ip1 (784 → 300, padded), 300 for ip2; ip3 dense (1,010); biases 300 + 100.
COUNTS = {"circulant": 784 + 300 + 300 + 100 + 1010,
          1: 2 * 784 + 300 + 2 * 300 + 100 + 1010,
          2: 4 * 784 + 300 + 4 * 300 + 100 + 1010,
          4: 8 * 784 + 300 + 8 * 300 + 100 + 1010}


@pytest.mark.parametrize("arm", list(COUNTS))
def test_parameter_counts(arm):
    kwargs = dict(structure="circulant") if arm == "circulant" else dict(rank=arm)
    net = build_architecture("lenet-300-100-structured", input_shape=(1, 28, 28),
                             num_classes=10, **kwargs)
    assert net.num_params() == net.num_dense_params() == COUNTS[arm]


def test_an_unknown_structure_names_the_layer():
    with pytest.raises(ValueError, match=r"ip1 \(StructuredInnerProduct\): unknown structure"):
        build_architecture("lenet-300-100-structured", input_shape=(1, 28, 28),
                           num_classes=10, structure="banded")


def test_train_and_info(tmp_path, capsys):
    data = write_tiny_mnist(tmp_path / "data")
    out = tmp_path / "s.h5"
    with single_thread():
        assert main(["train", "--model", "lenet-300-100-structured", "--arch-options",
                     "rank=2", "--epochs", "1", "--batch-size", "16", "--no-progress",
                     "--limit", "48", "--dataset", "mnist", "--data-dir", str(data),
                     "-o", str(out)]) == 0
    assert f"{COUNTS[2]:,} parameters" in capsys.readouterr().out
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == COUNTS[2]
    layers = {layer["name"]: layer for layer in info["layers"]}
    assert layers["ip1"]["type"] == "StructuredInnerProduct"
    assert layers["ip1"]["parameters"] == 4 * 784 + 300
    assert main(["info", str(out)]) == 0
    assert "StructuredInnerProduct" in capsys.readouterr().out
