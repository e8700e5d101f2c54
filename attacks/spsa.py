"""SPSA: projected Adam on a gradient estimated from logits alone (L∞).

Uesato, O'Donoghue, van den Oord & Kohli, "Adversarial Risk and the Dangers of Evaluating
Against Weak Attacks", ICML 2018, Algorithm 1. With f the margin loss to minimise
(z_y − max_{k≠y} z_k; targeted: max_{k≠t} z_k − z_t), at each step t:

    v₁ … v_n ~ Rademacher (±1 per input value)
    g = 1/(2nδ) · Σᵢ [f(x_t + δvᵢ) − f(x_t − δvᵢ)] · vᵢ        (vᵢ⁻¹ = vᵢ for ±1 entries)
    x_{t+1} = clip(x + project(Adam(x_t, g) − x, eps))

Simultaneous perturbation stochastic approximation (Spall 1992): 2n queries estimate the whole
gradient, whatever the dimension; the estimate is unbiased up to O(δ²) for a smooth f. The
probes x_t ± δvᵢ are not clipped to the valid range (as in the paper): they may lie outside
it by δ. All probes of a step go through the net together, ``max_rows`` rows per forward pass.
"""

import numpy as np

from ._common import (batch_slices, check_clip, check_clip_pair, check_eps, check_float,
                      check_inputs, check_int, check_progress, clip_to, fooled, margin)


