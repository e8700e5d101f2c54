"""Constant folding at import: ONNX ops whose inputs are all known (initializers, Constant
nodes, the static shape of a tensor) are computed once with NumPy, so that shape arithmetic
(``Shape → Gather → Unsqueeze → Concat → Reshape``, torch's ``x.view(x.size(0), -1)``) and
weights built from initializers (``ConstantOfShape``, ``Unsqueeze`` of a batch norm's scale)
become plain arrays.

Every result's size is checked before it is made (at most MAX_FOLD_VALUES values, and at most
``max_bytes``, ``robustcnn.limits``), so no shape written in a file allocates more than that;
integer arithmetic is done in int64 as ONNX does.
"""

import math

import numpy as np

from ... import limits
from .files import DTYPES, tensor_array

# (2**27 float32 is 512 MiB; the light VGG-19 folds its fc6, 102.8 M values, from one.)
MAX_FOLD_VALUES = 2**27


def _size(shape, at, what="the result", *, itemsize=8, max_bytes=None):
    """The values of a result of ``shape``, refused before it is made when more than
    MAX_FOLD_VALUES or (at ``itemsize`` bytes each) more than ``max_bytes``."""
    count = math.prod(int(s) for s in shape)
    if count > MAX_FOLD_VALUES:
        raise ValueError(f"{at}: {what} would hold {count:,} values (shape {tuple(shape)}), more "
                         f"than {MAX_FOLD_VALUES:,}")
    limits.check_bytes(at, what, count * itemsize, max_bytes)
    return count


