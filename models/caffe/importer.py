"""Caffe nets → the engine's ``Net``: the layers of a prototxt, the weights of a caffemodel.

    net = load_caffe("deploy.prototxt", "weights.caffemodel")    # or weights.caffemodel.h5
    net.preprocessing          # the data layer's transform_param (mean, scale, crop), or {}
    net.bounds                 # (0, 255) when a data layer says what the images are
    net.outputs                # the blobs no layer reads: Caffe's net outputs

The one translator of Caffe layers: ``BUILDERS`` maps each Caffe layer type onto engine layers,
with its parameters' defaults taken from the schema (``caffe_subset.proto``), the fillers, and
the TEST-phase rules. It walks a ``Message`` (message.py), which protobuf or the project's own
text-format parser made (``files.read_net``), so it reads a prototxt the same way with or
without protobuf installed. See ``robustcnn.models.caffe`` for the layer types and their
mapping.
"""

import math

import numpy as np

from ... import limits
from ...engine import (LRN, AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, EltwiseMax,
                       EltwiseProd, EltwiseSum, Flatten, GlobalAvgPool2d, Linear, LRNWithin,
                       MaxPool2d, Net, PReLU, ReLU, Reshape, Scale, Softmax)
from .files import layer_type, net_layers, read_net, read_weights, source_name
from .message import Message
from .schema import fields

# Layers that feed data: their first top is the net's input, the others (labels) are dropped.
DATA_TYPES = ("Data", "ImageData", "MemoryData", "HDF5Data", "WindowData", "DummyData")
# Layers with no part in inference: left out.
SKIPPED_TYPES = ("Accuracy", "Silence")
# What a file may declare is bounded by ``max_bytes`` (``robustcnn.limits``), checked layer by
# layer before anything is allocated for it: the weights of the layers so far, and each blob of
# one example (a 224×224 ImageNet net's largest has 3.2 M values; VGG-16 has 138 M weights).
# An input of one example has at most MAX_BLOB_VALUES values, whatever the byte limit.
MAX_BLOB_VALUES = 2**28


def _sub(layer, field):
    """The parameter message ``field`` of a V1 or V2 layer (its defaults if absent or if the
    layer's format has no such field: V1 layers have no flatten_param)."""
    if layer.declares(field):
        return getattr(layer, field)
    return Message(fields()["LayerParameter"][field].type)


def _has(msg, field):
    """Whether ``msg`` has field ``field`` set (False if its type has no such field)."""
    return msg.declares(field) and msg.has(field)


def _hw(p, name, default, at, minimum=0):
    """Caffe's spatial (h, w) fields: ``name`` (repeated: one value, or h and w) or
    ``<stem>_h`` + ``<stem>_w``."""
    stem = name.removesuffix("_size")
    has_h, has_w = _has(p, f"{stem}_h"), _has(p, f"{stem}_w")
    values = p.values(name)
    if has_h or has_w:
        if values or not (has_h and has_w):
            raise ValueError(f"{at}: give either {name} or both {stem}_h and {stem}_w")
        values = [getattr(p, f"{stem}_h"), getattr(p, f"{stem}_w")]
    elif not values:
        if default is None:
            raise ValueError(f"{at}: {name} is required")
        values = [default]
    if len(values) > 2:
        raise ValueError(f"{at}: {name} has {len(values)} values; only 2-D (one value, or h "
                         f"and w) is supported")
    if min(values) < minimum:
        raise ValueError(f"{at}: {name} must be >= {minimum}, got {values}")
    return (values[0], values[-1])


def _filler(p, at):
    """A Caffe weight_filler → the engine's initialiser (used only without a caffemodel)."""
    if not p.has("weight_filler"):
        return "xavier"  # the engine's default; Caffe's would be constant 0
    f = p.weight_filler
    kind = f.type
    if kind in ("xavier", "msra") and f.variance_norm == "FAN_IN":
        return kind
    # Float fields read as the float their file spelled: 0.01, not 0.009999999776482582.
    if kind == "gaussian" and f.mean == 0:
        return f"gaussian:{f.std}"
    if kind == "constant":
        return f"constant:{f.value}"
    return "xavier"  # the engine's initialisers use fan_in only: another variance_norm too


