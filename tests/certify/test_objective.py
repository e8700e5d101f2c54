"""certify/objective.py: IBP / CROWN-IBP training as an objective for fit and compression.

The objective's gradients are the finite differences of its loss (κ and β mixing included);
its schedule follows Gowal et al.'s warm-up and ramp and resumes with fit; and IBP training
makes a small net verifiably robust where plain training does not.
"""

import numpy as np
import pytest
from certify_nets import gradient_net

from robustcnn.certify.crown_ibp import margin_bounds
from robustcnn.certify.objective import IBPObjective, worst_case_cross_entropy
from robustcnn.compress.pipeline import CompressionSettings, compress
from robustcnn.engine import Linear, Net, ReLU
from robustcnn.engine.train import SGD, Schedule, fit


def test_worst_case_cross_entropy_by_hand():
    # margins m = (1, −2): worst-case logits (0, −1, 2) for the true class first
    loss, grad = worst_case_cross_entropy(np.array([[1.0, -2.0]]))
    z = np.array([0.0, -1.0, 2.0])
    p = np.exp(z) / np.exp(z).sum()
    assert loss[0] == pytest.approx(-np.log(p[0]), rel=1e-12)
    assert grad[0] == pytest.approx(-p[1:], rel=1e-12)


@pytest.mark.parametrize("method, kappa, beta", [("ibp", 0.7, 1.0), ("crown-ibp", 0.5, 0.3)])
def test_objective_gradients_match_finite_differences(method, kappa, beta):
    rng = np.random.default_rng(2)
    net = gradient_net("csr")
    x = rng.random((4,) + net.input_shape)
    y = rng.integers(0, 4, 4)
    obj = IBPObjective(0.04, method=method, kappa=(kappa, kappa), beta=(beta, beta))
    obj(net, x, y)
    grads = {(l.name, k): g.copy() for l in net.layers for k, g in l.grads.items()}
    assert set(grads) == {(l.name, k) for l in net.layers for k in l.params}
    h = 1e-6
    for (name, k), g in grads.items():
        p = net.layer(name).params[k]
        for idx in rng.choice(p.size, size=min(3, p.size), replace=False):
            old = p.flat[idx]
            p.flat[idx] = old + h
            up, _ = obj(net, x, y)
            p.flat[idx] = old - h
            down, _ = obj(net, x, y)
            p.flat[idx] = old
            fd = (up - down) / (2 * h)
            assert abs(fd - g.flat[idx]) <= 1e-5 * max(abs(fd), 1.0), f"{name}/{k}[{idx}]"


