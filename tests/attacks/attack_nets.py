"""Small nets the attack tests run on, built with the engine (imported by the tests of this
directory; ``conftest.py`` puts it on the path)."""

import numpy as np

from robustcnn.engine import Conv2d, Linear, MaxPool2d, Net, ReLU


def make_linear_net(weight, bias, dtype=np.float64):
    """logits = weight @ x + bias, for x of shape (D,)."""
    weight = np.asarray(weight, dtype=np.float64)
    net = Net([Linear("ip", weight.shape[0])], input_shape=(weight.shape[1],), dtype=dtype)
    net.params["ip"]["weight"][...] = weight
    net.params["ip"]["bias"][...] = bias
    return net


def make_convnet(dtype=np.float64, seed=0, classes=3):
    """conv 4 (3×3) → ReLU → max pool 2 → ip 16 → ReLU → ip ``classes``, on (1, 8, 8) inputs,
    with random biases so no unit is dead everywhere."""
    net = Net([Conv2d("conv1", 4, kernel=3), ReLU("relu1"), MaxPool2d("pool1", 2, 2),
               Linear("ip1", 16), ReLU("relu2"), Linear("ip2", classes)],
              input_shape=(1, 8, 8), dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for layer in net.params.values():
        layer["bias"][...] = rng.normal(0.0, 0.1, layer["bias"].shape)
    return net
