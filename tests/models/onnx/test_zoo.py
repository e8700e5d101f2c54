"""The ONNX model zoo's networks as the onnx wheel ships them (``backend/test/data/light``:
the real architectures, with each weight a ``ConstantOfShape`` of one value, and the output
for the input ``arange(n) / n`` computed by the ONNX reference backend) against that bundled
output and onnxruntime.

Constant weights make every class's logit the same number, up to float32 rounding, and put
the logits near 1e10 in SqueezeNet: a float32 softmax of them is decided by that rounding
(onnxruntime's GEMM and the engine's round channels differently). So the float32 net's
logits (the Softmax's input) are compared with onnxruntime's, and the output probabilities
in float64, where rounding is far below the softmax's resolution.
"""

import os

import numpy as np
import onnx
import pytest
from helpers import assert_close
from onnx import numpy_helper
from onnx_files import LIGHT, logits_name, ort_outputs

from robustcnn.engine import Net
from robustcnn.models.onnx import load_onnx, onnx_model

SMALL = ["squeezenet"]
LARGE = ["shufflenet", "inception_v1", "resnet50", "inception_v2", "densenet121",
         "bvlc_alexnet", "vgg19", "zfnet512"]
RTOL = 1e-4


def light_input():
    n = 3 * 224 * 224
    return (np.arange(n).reshape(1, 3, 224, 224) / n).astype(np.float32)


def check_zoo_model(ort, name):
    path = os.path.join(LIGHT, f"light_{name}.onnx")
    m = onnx.load(path)
    net = load_onnx(path, max_bytes=2 << 30)  # VGG-19's 143 M weights are over the default
    assert isinstance(net, Net) and net.input_shape == (3, 224, 224)
    expected = numpy_helper.to_array(onnx.load_tensor(path.replace(".onnx", "_output_0.pb")))
    x = light_input()
    logits = logits_name(m)
    theirs_out, theirs_logits = ort_outputs(ort, m, x, [m.graph.output[0].name, logits])
    ours_logits = net.forward_for_backward(x)[1]
    assert_close(ours_logits.reshape(theirs_logits.shape), theirs_logits, RTOL,
                 f"{name} logits vs onnxruntime")
    out64 = net.astype(np.float64).forward(x)
    assert_close(out64.reshape(expected.shape), expected, RTOL, f"{name} vs bundled output")
    assert_close(out64.reshape(theirs_out.shape), theirs_out, RTOL, f"{name} vs onnxruntime")
    # Written with save_onnx's writer and read again: the same spec and weights.
    again = load_onnx(onnx_model(net).SerializeToString())
    assert again.spec() == net.spec()
    state, other = net.state_dict(), again.state_dict()
    assert sorted(state) == sorted(other)
    for key in state:
        np.testing.assert_array_equal(other[key], state[key], err_msg=f"{name} {key}")
    # A random input too: the logits of two examples at once.
    xr = np.random.default_rng(0).uniform(0, 1, (2, 3, 224, 224)).astype(np.float32)
    (theirs,) = ort_outputs(ort, m, xr[:1], [logits])
    ours = net.forward_for_backward(xr)[1]
    assert_close(ours[:1].reshape(theirs.shape), theirs, RTOL, f"{name} logits, random input")


@pytest.mark.parametrize("name", SMALL)
def test_zoo_model(ort, name):
    check_zoo_model(ort, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_large_zoo_model(ort, name):
    check_zoo_model(ort, name)


def test_every_bundled_model_is_covered():
    names = sorted(f[len("light_"):-len(".onnx")] for f in os.listdir(LIGHT)
                   if f.endswith(".onnx"))
    assert names == sorted(SMALL + LARGE)