def _axis(axis, rank, at, what="axis"):
    """A Caffe axis (negative counts from the end) of a blob of ``rank`` axes (batch included)."""
    if not -rank <= axis < rank:
        raise ValueError(f"{at}: {what} {axis} is out of range for a blob of {rank} axes")
    return axis % rank


def _not_supported(at, what):
    return ValueError(f"{at}: {what} is not supported yet")


# ---------------------------------------------------------------------------------------------
# One builder per layer type: (name, layer message, at, io, in_shapes) → engine layers.
# ``io`` holds the engine layer's bottom and top; in_shapes are per example (no batch axis).


def _convolution(name, layer, at, io, shapes):
    p = layer.convolution_param
    if not p.has("num_output") or p.num_output < 1:
        raise ValueError(f"{at}: convolution_param.num_output must be given and >= 1")
    if len(shapes[0]) != 3 or _axis(p.axis, len(shapes[0]) + 1, at) != 1:
        raise _not_supported(at, f"a convolution over axis {p.axis} of a "
                                 f"{len(shapes[0]) + 1}-axis blob (only 2-D, channels at axis 1)")
    dilation = list(p.dilation) or [1]
    if len(dilation) > 2 or min(dilation) < 1:
        raise ValueError(f"{at}: dilation must be one or two integers >= 1, got {dilation}")
    if p.group < 1:
        raise ValueError(f"{at}: group must be >= 1, got {p.group}")
    kernel = _hw(p, "kernel_size", None, at, 1)
    return [Conv2d(name, p.num_output, kernel=kernel, stride=_hw(p, "stride", 1, at, 1),
                   padding=_hw(p, "pad", 0, at), dilation=(dilation[0], dilation[-1]),
                   groups=p.group, bias=p.bias_term, weight_init=_filler(p, at), **io)]


def _inner_product(name, layer, at, io, shapes):
    p = layer.inner_product_param
    if not p.has("num_output") or p.num_output < 1:
        raise ValueError(f"{at}: inner_product_param.num_output must be given and >= 1")
    if _axis(p.axis, len(shapes[0]) + 1, at) != 1:
        raise _not_supported(at, f"inner_product_param.axis {p.axis} (an inner product over "
                                 f"trailing axes only; axis 1 is)")
    return [Linear(name, p.num_output, bias=p.bias_term, weight_init=_filler(p, at), **io)]


def _pooling(name, layer, at, io, shapes):
    p = layer.pooling_param
    kind = p.pool
    if kind not in ("MAX", "AVE"):
        raise _not_supported(at, f"pool {kind}")
    if len(shapes[0]) != 3:
        raise ValueError(f"{at}: pooling needs a (C, H, W) input, got {shapes[0]}")
    if p.global_pooling:
        if _hw(p, "pad", 0, at) != (0, 0) or _hw(p, "stride", 1, at, 1) != (1, 1):
            raise ValueError(f"{at}: global pooling takes no pad or stride (as in Caffe)")
        if kind == "AVE":
            return [GlobalAvgPool2d(name, **io)]
        return [MaxPool2d(name, kernel=shapes[0][1:], stride=1, **io)]
    ceil = p.round_mode == "CEIL"
    return [(MaxPool2d if kind == "MAX" else AvgPool2d)(
        name, kernel=_hw(p, "kernel_size", None, at, 1), stride=_hw(p, "stride", 1, at, 1),
        padding=_hw(p, "pad", 0, at), ceil_mode=ceil, **io)]


def _relu(name, layer, at, io, shapes):
    slope = layer.relu_param.negative_slope
    if slope < 0:
        raise _not_supported(at, f"a negative negative_slope ({slope})")
    return [ReLU(name, negative_slope=slope, **io)]


def _prelu(name, layer, at, io, shapes):
    p = _sub(layer, "prelu_param")
    init = p.filler.value if p.has("filler") and p.filler.type == "constant" else 0.25
    if len(shapes[0]) not in (1, 3):
        raise ValueError(f"{at}: PReLU needs a (C,) or (C, H, W) input, got {shapes[0]}")
    return [PReLU(name, channel_shared=p.channel_shared, init=init, **io)]


