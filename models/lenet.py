"""The LeNets of Deep Compression's small experiments (Han et al. 2016, Table 1), as in Caffe.

- LeNet-300-100: ip 300 → ReLU → ip 100 → ReLU → ip 10 (266,610 parameters).
- LeNet-300-100 with structured hidden layers (``lenet-300-100-structured``): ip1 and ip2
  circulant or Toeplitz-like of displacement rank r (Sindhwani, Sainath & Kumar 2015;
  ``engine/structured.py``), ip3 dense: 2,494 parameters circulant, 3,578 at r = 1, 5,746 at
  r = 2, 10,082 at r = 4 (against 266,610 dense). Trained from scratch (``robustcnn train --model
  lenet-300-100-structured --arch-options structure=toeplitz-like,rank=4``).
- LeNet-5, Caffe's ``examples/mnist/lenet.prototxt``: conv 20 (5×5) → max pool 2 → conv 50 (5×5)
  → max pool 2 → ip 500 → ReLU → ip 10 (431,080 parameters). No ReLU after the convolutions,
  as in Caffe's file.

Both take (1, 28, 28) inputs in [0, 1] (Caffe scales MNIST bytes by 1/256) and use Caffe's
xavier initialisation with zero biases.
"""

import numpy as np

from ..engine import Conv2d, Linear, MaxPool2d, Net, ReLU, StructuredLinear


def lenet_300_100(*, num_classes=10, input_shape=(1, 28, 28), seed=0, dtype=np.float32):
    """LeNet-300-100, the fully connected LeNet."""
    return Net([
        Linear("ip1", 300), ReLU("relu1"),
        Linear("ip2", 100), ReLU("relu2"),
        Linear("ip3", num_classes),
    ], input_shape, seed=seed, dtype=dtype, name="lenet-300-100")


def lenet_300_100_structured(structure="toeplitz-like", rank=1, *, num_classes=10,
                             input_shape=(1, 28, 28), seed=0, dtype=np.float32):
    """LeNet-300-100 whose two hidden layers are structured (circulant, or Toeplitz-like of
    displacement ``rank``); the 10-way output layer stays dense, as it is small."""
    return Net([
        StructuredLinear("ip1", 300, structure=structure, rank=rank), ReLU("relu1"),
        StructuredLinear("ip2", 100, structure=structure, rank=rank), ReLU("relu2"),
        Linear("ip3", num_classes),
    ], input_shape, seed=seed, dtype=dtype, name="lenet-300-100-structured")


def lenet5(*, num_classes=10, input_shape=(1, 28, 28), seed=0, dtype=np.float32):
    """Caffe's LeNet-5: conv20-pool-conv50-pool-ip500-relu-ip10."""
    return Net([
        Conv2d("conv1", 20, kernel=5),
        MaxPool2d("pool1", kernel=2, stride=2),
        Conv2d("conv2", 50, kernel=5),
        MaxPool2d("pool2", kernel=2, stride=2),
        Linear("ip1", 500), ReLU("relu1"),
        Linear("ip2", num_classes),
    ], input_shape, seed=seed, dtype=dtype, name="lenet5")


MODELS = {"lenet5": lenet5, "lenet-300-100": lenet_300_100,
          "lenet-300-100-structured": lenet_300_100_structured}


def build_model(name, **kwargs):
    """A model of the zoo by name (see ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
    return MODELS[name](**kwargs)
