"""Keras models saved as HDF5 → ``Net``: Keras 2 ``.h5`` files and Keras 3's legacy ``.h5``;
and back (``save_keras``, see exporter.py).

    from robustcnn.models.keras import load_keras, save_keras
    net = load_keras("model.h5")
    y = net.forward(x_nhwc.transpose(0, 3, 1, 2))
    save_keras(net, "again.h5")

Only h5py and JSON are used: ``model_config`` is parsed as JSON, never evaluated, and a
``Lambda`` layer (Python code) is refused. Sequential and functional models with one input and
one output; layers called once.

**Layout.** Keras is channels-last (NHWC), the engine NCHW: an (H, W, C) tensor is held as
(C, H, W) and kernels are transposed on the way in; Flatten and Reshape of such a tensor first
lay it out as (H, W, C) (a Permute layer), so that every output, and every Dense after a
Flatten, sees Keras' order.

**Layers:** InputLayer; Conv2D (groups, dilation, 'same' padding — an uneven 'same' becomes a
Pad2d before a valid convolution), DepthwiseConv2D, SeparableConv2D (→ depthwise +
``<name>/pointwise`` convolutions), Dense (on flat inputs), BatchNormalization (last axis),
Activation and the activation argument (linear, relu, relu6, softmax), ReLU (negative slope,
max_value 6), PReLU (per channel or shared), Softmax, MaxPooling2D, AveragePooling2D (its
'same' mean leaves the padding out), GlobalAveragePooling2D, GlobalMaxPooling2D, Flatten,
Reshape, Permute, Dropout, ZeroPadding2D, Add, Multiply, Maximum, Concatenate. Anything else is
a ValueError naming the file and the layer.
"""

from .exporter import keras_model_config, save_keras
from .importer import load_keras

__all__ = ["load_keras", "save_keras", "keras_model_config"]
