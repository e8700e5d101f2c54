"""The ONNX reader under ``robustcnn.limits``: a small file declaring large sizes (a sparse
initializer's dense dims, a folded constant, a chain of folds, typed fields that widen) is
refused by ``max_bytes`` before the allocation, in one line naming the file; the limit can be
raised; the net is built without drawing initial weights."""

import tracemalloc

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_files import model

import robustcnn
from robustcnn.engine import Net
from robustcnn.models.onnx import load_onnx

N = helper.make_node


def _bounded(load, peak=64 << 20):
    """``load()``'s exception, with NumPy's allocations during it under ``peak`` bytes."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as caught:
            load()
        assert tracemalloc.get_traced_memory()[1] < peak
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert "\n" not in message
    return message


def _sparse_model(dims):
    """A Gemm whose weight is a sparse initializer of ``dims`` with no entries (a 100-byte
    file)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dims[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, dims[1]])
    sparse = helper.make_sparse_tensor(helper.make_tensor("w", TensorProto.FLOAT, [0], []),
                                       helper.make_tensor("i", TensorProto.INT64, [0], []), dims)
    graph = helper.make_graph([N("Gemm", ["x", "w"], ["y"])], "g", [x], [y],
                              sparse_initializer=[sparse])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_sparse_initializer_is_counted_at_its_dense_size(tmp_path):
    path = tmp_path / "sparse.onnx"
    path.write_bytes(_sparse_model([2**14, 2**14]).SerializeToString())  # 2**28 floats: 1 GiB
    assert path.stat().st_size < 200
    message = _bounded(lambda: robustcnn.load(path))
    assert message.startswith(f"{path}: the initializer data takes 1,073,741,824 bytes, more "
                              f"than the limit of 536,870,912 bytes")
    assert "--max-model-bytes" in message
    small = _sparse_model([12, 4]).SerializeToString()
    assert len(small) < 150
    assert load_onnx(small).forward(np.ones((1, 12), np.float32)).shape == (1, 4)
    with pytest.raises(ValueError, match="the initializer data takes 192 bytes, more than the "
                                         "limit of 150 bytes"):
        load_onnx(small, max_bytes=150)  # 48 dense float32, no entries stored


def test_folded_constants_are_bounded_one_by_one_and_in_total():
    fill = helper.make_tensor("v", TensorProto.INT64, [1], [1])
    one = model([N("ConstantOfShape", ["s"], ["k"], value=fill), N("Add", ["x", "k"], ["y"])],
                (4,), "y", inits={"s": np.array([2**27], np.int64)})  # 1 GiB of int64
    message = _bounded(lambda: load_onnx(one.SerializeToString()))
    assert message.startswith("<onnx>: node 'k' (ConstantOfShape): the result takes "
                              "1,073,741,824 bytes, more than the limit")
    cast = model([N("ConstantOfShape", ["s"], ["k"],
                    value=helper.make_tensor("v", TensorProto.UINT8, [1], [1])),
                  N("Cast", ["k"], ["d"], to=TensorProto.DOUBLE), N("Add", ["x", "d"], ["y"])],
                 (4,), "y", inits={"s": np.array([2**20], np.int64)})  # 1 MiB → 8 MiB
    assert "(Cast): the result takes 8,388,608 bytes" in _bounded(
        lambda: load_onnx(cast.SerializeToString(), max_bytes=4 << 20))
    # Each fold under the limit, their total over it: x + (k ++ k ++ k ++ k) in 1 MiB pieces.
    nodes = [N("ConstantOfShape", ["s"], ["k"], value=fill)]
    for i in range(4):
        nodes.append(N("Concat", ["k" if i == 0 else f"c{i - 1}", "k"], [f"c{i}"], axis=0))
    chain = model(nodes + [N("Add", ["x", "c3"], ["y"])], (4,), "y",
                  inits={"s": np.array([1 << 17], np.int64)})
    # k 1 MiB, c0 2 MiB, c1 3 MiB: each under 4 MiB, 6 MiB in all at c1.
    message = _bounded(lambda: load_onnx(chain.SerializeToString(), max_bytes=4 << 20))
    assert "(Concat): the constants folded up to here takes 6,291,456 bytes" in message
    assert "'c1'" in message


def test_typed_fields_count_at_their_widened_size():
    """int32_data of UINT8 values becomes int64 on the way: 8 bytes a value, not 1."""
    t = helper.make_tensor("w", TensorProto.UINT8, [64], np.ones(64, np.int32).tolist())
    m = model([N("Cast", ["w"], ["f"], to=TensorProto.FLOAT), N("Add", ["x", "f"], ["y"])],
              (64,), "y")
    m.graph.initializer.append(t)
    with pytest.raises(ValueError, match="the initializer data takes 512 bytes"):
        load_onnx(m.SerializeToString(), max_bytes=500)
    assert load_onnx(m.SerializeToString(), max_bytes=4096) is not None


def test_the_file_and_the_net_are_bounded_and_no_weights_are_drawn(tmp_path, monkeypatch):
    w = np.arange(24, dtype=np.float32).reshape(6, 4)
    m = model([N("Gemm", ["x", "w"], ["y"])], (6,), "y", inits={"w": w})
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    size = path.stat().st_size
    with pytest.raises(ValueError, match=f"{path}: the model file takes {size} bytes, more than "
                                         f"the limit of {size - 1} bytes"):
        load_onnx(path, max_bytes=size - 1)
    # The weight folded from a ConstantOfShape (a small file), plus a bias of 64: the layer's
    # parameters are counted before it allocates them.
    fill = helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5])
    folded = model([N("ConstantOfShape", ["s"], ["w"], value=fill), N("Gemm", ["x", "w", "c"], ["y"])],
                   (64,), "y", inits={"s": np.array([64, 64], np.int64),
                                      "c": np.zeros(64, np.float32)})
    with pytest.raises(ValueError, match=r"\(Gemm\): the net's parameters up to here takes "
                                         r"16,640 bytes, more than the limit of 16,500"):
        load_onnx(folded.SerializeToString(), max_bytes=16_500)
    assert load_onnx(folded.SerializeToString(), max_bytes=16_640) is not None
    drawn = []
    real = Net.__init__

    def spy(self, *args, **kwargs):
        drawn.append(kwargs.get("init", True))
        real(self, *args, **kwargs)

    monkeypatch.setattr(Net, "__init__", spy)
    net = load_onnx(path)
    assert drawn == [False]
    np.testing.assert_allclose(net.forward(np.eye(6, dtype=np.float32)), w, rtol=1e-6)
    assert numpy_helper.to_array(m.graph.initializer[0]).shape == (6, 4)
