"""compress/inq.py: Incremental Network Quantization (Zhou et al. 2017) of a trained net — every
weighted layer ends in the power-of-two format at the bits asked, keeps its accuracy on an easy
task, the steps follow the accumulated portions, and the model file holds the result. The
quantizer's equations and the partition are checked in tests/engine/formats/test_pow2.py."""

import numpy as np
import pytest
from helpers import single_thread
from quant_nets import bars, trained_tiny_lenet

from robustcnn.compress.inq import check_portions, inq
from robustcnn.compress.methods import method_options, run_method
from robustcnn.compress.modelfile import load_model, save_model
from robustcnn.engine.formats.pow2 import top_exponent

LAYERS = ["conv1", "ip1", "ip2"]


@pytest.fixture(scope="module")
def trained():
    with single_thread():
        return trained_tiny_lenet()


@pytest.mark.parametrize("bits", [5, 3])
def test_inq_quantizes_every_layer_and_keeps_accuracy(trained, bits, tmp_path):
    net, x, y = trained
    q = net.copy()
    with single_thread():
        inq(q, x, y, bits=bits, epochs=1, lr=0.01, batch_size=32, progress=False)
    xt, yt = bars(300, seed=9)
    assert q.accuracy(xt, yt) >= net.accuracy(xt, yt) - 0.03
    for name in LAYERS:
        fmt = q[name].weight_format
        assert fmt.kind == "pow2" and fmt.value_bits() == bits
        assert fmt.n1 == top_exponent(net[name].dense_weight())  # n1 of the trained weight
        mags = np.abs(fmt.to_dense())
        exps = np.log2(mags[mags > 0])
        assert np.array_equal(exps, np.round(exps))  # powers of two
        assert exps.max() <= fmt.n1 and exps.min() >= fmt.n1 + 1 - 2 ** (bits - 2)
    path = tmp_path / "inq.rcnn"
    save_model(path, q)
    loaded, _ = load_model(path)
    assert loaded["ip1"].weight_format.kind == "pow2"
    assert np.array_equal(loaded.logits(xt), q.logits(xt))


def test_run_method_stages_and_options(trained):
    net, x, y = trained
    out, report = run_method("inq", net.copy(), x, y, {"epochs": 0, "bits": "4"},
                             val=bars(64, seed=1), progress=False, log=None)
    assert [s["stage"] for s in report["stages"]] == [
        "dense", "50% quantized, 0 ep", "75% quantized, 0 ep", "87.5% quantized, 0 ep",
        "100% quantized", "pow2 4-bit"]
    assert out["ip2"].weight_format.bits == 4
    assert method_options("inq", {"bits": "3"})["bits"] == 3
    with pytest.raises(ValueError, match="pow2 bits must be an integer 2..8, got 9"):
        run_method("inq", net.copy(), x, y, {"bits": 9}, progress=False, log=None)
    with pytest.raises(ValueError, match="portions must be numbers"):
        run_method("inq", net.copy(), x, y, {"portions": "half/1"}, progress=False, log=None)
    for bad in [(0.5, 0.75), (0.5, 0.5, 1), (0, 1), (0.75, 0.5, 1)]:
        with pytest.raises(ValueError, match="must increase within"):
            check_portions(bad)
