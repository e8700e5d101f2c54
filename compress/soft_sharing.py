"""Soft weight-sharing (Ullrich, Meeds & Welling, "Soft Weight-Sharing for Neural Network
Compression", ICLR 2017).

A trained net is retrained under a Gaussian-mixture prior over all its weights (not the biases):

    p(w) = Π_i Σ_j π_j N(w_i | μ_j, σ_j²),   j = 0 .. J − 1

Component 0 is the zero: μ_0 = 0 and π_0 (0.999) fixed; the other J − 1 means, all J
log-variances s_j = log σ_j² and the mixing logits a_k (π_k = (1 − π_0) softmax(a)_k, k ≥ 1)
are learned with the weights. Each precision λ_j = 1/σ_j² has a Gamma(α, β) hyper-prior (a
strong one on the zero component, which most weights join). The loss of a batch is

    L = mean cross-entropy + τ/N · (−log p(w) − Σ_j log Gamma(λ_j | α_j, β_j))

(N training examples; τ = 5·10⁻³, the paper's). Adam trains the weights (``fit``'s optimizer),
and the objective steps the prior's parameters with Adam at their own learning rates (the
authors' tutorial: means 10⁻⁴, log-variances and mixing logits 3·10⁻³). The weights gather
tightly around the components; then (``post_process``)

1. components whose symmetric KL divergence is below a threshold merge (``merge_components``:
   mixing-weighted mean and variance; a merge with the zero component is the zero component);
2. each weight becomes the mean of its most responsible component (argmax_j π_j N(w | μ_j, σ_j²));
3. the zero component's weights are pruned: each layer is stored as a sparse codebook of the
   means it uses, Huffman-coded where that is smaller (``store``), as Deep Compression's layers.

The paper's MNIST figures: 64× (LeNet-300-100) and 162× (LeNet-5) at about 0.1 pp error.
Not done: the paper's optional Beta prior on π_0 (π_0 is fixed here, as in the authors'
tutorial) and its shared codebook across layers (each layer stores the means it uses).
"""

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange
from scipy.special import gammaln

from ..engine._jit import JIT_PARALLEL, chunk_bounds
from ..engine.formats import DenseWeight, HuffmanCodebookWeight, SparseCodebookWeight
from ..engine.train import Adam, Schedule, adam_step_flat, fit

CHUNKS = 64  # the prior kernel's fixed split of the weights (sums alike on any thread count)

# The authors' tutorial's Gamma(α, β) hyper-priors on the precisions (mean α/β = 2500, σ ≈ 0.02):
# a strong one on the zero component, which holds most weights, a weaker one on the others.
GAMMA_ZERO = (5000.0, 2.0)
GAMMA_OTHER = (250.0, 0.1)


@dataclass
class MixturePrior:
    """The mixture's parameters, float64: ``means`` (J,) with means[0] = 0 fixed, ``log_vars``
    (J,) s_j = log σ_j², ``logits`` (J − 1,) of the non-zero components' mixing proportions,
    the fixed ``pi_zero``, and the Gamma hyper-priors (α, β) of the zero component's precision
    and of the others'."""

    means: np.ndarray
    log_vars: np.ndarray
    logits: np.ndarray
    pi_zero: float = 0.999
    gamma_zero: tuple = GAMMA_ZERO
    gamma_other: tuple = GAMMA_OTHER

    @classmethod
    def initial(cls, weights, components=17, *, pi_zero=0.999, init_std=0.25,
                gamma_zero=GAMMA_ZERO, gamma_other=GAMMA_OTHER):
        """The starting prior for trained ``weights`` (1-D): the J − 1 non-zero means evenly
        spaced over [min, max] of the weights, every σ_j = ``init_std``, equal mixing
        proportions (the paper's and its tutorial's initialisation)."""
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        lo, hi = (float(w.min()), float(w.max())) if w.size else (-1.0, 1.0)
        means = np.concatenate([[0.0], np.linspace(lo, hi, components - 1)])
        return cls(means, np.full(components, 2.0 * math.log(init_std)),
                   np.zeros(components - 1), float(pi_zero), tuple(gamma_zero),
                   tuple(gamma_other))

    @property
    def components(self):
        return self.means.size

    def log_pis(self):
        """(J,) log π: log π_0 and log(1 − π_0) + log softmax(a)."""
        if self.logits.size == 0:
            return np.array([math.log(self.pi_zero)])
        a = self.logits - self.logits.max()
        rest = math.log1p(-self.pi_zero) + a - math.log(np.exp(a).sum())
        return np.concatenate([[math.log(self.pi_zero)], rest])

    def pis(self):
        return np.exp(self.log_pis())

    def gamma_params(self):
        """(α (J,), β (J,)) of each component's precision hyper-prior."""
        alpha = np.full(self.components, float(self.gamma_other[0]))
        beta = np.full(self.components, float(self.gamma_other[1]))
        alpha[0], beta[0] = self.gamma_zero
        return alpha, beta

    def config(self):
        return {"components": self.components, "pi_zero": self.pi_zero,
                "gamma_zero": list(self.gamma_zero), "gamma_other": list(self.gamma_other)}


