"""The ONNX backend node tests (``onnx.backend.test.case.node``: one small model per case,
with inputs and the expected outputs) of every operator the importer maps, run through
``load_onnx`` and the engine. The wheel ships the cases as Python, not as data folders, so they
are generated here; a case's second and later inputs become initializers (the engine computes
on its one input; weights are constants).

Each case either imports and matches its expected output, or is refused with a one-line
ValueError naming the node (an option the engine has no layer for: a softmax over the batch,
reflect padding, …). Every operator must have at least one case that imports and matches, and
no case may crash or give a wrong number.
"""

import functools
import warnings

import numpy as np
import onnx
import pytest
from helpers import assert_close
from onnx import numpy_helper

from robustcnn.models.onnx import load_onnx

OPS = ["Conv", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool",
       "GlobalMaxPool", "ReduceMean", "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid",
       "HardSigmoid", "HardSwish", "Softmax", "LRN", "BatchNormalization", "Dropout", "Concat",
       "Add", "Sub", "Mul", "Div", "Sum", "Max", "Flatten", "Reshape", "Transpose", "Pad",
       "Identity", "Squeeze", "Unsqueeze"]


@functools.lru_cache(maxsize=None)
def all_cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return tuple(collect_testcases(None))


def cases_of(op):
    return [c for c in all_cases() if c.model.graph.node and
            c.model.graph.node[-1].op_type == op and
            all(n.op_type == op or n.op_type == "Constant" for n in c.model.graph.node)]


def as_one_input(case):
    """The case's model with every input but the first made an initializer → (model bytes,
    the input, the expected first output)."""
    m = onnx.ModelProto.FromString(case.model.SerializeToString())
    inputs, outputs = case.data_sets[0]
    feeds = [numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)
             for v in inputs]
    names = [i.name for i in m.graph.input]
    for name, value in zip(names[1:], feeds[1:]):
        m.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    del m.graph.input[1:]
    expected = outputs[0]
    expected = numpy_helper.to_array(expected) if isinstance(expected, onnx.TensorProto) \
        else np.asarray(expected)
    return m.SerializeToString(), feeds[0], expected


def run_case(case):
    """'match', or 'refused: <message>'; raises on a wrong result or another exception."""
    data, x, expected = as_one_input(case)
    if np.asarray(x).dtype.kind != "f":
        try:
            load_onnx(data)
        except ValueError as e:
            return f"refused: {e}"
        raise AssertionError(f"{case.name}: a non-float input was accepted")
    try:
        net = load_onnx(data)
    except ValueError as e:
        message = str(e)
        assert "\n" not in message and message.startswith("<onnx>"), message
        return f"refused: {message}"
    y = net.forward(np.asarray(x, dtype=np.float32))
    expected = np.asarray(expected, dtype=np.float64)
    # (some cases' expected values are written to 4 decimals: 0.1511)
    assert_close(y.reshape(expected.shape), expected, 1e-4, case.name, atol=1e-4)
    return "match"


# Operators none of whose cases the engine can run: every case computes on tensors of shape
# (3,) or (3, 4, 5) with a full-shape second operand (the engine's axis 0 is the batch, and
# its elementwise layers take one value per channel), or pads with a value or mode other than
# zeros, or has no layer (Identity alone). The op tests (test_ops.py) cover them.
NO_RUNNABLE_CASE = {"ReduceMean", "PRelu", "Concat", "Add", "Sub", "Mul", "Div", "Sum", "Max",
                    "Pad", "Identity"}


@pytest.mark.slow
@pytest.mark.parametrize("op", OPS)
def test_node_cases(op):
    cases = cases_of(op)
    assert cases, f"no node test case for {op}"
    results = {c.name: run_case(c) for c in cases}
    matched = [n for n, r in results.items() if r == "match"]
    if op in NO_RUNNABLE_CASE:
        assert not matched, f"{op}: {matched} now match: update NO_RUNNABLE_CASE"
    else:
        assert matched, f"{op}: no case imports and matches: {results}"
    print(f"{op}: {len(matched)} of {len(results)} cases match; refused: "
          f"{sorted(n for n in results if n not in matched)}")
