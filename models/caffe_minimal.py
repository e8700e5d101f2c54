"""A minimal reader of Caffe's prototxt (protobuf text format) and the Net it describes.

Enough for deploy files such as SqueezeNet's; the full importer (``.caffemodel`` weights through
protobuf, every layer type) is a separate piece of work. Nothing here imports Caffe or protobuf.

    net = net_from_prototxt("SqueezeNet_deploy.prototxt")   # a path, or the text itself
    msg = parse_prototxt(text)       # {"name": ["FireNet"], "layer": [{...}, ...], ...}

**Text format.** A message is a sequence of fields ``key: value`` or ``key { message }`` (the
colon before ``{`` is optional, ``<``/``>`` may stand for the braces), separated by white space
and optionally ``,`` or ``;``; ``#`` starts a comment. Values are quoted strings (``"…"`` or
``'…'`` with C escapes), numbers (``3``, ``-0.5``, ``1e-4``, ``0x1F``, ``inf``), ``true``/
``false`` and enum names (``MAX``), returned as str. A repeated scalar may be written as a list,
``dim: [1, 3, 227, 227]``. Every key maps to the list of its values in file order, since any
field may be repeated (``bottom``, ``input_dim``, ``layer``).

**Layers.** The input comes from the header (``input:`` with four ``input_dim:`` or an
``input_shape { dim: … }``) or an ``Input`` layer; the batch size in it is ignored. Supported
types: Convolution, InnerProduct, ReLU, Pooling (MAX/AVE, ``global_pooling`` for AVE;
``round_mode: FLOOR`` selects floor mode, Caffe's default ceil mode otherwise), Concat, Dropout,
Softmax. Layers whose ``include``/``exclude`` rules leave them out of the TEST phase are skipped.
Caffe's Softmax works over axis 1 of any blob; the engine's Softmax takes (K,) per example, so a
``Flatten`` named ``<softmax>/flatten`` is put before it, and a Softmax over (C, H, W) with
H·W > 1 (one softmax per position) is refused. Weight fillers map to the engine's initialisers
(xavier, msra, gaussian, constant); weights are not read from the prototxt.
"""

import math
import os
import re

import numpy as np

from ..engine import (AvgPool2d, Concat, Conv2d, Dropout, Flatten, GlobalAvgPool2d, Linear,
                      MaxPool2d, Net, ReLU, Softmax)

# ---------------------------------------------------------------------------------------------
# Text format

_TOKEN = re.compile(r"""
      (?P<space>[ \t\r\f\v]+|\#[^\n]*)
    | (?P<newline>\n)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?)(?![\w.]))
    | (?P<word>[-+]?[A-Za-z_][\w.]*)
    | (?P<punct>[{}<>:\[\],;])
""", re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
            "\\": "\\", "'": "'", '"': '"', "?": "?"}


def _unquote(token, where):
    body, out, i = token[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1]  # the token regex guarantees a character after every backslash
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group()
            out.append(chr(int(digits, 8)))
            i += 1 + len(digits)
        elif nxt in "xX" and re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:]):
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:]).group()
            out.append(chr(int(digits, 16)))
            i += 2 + len(digits)
        else:
            raise ValueError(f"{where}: unknown escape \\{nxt} in string {token}")
    return "".join(out)


def _number(text):
    if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", text):
        return int(text, 16)
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    return float(text.rstrip("fF"))


def _tokens(text, source):
    """(kind, value, line) for every token; raises ValueError at the first unreadable character."""
    line, pos = 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"{source}:{line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup
        if kind == "newline":
            line += 1
        elif kind != "space":
            yield kind, m.group(), line
        pos = m.end()


_WORD_VALUES = {"true": True, "True": True, "false": False, "False": False, "inf": math.inf,
                "+inf": math.inf, "-inf": -math.inf, "infinity": math.inf,
                "-infinity": -math.inf, "nan": math.nan}


