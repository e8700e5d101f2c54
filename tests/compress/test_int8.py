"""compress/int8.py: 8-bit linear quantization of a trained net (Vanhoucke et al. 2011) — the
activation quantizers wired in front of every weighted layer, their calibrated steps, the
integer kernels running on the codes, the model file, and the attack path (masked gradients
until BPDA, then the gradient through the dequantized weights)."""

import numpy as np
import pytest
from helpers import assert_close, single_thread
from quant_nets import bars, trained_tiny_lenet

from robustcnn.attacks.bpda import bpda, masked_layers
from robustcnn.attacks.sanity import check_gradients
from robustcnn.compress.int8 import (calibration_steps, layer_inputs, quantize_int8,
                                     with_quantizers)
from robustcnn.compress.modelfile import load_model, save_model
from robustcnn.engine import Linear, Net, ReLU
from robustcnn.engine import quantized


@pytest.fixture(scope="module")
def trained():
    with single_thread():
        return trained_tiny_lenet()


@pytest.fixture(scope="module")
def int8_net(trained):
    net, x, _ = trained
    return quantize_int8(net, x[:256])


def test_structure_and_calibration(trained, int8_net):
    net, x, _ = trained
    names = [layer.name for layer in int8_net.layers]
    assert names == ["conv1_quant", "conv1", "pool1", "ip1_quant", "ip1", "relu1", "ip2_quant",
                     "ip2"]
    inputs = layer_inputs(net, x[:256], ["conv1", "ip1", "ip2"])
    for name, signed in (("conv1", False), ("ip1", True), ("ip2", False)):
        q = int8_net[f"{name}_quant"]
        assert q.bits == 8 and q.signed == signed and not q.straight_through
        top = np.abs(inputs[name]).max()
        assert q.step == pytest.approx(top / (127 if signed else 255), rel=1e-12)
        assert int8_net[name].bottom == [f"{name}_quant"]
        fmt = int8_net[name].weight_format
        w = net[name].dense_weight().astype(np.float64)
        s = np.abs(w).reshape(len(w), -1).max(axis=1) / 127
        # Vanhoucke's quantizer: codes = round(W / s), and the layer's scales absorb the step.
        assert np.array_equal(fmt.codes.reshape(len(w), -1),
                              np.clip(np.floor(w.reshape(len(w), -1) / s[:, None] + 0.5), -127, 127))
        assert_close(fmt.scales, s * q.step, 1e-6, f"{name} scales")
    assert calibration_steps({"a": np.zeros((2, 3))}) == {"a": (1.0, False)}


def test_predictions_and_integer_kernels(trained, int8_net):
    net, _, _ = trained
    x, y = bars(300, seed=5)
    assert (int8_net.predict(x) == net.predict(x)).mean() >= 0.97
    assert abs(int8_net.accuracy(x, y) - net.accuracy(x, y)) <= 0.02
    # Every int8 layer's input holds 8-bit codes: the integer kernels run, and agree.
    codes = layer_inputs(int8_net, x[:64], ["conv1", "ip1", "ip2"])
    for name, c in codes.items():
        layer = int8_net[name]
        assert np.array_equal(c, np.round(c)) and c.min() >= -127 and c.max() <= 255
        if name == "conv1":
            y_int = quantized.conv2d_forward(c, layer.weight_format, layer.params["bias"],
                                             layer.geom)
        else:
            y_int = quantized.linear_forward(c.reshape(len(c), -1), layer.weight_format,
                                             layer.params["bias"])
        assert y_int is not None
        assert_close(y_int.reshape(len(c), -1),
                     layer.forward([c], _eval()).pop().reshape(len(c), -1), 1e-6, name)


def _eval():
    from robustcnn.engine.layers import Context

    return Context()


def test_model_file_round_trip(int8_net, tmp_path):
    path = tmp_path / "int8.rcnn"
    size = save_model(path, int8_net)
    loaded, _ = load_model(path)
    x, _ = bars(50, seed=2)
    assert np.array_equal(loaded.logits(x), int8_net.logits(x))
    assert loaded["ip1"].weight_format.kind == "int8" and loaded["ip1_quant"].signed
    # About a byte per weight: 4x smaller than float32, plus biases, scales and header.
    weights = sum(l.weight_format.size for l in int8_net.layers if hasattr(l, "weight_format"))
    assert weights < size < weights + 4000


def test_inplace_relu_and_explicit_blobs():
    # Caffe-style wiring: explicit bottoms and tops, an in-place ReLU between the two layers.
    net = Net([Linear("ip1", 5, top="h"), ReLU("relu1", bottom="h", top="h"),
               Linear("ip2", 2, bottom="h", top="out")], input_shape=(4,), seed=1)
    x = np.random.default_rng(0).uniform(-1, 1, (32, 4)).astype(np.float32)
    q = with_quantizers(net, {"ip2": (0.01, False)})
    assert q["ip2_quant"].bottom == ["h"] and q["ip2"].bottom == ["ip2_quant"]
    out = quantize_int8(net, x)
    assert_close(out.forward(x), net.forward(x), 0.02, "int8 vs float logits")


def test_unknown_or_weightless_layers(trained):
    net, x, _ = trained
    with pytest.raises(ValueError, match="pool1 .* has no weight"):
        quantize_int8(net, x[:8], layers=["pool1"])
    with pytest.raises(ValueError, match="int8: .*no layer named 'conv9'"):
        quantize_int8(net, x[:8], layers=["conv9"])
    with pytest.raises(ValueError, match="no calibration images"):
        quantize_int8(net, x[:0])


def test_masked_until_bpda_then_the_dequantized_gradient(int8_net):
    x, y = bars(40, seed=3)
    with single_thread():
        assert [l.name for l in masked_layers(int8_net)] == ["conv1_quant", "ip1_quant",
                                                             "ip2_quant"]
        check = check_gradients(int8_net, x, y)
        assert not check.passed and "GRADIENT MASKING" in check.detail
        with bpda(int8_net):
            assert check_gradients(int8_net, x, y).passed


def test_bpda_gradient_is_the_dequantized_nets():
    # A net of two linear layers: through the straight-through quantizers, dL/dx must be
    # dout · W2_deq · W1_deq with W_deq = (per-channel scale) · codes (the steps cancel).
    rng = np.random.default_rng(4)
    net = Net([Linear("ip1", 6), Linear("ip2", 3)], input_shape=(5,), dtype=np.float64, seed=2)
    x = rng.uniform(0, 1, (16, 5))
    q = quantize_int8(net, x)
    deq = []
    for name in ("ip1", "ip2"):
        fmt = q[name].weight_format
        w = net[name].dense_weight()
        s = np.abs(w).max(axis=1) / 127
        deq.append(s[:, None] * fmt.codes.reshape(w.shape))
    dout = rng.standard_normal((16, 3))
    with bpda(q):
        q.forward_for_backward(x)
        dx = q.backward(dout, param_grads=False)
    assert_close(dx, dout @ deq[1] @ deq[0], 1e-12, "dL/dx")
