"""Whole-net gradients with every layer compressed equal those of the same net densified.

A regression test: a sparse layer's input gradient once came back in Fortran order and the
ReLU after it wrote its result into a flattened copy, so training a pruned net used garbage.
"""

import numpy as np
import pytest

from robustcnn.compress.prune import prune
from robustcnn.engine.formats import FORMATS, DenseWeight
from robustcnn.models.lenet import lenet5

OPTIONS = {"csr": {}, "codebook": dict(bits=8), "sparse_codebook": dict(code_bits=8, gap_bits=4),
           "huffman": dict(code_bits=8, gap_bits=4), "binary": {}, "binary_latent": dict(gain=1.5)}


@pytest.mark.parametrize("kind", sorted(OPTIONS))
def test_compressed_net_gradients_equal_the_densified_nets(kind):
    net = lenet5(seed=3, dtype=np.float64)
    prune(net, {"conv1": 0.3, "conv2": 0.7, "ip1": 0.9, "ip2": 0.5})
    # Weights from a small set of values, so that every format stores them exactly.
    for name in ("conv1", "conv2", "ip1", "ip2"):
        w = net[name].dense_weight()
        net[name].set_weight_format(DenseWeight.from_dense(np.round(w * 40) / 40))
        net.convert(name, kind, **OPTIONS[kind])
    dense = net.copy()
    for name in ("conv1", "conv2", "ip1", "ip2"):
        dense[name].set_weight_format(DenseWeight.from_dense(net[name].dense_weight()))
    rng = np.random.default_rng(0)
    x, y = rng.random((6, 1, 28, 28)), rng.integers(0, 10, 6)
    loss, _ = net.loss_and_grad(x, y)
    loss_dense, _ = dense.loss_and_grad(x, y)
    assert loss == pytest.approx(loss_dense, rel=1e-12)
    for name in ("conv1", "conv2", "ip1", "ip2"):
        expected = net[name].weight_format.reduce_dense_grad(dense.grads[name]["weight"])
        for key, g in expected.items():
            np.testing.assert_allclose(net.grads[name][key], g, rtol=1e-10, atol=1e-14,
                                       err_msg=f"{name}/{key}")
        np.testing.assert_allclose(net.grads[name]["bias"], dense.grads[name]["bias"],
                                   rtol=1e-10, atol=1e-14, err_msg=f"{name}/bias")
    _, dx = net.loss_and_input_grad(x, y)
    _, dx_dense = dense.loss_and_input_grad(x, y)
    np.testing.assert_allclose(dx, dx_dense, rtol=1e-10, atol=1e-14)
