"""The compressed model file: bit-exact round trips, refusal of damaged files, size accounting,
and a small end-to-end compression."""

import hashlib
import struct
import zlib

import numpy as np
import pytest

from robustcnn.compress import modelfile
from robustcnn.compress.modelfile import (decode_model, encode_model, encoded_size, load_model,
                                          read_model_bytes, read_model_file, save_model)
from robustcnn.compress.pipeline import CompressionSettings, compress
from robustcnn.compress.prune import prune
from robustcnn.compress.quantize import quantize
from robustcnn.compress.report import dense_parameter_bytes, format_layer_table, layer_table
from robustcnn.engine import Conv2d, Linear, MaxPool2d, Net, ReLU
from robustcnn.engine.formats import huffman
from robustcnn.models.lenet import lenet5


def compressed_lenet5(huffman_coded=True):
    net = lenet5(seed=5)
    prune(net, {"conv1": 0.34, "conv2": 0.88, "ip1": 0.92, "ip2": 0.81})
    quantize(net, {"conv1": 8, "conv2": 8, "ip1": 5, "ip2": 5})
    if huffman_coded:
        for name in ("conv1", "conv2", "ip1", "ip2"):
            f = net[name].weight_format
            net.convert(name, "huffman", code_bits=f.code_bits, gap_bits=f.gap_bits)
    return net


@pytest.fixture(scope="module")
def net():
    return compressed_lenet5()


@pytest.fixture()
def saved(net, tmp_path):
    path = tmp_path / "lenet5.rcnn"
    size = save_model(path, net, meta={"dataset": "fashion-mnist", "accuracy": 0.9})
    return path, size


def test_round_trip_is_bit_exact(net, saved):
    path, size = saved
    assert size == path.stat().st_size
    loaded, meta = load_model(path)
    assert meta == {"dataset": "fashion-mnist", "accuracy": 0.9}
    ours = net.state_dict()
    for key, value in loaded.state_dict().items():
        assert value.dtype.kind == ours[key].dtype.kind
        np.testing.assert_array_equal(value, ours[key], err_msg=key)  # storage: exact
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(loaded.forward(x), net.forward(x))  # same kernels, same bits
    for name in ("conv1", "conv2", "ip1", "ip2"):
        assert loaded[name].weight_format.kind == "huffman"


def test_saving_twice_gives_the_same_bytes(net, tmp_path):
    save_model(tmp_path / "a.rcnn", net)
    save_model(tmp_path / "b.rcnn", net)
    assert (tmp_path / "a.rcnn").read_bytes() == (tmp_path / "b.rcnn").read_bytes()


