"""engine/activation.py: ReLU (with Caffe's negative_slope) and ReLU6, forward and backward."""

import numpy as np
import pytest
from helpers import F32, F64, assert_close, check_op, uniform_away_from

from robustcnn.engine import relu6_backward, relu6_forward, relu_backward, relu_forward

# References (float64, elementwise with np.where; at a kink the derivative is taken as in Caffe:
# ReLU's x = 0 has slope negative_slope, ReLU6's 0 and 6 pass nothing).


def relu_ref(x, slope):
    return np.where(x > 0, x, slope * x)


def relu_ref_backward(dy, x, slope):
    return np.where(x > 0, dy, slope * dy)


def relu6_ref(x):
    return np.where(x < 0, 0.0, np.where(x > 6, 6.0, x))


def relu6_ref_backward(dy, x):
    return np.where((x > 0) & (x < 6), dy, 0.0)


SHAPES = [(2, 3, 4, 5), (7,), (3, 11), (1, 1, 1, 1)]


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("slope", [0.0, 0.1, 1.0, 2.5])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_relu(shape, slope, dtype, rng):
    # Values well away from the kink at 0, so that finite differences do not straddle it.
    x = uniform_away_from(rng, shape, -3, 3, kinks=[0.0])
    check_op(lambda x: relu_forward(x, slope), lambda x: relu_ref(x, slope), [x],
             backward=lambda dy, x: relu_backward(dy, x, slope),
             ref_backward=lambda dy, x: relu_ref_backward(dy, x, slope),
             dtype=dtype, what=f"relu(negative_slope={slope})")


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_relu6(shape, dtype, rng):
    # Both sides of both kinks (0 and 6), away from them.
    x = uniform_away_from(rng, shape, -3, 9, kinks=[0.0, 6.0])
    check_op(relu6_forward, relu6_ref, [x], backward=relu6_backward,
             ref_backward=relu6_ref_backward, dtype=dtype, what="relu6")


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
def test_values_at_the_kinks(dtype):
    x = np.array([-6.0, -0.0, 0.0, 1e-30, 6.0, 6.5, -1e-30], dtype)
    dy = np.full_like(x, 2.0)

    def want(values):  # the expected values rounded to the dtype, then compared exactly
        return np.array(values, dtype)

    assert_close(relu_forward(x, 0.5), want([-3, 0, 0, 1e-30, 6, 6.5, -0.5e-30]), 0, "relu kinks")
    # Caffe: dx = dy · ((x > 0) + negative_slope · (x <= 0)): at x = 0 the slope is negative_slope
    assert_close(relu_backward(dy, x, 0.5), want([1, 1, 1, 2, 2, 2, 1]), 0, "relu kink gradient")
    assert_close(relu6_forward(x), want([0, 0, 0, 1e-30, 6, 6, 0]), 0, "relu6 kinks")
    assert_close(relu6_backward(dy, x), want([0, 0, 0, 2, 0, 0, 0]), 0, "relu6 kink gradient")


def test_relu6_saturates_large_values():
    x = np.array([-1e30, 1e30, 5.999, 6.001])
    assert_close(relu6_forward(x), [0, 6, 5.999, 6], 0, "relu6 saturation")


def test_empty_input():
    for f in (lambda x: relu_forward(x, 0.1), relu6_forward):
        y = f(np.zeros((0, 3)))
        assert y.shape == (0, 3) and y.dtype == F64


def test_non_contiguous_input(rng):
    x = rng.standard_normal((4, 6))[:, ::2]
    assert_close(relu_forward(x, 0.2), relu_ref(x, 0.2), 0, "relu on a view")
    assert_close(relu6_forward(x * 5), relu6_ref(x * 5), 0, "relu6 on a view")


@pytest.mark.parametrize("slope", [-0.1, np.nan, np.inf])
def test_bad_negative_slope(slope, rng):
    x = rng.standard_normal(4)
    with pytest.raises(ValueError, match=r"relu1 \(ReLU\): negative_slope must be finite and >= 0"):
        relu_forward(x, slope, name="relu1")
    with pytest.raises(ValueError, match="negative_slope must be finite"):
        relu_backward(x, x, slope)


