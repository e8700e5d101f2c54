"""Test helpers: every layer's output of a forward pass in robustcnn and in Keras."""

import numpy as np

from robustcnn.engine.layers import Context


def engine_blobs(net, x):
    """{blob name: value} after one forward pass (eval mode), every layer's output kept."""
    ctx = Context()
    blobs = {net.input_name: np.ascontiguousarray(x, dtype=net.dtype)}
    previous = net.input_name
    for layer in net.layers:
        ys = layer.forward([blobs[b] for b in (layer.bottom or [previous])], ctx)
        for t, y in zip(layer.top or [layer.name], ys):
            blobs[t] = y
        previous = (layer.top or [layer.name])[0]
    return blobs


def keras_layer_outputs(keras, model, x):
    """{Keras layer name: output} for every layer but the input."""
    layers = [l for l in model.layers if type(l).__name__ != "InputLayer"]
    probe = keras.Model(model.inputs, [l.output for l in layers])
    outs = probe.predict(x, verbose=0)
    return {l.name: np.asarray(o) for l, o in zip(layers, outs)}


def as_keras(y):
    """An engine (N, C, H, W) value in Keras' (N, H, W, C) layout; others as they are."""
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y