def axes_list(axes, rank, at, what="axes"):
    """ONNX axes (negative from the end) → sorted non-negative ints, each in range, no repeat."""
    out = []
    for a in axes:
        a = int(a)
        if not -rank <= a < rank:
            raise ValueError(f"{at}: {what} {list(axes)} out of range for rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ValueError(f"{at}: {what} {list(axes)} repeat an axis")
    return sorted(out)


def ints(array, at, what):
    """A constant as a list of Python ints (shape inputs, axes, pads)."""
    a = np.asarray(array)
    if a.dtype.kind not in "iu" or a.ndim > 1:
        raise ValueError(f"{at}: {what} must be a 1-D integer tensor, got {a.dtype} of shape "
                         f"{a.shape}")
    return [int(v) for v in a.reshape(-1)]


def squeeze_axes(attrs, ins, opset, at):
    """Squeeze/Unsqueeze axes: an attribute before opset 13, the second input since."""
    if opset < 13:
        return attrs.get("axes")
    if len(ins) > 1 and ins[1] is not None:
        if not isinstance(ins[1], np.ndarray):
            raise ValueError(f"{at}: its axes are computed, not constant")
        return ints(ins[1], at, "axes")
    return None


def unsqueezed_shape(shape, axes, at):
    rank = len(shape) + len(axes)
    axes = axes_list(axes, rank, at)
    out, it = [], iter(shape)
    for i in range(rank):
        out.append(1 if i in axes else next(it))
    return tuple(out)


def squeezed_shape(shape, axes, at):
    if axes is None:
        return tuple(s for s in shape if s != 1)
    axes = axes_list(axes, len(shape), at)
    for a in axes:
        if shape[a] != 1:
            raise ValueError(f"{at}: cannot squeeze axis {a} of size {shape[a]}")
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def reshape_shape(in_shape, target, allowzero, at):
    """ONNX Reshape's output shape: 0 copies the input's size (unless ``allowzero``), one -1
    is inferred."""
    target = [int(t) for t in target]
    size = math.prod(in_shape)
    if target.count(-1) > 1 or any(t < -1 for t in target):
        raise ValueError(f"{at}: shape {target} has more than one -1 or a size below -1")
    out = []
    for i, t in enumerate(target):
        if t == 0 and not allowzero:
            if i >= len(in_shape):
                raise ValueError(f"{at}: shape {target} copies axis {i} (0) of a rank "
                                 f"{len(in_shape)} input")
            t = in_shape[i]
        out.append(t)
    known = math.prod(t for t in out if t != -1)
    if -1 in out:
        if known == 0 or size % known:
            raise ValueError(f"{at}: cannot reshape {tuple(in_shape)} to {target}")
        out[out.index(-1)] = size // known
    elif known != size:
        raise ValueError(f"{at}: cannot reshape {tuple(in_shape)} ({size} values) to {target} "
                         f"({known} values)")
    return tuple(out)


def _cast(value, to, at, max_bytes=None):
    if to not in DTYPES:
        raise ValueError(f"{at}: Cast to data type {to} is not supported")
    dtype = np.dtype(DTYPES[to][0]).newbyteorder("=")
    _size(np.shape(value), at, itemsize=dtype.itemsize, max_bytes=max_bytes)
    return np.asarray(value).astype(dtype)


def _broadcast(arrays, at, max_bytes=None):
    try:
        shape = np.broadcast_shapes(*(np.shape(a) for a in arrays))
    except ValueError:
        raise ValueError(f"{at}: shapes {[np.shape(a) for a in arrays]} do not "
                         f"broadcast") from None
    _size(shape, at, itemsize=np.result_type(*arrays).itemsize, max_bytes=max_bytes)
    return shape


def _arith(op, a, b, at, max_bytes=None):
    _broadcast([a, b], at, max_bytes)
    if op == "Div" and np.asarray(a).dtype.kind in "iu":
        if np.any(np.asarray(b) == 0):
            raise ValueError(f"{at}: integer division by zero")
        q = np.asarray(a) // np.asarray(b)
        return q + ((np.asarray(a) % np.asarray(b) != 0) & ((q < 0)))  # truncate toward 0
    with np.errstate(all="ignore"):
        return {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                "Div": np.divide}[op](a, b)


def _slice(data, ins, attrs, opset, at):
    if opset < 10:
        starts, ends = attrs.get("starts"), attrs.get("ends")
        axes, steps = attrs.get("axes"), None
    else:
        starts, ends = ints(ins[1], at, "starts"), ints(ins[2], at, "ends")
        axes = ints(ins[3], at, "axes") if len(ins) > 3 and ins[3] is not None else None
        steps = ints(ins[4], at, "steps") if len(ins) > 4 and ins[4] is not None else None
    if starts is None or ends is None or len(starts) != len(ends):
        raise ValueError(f"{at}: starts and ends must be given, as many of each")
    axes = list(range(len(starts))) if axes is None else axes_list(axes, data.ndim, at)
    steps = steps or [1] * len(starts)
    if len(axes) != len(starts) or len(steps) != len(starts) or 0 in steps:
        raise ValueError(f"{at}: axes, starts, ends and steps disagree (or a step is 0)")
    index = [slice(None)] * data.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        index[a] = slice(*slice(s, e, st).indices(data.shape[a]))
    return data[tuple(index)]


def fold(op, ins, attrs, opset, at, folder, max_bytes=None):
    """The outputs (arrays) of ``op`` on constant inputs, or None when the op is not one to
    fold (the caller then builds engine layers or refuses it). No result is made that would
    take more than ``max_bytes`` (``robustcnn.limits``; its default for None)."""
    x = ins[0] if ins else None
    if op == "Constant":
        if "value" in attrs and attrs["value"] is not None:
            return [tensor_array(attrs["value"], f"{at}: value", folder)]
        for key, kind in (("value_float", np.float32), ("value_int", np.int64),
                          ("value_floats", np.float32), ("value_ints", np.int64)):
            if key in attrs:
                return [np.asarray(attrs[key], dtype=kind)]
        raise ValueError(f"{at}: no value (value, value_float(s) or value_int(s)) it can give")
    if op == "Identity":
        return [x]
    if op == "Shape":
        shape = np.asarray(np.shape(x), dtype=np.int64)
        start, end = attrs.get("start", 0), attrs.get("end", len(shape))
        return [shape[slice(*slice(start, end).indices(len(shape)))]]
    if op == "Size":
        return [np.asarray(np.size(x), dtype=np.int64)]
    if op == "Gather":
        axis = axes_list([attrs.get("axis", 0)], x.ndim, at, "axis")[0]
        idx = np.asarray(ins[1])
        if idx.dtype.kind not in "iu" or np.any(idx < -x.shape[axis]) or \
                np.any(idx >= x.shape[axis]):
            raise ValueError(f"{at}: indices out of range for axis {axis} of size "
                             f"{x.shape[axis]}")
        _size(x.shape[:axis] + idx.shape + x.shape[axis + 1:], at, itemsize=x.dtype.itemsize,
              max_bytes=max_bytes)
        return [np.take(x, idx, axis=axis)]
    if op == "Unsqueeze":
        axes = squeeze_axes(attrs, ins, opset, at)
        if axes is None:
            raise ValueError(f"{at}: needs axes")
        return [np.reshape(x, unsqueezed_shape(np.shape(x), axes, at))]
    if op == "Squeeze":
        return [np.reshape(x, squeezed_shape(np.shape(x), squeeze_axes(attrs, ins, opset, at),
                                             at))]
    if op == "Concat":
        arrays = [np.asarray(a) for a in ins if a is not None]
        if not arrays:
            raise ValueError(f"{at}: no inputs")
        axis = axes_list([attrs.get("axis", 0)], max(arrays[0].ndim, 1), at, "axis")[0]
        if any(a.ndim != arrays[0].ndim for a in arrays):
            raise ValueError(f"{at}: inputs of ranks {[a.ndim for a in arrays]}")
        limits.check_bytes(at, "the result", sum(a.nbytes for a in arrays), max_bytes)
        try:
            return [np.concatenate(arrays, axis=axis)]
        except ValueError as e:
            raise ValueError(f"{at}: {e}") from None
    if op == "Cast":
        return [_cast(x, attrs.get("to"), at, max_bytes)]
    if op == "ConstantOfShape":
        shape = ints(x, at, "shape")
        if any(s < 0 for s in shape):
            raise ValueError(f"{at}: negative size in shape {shape}")
        _size(shape, at)
        value = attrs.get("value")
        fill = tensor_array(value, f"{at}: value", folder) if value is not None \
            else np.zeros(1, np.float32)
        if fill.size != 1:
            raise ValueError(f"{at}: value must hold one value, it holds {fill.size}")
        _size(shape, at, itemsize=fill.dtype.itemsize, max_bytes=max_bytes)
        return [np.full(shape, fill.reshape(-1)[0], dtype=fill.dtype)]
    if op == "Reshape":
        target = ints(ins[1], at, "shape")
        return [np.reshape(x, reshape_shape(np.shape(x), target, attrs.get("allowzero", 0),
                                            at))]
    if op == "Flatten":
        axis = axes_list([attrs.get("axis", 1)], np.ndim(x) + 1, at, "axis")[0]
        return [np.reshape(x, (math.prod(np.shape(x)[:axis]), -1))]
    if op == "Transpose":
        perm = attrs.get("perm") or list(reversed(range(np.ndim(x))))
        if sorted(perm) != list(range(np.ndim(x))):
            raise ValueError(f"{at}: perm {perm} is not a permutation of the {np.ndim(x)} axes")
        return [np.transpose(x, perm)]
    if op in ("Add", "Sub", "Mul", "Div"):
        return [_arith(op, np.asarray(x), np.asarray(ins[1]), at, max_bytes)]
    if op == "Neg":
        return [-np.asarray(x)]
    if op == "Sqrt":
        with np.errstate(all="ignore"):
            return [np.sqrt(x)]
    if op == "Reciprocal":
        with np.errstate(all="ignore"):
            return [1 / np.asarray(x)]
    if op == "Slice":
        return [_slice(np.asarray(x), ins, attrs, opset, at)]
    if op == "Range":
        start, limit, delta = (np.asarray(a).reshape(()) for a in ins[:3])
        if delta == 0:
            raise ValueError(f"{at}: delta is 0")
        _size((max(math.ceil((float(limit) - float(start)) / float(delta)), 0),), at,
              itemsize=np.asarray(start).dtype.itemsize, max_bytes=max_bytes)
        return [np.arange(start, limit, delta, dtype=np.asarray(start).dtype)]
    return None


# The ops ``fold`` computes.
FOLDABLE = ("Constant", "Identity", "Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat",
            "Cast", "ConstantOfShape", "Reshape", "Flatten", "Transpose", "Add", "Sub", "Mul",
            "Div", "Neg", "Sqrt", "Reciprocal", "Slice", "Range")
