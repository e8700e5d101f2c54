"""ImageNet architectures of the study, with the papers' shapes, and small variants for 28×28 and
32×32 inputs. Weights are drawn as the papers (or their reference Caffe files) draw them.

    net = build_zoo("mobilenet_v1", alpha=0.5)     # or alexnet(), vgg16(), googlenet(), …
    net.num_params()                                # trainable values

- ``caffenet``: Caffe's bvlc_reference_caffenet (AlexNet with pooling before normalisation),
  3×227×227, 60,965,224 parameters; ``alexnet``: Caffe's bvlc_alexnet (Krizhevsky et al. 2012),
  the same count.
- ``vgg16``: Simonyan & Zisserman 2015, configuration D, 3×224×224, 138,357,544.
- ``googlenet``: Szegedy et al. 2015 as Caffe's bvlc_googlenet deploy net (no auxiliary heads),
  3×224×224, 6,998,552.
- ``squeezenet_v1_0``: Iandola et al. 2016, Table 1, 3×227×227, 1,248,424; ``squeezenet_v1_1``
  (3×3 conv1, earlier pooling): 1,235,496.
- ``mobilenet_v1``: Howard et al. 2017, Table 1, width multiplier α, 3×224×224, 4,231,976 at
  α = 1.
- ``inception_v3``: Szegedy et al. 2016 (no auxiliary head), 3×299×299, 23,834,568.
- ``resnet_small``: He et al. 2016's CIFAR ResNet (ResNet-20 at ``blocks=3``: 3×32×32,
  272,474 with 1×1 projection shortcuts); ``vgg_small``: a VGG-style CIFAR net (Simonyan &
  Zisserman's 3×3 stacks, 64-64-M-128-128-M-256-256-M, FC 256), 2,197,706 with batch norms.

Parameter counts include biases and a batch norm's scale and shift (not its running
statistics). The small variants (``squeezenet_small``, ``mobilenet_small``) keep every layer
and drop the early downsampling so that a 28×28 or 32×32 image keeps spatial extent to the end;
``resnet_small`` and ``vgg_small`` are CIFAR nets to begin with. They are all meant to be
trained from scratch: He-initialised, with a width knob (and MobileNet's and ResNet's
``blocks``) that ``compact_for_params`` sets to reach a parameter budget, and ``data_init`` to
start them normalised on a batch of data (SqueezeNet has no batch norm to do it):

    kwargs = compact_for_params("mobilenet_small", 11_000, blocks=5, input_shape=(1, 28, 28))
    net = data_init(build_zoo("mobilenet_small", **kwargs), x_train[:256])
"""

import numpy as np

from ..engine import (LRN, AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, EltwiseSum,
                      GlobalAvgPool2d, Linear, MaxPool2d, Net, ReLU, Softmax)


def _conv_relu(name, out, kernel, bottom, *, stride=1, pad=0, group=1, init="xavier",
               relu="relu"):
    """A convolution and its in-place ReLU named ``<block>/<relu>``, Caffe's pattern."""
    return [Conv2d(name, out, kernel=kernel, stride=stride, padding=pad, groups=group,
                   weight_init=init, bottom=bottom, top=name),
            ReLU(relu, bottom=name, top=name)]


# ---------------------------------------------------------------------------------------------
# AlexNet / CaffeNet


def _alexnet(name, *, norm_first, num_classes, seed, dtype):
    """AlexNet as Caffe trains it: two-group conv2/4/5, LRN, 4096-unit fully connected layers;
    weights N(0, 0.01) (fc6, fc7: 0.005), as in bvlc_alexnet's train_val."""
    g01, g005 = "gaussian:0.01", "gaussian:0.005"

    def norm_pool(i, bottom):
        norm = LRN(f"norm{i}", local_size=5, alpha=1e-4, beta=0.75)
        pool = MaxPool2d(f"pool{i}", kernel=3, stride=2)
        if norm_first:  # AlexNet: conv → relu → norm → pool
            norm.bottom, norm.top = [bottom], [f"norm{i}"]
            pool.bottom, pool.top = [f"norm{i}"], [f"pool{i}"]
            return [norm, pool], f"pool{i}"
        pool.bottom, pool.top = [bottom], [f"pool{i}"]  # CaffeNet: pool first
        norm.bottom, norm.top = [f"pool{i}"], [f"norm{i}"]
        return [pool, norm], f"norm{i}"

    layers = _conv_relu("conv1", 96, 11, "data", stride=4, init=g01, relu="relu1")
    block, top = norm_pool(1, "conv1")
    layers += block
    layers += _conv_relu("conv2", 256, 5, top, pad=2, group=2, init=g01, relu="relu2")
    block, top = norm_pool(2, "conv2")
    layers += block
    layers += _conv_relu("conv3", 384, 3, top, pad=1, init=g01, relu="relu3")
    layers += _conv_relu("conv4", 384, 3, "conv3", pad=1, group=2, init=g01, relu="relu4")
    layers += _conv_relu("conv5", 256, 3, "conv4", pad=1, group=2, init=g01, relu="relu5")
    layers += [MaxPool2d("pool5", kernel=3, stride=2, bottom="conv5", top="pool5"),
               Linear("fc6", 4096, weight_init=g005, bottom="pool5", top="fc6"),
               ReLU("relu6", bottom="fc6", top="fc6"),
               Dropout("drop6", 0.5, bottom="fc6", top="fc6"),
               Linear("fc7", 4096, weight_init=g005, bottom="fc6", top="fc7"),
               ReLU("relu7", bottom="fc7", top="fc7"),
               Dropout("drop7", 0.5, bottom="fc7", top="fc7"),
               Linear("fc8", num_classes, weight_init=g01, bottom="fc7", top="fc8"),
               Softmax("prob", bottom="fc8", top="prob")]
    return Net(layers, (3, 227, 227), seed=seed, dtype=dtype, name=name)