def _lrn(name, layer, at, io, shapes):
    p = layer.lrn_param
    if p.norm_region == "WITHIN_CHANNEL":
        if len(shapes[0]) != 3:
            raise ValueError(f"{at}: LRN within channels needs a (C, H, W) input, got "
                             f"{shapes[0]}")
        return [LRNWithin(name, local_size=p.local_size, alpha=p.alpha, beta=p.beta, **io)]
    return [LRN(name, local_size=p.local_size, alpha=p.alpha, beta=p.beta, k=p.k, **io)]


def _dropout(name, layer, at, io, shapes):
    return [Dropout(name, p=layer.dropout_param.dropout_ratio, **io)]


def _softmax(name, layer, at, io, shapes):
    axis = _axis(layer.softmax_param.axis, len(shapes[0]) + 1, at)
    if axis != 1 or len(shapes[0]) not in (1, 3):
        raise _not_supported(at, f"a softmax over axis {layer.softmax_param.axis} of a "
                                 f"{shapes[0]} blob; the engine's Softmax is over axis 1 of "
                                 f"(K,) or (K, H, W) (one per position)")
    return [Softmax(name, **io)]


def _concat(name, layer, at, io, shapes):
    p = layer.concat_param
    axis = p.axis if p.has("axis") or not p.has("concat_dim") else p.concat_dim
    axis = _axis(axis, len(shapes[0]) + 1, at)
    if axis == 0:
        raise _not_supported(at, "concatenation along the batch axis")
    return [Concat(name, axis=axis, **io)]


def _eltwise(name, layer, at, io, shapes):
    p = layer.eltwise_param
    op = p.operation
    coeffs = list(p.coeff)
    if coeffs and op != "SUM":
        raise ValueError(f"{at}: coefficients are for SUM only (as in Caffe), got {op}")
    if coeffs and len(coeffs) != len(io["bottom"]):
        raise ValueError(f"{at}: {len(coeffs)} coefficients for {len(io['bottom'])} bottoms")
    if op == "SUM":
        return [EltwiseSum(name, coeffs=coeffs or None, **io)]
    return [(EltwiseProd if op == "PROD" else EltwiseMax)(name, **io)]


def _batch_norm(name, layer, at, io, shapes):
    p = _sub(layer, "batch_norm_param")
    if p.has("use_global_stats") and not p.use_global_stats:
        raise _not_supported(at, "use_global_stats: false (batch statistics at inference)")
    # Not set: Caffe's default, batch statistics in training (our train mode) and running ones
    # at inference; true: frozen statistics in training too.
    return [BatchNorm(name, eps=p.eps, affine=False, momentum=p.moving_average_fraction,
                      use_global_stats=bool(p.use_global_stats), **io)]


def _scale(name, layer, at, io, shapes):
    p = _sub(layer, "scale_param")
    if len(io["bottom"]) != 1:
        raise _not_supported(at, "a Scale by a second bottom")
    if _axis(p.axis, len(shapes[0]) + 1, at) != 1 or p.num_axes != 1:
        raise _not_supported(at, f"a Scale over axis {p.axis} with num_axes {p.num_axes} (one "
                                 f"factor per channel, axis 1 and num_axes 1, is)")
    return [Scale(name, bias=p.bias_term, **io)]


def _flatten(name, layer, at, io, shapes):
    p = _sub(layer, "flatten_param")
    full = (None,) + tuple(shapes[0])
    start = _axis(p.axis, len(full), at)
    end = _axis(p.end_axis, len(full), at, "end_axis")
    if start == 0:
        raise _not_supported(at, "flattening the batch axis")
    if start == 1 and end == len(full) - 1:
        return [Flatten(name, **io)]
    if end < start:
        raise ValueError(f"{at}: end_axis {p.end_axis} comes before axis {p.axis}")
    out = full[1:start] + (math.prod(full[start:end + 1]),) + full[end + 1:]
    return [Reshape(name, out, **io)]


