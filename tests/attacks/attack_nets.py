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


def bars(n, seed=0, classes=3):
    """(n, 1, 8, 8) float32 images in [0, 1] and int64 labels: class k is a bright bar across
    rows 2k + 1 and 2k + 2 over faint uniform noise. Easy to learn, so a small net classifies
    it perfectly and every attack has to work for its success."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.uniform(0.0, 0.3, (n, 1, 8, 8))
    for i, k in enumerate(y):
        x[i, 0, 2 * k + 1:2 * k + 3, 1:7] += 0.5
    return x.astype(np.float32), y.astype(np.int64)


def bars_convnet(activation=ReLU, seed=0):
    """``make_convnet``'s layers in float32 with ``activation(name)`` after conv1 and ip1."""
    return Net([Conv2d("conv1", 4, kernel=3), activation("relu1"), MaxPool2d("pool1", 2, 2),
                Linear("ip1", 16), activation("relu2"), Linear("ip2", 3)],
               input_shape=(1, 8, 8), seed=seed)


def trained_bars_nets():
    """(net, quantized) trained on ``bars``: ``net`` with ReLUs, 5 epochs (~0.3 s);
    ``quantized`` the same weights with 8-bit QuantizedReLUs over [0, 8] instead (which the
    trained activations stay within, so the two predict alike), straight_through off."""
    from robustcnn.engine.layers import QuantizedReLU
    from robustcnn.engine.train import Schedule, fit

    x, y = bars(512, seed=0)
    net = bars_convnet()
    fit(net, x, y, epochs=5, batch_size=32, schedule=Schedule("cosine", 0.05, total=5 * 16),
        progress=False, log=None)
    quantized = bars_convnet(lambda name: QuantizedReLU(name, bits=8, max_value=8.0))
    for layer, params in net.params.items():
        for key, value in params.items():
            quantized.params[layer][key][...] = value
    return net, quantized