def alexnet(*, num_classes=1000, seed=0, dtype=np.float32):
    """AlexNet (Krizhevsky, Sutskever & Hinton 2012) as Caffe's bvlc_alexnet."""
    return _alexnet("alexnet", norm_first=True, num_classes=num_classes, seed=seed, dtype=dtype)


def caffenet(*, num_classes=1000, seed=0, dtype=np.float32):
    """CaffeNet (bvlc_reference_caffenet): AlexNet with pooling before normalisation."""
    return _alexnet("caffenet", norm_first=False, num_classes=num_classes, seed=seed,
                    dtype=dtype)


# ---------------------------------------------------------------------------------------------
# VGG-16


def vgg16(*, num_classes=1000, seed=0, dtype=np.float32):
    """VGG-16, configuration D of Simonyan & Zisserman 2015: 13 3×3 convolutions in five
    blocks, each block ending in a 2×2 max pool, then 4096-4096-classes. Weights N(0, 0.01),
    biases 0 (the paper's initialisation)."""
    layers, bottom = [], "data"
    for block, (width, depth) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], 1):
        for i in range(1, depth + 1):
            name = f"conv{block}_{i}"
            layers += _conv_relu(name, width, 3, bottom, pad=1, init="gaussian:0.01",
                                 relu=f"relu{block}_{i}")
            bottom = name
        layers.append(MaxPool2d(f"pool{block}", kernel=2, stride=2, bottom=bottom,
                                top=f"pool{block}"))
        bottom = f"pool{block}"
    for i, out in ((6, 4096), (7, 4096)):
        layers += [Linear(f"fc{i}", out, weight_init="gaussian:0.01", bottom=bottom,
                          top=f"fc{i}"),
                   ReLU(f"relu{i}", bottom=f"fc{i}", top=f"fc{i}"),
                   Dropout(f"drop{i}", 0.5, bottom=f"fc{i}", top=f"fc{i}")]
        bottom = f"fc{i}"
    layers += [Linear("fc8", num_classes, weight_init="gaussian:0.01", bottom=bottom, top="fc8"),
               Softmax("prob", bottom="fc8", top="prob")]
    return Net(layers, (3, 224, 224), seed=seed, dtype=dtype, name="vgg16")


# ---------------------------------------------------------------------------------------------
# GoogLeNet

# Szegedy et al. 2015, Table 1: (#1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj)
INCEPTION = {"3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
             "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
             "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
             "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
             "5b": (384, 192, 384, 48, 128, 128)}


def _inception(name, bottom, widths):
    n1, r3, n3, r5, n5, proj = widths
    p = f"inception_{name}"
    layers = _conv_relu(f"{p}/1x1", n1, 1, bottom, relu=f"{p}/relu_1x1")
    layers += _conv_relu(f"{p}/3x3_reduce", r3, 1, bottom, relu=f"{p}/relu_3x3_reduce")
    layers += _conv_relu(f"{p}/3x3", n3, 3, f"{p}/3x3_reduce", pad=1, relu=f"{p}/relu_3x3")
    layers += _conv_relu(f"{p}/5x5_reduce", r5, 1, bottom, relu=f"{p}/relu_5x5_reduce")
    layers += _conv_relu(f"{p}/5x5", n5, 5, f"{p}/5x5_reduce", pad=2, relu=f"{p}/relu_5x5")
    layers.append(MaxPool2d(f"{p}/pool", kernel=3, stride=1, padding=1, bottom=bottom,
                            top=f"{p}/pool"))
    layers += _conv_relu(f"{p}/pool_proj", proj, 1, f"{p}/pool", relu=f"{p}/relu_pool_proj")
    layers.append(Concat(f"{p}/output", bottom=[f"{p}/1x1", f"{p}/3x3", f"{p}/5x5",
                                                f"{p}/pool_proj"], top=f"{p}/output"))
    return layers, f"{p}/output"


