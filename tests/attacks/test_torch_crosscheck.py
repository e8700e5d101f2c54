"""FGSM and PGD cross-checked against an independent implementation in torch (a test-only
dependency), on Fashion-MNIST with a trained LeNet-5 whose weights are copied into torch.

Independent: torch computes the forward, the loss and the input gradient itself; only the
numbers that define the experiment (weights, images, labels, PGD's random start, α, steps) are
shared. float32 on both sides, so gradient signs may differ where a gradient is ~0.
"""

import os

import numpy as np
import pytest
from helpers import single_thread

torch = pytest.importorskip("torch")

from robustcnn.attacks import fgsm, pgd  # noqa: E402
from robustcnn.attacks.pgd import restart_start  # noqa: E402
from robustcnn.engine.checkpoint import load_net  # noqa: E402
from robustcnn.engine.train import fit  # noqa: E402
from robustcnn.models.datasets import load_dataset  # noqa: E402
from robustcnn.models.lenet import lenet5  # noqa: E402

CHECKPOINT = os.path.join(os.path.dirname(__file__), "..", "..", "runs", "demo-lenet5.h5")
N = 500
EPS = 0.1


@pytest.fixture(autouse=True)
def _torch_one_thread():
    # Like the engine (conftest.py), torch runs single-threaded here: its thread pool is slow
    # to wake when other processes hold the cores.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def load(split):
    try:
        return load_dataset("fashion-mnist", split)
    except FileNotFoundError as e:
        pytest.skip(f"Fashion-MNIST is not installed: {e}")


@pytest.fixture(scope="module")
def setup():
    x, y = load("test")
    x, y = x[:N], y[:N]
    if os.path.exists(CHECKPOINT):
        net, _ = load_net(CHECKPOINT)
        source = "runs/demo-lenet5.h5"
    else:  # one epoch on 6,000 training images: ~80% accuracy, enough to be non-trivial
        xt, yt = load("train")
        net = lenet5(seed=0)
        with single_thread():  # the same net whatever the thread count
            fit(net, xt[:6000], yt[:6000], epochs=1, batch_size=64, progress=False, log=None)
        source = "trained for 1 epoch on 6k images"
    assert net.layer("conv1").weight_format.kind == "dense"
    return net, torch_lenet(net), x, y, source


def torch_lenet(net):
    """Caffe's LeNet-5 in torch with ``net``'s weights (no ReLU after the convolutions)."""
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5),
                          nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                          nn.Linear(500, 10))
    layers = {"conv1": model[0], "conv2": model[2], "ip1": model[5], "ip2": model[7]}
    with torch.no_grad():
        for name, layer in layers.items():
            layer.weight.copy_(torch.from_numpy(net.params[name]["weight"]))
            layer.bias.copy_(torch.from_numpy(net.params[name]["bias"]))
    return model.eval()


def torch_grad(model, x, y):
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(xt), torch.from_numpy(y), reduction="sum")
    loss.backward()
    return xt.grad.numpy()


def torch_accuracy(model, x, y):
    with torch.no_grad():
        return float((model(torch.from_numpy(np.ascontiguousarray(x))).argmax(1).numpy()
                      == y).mean())