@njit(**JIT_PARALLEL)
def mixture_log_density(w, means, log_vars, log_pis, dw, sums, log_p):
    # w, dw: (M,); means, log_vars, log_pis: (J,); sums: (CHUNKS, 3, J); log_p: (CHUNKS,)
    # ℓ_ij = log π_j − ½ log 2π − ½ s_j − (w_i − μ_j)² / (2σ_j²);  log p(w_i) = logsumexp_j ℓ_ij;
    # r_ij = exp(ℓ_ij − log p(w_i));  dw_i = d log p / d w_i = −Σ_j r_ij (w_i − μ_j) / σ_j²;
    # per chunk: sums[0, j] = Σ_i r_ij, sums[1, j] = Σ_i r_ij (w_i − μ_j) / σ_j²,
    # sums[2, j] = Σ_i r_ij (w_i − μ_j)² / σ_j², log_p = Σ_i log p(w_i)
    J = means.shape[0]
    chunks = sums.shape[0]
    for t in prange(chunks):
        lo, hi = chunk_bounds(t, chunks, w.shape[0])
        prec = np.exp(-log_vars)
        const = log_pis - 0.5 * log_vars - 0.5 * 1.8378770664093453  # ½ log 2π (no globals)
        ell = np.empty(J)
        acc = np.zeros((3, J))
        total = 0.0
        for i in range(lo, hi):
            wi = np.float64(w[i])
            top = -np.inf
            for j in range(J):
                d = wi - means[j]
                ell[j] = const[j] - 0.5 * d * d * prec[j]
                if ell[j] > top:
                    top = ell[j]
            z = 0.0
            for j in range(J):  # a component 40 nats below the best has r < 5e-18: skipped
                ell[j] = math.exp(ell[j] - top) if ell[j] > top - 40.0 else 0.0
                z += ell[j]
            total += top + math.log(z)
            g = 0.0
            for j in range(J):
                if ell[j] == 0.0:
                    continue
                r = ell[j] / z
                u = (wi - means[j]) * prec[j]
                acc[0, j] += r
                acc[1, j] += r * u
                acc[2, j] += r * u * (wi - means[j])
                g -= r * u
            dw[i] = g
        sums[t] = acc
        log_p[t] = total


def log_prior(w, prior):
    """log p(w) + Σ_j log Gamma(λ_j | α_j, β_j) for 1-D weights ``w`` and its gradients, float64
    → (value, dw (M,), dmeans (J,), dlog_vars (J,), dlogits (J − 1,)), with

        d/dμ_j = Σ_i r_ij (w_i − μ_j)/σ_j²   (0 for the fixed μ_0)
        d/ds_j = Σ_i r_ij ((w_i − μ_j)²/σ_j² − 1)/2 − (α_j − 1) + β_j e^(−s_j)
        d/da_k = R_k − softmax(a)_k · Σ_(j≥1) R_j,   R_j = Σ_i r_ij

    (log Gamma(λ | α, β) = α log β − lnΓ(α) + (α − 1) log λ − βλ at λ = e^(−s), a density in λ:
    no Jacobian of the log-variance parametrisation, as the authors' code)."""
    w = np.ascontiguousarray(np.asarray(w).reshape(-1))
    J = prior.components
    dw = np.empty(w.size, dtype=np.float64)
    sums = np.zeros((CHUNKS, 3, J))
    log_p = np.zeros(CHUNKS)
    mixture_log_density(w, prior.means, prior.log_vars, prior.log_pis(), dw, sums, log_p)
    R, first, second = sums.sum(axis=0)
    alpha, beta = prior.gamma_params()
    precision = np.exp(-prior.log_vars)
    log_gamma = alpha * np.log(beta) - gammaln(alpha) - (alpha - 1) * prior.log_vars \
        - beta * precision
    value = float(log_p.sum() + log_gamma.sum())
    dmeans = first.copy()
    dmeans[0] = 0.0
    dlog_vars = 0.5 * (second - R) - (alpha - 1) + beta * precision
    softmax = np.exp(prior.log_pis()[1:]) / (1.0 - prior.pi_zero)
    dlogits = R[1:] - softmax * R[1:].sum()
    return value, dw, dmeans, dlog_vars, dlogits