def googlenet(*, num_classes=1000, seed=0, dtype=np.float32):
    """GoogLeNet (Szegedy et al. 2015) layer for layer as Caffe's bvlc_googlenet deploy net
    (names included), without the two auxiliary classifiers; xavier weights as there."""
    layers = _conv_relu("conv1/7x7_s2", 64, 7, "data", stride=2, pad=3, relu="conv1/relu_7x7")
    layers += [MaxPool2d("pool1/3x3_s2", kernel=3, stride=2, bottom="conv1/7x7_s2",
                         top="pool1/3x3_s2"),
               LRN("pool1/norm1", local_size=5, alpha=1e-4, beta=0.75, bottom="pool1/3x3_s2",
                   top="pool1/norm1")]
    layers += _conv_relu("conv2/3x3_reduce", 64, 1, "pool1/norm1",
                         relu="conv2/relu_3x3_reduce")
    layers += _conv_relu("conv2/3x3", 192, 3, "conv2/3x3_reduce", pad=1, relu="conv2/relu_3x3")
    layers += [LRN("conv2/norm2", local_size=5, alpha=1e-4, beta=0.75, bottom="conv2/3x3",
                   top="conv2/norm2"),
               MaxPool2d("pool2/3x3_s2", kernel=3, stride=2, bottom="conv2/norm2",
                         top="pool2/3x3_s2")]
    bottom = "pool2/3x3_s2"
    for name in ("3a", "3b", "pool3", "4a", "4b", "4c", "4d", "4e", "pool4", "5a", "5b"):
        if name.startswith("pool"):
            layers.append(MaxPool2d(f"{name}/3x3_s2", kernel=3, stride=2, bottom=bottom,
                                    top=f"{name}/3x3_s2"))
            bottom = f"{name}/3x3_s2"
            continue
        block, bottom = _inception(name, bottom, INCEPTION[name])
        layers += block
    layers += [AvgPool2d("pool5/7x7_s1", kernel=7, stride=1, bottom=bottom, top="pool5/7x7_s1"),
               Dropout("pool5/drop_7x7_s1", 0.4, bottom="pool5/7x7_s1", top="pool5/7x7_s1"),
               Linear("loss3/classifier", num_classes, bottom="pool5/7x7_s1",
                      top="loss3/classifier"),
               Softmax("prob", bottom="loss3/classifier", top="prob")]
    return Net(layers, (3, 224, 224), seed=seed, dtype=dtype, name="googlenet")


# ---------------------------------------------------------------------------------------------
# SqueezeNet

# Iandola et al. 2016, Table 1: fire module → (s1x1, e1x1, e3x3)
FIRE = {2: (16, 64, 64), 3: (16, 64, 64), 4: (32, 128, 128), 5: (32, 128, 128),
        6: (48, 192, 192), 7: (48, 192, 192), 8: (64, 256, 256), 9: (64, 256, 256)}


def _fire(i, bottom, width=1.0, init="xavier"):
    s, e1, e3 = (_scaled(c, width) for c in FIRE[i])
    p = f"fire{i}"
    layers = _conv_relu(f"{p}/conv1x1_1", s, 1, bottom, relu=f"{p}/relu_conv1x1_1", init=init)
    layers += _conv_relu(f"{p}/conv1x1_2", e1, 1, f"{p}/conv1x1_1", relu=f"{p}/relu_conv1x1_2",
                         init=init)
    layers += _conv_relu(f"{p}/conv3x3_2", e3, 3, f"{p}/conv1x1_1", pad=1,
                         relu=f"{p}/relu_conv3x3_2", init=init)
    layers.append(Concat(f"{p}/concat", bottom=[f"{p}/conv1x1_2", f"{p}/conv3x3_2"],
                         top=f"{p}/concat"))
    return layers, f"{p}/concat"


def _scaled(channels, width):
    """A layer's channels times the width multiplier, at least 2 (exact at width 1)."""
    return channels if width == 1 else max(2, int(round(channels * width)))


def _squeezenet(name, conv1, pool_after, input_shape, num_classes, seed, dtype, final_pad=0,
                width=1.0, init="xavier", final_relu=True):
    """conv1 → pool → fire2 … fire9 (max pools after the fires in ``pool_after``) → dropout →
    conv_final (num_classes 1×1, N(0, 0.01)) → global average → softmax; the layer names of
    the Deep Compression SqueezeNet deploy file. ``width`` multiplies every channel count but
    the classes'; ``init`` fills every convolution but conv_final; ``final_relu`` keeps the
    ReLU on the class scores (relu_conv_final)."""
    out, kernel, stride = conv1
    layers = _conv_relu("conv1", _scaled(out, width), kernel, "data", stride=stride,
                        relu="relu_conv1", init=init)
    layers.append(MaxPool2d("pool1", kernel=3, stride=2, bottom="conv1", top="pool1"))
    bottom = "pool1"
    for i in range(2, 10):
        block, bottom = _fire(i, bottom, width, init)
        layers += block
        if i in pool_after:
            layers.append(MaxPool2d(f"pool{i}", kernel=3, stride=2, bottom=bottom,
                                    top=f"pool{i}"))
            bottom = f"pool{i}"
    layers += [Dropout("drop9", 0.5, bottom=bottom, top=bottom)]
    layers += _conv_relu("conv_final", num_classes, 1, bottom, pad=final_pad,
                         init="gaussian:0.01", relu="relu_conv_final")[:2 if final_relu else 1]
    layers += [GlobalAvgPool2d("pool_final", bottom="conv_final", top="pool_final"),
               Softmax("prob", bottom="pool_final", top="prob")]
    return Net(layers, input_shape, seed=seed, dtype=dtype, name=name)