def _reshape(name, layer, at, io, shapes):
    """Caffe's Reshape: axes [axis, axis + num_axes) of the blob (batch included) become
    ``shape.dim``; a 0 copies the input's size at that axis, one -1 is inferred."""
    p = _sub(layer, "reshape_param")
    full = (None,) + tuple(shapes[0])
    start = p.axis if p.axis >= 0 else p.axis + len(full) + 1  # Caffe: -1 is after the last
    if not 0 <= start <= len(full):
        raise ValueError(f"{at}: axis {p.axis} is out of range for a {len(full)}-axis blob")
    end = len(full) if p.num_axes == -1 else start + p.num_axes
    if p.num_axes < -1 or end > len(full):
        raise ValueError(f"{at}: num_axes {p.num_axes} does not fit a {len(full)}-axis blob "
                         f"from axis {start}")
    dims = [int(d) for d in p.shape.dim]
    if any(d < -1 for d in dims) or dims.count(-1) > 1:
        raise ValueError(f"{at}: shape {dims} must hold sizes >= 0 and at most one -1")
    new = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= len(full):
                raise ValueError(f"{at}: dim {i} is 0 (copy) but the input has no axis "
                                 f"{start + i}")
            new.append(full[start + i])
        else:
            new.append(d)
    out = list(full[:start]) + new + list(full[end:])
    if len(out) < 2:
        raise ValueError(f"{at}: shape {dims} leaves no axis after the batch")
    if out[0] is not None:  # the batch axis was replaced: it must still be the batch
        if out[0] != -1:
            raise _not_supported(at, f"a reshape of the batch axis to {out[0]}")
        out[0] = None
    return [Reshape(name, tuple(-1 if s is None else s for s in out[1:]), **io)]


BUILDERS = {
    "Convolution": _convolution, "InnerProduct": _inner_product, "Pooling": _pooling,
    "ReLU": _relu, "PReLU": _prelu, "LRN": _lrn, "Dropout": _dropout, "Softmax": _softmax,
    "SoftmaxWithLoss": _softmax, "Concat": _concat, "Eltwise": _eltwise,
    "BatchNorm": _batch_norm, "Scale": _scale, "Flatten": _flatten, "Reshape": _reshape,
}


# ---------------------------------------------------------------------------------------------
# Phase rules and inputs


def _rule_met(rule):
    """Caffe's StateMeetsRule for the TEST phase at level 0 with no stages."""
    if rule.has("phase") and rule.phase != "TEST":
        return False
    if rule.has("min_level") and rule.min_level > 0:
        return False
    if rule.has("max_level") and rule.max_level < 0:
        return False
    return not len(rule.stage)  # a required stage is never set


def _in_test_phase(layer, at):
    """Whether Caffe's FilterNet keeps ``layer`` in the TEST phase."""
    if len(layer.include) and len(layer.exclude):
        raise ValueError(f"{at}: has both include and exclude rules (Caffe refuses them)")
    if _has(layer, "phase") and layer.phase != "TEST":
        return False
    included = not len(layer.include)
    if any(_rule_met(r) for r in layer.exclude):
        return False
    return included or any(_rule_met(r) for r in layer.include)


def _header_inputs(msg, source):
    """(name, full shape) for the inputs declared at the top of the file."""
    names = list(msg.input)
    if not names:
        if len(msg.input_shape) or len(msg.input_dim):
            raise ValueError(f"{source}: input_shape/input_dim without 'input:'")
        return []
    if len(msg.input_shape) and len(msg.input_dim):
        raise ValueError(f"{source}: give either input_dim or input_shape, not both (as Caffe "
                         f"requires)")
    if len(msg.input_shape):
        if len(msg.input_shape) != len(names):
            raise ValueError(f"{source}: {len(names)} inputs but {len(msg.input_shape)} "
                             f"input_shape entries")
        return [(n, tuple(int(d) for d in s.dim)) for n, s in zip(names, msg.input_shape)]
    dims = list(msg.input_dim)
    if len(dims) != 4 * len(names):
        need = "s need" if len(names) > 1 else " needs"
        raise ValueError(f"{source}: {len(names)} input{need} {4 * len(names)} input_dim "
                         f"values (four positive integers N, C, H, W each), found {len(dims)}")
    return [(n, tuple(dims[4 * i:4 * i + 4])) for i, n in enumerate(names)]