class _Parser:
    def __init__(self, text, source):
        self.toks = list(_tokens(text, source))
        self.i = 0
        self.source = source

    def where(self):
        line = self.toks[min(self.i, len(self.toks) - 1)][2] if self.toks else 1
        return f"{self.source}:{line}"

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None, None)

    def take(self):
        tok = self.peek()
        if tok[0] is None:
            raise ValueError(f"{self.where()}: unexpected end of text")
        self.i += 1
        return tok

    def message(self, close=None):
        msg = {}
        while True:
            kind, value, _ = self.peek()
            if kind is None:
                if close:
                    raise ValueError(f"{self.where()}: missing {close!r} at the end of the text")
                return msg
            if kind == "punct" and value == close:
                self.i += 1
                return msg
            if kind != "word":
                raise ValueError(f"{self.where()}: expected a field name, found {value!r}")
            key = self.take()[1]
            kind, value, _ = self.peek()
            colon = kind == "punct" and value == ":"
            if colon:
                self.i += 1
                kind, value, _ = self.peek()
            if kind == "punct" and value in "{<":
                self.i += 1
                msg.setdefault(key, []).append(self.message("}" if value == "{" else ">"))
            elif not colon:
                raise ValueError(f"{self.where()}: expected ':' or '{{' after {key!r}, "
                                 f"found {value!r}")
            elif kind == "punct" and value == "[":
                self.i += 1
                msg.setdefault(key, []).extend(self.scalar_list(key))
            else:
                msg.setdefault(key, []).append(self.scalar(key))
            kind, value, _ = self.peek()
            if kind == "punct" and value in ",;":
                self.i += 1

    def scalar_list(self, key):
        values = []
        while True:
            kind, value, _ = self.peek()
            if kind == "punct" and value == "]" and not values:
                self.i += 1
                return values
            values.append(self.scalar(key))
            kind, value, line = self.take()
            if (kind, value) == ("punct", "]"):
                return values
            if (kind, value) != ("punct", ","):
                raise ValueError(f"{self.source}:{line}: expected ',' or ']' in the list {key!r}, "
                                 f"found {value!r}")

    def scalar(self, key):
        kind, value, line = self.take()
        where = f"{self.source}:{line}"
        if kind == "string":
            parts = [_unquote(value, where)]
            while self.peek()[0] == "string":  # adjacent strings concatenate
                kind, value, line = self.take()
                parts.append(_unquote(value, f"{self.source}:{line}"))
            return "".join(parts)
        if kind == "number":
            return _number(value)
        if kind == "word":
            return _WORD_VALUES.get(value, value)
        raise ValueError(f"{where}: expected a value for {key!r}, found {value!r}")


def parse_prototxt(text, *, source="<prototxt>"):
    """Parse protobuf text format → {key: [value, …]} with nested messages as dicts.

    Raises ValueError naming ``source`` and the line for malformed text.
    """
    return _Parser(text, source).message()


def _read_source(text_or_path):
    """(text, source name): a path-like, or a str without '{' or a newline, is read as a file."""
    is_text = isinstance(text_or_path, str) and ("{" in text_or_path or "\n" in text_or_path)
    if isinstance(text_or_path, os.PathLike) or (isinstance(text_or_path, str) and not is_text):
        path = os.fspath(text_or_path)
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    if isinstance(text_or_path, bytes):
        text_or_path = text_or_path.decode("utf-8")
    if not isinstance(text_or_path, str):
        raise TypeError(f"expected prototxt text or a path, got {type(text_or_path).__name__}")
    return text_or_path, "<prototxt>"


# ---------------------------------------------------------------------------------------------
# Fields of a parsed message


def _one(msg, key, default, at, kinds=(int, float, str, bool)):
    """The single value of ``key`` (the last one if repeated, as protobuf does), or ``default``."""
    values = msg.get(key)
    if not values:
        return default
    value = values[-1]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = "/".join(k.__name__ for k in kinds)
        raise ValueError(f"{at}: {key} must be {expected}, got {value!r}")
    return value


