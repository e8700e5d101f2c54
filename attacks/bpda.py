"""Backward-pass differentiable approximation (BPDA) for nets with step-function layers.

Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security: Circumventing
Defenses to Adversarial Examples", ICML 2018, §4.1: where a layer f has no useful gradient
(a quantiser is flat almost everywhere, so ∇f = 0 and every gradient attack stalls — the
"shattered gradients" form of gradient masking), run f in the forward pass and the gradient of
a differentiable g ≈ f in the backward pass. For the engine's ``QuantizedReLU``,
g(x) = clip(x, 0, max_value), the straight-through estimator: the layer's ``straight_through``
switch.

    with bpda(net):                      # every step layer uses g's gradient
        x_adv = pgd(net, x, y, eps=0.1)  # the forward pass (and the labels) are unchanged

A layer takes part if it has a ``straight_through`` attribute (the engine's step-function
layers); nothing else about the net changes.
"""

import contextlib


def step_layers(net):
    """The layers of ``net`` whose true gradient is zero almost everywhere (those with a
    ``straight_through`` switch), in order."""
    return [layer for layer in net.layers if hasattr(layer, "straight_through")]


def masked_layers(net):
    """The step layers currently back-propagating their true (zero) gradient."""
    return [layer for layer in step_layers(net) if not layer.straight_through]


@contextlib.contextmanager
def bpda(net, enabled=True):
    """Inside the block, every step layer of ``net`` back-propagates the straight-through
    estimate; on leaving, each layer gets back its own setting (also after an exception).

    ``enabled=False`` leaves the net as it is (so callers can write ``with bpda(net, flag)``).
    Yields the list of layers switched. Not thread-safe: it changes the layers themselves, so
    another thread using the same net meanwhile sees the switch too.
    """
    layers = step_layers(net) if enabled else []
    before = [layer.straight_through for layer in layers]
    try:
        for layer in layers:
            layer.straight_through = True
        yield layers
    finally:
        for layer, old in zip(layers, before):
            layer.straight_through = old