@pytest.mark.parametrize("f", [relu_backward, relu6_backward])
def test_bad_input(f, rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(ValueError, match=r"output gradient shape \(3, 2\) does not match the "
                                         r"input \(2, 3\)"):
        f(np.zeros((3, 2)), x)
    with pytest.raises(TypeError, match="output gradient is float32 but the input is float64"):
        f(np.zeros((2, 3), np.float32), x)
    with pytest.raises(TypeError, match="input must be float32 or float64"):
        f(np.zeros((2, 3)), x.astype(int))
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="input has 1 non-finite"):
        f(np.zeros((2, 3)), x)


def test_forward_bad_input():
    with pytest.raises(TypeError, match=r"relu6 \(ReLU6\): input must be float32 or float64"):
        relu6_forward(np.arange(3))
    with pytest.raises(ValueError, match="non-finite"):
        relu_forward(np.array([0.0, np.inf]))


# The quantized ReLU: a staircase of 2**bits values over [0, max_value] after a clipped ReLU.
# Its true gradient is zero off the jumps (and undefined on them: the engine says 0), so the
# backward is checked against the references below, not against finite differences, which
# would measure the jumps.


def quantized_relu_ref(x, bits, max_value):
    step = max_value / (2 ** bits - 1)
    return np.floor(np.clip(x, 0, max_value) / step + 0.5) * step


def clipped_relu_ref_backward(dy, x, max_value):
    return np.where((x > 0) & (x < max_value), dy, 0.0)


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("bits,max_value", [(1, 1.0), (2, 6.0), (4, 1.0), (8, 6.0)])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_quantized_relu(shape, bits, max_value, dtype, rng):
    from robustcnn.engine.activation import quantized_relu_backward, quantized_relu_forward

    x = uniform_away_from(rng, shape, -0.5 * max_value, 1.5 * max_value, kinks=[0.0, max_value])
    # True gradient: zero everywhere.
    check_op(lambda x: quantized_relu_forward(x, bits, max_value),
             lambda x: quantized_relu_ref(x, bits, max_value), [x],
             backward=lambda dy, x: quantized_relu_backward(dy, x, bits, max_value),
             ref_backward=lambda dy, x: np.zeros_like(x), dtype=dtype, fd=False,
             what=f"quantized_relu(bits={bits}, max_value={max_value})")
    # Straight-through (BPDA): exactly the clipped ReLU's gradient (ReLU6's for max_value 6).
    check_op(lambda x: quantized_relu_forward(x, bits, max_value),
             lambda x: quantized_relu_ref(x, bits, max_value), [x],
             backward=lambda dy, x: quantized_relu_backward(dy, x, bits, max_value, True),
             ref_backward=lambda dy, x: clipped_relu_ref_backward(dy, x, max_value),
             dtype=dtype, fd=False, what="quantized_relu straight-through")
    if max_value == 6.0:
        dy = rng.standard_normal(shape).astype(dtype)
        xd = x.astype(dtype)
        assert_close(quantized_relu_backward(dy, xd, bits, 6.0, True), relu6_backward(dy, xd), 0,
                     "straight-through = ReLU6's gradient")


def test_quantized_relu_values():
    from robustcnn.engine.activation import quantized_relu_forward

    # 2 bits over [0, 6]: steps of 2; the jumps sit at 1, 3 and 5 (ties round up).
    x = np.array([-1.0, 0.0, 0.99, 1.0, 2.9, 3.0, 4.99, 5.0, 6.0, 100.0])
    assert_close(quantized_relu_forward(x, 2, 6.0), [0, 0, 0, 2, 2, 4, 4, 6, 6, 6], 0, "levels")
    # 8 bits: 256 distinct values at most, the extremes exactly 0 and max_value.
    y = quantized_relu_forward(np.linspace(-1, 2, 10_001), 8, 1.0)
    assert len(np.unique(y)) == 256 and y.min() == 0 and y.max() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("bits,max_value,match", [
    (0, 1.0, "bits must be an integer in"), (17, 1.0, "bits must be an integer in"),
    (2.5, 1.0, "bits must be an integer in"), (True, 1.0, "bits must be an integer in"),
    (4, 0.0, "max_value must be finite and > 0"), (4, np.inf, "max_value must be finite"),
    (4, "x", "max_value must be finite")])