def spsa_gradient(net, x, y, *, delta, samples, rng, targeted=False, max_rows=4096):
    """SPSA's estimate of ∇ₓ f for each example, f the margin loss above.

    x (A, …) in the net's dtype, y (A,) labels (targets when ``targeted``); ``samples`` = n
    Rademacher directions per example, 2n queries. → (A, …) float64. The directions are drawn
    from ``rng`` for all examples at once (A, n, …), before any query.
    """
    a = len(x)
    flat = x.reshape(a, -1)
    d = flat.shape[1]
    v = rng.integers(0, 2, size=(a, samples, d), dtype=np.int8) * 2 - 1
    grad = np.zeros((a, d))
    per_chunk = max(1, max_rows // (2 * samples))
    for s in batch_slices(a, per_chunk):
        k = s.stop - s.start
        probes = np.concatenate([flat[s, None] + delta * v[s], flat[s, None] - delta * v[s]],
                                axis=1).astype(x.dtype)  # (k, 2n, d)
        logits = net.logits(probes.reshape((k * 2 * samples,) + x.shape[1:]),
                            batch_size=k * 2 * samples)
        value, _ = margin(logits, np.repeat(y[s], 2 * samples), targeted)
        value = value.reshape(k, 2, samples)
        diff = value[:, 0] - value[:, 1]  # (k, n)
        grad[s] = np.einsum("kn,knd->kd", diff, v[s]) / (2.0 * samples * delta)
    return grad.reshape(x.shape)


def spsa(net, x, y=None, eps=0.1, *, steps=100, samples=64, delta=0.01, learning_rate=0.01,
         clip=(0.0, 1.0), targeted=False, batch_size=256, seed=0, progress=None,
         return_info=False, max_rows=4096):
    """Adversarial examples in the L∞ eps-ball by SPSA gradient estimates and projected Adam.

    Uesato, O'Donoghue, van den Oord & Kohli 2018, "Adversarial Risk and the Dangers of
    Evaluating Against Weak Attacks" (ICML). See the module docstring for the algorithm.

    Parameters
    ----------
    net : robustcnn ``Net`` (or anything with its ``logits``, ``dtype``, ``input_shape`` and
        ``num_classes``); only its logits are read, never a gradient.
    x : (N, …) inputs inside ``clip``.
    y : (N,) labels to move away from; None (default) uses the net's predictions. With
        ``targeted=True``, the target classes (required).
    eps : L∞ radius in data units. ``eps == 0`` returns a copy of x.
    steps : Adam steps per example (default 100; each costs 2 · samples + 1 queries).
    samples : Rademacher directions n per gradient estimate (default 64: 128 queries, the
        CleverHans default's count; the paper used up to 8,192 on ImageNet).
    delta : probe size δ (0.01, the paper's).
    learning_rate : Adam's step size (0.01, the paper's); β = (0.9, 0.999), ε = 1e-8.
    clip : (low, high) valid range of the iterates (not of the probes), or None.
    targeted : minimise the targeted margin max_{k≠t} z_k − z_t.
    batch_size : examples stepped together.
    seed : the directions of batch b come from ``np.random.default_rng([seed, b])``: the result
        is a deterministic function of the seed and the batch size.
    progress : None or a callable ``progress(k)``, called as k examples finish; the calls add
        up to N.
    return_info : also return {``queries`` (N,) int64: 2 · samples per step plus one check of
        each iterate (the clean pass is not counted; an example already misclassified costs
        0), ``success`` (N,) bool}.
    max_rows : rows per forward pass of the probes.

    Returns x' (the net's dtype), or (x', info): per example the first iterate that fooled the
    net (an example stops there), else the last. ‖x' − x‖∞ ≤ eps and x' inside ``clip``.

    Not guaranteed: success (a noisy local search; more samples or steps help), or that the
    probes stay in the valid range.
    """
    name = "spsa"
    eps = check_eps(eps, name)
    steps = check_int(steps, "steps", name)
    samples = check_int(samples, "samples", name)
    delta = check_float(delta, "delta", name, low=0, low_open=True)
    learning_rate = check_float(learning_rate, "learning_rate", name, low=0, low_open=True)
    batch_size = check_int(batch_size, "batch_size", name)
    max_rows = check_int(max_rows, "max_rows", name)
    check_progress(progress, name)
    check_clip_pair(clip, name)
    if targeted and y is None:
        raise ValueError(f"{name}: targeted=True needs the target classes y")
    x, y = check_inputs(net, x, y, name)
    bounds = check_clip(clip, x, name)
    queries = np.zeros(len(x), dtype=np.int64)
    success = np.zeros(len(x), dtype=bool)
    out = x.copy()
    if eps == 0:
        if progress is not None and len(x):
            progress(len(x))
        if return_info:
            success = fooled(net.logits(x, batch_size=batch_size), y, targeted)
        return (out, {"queries": queries, "success": success}) if return_info else out
    for b, s in enumerate(batch_slices(len(x), batch_size)):
        rng = np.random.default_rng([seed, b])
        out[s], queries[s], success[s] = _spsa_batch(
            net, x[s], y[s], eps, steps, samples, delta, learning_rate, bounds, targeted, rng,
            max_rows, progress)
    return (out, {"queries": queries, "success": success}) if return_info else out


def _spsa_batch(net, x, y, eps, steps, samples, delta, lr, bounds, targeted, rng, max_rows,
                progress):
    n = len(x)
    beta1, beta2, tiny = 0.9, 0.999, 1e-8
    queries = np.zeros(n, dtype=np.int64)
    done = fooled(net.logits(x, batch_size=max(n, 1)), y, targeted)  # the clean pass
    x_adv = x.copy()
    m = np.zeros(x.shape)
    v = np.zeros(x.shape)
    todo = np.flatnonzero(~done)
    finished = 0
    for t in range(1, steps + 1):
        if progress is not None and n - len(todo) > finished:
            progress(n - len(todo) - finished)
            finished = n - len(todo)
        if not len(todo):
            break
        g = spsa_gradient(net, x_adv[todo], y[todo], delta=delta, samples=samples, rng=rng,
                          targeted=targeted, max_rows=max_rows)
        m[todo] = beta1 * m[todo] + (1 - beta1) * g
        v[todo] = beta2 * v[todo] + (1 - beta2) * g ** 2
        step = lr * (m[todo] / (1 - beta1 ** t)) / (np.sqrt(v[todo] / (1 - beta2 ** t)) + tiny)
        moved = x_adv[todo] - step  # descend the margin
        x_adv[todo] = clip_to((x[todo] + np.clip(moved - x[todo], -eps, eps)).astype(x.dtype),
                              bounds)
        logits = net.logits(x_adv[todo], batch_size=max(len(todo), 1))
        queries[todo] += 2 * samples + 1
        hit = fooled(logits, y[todo], targeted)
        done[todo] = hit
        todo = todo[~hit]
    if progress is not None and finished < n:
        progress(n - finished)
    return x_adv, queries, done