def _preprocessing(layer):
    """A data layer's transform_param in the terms of ``engine.preprocess`` (what Caffe did to
    the images: (pixel − mean) · scale, a centred crop at test time), or {}. ``mirror`` is a
    training augmentation and is left out; a ``mean_file`` is recorded, not applied."""
    if not _has(layer, "transform_param"):
        return {}
    t = layer.transform_param
    out = {"mean": [float(v) for v in t.mean_value], "scale": float(t.scale),
           "crop": int(t.crop_size), "mean_file": t.mean_file if t.has("mean_file") else ""}
    return {k: v for k, v in out.items() if (v != 1.0 if k == "scale" else v)}


def _bounds(layer):
    """Caffe's data layers read images as bytes: (0, 255) when the layer transforms them."""
    return (0.0, 255.0) if _has(layer, "transform_param") else None


def _net_outputs(layers):
    """Caffe's outputs: the blobs no layer reads after their last write, in order."""
    pending = {}
    for layer in layers:
        for b in layer.bottom or []:
            pending.pop(b, None)
        for top in layer.top or [layer.name]:
            pending.pop(top, None)
            pending[top] = True
    return list(pending)


def _data_shape(layer, ltype):
    """The full input shape a data layer declares, where it declares one: MemoryData's and
    DummyData's sizes, an ImageData or WindowData crop (or ImageData's resize) of colour or
    grey images. None otherwise (an LMDB or HDF5 source holds its own sizes)."""
    crop = layer.transform_param.crop_size if _has(layer, "transform_param") else 0
    if ltype == "MemoryData" and _has(layer, "memory_data_param"):
        p = layer.memory_data_param
        return (1, p.channels, p.height, p.width)
    if ltype == "DummyData" and _has(layer, "dummy_data_param"):
        p = layer.dummy_data_param
        if len(p.shape):
            return tuple(int(d) for d in p.shape[0].dim)
        if len(p.channels) and len(p.height) and len(p.width):
            return (1, p.channels[0], p.height[0], p.width[0])
    if ltype == "ImageData" and _has(layer, "image_data_param"):
        p = layer.image_data_param
        channels = 3 if p.is_color else 1
        if crop:
            return (1, channels, crop, crop)
        if p.new_height and p.new_width:
            return (1, channels, p.new_height, p.new_width)
    if ltype == "WindowData" and _has(layer, "window_data_param"):
        size = crop or layer.window_data_param.crop_size
        if size:
            return (1, 3, size, size)
    return None


def _per_example(shape, at, max_values):
    if len(shape) < 2:
        raise ValueError(f"{at}: input shape {shape} needs a batch axis and at least one more")
    per = tuple(int(s) for s in shape[1:])
    if any(s < 1 for s in per) or math.prod(per) > MAX_BLOB_VALUES:
        raise ValueError(f"{at}: input shape {shape} must have sizes >= 1 and at most "
                         f"{MAX_BLOB_VALUES:,} values per example")
    if math.prod(per) > max_values:
        raise ValueError(f"{at}: input shape {shape} has {math.prod(per):,} values per example, "
                         f"more than the limit of {max_values:,} ({limits.RAISE_HINT})")
    return per


# ---------------------------------------------------------------------------------------------
# Weights


def _expected_blobs(layer):
    """{blob index: (engine state key, expected shape)} for an engine layer's weights."""
    if isinstance(layer, Conv2d):
        spec = {0: ("weight", layer.weight_shape)}
    elif isinstance(layer, Linear):
        spec = {0: ("weight", layer.weight_shape)}
    elif isinstance(layer, BatchNorm):
        C = layer.buffers["mean"].shape
        return {0: ("mean", C), 1: ("var", C), 2: ("factor", (1,))}
    elif isinstance(layer, Scale):
        spec = {0: ("weight", layer.params["weight"].shape)}
    elif isinstance(layer, PReLU):
        return {0: ("slope", layer.params["slope"].shape)}
    else:
        return {}
    if getattr(layer, "bias", False):
        spec[1] = ("bias", layer.params["bias"].shape)
    return spec


def _shape_matches(found, expected, legacy):
    """Caffe's check: the same shape, or — for a blob shaped by the legacy 4-D fields, or a
    scalar — the same sizes once both are padded with leading 1s."""
    found, expected = tuple(found), tuple(expected)
    if found == expected:
        return True
    if legacy or len(found) <= 1 or len(expected) <= 1:
        return _strip_ones(found) == _strip_ones(expected)
    return False


