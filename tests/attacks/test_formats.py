"""Every attack runs unchanged on every weight format, and — where the format stores the weight
exactly — gives the dense net's adversarial examples (float64: only the order of sums differs).

The convnet is pruned (60 % of each weight set to zero) and put on 15 levels first, so that
CSR, the codebook (4 bits), the sparse codebook and the Huffman-coded format all hold it
exactly; ``test_the_converted_nets_are_exact`` checks that premise.
"""

import numpy as np
import pytest
from attack_nets import make_convnet
from helpers import single_thread

from robustcnn.attacks import ATTACKS, adversarial_patch
from robustcnn.engine.formats import DenseWeight

WEIGHTED = ("conv1", "ip1", "ip2")
FORMATS = {"csr": {}, "codebook": dict(bits=4), "sparse_codebook": dict(code_bits=4, gap_bits=4),
           "huffman": dict(code_bits=4, gap_bits=4)}

# Arguments that keep each attack quick on 5 tiny examples.
KWARGS = {
    "fgsm": dict(eps=0.1), "fgm-l2": dict(eps=0.5), "bim": dict(eps=0.1),
    "illc": dict(eps=0.1), "pgd-linf": dict(eps=0.1, steps=5, restarts=2),
    "pgd-l2": dict(eps=0.5, steps=5), "deepfool": dict(eps=None),
    "cw-l2": dict(eps=None, max_iter=60, binary_search_steps=3, initial_const=1.0),
    "jsma": dict(eps=None),
    "lbfgs": dict(eps=None, search_steps=3, max_iter=30),
    "noise-linf": dict(eps=0.1), "noise-l2": dict(eps=0.5),
    "square-linf": dict(eps=0.3, n_queries=40), "square-l2": dict(eps=1.5, n_queries=40),
    "spsa": dict(eps=0.3, steps=10, samples=8, learning_rate=0.05),
    "hsj-l2": dict(eps=None, n_queries=150), "hsj-linf": dict(eps=None, n_queries=150),
    "apgd-ce-linf": dict(eps=0.1, n_iter=5, restarts=2), "apgd-ce-l2": dict(eps=0.5, n_iter=5),
    "apgd-dlr-linf": dict(eps=0.1, n_iter=5), "apgd-dlr-l2": dict(eps=0.5, n_iter=5),
    "apgd-t-linf": dict(eps=0.1, n_iter=5), "apgd-t-l2": dict(eps=0.5, n_iter=5),
    "fab-linf": dict(eps=None, n_iter=5), "fab-l2": dict(eps=None, n_iter=5),
    "fab-t-linf": dict(eps=0.1, n_iter=5), "fab-t-l2": dict(eps=0.5, n_iter=5, restarts=2),
    "autoattack-linf": dict(eps=0.1, n_iter=5, n_queries=20),
    "autoattack-l2": dict(eps=0.5, n_iter=5, n_queries=20, version="plus"),
}


def quantize_and_prune(w, prune=0.6):
    s = np.abs(w).max()
    q = s * np.round(w / s * 7) / 7
    q[np.abs(q) <= np.quantile(np.abs(q), prune)] = 0.0
    return q


def dense_net():
    net = make_convnet(dtype=np.float64, seed=2)
    for name in WEIGHTED:
        layer = net.layer(name)
        layer.set_weight_format(DenseWeight(quantize_and_prune(layer.dense_weight())))
    return net


def converted(kind):
    net = dense_net()
    for name in WEIGHTED:
        net.convert(name, kind, **FORMATS[kind])
        assert net.layer(name).weight_format.kind == kind
    return net


X = np.random.default_rng(0).uniform(0, 1, (5, 1, 8, 8))


def test_every_attack_is_covered():
    assert set(KWARGS) == set(ATTACKS)


@pytest.mark.parametrize("kind", FORMATS)
def test_the_converted_nets_are_exact(kind):
    dense, net = dense_net(), converted(kind)
    for name in WEIGHTED:
        np.testing.assert_array_equal(net.layer(name).dense_weight(),
                                      dense.layer(name).dense_weight())  # exact storage
    np.testing.assert_allclose(net.logits(X), dense.logits(X), rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def dense_results():
    net = dense_net()
    y = net.predict(X)
    with single_thread():  # module fixtures run before the autouse one of conftest.py
        results = {name: ATTACKS[name](net, X, y, **kw) for name, kw in KWARGS.items()}
    for name, adv in results.items():  # every attack does something here: the comparison bites
        assert (net.predict(adv) != y).any(), name
    return results


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize("name", KWARGS)
def test_attack_on_compressed_weights_equals_dense(kind, name, dense_results):
    net = converted(kind)
    y = net.predict(X)
    adv = ATTACKS[name](net, X, y, **KWARGS[name])
    assert adv.shape == X.shape and adv.dtype == np.float64
    assert np.isfinite(adv).all() and adv.min() >= 0 and adv.max() <= 1
    np.testing.assert_allclose(adv, dense_results[name], rtol=0, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("kind", ["csr", "huffman"])
def test_patch_on_compressed_weights_equals_dense(kind):
    dense, net = dense_net(), converted(kind)
    a = adversarial_patch(dense, X, 1, patch_size=3, steps=10, batch_size=4)
    b = adversarial_patch(net, X, 1, patch_size=3, steps=10, batch_size=4)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
