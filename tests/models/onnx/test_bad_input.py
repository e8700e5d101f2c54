"""Damaged and hostile ONNX files: seeded mutations of a small model (byte flips, truncation,
inserted and deleted bytes), absurd dims, cyclic graphs, missing initializers, huge declared
tensors (refused before anything that large is allocated), external data that points out of
the model's folder or past its file, deep nesting, unknown operators. Each is a one-line
ValueError naming the file — never another exception, a giant allocation or a hang."""

import math
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_files import model

from robustcnn.models.onnx import files, is_onnx_file, load_onnx, save_onnx
from robustcnn.models.onnx.fold import MAX_FOLD_VALUES

N = helper.make_node
RNG = np.random.default_rng(0)


def small_model(opset=13):
    """Conv, BatchNormalization, Relu, MaxPool, a Shape-driven Reshape, Gemm, Softmax; weights
    both as raw bytes and as typed fields."""
    inits = {"W": RNG.standard_normal((4, 2, 3, 3)).astype(np.float32),
             "B": RNG.standard_normal(4).astype(np.float32),
             "g": np.ones(4, np.float32), "b": np.zeros(4, np.float32),
             "m": RNG.standard_normal(4).astype(np.float32),
             "v": RNG.uniform(0.5, 2, 4).astype(np.float32),
             "zero": np.array(0, np.int64), "minus1": np.array([-1], np.int64),
             "F": RNG.standard_normal((3, 36)).astype(np.float32),
             "C": RNG.standard_normal(3).astype(np.float32)}
    nodes = [N("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             N("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"]),
             N("Relu", ["n"], ["r"]), N("MaxPool", ["r"], ["p"], kernel_shape=[2, 2],
                                        strides=[2, 2]),
             N("Shape", ["p"], ["sh"]), N("Gather", ["sh", "zero"], ["n0"]),
             N("Unsqueeze", ["n0", "ax"], ["n1"]), N("Concat", ["n1", "minus1"], ["t"], axis=0),
             N("Reshape", ["p", "t"], ["f"]), N("Gemm", ["f", "F", "C"], ["z"], transB=1),
             N("Softmax", ["z"], ["y"])]
    inits["ax"] = np.array([0], np.int64)
    m = model(nodes, (2, 6, 6), "y", inits=inits, opset=opset)
    # two weights as typed fields instead of raw bytes
    for t in m.graph.initializer:
        if t.name in ("B", "C"):
            values = numpy_helper.to_array(t)
            t.ClearField("raw_data")
            t.float_data.extend(values.tolist())
    return m


@pytest.fixture(scope="module")
def data():
    d = small_model().SerializeToString()
    assert load_onnx(d).forward(np.ones((1, 2, 6, 6), np.float32)).shape == (1, 3)
    return d


def net_or_value_error(source, where=None):
    """load_onnx(source): a net (whose forward is finite or refused as not finite) or a
    one-line ValueError naming the file."""
    name = "<onnx>" if isinstance(source, bytes) else str(source)
    try:
        net = load_onnx(source)
    except ValueError as e:
        message = str(e)
        assert message.startswith(name) and "\n" not in message, f"{where}: {message!r}"
        return None
    if math.prod(net.input_shape) <= 10**5:
        try:
            out = net.forward(np.ones((1,) + net.input_shape, np.float32))
            assert np.isfinite(out).all()
        except FloatingPointError:  # a flipped weight overflowing: named by the engine
            pass
    return net


def mutants(data, count, seed):
    """``count`` seeded mutants: 1–4 byte flips, a truncation, or bytes inserted/deleted."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        b = bytearray(data)
        kind = rng.integers(4)
        if kind == 0:
            for _ in range(rng.integers(1, 5)):
                b[rng.integers(len(b))] ^= int(rng.integers(1, 256))
        elif kind == 1:
            b = b[:rng.integers(len(b))]
        elif kind == 2:
            at = rng.integers(len(b))
            b[at:at] = bytes(rng.integers(0, 256, rng.integers(1, 9)).astype(np.uint8))
        else:
            at = rng.integers(len(b))
            del b[at:at + rng.integers(1, 9)]
        yield bytes(b)


def run_mutants(data, count, seed):
    loaded = 0
    for i, mutant in enumerate(mutants(data, count, seed)):
        loaded += net_or_value_error(mutant, where=f"mutant {i}") is not None
    return loaded


def test_seeded_mutants(data):
    loaded = run_mutants(data, 200, seed=1)
    assert 0 < loaded < 200  # some flips land in weights and still load; most are refused


@pytest.mark.slow
def test_many_seeded_mutants(data):
    loaded = run_mutants(data, 5000, seed=2)
    assert 0 < loaded < 5000


def test_every_truncation_and_random_bytes(data, tmp_path):
    cut = tmp_path / "cut.onnx"
    for n in sorted(set(range(0, len(data), max(1, len(data) // 150))) | {len(data) - 1}):
        cut.write_bytes(data[:n])
        net_or_value_error(cut, where=f"cut at {n}")
    for seed in range(50):
        noise = np.random.default_rng(seed).integers(0, 256, 300).astype(np.uint8).tobytes()
        with pytest.raises(ValueError, match="<onnx>"):
            load_onnx(noise)
    with pytest.raises(ValueError, match="the file is empty"):
        load_onnx(b"")
    with pytest.raises(ValueError, match="cannot read the file"):
        load_onnx(tmp_path / "missing.onnx")


def test_absurd_dims_are_refused_before_allocation():
    m = small_model()
    w = next(t for t in m.graph.initializer if t.name == "W")
    del w.dims[:]
    w.dims.extend([2**40, 2**40])
    with pytest.raises(ValueError, match=r"initializer 'W': its dims \(1099511627776, "
                                         r"1099511627776\) declare .* values, more than"):
        load_onnx(m.SerializeToString())
    del w.dims[:]
    w.dims.extend([4, 2, 3, 4])  # 96 values declared, 72 stored
    with pytest.raises(ValueError, match=r"'W': its dims \(4, 2, 3, 4\) need 384 bytes of "
                                         r"FLOAT, raw_data holds 288"):
        load_onnx(m.SerializeToString())
    del w.dims[:]
    w.dims.extend([4, -2, 3, 3])
    with pytest.raises(ValueError, match="negative size in its dims"):
        load_onnx(m.SerializeToString())
    # A ConstantOfShape of 10**12 values, from a 100-byte file.
    huge = model([N("ConstantOfShape", ["s"], ["k"]), N("Add", ["x", "k"], ["y"])], (3,), "y",
                 inits={"s": np.array([10**6, 10**6], np.int64)})
    with pytest.raises(ValueError, match=rf"\(ConstantOfShape\): the result would hold "
                                         rf"1,000,000,000,000 values .* more than "
                                         rf"{MAX_FOLD_VALUES:,}"):
        load_onnx(huge.SerializeToString())
    # An input of 10**15 values per example.
    big = model([N("Relu", ["x"], ["y"])], (10**5, 10**5, 10**5), "y")
    with pytest.raises(ValueError, match="at most 268,435,456 values"):
        load_onnx(big.SerializeToString())
    # A length prefix of 2**31 bytes in a 10-byte file.
    with pytest.raises(ValueError, match="not an ONNX model"):
        load_onnx(b"\x08\x07\x3a\x80\x80\x80\x80\x08abc")


def test_control_characters_in_names_stay_on_one_line():
    """A name from the file with a newline in it (found by the mutation fuzzing)."""
    m = model([N("Relu", ["x"], ["y"], name="two\nlines"), ], (3,), "y")
    m.graph.node[0].op_type = "Re\nlu"
    with pytest.raises(ValueError, match=r"^<onnx>: node 'two\\nlines' \(Re\\nlu\): "
                                         r"operator 'Re\\nlu' .* is not supported$"):
        load_onnx(m.SerializeToString())


def test_graph_structure_errors():
    cyclic = model([N("Relu", ["x", "b"], ["a"], name="first"), N("Relu", ["a"], ["b"]),
                    N("Relu", ["b"], ["y"])], (3,), "y")
    with pytest.raises(ValueError, match=r"node 'first' \(Relu\): the graph has a cycle "
                                         r"through this node"):
        load_onnx(cyclic.SerializeToString())
    missing = model([N("Conv", ["x", "W"], ["y"])], (2, 4, 4), "y")
    with pytest.raises(ValueError, match=r"the value 'W' is read but no node makes it, and it "
                                         r"is neither an initializer nor the input"):
        load_onnx(missing.SerializeToString())
    twice = model([N("Relu", ["x"], ["y"], name="a"), N("Relu", ["x"], ["y"], name="b")],
                  (3,), "y")
    with pytest.raises(ValueError, match=r"node 'b' \(Relu\): its output 'y' is also made by "
                                         r"node 'a' \(Relu\)"):
        load_onnx(twice.SerializeToString())
    unsorted = model([N("Relu", ["a"], ["y"]), N("Sigmoid", ["x"], ["a"])], (3,), "y")
    assert [l.type for l in load_onnx(unsorted.SerializeToString()).layers] == \
        ["Sigmoid", "ReLU"]
    nothing = model([N("Relu", ["x"], ["a"])], (3,), "y")
    with pytest.raises(ValueError, match="no node makes the output 'y'"):
        load_onnx(nothing.SerializeToString())


def test_operators_and_options_refused():
    def refused(nodes, match, shape=(2, 4, 4), inits=(), opset=17, **kw):
        m = model(nodes, shape, nodes[-1].output[0], inits=inits, opset=opset, **kw)
        with pytest.raises(ValueError, match=match):
            load_onnx(m.SerializeToString())

    refused([N("Erf", ["x"], ["y"], name="e")],
            r"^<onnx>: node 'e' \(Erf\): operator 'Erf' \(supported: .*\) is not supported$")
    refused([N("MyOp", ["x"], ["y"], domain="com.example")],
            r"node 'y' \(MyOp\): an operator of domain 'com.example' \(custom ops\)")
    refused([N("Relu", ["x"], ["y"])], r"opset 6 \(opsets 7 to \d+ are\) is not supported",
            opset=6)
    refused([N("ConvTranspose", ["x", "W"], ["y"])], r"operator 'ConvTranspose'",
            inits={"W": np.zeros((2, 2, 3, 3), np.float32)})
    refused([N("Softmax", ["x"], ["y"], axis=0)], r"a softmax over the batch axis")
    refused([N("Pad", ["x", "p"], ["y"], mode="reflect")], r"mode 'reflect'",
            inits={"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)})
    refused([N("Clip", ["x", "lo", "hi"], ["y"])], r"clipping to \[-1.0, 1.0\]",
            inits={"lo": np.float32(-1), "hi": np.float32(1)})
    refused([N("Shape", ["x"], ["s"]), N("Reshape", ["x", "t"], ["y"])],
            r"a reshape to \[1, -1, 4\] that moves values across the batch axis \(symbolic\)",
            inits={"t": np.array([1, -1, 4], np.int64)})
    refused([N("Transpose", ["x"], ["y"], perm=[1, 0, 2, 3])], r"moves the batch axis")
    refused([N("Add", ["x", "c"], ["y"])], r"a constant of shape \(4, 4\) on \(N,\) \+ \(2, 4, 4\)",
            inits={"c": np.ones((4, 4), np.float32)})
    refused([N("Conv", ["x", "x"], ["y"])], r"the weight computed from the model's input")
    refused([N("Relu", ["x"], ["y"])], r"its shape \[None, 2, None, 4\] must be known",
            shape=(2, "H", 4))
    with pytest.raises(ValueError, match=r"a model with 2 inputs \(\['x', 'z'\]\)"):
        m = model([N("Add", ["x", "z"], ["y"])], (3,), "y")
        m.graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3]))
        load_onnx(m.SerializeToString())


def test_external_data(tmp_path):
    """Weights in a file beside the model: read, and checked against the dims, the file's size
    and the model's folder before a byte is read."""
    m = small_model()
    copy = onnx.ModelProto.FromString(m.SerializeToString())  # (save_model rewrites its model)
    onnx.save_model(copy, tmp_path / "ext.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    net = load_onnx(tmp_path / "ext.onnx")
    ref = load_onnx(m.SerializeToString())
    for key, value in ref.state_dict().items():
        np.testing.assert_array_equal(net.state_dict()[key], value, err_msg=key)
    with pytest.raises(ValueError, match="load the model from its path, not from bytes"):
        load_onnx((tmp_path / "ext.onnx").read_bytes())

    def with_location(location, length=None):
        damaged = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False)
        t = next(t for t in damaged.graph.initializer if t.name == "W")
        for entry in t.external_data:
            if entry.key == "location" and location is not None:
                entry.value = location
            if entry.key == "length" and length is not None:
                entry.value = str(length)
        path = tmp_path / "damaged.onnx"
        path.write_bytes(damaged.SerializeToString())
        return path

    for location in ("../weights.bin", "/etc/passwd", "sub/../../x", "C:\\x"):
        with pytest.raises(ValueError, match=r"initializer 'W': external data location .* "
                                             r"(must be a relative path|leaves the model)"):
            load_onnx(with_location(location))
    os.symlink("/etc", tmp_path / "link")
    with pytest.raises(ValueError, match="leads out of the model's folder"):
        load_onnx(with_location("link/passwd"))
    with pytest.raises(ValueError, match=r"'W': external data at offset \d+, length "
                                         r"10,000,000,000 does not fit"):
        load_onnx(with_location(None, length=10**10))
    with pytest.raises(ValueError, match=r"'W': its dims need 288 bytes, the external data "
                                         r"holds 8"):
        load_onnx(with_location(None, length=8))
    with pytest.raises(ValueError, match="cannot read its external data file"):
        load_onnx(with_location("nothing.bin"))


def test_deep_nesting_and_size_cap(tmp_path, monkeypatch):
    # A graph whose node has an attribute holding a graph … 1000 deep, written byte by byte
    # (protobuf refuses to build it): its parser's depth limit, a ValueError here.
    def field(number, payload):
        n, size = len(payload), b""
        while True:
            size += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                return bytes([number << 3 | 2]) + size + payload

    graph = b""
    for _ in range(1000):  # GraphProto.node → NodeProto.attribute → AttributeProto.g
        graph = field(1, field(5, field(6, graph)))
    with pytest.raises(ValueError, match="not an ONNX model"):
        load_onnx(b"\x08\x08" + field(7, graph))
    path = tmp_path / "m.onnx"
    path.write_bytes(small_model().SerializeToString())
    monkeypatch.setattr(files, "MAX_MODEL_BYTES", 100)
    with pytest.raises(ValueError, match=r"bytes is more than an ONNX model file can hold"):
        load_onnx(path)


def test_is_onnx_file(data, tmp_path):
    from onnx_files import LIGHT

    for name in os.listdir(LIGHT):
        if name.endswith(".onnx"):
            assert is_onnx_file(os.path.join(LIGHT, name)), name
    assert is_onnx_file(data) and is_onnx_file(bytearray(data))
    path = tmp_path / "saved.onnx"
    save_onnx(load_onnx(data), path)
    assert is_onnx_file(path)
    from robustcnn.models.squeezenet_dc import PROTOTXT, WEIGHTS

    h5 = tmp_path / "k.h5"
    import h5py

    with h5py.File(h5, "w") as f:
        f.attrs["model_config"] = "{}"
    not_onnx = [PROTOTXT, WEIGHTS, h5, b"", b"\x08", b"\x08\x00", b"RCNNMDL\x00" + data,
                b'name: "x"\n', data[:1] + b"\xff" * 20, b"\x08\x07\x3a\xff\xff\xff\x0f"]
    for thing in not_onnx:
        assert not is_onnx_file(thing), thing if isinstance(thing, bytes) else str(thing)
    assert not is_onnx_file(tmp_path / "missing.onnx")
    # onnx's own test files: a caffemodel-like NetParameter starts with a name (field 1, bytes)
    caffe = b"\x0a\x05small" + b"\xa2\x06\x00"
    assert not is_onnx_file(caffe)


def test_sparse_initializers_are_checked():
    def with_sparse(values, indices, dims):
        m = model([N("MatMul", ["x", "W"], ["y"])], (3,), "y")
        m.graph.sparse_initializer.append(helper.make_sparse_tensor(
            numpy_helper.from_array(np.asarray(values, np.float32), "W"),
            numpy_helper.from_array(np.asarray(indices, np.int64), "W/indices"), dims))
        return m.SerializeToString()

    net = load_onnx(with_sparse([1.0, 2.0], [0, 5], [3, 2]))
    np.testing.assert_array_equal(net.layers[0].params["weight"], [[1, 0, 0], [0, 0, 2]])
    net = load_onnx(with_sparse([1.0, 2.0], [[0, 0], [2, 1]], [3, 2]))
    np.testing.assert_array_equal(net.layers[0].params["weight"], [[1, 0, 0], [0, 0, 2]])
    with pytest.raises(ValueError, match=r"initializer 'W': an index is out of the 6 values"):
        load_onnx(with_sparse([1.0], [6], [3, 2]))
    with pytest.raises(ValueError, match=r"initializer 'W': an index is out of the dims"):
        load_onnx(with_sparse([1.0], [[3, 0]], [3, 2]))
    with pytest.raises(ValueError, match=r"initializer 'W': sparse dims \(1000000, 1000000\) "
                                         r"must be >= 0 and hold at most"):
        load_onnx(with_sparse([1.0], [0], [10**6, 10**6]))
    with pytest.raises(ValueError, match=r"indices of shape \(2,\) for 1 values"):
        load_onnx(with_sparse([1.0], [0, 1], [3, 2]))