def _int(msg, key, default, at, minimum=0):
    value = _one(msg, key, default, at, (int,))
    if value is not None and value < minimum:
        raise ValueError(f"{at}: {key} must be >= {minimum}, got {value}")
    return value


def _hw(param, name, default, at, minimum=0):
    """Caffe's (h, w) fields: ``name`` (once, or twice for h and w) or ``<stem>_h`` +
    ``<stem>_w`` (``kernel_size`` → ``kernel_h``, ``stride`` → ``stride_h``)."""
    stem = name.removesuffix("_size")
    h = _int(param, f"{stem}_h", None, at, minimum)
    w = _int(param, f"{stem}_w", None, at, minimum)
    values = param.get(name, [])
    if h is not None or w is not None:
        if values or h is None or w is None:
            raise ValueError(f"{at}: give either {name} or both {stem}_h and {stem}_w")
        return h, w
    if not values:
        if default is None:
            raise ValueError(f"{at}: {name} is required")
        return default, default
    if len(values) > 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{at}: {name} must be one or two integers, got {values}")
    if min(values) < minimum:
        raise ValueError(f"{at}: {name} must be >= {minimum}, got {values}")
    return (values[0], values[0]) if len(values) == 1 else tuple(values)


def _param(layer, key, at):
    values = layer.get(key, [])
    if len(values) > 1 or (values and not isinstance(values[0], dict)):
        raise ValueError(f"{at}: {key} must be one {{ … }} block")
    return values[0] if values else {}


def _filler(param, at):
    """Caffe's weight_filler → the engine's initialiser name (None: keep the engine default)."""
    filler = _param(param, "weight_filler", at)
    kind = _one(filler, "type", "constant" if filler else None, at, (str,))
    if kind in (None, "xavier", "msra"):
        if kind and _one(filler, "variance_norm", "FAN_IN", at, (str,)) != "FAN_IN":
            return None  # engine initialisers use fan_in only; keep its default
        return kind
    if kind == "gaussian" and _one(filler, "mean", 0.0, at, (int, float)) == 0:
        return f"gaussian:{float(_one(filler, 'std', 1.0, at, (int, float)))}"
    if kind == "constant":
        return f"constant:{float(_one(filler, 'value', 0.0, at, (int, float)))}"
    return None


def _in_test_phase(layer, at):
    """Caffe's NetStateRule, for the TEST phase: only ``phase`` rules are understood."""
    def matches(rule):
        extra = set(rule) - {"phase"}
        if extra:
            raise ValueError(f"{at}: include/exclude rules on {sorted(extra)} are not supported")
        return _one(rule, "phase", "TEST", at, (str,)) == "TEST"

    include, exclude = layer.get("include", []), layer.get("exclude", [])
    if include and exclude:
        raise ValueError(f"{at}: has both include and exclude rules")
    if include:
        return any(matches(r) for r in include)
    return not any(matches(r) for r in exclude)


# ---------------------------------------------------------------------------------------------
# Layers


def _convolution(name, layer, at, io):
    p = _param(layer, "convolution_param", at)
    num_output = _int(p, "num_output", None, at, 1)
    if num_output is None:
        raise ValueError(f"{at}: convolution_param.num_output is required")
    if _int(p, "axis", 1, at) != 1:
        raise ValueError(f"{at}: only axis 1 (channels) is supported")
    dilation = p.get("dilation", [1])
    if len(dilation) > 2 or not all(isinstance(d, int) and d >= 1 for d in dilation):
        raise ValueError(f"{at}: dilation must be one or two integers >= 1, got {dilation}")
    return [Conv2d(name, num_output, kernel=_hw(p, "kernel_size", None, at, 1),
                   stride=_hw(p, "stride", 1, at, 1), padding=_hw(p, "pad", 0, at),
                   dilation=(dilation[0], dilation[-1]), groups=_int(p, "group", 1, at, 1),
                   bias=_one(p, "bias_term", True, at, (bool,)),
                   weight_init=_filler(p, at) or "xavier", **io)]


