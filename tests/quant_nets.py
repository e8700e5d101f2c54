"""Small trained nets and data for the tests of the quantization methods (compress/int8.py,
ttq.py, inq.py, soft_sharing.py, binary.py): a LeNet in miniature on the "bars" images, where
class k is a bright bar across rows 2k + 1 and 2k + 2 over faint noise.

Imported as ``from quant_nets import ...`` (``tests/`` is on pytest's ``pythonpath``).
"""

import numpy as np

from robustcnn.engine import Conv2d, Linear, MaxPool2d, Net, ReLU


def bars(n=256, seed=0, classes=3):
    """(n, 1, 8, 8) float32 images in [0, 1] and int64 labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.uniform(0.0, 0.3, (n, 1, 8, 8))
    for i, k in enumerate(y):
        x[i, 0, 2 * k + 1:2 * k + 3, 1:7] += 0.5
    return x.astype(np.float32), y.astype(np.int64)


def tiny_lenet(seed=0, dtype=np.float32):
    """LeNet-5's shape in miniature: conv → pool → ip → ReLU → ip (no ReLU after the conv, as
    Caffe's LeNet: the second layer's inputs are signed), on (1, 8, 8)."""
    return Net([Conv2d("conv1", 6, kernel=3), MaxPool2d("pool1", 2, 2), Linear("ip1", 24),
                ReLU("relu1"), Linear("ip2", 3)], input_shape=(1, 8, 8), seed=seed,
               dtype=dtype, name="tiny-lenet")


def trained_tiny_lenet(epochs=4, seed=0):
    """``tiny_lenet`` trained on ``bars(512)`` (a fraction of a second) → (net, x, y)."""
    from robustcnn.engine.train import SGD, Schedule, fit

    x, y = bars(512, seed=seed)
    net = tiny_lenet(seed)
    steps = len(x) // 32
    fit(net, x, y, epochs=epochs, batch_size=32, optimizer=SGD(0.9, 5e-4),
        schedule=Schedule("cosine", 0.05, total=epochs * steps), progress=False, log=None)
    return net, x, y
