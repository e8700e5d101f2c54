"""Test helpers: small ONNX models built with onnx.helper, and onnxruntime's outputs."""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def model(nodes, x_shape, out_name, out_shape=None, inits=(), opset=17, x_name="x",
          batch="N", ir=None):
    """A one-input, one-output model; ``inits``: {name: array} initializers."""
    inits = dict(inits)
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(x_name, TensorProto.FLOAT,
                                                   [batch, *x_shape])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir or (3 if opset < 8 else 7 if opset < 13 else 8)
    return m


def session(ort, model_or_path):
    data = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) \
        else str(model_or_path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def ort_outputs(ort, model_or_path, x, names=None):
    """onnxruntime's values of ``names`` (default: the graph outputs) for input ``x``; other
    values of the graph are made outputs first."""
    m = model_or_path if isinstance(model_or_path, onnx.ModelProto) else \
        onnx.load(str(model_or_path))
    if names is not None:
        m = onnx.ModelProto.FromString(m.SerializeToString())
        have = {o.name for o in m.graph.output}
        for n in names:
            if n not in have:
                m.graph.output.append(helper.make_empty_tensor_value_info(n))
    s = session(ort, m)
    out = s.run(names, {s.get_inputs()[0].name: x})
    return out


def logits_name(m):
    """The value feeding the graph's final Softmax, or the output itself."""
    out = m.graph.output[0].name
    for node in m.graph.node:
        if out in node.output and node.op_type == "Softmax":
            return node.input[0]
    return out
