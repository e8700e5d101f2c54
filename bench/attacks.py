"""Attacks against the same attack written in torch: PGD-40 (L∞) on LeNet-5, the whole attack
timed, its agreement checked on the first step's gradient signs and the adversarial accuracy."""

import numpy as np

from ..models.lenet import lenet5
from .dense import lenet5_flops, torch_lenet5
from .pairs import Case

PGD = dict(eps=0.1, alpha=0.01, steps=40)  # Madry et al.'s MNIST attack: 40 steps of 0.01


def torch_pgd(model, x, labels, *, eps, alpha, steps):
    """L∞ PGD in torch, from x itself: ``steps`` signed steps of ``alpha`` up the cross-entropy,
    each projected onto the eps-ball around x and [0, 1]; ``attacks.pgd`` with
    random_init=False, written as a torch user would."""
    import torch
    import torch.nn.functional as F

    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = (x_adv + alpha * grad.sign()).clamp_(0, 1)
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0, 1)
    return x_adv.detach()


def pgd_case(*, batch=256, eps=PGD["eps"], alpha=PGD["alpha"], steps=PGD["steps"], seed=0):
    """PGD-40 (L∞) on LeNet-5: ``attacks.pgd`` against ``torch_pgd`` on the same weights.

    No random start on either side (random_init=False), so both compute the same iterates. A
    fresh ``lenet5(seed)`` with nonzero biases on uniform random images, labels its own
    predictions. The agreement check, before timing: the first step's signed gradient equals
    torch's wherever |g| > 1e-3 of the example's largest (or torch float64's, where torch
    float32 takes the other side of a max-pool near-tie), and the adversarial accuracies (by
    our net) differ by at most one example; later steps may diverge where a gradient is ~0
    (float32 on both sides).
    """
    import torch

    from ..attacks import pgd

    rng = np.random.default_rng(seed)
    net = lenet5(seed=seed)
    for params in net.params.values():
        params["bias"][...] = rng.uniform(-0.1, 0.1, params["bias"].shape)
    x = rng.random((batch,) + net.input_shape, dtype=np.float32)
    labels = net.predict(x)
    model = torch_lenet5(net).requires_grad_(False)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)

    def ours():
        return (pgd(net, x, labels, eps, alpha=alpha, steps=steps, random_init=False,
                    batch_size=batch),)

    def peer():
        return (torch_pgd(model, xt, yt, eps=eps, alpha=alpha, steps=steps),)

    def torch_grad(m, dtype):
        xg = xt.to(dtype).clone().requires_grad_(True)  # a leaf of its own; xt stays as is
        torch.nn.functional.cross_entropy(m(xg), yt, reduction="sum").backward()
        return xg.grad.numpy()

    def agreement():
        _, g = net.loss_and_input_grad(x, labels)
        ref = torch_grad(model, torch.float32)
        # Where torch float32 routes a gradient through the other side of a max-pool near-tie,
        # ours must agree with torch float64 instead (as ``Case.reference`` does for outputs).
        ref64 = torch_grad(torch_lenet5(net).to(torch.float64), torch.float64)
        clear = np.abs(ref) > 1e-3 * np.abs(ref).reshape(batch, -1).max(1).reshape(-1, 1, 1, 1)
        flips32 = (np.sign(g) != np.sign(ref)) & clear
        flips = int((flips32 & (np.sign(g) != np.sign(ref64))).sum())
        adv, adv_peer = ours()[0], peer()[0].numpy()
        acc, acc_peer = net.accuracy(adv, labels), net.accuracy(adv_peer, labels)
        same = float(np.mean(np.abs(adv - adv_peer).reshape(batch, -1).max(1) <= 1e-5))
        ok = flips == 0 and abs(acc - acc_peer) <= 1.0 / batch + 1e-12
        near_ties = int(flips32.sum()) - flips
        signs = (f"step 1: {flips} sign flips on {int(clear.sum())} clear gradients" if flips else
                 f"step 1: same signs as torch on {int(clear.sum())} clear gradients"
                 + (f" ({near_ties} as torch f64, not f32: max-pool near-ties)" if near_ties
                    else ""))
        return ok, (f"{signs}; adv acc {100 * acc:.1f}% vs {100 * acc_peer:.1f}%; "
                    f"{100 * same:.0f}% of examples identical")

    fwd = sum(lenet5_flops(net, batch))
    return Case(f"lenet5 PGD-{steps} Linf eps {eps:g} b{batch}", ours, peer, steps * 2 * fwd,
                images=batch, target=1.0, agreement=agreement)


def cases():
    """The attack cases, in table order."""
    return [pgd_case()]
