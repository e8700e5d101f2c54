"""ONNX models → the engine's ``Net``.

    net = load_onnx("model.onnx")               # every graph output, the first as net.output
    net = load_onnx("model.onnx", output="fc")  # or one named value
    net = load_onnx("model.onnx", input_shape=(3, 480, 640))   # symbolic dims filled in
    net.outputs          # the graph outputs the net computes
    net.onnx_info        # {"input": name, "input_dims": [...], "outputs": [...], "opset": ...}
    net.preprocessing    # from the "robustcnn.preprocessing" metadata entry (JSON), or {}
    net.bounds           # from the "robustcnn.bounds" metadata entry (JSON [low, high]), or None

See ``robustcnn.models.onnx`` for the operators and their mapping. The file is parsed with
protobuf (``files.read_model``), the nodes the chosen output needs are sorted, constants are
folded (``fold.py``) and every other node becomes engine layers (``ops.py``).
"""

import json
import math

import numpy as np

from ... import limits
from ...engine import Net
from .files import DTYPES, read_model, tensor_array, tensor_dims, tensor_nbytes, text
from .fold import FOLDABLE, fold
from .graph import Tensor, attributes, consumers, needed_nodes, node_at, value_dims
from .ops import BUILDERS, SYMBOLIC_BATCH, not_supported

MIN_OPSET = 7
# What a file may declare before anything is allocated for it (as the Caffe importer): values
# in one blob of one example, weights in one layer, weights in the net.
MAX_BLOB_VALUES = 2**28
MAX_PARAMS = 2**28
MAX_TOTAL_PARAMS = 2**29
# The metadata entries ``save_onnx`` writes the preprocessing and the input bounds to, and the
# importer reads them from (JSON: an object, a [low, high] pair; see ``engine.preprocess``).
PREPROCESSING_KEY = "robustcnn.preprocessing"
BOUNDS_KEY = "robustcnn.bounds"
_FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def current_opset():
    """The newest opset of the default domain that the installed ``onnx`` package knows."""
    import onnx

    return onnx.defs.onnx_opset_version()


class _Graph:
    """The engine layers built so far, and what each ONNX value is."""

    def __init__(self, source, folder, dtype, opset, batch, max_bytes):
        self.source, self.folder, self.dtype = source, folder, np.dtype(dtype)
        self.opset, self.batch, self.max_bytes = opset, batch, max_bytes
        self.param_bytes = self.folded_bytes = 0  # what the layers and folded constants take
        self.layers, self.shapes, self.weights = [], {}, {}
        self.fusable = {}  # blob → the layer that made it, if it can take a bias
        self.values = {}  # ONNX name → Tensor, ndarray, or a TensorProto not read yet
        self.consumers = {}
        self.onnx_names = set()
        self.taken = set()  # engine layer names
        self.total_params = 0

    # Values ------------------------------------------------------------------------------
    def value(self, name, at):
        v = self.values[name]
        if not isinstance(v, (Tensor, np.ndarray)):  # an initializer, read on first use
            v = self.values[name] = self._initializer(v, name, at)
        return v

    def _initializer(self, proto, name, at):
        where = f"{self.source}: initializer {name!r}"
        if isinstance(proto, tuple):  # a sparse initializer: (SparseTensorProto,)
            return _sparse_array(proto[0], where, self.folder)
        return tensor_array(proto, where, self.folder)

    def tensor(self, v, at, what="input"):
        if isinstance(v, Tensor):
            return v
        if v is None:
            raise ValueError(f"{at}: {what} is missing")
        raise not_supported(at, f"a constant {what} of shape {np.shape(v)} (the engine computes "
                                f"on tensors that come from the model's input)")

    def const(self, v, at, what):
        if isinstance(v, np.ndarray):
            return v
        if v is None:
            raise ValueError(f"{at}: {what} is missing")
        raise not_supported(at, f"{what} computed from the model's input (it must be an "
                                f"initializer or folded from constants)")

    def used(self, name):
        return self.consumers.get(text(name), 0) > 0

    # Layers ------------------------------------------------------------------------------
    def _free(self, base):
        name, k = base, 1
        while name in self.taken or (name != base and name in self.onnx_names):
            name, k = f"{base}_{k}", k + 1
        return name

    def layer_name(self, node):
        """The engine name for a node's layer: its name, or else its first output's."""
        name = self._free(text(node.name) or text(node.output[0]))
        self.taken.add(name)
        return name

    def output(self, node, i=0):
        return text(node.output[i])

    def add(self, layer, inputs, at, top=None):
        """Append ``layer`` reading the tensors ``inputs`` → the Tensor it makes. Helper
        layers (a Pad2d before a convolution) get a name no ONNX value has."""
        if top is None and layer.name not in self.taken:
            layer.name = self._free(layer.name)
        self.taken.add(layer.name)
        layer.bottom = [x.blob for x in inputs]
        layer.top = [top or layer.name]
        self.param_bytes += layer.param_values([x.shape for x in inputs]) * self.dtype.itemsize
        limits.check_bytes(at, "the net's parameters up to here", self.param_bytes,
                           self.max_bytes)  # before the layer allocates them
        try:
            out = layer.setup([x.shape for x in inputs], self.dtype)[0]
        except ValueError as e:
            raise ValueError(f"{at}: {e}") from None
        if math.prod(out) > MAX_BLOB_VALUES:
            raise ValueError(f"{at}: output shape {out} has more than {MAX_BLOB_VALUES:,} values "
                             f"per example")
        limits.check_bytes(at, f"an output of {tuple(out)} per example",
                           math.prod(out) * self.dtype.itemsize, self.max_bytes)
        self.total_params += sum(v.size for v in layer.params.values())
        if self.total_params > MAX_TOTAL_PARAMS:
            raise ValueError(f"{at}: the net declares more than {MAX_TOTAL_PARAMS:,} weights up "
                             f"to this node")
        self.layers.append(layer)
        self.shapes[layer.top[0]] = out
        return Tensor(layer.top[0], out)

    def rename(self, x, layer, top):
        """``layer``'s output, made by it alone and read only here, now named ``top``."""
        layer.top = [top]
        self.shapes[top] = self.shapes.pop(x.blob)
        self.fusable[top] = self.fusable.pop(x.blob)
        return Tensor(top, x.shape)

    def check_params(self, count, at):
        if count > MAX_PARAMS:
            raise ValueError(f"{at}: declares {count:,} weights, more than {MAX_PARAMS:,}")