def _inner_product(name, layer, at, io):
    p = _param(layer, "inner_product_param", at)
    num_output = _int(p, "num_output", None, at, 1)
    if num_output is None:
        raise ValueError(f"{at}: inner_product_param.num_output is required")
    if _int(p, "axis", 1, at) != 1 or _one(p, "transpose", False, at, (bool,)):
        raise ValueError(f"{at}: only axis 1 without transpose is supported")
    return [Linear(name, num_output, bias=_one(p, "bias_term", True, at, (bool,)),
                   weight_init=_filler(p, at) or "xavier", **io)]


def _pooling(name, layer, at, io):
    p = _param(layer, "pooling_param", at)
    kind = _one(p, "pool", "MAX", at, (str,))
    if kind not in ("MAX", "AVE"):
        raise ValueError(f"{at}: pool {kind} is not supported (MAX or AVE)")
    if _one(p, "global_pooling", False, at, (bool,)):
        if kind != "AVE":
            raise ValueError(f"{at}: global MAX pooling is not supported (global AVE is)")
        if _hw(p, "pad", 0, at) != (0, 0) or _hw(p, "stride", 1, at, 1) != (1, 1):
            raise ValueError(f"{at}: global pooling with pad or stride is not supported")
        return [GlobalAvgPool2d(name, **io)]
    round_mode = _one(p, "round_mode", "CEIL", at, (str,))
    if round_mode not in ("CEIL", "FLOOR"):
        raise ValueError(f"{at}: round_mode must be CEIL or FLOOR, got {round_mode}")
    cls = MaxPool2d if kind == "MAX" else AvgPool2d
    return [cls(name, kernel=_hw(p, "kernel_size", None, at, 1), stride=_hw(p, "stride", 1, at, 1),
                padding=_hw(p, "pad", 0, at), ceil_mode=round_mode == "CEIL", **io)]


def _relu(name, layer, at, io):
    p = _param(layer, "relu_param", at)
    slope = _one(p, "negative_slope", 0.0, at, (int, float))
    return [ReLU(name, negative_slope=float(slope), **io)]


def _concat(name, layer, at, io):
    p = _param(layer, "concat_param", at)
    axis = _int(p, "axis", _int(p, "concat_dim", 1, at), at)
    return [Concat(name, axis=axis, **io)]


def _dropout(name, layer, at, io):
    p = _param(layer, "dropout_param", at)
    return [Dropout(name, p=float(_one(p, "dropout_ratio", 0.5, at, (int, float))), **io)]


def _softmax(name, layer, at, io):
    p = _param(layer, "softmax_param", at)
    if _int(p, "axis", 1, at) != 1:
        raise ValueError(f"{at}: only axis 1 is supported")
    flat = f"{name}/flatten"
    return [Flatten(flat, bottom=io["bottom"], top=flat),
            Softmax(name, bottom=flat, top=io["top"])]


LAYER_TYPES = {"Convolution": _convolution, "InnerProduct": _inner_product, "Pooling": _pooling,
               "ReLU": _relu, "Concat": _concat, "Dropout": _dropout, "Softmax": _softmax}


def _shape(dims, at):
    if len(dims) != 4 or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                 for d in dims):
        raise ValueError(f"{at}: the input shape must be four positive integers (N, C, H, W), "
                         f"got {dims}")
    return tuple(dims[1:])


def _header_input(msg, source):
    """(blob name, per-example shape) from ``input:`` + ``input_dim:``/``input_shape``, or None."""
    names = msg.get("input", [])
    if not names:
        if msg.get("input_dim") or msg.get("input_shape"):
            raise ValueError(f"{source}: input_dim/input_shape without an input: name")
        return None
    if len(names) != 1 or not isinstance(names[0], str):
        raise ValueError(f"{source}: exactly one input is supported, got input: {names}")
    shapes = msg.get("input_shape", [])
    if msg.get("input_dim") and shapes:
        raise ValueError(f"{source}: give either input_dim or input_shape, not both")
    if shapes:
        if len(shapes) != 1 or not isinstance(shapes[0], dict):
            raise ValueError(f"{source}: expected one input_shape {{ dim: … }} block")
        return names[0], _shape(shapes[0].get("dim", []), source)
    return names[0], _shape(msg.get("input_dim", []), source)


