"""Caffe models: ``.prototxt`` nets and ``.caffemodel`` / ``.caffemodel.h5`` weights → ``Net``,
and back.

    from robustcnn.models.caffe import load_caffe, save_caffe
    net = load_caffe("deploy.prototxt", "weights.caffemodel")
    net.preprocessing            # {"mean": [104, 117, 123], "crop": 227, …} or {}
    net.outputs                  # the blobs no layer reads (a detector's heads)
    save_caffe(net, "out.prototxt", "out.caffemodel")     # see exporter.py

The schema is the project's own, ``caffe_subset.proto``: the messages of Caffe's ``caffe.proto``
that it needs, with Caffe's field numbers and defaults. No Caffe, no ``protoc``. A prototxt is
read with the ``protobuf`` package when it is installed (the ``caffe`` extra: ``pip install
robustcnn[caffe]``) and with the project's own text-format parser (prototxt.py) otherwise:
both give the same ``Message`` (message.py), and one translator (importer.py) builds the net
from it. Binary files — ``.caffemodel`` weights, a ``mean_file`` — and writing Caffe files need
protobuf (an ImportError says so); ``.caffemodel.h5`` weights need h5py only. Both network
formats are read: the current ``layer { type: "Convolution" }`` and the deprecated
``layers { type: CONVOLUTION }`` (V1). The TEST phase is built.

**Input.** ``input:`` with ``input_dim:`` ×4 or ``input_shape { dim: … }`` in the header, an
``Input`` layer, or a data layer (Data, ImageData, MemoryData, HDF5Data, WindowData, DummyData;
MemoryData and DummyData sizes and ImageData/WindowData crops give the shape, otherwise pass
``input_shape=(C, H, W)``; its ``transform_param`` — mean values, scale, crop — is kept as
``net.preprocessing`` with ``net.bounds`` (0, 255), not applied: ``net.with_preprocessing()``
applies it). One input; the batch size in the file is ignored.
Layers outside the TEST phase (``include``/``exclude`` rules, as Caffe's FilterNet applies them
at level 0 with no stages; a layer with both kinds of rule is refused, as in Caffe) are left
out, so train/val files load too.

**Layers** (Caffe type → engine layer):

- Convolution → Conv2d: group, dilation, kernel/stride/pad as one value or per axis
  (``kernel_h``/``kernel_w`` …); 2-D only.
- InnerProduct → Linear: over axis 1 (the whole example), ``transpose`` weights too.
- Pooling → MaxPool2d / AvgPool2d with Caffe's ceil-mode sizes (``round_mode: FLOOR`` for
  floor), GlobalAvgPool2d, or a max pool over the whole plane for global MAX.
- ReLU (negative_slope ≥ 0) → ReLU; PReLU (per channel or shared) → PReLU; LRN → LRN
  (ACROSS_CHANNELS) or LRNWithin (WITHIN_CHANNEL); Dropout → Dropout (identity at inference).
- Softmax, and SoftmaxWithLoss (its label bottom dropped, as OpenCV does) → Softmax over axis 1
  of a (K,) blob, or of a (K, H, W) blob at every position (a fully convolutional net's map).
- Concat (``axis`` or V1 ``concat_dim``) → Concat; Eltwise SUM (with coefficients), PROD, MAX →
  EltwiseSum, EltwiseProd, EltwiseMax.
- BatchNorm → BatchNorm without affine (the stored sums divided by the moving-average factor;
  ``moving_average_fraction`` as its momentum; ``use_global_stats: true`` keeps the statistics
  frozen in training, not set means batch statistics in training as in Caffe's TRAIN phase);
  Scale (one factor per channel, optional bias) → Scale.
- Flatten (axis 1 to the end) → Flatten, other axes → Reshape; Reshape (0 copies, -1 inferred,
  ``axis``/``num_axes``) → Reshape.
- Split → nothing (its tops name its bottom); Accuracy, Silence → left out.

In-place layers (top = bottom) are kept as the Net's versioned blobs. Every blob's shape is
inferred layer by layer and every weight blob is checked against it (legacy 4-D blob shapes
are matched as Caffe does). Anything else — another layer type or option, a layer not in the
weights — is a ValueError naming the file, the layer and what was expected vs found.
"""

from .exporter import net_parameter, save_caffe
from .files import read_caffemodel, read_mean_file, read_net, read_prototxt, read_weights
from .importer import load_caffe
from .message import Message
from .prototxt import parse_net, parse_prototxt
from .schema import has_protobuf

__all__ = ["load_caffe", "save_caffe", "net_parameter", "read_net", "read_prototxt",
           "read_caffemodel", "read_weights", "read_mean_file", "parse_prototxt", "parse_net",
           "Message", "has_protobuf"]
