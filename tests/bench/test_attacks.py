"""bench/attacks.py: a tiny PGD case must agree with torch; the torch PGD it runs."""

import numpy as np
import pytest
from helpers import single_thread

from robustcnn.bench import attacks, dense, pairs
from robustcnn.models.lenet import lenet5


def test_a_tiny_pgd_case_agrees_with_torch(tiny):
    torch = pytest.importorskip("torch")
    case = attacks.pgd_case(batch=4, steps=3)
    assert case.name == "lenet5 PGD-3 Linf eps 0.1 b4" and case.target == 1.0
    # Both sides on one thread: many tiny passes, where waking a thread pool costs more than
    # the work when other processes hold the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with single_thread():
            result = pairs.run_case(case, tiny)
    finally:
        torch.set_num_threads(threads)
    assert result.agrees, result.check
    assert result.check.startswith("ok step 1: same signs as torch on ")
    assert result.ours_s > 0 and result.peer_s > 0
    assert case.flops == 3 * 2 * sum(dense.lenet5_flops(lenet5(), 4))


def test_torch_pgd_stays_in_the_ball_and_the_range():
    torch = pytest.importorskip("torch")
    net = lenet5(seed=1)
    x = np.random.default_rng(1).random((3,) + net.input_shape, dtype=np.float32)
    xt = torch.from_numpy(x)
    adv = attacks.torch_pgd(dense.torch_lenet5(net), xt, torch.tensor([0, 1, 2]), eps=0.1,
                            alpha=0.07, steps=3).numpy()
    delta = np.abs(adv - x)
    assert delta.max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert delta.max() >= 0.1 - 1e-6  # two steps of 0.07 the same way reach the border
    # One step is FGSM: x + alpha · sign(∇ loss), clipped.
    model, labels = dense.torch_lenet5(net), torch.tensor([0, 1, 2])
    xg = xt.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(model(xg), labels, reduction="sum").backward()
    one = attacks.torch_pgd(model, xt, labels, eps=0.1, alpha=0.07, steps=1).numpy()
    np.testing.assert_allclose(one, np.clip(x + 0.07 * np.sign(xg.grad.numpy()), 0, 1), atol=1e-6)