def net_from_prototxt(text_or_path, *, dtype=np.float32, seed=0, name=None):
    """Build a ``Net`` from a Caffe deploy prototxt (a path, or the text itself).

    The weights are freshly initialised (from the fillers); load real ones with
    ``net.load_state_dict`` ({"layer/weight": …, "layer/bias": …}). Raises ValueError naming the
    file and the layer for anything unsupported or inconsistent: an unknown layer type, a
    missing input, a parameter out of range.
    """
    text, source = _read_source(text_or_path)
    msg = parse_prototxt(text, source=source)
    if msg.get("layers"):
        raise ValueError(f"{source}: uses the old V1 'layers' format; upgrade it with Caffe's "
                         f"upgrade_net_proto_text first")
    net_input = _header_input(msg, source)
    layers, flatten_checks = [], []
    for index, layer in enumerate(msg.get("layer", [])):
        if not isinstance(layer, dict):
            raise ValueError(f"{source}: layer {index} must be a {{ … }} block")
        lname = _one(layer, "name", None, f"{source}: layer {index}", (str,))
        ltype = _one(layer, "type", None, f"{source}: layer {lname or index}", (str,))
        at = f"{source}: {lname or f'layer {index}'} ({ltype})"
        if not lname or not ltype:
            raise ValueError(f"{at}: every layer needs a name and a type")
        if not _in_test_phase(layer, at):
            continue
        bottom, top = layer.get("bottom", []), layer.get("top", [])
        if not all(isinstance(b, str) for b in bottom + top):
            raise ValueError(f"{at}: bottom and top must be strings")
        if ltype == "Input":
            if net_input is not None:
                raise ValueError(f"{at}: the net already has an input; exactly one is supported")
            shapes = _param(layer, "input_param", at).get("shape", [])
            if len(top) != 1 or len(shapes) != 1 or not isinstance(shapes[0], dict):
                raise ValueError(f"{at}: expected one top and one "
                                 f"input_param {{ shape {{ … }} }}")
            net_input = (top[0], _shape(shapes[0].get("dim", []), at))
            continue
        if ltype not in LAYER_TYPES:
            raise ValueError(f"{at}: layer type {ltype!r} is not supported by this minimal reader "
                             f"(supported: Input, {', '.join(sorted(LAYER_TYPES))})")
        if len(bottom) < 1 or len(top) != 1:
            raise ValueError(f"{at}: expected one or more bottoms and one top, got bottom "
                             f"{bottom}, top {top}")
        io = dict(bottom=bottom, top=top[0])
        try:
            made = LAYER_TYPES[ltype](lname, layer, at, io)
        except ValueError as e:  # the engine's own checks (e.g. a Dropout ratio) name no file
            if str(e).startswith(source):
                raise
            raise ValueError(f"{source}: {e}") from None
        layers.extend(made)
        if ltype == "Softmax":
            flatten_checks.append((made[0].name, at))
    if net_input is None:
        raise ValueError(f"{source}: no input: give 'input:' with 'input_dim:' or an Input layer")
    net_name = name or _one(msg, "name", "net", source, (str,))
    try:
        net = Net(layers, net_input[1], input_name=net_input[0], dtype=dtype, seed=seed,
                  name=net_name)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    for flat, at in flatten_checks:
        shape = net.layer(flat).in_shapes[0]
        if int(np.prod(shape[1:])) != 1:
            raise ValueError(f"{at}: a softmax over axis 1 of a {shape} blob (one per position) is "
                             f"not supported; the engine's Softmax takes (K,) or (K, 1, 1)")
    return net