def most_responsible(w, means, log_vars, log_pis, *, chunk=1 << 16):
    """(M,) index of the component of largest responsibility for each weight of ``w``:
    argmax_j log π_j − ½ s_j − (w − μ_j)² / (2σ_j²)."""
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    const = np.asarray(log_pis) - 0.5 * np.asarray(log_vars)
    precision = np.exp(-np.asarray(log_vars))
    out = np.empty(w.size, dtype=np.int64)
    for lo in range(0, w.size, chunk):
        d = w[lo:lo + chunk, None] - np.asarray(means)[None, :]
        out[lo:lo + chunk] = (const - 0.5 * d * d * precision).argmax(axis=1)
    return out


def symmetric_kl(mean_a, var_a, mean_b, var_b):
    """½ (KL(a ‖ b) + KL(b ‖ a)) of two normals = ¼ ((σa² + Δ²)/σb² + (σb² + Δ²)/σa² − 2)."""
    d2 = (mean_a - mean_b) ** 2
    return 0.25 * ((var_a + d2) / var_b + (var_b + d2) / var_a - 2.0)


def merge_components(means, variances, pis, threshold):
    """Merge, closest pair first, the components whose symmetric KL divergence is below
    ``threshold``: the merged one has π = πa + πb, μ = (πa μa + πb μb)/π and σ² = (πa σa² +
    πb σb²)/π, except that a merge with component 0 (the zero) stays the zero (μ = 0).
    → (means, variances, pis, mapping (J,) from each old component to its new index); the
    zero stays index 0 and the others keep their order."""
    means = [float(v) for v in means]
    variances = [float(v) for v in variances]
    pis = [float(v) for v in pis]
    groups = [[j] for j in range(len(means))]
    while len(means) > 1:
        best, pair = threshold, None
        for a in range(len(means)):
            for b in range(a + 1, len(means)):
                kl = symmetric_kl(means[a], variances[a], means[b], variances[b])
                if kl < best:
                    best, pair = kl, (a, b)
        if pair is None:
            break
        a, b = pair
        p = pis[a] + pis[b]
        means[a] = 0.0 if a == 0 else (pis[a] * means[a] + pis[b] * means[b]) / p
        variances[a] = (pis[a] * variances[a] + pis[b] * variances[b]) / p
        pis[a] = p
        groups[a] += groups[b]
        for values in (means, variances, pis, groups):
            del values[b]
    mapping = np.empty(sum(len(g) for g in groups), dtype=np.int64)
    for new, group in enumerate(groups):
        mapping[group] = new
    return np.array(means), np.array(variances), np.array(pis), mapping


def weighted_layers(net):
    return [layer.name for layer in net.layers if hasattr(layer, "weight_format")]


class SoftSharingObjective:
    """The soft weight-sharing loss as a ``fit`` objective: cross-entropy plus τ/N times the
    negative log prior of the ``layers``' weights (see the module). Each call also steps the
    prior's parameters by its own Adam: ``lr_means`` for the means, ``lr_log_vars`` for the
    log-variances, ``lr_mixing`` for the mixing logits. The layers must hold dense weights."""

    def __init__(self, prior, layers, *, tau=5e-3, examples, lr_means=1e-4, lr_log_vars=3e-3,
                 lr_mixing=3e-3):
        self.prior, self.layers = prior, list(layers)
        self.tau, self.examples = float(tau), int(examples)
        self.scale = self.tau / self.examples
        self.rates = {"means": lr_means, "log_vars": lr_log_vars, "logits": lr_mixing}
        self.moments = {k: np.zeros((2,) + getattr(prior, k).shape) for k in self.rates}
        self.steps = 0
        self.last_log_prior = None

    def _weights(self, net):
        return [net.layer(name).params["weight"] for name in self.layers]

    def __call__(self, net, xb, yb):
        loss, logits = net.loss_and_grad(xb, yb)
        weights = self._weights(net)
        flat = np.concatenate([w.reshape(-1) for w in weights])
        value, dw, *dparams = log_prior(flat, self.prior)
        self.last_log_prior = value
        start = 0
        for name, w in zip(self.layers, weights):
            layer = net.layer(name)
            g = -self.scale * dw[start:start + w.size].reshape(w.shape)
            layer.grads["weight"] = layer.grads["weight"] + g.astype(w.dtype)
            start += w.size
        self.steps += 1  # Adam on the prior's parameters: descend τ/N · (−log prior)
        c1, c2 = 1.0 - 0.9 ** self.steps, 1.0 - 0.999 ** self.steps
        for (key, lr), grad in zip(self.rates.items(), dparams):
            param, m = getattr(self.prior, key), self.moments[key]
            adam_step_flat(param, np.ascontiguousarray(-self.scale * grad), m[0], m[1], lr, 0.9,
                           0.999, 1e-8, 0.0, c1, c2)
        self.prior.means[0] = 0.0
        return loss - self.scale * value, logits

    def config(self):
        return {"objective": "soft-sharing", "tau": self.tau, "examples": self.examples,
                "layers": self.layers, "rates": self.rates, **self.prior.config()}