def test_the_two_nets_agree(setup):
    net, model, x, y, _ = setup
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(net.logits(x), ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def pool_near_ties(model, x, rel=1e-5):
    """(N,) bool: some 2×2 max-pool window of the example has its two largest inputs within
    ``rel`` of the layer's scale but not equal: float rounding may pick either, and the
    gradient then flows to another pixel (both are valid subgradients)."""
    near = np.zeros(len(x), dtype=bool)
    if not len(x):
        return near
    with torch.no_grad():
        a = torch.from_numpy(np.ascontiguousarray(x))
        for layer in model:
            if isinstance(layer, torch.nn.MaxPool2d):
                v = a.numpy()
                n, c, h, w = v.shape
                win = v.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
                top = np.sort(win.reshape(n, c, h // 2, w // 2, 4), axis=-1)
                gap = top[..., -1] - top[..., -2]
                scale = np.abs(v).reshape(n, -1).max(1).reshape(n, 1, 1, 1)
                near |= ((gap > 0) & (gap <= rel * scale)).any(axis=(1, 2, 3))
            a = layer(a)
    return near


def test_fgsm_matches_torch(setup):
    net, model, x, y, source = setup
    adv = fgsm(net, x, y, EPS)
    g = torch_grad(model, x, y)
    ref = np.clip(x + EPS * np.sign(g), 0, 1)
    differ = np.abs(adv - ref) > 1e-6
    _, mine = net.loss_and_input_grad(x, y)
    scale = np.abs(g).reshape(N, -1).max(1)
    err = np.abs(mine - g).reshape(N, -1).max(1) / scale
    # Signs may differ only where the gradient is ~0 — below 1e-5 of the batch's largest: the
    # confidently classified examples, whose float32 softmax saturates (p_y rounds to 1, so
    # both libraries get their tiny gradients from rounding) — or in the rare example where a
    # max-pool window holds a near-tie and the two libraries route the gradient differently.
    tiny = np.abs(g) <= 1e-5 * np.abs(g).max()
    saturated = scale < 1e-3 * scale.max()
    switched = (err > 1e-3) & ~saturated
    assert switched.mean() <= 0.01
    assert pool_near_ties(model, x[switched]).all()
    unexplained = differ & ~tiny & ~switched[:, None, None, None]
    assert not unexplained.any(), f"{int(unexplained.sum())} signs differ on clear gradients"
    # Elsewhere the two gradients agree closely.
    clear = (scale >= 1e-2 * scale.max()) & ~switched
    assert err[clear].max() <= 1e-4
    acc, ref_acc = net.accuracy(adv, y), torch_accuracy(model, ref, y)
    print(f"\n[{source}] clean {net.accuracy(x, y):.4f} (torch {torch_accuracy(model, x, y):.4f}); "
          f"FGSM eps {EPS}: robustcnn {acc:.4f}, torch {ref_acc:.4f}; {int(differ.sum())} of "
          f"{differ.size} pixels differ, in {int(differ.any(axis=(1, 2, 3)).sum())} examples: "
          f"{int((differ & tiny).sum())} at |g| <= 1e-5 max, the others in "
          f"{int(switched.sum())} examples with a max-pool near-tie; gradient error "
          f"{err[clear].max():.2g} on the {int(clear.sum())} examples with |g| >= 1e-2 max")
    assert abs(acc - ref_acc) <= 0.005


def test_pgd_accuracy_matches_torch(setup):
    net, model, x, y, source = setup
    steps, alpha, seed = 10, 0.025, 3
    adv = pgd(net, x, y, EPS, alpha=alpha, steps=steps, seed=seed)
    # The same random start (the documented draw of restart 0), then torch's own iterations.
    xa = restart_start(x, EPS, "linf", seed, 0, (0.0, 1.0))
    for _ in range(steps):
        xa = np.clip(xa + alpha * np.sign(torch_grad(model, xa, y)), 0, 1)
        xa = np.clip(x + np.clip(xa - x, -EPS, EPS), 0, 1).astype(np.float32)
    acc, ref_acc = net.accuracy(adv, y), torch_accuracy(model, xa, y)
    same = float(np.mean(np.abs(adv - xa).reshape(N, -1).max(1) <= 1e-5))
    print(f"\n[{source}] PGD eps {EPS}, {steps} steps of {alpha}: robustcnn {acc:.4f}, torch "
          f"{ref_acc:.4f}; {100 * same:.1f}% of the examples identical to 1e-5")
    assert abs(acc - ref_acc) <= 0.005
    assert acc < 0.5 * net.accuracy(x, y)  # the attack does something
