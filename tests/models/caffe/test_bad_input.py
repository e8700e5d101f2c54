"""Damaged and hostile Caffe files: truncated and bit-flipped caffemodels, mutated prototxts,
wrong field types, absurd declared sizes (refused before anything that large is allocated),
shapes that disagree between prototxt and weights. Each is a ValueError naming the file (and
the layer where there is one) — never another exception, a giant allocation or a hang."""

import re

import numpy as np
import pytest
from caffe_files import caffemodel_bytes, random_caffe_weights, write_h5_weights
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustcnn.models.caffe import (load_caffe, read_caffemodel, read_net, read_prototxt,
                                    read_weights)
from robustcnn.models.caffe.schema import messages

pytest.importorskip("google.protobuf", reason="protobuf (the caffe extra) writes the test files")

PROTOTXT = '''name: "small"
input: "data"
input_shape { dim: 1 dim: 2 dim: 6 dim: 6 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 stride: 1 group: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "pool" bottom: "pool" top: "sum"
        eltwise_param { coeff: 1 coeff: -0.5 } }
layer { name: "fc" type: "InnerProduct" bottom: "sum" top: "fc"
        inner_product_param { num_output: 4 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    proto = d / "small.prototxt"
    proto.write_text(PROTOTXT)
    weights = random_caffe_weights(load_caffe(proto), np.random.default_rng(0))
    model = d / "small.caffemodel"
    model.write_bytes(caffemodel_bytes(weights))
    return proto, model, model.read_bytes()


def only_value_errors(call, source):
    """Run ``call``: it either succeeds or raises a ValueError that names ``source``."""
    try:
        return call()
    except ValueError as e:
        assert str(source) in str(e), f"the message does not name {source}: {e}"
        return None


def test_every_truncation_of_a_caffemodel_is_refused(files, tmp_path):
    proto, _, data = files
    bad = tmp_path / "cut.caffemodel"
    cuts = sorted(set(range(0, len(data), max(1, len(data) // 150))) | {len(data) - 1})
    for cut in cuts:
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=re.escape(str(bad))):
            load_caffe(proto, bad)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), min_size=1, max_size=4))
def test_flipped_bytes_give_a_net_or_a_value_error(files, tmp_path_factory, flips):
    proto, _, data = files
    damaged = bytearray(data)
    for where, mask in flips:
        damaged[where % len(damaged)] ^= mask
    bad = tmp_path_factory.mktemp("flip") / "flipped.caffemodel"
    bad.write_bytes(bytes(damaged))
    net = only_value_errors(lambda: load_caffe(proto, bad), bad)
    if net is not None:  # a flip inside a float: still a finite net
        out = net.forward(np.ones((1, 2, 6, 6), dtype=np.float32))
        assert out.shape == (1, 4) and np.isfinite(out).all()


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_are_not_a_caffemodel(files, tmp_path_factory, data):
    proto = files[0]
    bad = tmp_path_factory.mktemp("rand") / "random.caffemodel"
    bad.write_bytes(data)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        load_caffe(proto, bad)


TOKENS = ["-1", "0", "1", "3", "2147483648", "1099511627776", "1e30", "-2.5", '"x"', "true",
          "MAX", "AVE", "FLOOR", "{", "}", ":", "layer", "bottom", "top", "num_output",
          "kernel_size", "axis", "dim", "coeff", "#", '"', "\\", "\x00", "\u00e9"]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["delete", "insert", "replace"]),
                          st.integers(0, 10**6), st.integers(1, 12), st.sampled_from(TOKENS)),
                min_size=1, max_size=3))
def test_mutated_prototxt_gives_a_net_or_a_value_error(tmp_path_factory, edits):
    text = PROTOTXT
    for op, where, length, token in edits:
        at = where % (len(text) + 1)
        if op == "delete":
            text = text[:at] + text[at + length:]
        elif op == "insert":
            text = text[:at] + " " + token + " " + text[at:]
        else:
            text = text[:at] + token + text[at + length:]
    proto = tmp_path_factory.mktemp("mut") / "mutated.prototxt"
    proto.write_text(text, encoding="utf-8")
    only_value_errors(lambda: load_caffe(proto), proto)


def test_absurd_sizes_are_refused_before_allocation(tmp_path):
    # A blob declaring 2**40 × 2**40 values but holding one.
    net_msg = messages()["NetParameter"]()
    layer = net_msg.layer.add(name="conv", type="Convolution")
    blob = layer.blobs.add()
    blob.shape.dim.extend([2**40, 2**40])
    blob.data.append(1.0)
    model = tmp_path / "huge_blob.caffemodel"
    model.write_bytes(net_msg.SerializeToString())
    with pytest.raises(ValueError, match=r"conv \(Convolution\) blob 0: its shape .* holds "
                                         r"1208925819614629174706176 values, the file has 1"):
        read_weights(model)
    # A length prefix of 2**31 bytes in a 10-byte file.
    model.write_bytes(b"\xa2\x06\x80\x80\x80\x80\x08" + b"abc")
    with pytest.raises(ValueError, match="not a Caffe binary NetParameter"):
        read_caffemodel(model)
    # A layer of 4 × 10**9 × 2 × 9 weights, an input of 10**15 values.
    text = PROTOTXT.replace("num_output: 3", "num_output: 4000000000")
    with pytest.raises(ValueError, match=r"conv \(Convolution\): declares 72,000,000,000 "
                                         r"weights"):
        load_caffe(text)
    text = PROTOTXT.replace("dim: 6 dim: 6", "dim: 100000000 dim: 10000000")
    with pytest.raises(ValueError, match=r"input shape .* at most 268,435,456 values"):
        load_caffe(text)
    # Nesting 10 000 deep.
    with pytest.raises(ValueError, match="nested more than 64 levels"):
        read_prototxt("layer {" * 10000 + "}" * 10000)
    with pytest.raises(ValueError, match="nested more than 64 levels"):
        read_net("layer {" * 10000 + "}" * 10000, parser="text")


def test_hdf5_shapes_are_checked_before_reading(files, tmp_path):
    h5py = pytest.importorskip("h5py")
    proto = files[0]
    weights = random_caffe_weights(load_caffe(proto), np.random.default_rng(0))
    path = tmp_path / "huge.caffemodel.h5"
    write_h5_weights(path, weights)
    with h5py.File(path, "r+") as f:
        del f["data/fc/0"]
        # 10**12 float32 values declared, none stored (chunked, never written): 1 TB if read.
        f.create_dataset("data/fc/0", shape=(10**6, 10**6), dtype=np.float32, chunks=(1, 1024))
    assert path.stat().st_size < 10**6
    with pytest.raises(ValueError, match=r"fc \(InnerProduct\): blob 0 \(weight\) has shape "
                                         r"\(1000000, 1000000\), the prototxt implies \(4, 27\)"):
        load_caffe(proto, path)
    with h5py.File(path, "w") as f:
        f.create_dataset("weights", data=np.zeros(3))
    with pytest.raises(ValueError, match="no 'data' group"):
        load_caffe(proto, path)
    with h5py.File(path, "w") as f:
        f.create_dataset("data/fc/0", data=np.array([b"text"]))
    with pytest.raises(ValueError, match=r"data/fc/0 is not a float dataset"):
        load_caffe(proto, path)


@pytest.mark.parametrize("parser", ["protobuf", "text"])
def test_wrong_field_types(tmp_path, parser):
    """Text: a string where a number goes, a message where a scalar goes, an unknown enum
    value. Binary: a layer name sent as a varint (wire type 0 where 2 is declared)."""
    for bad in ('num_output: "3"', "num_output { }", "num_output: 3.5", "kernel_size: MAX"):
        text = PROTOTXT.replace("num_output: 3", bad)
        with pytest.raises(ValueError, match=r"<prototxt>:5"):
            load_caffe(text, parser=parser)
    with pytest.raises(ValueError, match="<prototxt>:10"):
        load_caffe(PROTOTXT.replace("pool: MAX", "pool: MEDIAN"), parser=parser)
    model = tmp_path / "varint_name.caffemodel"
    # layer (field 100) holding name (field 1) with wire type 0 = 7
    model.write_bytes(b"\xa2\x06\x02\x08\x07")
    only_value_errors(lambda: read_caffemodel(model), model)
    with pytest.raises(ValueError, match=re.escape(str(model))):
        load_caffe(PROTOTXT, model)


def test_layer_names_that_are_not_utf8(files, tmp_path):
    """A flipped bit in a layer name can leave bytes that are not UTF-8 (found by fuzzing)."""
    proto, _, data = files
    start = data.index(b"\x0a\x02fc") + 2  # the name field of the layer "fc"
    model = tmp_path / "name.caffemodel"
    model.write_bytes(data[:start] + b"\xff\xfe" + data[start + 2:])
    with pytest.raises(ValueError, match=r"no weights for the layer\(s\) \['fc'\].*xff.*xfe"):
        load_caffe(proto, model)


def test_text_that_is_not_a_prototxt(tmp_path):
    path = tmp_path / "binary.prototxt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_caffe(path)
    path.write_bytes(b'name: "x"\x00\n')
    with pytest.raises(ValueError, match="NUL bytes"):
        read_prototxt(path)
    with pytest.raises(ValueError, match="no input"):
        load_caffe('name: "x"\nlayer { name: "r" type: "ReLU" bottom: "a" top: "a" }\n')
    with pytest.raises(ValueError, match="2 inputs need 8 input_dim values"):
        load_caffe('input: "a"\ninput: "b"\ninput_dim: 1 input_dim: 2\n')
    with pytest.raises(ValueError, match="a net with 2 inputs .* not supported yet"):
        load_caffe('input: "a" input: "b"\n' + "input_dim: 1 " * 8)


def test_truncated_hdf5_weights_are_refused(files, tmp_path):
    proto = files[0]
    whole = tmp_path / "w.caffemodel.h5"
    write_h5_weights(whole, random_caffe_weights(load_caffe(proto), np.random.default_rng(0)))
    data = whole.read_bytes()
    cut = tmp_path / "cut.caffemodel.h5"
    for n in (8, 512, len(data) // 2, len(data) - 64, len(data) - 1):
        cut.write_bytes(data[:n])
        with pytest.raises(ValueError, match=re.escape(str(cut))):
            load_caffe(proto, cut)