def _strip_ones(shape):
    """A shape without its leading 1s."""
    first = next((i for i, d in enumerate(shape) if d != 1), len(shape))
    return tuple(shape[first:])


def _layer_state(layer, blobs, at, transpose=False):
    """The engine state {key: array} of one layer from its Caffe blobs, shapes checked."""
    spec = _expected_blobs(layer)
    if len(blobs) != len(spec):
        raise ValueError(f"{at}: has {len(blobs)} blob(s), the prototxt implies {len(spec)}")
    state = {}
    for k, (key, expected) in spec.items():
        blob, legacy = blobs[k]
        want = expected
        if key == "weight" and transpose:
            want = tuple(reversed(expected))
        if not _shape_matches(blob.shape, want, legacy):
            raise ValueError(f"{at}: blob {k} ({key}) has shape {tuple(blob.shape)}, the "
                             f"prototxt implies {tuple(want)}")
        try:
            value = blob.read() if hasattr(blob, "read") else blob
        except OSError as e:  # a damaged HDF5 file
            raise ValueError(f"{at}: cannot read blob {k} ({e})") from None
        value = np.asarray(value).reshape(want)
        if key == "weight" and transpose:
            value = value.T
        state[key] = value
    if isinstance(layer, BatchNorm):  # Caffe stores the sums times a moving-average factor
        factor = float(state.pop("factor").reshape(-1)[0])
        if not np.isfinite(factor) or factor < 0:
            raise ValueError(f"{at}: moving-average factor (blob 2) is {factor}, expected "
                             f"finite and >= 0")
        inv = 0.0 if factor == 0 else 1.0 / factor
        state["mean"] = state["mean"] * inv
        state["var"] = state["var"] * inv
        # A variance below 0 (or an overflowing one) would make every output NaN.
        if not (np.isfinite(state["mean"]).all() and np.isfinite(state["var"]).all()
                and (state["var"] >= 0).all()):
            raise ValueError(f"{at}: the stored statistics over the moving-average factor "
                             f"{factor} give a non-finite mean or a variance that is not "
                             f"finite and >= 0 (min variance {float(np.min(state['var']))})")
    return state


# ---------------------------------------------------------------------------------------------
# The importer


def _describe(source, index, layer):
    """(type, name, "file: name (type)") of a layer; a layer without a name is called after its
    type and place (``relu3``)."""
    ltype = layer_type(layer)
    if not ltype:
        raise ValueError(f"{source}: layer {index} ({layer.name or 'no name'}) has no type")
    lname = layer.name or f"{ltype.lower()}{index}"
    return ltype, lname, f"{source}: {lname} ({ltype})"


def _find_input(msg, layers, source, input_shape, max_values):
    """(input blob name, per-example shape, preprocessing) from the header or the TEST-phase
    Input/Data layers; one input only."""
    inputs = [(n, s, None) for n, s in _header_inputs(msg, source)]
    preprocessing, bounds = {}, None
    for index, layer in layers:
        ltype, _, at = _describe(source, index, layer)
        if (ltype != "Input" and ltype not in DATA_TYPES) or not _in_test_phase(layer, at):
            continue
        if not len(layer.top):
            raise ValueError(f"{at}: has no top")
        if ltype == "Input":
            declared = [tuple(int(d) for d in s.dim) for s in _sub(layer, "input_param").shape]
            if len(declared) not in (1, len(layer.top)):
                raise ValueError(f"{at}: {len(layer.top)} tops but {len(declared)} shapes")
            for i, top in enumerate(layer.top):
                inputs.append((top, declared[min(i, len(declared) - 1)], at))
        else:  # a data layer: its first top is the images, the others are labels
            inputs.append((layer.top[0], _data_shape(layer, ltype), at))
            preprocessing, bounds = _preprocessing(layer), _bounds(layer)
    if not inputs:
        raise ValueError(f"{source}: no input: give 'input:' with 'input_dim:' or "
                         f"'input_shape', or an Input layer")
    if len(inputs) > 1:
        raise _not_supported(source, f"a net with {len(inputs)} inputs "
                                     f"({[n for n, _, _ in inputs]}); one input")
    name, shape, at = inputs[0]
    if input_shape is not None:
        return name, _per_example((1,) + tuple(input_shape), f"{source}: input_shape",
                                  max_values), preprocessing, bounds
    if shape is None:
        raise ValueError(f"{at}: the input {name!r} comes from a data layer and has no declared "
                         f"shape: pass input_shape=(C, H, W)")
    return name, _per_example(shape, at or f"{source}: input {name!r}", max_values), \
        preprocessing, bounds


