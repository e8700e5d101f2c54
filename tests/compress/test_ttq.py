"""compress/ttq.py: Trained Ternary Quantization (Zhu et al. 2017) of a trained net — every
weighted layer ends ternary (2-bit codes, two scales) and keeps its accuracy on an easy task,
training moves the scales and the latent weights, the optional Huffman stage stores the same
weights in fewer bytes, and the model file holds the result. The format's equations (threshold,
eq. 7, eq. 8) are checked in tests/engine/formats/test_ternary.py."""

import numpy as np
import pytest
from helpers import single_thread
from quant_nets import bars, trained_tiny_lenet

from robustcnn.compress.methods import METHODS, method_options, run_method
from robustcnn.compress.modelfile import load_model, save_model
from robustcnn.compress.ttq import to_latent, ttq

LAYERS = ["conv1", "ip1", "ip2"]


@pytest.fixture(scope="module")
def trained():
    with single_thread():
        return trained_tiny_lenet()


def test_ttq_ternarizes_every_layer_and_keeps_accuracy(trained):
    net, x, y = trained
    start = net.copy()
    to_latent(start, LAYERS, 0.05)
    before = {name: start[name].weight_format.scales.copy() for name in LAYERS}
    q = net.copy()
    with single_thread():
        ttq(q, x, y, epochs=2, lr=1e-3, batch_size=32, progress=False)
    xt, yt = bars(300, seed=9)
    assert q.accuracy(xt, yt) >= net.accuracy(xt, yt) - 0.03
    for name in LAYERS:
        fmt = q[name].weight_format
        assert fmt.kind == "ternary" and fmt.value_bits() == 2
        w = fmt.to_dense()
        levels = np.unique(w)
        assert len(levels) <= 3 and np.isclose(levels, 0).any()
        allowed = np.array([0.0, fmt.scales[0], -fmt.scales[1]], dtype=np.float64)
        assert all(np.isclose(allowed, v, rtol=1e-6, atol=0).any() for v in levels)
        # training moved the scales away from their start (eq. 7 gradients reached them)
        assert not np.allclose(fmt.scales, before[name], rtol=1e-4)


def test_ttq_huffman_and_model_file(trained, tmp_path):
    net, x, y = trained
    plain, coded = net.copy(), net.copy()
    with single_thread():
        ttq(plain, x, y, epochs=1, batch_size=32, progress=False)
        ttq(coded, x, y, epochs=1, batch_size=32, progress=False, huffman=True)
    xt, _ = bars(64, seed=3)
    np.testing.assert_allclose(coded.logits(xt), plain.logits(xt), rtol=1e-5, atol=1e-6)
    for name in LAYERS:
        assert coded[name].weight_format.stored_bytes() <= plain[name].weight_format.stored_bytes()
    path = tmp_path / "ttq.rcnn"
    save_model(path, plain)
    loaded, _ = load_model(path)
    assert loaded["ip1"].weight_format.kind == "ternary"
    assert np.array_equal(loaded.logits(xt), plain.logits(xt))


def test_methods_registry_and_options(trained):
    net, x, y = trained
    assert {"int8", "ttq"} <= set(METHODS)
    assert method_options("ttq", {"epochs": "0", "huffman": "yes"})["huffman"] is True
    with pytest.raises(ValueError, match="unknown option 'nope'"):
        method_options("ttq", {"nope": 1})
    with pytest.raises(ValueError, match="option epochs must be a int"):
        method_options("ttq", {"epochs": "two"})
    with pytest.raises(ValueError, match="unknown compression method 'zip'"):
        method_options("zip", {})
    out, report = run_method("ttq", net.copy(), x, y, {"epochs": 0}, val=bars(64, seed=1),
                             progress=False, log=None)
    assert [s["stage"] for s in report["stages"]] == ["dense", "ternarized (no training)",
                                                      "TTQ 0 epoch(s)"]
    assert all(0 <= s["accuracy"] <= 1 for s in report["stages"])
    assert out["ip2"].weight_format.kind == "ternary"
