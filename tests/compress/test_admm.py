"""ADMM pruning (compress/admm.py): the projections are the nearest points of their
constraint sets, the augmented loss and gradient by finite differences, the Z/U/ρ step against
NumPy, the authors' LeNet ratios."""

import numpy as np
import pytest

from robustcnn.compress.admm import LENET_KEPT, ADMMObjective, project
from robustcnn.engine import Conv2d, Linear, MaxPool2d, Net, ReLU


def small_net(dtype=np.float64, seed=0):
    net = Net([Conv2d("conv1", 3, kernel=3), ReLU("relu1"), MaxPool2d("pool1", 2, 2),
               Linear("ip1", 8), ReLU("relu2"), Linear("ip2", 3)],
              input_shape=(1, 8, 8), dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 3)
    for layer in net.params.values():
        layer["bias"][...] = rng.normal(0.0, 0.1, layer["bias"].shape)
    return net


def bars(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0.0, 0.3, (n, 1, 8, 8))
    for i, k in enumerate(y):
        x[i, 0, 2 * k + 1:2 * k + 3, 1:7] += 0.5
    return x, y

@pytest.mark.parametrize("kind", ["irregular", "column", "filter"])
def test_projection_is_the_nearest_point_of_the_constraint_set(kind):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 2, 2, 2))
    z, mask = project(w, 0.5, kind)
    rows = z.reshape(6, -1)
    if kind == "irregular":
        assert np.count_nonzero(z) == 24
        assert np.abs(w[mask]).min() >= np.abs(w[~mask]).max()
    elif kind == "column":
        assert (np.abs(rows).sum(0) > 0).sum() == 4
        norms = np.linalg.norm(w.reshape(6, -1), axis=0)
        kept = np.abs(rows).sum(0) > 0
        assert norms[kept].min() >= norms[~kept].max()
    else:
        assert (np.abs(rows).sum(1) > 0).sum() == 3
    np.testing.assert_array_equal(z[mask], w[mask])
    # Nearest: no other point of the set with this support size is closer (random trials).
    for _ in range(20):
        other, _ = project(w * rng.uniform(0.5, 1.5, w.shape), 0.5, kind)
        support = other != 0
        assert np.linalg.norm(w - z) <= np.linalg.norm(w - np.where(support, w, 0)) + 1e-12
    with pytest.raises(ValueError, match="sparsity_type"):
        project(w, 0.5, "block")


def test_admm_step_matches_numpy_and_its_gradient_finite_differences():
    net = small_net()
    x, y = bars(6)
    admm = ADMMObjective(net, {"ip1": 0.3}, rho=0.05, rho_growth=1.3, interval=2)
    w0 = net.layer("ip1").params["weight"].copy()
    np.testing.assert_array_equal(admm.Z["ip1"], project(w0, 0.3)[0])
    loss, _ = admm(net, x, y)
    g = net.grads["ip1"]["weight"].copy()

    def total():
        ce = net.loss_and_grad(x, y)[0]
        d = net.layer("ip1").params["weight"] - admm.Z["ip1"] + admm.U["ip1"]
        return ce + 0.5 * admm.rho["ip1"] * (d ** 2).sum()

    assert loss == pytest.approx(total(), rel=1e-12)
    w = net.layer("ip1").params["weight"].reshape(-1)
    for i in np.random.default_rng(0).choice(w.size, 6, replace=False):
        old = w[i]
        w[i] = old + 1e-6
        up = total()
        w[i] = old - 1e-6
        down = total()
        w[i] = old
        assert g.reshape(-1)[i] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-9)
    # The Z/U/ρ update before the third batch, against NumPy.
    net.layer("ip1").params["weight"][...] += 0.01
    w1 = net.layer("ip1").params["weight"].copy()
    admm(net, x, y)
    assert admm.updates == 0
    admm(net, x, y)
    assert admm.updates == 1 and admm.rho["ip1"] == pytest.approx(0.05 * 1.3)
    z = project(w1, 0.3)[0]
    np.testing.assert_allclose(admm.Z["ip1"], z)
    np.testing.assert_allclose(admm.U["ip1"], w1 - z)


def test_lenet_setting_names_lenet5_layers():
    from robustcnn.models.lenet import lenet5

    net = lenet5()
    for name in LENET_KEPT:
        net.layer(name)
