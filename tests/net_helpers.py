"""Shared test helper: give every parameter and buffer of a net values away from its
initialisation, so that round trips through file formats carry information."""

import numpy as np

from robustcnn.engine import Scale


def randomised(net, seed=0):
    """Every parameter and buffer drawn at random (in place; returns the net): variances in
    [0.5, 2], scales and slopes in [0.2, 1.5], the rest N(0, 1/fan-in)."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        for key, value in {**layer.params, **layer.buffers}.items():
            if key == "var":
                value[...] = rng.uniform(0.5, 2.0, value.shape)
            elif key in ("gamma", "slope") or (isinstance(layer, Scale) and key == "weight"):
                value[...] = rng.uniform(0.2, 1.5, value.shape)
            else:
                value[...] = rng.standard_normal(value.shape) / np.sqrt(max(value[0].size, 1))
    return net