def test_quantized_relu_bad_arguments(bits, max_value, match):
    from robustcnn.engine.activation import quantized_relu_forward
    from robustcnn.engine.layers import QuantizedReLU

    with pytest.raises(ValueError, match=r"q1 \(QuantizedReLU\): " + match):
        quantized_relu_forward(np.zeros(3), bits, max_value, name="q1")
    with pytest.raises(ValueError, match=r"q1 \(QuantizedReLU\): " + match):
        QuantizedReLU("q1", bits=bits, max_value=max_value)


def test_quantized_relu_layer_in_a_net(rng):
    """Through a Net: the true input gradient is zero, the straight-through one is the
    clipped-ReLU net's; the spec round-trips the layer's settings."""
    from robustcnn.engine import Linear, Net, ReLU6
    from robustcnn.engine.layers import QuantizedReLU

    def build(act):
        net = Net([Linear("ip1", 8), act, Linear("ip2", 3)], input_shape=(5,), dtype=F64, seed=1)
        net.params["ip1"]["bias"][...] = 3.0  # most units inside (0, 6)
        return net

    q = build(QuantizedReLU("q", bits=3, max_value=6.0))
    ref = build(ReLU6("q"))
    x = rng.uniform(-1, 1, size=(4, 5))
    labels = np.array([0, 1, 2, 0])
    _, dx = q.loss_and_input_grad(x, labels)
    assert np.all(dx == 0)  # exact: the backward multiplies by nothing, it writes zeros
    q.layer("q").straight_through = True
    _, dx_ste = q.loss_and_input_grad(x, labels)
    # ReLU6's gradient at ReLU6's logits differs from the STE's at the quantized logits only
    # through the softmax: compare the logit-free part with the same dlogits.
    _, zq = q.forward_for_backward(x)
    dz = np.random.default_rng(0).standard_normal(zq.shape)
    g_ste = q.backward(dz, param_grads=False, of="logits")
    ref.forward_for_backward(x)
    assert_close(g_ste, ref.backward(dz, param_grads=False, of="logits"), 1e-12, "STE = ReLU6")
    assert np.abs(dx_ste).max() > 0
    copy = Net.from_spec(q.spec())
    layer = copy.layer("q")
    assert (layer.bits, layer.max_value, layer.straight_through) == (3, 6.0, True)
    assert "QuantizedReLU" in q.summary()


# The activation quantizer of quantized nets: integer codes of a uniform quantizer. As with the
# quantized ReLU, its backward is checked against references, not finite differences.


