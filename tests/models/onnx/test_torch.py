"""Models exported from torch (``torch.onnx.export``, the TorchScript exporter: the dynamo
one needs onnxscript) against torch and onnxruntime: MobileNet-v2-, ResNet- and VGG-style nets
with batch norm, at two opsets, with a fixed and a symbolic batch axis."""

import io
import warnings

import numpy as np
import pytest
from helpers import assert_close
from onnx_files import ort_outputs

from robustcnn.models.onnx import load_onnx, onnx_model

torch = pytest.importorskip("torch")
from torch_nets import NETS, randomised  # noqa: E402


def export(net, opset, dynamic):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), buf, dynamo=False,
                          opset_version=opset, input_names=["image"], output_names=["out"],
                          dynamic_axes={"image": {0: "batch"}} if dynamic else None)
    return buf.getvalue()


@pytest.mark.parametrize("opset,dynamic", [pytest.param(11, False, marks=pytest.mark.slow),
                                            (17, True)])
@pytest.mark.parametrize("kind", NETS)
def test_torch_export_matches_torch_and_onnxruntime(kind, opset, dynamic, ort):
    torch.manual_seed(0)
    net = randomised(NETS[kind](), seed=1)
    data = export(net, opset, dynamic)
    ours = load_onnx(data)
    x = np.random.default_rng(2).standard_normal((3, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    import onnx

    m = onnx.load_from_string(data)
    rows = x if dynamic else x[:1]
    (theirs,) = ort_outputs(ort, m, rows)
    got = ours.forward(x)
    assert_close(got, want, 1e-5, f"{kind} vs torch", atol=1e-6)
    assert_close(got[:len(rows)], theirs, 1e-5, f"{kind} vs onnxruntime", atol=1e-6)
    again = load_onnx(onnx_model(ours).SerializeToString())
    assert again.spec() == ours.spec()
