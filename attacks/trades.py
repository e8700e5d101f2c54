"""TRADES: adversarial training by the clean loss plus a robustness regulariser (a training
objective for ``engine.train.fit``, beside ``adversarial_training.AdversarialObjective``).

Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, "Theoretically Principled Trade-off between
Robustness and Accuracy", ICML 2019, eq. (5) and Algorithm 1:

    min_θ  E [ CE(f(x), y) + β · max_{x' ∈ B∞(x, eps)} KL( p(x) ‖ p(x') ) ],  p = softmax ∘ f

The inner maximisation is projected sign-gradient ascent on the KL with the clean distribution
p(x) held fixed, from x + 0.001·N(0, 1) (the paper's start), ``steps`` steps of ``alpha``,
each projected onto the L∞ ball and the valid range. The outer loss differentiates both terms
in θ through both passes (the clean distribution is not detached), as the paper's code does.

Per example, with clean logits z, adversarial logits z', p = softmax(z), q = softmax(z'):

    L      = CE(z, y) + β · KL(p ‖ q),      KL(p ‖ q) = Σ_k p_k (log p_k − log q_k)
    dL/dz  = (p − onehot(y)) + β · p ⊙ ((log p − log q) − KL(p ‖ q))
    dL/dz' = β · (q − p)

``trades_loss`` computes these; ``trades_perturbation`` the inner maximisation;
``TradesObjective`` the whole step.
"""

import zlib

import numpy as np

from ._common import check_eps, check_float, check_int

# Zhang et al.'s trade-off (their CIFAR-10 choice; 1/β weighs the clean error).
BETA = 6.0
# The scale of the Gaussian start around x (Algorithm 1: x' ← x + 0.001 · N(0, I)).
START_SCALE = 0.001


def _log_softmax(z):
    # z: (N, K) float64
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def trades_loss(logits, adv_logits, labels, beta=BETA):
    """Per-example TRADES loss and its gradients w.r.t. both logits, in float64.

    logits, adv_logits: (N, K) clean and adversarial logits; labels: (N,) ints.
    → (loss (N,), dL/dlogits (N, K), dL/dadv_logits (N, K), KL (N,)), the formulas of the
    module docstring (row n of each gradient is d loss[n] / d row n).
    """
    z = np.asarray(logits, dtype=np.float64)
    za = np.asarray(adv_logits, dtype=np.float64)
    rows = np.arange(len(z))
    log_p, log_q = _log_softmax(z), _log_softmax(za)
    p, q = np.exp(log_p), np.exp(log_q)
    diff = log_p - log_q
    kl = (p * diff).sum(axis=1)
    ce = -log_p[rows, labels]
    dz = p.copy()
    dz[rows, labels] -= 1.0
    dz += beta * p * (diff - kl[:, None])
    dza = beta * (q - p)
    return ce + beta * kl, dz, dza, kl


def kl_divergence(logits, adv_logits):
    """KL(softmax(logits) ‖ softmax(adv_logits)) per example (N,), in float64."""
    log_p = _log_softmax(np.asarray(logits, dtype=np.float64))
    log_q = _log_softmax(np.asarray(adv_logits, dtype=np.float64))
    return (np.exp(log_p) * (log_p - log_q)).sum(axis=1)


def trades_perturbation(net, x, eps, *, steps=10, alpha=None, clip=(0.0, 1.0), seed=0,
                        clean_logits=None):
    """TRADES' inner maximisation: x' in the L∞ eps-ball around ``x`` (and inside ``clip``)
    that locally maximises KL(p(x) ‖ p(x')) → (x' (N, …) in the net's dtype, KL at x' (N,)).

    From x + 0.001·N(0, 1) (seeded by ``seed``), ``steps`` steps x' ← Π(x' + alpha ·
    sign(∇ₓ' KL)), p(x) fixed; ``alpha`` defaults to eps / 4 (the paper's CIFAR-10 ratio,
    0.007 for eps = 0.031). Eval mode; one forward + backward per step on the whole batch
    (the caller batches). ``clean_logits`` (N, K) saves the clean pass if the caller has it.

    Not guaranteed: the maximum (a local ascent), or that the label changes — the KL is not
    the classification loss, and x' is what the regulariser needs, not an attack.
    """
    name = "trades"
    eps = check_eps(eps, name)
    steps = check_int(steps, "steps", name)
    alpha = eps / 4 if alpha is None else check_float(alpha, "alpha", name, low=0,
                                                      low_open=True)
    x = np.ascontiguousarray(x, dtype=net.dtype)
    if clean_logits is None:
        clean_logits = net.logits(x, batch_size=max(len(x), 1))
    log_p = _log_softmax(np.asarray(clean_logits, dtype=np.float64))
    p = np.exp(log_p)
    rng = np.random.default_rng(seed)
    x_adv = x + (START_SCALE * rng.standard_normal(x.shape)).astype(x.dtype)
    lo, hi = (-np.inf, np.inf) if clip is None else clip
    np.clip(x_adv, lo, hi, out=x_adv)
    if eps == 0:
        x_adv = x.copy()
        steps = 0
    for _ in range(steps):
        _, z = net.forward_for_backward(x_adv, train=False)
        q = np.exp(_log_softmax(z.reshape(len(x), -1).astype(np.float64)))
        dz = (q - p).astype(net.dtype).reshape(z.shape)  # d KL(p ‖ q) / d z'
        grad = net.backward(dz, param_grads=False, input_grad=True, of="logits")
        x_adv = x_adv + alpha * np.sign(grad).astype(x.dtype)
        x_adv = np.clip(np.clip(x_adv, x - eps, x + eps), lo, hi).astype(x.dtype, copy=False)
    kl = kl_divergence(clean_logits, net.logits(x_adv, batch_size=max(len(x), 1)))
    return x_adv, kl


