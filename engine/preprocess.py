"""A model's input: the range of its images (``bounds``) and how an image becomes the net's
input (``preprocessing``), as Foolbox and ART attach them to a model.

Both live in the net's spec (``Net.spec()``), so they travel with every model file (checkpoint,
``.rcnn``, the study's models) and with ``Net.copy``; the importers fill them from what a file
says (a Caffe data layer's ``transform_param``, an ONNX model's metadata).

    bounds          (low, high): the values an image may take, in image units — numbers, or
                    one number per channel. What attacks clip to; eps is in these units.
    preprocessing   {"mean": m, "std": s, "scale": k, "channel_order": "bgr", "resize": 256,
                     "crop": 227, "mean_file": path}, every key optional:

        net input[c] = (image[order[c]] − mean[c]) / std[c] · scale

    with ``mean`` and ``std`` one number or one per channel (in the net's channel order), the
    image given in RGB order and reversed when ``channel_order`` is "bgr" (Caffe). ``resize``
    (the shorter side, or [height, width]) and ``crop`` (a centred square, or [height, width])
    are what to do to an image file before it is an array (``models.images``); ``mean_file``
    is a Caffe mean image, recorded, not applied. Caffe's names ``mean_value`` and
    ``crop_size`` are read as ``mean`` and ``crop``; ``mirror`` (a training augmentation) is
    dropped.

``affine(preprocessing, channels)`` is the map as (order, a, b): input[c] = image[order[c]] ·
a[c] + b[c], which ``engine.layers.Preprocess`` computes; ``net.with_preprocessing()`` puts it
in front of a net, so that attacks work on images in image units.
"""

import math
import numbers

import numpy as np

PREPROCESSING_KEYS = ("mean", "std", "scale", "channel_order", "resize", "crop", "mean_file")
# Caffe's transform_param names → ours (None: dropped).
_ALIASES = {"mean_value": "mean", "crop_size": "crop", "mirror": None}
CHANNEL_ORDERS = ("rgb", "bgr")
# The keys that change the values (the rest is about image files).
AFFINE_KEYS = ("mean", "std", "scale", "channel_order")


def _number(value, what, at, *, positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(f"{at}: {what} must be a finite number{' > 0' if positive else ''}, "
                         f"got {value!r}")
    return float(value)


def _per_channel(value, what, at, channels, *, positive=False):
    """A number, or a list of one number per channel (or one)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        values = [_number(v, what, at, positive=positive) for v in np.asarray(value).ravel()] \
            if isinstance(value, np.ndarray) else \
            [_number(v, what, at, positive=positive) for v in value]
        if len(values) not in (1, channels):
            raise ValueError(f"{at}: {what} has {len(values)} values for {channels} channel(s)")
        return values
    return _number(value, what, at, positive=positive)


def _size(value, what, at):
    """A positive int, or [height, width]."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{at}: {what} must be a size or [height, width], got {value!r}")
        return [_size(v, what, at) for v in value]
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{at}: {what} must be a positive integer, got {value!r}")
    return int(value)


def check_preprocessing(preprocessing, channels, at="preprocessing"):
    """``preprocessing`` (a dict, or None) checked and in its canonical form (see the module
    docstring) → a new dict; {} for None. ``channels``: the net's input channels. ValueError
    naming ``at`` for an unknown key or a bad value."""
    if preprocessing is None:
        return {}
    if not isinstance(preprocessing, dict):
        raise ValueError(f"{at}: preprocessing must be a dict, got {type(preprocessing).__name__}")
    out = {}
    for key, value in preprocessing.items():
        key = _ALIASES.get(key, key)
        if key is None:
            continue
        if key not in PREPROCESSING_KEYS:
            raise ValueError(f"{at}: unknown preprocessing key {key!r} (known: "
                             f"{', '.join(PREPROCESSING_KEYS)})")
        if key in ("mean", "std"):
            if isinstance(value, (list, tuple)) and not len(value):
                continue  # Caffe's empty mean_value
            value = _per_channel(value, key, at, channels, positive=key == "std")
        elif key == "scale":
            value = _number(value, key, at, positive=True)
        elif key == "channel_order":
            value = str(value).lower()
            if value not in CHANNEL_ORDERS:
                raise ValueError(f"{at}: channel_order must be one of {CHANNEL_ORDERS}, got "
                                 f"{value!r}")
            if value == "bgr" and channels != 3:
                raise ValueError(f"{at}: channel_order 'bgr' needs 3 channels, the net has "
                                 f"{channels}")
        elif key in ("resize", "crop"):
            if not value:
                continue  # Caffe's crop_size 0: no crop
            value = _size(value, key, at)
        elif key == "mean_file":
            if not isinstance(value, str):
                raise ValueError(f"{at}: mean_file must be a path, got {value!r}")
        out[key] = value
    return {k: out[k] for k in PREPROCESSING_KEYS if k in out}


