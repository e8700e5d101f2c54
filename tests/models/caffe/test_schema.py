"""models/caffe/schema.py: the project's .proto subset compiled in Python, against protoc's
compilation of the same file (grpcio-tools, test extra), and the messages it makes."""

import numpy as np
import pytest
from caffe_files import blob_proto

from robustcnn.models.caffe.schema import PROTO, _build, _Reader, file_descriptor_proto, messages

pytest.importorskip("google.protobuf", reason="protobuf (the caffe extra) compiles the schema")


def _normalised(fdp):
    """protoc fills json_name and leaves proto2's syntax out; neither changes the wire format."""
    fdp = type(fdp).FromString(fdp.SerializeToString())
    fdp.name = "caffe_subset.proto"
    fdp.ClearField("syntax")
    fdp.ClearField("options")

    def walk(msg):
        for f in msg.field:
            f.ClearField("json_name")
        for n in msg.nested_type:
            walk(n)
    for m in fdp.message_type:
        walk(m)
    return fdp


def test_schema_equals_protocs_compilation(tmp_path):
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools (test extra) has protoc")
    from google.protobuf import descriptor_pb2

    out = tmp_path / "set.pb"
    rc = protoc.main(["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", str(PROTO)])
    assert rc == 0
    reference = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    ours = file_descriptor_proto()
    assert _normalised(ours) == _normalised(reference)
    assert len(ours.message_type) == 33


def test_field_numbers_of_the_wire_format():
    """A few of Caffe's field numbers, read off the bytes: layer = 100, V1 layers = 2,
    LayerParameter.blobs = 7, BlobProto.shape = 7 and its packed data = 5."""
    m = messages()
    net = m["NetParameter"](name="n")
    layer = net.layer.add(name="c", type="Convolution")
    layer.blobs.append(blob_proto(np.array([1.5], dtype=np.float32)))
    wire = net.SerializeToString()
    assert wire[:3] == b"\x0a\x01n"  # field 1, length-delimited, "n"
    assert wire[3:5] == b"\xa2\x06"  # field 100, wire type 2: (100 << 3 | 2) as a varint
    # data: field 5, packed, 4 bytes; then shape: field 7 holding dim (field 1, packed) = [1]
    assert layer.blobs[0].SerializeToString() == \
        b"\x2a\x04" + np.float32(1.5).tobytes() + b"\x3a\x03\x0a\x01\x01"
    v1 = m["NetParameter"]()
    v1.layers.add(name="x")
    assert v1.SerializeToString()[:1] == b"\x12"  # field 2, wire type 2


def test_defaults_and_enums():
    m = messages()
    conv = m["ConvolutionParameter"]()
    assert conv.bias_term is True and conv.group == 1 and conv.axis == 1
    bn = m["BatchNormParameter"]()
    assert bn.moving_average_fraction == pytest.approx(0.999) and bn.eps == pytest.approx(1e-5)
    pool = m["PoolingParameter"]()
    assert pool.pool == 0 and pool.round_mode == 0 and pool.stride == 1
    assert m["FillerParameter"]().type == "constant"
    assert m["LRNParameter"]().beta == pytest.approx(0.75)


@pytest.mark.parametrize("text,message", [
    ("syntax = \"proto3\";", "only proto2"),
    ("message A { optional B b = 1; }", "unknown type 'B'"),
    ("message A { optional int32 a = 1; optional int32 b = 1; }", "used twice"),
    ("message A { required int32 a = 1; }", "expected a field"),
    ("message A { optional int32 a = 1 [deprecated = true]; }", "not understood"),
    ("message A { optional int32 a = 1 ", "unexpected end of file"),
    ("message A {} message A {}", "declared twice"),
])
def test_schema_reader_rejects_what_it_does_not_understand(text, message):
    with pytest.raises(ValueError, match=message):
        _build(*_Reader(text, "x.proto").file(), "x.proto")