def quantize_to_components(net, layers, prior, kl_threshold):
    """Steps 1 and 2 of the post-processing (see the module): merge close components, set each
    weight to the mean of its most responsible one → (merged means, variances, π, the share of
    the weights at zero)."""
    means, variances, pis, _ = merge_components(prior.means, np.exp(prior.log_vars), prior.pis(),
                                                kl_threshold)
    log_pis = np.log(np.maximum(pis, 1e-300))
    zeros = total = 0
    for name in layers:
        layer = net.layer(name)
        w = layer.dense_weight()
        component = most_responsible(w, means, np.log(variances), log_pis)
        shared = means[component].reshape(w.shape).astype(w.dtype)
        shared[(component == 0).reshape(w.shape)] = 0
        layer.set_weight_format(DenseWeight.from_dense(shared))
        zeros += int((component == 0).sum())
        total += w.size
    return means, variances, pis, zeros / max(total, 1)


def store(net, layers, *, huffman=True, gap_bits=None):
    """Step 3 (see the module): each layer as a sparse codebook of 0.0 and the means it uses
    (the fewest code bits that hold them), with the relative-index bits of ``gap_bits`` (None:
    whichever of 2..8 stores the layer smallest), Huffman-coded where that is smaller
    → {layer: the format kept}."""
    kept = {}
    for name in layers:
        layer = net.layer(name)
        w = layer.dense_weight()
        values = np.unique(w[w != 0])
        if values.size > 255:
            raise ValueError(f"soft-sharing: {layer.at} holds {values.size} distinct non-zero "
                             f"weights; a sparse codebook holds at most 255")
        code_bits = max(1, int(values.size).bit_length())
        centroids = np.concatenate([[0.0], values])
        best = None
        for bits in ([gap_bits] if gap_bits else range(2, 9)):
            fmt = SparseCodebookWeight.from_dense(w, code_bits, bits, centroids=centroids,
                                                  dtype=layer.dtype, at=layer.at)
            if huffman:
                coded = HuffmanCodebookWeight.from_sparse_codebook(fmt, at=layer.at)
                if coded.stored_bytes() < fmt.stored_bytes():
                    fmt = coded
            if best is None or fmt.stored_bytes() < best.stored_bytes():
                best = fmt
        layer.set_weight_format(best)
        kept[name] = best.kind
    return kept


def check_options(components, pi_zero, tau, epochs, init_std, kl_threshold, gamma_zero,
                  gamma_other):
    """Refuse settings outside their domains, one line each."""
    def bad(what, value):
        raise ValueError(f"soft-sharing: {what}, got {value!r}")

    if isinstance(components, bool) or not isinstance(components, (int, np.integer)) \
            or not 2 <= components <= 256:
        bad("components must be an integer 2..256 (the zero and up to 255 means)", components)
    if not 0 < pi_zero < 1:
        bad("pi_zero must be in (0, 1)", pi_zero)
    if not (math.isfinite(tau) and tau >= 0):
        bad("tau must be finite and >= 0", tau)
    if epochs < 0:
        bad("epochs must be >= 0", epochs)
    if not (math.isfinite(init_std) and init_std > 0):
        bad("init_std must be finite and > 0", init_std)
    if not kl_threshold >= 0:
        bad("kl_threshold must be >= 0", kl_threshold)
    for label, (alpha, beta) in (("gamma_zero", gamma_zero), ("gamma_other", gamma_other)):
        if not (alpha > 0 and beta > 0 and math.isfinite(alpha) and math.isfinite(beta)):
            bad(f"{label} (alpha, beta) must be finite and > 0", (alpha, beta))


