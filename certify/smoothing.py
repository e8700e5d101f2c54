"""Randomized smoothing: a certified L2 radius from the base net's votes under Gaussian noise.

Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized Smoothing", ICML
2019. The smoothed classifier g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ² I), is constant
within the L2 radius σ · Φ⁻¹(p_A) of x when the top class has probability p_A ≥ 1/2
(their Theorem 1, with p_B ≤ 1 − p_A). Their procedures, Monte Carlo with a confidence:

    CERTIFY(x, n0, n, α): guess ĉ_A from n0 noisy votes; count ĉ_A's votes n_A in n fresh ones;
        p_A = the one-sided (1 − α) Clopper–Pearson lower bound of n_A / n;
        p_A < 1/2: abstain, else predict ĉ_A with radius σ · Φ⁻¹(p_A)
    PREDICT(x, n, α): the two top classes of n votes, n_A and n_B; predict the first if the
        two-sided binomial test of n_A of n_A + n_B against 1/2 has p ≤ α, else abstain

With probability ≥ 1 − α over the noise, a certified example's radius is correct and PREDICT's
answer (if any) is g(x). The vote forward passes run in batches: forward passes only, so this
measures a weight format's inference throughput. ``GaussianNoiseObjective`` is the training
Cohen et al. use: the base net learns on x + δ.

Not guaranteed: anything with probability more than 1 − α; the radius concerns the smoothed
classifier g, not the base net f.
"""

import zlib

import numpy as np
from scipy import stats

ABSTAIN = -1


def clopper_pearson_lower(k, n, alpha):
    """The one-sided (1 − α) Clopper–Pearson lower confidence bound of a binomial proportion
    from k successes in n trials: the p with P(Binomial(n, p) ≥ k) = α, i.e. the α quantile of
    Beta(k, n − k + 1) (0 when k = 0). Vectorised over k and n."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        out = stats.beta.ppf(alpha, k, n - k + 1)
    return np.where(k > 0, out, 0.0)


def _check(sigma, alpha, what):
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"{what}: sigma must be finite and > 0, got {sigma!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"{what}: alpha must be in (0, 1), got {alpha!r}")


def vote_counts(net, x, sigma, n, *, batch_size=1000, rng):
    """Class counts of the base net on ``n`` noisy copies of one example x (C, H, W) →
    (K,) int64. Noise δ ~ N(0, σ²) per pixel, not clipped (as Cohen et al.)."""
    counts = np.zeros(net.num_classes, dtype=np.int64)
    x = np.asarray(x, dtype=net.dtype)
    left = int(n)
    while left > 0:
        m = min(batch_size, left)
        noise = rng.standard_normal((m,) + x.shape, dtype=np.float32).astype(net.dtype, copy=False)
        noise *= net.dtype.type(sigma)
        noise += x
        pred = net.logits(noise, batch_size=m).argmax(axis=1)
        counts += np.bincount(pred, minlength=net.num_classes)
        left -= m
    return counts


def _example_rng(seed, i):
    return np.random.default_rng([seed, i])


def certify(net, x, y=None, *, sigma, n0=100, n=10_000, alpha=0.001, batch_size=1000, seed=0,
            progress=None):
    """Cohen et al.'s CERTIFY on each example → dict of arrays (N,): ``prediction`` (class, or
    ``ABSTAIN`` = −1), ``radius`` (certified L2 radius; 0 where abstaining), ``p_lower``,
    ``counts`` (N, K) of the n votes, and ``correct`` (prediction == y; None without y).

    ``sigma``: the noise's standard deviation in data units; ``n0`` votes choose the class,
    ``n`` more bound its probability at confidence 1 − ``alpha``; ``batch_size`` noisy copies
    per forward pass; ``seed`` (with the example's index) seeds the noise; ``progress`` is
    called with 1 after each example."""
    _check(sigma, alpha, "smoothing.certify")
    if n0 < 1 or n < 1:
        raise ValueError(f"smoothing.certify: n0 and n must be >= 1, got {n0}, {n}")
    x = np.asarray(x)
    pred = np.full(len(x), ABSTAIN, dtype=np.int64)
    radius = np.zeros(len(x))
    p_lower = np.zeros(len(x))
    counts = np.zeros((len(x), net.num_classes), dtype=np.int64)
    for i in range(len(x)):
        rng = _example_rng(seed, i)
        guess = int(vote_counts(net, x[i], sigma, n0, batch_size=batch_size, rng=rng).argmax())
        counts[i] = vote_counts(net, x[i], sigma, n, batch_size=batch_size, rng=rng)
        p_lower[i] = clopper_pearson_lower(counts[i, guess], n, alpha)
        if p_lower[i] >= 0.5:
            pred[i] = guess
            radius[i] = sigma * stats.norm.ppf(p_lower[i])
        if progress is not None:
            progress(1)
    correct = None if y is None else pred == np.asarray(y)
    return {"prediction": pred, "radius": radius, "p_lower": p_lower, "counts": counts,
            "correct": correct}


def predict(net, x, *, sigma, n=10_000, alpha=0.001, batch_size=1000, seed=0):
    """Cohen et al.'s PREDICT on each example → (N,) classes, ``ABSTAIN`` (−1) where the
    binomial test of the top two counts against 1/2 has p > ``alpha``."""
    _check(sigma, alpha, "smoothing.predict")
    x = np.asarray(x)
    out = np.full(len(x), ABSTAIN, dtype=np.int64)
    for i in range(len(x)):
        counts = vote_counts(net, x[i], sigma, n, batch_size=batch_size,
                             rng=_example_rng(seed, i))
        top2 = np.argsort(counts, kind="stable")[::-1][:2]
        n_a, n_b = int(counts[top2[0]]), int(counts[top2[1]])
        if stats.binomtest(n_a, n_a + n_b, 0.5).pvalue <= alpha:
            out[i] = top2[0]
    return out


def certified_accuracy(result, radii):
    """Share of examples certified correct at each L2 radius: prediction == y and radius ≥ r
    (abstentions count as wrong) → list of floats, one per radius."""
    correct = np.asarray(result["correct"], dtype=bool)
    radius = np.asarray(result["radius"])
    return [float(np.mean(correct & (radius >= r))) if len(radius) else float("nan")
            for r in radii]


class GaussianNoiseObjective:
    """Training on Gaussian-noise-augmented inputs (Cohen et al. §4): the cross-entropy of the
    net on x + δ, δ ~ N(0, σ² I), for every example of the batch. The noise is seeded by
    ``seed`` and the batch's bytes, so a resumed run draws the same noise."""

    def __init__(self, sigma, seed=0):
        _check(float(sigma), 0.5, "GaussianNoiseObjective")
        self.sigma, self.seed = float(sigma), int(seed)

    def __call__(self, net, xb, yb):
        x = np.ascontiguousarray(xb, dtype=net.dtype)
        crc = zlib.crc32(x.view(np.uint8).reshape(-1))
        rng = np.random.default_rng([self.seed, crc])
        noisy = x + (self.sigma * rng.standard_normal(x.shape)).astype(net.dtype)
        return net.loss_and_grad(noisy, yb)

    def config(self):
        return {"objective": "gaussian_noise", "sigma": self.sigma, "seed": self.seed}

    def __repr__(self):
        return f"GaussianNoiseObjective(sigma={self.sigma}, seed={self.seed})"


__all__ = ["certify", "predict", "certified_accuracy", "clopper_pearson_lower", "vote_counts",
           "GaussianNoiseObjective", "ABSTAIN"]