def _sparse_nbytes(sparse, at):
    """The bytes a SparseTensorProto's dense array takes (values' dtype, dims), from what it
    declares, checked before anything is read."""
    dims = tuple(int(d) for d in sparse.dims)
    if any(d < 0 for d in dims) or math.prod(dims) > MAX_PARAMS:
        raise ValueError(f"{at}: sparse dims {dims} must be >= 0 and hold at most "
                         f"{MAX_PARAMS:,} values")
    kind = int(sparse.values.data_type)
    itemsize = np.dtype(DTYPES[kind][0]).itemsize if kind in DTYPES else 8
    return math.prod(dims) * itemsize + tensor_nbytes(sparse.values, f"{at} values") \
        + tensor_nbytes(sparse.indices, f"{at} indices")


def _sparse_array(sparse, at, folder):
    """A SparseTensorProto → its dense array (values at linear or (NNZ, rank) indices)."""
    dims = tuple(int(d) for d in sparse.dims)
    if any(d < 0 for d in dims) or math.prod(dims) > MAX_PARAMS:
        raise ValueError(f"{at}: sparse dims {dims} must be >= 0 and hold at most "
                         f"{MAX_PARAMS:,} values")
    values = tensor_array(sparse.values, f"{at} values", folder).reshape(-1)
    indices = tensor_array(sparse.indices, f"{at} indices", folder)
    if indices.dtype.kind not in "iu":
        raise ValueError(f"{at}: indices must be integers, got {indices.dtype}")
    size = math.prod(dims)
    if indices.ndim == 2 and indices.shape == (len(values), len(dims)):
        if np.any(indices < 0) or np.any(indices >= np.asarray(dims)):
            raise ValueError(f"{at}: an index is out of the dims {dims}")
        flat = np.ravel_multi_index(tuple(indices.T), dims) if len(values) else indices[:, 0]
    elif indices.ndim == 1 and len(indices) == len(values):
        flat = indices
        if np.any(flat < 0) or np.any(flat >= size):
            raise ValueError(f"{at}: an index is out of the {size:,} values of dims {dims}")
    else:
        raise ValueError(f"{at}: indices of shape {indices.shape} for {len(values)} values")
    dense = np.zeros(size, dtype=values.dtype)
    dense[flat] = values
    return dense.reshape(dims)


def _opset(model, source):
    versions = [int(o.version) for o in model.opset_import if text(o.domain) in ("", "ai.onnx")]
    if not versions:
        raise ValueError(f"{source}: no opset of the default ONNX domain is imported")
    opset = max(versions)
    newest = current_opset()
    if not MIN_OPSET <= opset <= newest:
        raise not_supported(source, f"opset {opset} (opsets {MIN_OPSET} to {newest} are)")
    return opset