class TradesObjective:
    """Zhang et al.'s TRADES loss as a training objective for ``fit`` (see the module).

    Parameters
    ----------
    eps : L∞ radius of the inner maximisation in data units (inputs must lie in [0, 1]).
    beta : weight β ≥ 0 of the KL regulariser (6, the paper's CIFAR-10 setting; β = 0 is
        plain training on the clean batch).
    steps : steps of the inner maximisation (10, the paper's CIFAR-10 setting).
    alpha : their step size (None: eps / 4).
    seed : with the batch's bytes, seeds the random start (deterministic, resumable).

    Calling it on (net, xb, yb) crafts x' in eval mode, then runs the clean and adversarial
    batches together as one batch of 2N in the mode ``fit`` set and back-propagates both
    halves' gradients in one pass → (mean TRADES loss, clean logits). A batch norm in train
    mode therefore normalises the two halves together (Zhang et al.'s code runs two passes);
    nets without batch statistics get the same gradients either way.
    """

    def __init__(self, eps, beta=BETA, steps=10, alpha=None, seed=0):
        name = "TradesObjective"
        self.eps = check_eps(eps, name)
        self.beta = check_float(beta, "beta", name, low=0.0)
        self.steps = check_int(steps, "steps", name)
        self.alpha = None if alpha is None else check_float(alpha, "alpha", name, low=0.0,
                                                            low_open=True)
        self.seed = check_int(seed, "seed", name, minimum=0)

    def adversarial_batch(self, net, xb):
        """x' for the batch ``xb`` (crafted in eval mode; the net's mode is restored)."""
        x = np.array(xb, dtype=net.dtype)
        training = net.training
        net.eval()
        try:
            x_adv, _ = trades_perturbation(net, x, self.eps, steps=self.steps, alpha=self.alpha,
                                           seed=self._batch_seed(x))
        finally:
            net.training = training
        return x_adv

    def __call__(self, net, xb, yb):
        """Mean TRADES loss over the batch → (loss, clean logits); gradients in ``net.grads``."""
        x = np.array(xb, dtype=net.dtype)
        n = len(x)
        labels = np.asarray(yb, dtype=np.int64)
        x_adv = self.adversarial_batch(net, x) if self.beta > 0 else x
        _, logits = net.forward_for_backward(np.concatenate([x, x_adv]))
        flat = logits.reshape(2 * n, net.num_classes)
        loss, dz, dza, _ = trades_loss(flat[:n], flat[n:], labels, self.beta)
        dlogits = np.concatenate([dz, dza]) / max(n, 1)
        net.backward(dlogits.astype(net.dtype).reshape(logits.shape), param_grads=True,
                     input_grad=False, of="logits")
        return (float(loss.mean()) if n else 0.0), logits[:n]

    def _batch_seed(self, x):
        crc = zlib.crc32(np.ascontiguousarray(x).view(np.uint8).reshape(-1))
        return int(np.random.SeedSequence([self.seed, crc]).generate_state(1)[0])

    def config(self):
        """JSON-ready settings (what a training checkpoint records)."""
        return {"objective": "trades", "eps": self.eps, "beta": self.beta, "steps": self.steps,
                "alpha": self.alpha, "seed": self.seed}

    def __repr__(self):
        return (f"TradesObjective(eps={self.eps}, beta={self.beta}, steps={self.steps}, "
                f"alpha={self.alpha}, seed={self.seed})")

    def __eq__(self, other):
        return isinstance(other, TradesObjective) and self.config() == other.config()