def test_damaged_files_are_refused(saved, tmp_path):
    path, _ = saved
    data = path.read_bytes()
    cases = {
        "truncated": data[:len(data) // 2],
        "one byte short": data[:-1],
        "flipped byte": data[:200] + bytes([data[200] ^ 0x40]) + data[201:],
        "bad magic": b"XXXXXXXX" + data[8:],
        "empty": b"",
    }
    for label, blob in cases.items():
        bad = tmp_path / f"{label}.rcnn"
        bad.write_bytes(blob)
        with pytest.raises(ValueError, match=str(bad.name).replace(".", r"\.")):
            load_model(bad)


def test_bytes_are_the_file(net, saved):
    """encode_model gives the bytes save_model writes; decode_model and read_model_bytes read
    them as load_model and read_model_file read the file."""
    path, size = saved
    data = encode_model(net, {"dataset": "fashion-mnist", "accuracy": 0.9})
    assert data == path.read_bytes() and len(data) == size
    loaded, meta = decode_model(data)
    assert meta == {"dataset": "fashion-mnist", "accuracy": 0.9}
    x = np.random.default_rng(1).random((3, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(loaded.forward(x), net.forward(x))
    from_bytes, from_file = read_model_bytes(data), read_model_file(path)
    assert from_bytes["spec"] == from_file["spec"] == net.spec()
    assert from_bytes["file_bytes"] == from_file["file_bytes"] == size
    assert from_bytes["header_bytes"] == from_file["header_bytes"]
    for key, value in from_file["state"].items():
        np.testing.assert_array_equal(from_bytes["state"][key], value, err_msg=key)


def test_damaged_bytes_are_refused_naming_their_source(saved):
    data = saved[0].read_bytes()
    flipped = data[:300] + bytes([data[300] ^ 1]) + data[301:]
    with pytest.raises(ValueError, match="^conv-net: checksum mismatch"):
        decode_model(flipped, source="conv-net")
    with pytest.raises(ValueError, match="^<model bytes>: not a robustcnn model file"):
        read_model_bytes(b"X" * 100)


@pytest.mark.parametrize("meta", [None, {"model": "lenet5", "note": "x" * 300}])
def test_encoded_size_from_the_array_table_alone(net, meta):
    data = encode_model(net, meta)
    n = struct.unpack_from("<I", data, 10)[0]
    header = __import__("json").loads(zlib.decompress(data[14:14 + n]))
    assert encoded_size(header["spec"], meta, header["arrays"]) == len(data)
    # the arrays' bytes count as declared, not as a net's: an empty table leaves the header
    empty = encoded_size(header["spec"], meta, [])
    assert empty < len(data) - sum(a["nbytes"] for a in header["arrays"])


def _rewrite(data, edit):
    """The file with its header edited by ``edit(dict)`` and a valid checksum again."""
    magic, version, n = struct.unpack_from("<8sHI", data)
    header = __import__("json").loads(zlib.decompress(data[14:14 + n]))
    rest = data[14 + n:-32]
    version = edit(header) or version
    new = zlib.compress(__import__("json").dumps(header).encode())
    body = struct.pack("<8sHI", magic, version, len(new)) + new + rest
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("edit, match", [
    (lambda h: 2, "version 2 is not supported"),
    (lambda h: h["arrays"][0].update(dtype="|O"), "unsupported dtype"),
    (lambda h: h["arrays"][0].update(nbytes=h["arrays"][0]["nbytes"] + 4), "declares"),
    (lambda h: h["arrays"].pop() and None, "belong to no array"),
    (lambda h: h["arrays"][0].update(shape=[10 ** 12]), "declares"),
    (lambda h: h.pop("spec") and None, "lacks"),
    (lambda h: h["spec"]["layers"][0].update({"class": "os.system"}), "unknown layer class"),
])
def test_tampered_headers_with_valid_checksums_are_refused(saved, tmp_path, edit, match):
    path, _ = saved
    bad = tmp_path / "tampered.rcnn"
    bad.write_bytes(_rewrite(path.read_bytes(), edit))
    with pytest.raises(ValueError, match=match):
        load_model(bad)


def test_tampered_arrays_with_valid_checksum_fail_format_validation(saved, tmp_path):
    # A file re-checksummed after conv2's entry count was changed: the checksum passes, the
    # format's own validation (its streams no longer hold that many symbols) must not.
    path, _ = saved
    loaded, _ = load_model(path)
    loaded["conv2"].weight_format.arrays()["count"][0] += 3
    bad = tmp_path / "tampered.rcnn"
    save_model(bad, loaded)
    with pytest.raises(ValueError, match=r"tampered\.rcnn: conv2 \(Convolution\)"):
        load_model(bad)


def test_size_table(net, saved):
    path, size = saved
    rows = layer_table(net)
    total = rows[-1]
    assert [r["layer"] for r in rows] == ["conv1", "conv2", "ip1", "ip2", "total"]
    assert total["weights"] == 430500
    assert total["kept"] == pytest.approx((330 + 3000 + 32000 + 950) / 430500)
    assert total["P"] > total["P+Q"] > total["P+Q+H"]
    for r in rows[:-1]:
        fmt = net[r["layer"]].weight_format
        assert r["P+Q+H"] == fmt.stored_bytes()
        # Huffman within 1 bit/symbol of the entropy of each stream (Huffman's bound)
        dec = fmt.decoded()
        codes, gaps, _ = dec.entries()
        for stream, symbols in ((fmt.codes, codes), (fmt.gaps, gaps)):
            h = huffman.entropy_bits(np.bincount(symbols))
            assert h <= stream.nbits <= h + symbols.size
    # The file holds the weights' streams plus biases, architecture and header: a little more.
    assert total["P+Q+H"] < size < total["P+Q+H"] + 6000
    assert dense_parameter_bytes(net) == 4 * 431080
    text = format_layer_table(rows, file_bytes=size, dense_bytes=dense_parameter_bytes(net))
    assert "ratio P+Q+H" in text and f"{size:,} bytes" in text


def tiny_net(seed=0):
    return Net([Conv2d("conv1", 6, 3), MaxPool2d("pool1", 2), ReLU("relu1"), Linear("ip1", 32),
                ReLU("relu2"), Linear("ip2", 4)], input_shape=(1, 10, 10), seed=seed, name="tiny")


def test_end_to_end_on_a_tiny_model(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.2, (256, 1, 10, 10)).astype(np.float32)
    y = rng.integers(0, 4, 256)
    for i, k in enumerate(y):
        x[i, 0, 2 * k:2 * k + 3, 2:8] += 0.8
    from robustcnn.engine.train import SGD, Schedule, fit

    net = tiny_net()
    fit(net, x, y, epochs=4, batch_size=32, optimizer=SGD(0.9, 0.0),
        schedule=Schedule("constant", 0.02), progress=False, log=None)
    dense_acc = net.accuracy(x, y)
    settings = CompressionSettings(kept={"conv1": 0.5, "ip1": 0.25, "ip2": 0.5},
                                   bits={"conv1": 4, "ip1": 4, "ip2": 4}, rounds=2,
                                   retrain_epochs=1, finetune_epochs=1, lr=0.01,
                                   finetune_lr=0.001, batch_size=32)
    report = compress(net, x, y, settings, val=(x, y), progress=False, log=print)
    assert [s["stage"] for s in report["stages"]] == [
        "dense", "prune+retrain 1/2", "prune+retrain 2/2", "quantize", "fine-tune centroids",
        "huffman"]
    assert report["stages"][-1]["accuracy"] >= dense_acc - 0.1
    assert net["ip1"].weight_format.kind == "huffman"
    path = tmp_path / "tiny.rcnn"
    size = save_model(path, net)
    loaded, _ = load_model(path)
    np.testing.assert_array_equal(loaded.forward(x[:8]), net.forward(x[:8]))
    assert size < dense_parameter_bytes(net)


def test_a_header_whose_meta_is_not_an_object_is_refused(tmp_path):
    """Found by the fuzzing: a resealed header with ``"meta": 3`` ended in a TypeError."""
    import json

    data = encode_model(Net([Linear("ip1", 3)], (4,)), {"model": "m"})
    magic, version, hlen = struct.unpack_from("<8sHI", data)
    header = json.loads(zlib.decompress(data[14:14 + hlen]))
    header["meta"] = 3
    h = zlib.compress(json.dumps(header).encode())
    body = struct.pack("<8sHI", magic, version, len(h)) + h + data[14 + hlen:-32]
    path = tmp_path / "meta.rcnn"
    path.write_bytes(body + hashlib.sha256(body).digest())
    import robustcnn

    with pytest.raises(ValueError, match=f"{path}: the header's meta is not a JSON object"):
        robustcnn.load(path)


@pytest.mark.parametrize("dtype", [{}, [], None, 3])
def test_an_array_entry_with_a_dtype_that_is_not_a_name_is_refused(dtype):
    """Found by the long fuzzing run: a header whose dtype is a JSON object raised TypeError."""
    from robustcnn.compress.modelfile import _check_entry

    with pytest.raises(ValueError, match="unsupported dtype"):
        _check_entry({"name": "w", "dtype": dtype, "shape": [1], "nbytes": 4}, "m.rcnn")


@pytest.mark.parametrize("shape", [[True, 0], [0, False], [0, 2**70], [2.0], [-1]])
def test_an_array_entry_whose_shape_is_not_sizes_is_refused(shape):
    """Found by the long fuzzing run (10,000 mutants): a header shape [true, 0] declares 0
    bytes, passed the check (a JSON true is a Python int) and NumPy's reshape raised
    TypeError."""
    from robustcnn.compress.modelfile import _check_entry

    with pytest.raises(ValueError, match=f"^m.rcnn: array w has a bad shape"):
        _check_entry({"name": "w", "dtype": "<f4", "shape": shape, "nbytes": 0}, "m.rcnn")