def check_bounds(bounds, channels, at="bounds"):
    """``bounds`` = (low, high), each a number or one per channel, low < high everywhere →
    [low, high] (floats or lists of floats), or None for None."""
    if bounds is None:
        return None
    if isinstance(bounds, (str, bytes)) or not hasattr(bounds, "__len__") or len(bounds) != 2:
        raise ValueError(f"{at}: bounds must be a (low, high) pair, got {bounds!r}")
    lo, hi = (_per_channel(b, "bounds", at, channels) for b in bounds)
    low, high = np.broadcast_arrays(np.asarray(lo, float), np.asarray(hi, float))
    if not (low < high).all():
        raise ValueError(f"{at}: low must be below high in every channel, got {bounds!r}")
    return [lo, hi]


def affine(preprocessing, channels):
    """The preprocessing as (order (C,) int, a (C,), b (C,) float64): input[c] =
    image[order[c]] · a[c] + b[c]; None when it leaves the values as they are."""
    p = preprocessing or {}
    if not any(k in p for k in AFFINE_KEYS):
        return None
    order = np.arange(channels)[::-1].copy() if p.get("channel_order") == "bgr" \
        else np.arange(channels)
    mean = np.broadcast_to(np.asarray(p.get("mean", 0.0), float), (channels,))
    std = np.broadcast_to(np.asarray(p.get("std", 1.0), float), (channels,))
    scale = float(p.get("scale", 1.0))
    a, b = scale / std, -mean / std * scale
    if np.array_equal(order, np.arange(channels)) and np.all(a == 1) and np.all(b == 0):
        return None
    return order, a, b


def input_bounds(bounds, preprocessing, channels):
    """The range of the net's input values that the images within ``bounds`` (checked, image
    units) make after ``preprocessing`` → (low, high), floats or (C,) arrays; None if bounds
    is None."""
    if bounds is None:
        return None
    m = affine(preprocessing, channels)
    if m is None:
        return tuple(bounds)
    order, a, b = m
    lo = np.broadcast_to(np.asarray(bounds[0], float), (channels,))[order]
    hi = np.broadcast_to(np.asarray(bounds[1], float), (channels,))[order]
    ends = np.stack([lo * a + b, hi * a + b])
    low, high = ends.min(axis=0), ends.max(axis=0)
    if np.all(low == low[0]) and np.all(high == high[0]):
        return float(low[0]), float(high[0])
    return low, high


def apply(x, preprocessing):
    """Images ``x`` (N, C, …) in image units → the net's inputs (a new float array; ``x``
    itself when the preprocessing leaves the values as they are)."""
    x = np.asarray(x)
    m = affine(preprocessing, x.shape[1])
    if m is None:
        return x
    order, a, b = m
    shape = (1, -1) + (1,) * (x.ndim - 2)
    dtype = x.dtype if x.dtype.kind == "f" else np.float32
    return (x[:, order] * a.reshape(shape) + b.reshape(shape)).astype(dtype)


def to_bounds(x, bounds):
    """Images ``x`` (N, C, …) with values in [0, 1] (as the dataset loaders give them) mapped
    linearly onto ``bounds`` (checked: numbers or one per channel) → a new array of x's dtype."""
    x = np.asarray(x)
    if bounds is None:
        return x
    shape = (1, -1) + (1,) * (x.ndim - 2)
    lo = np.asarray(bounds[0], float).reshape(shape if np.ndim(bounds[0]) else ())
    hi = np.asarray(bounds[1], float).reshape(shape if np.ndim(bounds[1]) else ())
    return (lo + x * (hi - lo)).astype(x.dtype if x.dtype.kind == "f" else np.float32)


def describe_bounds(bounds):
    """Bounds for a line of text: ``[0, 255]``, or per channel ``[-104, -117, -123] to […]``."""
    if bounds is None:
        return "not declared"
    lo, hi = bounds
    if np.ndim(lo) == 0 and np.ndim(hi) == 0:
        return f"[{lo:g}, {hi:g}]"

    def show(v):
        return "[" + ", ".join(f"{float(x):g}" for x in np.ravel(v)) + "]"
    return f"{show(lo)} to {show(hi)}"