def _find_input(model, source, input_shape):
    """(name, per-example shape, declared batch size, declared dims) of the one input."""
    graph = model.graph
    init = {text(t.name) for t in graph.initializer} | \
        {text(t.values.name) for t in graph.sparse_initializer}
    inputs = [i for i in graph.input if text(i.name) not in init]
    if len(inputs) != 1:
        raise not_supported(source, f"a model with {len(inputs)} inputs "
                                    f"({[text(i.name) for i in inputs][:10]}); one input is")
    value = inputs[0]
    name = text(value.name)
    at = f"{source}: input {name!r}"
    dims, elem = value_dims(value, at)
    if elem not in _FLOAT_TYPES:
        raise not_supported(at, f"element type {elem} (a float input is)")
    if input_shape is not None:
        per = tuple(int(s) for s in input_shape)
        if dims is not None and len(dims) != len(per) + 1:
            raise ValueError(f"{at}: input_shape {per} does not match its rank {len(dims)} "
                             f"(with the batch axis)")
    else:
        if dims is None or len(dims) < 2 or any(d is None for d in dims[1:]):
            raise ValueError(f"{at}: its shape {dims} must be known but for the batch axis; "
                             f"pass input_shape=(C, H, W)")
        per = tuple(dims[1:])
    if not per or min(per) < 1 or math.prod(per) > MAX_BLOB_VALUES:
        raise not_supported(at, f"an input of per-example shape {per} (sizes >= 1, at most "
                                f"{MAX_BLOB_VALUES:,} values)")
    batch = dims[0] if dims and dims[0] is not None else SYMBOLIC_BATCH
    return name, per, batch, dims


def _metadata(model, source):
    """(metadata_props as a dict, the preprocessing entry or {}, the bounds entry or None)."""
    meta = {}
    for entry in model.metadata_props:
        meta[text(entry.key)] = text(entry.value)
    found = {}
    for key, kind, default in ((PREPROCESSING_KEY, dict, {}), (BOUNDS_KEY, list, None)):
        raw = meta.get(key)
        if not raw:
            found[key] = default
            continue
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, RecursionError):
            value = None
        if not isinstance(value, kind):
            raise ValueError(f"{source}: metadata {key!r} is not a JSON "
                             f"{'object' if kind is dict else '[low, high] pair'}")
        found[key] = value
    return meta, found[PREPROCESSING_KEY], found[BOUNDS_KEY]


def load_onnx(path, *, output=None, input_shape=None, dtype=np.float32, name=None, seed=0,
              max_bytes=None):
    """An ONNX model (a path, or the file's bytes) as an engine ``Net``.

    ``output``: the graph output (or any value) the net computes; default: every graph
    output, the first being ``net.output`` (and the others ``net.outputs``; if one of them
    cannot be built, the first alone, and ``onnx_info["skipped_outputs"]`` says why).
    ``input_shape``: the per-example input shape, for a model whose input dims are symbolic (a
    fully convolutional net at any image size), or replacing the declared one. The batch axis
    (axis 0) may have any size; shape arithmetic in the file sees it at its declared size (see
    ``robustcnn.models.onnx``).

    The net has ``onnx_info`` (input name and declared dims, graph outputs, opset, producer)
    and ``metadata`` (the model's metadata_props), which ``Net.copy`` does not carry over, and
    ``preprocessing`` and ``bounds`` (the JSON stored under ``robustcnn.preprocessing`` and
    ``robustcnn.bounds``, or {} and None), which are in its spec.

    ``max_bytes`` (``robustcnn.limits``, default 512 MiB) bounds what the file may make it
    allocate: the file, its initializers (as declared, summed before any is read), each folded
    constant and their total, the net's parameters (counted before each layer allocates them)
    and each blob of one example. No initial weights are drawn: every parameter comes from
    the file.

    Every problem raises a one-line ValueError naming the file (and the node and its op).
    Nothing in the file is executed.
    """
    max_bytes = limits.resolve(max_bytes)
    model, source, folder = read_model(path, max_bytes=max_bytes)
    outputs = [text(o.name) for o in model.graph.output]
    if output is None and not outputs:
        raise ValueError(f"{source}: the graph has no outputs")
    wanted = [output] if output is not None else outputs
    try:
        try:
            return _build(model, source, folder, wanted, input_shape, dtype, name, seed,
                          max_bytes)
        except ValueError as e:
            if len(wanted) == 1:
                raise
            net = _build(model, source, folder, wanted[:1], input_shape, dtype, name, seed,
                         max_bytes)
            net.onnx_info["skipped_outputs"] = {"outputs": wanted[1:], "reason": str(e)}
            return net
    except RecursionError:
        raise ValueError(f"{source}: nested too deeply") from None


