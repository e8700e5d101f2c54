"""Test helpers: small Caffe files written with the project's own schema, and each layer's
output of a forward pass in robustcnn and in OpenCV."""

import numpy as np

from robustcnn.engine.layers import Context
from robustcnn.models.caffe.schema import messages


def blob_proto(array, legacy=False, double=False):
    """A BlobProto of ``array``: float32 ``data`` (what OpenCV reads), or ``double_data``."""
    blob = messages()["BlobProto"]()
    a = np.asarray(array)
    if legacy:
        shape = (1,) * (4 - a.ndim) + a.shape
        blob.num, blob.channels, blob.height, blob.width = shape
    else:
        blob.shape.dim.extend(a.shape)
    if double:
        blob.double_data.extend(a.astype(np.float64).ravel().tolist())
    else:
        blob.data.extend(a.astype(np.float32).ravel().tolist())
    return blob


def caffemodel_bytes(weights, *, types=None, v1=False, legacy=False, double=False):
    """A binary NetParameter holding {layer name: [array, …]} as the layers' blobs."""
    msg = messages()["NetParameter"]()
    for name, arrays in weights.items():
        layer = msg.layers.add() if v1 else msg.layer.add()
        layer.name = name
        if types and not v1:
            layer.type = types[name]
        layer.blobs.extend(blob_proto(a, legacy, double) for a in arrays)
    return msg.SerializeToString()


def write_caffe(tmp_path, prototxt, weights=None, **kw):
    """Write ``prototxt`` (text) and ``weights`` → (prototxt path, caffemodel path or None)."""
    proto = tmp_path / "net.prototxt"
    proto.write_text(prototxt)
    if weights is None:
        return proto, None
    model = tmp_path / "net.caffemodel"
    model.write_bytes(caffemodel_bytes(weights, **kw))
    return proto, model


def layer_outputs(net, x):
    """{layer name: its first output} for one forward pass of ``net`` on ``x`` (eval mode),
    each layer's output kept even when a later in-place layer overwrites its blob."""
    ctx = Context()
    blobs = {net.input_name: np.ascontiguousarray(x, dtype=net.dtype)}
    out, previous = {}, net.input_name
    for layer in net.layers:
        ys = layer.forward([blobs[b] for b in (layer.bottom or [previous])], ctx)
        tops = layer.top or [layer.name]
        for t, y in zip(tops, ys):
            blobs[t] = y
        out[layer.name] = ys[0]
        previous = tops[0]
    return out


def opencv_outputs(cv2, prototxt, caffemodel, x, names, *, tops=None):
    """{layer name: output} from OpenCV's Caffe importer (fusion off, so that every layer's own
    output is there). OpenCV renames some layers after their top (a convolution whose output
    later layers modify in place): ``tops`` ({layer name: top}) gives the name to ask for then.
    """
    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.enableFusion(False)
    known = set(net.getLayerNames())
    asked = [n if n in known or not tops else tops.get(n, n) for n in names]
    net.setInput(np.ascontiguousarray(x, dtype=np.float32))
    return dict(zip(names, net.forward(asked)))


def random_caffe_weights(net, rng, *, transposed=()):
    """Caffe blobs for every weighted layer of ``net`` (an imported net), drawn at random:
    {layer name: [array, …]} in Caffe's blob order, BatchNorm's sums times a moving-average
    factor of 0.5 as Caffe stores them."""
    weights = {}
    for layer in net.layers:
        if layer.type == "BatchNorm":
            C = layer.buffers["mean"].shape[0]
            weights[layer.name] = [rng.standard_normal(C) * 0.5 * 0.5,
                                   rng.uniform(0.5, 2.0, C) * 0.5, np.array([0.5])]
        elif layer.type == "PReLU":
            weights[layer.name] = [rng.uniform(-0.5, 1.0, layer.params["slope"].shape)]
        elif layer.params:
            w = layer.params["weight"]
            fan_in = max(int(np.prod(w.shape[1:])), 1)
            w = rng.standard_normal(w.shape) / np.sqrt(fan_in) if w.ndim > 1 \
                else rng.uniform(0.5, 1.5, w.shape)
            blobs = [w.T if layer.name in transposed else w]
            if "bias" in layer.params:
                blobs.append(0.1 * rng.standard_normal(layer.params["bias"].shape))
            weights[layer.name] = blobs
    return weights


def write_h5_weights(path, weights):
    """Caffe's HDF5 weights: data/<layer>/<blob index>, float32."""
    import h5py

    with h5py.File(path, "w") as f:
        for name, blobs in weights.items():
            for i, b in enumerate(blobs):
                f.create_dataset(f"data/{name}/{i}", data=np.asarray(b, dtype=np.float32))
