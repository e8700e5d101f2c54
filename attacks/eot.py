"""Expectation over Transformation (EOT): attack a net with random layers through the average
of several random passes.

Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security: Circumventing
Defenses to Adversarial Examples", ICML 2018, §4.3 (after Athalye, Engstrom, Ilyas & Kwok,
"Synthesizing Robust Adversarial Examples", ICML 2018): a classifier f that randomises its
input or its units (dropout at test time, a random input transform t) gives a different
gradient at each pass, and one sample of it is a poor direction. EOT optimises the expectation
instead, whose gradient is the average of the sampled ones:

    f̄(x) = (1/k) Σ_s f(t_s(x); mask_s),     ∇ₓ f̄(x) = (1/k) Σ_s ∇ₓ f(t_s(x); mask_s)

``eot(net, samples=k)`` returns a net-like object whose every method is that of f̄ with fresh
draws at each call: ``logits`` / ``predict`` average k random passes, ``forward_for_backward``
returns the averaged output and logits, and ``backward`` back-propagates through each of the k
passes and averages the input gradients. Any attack written against the ``Net`` methods runs
on it unchanged (``apgd(eot(net, 20), x, y, eps)``); no attack needs an EOT option.

What f is: the loss is applied to the averaged logits z̄ = E_s z_s, so an attack's gradient is
∇ₓ L(z̄) = (∂L/∂z̄) · E_s ∇ₓ z_s — Athalye et al.'s ∇ E_t f(t(x)) with f the logits. For a loss
linear in the logits (the C&W margin; the DLR loss between its rankings) this equals the
average of the per-sample loss gradients that AutoAttack's EOT takes, E_s ∇ₓ L(z_s); for the
cross-entropy the two differ (by how much the samples' softmaxes differ). The averaged logits
also make an attack's loss values and success checks k-sample estimates instead of single
draws.

Random layers: the net runs its passes in train mode (dropout active) with every batch norm
held on its running statistics (``use_global_stats`` on for the pass: train mode must not
update them or normalise with the batch). Each pass reseeds the net's dropout generator with a
drawn seed, so that ``backward`` can recompute pass s exactly.
"""

import contextlib

import numpy as np

from ..engine import softmax_cross_entropy
from ..engine.layers import BatchNorm, Dropout
from ._common import check_int


def eot(net, samples=20, *, transform=None, seed=0):
    """A view of ``net`` averaged over ``samples`` random passes (see the module docstring).

    Parameters
    ----------
    net : a robustcnn ``Net`` with random layers (Dropout), or any net with ``transform``.
    samples : k, the random passes per call (20, AutoAttack's ``rand`` version).
    transform : None, or a random input transform ``transform(x, rng) → x'`` (same shape and
        dtype; ``rng`` a numpy Generator) applied before each pass. Its Jacobian is taken as
        the identity (exact for additive noise; BPDA's straight-through estimate otherwise).
    seed : seeds the draws: a given sequence of calls gives the same numbers.

    Returns an ``EOTNet``. Raises ValueError when there is nothing random to average (no
    Dropout with p > 0 and no transform) or samples < 1.
    """
    samples = check_int(samples, "samples", "eot")
    if transform is not None and not callable(transform):
        raise ValueError(f"eot: transform must be a callable transform(x, rng) or None, got "
                         f"{transform!r}")
    if transform is None and not random_layers(net):
        raise ValueError(f"eot: {net.name} has no random layer (Dropout with p > 0) and no "
                         f"transform was given: every pass would be the same")
    return EOTNet(net, samples, transform, seed)


def random_layers(net):
    """The layers of ``net`` that draw at random in train mode (Dropout with p > 0)."""
    return [layer for layer in net.layers if isinstance(layer, Dropout) and layer.p > 0]