def retrain(net, x, y, *, components=17, pi_zero=0.999, tau=5e-3, epochs=10, lr=5e-4,
            lr_means=1e-4, lr_log_vars=3e-3, lr_mixing=3e-3, batch_size=256, init_std=0.25,
            gamma_zero=GAMMA_ZERO, gamma_other=GAMMA_OTHER, layers=None, seed=0, progress=True,
            log=None):
    """The retraining of ``soft_share`` (its arguments) → the learned ``MixturePrior``; the
    layers' weights stay dense (and continuous)."""
    check_options(components, pi_zero, tau, epochs, init_std, 0.0, gamma_zero, gamma_other)
    layers = weighted_layers(net) if layers is None else list(layers)
    for name in layers:
        layer = net.layer(name)
        if layer.weight_format.kind != "dense":
            layer.set_weight_format(DenseWeight.from_dense(layer.dense_weight()))
    flat = np.concatenate([net.layer(n).params["weight"].reshape(-1) for n in layers])
    prior = MixturePrior.initial(flat, components, pi_zero=pi_zero, init_std=init_std,
                                 gamma_zero=gamma_zero, gamma_other=gamma_other)
    objective = SoftSharingObjective(prior, layers, tau=tau, examples=len(x), lr_means=lr_means,
                                     lr_log_vars=lr_log_vars, lr_mixing=lr_mixing)
    if epochs > 0:
        steps = len(x) // batch_size
        if steps < 1:
            raise ValueError(f"soft-sharing: {len(x)} examples make no batch of {batch_size}")
        fit(net, x, y, epochs=epochs, batch_size=batch_size, optimizer=Adam(),
            schedule=Schedule("cosine", lr, total=epochs * steps), seed=seed, progress=progress,
            log=log, objective=objective)
    return prior


def post_process(net, prior, *, kl_threshold=1.0, huffman=True, layers=None, stages=None):
    """Merge, quantize to the means and store (see the module) → what it found: the merged
    means, their σ and π, the share of weights at zero, each layer's format."""
    if not kl_threshold >= 0:
        raise ValueError(f"soft-sharing: kl_threshold must be >= 0, got {kl_threshold!r}")
    layers = weighted_layers(net) if layers is None else list(layers)
    means, variances, pis, zero_share = quantize_to_components(net, layers, prior, kl_threshold)
    if stages:
        stages.record(f"{means.size} components, {100 * zero_share:.2f}% zero", net)
    formats = store(net, layers, huffman=huffman)
    if stages:
        stages.record("sparse codebook" + (" + huffman" if huffman else ""), net)
    return {"means": means.tolist(), "stds": np.sqrt(variances).tolist(), "pis": pis.tolist(),
            "zero_share": zero_share, "formats": formats}


def soft_share(net, x, y, *, components=17, pi_zero=0.999, tau=5e-3, epochs=10, lr=5e-4,
               lr_means=1e-4, lr_log_vars=3e-3, lr_mixing=3e-3, batch_size=256, init_std=0.25,
               gamma_zero=GAMMA_ZERO, gamma_other=GAMMA_OTHER, kl_threshold=1.0, huffman=True,
               layers=None, seed=0, progress=True, stages=None):
    """Compress ``net`` in place by soft weight-sharing on (x, y) (see the module docstring)
    → a dict of what the post-processing found (merged means, π, share of zeros, formats).

    components : J, the zero included. tau : τ, the prior's weight per training example.
    lr : Adam's learning rate of the weights, cosine-annealed over the run; lr_means,
        lr_log_vars, lr_mixing : Adam's (constant) rates of the prior's parameters.
    init_std : the components' starting σ. gamma_zero, gamma_other : (α, β) of the Gamma
        hyper-priors on the precisions. kl_threshold : the merging threshold.
    layers : default every Conv2d and Linear (the paper's prior covers all weights).
    stages : a ``methods.Stages`` to record each stage in, or None.
    """
    check_options(components, pi_zero, tau, epochs, init_std, kl_threshold, gamma_zero,
                  gamma_other)
    prior = retrain(net, x, y, components=components, pi_zero=pi_zero, tau=tau, epochs=epochs,
                    lr=lr, lr_means=lr_means, lr_log_vars=lr_log_vars, lr_mixing=lr_mixing,
                    batch_size=batch_size, init_std=init_std, gamma_zero=gamma_zero,
                    gamma_other=gamma_other, layers=layers, seed=seed, progress=progress)
    if stages:
        stages.record(f"retrained {epochs} epoch(s)", net)
    return post_process(net, prior, kl_threshold=kl_threshold, huffman=huffman, layers=layers,
                        stages=stages)
