"""Image files as a net's input, the way the net's recorded preprocessing says
(``engine.preprocess``): read with Pillow (``pip install 'robustcnn[images]'``), resized
(``resize``: the shorter side, or [height, width]), centre-cropped (``crop``), converted to the
net's channels (RGB or grey), pixel values 0–255 mapped onto the net's ``bounds`` ([0, 1] when
it declares none). Without a recorded resize or crop the image is resized to the net's input
size.

    x = read_images(["cat.jpg"], net)              # (N, C, H, W) in image units: for
                                                   # net.with_preprocessing(), or attacks
    probs = softmax_forward(net.logits(net_input(x, net)))    # mean/std/scale/order applied
    predict_files(net, ["cat.jpg"], k=5)           # [[(index, name, probability), …], …]

A file Pillow cannot read is a one-line ValueError naming it. Pillow's resampling is bilinear
with antialiasing; other libraries (OpenCV, Caffe's own transformer) round differently, so
probabilities can differ in the last digits from theirs.
"""

import os

import numpy as np

from ..engine.preprocess import apply, to_bounds


def _pillow():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ValueError("reading image files needs Pillow: pip install 'robustcnn[images]'") \
            from None
    return Image, UnidentifiedImageError


def _resized(image, size, Image):
    """A Pillow image resized: ``size`` is the shorter side (aspect kept) or [height, width]."""
    w, h = image.size
    if isinstance(size, (list, tuple)):
        new_h, new_w = size
    elif w <= h:
        new_w, new_h = size, max(1, round(h * size / w))
    else:
        new_w, new_h = max(1, round(w * size / h)), size
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), Image.Resampling.BILINEAR)


def read_image(path, net):
    """One image file → (C, H, W) float32 in the net's image units (see the module
    docstring). ValueError naming the file if it cannot be read or is smaller than the crop."""
    Image, UnidentifiedImageError = _pillow()
    channels, height, width = net.input_shape
    if channels not in (1, 3):
        raise ValueError(f"{path}: the net takes {channels} channels; image files give 1 (grey) "
                         f"or 3 (RGB)")
    pre = net.preprocessing
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        if isinstance(e, FileNotFoundError):
            raise ValueError(f"{path}: no such file") from None
        raise ValueError(f"{path}: not an image file Pillow can read ({e})") from None
    if "resize" not in pre and "crop" not in pre:
        image = _resized(image, [height, width], Image)
    elif "resize" in pre:
        image = _resized(image, pre["resize"], Image)
    if "crop" in pre:
        crop_h, crop_w = pre["crop"] if isinstance(pre["crop"], list) else [pre["crop"]] * 2
        w, h = image.size
        if w < crop_w or h < crop_h:
            raise ValueError(f"{path}: {h}×{w} after resizing is smaller than the net's "
                             f"{crop_h}×{crop_w} crop")
        top, left = (h - crop_h) // 2, (w - crop_w) // 2
        image = image.crop((left, top, left + crop_w, top + crop_h))
    pixels = np.asarray(image, dtype=np.float32).reshape(image.size[1], image.size[0], -1)
    return to_bounds(pixels.transpose(2, 0, 1)[None] / np.float32(255), net.bounds)[0]


def read_images(paths, net):
    """Image files → (N, C, H, W) float32 in image units; ValueError if their sizes differ
    after resizing and cropping (``read_image`` one at a time then)."""
    images = [read_image(os.fspath(p), net) for p in paths]
    shapes = {x.shape for x in images}
    if len(shapes) > 1:
        raise ValueError(f"the images have different sizes after resizing and cropping "
                         f"({', '.join(str(s) for s in sorted(shapes))}); read them one at a time")
    return np.stack(images)


def net_input(images, net):
    """Images (N, C, H, W) in image units → the bare net's inputs: its preprocessing's mean,
    std, scale and channel order applied (``engine.preprocess.apply``)."""
    return apply(images, net.preprocessing)


def class_names(net, meta=None):
    """Names of the net's classes, or None: the dataset's recorded in ``meta`` (a robustcnn
    file's), else ImageNet's for 1000 classes."""
    from .datasets import DATASETS

    dataset = (meta or {}).get("dataset")
    if dataset in DATASETS and len(DATASETS[dataset]) == net.num_classes:
        return list(DATASETS[dataset])
    if net.num_classes == 1000:
        from .squeezenet_dc import imagenet_classes

        return [names for _, names in imagenet_classes()]
    return None


def predict_files(net, paths, k=5, names=None):
    """The ``k`` most probable classes of each image file → one list per file of (index,
    name, probability), name None without ``names``. Each file runs on its own, so sizes may
    differ: a fully convolutional net is planned for each."""
    from ..engine import softmax_forward

    out = []
    for path in paths:
        x = read_image(os.fspath(path), net)
        model = net.at_input_shape(x.shape) if x.shape != net.input_shape else net
        probs = softmax_forward(model.logits(net_input(x[None], net)).astype(np.float64))[0]
        order = np.argsort(-probs, kind="stable")[:k]
        out.append([(int(i), names[i] if names else None, float(probs[i])) for i in order])
    return out