class EOTNet:
    """``net`` averaged over ``samples`` random passes; made by ``eot``. Has the ``Net``
    methods and attributes the attacks use: ``logits``, ``predict``, ``forward``,
    ``forward_for_backward``, ``backward``, ``loss_and_input_grad``; ``dtype``,
    ``input_shape``, ``num_classes``, ``name``, ``layers`` (the net's own, so ``bpda`` works
    through the wrapper), ``training`` (False). Not thread-safe (it switches the net's batch
    norms and reseeds its dropout during each call)."""

    def __init__(self, net, samples, transform, seed):
        self.net, self.samples, self.transform = net, samples, transform
        self.rng = np.random.default_rng(seed)
        self.dtype, self.input_shape, self.num_classes = net.dtype, net.input_shape, \
            net.num_classes
        self.name = f"eot({net.name}, {samples})"
        self.training = False
        self._pending = None  # (x, draw seeds, whether the net still holds the last pass)

    @property
    def layers(self):
        return self.net.layers

    # -- one random pass ---------------------------------------------------------------------

    def _pass(self, x, draw):
        """One random pass of x with the draw ``draw`` → (output, logits); the net keeps what
        its ``backward`` needs."""
        net = self.net
        if self.transform is not None:
            x = np.asarray(self.transform(x, np.random.default_rng([draw, 1])), dtype=net.dtype)
        net.seed_dropout([draw, 0])
        with _frozen_batch_norms(net):
            return net.forward_for_backward(x, train=True)

    def _draws(self):
        return [int(s) for s in self.rng.integers(0, 2 ** 63, size=self.samples)]

    # -- the Net methods ---------------------------------------------------------------------

    def forward_for_backward(self, x, *, train=None):
        """The k-pass averages (output, logits), as ``Net.forward_for_backward`` returns them;
        ``train`` is ignored (the random layers are always on)."""
        draws = self._draws()
        out_sum = logits_sum = None
        for draw in draws:
            out, logits = self._pass(x, draw)
            out_sum = out.astype(np.float64) if out_sum is None else out_sum + out
            logits_sum = logits.astype(np.float64) if logits_sum is None else logits_sum + logits
        self._pending = (x, draws, True)
        k = len(draws)
        return (out_sum / k).astype(self.dtype), (logits_sum / k).astype(self.dtype)

    def backward(self, dout, *, param_grads=False, input_grad=True, of="output"):
        """The input gradient of the averaged output (or logits, ``of="logits"``) through the
        last ``forward_for_backward``: the mean over its k passes, each recomputed with its
        own draws (the last one is still held by the net)."""
        if param_grads:
            raise ValueError("eot: weight gradients are not averaged (param_grads=True); train "
                             "the net itself")
        if self._pending is None:
            raise ValueError("eot: backward needs a forward_for_backward first")
        x, draws, held = self._pending
        self._pending = (x, draws, False)
        scaled = np.ascontiguousarray(dout / len(draws), dtype=self.dtype)
        total = None
        for i, draw in enumerate(reversed(draws)):
            if i or not held:
                self._pass(x, draw)
            dx = self.net.backward(scaled, param_grads=False, input_grad=True, of=of)
            total = dx.astype(np.float64) if total is None else total + dx
        return total.astype(self.dtype) if input_grad else None

    def forward(self, x, *, train=None):
        """The k-pass average of the net's output."""
        return self.forward_for_backward(x)[0]

    def logits(self, x, *, batch_size=256):
        """The k-pass average of the logits, ``batch_size`` examples per pass → (N, K)."""
        x = np.asarray(x)
        out = np.empty((len(x), self.num_classes), dtype=self.dtype)
        for lo in range(0, len(x), batch_size):
            _, z = self.forward_for_backward(x[lo:lo + batch_size])
            out[lo:lo + batch_size] = z.reshape(len(z), -1)
        self._pending = None
        return out

    def predict(self, x, *, batch_size=256):
        return self.logits(x, batch_size=batch_size).argmax(axis=1)

    def loss_and_input_grad(self, x, labels, *, train=False):
        """Per-example cross-entropy of the averaged logits and its input gradient."""
        _, logits = self.forward_for_backward(x)
        flat = np.ascontiguousarray(logits.reshape(len(logits), self.num_classes))
        loss, dlogits = softmax_cross_entropy(flat, np.asarray(labels))
        dx = self.backward(dlogits.reshape(logits.shape), param_grads=False, input_grad=True,
                           of="logits")
        return loss, dx

    def __repr__(self):
        return f"EOTNet({self.net!r}, samples={self.samples})"


@contextlib.contextmanager
def _frozen_batch_norms(net):
    """Inside the block every BatchNorm of ``net`` normalises with its running statistics
    (and does not update them), also in train mode; restored on leaving."""
    norms = [layer for layer in net.layers if isinstance(layer, BatchNorm)]
    before = [layer.use_global_stats for layer in norms]
    try:
        for layer in norms:
            layer.use_global_stats = True
        yield
    finally:
        for layer, old in zip(norms, before):
            layer.use_global_stats = old