def test_schedule():
    obj = IBPObjective(0.2, warmup=0.1, ramp=0.5, kappa=(1.0, 0.5), method="crown-ibp",
                       beta=(1.0, 0.0))
    obj.at_iteration(5, 100)
    assert obj.current() == (0.0, 1.0, 1.0)
    obj.at_iteration(35, 100)  # halfway through the ramp
    eps, kappa, beta = obj.current()
    assert eps == pytest.approx(0.1) and kappa == pytest.approx(0.75) and beta == pytest.approx(0.5)
    obj.at_iteration(80, 100)
    assert obj.current() == pytest.approx((0.2, 0.5, 0.0))
    assert IBPObjective(0.2).current() == pytest.approx((0.2, 0.5, 1.0))  # no fit: the end


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=-1), "eps must be finite"), (dict(eps=0.1, method="crown"), "method must be"),
    (dict(eps=0.1, warmup=0.8, ramp=0.5), "fractions of the run"),
    (dict(eps=0.1, kappa=(1.0, 2.0)), "kappa must be"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IBPObjective(**kwargs)


def blobs(n, seed):
    """Two classes in 2-D around (0.4, 0.4) and (0.6, 0.6), L∞ distance 0.2 apart."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.where(y[:, None] == 1, [0.6, 0.6], [0.4, 0.4]) + rng.normal(0, 0.03, (n, 2))
    return np.clip(x, 0, 1).astype(np.float32), y


def small_net():
    """Three hidden layers of 64: wide enough that a plainly trained net's boxes blow up."""
    return Net([Linear("ip1", 64), ReLU("r1"), Linear("ip2", 64), ReLU("r2"), Linear("ip3", 64),
                ReLU("r3"), Linear("out", 2)], (2,), seed=0)


def verified(net, x, y, eps):
    bounds, _ = margin_bounds(net, x, y, eps, method="ibp")
    return float(((bounds > 0).all(axis=1) & (net.predict(x) == y)).mean())


def test_ibp_training_verifies_what_plain_training_does_not():
    x, y = blobs(512, 0)
    xt, yt = blobs(256, 1)
    runs = {}
    for name, obj in (("plain", None), ("ibp", IBPObjective(0.08, warmup=0.2, ramp=0.4))):
        net = small_net()
        fit(net, x, y, epochs=12, batch_size=32, schedule=Schedule("constant", 0.05),
            progress=False, log=None, objective=obj)
        runs[name] = (net.accuracy(xt, yt), verified(net, xt, yt, 0.07))
    assert runs["plain"][0] > 0.95 and runs["ibp"][0] > 0.95
    assert runs["ibp"][1] > 0.8
    assert runs["ibp"][1] > runs["plain"][1] + 0.5


class Interrupted(Exception):
    pass


class StopsAt(IBPObjective):
    """The same objective (and config), interrupted at one iteration as a killed run is."""

    stop = None

    def at_iteration(self, it, total):
        if it == self.stop:
            raise Interrupted
        super().at_iteration(it, total)


def test_fit_resumes_the_schedule(tmp_path):
    x, y = blobs(128, 0)
    ckpt = tmp_path / "run.h5"
    a = small_net()
    fit(a, x, y, epochs=4, batch_size=32, progress=False, log=None,
        objective=IBPObjective(0.1, warmup=0.25, ramp=0.5))
    b = small_net()
    killed = StopsAt(0.1, warmup=0.25, ramp=0.5)
    killed.stop = 9  # in the third epoch: the checkpoint holds two
    with pytest.raises(Interrupted):
        fit(b, x, y, epochs=4, batch_size=32, progress=False, log=None, checkpoint=ckpt,
            objective=killed)
    b = small_net()
    fit(b, x, y, epochs=4, batch_size=32, progress=False, log=None, checkpoint=ckpt,
        objective=IBPObjective(0.1, warmup=0.25, ramp=0.5))
    for k, v in a.state_dict().items():
        assert np.array_equal(v, b.state_dict()[k]), k  # the same run, bit for bit
    c = small_net()  # the schedule matters: without warm-up and ramp the run differs
    fit(c, x, y, epochs=4, batch_size=32, progress=False, log=None, objective=IBPObjective(0.1))
    assert not np.array_equal(a.state_dict()["out/weight"], c.state_dict()["out/weight"])


def test_compress_with_the_objective():
    x, y = blobs(512, 0)
    net = small_net()
    fit(net, x, y, epochs=12, batch_size=32, schedule=Schedule("constant", 0.05), progress=False,
        log=None, objective=IBPObjective(0.08, warmup=0.2, ramp=0.4))
    settings = CompressionSettings(kept={"ip2": 0.3, "ip3": 0.3}, bits={"ip3": 3}, rounds=1,
                                   retrain_epochs=3, finetune_epochs=1, batch_size=32,
                                   huffman=False)
    verified_after = {}
    for name, obj in (("plain", None), ("ibp", IBPObjective(0.08))):
        small = net.copy()
        report = compress(small, x, y, settings, progress=False, log=None, objective=obj)
        assert small.layer("ip3").weight_format.kind == "sparse_codebook"
        verified_after[name] = verified(small, x[:256], y[:256], 0.07)
    assert report["objective"]["objective"] == "ibp"
    assert verified_after["ibp"] > 0.9, verified_after
    assert verified_after["ibp"] > verified_after["plain"] + 0.03, verified_after