def _bias_values(layer):
    """The bias values of a Conv2d or Linear (0 for other layers and without a bias)."""
    if getattr(layer, "bias", None) is not True:
        return 0
    return int(getattr(layer, "out_channels", None) or getattr(layer, "out_features", 0))


def load_caffe(prototxt, caffemodel=None, *, input_shape=None, dtype=np.float32, name=None,
               seed=0, parser="auto", init=None, max_bytes=None):
    """A Caffe net as an engine ``Net``, with the weights of ``caffemodel`` if given.

    ``prototxt``: a path, or the text itself (a str holding a newline or ``{``), or bytes; read
    by protobuf if installed, else by the project's parser (``parser``: "auto", "protobuf" or
    "text", as ``read_net``). ``caffemodel``: a binary ``.caffemodel`` (needs protobuf: an
    ImportError says so), a ``.caffemodel.h5`` (Caffe's HDF5 weights) or None (weights drawn
    from the prototxt's fillers). ``input_shape``: the per-example input shape (C, H, W),
    required for nets fed by a Data layer, and otherwise replacing the declared one (the batch
    size in the file is ignored). The TEST phase of the net is built. The result has
    ``net.preprocessing``: the data layer's ``transform_param`` as ``engine.preprocess`` says
    it ({"mean": [...], "scale": s, "crop": n}) or {} (``read_mean_file`` reads a
    ``mean_file``), and ``net.bounds`` (0, 255) with it; both are in the net's spec, so model
    files and ``Net.copy`` keep them. ``net.outputs`` are Caffe's net outputs (the blobs no
    layer reads), the last layer's first; ``net.with_output(name)`` attacks any of them.
    ``init``: draw the weights from the fillers (default: only without a
    caffemodel; False leaves zeros for weights set afterwards). ``max_bytes`` bounds the
    weights the prototxt declares (with their dtype), each blob of one example and the weights
    file (``robustcnn.limits``); every layer is checked before anything is allocated for it.

    Every problem raises ValueError naming the file, the layer and what was expected vs found.
    """
    source = source_name(prototxt, "prototxt")
    max_bytes, itemsize = limits.resolve(max_bytes), np.dtype(dtype).itemsize
    msg = read_net(prototxt, parser=parser)
    all_layers = list(enumerate(net_layers(msg, source)))
    input_name, in_shape, preprocessing, bounds = _find_input(msg, all_layers, source,
                                                              input_shape, max_bytes // itemsize)
    shapes = {input_name: in_shape}  # per-example shape of every blob, as the layers go
    alias = {}  # Split tops → the blob they copy
    transposed = set()
    layers, seen = [], set()
    total_bytes = 0
    for index, layer in all_layers:
        ltype, lname, at = _describe(source, index, layer)
        if not _in_test_phase(layer, at):
            continue  # (a train/val file names its TRAIN and TEST data layers alike)
        if lname in seen:
            raise ValueError(f"{at}: two layers are named {lname!r}")
        seen.add(lname)
        if ltype == "Input" or ltype in DATA_TYPES or ltype in SKIPPED_TYPES:
            continue
        bottom = [alias.get(b, b) for b in layer.bottom]
        top = list(layer.top)
        if ltype == "SoftmaxWithLoss":  # at inference: the probabilities of its first bottom
            bottom = bottom[:1]
            top = top or [lname]
        for b in bottom:
            if b not in shapes:
                raise ValueError(f"{at}: bottom {b!r} is not made by any earlier layer (a data "
                                 f"layer's labels are not kept)")
        if ltype == "Split":
            if len(bottom) != 1:
                raise ValueError(f"{at}: a Split takes one bottom, got {bottom}")
            alias.update((t, bottom[0]) for t in top)
            continue
        if ltype not in BUILDERS:
            raise ValueError(f"{at}: layer type {ltype!r} is not supported (supported: Input, "
                             f"{', '.join(DATA_TYPES)}, Split, {', '.join(sorted(BUILDERS))})")
        if not bottom:
            raise ValueError(f"{at}: has no bottom")
        if len(top) != 1:
            raise ValueError(f"{at}: expected one top, got {top}")
        io = dict(bottom=bottom, top=top[0])
        try:
            made = BUILDERS[ltype](lname, layer, at, io, [shapes[b] for b in bottom])
            for engine_layer in made:
                in_shapes = [shapes[b] for b in engine_layer.bottom]
                values = engine_layer.param_values(in_shapes)
                total_bytes += values * itemsize
                if values * itemsize > max_bytes:
                    weights = values - _bias_values(engine_layer)
                    raise ValueError(f"{at}: declares {weights:,} weights ({values:,} values "
                                     f"with its biases), more than the limit of {max_bytes:,} "
                                     f"bytes holds ({limits.RAISE_HINT})")
                if total_bytes > max_bytes:
                    raise ValueError(f"{at}: the net's weights reach {total_bytes:,} bytes at "
                                     f"this layer, more than the limit of {max_bytes:,} "
                                     f"({limits.RAISE_HINT})")
                out = engine_layer.setup(in_shapes, dtype)
                if math.prod(out[0]) * itemsize > max_bytes:
                    raise ValueError(f"{at}: output shape {out[0]} takes more than the limit of "
                                     f"{max_bytes:,} bytes per example ({limits.RAISE_HINT})")
                shapes[top[0]] = out[0]
        except ValueError as e:  # the engine's own checks name the layer but not the file
            raise (e if str(e).startswith(source) else ValueError(f"{source}: {e}")) from None
        except (IndexError, KeyError, TypeError, OverflowError, ZeroDivisionError) as e:
            # a combination of fields not foreseen
            raise ValueError(f"{at}: cannot be built ({e!r})") from None
        alias.pop(top[0], None)
        if ltype == "InnerProduct" and layer.inner_product_param.transpose:
            transposed.add(lname)
        layers.extend(made)
    if not layers:
        raise ValueError(f"{source}: no layers to build")
    outputs = _net_outputs(layers)
    last = layers[-1].top[0] if layers[-1].top else layers[-1].name
    if bounds is not None and in_shape[0] == 3:
        preprocessing["channel_order"] = "bgr"  # Caffe's image tools read with OpenCV
    try:
        net = Net(layers, in_shape, input_name=input_name, dtype=dtype, seed=seed,
                  name=name or msg.name or "caffe", outputs=[last] + outputs,
                  preprocessing=preprocessing, bounds=bounds,
                  init=caffemodel is None if init is None else init, max_bytes=max_bytes)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    if caffemodel is not None:
        _load_weights(net, caffemodel, transposed, max_bytes)
    return net


def _load_weights(net, caffemodel, transposed, max_bytes=None):
    """Copy the blobs of ``caffemodel`` (binary or HDF5) into the layers of ``net`` with the
    same names, every shape checked; layers of the file that the net lacks are ignored (as
    Caffe does), a net layer with weights that the file lacks is an error. ``transposed``:
    names of the InnerProduct layers whose blob is stored (in, out)."""
    source = source_name(caffemodel, "caffemodel")
    weights = read_weights(caffemodel, max_bytes=max_bytes)
    state, missing = {}, []
    for layer in net.layers:
        spec = _expected_blobs(layer)
        if not spec:
            continue
        if layer.name not in weights:
            missing.append(layer.name)
            continue
        at = f"{source}: {layer.at}"
        for key, value in _layer_state(layer, weights[layer.name], at,
                                       transpose=layer.name in transposed).items():
            state[f"{layer.name}/{key}"] = value.astype(net.dtype)
    if missing:
        raise ValueError(f"{source}: no weights for the layer(s) {missing} of the prototxt "
                         f"(layers with weights in the file: {sorted(weights)[:20]})")
    net.load_state_dict(state, source=source)
    return net
