"""robustcnn: a NumPy + Numba engine for studying how robust compressed CNNs are against
adversarial attacks, on a CPU.

    import robustcnn
    net, meta = robustcnn.load("model.rcnn")    # any model file: .rcnn, HDF5 checkpoint,
                                                # Keras .h5, ONNX, Caffe prototxt + weights

Subpackages: ``robustcnn.engine`` (kernels, Net, training), ``robustcnn.models`` (zoo, data,
importers), ``robustcnn.attacks`` (attacks and their evaluation), ``robustcnn.compress``
(compression and the model file), ``robustcnn.study`` (the study grid).
Importing ``robustcnn`` loads nothing heavy; the subpackages load what they need.
"""

__version__ = "0.1.0"


def load(path, *, weights=None, dtype=None, input_shape=None, preprocessing=None, bounds=None,
         max_bytes=None):
    """The net stored in any model file robustcnn reads → (net, meta); see ``robustcnn.loading``."""
    from .loading import load as _load

    return _load(path, weights=weights, dtype=dtype, input_shape=input_shape,
                 preprocessing=preprocessing, bounds=bounds, max_bytes=max_bytes)


__all__ = ["load", "__version__"]
