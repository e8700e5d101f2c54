"""The ONNX graph as the importer walks it: attributes, the nodes one output needs in a
topological order, and the values — constants (NumPy arrays) or engine blobs (``Tensor``).

Everything here checks the file's structure before it is used: a value made by two nodes, a node
reading a value nothing makes, a cycle — each is a ValueError naming the file and the node.
"""

import math
from collections import deque

import numpy as np

from .files import text

# AttributeProto.AttributeType
_FLOAT, _INT, _STRING, _TENSOR, _FLOATS, _INTS = 1, 2, 3, 4, 6, 7


class Tensor:
    """A value the engine computes: its blob and its per-example shape (without the batch)."""

    __slots__ = ("blob", "shape")

    def __init__(self, blob, shape):
        self.blob, self.shape = blob, tuple(shape)

    @property
    def rank(self):
        """The ONNX rank (with the batch axis)."""
        return len(self.shape) + 1

    def __repr__(self):
        return f"Tensor({self.blob!r}, {self.shape})"


def node_at(source, node, index):
    """Where, for error messages: ``model.onnx: node 'conv1' (Conv)``."""
    name = text(node.name) or (text(node.output[0]) if len(node.output) else f"#{index}")
    return f"{source}: node '{name}' ({text(node.op_type)})"  # (text escaped control chars)


def f32(value):
    """A float32 number as the float its writer meant: 1e-05, not 9.999999747378752e-06."""
    return float(str(np.float32(value)))


def attributes(node, at):
    """{name: value} of a node's attributes: floats, ints, strings (str), lists of them, and
    tensors (left as TensorProto for the caller to read, checked). Graphs and the other kinds
    are kept as None: an op that needs one is refused by its builder."""
    out = {}
    for attr in node.attribute:
        name = text(attr.name)
        if name in out:
            raise ValueError(f"{at}: attribute {name!r} is given twice")
        kind = attr.type
        if kind == _FLOAT:
            out[name] = f32(attr.f)
        elif kind == _INT:
            out[name] = int(attr.i)
        elif kind == _STRING:
            out[name] = text(attr.s)
        elif kind == _TENSOR:
            out[name] = attr.t
        elif kind == _FLOATS:
            out[name] = [f32(v) for v in attr.floats]
        elif kind == _INTS:
            out[name] = [int(v) for v in attr.ints]
        elif kind == 0 and attr.ref_attr_name:
            raise ValueError(f"{at}: attribute {name!r} refers to a function's attribute "
                             f"(functions are not supported)")
        else:
            out[name] = None
    return out


def needed_nodes(nodes, known, output, source):
    """The nodes that ``output`` (a value's name, or a list of them) depends on, in an order
    where every node comes after the nodes making its inputs (Kahn's algorithm; ONNX asks files
    for that order, this does not rely on it). ``known``: names with a value already (the
    input, the initializers)."""
    wanted = [output] if isinstance(output, str) else list(output)
    producer = {}
    for index, node in enumerate(nodes):
        for out in node.output:
            out = text(out)
            if not out:
                continue
            if out in producer or out in known:
                other = "an initializer or the input" if out in known else \
                    node_at(source, nodes[producer[out]], producer[out]).split(": ", 1)[1]
                raise ValueError(f"{node_at(source, node, index)}: its output {out!r} is also "
                                 f"made by {other}")
            producer[out] = index
    for name in wanted:
        if name not in producer and name not in known:
            raise ValueError(f"{source}: no node makes the output {name!r}")
    # The nodes the outputs depend on (iteratively: no recursion on a deep graph).
    needed, stack = set(), list(wanted)
    while stack:
        name = stack.pop()
        index = producer.get(name)
        if index is None or index in needed:
            if index is None and name not in known:
                raise ValueError(f"{source}: the value {name!r} is read but no node makes it, "
                                 f"and it is neither an initializer nor the input")
            continue
        needed.add(index)
        stack.extend(text(i) for i in nodes[index].input if text(i))
    # Kahn: a node is ready once every input made by a needed node is made.
    waiting, readers = {}, {}
    for index in needed:
        deps = {producer[text(i)] for i in nodes[index].input if text(i) in producer}
        waiting[index] = len(deps)
        for d in deps:
            readers.setdefault(d, []).append(index)
    ready = deque(sorted(i for i, n in waiting.items() if n == 0))
    order = []
    while ready:
        index = ready.popleft()
        order.append(index)
        for r in sorted(readers.get(index, ())):
            waiting[r] -= 1
            if waiting[r] == 0:
                ready.append(r)
    if len(order) != len(needed):
        stuck = min(i for i in needed if waiting[i] > 0)
        raise ValueError(f"{node_at(source, nodes[stuck], stuck)}: the graph has a cycle "
                         f"through this node")
    return order


def consumers(nodes, order, output):
    """{value name: how many times the needed nodes (and the graph outputs: ``output``, a
    name or a list) read it}."""
    count = {name: 1 for name in ([output] if isinstance(output, str) else output)}
    for index in order:
        for name in nodes[index].input:
            name = text(name)
            if name:
                count[name] = count.get(name, 0) + 1
    return count


def value_dims(value_info, at):
    """The dims of a graph input's type: ints, or None for a symbolic or missing one."""
    tensor_type = value_info.type.tensor_type if value_info.type.HasField("tensor_type") \
        else None
    if tensor_type is None:
        raise ValueError(f"{at}: is not a tensor (sequences, maps and optionals are not "
                         f"supported)")
    if not tensor_type.HasField("shape"):
        return None, int(tensor_type.elem_type)
    dims = []
    for d in tensor_type.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None)
    return dims, int(tensor_type.elem_type)


def check_size(shape, limit, at, what):
    count = math.prod(shape)
    if count > limit:
        raise ValueError(f"{at}: {what} of shape {tuple(shape)} has {count:,} values, more than "
                         f"{limit:,}")
    return count