def squeezenet_v1_0(*, num_classes=1000, seed=0, dtype=np.float32):
    """SqueezeNet v1.0 (Iandola et al. 2016): conv1 96 7×7/2, pools after conv1, fire4, fire8;
    the final 1×1 convolution padded by 1, as in the published files."""
    return _squeezenet("squeezenet_v1_0", (96, 7, 2), (4, 8), (3, 227, 227), num_classes, seed,
                       dtype, final_pad=1)


def squeezenet_v1_1(*, num_classes=1000, seed=0, dtype=np.float32):
    """SqueezeNet v1.1: conv1 64 3×3/2, pools after conv1, fire3, fire5 (2.4× less compute,
    the same accuracy)."""
    return _squeezenet("squeezenet_v1_1", (64, 3, 2), (3, 5), (3, 227, 227), num_classes, seed,
                       dtype)


def squeezenet_small(width=1.0, *, input_shape=(3, 32, 32), num_classes=10, seed=0,
                     dtype=np.float32):
    """SqueezeNet v1.1 for 28×28 or 32×32 images: conv1 64 3×3 with stride 1, the same fire
    modules and pools; both sizes reach the global pool at 3×3. ``width`` (> 0) multiplies
    every layer's channels (at least 2 each), as MobileNet's α does (Howard et al. 2017), to
    build it at a parameter budget (``compact_for_params``).

    Trained from scratch, so the convolutions are drawn as He et al. 2015 ("Delving deep into
    rectifiers") prescribe for ReLU nets, N(0, 2/fan_in): Caffe's xavier, U(±√(3/fan_in)),
    halves the activations' variance at every ReLU layer. And the class scores get no ReLU
    (v1.1 has relu_conv_final): a ReLU on the logits zeroes every class whose score is negative
    for all inputs, and a narrow net whose ten scores all start negative gets logits ≡ 0, loss
    ln 10 and no gradient at all (seen at width 0.08)."""
    if not (isinstance(width, (int, float)) and 0 < width <= 4):
        raise ValueError(f"squeezenet_small: the width multiplier must be in (0, 4], got "
                         f"{width!r}")
    name = "squeezenet_small" if width == 1 else f"squeezenet_small_{width:.4g}"
    return _squeezenet(name, (64, 3, 1), (3, 5), tuple(input_shape), num_classes, seed, dtype,
                       width=width, init="msra", final_relu=False)


# ---------------------------------------------------------------------------------------------
# MobileNet v1

