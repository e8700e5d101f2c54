"""Layer sensitivity to pruning: one layer pruned at a time, the net given back unchanged."""

import numpy as np
import pytest

from robustcnn.compress.prune import magnitude_mask
from robustcnn.compress.sensitivity import (accuracy_curve, format_sensitivity,
                                            plot_sensitivity, sensitivity, sensitivity_csv,
                                            suggest_kept)
from robustcnn.engine import Linear, Net, ReLU


@pytest.fixture(scope="module")
def data_and_net():
    """A two-layer net on four linearly separable blobs, trained well enough that pruning hurts."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 20)) * 3
    y = rng.integers(0, 4, 400)
    x = (centres[y] + rng.standard_normal((400, 20))).astype(np.float32)
    net = Net([Linear("ip1", 32), ReLU("relu1"), Linear("ip2", 4)], input_shape=(20,), seed=0)
    from robustcnn.engine.train import SGD, Schedule, fit

    fit(net, x, y, epochs=10, batch_size=32, optimizer=SGD(0.9, 0.0),
        schedule=Schedule("constant", 0.02), progress=False, log=None)
    return x, y, net


def reference_accuracy(net, layer, sparsity, x, y):
    """Prune a copy by hand: zero all but the largest |w| of one layer."""
    copy = net.copy()
    w = copy.layer(layer).dense_weight()
    copy.layer(layer).set_weight_format(
        type(copy.layer(layer).weight_format).from_dense(
            np.where(magnitude_mask(w, sparsity=sparsity), w, 0).astype(w.dtype)))
    return copy.accuracy(x, y)


def test_sensitivity_matches_pruning_by_hand_and_restores_the_net(data_and_net):
    x, y, net = data_and_net
    before = net.forward(x)
    formats = {name: net.layer(name).weight_format for name in ("ip1", "ip2")}
    result = sensitivity(net, x, y, sparsities=[0.0, 0.5, 0.9, 1.0])
    assert result["layers"] == ["ip1", "ip2"]
    assert result["baseline"] == net.accuracy(x, y) > 0.9
    assert len(result["rows"]) == 8
    for row in result["rows"]:
        want = reference_accuracy(net, row["layer"], row["sparsity"], x, y)
        assert row["accuracy"] == pytest.approx(want, abs=0)
        assert row["drop"] == pytest.approx(result["baseline"] - row["accuracy"])
        size = net.layer(row["layer"]).weight_format.size
        assert row["kept"] == pytest.approx(round((1 - row["sparsity"]) * size) / size)
    # Sparsity 0 changes nothing; removing every weight of ip2 leaves the biases: one class.
    _, acc = accuracy_curve(result, "ip2")
    assert acc[0] == result["baseline"] and acc[-1] < 0.5
    # The net is given back exactly as it was.
    for name, fmt in formats.items():
        assert net.layer(name).weight_format is fmt
    np.testing.assert_array_equal(net.forward(x), before)


def test_suggestions_tables_and_plot(data_and_net, tmp_path):
    x, y, net = data_and_net
    result = sensitivity(net, x, y, layers=["ip1"], sparsities=[0.5, 0.99])
    drop = {r["sparsity"]: r["drop"] for r in result["rows"]}
    assert drop[0.99] > drop[0.5]
    assert suggest_kept(result, max_drop=drop[0.5]) == {"ip1": 0.5}
    assert suggest_kept(result, max_drop=1.0) == {"ip1": pytest.approx(round(0.01 * 640) / 640)}
    assert suggest_kept(result, max_drop=-1.0) == {"ip1": 1.0}
    text = format_sensitivity(result)
    assert "ip1" in text and "99.0%" in text and f"{100 * result['baseline']:.2f}%" in text
    assert sensitivity_csv(result).splitlines()[0] == "layer,sparsity,kept,accuracy,drop"
    pytest.importorskip("matplotlib")
    path = plot_sensitivity(result, tmp_path / "s.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kwargs,match", [
    (dict(sparsities=[]), "non-empty list"), (dict(sparsities=[1.5]), r"in \[0, 1\]"),
    (dict(layers=["relu1"]), "no layer 'relu1' with a weight"),
    (dict(layers=["nope"]), "no layer 'nope'")])
def test_bad_arguments(data_and_net, kwargs, match):
    x, y, net = data_and_net
    with pytest.raises(ValueError, match=match):
        sensitivity(net, x, y, **kwargs)
