"""Sequential engine nets copied into torch (a test-only oracle), and Fashion-MNIST's trained
LeNet-5 the oracle tests share (imported by the tests of this directory)."""

import os

import numpy as np
import pytest

from robustcnn.engine import Conv2d, Linear, MaxPool2d, ReLU


def torch_sequential(net):
    """``net`` (a chain of Conv2d, MaxPool2d, ReLU and Linear layers, dense weights) as a
    ``torch.nn.Sequential`` in float32 eval mode with the same weights (a Flatten goes before
    the first Linear, as the engine's Linear flattens its input)."""
    import torch

    nn = torch.nn
    modules, flat = [], False
    for layer in net.layers:
        if isinstance(layer, Conv2d):
            w = layer.dense_weight()
            m = nn.Conv2d(w.shape[1] * layer.groups, w.shape[0], layer.kernel, layer.stride,
                          layer.padding, layer.dilation, layer.groups)
        elif isinstance(layer, Linear):
            w = layer.dense_weight()
            if not flat:
                modules.append(nn.Flatten())
                flat = True
            m = nn.Linear(w.shape[1], w.shape[0])
        elif isinstance(layer, MaxPool2d):
            modules.append(nn.MaxPool2d(layer.kernel, layer.stride, layer.padding,
                                        ceil_mode=layer.ceil_mode))
            continue
        elif isinstance(layer, ReLU):
            modules.append(nn.ReLU())
            continue
        else:
            raise ValueError(f"torch_sequential: {layer.at} has no torch copy here")
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))
            m.bias.copy_(torch.from_numpy(np.asarray(layer.params["bias"], dtype=np.float32)))
        modules.append(m)
    return nn.Sequential(*modules).float().eval()


def fashion_lenet5():
    """(net, source): a LeNet-5 trained on Fashion-MNIST: the file named by $ROBUSTCNN_LENET5
    or runs/demo-lenet5.h5 if one exists, else one epoch on 6,000 training images (~80 %)."""
    from helpers import single_thread

    from robustcnn.engine.checkpoint import load_net
    from robustcnn.engine.train import fit
    from robustcnn.models.lenet import lenet5

    here = os.path.join(os.path.dirname(__file__), "..", "..", "runs", "demo-lenet5.h5")
    for path in (os.environ.get("ROBUSTCNN_LENET5"), here):
        if path and os.path.exists(path):
            net, _ = load_net(path)
            return net, path
    xt, yt = fashion_mnist("train")
    net = lenet5(seed=0)
    with single_thread():  # the same net whatever the thread count
        fit(net, xt[:6000], yt[:6000], epochs=1, batch_size=64, progress=False, log=None)
    return net, "trained for 1 epoch on 6k images"


def fashion_mnist(split):
    from robustcnn.models.datasets import load_dataset

    try:
        return load_dataset("fashion-mnist", split)
    except FileNotFoundError as e:
        pytest.skip(f"Fashion-MNIST is not installed: {e}")
