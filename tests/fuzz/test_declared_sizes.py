"""Property tests (hypothesis, seeded): whatever sizes a file's header declares, reading it
allocates no more than the limit allows — each case is read in this process with tracemalloc
watching NumPy's allocations, under a small ``max_bytes``, and ends loaded or with a ValueError
naming the file."""

import hashlib
import io
import json
import struct
import tracemalloc
import zlib

import h5py
import numpy as np
import pytest
from fuzz_formats import PROTOTXT, small_net
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
LIMIT = 1 << 20  # max_bytes of these reads
PEAK = 8 << 20  # what they may allocate: the limit, the file, copies of both

sizes = st.one_of(st.integers(0, 40), st.sampled_from([2**16, 2**31 - 1, 2**31, 2**32 - 1]),
                  st.integers(0, 2**32 - 1))


def _bounded(read, source):
    """Run ``read()``: it returns or raises a ValueError naming ``source``; NumPy's peak
    allocation stays under ``PEAK``."""
    tracemalloc.start()
    try:
        read()
    except ValueError as e:
        assert str(source) in str(e), e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PEAK, f"{peak:,} bytes allocated"


@SETTINGS
@given(code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]),
       dims=st.lists(sizes, min_size=1, max_size=4), extra=st.integers(0, 64))
def test_idx_headers(tmp_path_factory, code, dims, extra):
    from robustcnn.models.idx import read_idx

    path = tmp_path_factory.mktemp("idx") / "f-idx"
    path.write_bytes(bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
                     + bytes(extra))
    _bounded(lambda: read_idx(path, max_bytes=LIMIT), path)


def _reseal(data, edit):
    magic, version, hlen = struct.unpack_from("<8sHI", data)
    header = json.loads(zlib.decompress(data[14:14 + hlen]))
    edit(header)
    h = zlib.compress(json.dumps(header).encode())
    body = struct.pack("<8sHI", magic, version, len(h)) + h + data[14 + hlen:-32]
    return body + hashlib.sha256(body).digest()


@SETTINGS
@given(entry=st.integers(0, 12), shape=st.lists(sizes, max_size=3),
       dtype=st.sampled_from(["<f4", "<f8", "|u1", "<i8"]), nbytes=sizes,
       layer=st.integers(0, 8), width=sizes)
def test_rcnn_array_tables_and_architectures(tmp_path_factory, entry, shape, dtype, nbytes,
                                             layer, width):
    from robustcnn.compress.modelfile import decode_model, encode_model

    data = encode_model(small_net(), {})

    def edit(header):
        arrays = header["arrays"]
        arrays[entry % len(arrays)].update(shape=shape, dtype=dtype, nbytes=nbytes)
        cfg = header["spec"]["layers"][layer]
        for key in ("out_features", "out_channels"):
            if key in cfg:
                cfg[key] = width

    source = "hostile.rcnn"
    _bounded(lambda: decode_model(_reseal(data, edit), source=source, max_bytes=LIMIT), source)


@SETTINGS
@given(shape=st.lists(sizes, min_size=1, max_size=3), dtype=st.sampled_from(["f4", "f8", "i2"]),
       which=st.integers(0, 20))
def test_checkpoint_datasets(tmp_path_factory, shape, dtype, which):
    from robustcnn.engine.checkpoint import load_net, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "c.h5"
    save_checkpoint(path, small_net())
    with h5py.File(path, "r+") as f:
        names = []
        f["state"].visititems(lambda k, o: names.append(k) if isinstance(o, h5py.Dataset)
                              else None)
        name = f"state/{sorted(names)[which % len(names)]}"
        del f[name]
        f.create_dataset(name, shape=tuple(shape), dtype=dtype,
                         chunks=tuple(max(min(s, 64), 1) for s in shape) if all(shape) else None)
    _bounded(lambda: load_net(path, max_bytes=LIMIT), path)


@SETTINGS
@given(num_output=sizes, dims=st.lists(st.integers(1, 2**20), min_size=3, max_size=3),
       kernel=st.integers(1, 2**12), pad=st.integers(0, 2**20))
def test_caffe_prototxt_sizes(num_output, dims, kernel, pad):
    from robustcnn.models.caffe import load_caffe

    text = (PROTOTXT.replace("num_output: 4", f"num_output: {num_output}")
            .replace("dim: 2 dim: 6 dim: 6", "dim: {} dim: {} dim: {}".format(*dims))
            .replace("kernel_size: 3 pad: 1", f"kernel_size: {kernel} pad: {pad}"))
    _bounded(lambda: load_caffe(text, max_bytes=LIMIT), "<prototxt>")


@SETTINGS
@given(units=sizes, filters=sizes)
def test_keras_configs(tmp_path_factory, units, filters):
    from robustcnn.models.keras import load_keras, save_keras

    path = tmp_path_factory.mktemp("keras") / "m.h5"
    save_keras(small_net(), path)
    with h5py.File(path, "r+") as f:
        text = f.attrs["model_config"]
        cfg = json.loads(text if isinstance(text, str) else text.decode())
        for layer in cfg["config"]["layers"]:
            c = layer.get("config", {})
            if "units" in c:
                c["units"] = units
            if "filters" in c:
                c["filters"] = filters
        f.attrs["model_config"] = json.dumps(cfg)
    _bounded(lambda: load_keras(path, max_bytes=LIMIT), path)
