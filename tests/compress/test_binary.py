"""compress/binary.py: binarized nets (BinaryConnect / XNOR-Net weights; Hubara et al.'s binary
and k-bit activations) from a trained net — every weighted layer ends binary and keeps its
accuracy on an easy task, binary activations replace the ReLUs and run the XNOR-popcount
kernel, the model file holds the result, the finished net's quantizers mask gradients (the
sanity checks flag them) and BPDA clears the flag. The format's equations are checked in
tests/engine/formats/test_binary.py."""

import numpy as np
import pytest
from helpers import single_thread
from quant_nets import bars, trained_tiny_lenet

from robustcnn.attacks.bpda import bpda, masked_layers
from robustcnn.attacks.masking import check_differentiable
from robustcnn.attacks.sanity import check_gradients
from robustcnn.compress.binary import (activation_settings, binarize, mse_step, replaced_relus,
                                       with_activation_quantizers)
from robustcnn.compress.methods import METHODS, method_options, run_method
from robustcnn.compress.modelfile import load_model, save_model
from robustcnn.engine import binary as binary_kernels

LAYERS = ["conv1", "ip1", "ip2"]


@pytest.fixture(scope="module")
def trained():
    with single_thread():
        return trained_tiny_lenet()


@pytest.fixture(scope="module")
def binary_acts(trained):
    net, x, y = trained
    with single_thread():
        return binarize(net, x, y, activation_bits=1, epochs=8, batch_size=32, progress=False)


def test_binary_weights_keep_accuracy(trained):
    net, x, y = trained
    with single_thread():
        q = binarize(net, x, y, epochs=8, batch_size=32, progress=False)
    xt, yt = bars(300, seed=9)
    assert q.accuracy(xt, yt) >= net.accuracy(xt, yt) - 0.03
    for name in LAYERS:
        fmt = q[name].weight_format
        assert fmt.kind == "binary" and fmt.value_bits() == 1
        w = fmt.to_dense().reshape(fmt.rows, -1)
        # each row is ±alpha[o]: one magnitude per output channel
        assert np.allclose(np.abs(w), fmt.scales[:, None], rtol=1e-6, atol=0)
    assert [layer.type for layer in q.layers] == [layer.type for layer in net.layers]
    assert not masked_layers(q)


def test_binary_activations_replace_relus_and_run_xnor(trained, binary_acts):
    net, x, y = trained
    q = binary_acts
    assert [(layer.name, layer.type) for layer in q.layers] == [
        ("conv1", "Convolution"), ("pool1", "Pooling"), ("ip1_sign", "QuantizeActivation"),
        ("ip1", "InnerProduct"), ("relu1_binary", "QuantizeActivation"), ("ip2", "InnerProduct")]
    xt, yt = bars(300, seed=9)
    assert q.accuracy(xt, yt) >= 0.85  # chance is 1/3; the float net is at 1.0
    # The layers behind a sign receive ±1 and compute by XNOR-popcount: the same outputs as
    # the float kernel on the same values.
    seen = {}
    for step in q.run_layers(xt[:16], train=False):
        seen[step.layer.name] = step.inputs[0]
    for name in ("ip1", "ip2"):
        xs = seen[name].reshape(16, -1)
        assert binary_kernels.is_binary_input(xs)
        fmt, b = q[name].weight_format, q[name].params["bias"]
        np.testing.assert_allclose(binary_kernels.linear_forward(xs, fmt, b, xnor=True),
                                   binary_kernels.linear_forward(xs, fmt, b, xnor=False),
                                   rtol=1e-5, atol=1e-5)


def test_sanity_flags_binary_activations_and_bpda_clears_them(binary_acts):
    q = binary_acts
    x, y = bars(64, seed=4)
    assert [layer.name for layer in masked_layers(q)] == ["ip1_sign", "relu1_binary"]
    flagged = check_gradients(q, x, y)
    assert not flagged.passed and "ip1_sign" in flagged.detail and "bpda" in flagged.detail.lower()
    assert not check_differentiable(q).passed
    _, dx = q.loss_and_input_grad(x, y)
    assert not dx.any()  # the true gradient through the signs is zero
    with bpda(q):
        cleared = check_gradients(q, x, y, bpda=True)
        assert check_differentiable(q).passed
        _, dx = q.loss_and_input_grad(x, y)
    assert cleared.passed, cleared.detail
    assert np.abs(dx).sum() > 0
    assert masked_layers(q)  # BPDA gives the layers back their own setting


def test_k_bit_activations_and_model_file(trained, tmp_path):
    net, x, y = trained
    with single_thread():
        q = binarize(net, x, y, activation_bits=2, epochs=8, batch_size=32, progress=False)
    quant = [layer for layer in q.layers if layer.type == "QuantizeActivation"]
    assert [(layer.name, layer.bits, layer.signed) for layer in quant] == [
        ("ip1_quant", 2, True), ("ip2_quant", 2, False)]  # pool1 is signed, relu1 is not
    assert not any(layer.straight_through for layer in quant)
    xt, yt = bars(300, seed=9)
    assert q.accuracy(xt, yt) >= 0.9
    path = tmp_path / "binary.rcnn"
    save_model(path, q)
    loaded, _ = load_model(path)
    assert loaded["ip1"].weight_format.kind == "binary"
    assert np.array_equal(loaded.logits(xt), q.logits(xt))
    # The gain: the layer after a quantizer absorbs its step in its scales.
    assert q["ip2"].weight_format.scales.max() < 10 * net["ip2"].dense_weight().std() + 1


def test_settings_and_rewiring(trained):
    rng = np.random.default_rng(5)
    net, _, _ = trained
    assert replaced_relus(net, ["ip2"]) == {"ip2": "relu1"}
    assert replaced_relus(net, ["ip1"]) == {}
    a = rng.standard_normal(10_000)
    (step, signed, gain), = activation_settings({"ip1": a}, 1).values()
    assert signed and step == pytest.approx(a.std()) and gain == pytest.approx(np.abs(a).mean())
    # k bits: the step of least squared error beats mapping max|a| to the top code
    s = mse_step(a, 2, True)
    err = lambda st: ((np.clip(np.floor(a / st + 0.5), -1, 1) * st - a) ** 2).sum()
    assert err(s) < err(np.abs(a).max())
    q = with_activation_quantizers(net, {"ip2": (1.0, True, 1.0)}, 1)
    assert [layer.name for layer in q.layers] == ["conv1", "pool1", "ip1", "relu1_binary", "ip2"]
    x = bars(8, seed=2)[0]
    pre = {s.layer.name: s.inputs[0] for s in net.run_layers(x, train=False)}["relu1"]
    got = {s.layer.name: s.inputs[0] for s in q.run_layers(x, train=False)}["ip2"]
    assert np.array_equal(got, np.where(pre >= 0, 1.0, -1.0))


def test_methods_registry_and_options(trained):
    net, x, y = trained
    assert "binary" in METHODS
    assert method_options("binary", {"activation_bits": "1"})["activation_bits"] == 1
    with pytest.raises(ValueError, match="activation bits must be 0"):
        binarize(net, x, y, activation_bits=9, epochs=0, progress=False)
    with pytest.raises(ValueError, match="binary: .*pool1.* has no weight"):
        binarize(net, x, y, layers=["pool1"], epochs=0, progress=False)
    out, report = run_method("binary", net.copy(), x, y, {"epochs": 0}, val=bars(64, seed=1),
                             progress=False, log=None)
    assert [s["stage"] for s in report["stages"]] == ["dense", "binarized (no training)",
                                                      "binary 0 epoch(s)"]
    assert out["ip2"].weight_format.kind == "binary"