def _build(model, source, folder, wanted, input_shape, dtype, name, seed, max_bytes):
    graph = model.graph
    opset = _opset(model, source)
    input_name, per, batch, dims = _find_input(model, source, input_shape)
    outputs = [text(o.name) for o in graph.output]
    output = wanted[0]
    g = _Graph(source, folder, dtype, opset, batch, max_bytes)
    known, declared = {}, 0
    for t in graph.initializer:
        declared += tensor_nbytes(t, f"{source}: initializer {text(t.name)!r}")
        known[text(t.name)] = t
    for s in graph.sparse_initializer:
        declared += _sparse_nbytes(s, f"{source}: sparse initializer {text(s.values.name)!r}")
        known[text(s.values.name)] = (s,)
    limits.check_bytes(source, "the initializer data", declared, max_bytes)
    known[input_name] = Tensor(input_name, per)
    nodes = list(graph.node)
    order = needed_nodes(nodes, set(known), wanted, source)
    g.values = dict(known)
    g.consumers = consumers(nodes, order, wanted)
    g.onnx_names = set(known) | {text(o) for n in nodes for o in n.output}
    g.shapes[input_name] = per
    for index in order:
        _node(g, nodes[index], index)
    blobs = []
    for value in wanted:
        if value not in g.values:
            raise ValueError(f"{source}: no node makes the output {value!r}")
        out = g.value(value, f"{source}: output {value!r}")
        if not isinstance(out, Tensor):
            raise not_supported(source, f"an output ({value!r}) that does not depend on the "
                                        f"input")
        blobs.append(out.blob)
    if not g.layers:
        raise not_supported(source, "a graph with no layers (its output is its input)")
    meta, preprocessing, bounds = _metadata(model, source)
    try:
        net = Net(g.layers, per, input_name=input_name, output=blobs[0], outputs=blobs,
                  dtype=dtype, seed=seed, name=name or text(graph.name) or "onnx",
                  preprocessing=preprocessing, bounds=bounds, init=False, max_bytes=max_bytes)
        net.load_state_dict({k: np.asarray(v, dtype=net.dtype) for k, v in g.weights.items()},
                            source=source)
    except (ValueError, TypeError) as e:
        raise ValueError(e if str(e).startswith(source) else f"{source}: {e}") from None
    net.metadata = meta
    net.onnx_info = {"input": input_name, "input_dims": dims, "outputs": outputs,
                     "output": output, "opset": opset, "producer": text(model.producer_name)}
    return net


def _node(g, node, index):
    op = text(node.op_type)
    at = node_at(g.source, node, index)
    if text(node.domain) not in ("", "ai.onnx"):
        raise not_supported(at, f"an operator of domain {text(node.domain)!r} (custom ops)")
    try:
        ins = [g.value(text(i), at) if text(i) else None for i in node.input]
        attrs = attributes(node, at)
        outs = None
        if all(v is None or isinstance(v, np.ndarray) for v in ins) and op in FOLDABLE:
            outs = fold(op, ins, attrs, g.opset, at, g.folder, g.max_bytes)
            outs = None if outs is None else [np.asarray(o) for o in outs]
            g.folded_bytes += sum(o.nbytes for o in outs or ()  # new arrays, not views
                                  if o.base is None and not any(o is i for i in ins))
            limits.check_bytes(at, "the constants folded up to here", g.folded_bytes,
                               g.max_bytes)
        if outs is None:
            if op not in BUILDERS:
                raise not_supported(at, f"operator '{op}'" + (
                    " on a tensor computed from the input (it is folded on constants only)"
                    if op in FOLDABLE else
                    f" (supported: {', '.join(sorted(set(BUILDERS) | set(FOLDABLE)))})"))
            outs = BUILDERS[op](g, node, at, ins, attrs)
    except ValueError as e:
        raise ValueError(e if str(e).startswith(g.source) else f"{at}: {e}") from None
    except (IndexError, KeyError, TypeError, AttributeError, OverflowError, ZeroDivisionError,
            MemoryError) as e:  # a combination of fields not foreseen
        raise ValueError(f"{at}: cannot be built ({type(e).__name__}: "
                         f"{limits.one_line(e, 160)})") from None
    for i, v in enumerate(outs):
        name = text(node.output[i]) if i < len(node.output) else ""
        if name and v is not None:
            g.values[name] = v
    for name in node.output[len(outs):]:
        if g.used(name):
            raise not_supported(at, f"output {len(outs)} and beyond ({text(name)!r} is read)")