# Howard et al. 2017, Table 1: (pointwise output channels, depthwise stride) per block
MOBILENET = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
             (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def _mobilenet(name, alpha, input_shape, num_classes, first_stride, table, seed, dtype,
               init="glorot", min_width=8):
    """conv 3×3 → one block per (pointwise width, depthwise stride) of ``table`` (depthwise
    3×3 → BN → ReLU → pointwise 1×1 → BN → ReLU) → global average → dropout → fully connected
    → softmax. Convolutions without bias (batch norm follows); ReLU as in the paper. ``init``
    fills the convolutions; channels are at least ``min_width``."""
    if not (isinstance(alpha, (int, float)) and 0 < alpha <= 1):
        raise ValueError(f"{name}: the width multiplier alpha must be in (0, 1], got {alpha!r}")

    def width(c):
        return max(min_width, int(c * alpha))

    layers = []

    def conv_bn_relu(lname, out, kernel, bottom, stride, groups=1):
        pad = kernel // 2
        layers.extend([Conv2d(lname, out, kernel=kernel, stride=stride, padding=pad,
                              groups=groups, bias=False, weight_init=init, bottom=bottom,
                              top=lname),
                       BatchNorm(f"{lname}/bn", eps=1e-3, bottom=lname, top=lname),
                       ReLU(f"{lname}/relu", bottom=lname, top=lname)])
        return lname

    bottom = conv_bn_relu("conv1", width(32), 3, "data", first_stride)
    channels = width(32)
    for i, (out, stride) in enumerate(table, 1):
        bottom = conv_bn_relu(f"conv{i}_dw", channels, 3, bottom, stride, groups=channels)
        channels = width(out)
        bottom = conv_bn_relu(f"conv{i}_pw", channels, 1, bottom, 1)
    layers += [GlobalAvgPool2d("pool", bottom=bottom, top="pool"),
               Dropout("drop", 1e-3, bottom="pool", top="pool"),
               Linear("fc", num_classes, weight_init="glorot", bottom="pool", top="fc"),
               Softmax("prob", bottom="fc", top="prob")]
    return Net(layers, input_shape, seed=seed, dtype=dtype, name=name)


def mobilenet_v1(alpha=1.0, *, num_classes=1000, input_size=224, seed=0, dtype=np.float32):
    """MobileNet v1 (Howard et al. 2017) with width multiplier ``alpha`` (each layer's channels
    times α, at least 8) on ``input_size``² images (the paper's 224, 192, 160, 128)."""
    return _mobilenet(f"mobilenet_v1_{alpha:g}", alpha, (3, input_size, input_size),
                      num_classes, 2, MOBILENET, seed, dtype)


# The blocks a shortened small MobileNet keeps, in order: ``blocks=k`` keeps the first k of
# these (sorted back into the network's order). The three stride-2 blocks (4, 6, 12 of the
# small variant) come first, so every depth downsamples 28 → 14 → 7 → 4; then one block of
# each width; then the repeated 512-wide blocks.
_SMALL_BLOCK_ORDER = (1, 2, 4, 6, 12, 3, 5, 13, 7, 8, 9, 10, 11)


def mobilenet_small(alpha=1.0, *, blocks=13, input_shape=(3, 32, 32), num_classes=10, seed=0,
                    dtype=np.float32):
    """MobileNet v1 for 28×28 or 32×32 images: the first convolution and the first stride-2
    block keep stride 1, so the feature maps go 32 → 16 → 8 → 4 (28 → 14 → 7 → 4).

    ``alpha`` is the width multiplier (channels times α, at least 4 here); ``blocks`` (1–13)
    keeps that many of the 13 depthwise-separable blocks, the stride-2 ones first (see
    ``_SMALL_BLOCK_ORDER``), so that tiny budgets (``compact_for_params``) can trade depth for
    width.

    Trained from scratch, so the convolutions are drawn N(0, 2/fan_in) (He et al. 2015). With
    the ImageNet variant's glorot init and batch norms that did not normalise in training (the
    engine's, before they used batch statistics), each block shrank the activations about 2×
    and the 13-block net did not learn on Fashion-MNIST at lr 0.02; ``blocks=5`` (the stride-2
    blocks) at lr 0.05 learns (81% after 2 epochs on 20,000 images at 11k parameters).
    """
    if not (isinstance(blocks, int) and 1 <= blocks <= len(MOBILENET)):
        raise ValueError(f"mobilenet_small: blocks must be an integer in 1..{len(MOBILENET)}, "
                         f"got {blocks!r}")
    keep = set(_SMALL_BLOCK_ORDER[:blocks])
    table = [(out, 1 if i == 2 else s) for i, (out, s) in enumerate(MOBILENET, 1)]
    name = f"mobilenet_small_{alpha:g}" + ("" if blocks == len(MOBILENET) else f"_b{blocks}")
    return _mobilenet(name, alpha, tuple(input_shape), num_classes, 1,
                      [row for i, row in enumerate(table, 1) if i in keep], seed, dtype,
                      init="msra", min_width=4)


# ---------------------------------------------------------------------------------------------
# Inception v3


class _Inception3:
    """Builds Inception v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture",
    Figures 5–7 and Table 1, with the widths of the reference implementation): every
    convolution is conv (no bias) → batch norm → ReLU; 'same' convolutions pad symmetrically."""

    def __init__(self):
        self.layers, self.count = [], 0

    def conv(self, bottom, out, kernel, *, stride=1, same=True, name=None):
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.count += 1
        name = name or f"conv{self.count}"
        pad = (kh // 2, kw // 2) if same else 0
        self.layers += [Conv2d(name, out, kernel=(kh, kw), stride=stride, padding=pad,
                               bias=False, weight_init="glorot", bottom=bottom, top=name),
                        BatchNorm(f"{name}/bn", eps=1e-3, bottom=name, top=name),
                        ReLU(f"{name}/relu", bottom=name, top=name)]
        return name

    def pool(self, bottom, name, kind="max", *, stride=2):
        if kind == "max":
            layer = MaxPool2d(name, kernel=3, stride=stride, ceil_mode=False)
        else:  # 3×3, stride 1, 'same', the mean of the cells inside the image (TensorFlow's)
            layer = AvgPool2d(name, kernel=3, stride=1, padding=1, ceil_mode=False,
                              count_pad=False)
        layer.bottom, layer.top = [bottom], [name]
        self.layers.append(layer)
        return name

    def concat(self, bottoms, name):
        self.layers.append(Concat(name, bottom=bottoms, top=name))
        return name


def inception_v3(*, num_classes=1000, seed=0, dtype=np.float32):
    """Inception v3 on 299×299 images: the stem, three 35×35 modules (mixed0–2), a grid
    reduction (mixed3), four 17×17 modules with factorised 7×7 convolutions (mixed4–7), a grid
    reduction (mixed8), two 8×8 modules with expanded 1×3/3×1 branches (mixed9–10), global
    average, softmax. No auxiliary classifier. Batch norms carry a scale and a shift (the
    reference implementation has no scale: 17,216 values fewer). Its 'same' average pools leave
    the padding out of the mean, as TensorFlow's do."""
    b = _Inception3()
    x = b.conv("data", 32, 3, stride=2, same=False)
    x = b.conv(x, 32, 3, same=False)
    x = b.conv(x, 64, 3)
    x = b.pool(x, "pool1")
    x = b.conv(x, 80, 1, same=False)
    x = b.conv(x, 192, 3, same=False)
    x = b.pool(x, "pool2")
    for i, proj in enumerate((32, 64, 64)):  # 35×35
        b1 = b.conv(x, 64, 1)
        b5 = b.conv(b.conv(x, 48, 1), 64, 5)
        b3 = b.conv(b.conv(b.conv(x, 64, 1), 96, 3), 96, 3)
        bp = b.conv(b.pool(x, f"mixed{i}/pool", "avg"), proj, 1)
        x = b.concat([b1, b5, b3, bp], f"mixed{i}")
    b3 = b.conv(x, 384, 3, stride=2, same=False)  # 35 → 17
    bd = b.conv(b.conv(b.conv(x, 64, 1), 96, 3), 96, 3, stride=2, same=False)
    x = b.concat([b3, bd, b.pool(x, "mixed3/pool")], "mixed3")
    for i, width in zip(range(4, 8), (128, 160, 160, 192)):  # 17×17
        b1 = b.conv(x, 192, 1)
        b7 = b.conv(b.conv(b.conv(x, width, 1), width, (1, 7)), 192, (7, 1))
        bd = b.conv(x, width, 1)
        for k, out in (((7, 1), width), ((1, 7), width), ((7, 1), width), ((1, 7), 192)):
            bd = b.conv(bd, out, k)
        bp = b.conv(b.pool(x, f"mixed{i}/pool", "avg"), 192, 1)
        x = b.concat([b1, b7, bd, bp], f"mixed{i}")
    b3 = b.conv(b.conv(x, 192, 1), 320, 3, stride=2, same=False)  # 17 → 8
    b7 = b.conv(b.conv(b.conv(x, 192, 1), 192, (1, 7)), 192, (7, 1))
    b7 = b.conv(b7, 192, 3, stride=2, same=False)
    x = b.concat([b3, b7, b.pool(x, "mixed8/pool")], "mixed8")
    for i in (9, 10):  # 8×8
        b1 = b.conv(x, 320, 1)
        r = b.conv(x, 384, 1)
        b3 = b.concat([b.conv(r, 384, (1, 3)), b.conv(r, 384, (3, 1))], f"mixed{i}/3x3")
        r = b.conv(b.conv(x, 448, 1), 384, 3)
        bd = b.concat([b.conv(r, 384, (1, 3)), b.conv(r, 384, (3, 1))], f"mixed{i}/3x3dbl")
        bp = b.conv(b.pool(x, f"mixed{i}/pool", "avg"), 192, 1)
        x = b.concat([b1, b3, bd, bp], f"mixed{i}")
    b.layers += [GlobalAvgPool2d("pool", bottom=x, top="pool"),
                 Linear("fc", num_classes, weight_init="glorot", bottom="pool", top="fc"),
                 Softmax("prob", bottom="fc", top="prob")]
    return Net(b.layers, (3, 299, 299), seed=seed, dtype=dtype, name="inception_v3")


# ---------------------------------------------------------------------------------------------
# CIFAR nets: ResNet (He et al. 2016) and a VGG-style stack


def _conv_bn(layers, name, out, kernel, bottom, *, stride=1, relu=True, init="msra"):
    """conv (no bias) → batch norm → ReLU (``relu``), in place on the conv's blob → its blob."""
    layers += [Conv2d(name, out, kernel=kernel, stride=stride, padding=kernel // 2, bias=False,
                      weight_init=init, bottom=bottom, top=name),
               BatchNorm(f"{name}/bn", bottom=name, top=name)]
    if relu:
        layers.append(ReLU(f"{name}/relu", bottom=name, top=name))
    return name


def _check_width(name, width):
    if isinstance(width, bool) or not (isinstance(width, (int, float)) and 0 < width <= 4):
        raise ValueError(f"{name}: the width multiplier must be in (0, 4], got {width!r}")


def resnet_small(width=1.0, *, blocks=3, input_shape=(3, 32, 32), num_classes=10, seed=0,
                 dtype=np.float32):
    """The CIFAR-10 ResNet of He, Zhang, Ren & Sun 2016 ("Deep Residual Learning for Image
    Recognition", Section 4.2): a 3×3 convolution of 16 channels, then three stages of
    ``blocks`` basic blocks (two 3×3 convolutions) at 16, 32 and 64 channels, the second and
    third stage starting with stride 2 (32 → 16 → 8; 28 → 14 → 7), global average pool, a
    fully connected layer of the classes. 6·blocks + 2 weighted layers: ``blocks`` 3, 5, 7, 9
    are ResNet-20, 32, 44, 56 (0.27 M, 0.46 M, 0.66 M, 0.85 M parameters in the paper).

    Every convolution is followed by batch norm (no bias), ReLU after the first convolution of
    a block and after the sum ``y = ReLU(F(x) + shortcut(x))``. Shortcuts are the identity,
    except where a stage starts: there a 1×1 stride-2 convolution with batch norm projects
    x to the new width (the paper's option B; its CIFAR nets use option A, zero-padded
    identity, with no parameters: ResNet-20 has 272,474 parameters here, 2,560 projection
    weights and 192 of their batch norms more than with option A). ``width`` (> 0) multiplies
    every channel count (at least 2 each) to build it at a parameter budget
    (``compact_for_params``). Convolutions drawn N(0, 2/fan_in), as the paper (He et al.
    2015)."""
    _check_width("resnet_small", width)
    if isinstance(blocks, bool) or not (isinstance(blocks, int) and 1 <= blocks <= 64):
        raise ValueError(f"resnet_small: blocks must be an integer in 1..64, got {blocks!r}")
    layers = []
    bottom = _conv_bn(layers, "conv1", _scaled(16, width), 3, "data")
    channels = _scaled(16, width)
    for stage, base in enumerate((16, 32, 64), 1):
        out = _scaled(base, width)
        for b in range(1, blocks + 1):
            p = f"res{stage}_{b}"
            stride = 2 if stage > 1 and b == 1 else 1
            branch = _conv_bn(layers, f"{p}/conv1", out, 3, bottom, stride=stride)
            branch = _conv_bn(layers, f"{p}/conv2", out, 3, branch, relu=False)
            shortcut = bottom
            if stride != 1 or out != channels:
                shortcut = _conv_bn(layers, f"{p}/proj", out, 1, bottom, stride=stride,
                                    relu=False)
            layers += [EltwiseSum(f"{p}/sum", bottom=[branch, shortcut], top=f"{p}/sum"),
                       ReLU(f"{p}/relu", bottom=f"{p}/sum", top=f"{p}/sum")]
            bottom, channels = f"{p}/sum", out
    layers += [GlobalAvgPool2d("pool", bottom=bottom, top="pool"),
               Linear("fc", num_classes, weight_init="msra", bottom="pool", top="fc"),
               Softmax("prob", bottom="fc", top="prob")]
    name = f"resnet{6 * blocks + 2}_small" + ("" if width == 1 else f"_{width:.4g}")
    return Net(layers, tuple(input_shape), seed=seed, dtype=dtype, name=name)


# (channels, convolutions) per block of vgg_small, each block ending in a 2×2 max pool
VGG_SMALL = [(64, 2), (128, 2), (256, 2)]


def vgg_small(width=1.0, *, batch_norm=True, fc=256, input_shape=(3, 32, 32), num_classes=10,
              seed=0, dtype=np.float32):
    """A VGG-style net for CIFAR-sized images, the dense model a study compresses: Simonyan &
    Zisserman 2015's stacks of 3×3 convolutions (padding 1) and 2×2 max pools, three blocks
    64-64-M-128-128-M-256-256-M (32 → 16 → 8 → 4; 28 → 14 → 7 → 4, Caffe's ceil-mode
    pooling), then a fully connected layer of ``fc`` units with ReLU and dropout 0.5 and one
    of the classes. 2,197,706 parameters on 32×32×3 with batch norms, nearly half of them
    (1,048,832) in fc1, as most of VGG-16's are in its fully connected layers: the layer Deep
    Compression prunes hardest (preset ``vgg_small``, compress/pipeline.py).

    ``batch_norm`` puts a batch norm after every convolution (which then has no bias), as
    the CIFAR VGG variants do; without it the convolutions carry biases, as the paper's.
    ``width`` (> 0) multiplies every channel count and ``fc`` (at least 2 each). Drawn
    N(0, 2/fan_in) (He et al. 2015) for training from scratch."""
    _check_width("vgg_small", width)
    if isinstance(fc, bool) or not (isinstance(fc, int) and fc >= 1):
        raise ValueError(f"vgg_small: fc must be a positive integer, got {fc!r}")
    layers, bottom = [], "data"
    for block, (channels, depth) in enumerate(VGG_SMALL, 1):
        for i in range(1, depth + 1):
            name = f"conv{block}_{i}"
            if batch_norm:
                bottom = _conv_bn(layers, name, _scaled(channels, width), 3, bottom)
            else:
                layers += _conv_relu(name, _scaled(channels, width), 3, bottom, pad=1,
                                     init="msra", relu=f"{name}/relu")
                bottom = name
        layers.append(MaxPool2d(f"pool{block}", kernel=2, stride=2, bottom=bottom,
                                top=f"pool{block}"))
        bottom = f"pool{block}"
    layers += [Linear("fc1", _scaled(fc, width), weight_init="msra", bottom=bottom, top="fc1"),
               ReLU("fc1/relu", bottom="fc1", top="fc1"),
               Dropout("fc1/drop", 0.5, bottom="fc1", top="fc1"),
               Linear("fc2", num_classes, weight_init="msra", bottom="fc1", top="fc2"),
               Softmax("prob", bottom="fc2", top="prob")]
    name = "vgg_small" + ("" if width == 1 else f"_{width:.4g}") + ("" if batch_norm else "_nobn")
    return Net(layers, tuple(input_shape), seed=seed, dtype=dtype, name=name)


ZOO = {"alexnet": alexnet, "caffenet": caffenet, "vgg16": vgg16, "googlenet": googlenet,
       "squeezenet_v1_0": squeezenet_v1_0, "squeezenet_v1_1": squeezenet_v1_1,
       "squeezenet_small": squeezenet_small, "mobilenet_v1": mobilenet_v1,
       "mobilenet_small": mobilenet_small, "inception_v3": inception_v3,
       "resnet_small": resnet_small, "vgg_small": vgg_small}


def data_init(net, x, *, eps=1e-6):
    """Data-dependent initialisation of a freshly built net, in place, from a batch ``x`` of
    training inputs (a few hundred images) → ``net``: LSUV (Mishkin & Matas 2016, "All you need
    is a good init") in one pass, with Krähenbühl et al. 2016's per-channel biases.

    Layer by layer, in the order the net runs, each Conv2d or Linear layer with a dense weight
    (but the one making the logits) is rescaled per output channel so that its output on ``x``
    has variance 1, and its bias, if any, shifted so that the output has mean 0; a BatchNorm's
    running mean becomes its input's per-channel mean (its variance stays: the layer before it
    already outputs variance 1).

    Why the weights and not the batch norms' variances: a batch norm with frozen statistics
    (``use_global_stats``) set to divide by a small variance σ² would multiply the effective
    learning rate of the layer before it by 1/σ² (it diverged at lr 0.02 on a 5k-parameter
    MobileNet). Batch norms that train on batch statistics renormalise anyway; SqueezeNet has
    none, and for it this is what keeps the deep narrow net's signal at unit scale.
    """
    from ..engine import BatchNorm

    x = np.ascontiguousarray(x, dtype=net.dtype)
    if x.ndim != len(net.input_shape) + 1 or x.shape[1:] != net.input_shape or len(x) < 2:
        raise ValueError(f"{net.name}: data_init needs a batch of at least 2 inputs of shape "
                         f"{net.input_shape}, got {x.shape}")
    head = net.producer(net.logits_blob())
    for step in net.run_layers(x, train=False):
        layer = step.layer
        if isinstance(layer, BatchNorm):
            xin = step.inputs[0]
            layer.buffers["mean"][...] = xin.mean(axis=(0,) + tuple(range(2, xin.ndim)))
            step.rerun()
        elif isinstance(layer, (Conv2d, Linear)) and layer is not head \
                and layer.weight_format.kind == "dense":
            y = step.outputs[0]
            axes = (0,) + tuple(range(2, y.ndim))
            mean = y.mean(axis=axes) if layer.bias else np.zeros(y.shape[1], y.dtype)
            var = y.var(axis=axes)
            # a channel constant on x (its inputs all dead) is left unscaled, not blown up
            std = np.where(var > eps, np.sqrt(var), 1.0).astype(y.dtype)
            w = layer.params["weight"]
            w /= std.reshape((-1,) + (1,) * (w.ndim - 1)).astype(w.dtype)
            if layer.bias:
                layer.params["bias"][...] = (layer.params["bias"] - mean) / std
            shape = (1, -1) + (1,) * (y.ndim - 2)
            # what the rescaled layer outputs, without running it again
            step.outputs[0] = ((y - mean.reshape(shape)) / std.reshape(shape)).astype(y.dtype)
    return net


# The width knob of each architecture compact_for_params can size: (argument, smallest, largest).
WIDTH_KNOBS = {"mobilenet_small": ("alpha", 1e-3, 1.0), "squeezenet_small": ("width", 1e-3, 4.0),
               "resnet_small": ("width", 1e-3, 4.0), "vgg_small": ("width", 1e-3, 4.0)}


def compact_for_params(arch, params, **kwargs):
    """Keyword arguments for ``build_zoo(arch, **kwargs)`` whose net has about ``params``
    trainable values (``net.num_params()``): ``kwargs`` (e.g. ``blocks``, ``input_shape``,
    ``num_classes``, which all change the count) with the architecture's width knob (see
    ``WIDTH_KNOBS``: MobileNet's α, SqueezeNet's width) found by bisection on a log scale.

    Channel counts are integers, so the count is a step function of the knob: the closest
    count is returned (rel. error typically < 2% above a few thousand parameters), the knob
    rounded to 4 significant digits. Raises ValueError for an architecture without a knob or a
    count outside what the knob reaches (the message gives the range).
    """
    if arch not in WIDTH_KNOBS:
        raise ValueError(f"compact_for_params: {arch!r} has no width knob; sizable: "
                         f"{sorted(WIDTH_KNOBS)}")
    knob, lo, hi = WIDTH_KNOBS[arch]
    if knob in kwargs:
        raise ValueError(f"compact_for_params: {knob} is what it chooses; do not pass it")
    if not (isinstance(params, (int, float)) and params > 0):
        raise ValueError(f"compact_for_params: params must be a positive number, got {params!r}")

    def count(value):
        return ZOO[arch](**{**kwargs, knob: value}).num_params()

    least, most = count(lo), count(hi)
    if not least <= params <= most:
        raise ValueError(f"compact_for_params: {arch} with {kwargs} has {least:,} to {most:,} "
                         f"parameters ({knob} {lo:g} to {hi:g}); {params:,} is outside")
    for _ in range(40):  # count(lo) ≤ params ≤ count(hi)
        mid = float(np.sqrt(lo * hi))
        if count(mid) <= params:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-4:
            break
    candidates = {float(f"{v:.4g}") for v in (lo, hi)}
    best = min(sorted(candidates), key=lambda v: abs(count(v) - params))
    return {**kwargs, knob: best}


def build_zoo(name, **kwargs):
    """A zoo architecture by name (see ``ZOO``), freshly initialised."""
    if name not in ZOO:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ZOO)}")
    return ZOO[name](**kwargs)