def quantize_ref(x, bits, step, signed):
    if signed and bits == 1:
        return np.where(x >= 0, 1.0, -1.0)
    lo, hi = (0, 2 ** bits - 1) if not signed else (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
    return np.clip(np.floor(x / step + 0.5), lo, hi)


def quantize_ste_ref(dy, x, bits, step, signed):
    lo, hi = (0, 2 ** bits - 1) if not signed else (-max(2 ** (bits - 1) - 1, 1),
                                                    max(2 ** (bits - 1) - 1, 1))
    return np.where((x >= lo * step) & (x <= hi * step), dy / step, 0.0)


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("bits,step,signed", [(8, 1 / 255, False), (8, 0.02, True), (1, 1.0, True),
                                              (1, 0.5, False), (2, 0.3, True), (4, 0.1, False)])
def test_quantize_activation(bits, step, signed, dtype, rng):
    from robustcnn.engine.activation import quantize_backward, quantize_forward

    lo, hi = quantize_ref(np.array([-1e9, 1e9]), bits, step, signed)
    x = uniform_away_from(rng, (3, 4, 5), (lo - 2) * step, (hi + 2) * step,
                          kinks=[lo * step, hi * step, 0.0], margin=step / 50)
    what = f"quantize(bits={bits}, step={step}, signed={signed})"
    check_op(lambda x: quantize_forward(x, bits, step, signed),
             lambda x: quantize_ref(x, bits, step, signed), [x],
             backward=lambda dy, x: quantize_backward(dy, x, bits, step, signed),
             ref_backward=lambda dy, x: np.zeros_like(x), dtype=dtype, fd=False, what=what)
    check_op(lambda x: quantize_forward(x, bits, step, signed),
             lambda x: quantize_ref(x, bits, step, signed), [x],
             backward=lambda dy, x: quantize_backward(dy, x, bits, step, signed, True),
             ref_backward=lambda dy, x: quantize_ste_ref(dy, x, bits, step, signed),
             dtype=dtype, fd=False, what=what + " straight-through")


def test_quantize_activation_codes():
    from robustcnn.engine.activation import quantize_forward

    # uint8 codes of pixels k/255 are the bytes themselves; int8 codes are symmetric ±127.
    k = np.arange(256.0)
    assert np.array_equal(quantize_forward(k / 255, 8, 1 / 255), k)
    x = np.array([-5.0, -1.27, -0.015, -0.005, 0.0, 0.005, 0.015, 1.27, 5.0])
    assert np.array_equal(quantize_forward(x, 8, 0.01, True), [-127, -127, -1, 0, 0, 1, 2, 127, 127])
    assert np.array_equal(quantize_forward(x, 1, 1.0, True), [-1, -1, -1, -1, 1, 1, 1, 1, 1])
    assert np.array_equal(quantize_forward(x, 2, 1.0), [0, 0, 0, 0, 0, 0, 0, 1, 3])


@pytest.mark.parametrize("bits,step,match", [
    (0, 1.0, "bits must be an integer in"), (9, 1.0, "bits must be an integer in"),
    (True, 1.0, "bits must be an integer in"), (8, 0.0, "step must be finite and > 0"),
    (8, -1.0, "step must be finite"), (8, np.nan, "step must be finite")])
def test_quantize_activation_bad_arguments(bits, step, match):
    from robustcnn.engine.activation import quantize_forward
    from robustcnn.engine.layers import QuantizeActivation

    with pytest.raises(ValueError, match=match):
        quantize_forward(np.zeros(3), bits, step)
    with pytest.raises(ValueError, match="q1 \\(QuantizeActivation\\): " + match):
        QuantizeActivation("q1", bits=bits, step=step)


def test_quantize_activation_layer_in_a_net(rng):
    from robustcnn.attacks.bpda import bpda, masked_layers
    from robustcnn.engine import Linear, Net
    from robustcnn.engine.layers import QuantizeActivation

    net = Net([QuantizeActivation("q", bits=8, step=0.05, signed=True), Linear("ip", 3)],
              input_shape=(6,), dtype=np.float64)
    again = Net.from_spec(net.spec(), dtype=np.float64)
    assert again.layers[0].config() == net.layers[0].config()
    assert [layer.name for layer in masked_layers(net)] == ["q"]
    x = rng.uniform(-1, 1, (4, 6))
    _, dx = net.loss_and_input_grad(x, np.array([0, 1, 2, 0]))
    assert not dx.any()  # a staircase: zero gradient
    with bpda(net):
        _, dx = net.loss_and_input_grad(x, np.array([0, 1, 2, 0]))
    w = net["ip"].dense_weight()
    logits = net.forward(x)
    assert_close(logits, np.clip(np.floor(x / 0.05 + 0.5), -127, 127) @ w.T, 1e-12, "codes · W")
    assert dx.any() and not net.layers[0].straight_through
