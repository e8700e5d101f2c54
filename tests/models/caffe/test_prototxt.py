"""models/caffe/prototxt.py: the text-format parser (untyped, then typed against the schema),
nets built from prototxts by either reader, and reading without protobuf installed.

Every test that builds a net runs with both readers (``parser``: the project's "text" parser
and "protobuf"'s, skipped where protobuf is absent); test_parsers_agree.py checks that the two
build identical nets from every prototxt the tests have."""

import re
import sys

import numpy as np
import pytest
from caffe_files import random_caffe_weights, write_h5_weights
from helpers import assert_close

from robustcnn.engine import Concat, Conv2d, Linear, MaxPool2d
from robustcnn.models.caffe import (Message, has_protobuf, load_caffe, parse_net, parse_prototxt,
                                    read_net)
from robustcnn.models.caffe.schema import fields
from robustcnn.models.squeezenet_dc import PROTOTXT


def raises_naming(*fragments, error=ValueError):
    """pytest.raises whose message contains each fragment, in order."""
    pattern = ".*".join(re.escape(str(f)) for f in fragments)
    return pytest.raises(error, match=re.compile(pattern, re.DOTALL))


@pytest.fixture(params=["text", "protobuf"])
def parser(request):
    if request.param == "protobuf":
        pytest.importorskip("google.protobuf", reason="protobuf (the caffe extra) not installed")
    return request.param


# --- the untyped parser ----------------------------------------------------------------------


def test_parse_text_format():
    msg = parse_prototxt("""
        name: "tiny"   # a comment
        input: 'data'
        input_dim: 1 input_dim: 3; input_dim: 8, input_dim: 8
        layer {
          name: "c/1" type: "Convolution"
          convolution_param { num_output: 4 kernel_size: [3, 5] bias_term: false
                              weight_filler: < type: "gaussian" std: 1e-2 > }
          note: "tab\\there \\"quoted\\"" " and more"
        }
        layer { pooling_param { pool: AVE stride: 0x2 } ratio: -.5 big: inf }
    """)
    assert msg["name"] == ["tiny"] and msg["input"] == ["data"]
    assert msg["input_dim"] == [1, 3, 8, 8]
    conv, pool = msg["layer"]
    p = conv["convolution_param"][0]
    assert p["kernel_size"] == [3, 5] and p["bias_term"] == [False]
    assert p["weight_filler"][0]["std"][0] == pytest.approx(0.01)
    assert conv["note"] == ['tab\there "quoted" and more']
    assert pool["pooling_param"][0] == {"pool": ["AVE"], "stride": [2]}
    assert pool["ratio"] == [-0.5] and pool["big"] == [float("inf")]


def test_lists_of_messages_and_escapes():
    msg = parse_prototxt('include [{ phase: TEST }, < stage: "a" >] s: "\\303\\251\\u00e9\\x41"')
    assert msg["include"] == [{"phase": ["TEST"]}, {"stage": ["a"]}]
    assert msg["s"] == ["ééA"]  # escapes are bytes of UTF-8 (\303\251 is é), \u a code point


@pytest.mark.parametrize("text, fragment", [
    ("layer {\n  name: 'x'\n", "missing '}'"),
    ("a: 1\nb {\n c: }\n}", ":3: expected a value for 'c'"),
    ("a 1", "expected ':' or '{' after 'a'"),
    ("a: 1\n}", "expected a field name"),
    ("a: [1, 2", "unexpected end"),
    ("a: 'x\\q'", "unknown escape"),
    ("a: 1\n@", ":2: unexpected character '@'"),
    ("a: '\\377'", "not valid UTF-8"),
    ("a {" * 70 + "}" * 70, "nested more than 64 levels"),
])
def test_parse_errors_name_the_line(text, fragment):
    with raises_naming("<prototxt>", fragment):
        parse_prototxt(text)


# --- typed against the schema ----------------------------------------------------------------


def test_typed_message_has_the_schemas_defaults_and_types():
    net = parse_net('name: "t" layer { name: "p" type: "Pooling" pooling_param { pool: 1 '
                    'kernel_size: 010 stride: 0x2 } include { phase: TEST } } '
                    'layer { relu_param { negative_slope: 0.1 } dropout_param { '
                    'dropout_ratio: 1e-50 } convolution_param { bias_term: f pad: [1, 2] } }')
    assert isinstance(net, Message) and net.message_type == "NetParameter"
    pool, other = net.layer
    p = pool.pooling_param
    assert p.pool == "AVE" and p.kernel_size == 8 and p.stride == 2  # enum by number, octal, hex
    assert p.round_mode == "CEIL" and not p.has("round_mode")  # the schema's default, unset
    assert p.values("kernel_size") == [8] and p.values("pad") == []
    assert pool.include[0].phase == "TEST" and other.include == ()
    assert other.relu_param.negative_slope == 0.1  # the float32 value, as the file spells it
    assert other.dropout_param.dropout_ratio == 0.0  # below float32's range
    c = other.convolution_param
    assert c.bias_term is False and c.pad == (1, 2) and c.values("pad") == [1, 2]
    assert c.weight_filler.type == "constant" and not c.has("weight_filler")
    assert net.state.phase == "TEST" and net.layers == ()
    with pytest.raises(AttributeError, match="ConvolutionParameter has no field 'num_ouput'"):
        c.num_ouput  # noqa: B018


@pytest.mark.parametrize("spelling, value", [
    ("-inf", -np.inf), ("inff", np.inf), ("INF", np.inf), ("-Infinity", -np.inf),
    ("1.5e3f", 1500.0), ("-.5", -0.5), ("5.", 5.0), ("+3", 3.0), ("1e39", np.inf),
    ("3.4028235e38", 3.4028234663852886e38)])
def test_float_spellings(spelling, value):
    layer = parse_net(f"layer {{ relu_param {{ negative_slope: {spelling} }} }}").layer[0]
    assert layer.relu_param.negative_slope == pytest.approx(value, rel=1e-7)
    nan = parse_net("layer { relu_param { negative_slope: nanf } }").layer[0]
    assert np.isnan(nan.relu_param.negative_slope)


def test_message_methods_are_no_field_names():
    """A Message reads fields as attributes: none may hide behind one of its own names."""
    names = {n for table in fields().values() for n in table}
    assert not names & {n for n in dir(Message) if not n.startswith("_")}


@pytest.mark.parametrize("text, line, fragments", [
    ('layer {\n name: "c"\n convolution_param { num_ouput: 3 } }', 3,
     ["ConvolutionParameter has no field named 'num_ouput'"]),
    ('layer { convolution_param {\n num_output: -3 } }', 2,
     ["ConvolutionParameter.num_output", "-3 is out of range for uint32"]),
    ('layer { convolution_param { num_output: "3" } }', 1, ["num_output", "expected a uint32"]),
    ('layer { convolution_param { num_output: 3.5 } }', 1, ["num_output", "expected an integer"]),
    ('layer { convolution_param { num_output: 08 } }', 1, ["num_output", "expected an integer"]),
    ('layer { convolution_param { num_output { } } }', 1, ["num_output", "found a message"]),
    ('layer { convolution_param { kernel_size: MAX } }', 1, ["kernel_size", "expected an integer"]),
    ('layer { convolution_param: 3 }', 1, ["convolution_param", "expected a message"]),
    ('layer { pooling_param { pool: MEDIAN } }', 1,
     ["PoolingParameter.pool", "MEDIAN is not a value of PoolingParameter.PoolMethod"]),
    ('layer { pooling_param { pool: 7 } }', 1, ["7 is not a value"]),
    ('layer { pooling_param { global_pooling: 2 } }', 1, ["expected true or false"]),
    ('layer { relu_param { negative_slope: 0x10 } }', 1, ["negative_slope", "expected a number"]),
    ('layer { name: a }', 1, ["LayerParameter.name", "expected a quoted string"]),
    ('layer {\n name: "a"\n name: "b" }', 3,
     ["LayerParameter.name", "given twice (lines 2 and 3)"]),
    ('name: ["a"]', 1, ["NetParameter.name", "a list [...] is for repeated fields only"]),
    ('input_dim: 4294967296', 1, ["NetParameter.input_dim", "out of range for int32"]),
])
def test_type_errors_name_the_line_and_field(text, line, fragments):
    with raises_naming(f"<prototxt>:{line}: ", *fragments):
        parse_net(text)


def test_protobuf_and_text_give_equal_messages_for_the_squeezenet_file():
    pytest.importorskip("google.protobuf", reason="protobuf (the caffe extra) not installed")
    ours, theirs = read_net(PROTOTXT, parser="text"), read_net(PROTOTXT, parser="protobuf")
    assert ours == theirs and len(ours.layer) > 60


# --- nets ------------------------------------------------------------------------------------

HEAD = 'name: "t"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 9\ninput_dim: 9\n'


def conv(name, bottom, top, extra):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}" '
            f'convolution_param {{ {extra} }} }}\n')


SMALL_NET = HEAD + """
layer { name: "a/conv" type: "Convolution" bottom: "data" top: "a"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "a/relu" type: "ReLU" bottom: "a" top: "a" }   # in place
layer { name: "b" type: "Convolution" bottom: "a" top: "b"
        convolution_param { num_output: 4 kernel_h: 1 kernel_w: 3 pad_w: 1 pad_h: 0 group: 2
                            bias_term: false } }
layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" }
layer { name: "p" type: "Pooling" bottom: "cat" top: "p"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "drop" type: "Dropout" bottom: "p" top: "p" dropout_param { dropout_ratio: 0.25 } }
layer { name: "ip" type: "InnerProduct" bottom: "p" top: "ip"
        inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def test_small_net_from_prototxt(parser):
    net = load_caffe(SMALL_NET, parser=parser)
    assert net.name == "t" and net.input_shape == (3, 9, 9)
    assert net.blob_shapes["cat"] == (12, 9, 9)
    assert net.blob_shapes["p"] == (12, 4, 4)  # ceil((9 − 3) / 2) + 1
    b = net["b"]
    assert isinstance(b, Conv2d) and b.kernel == (1, 3) and b.padding == (0, 1) and b.groups == 2
    assert "bias" not in b.params and b.params["weight"].shape == (4, 4, 1, 3)
    assert net["drop"].p == 0.25 and isinstance(net["ip"], Linear)
    assert isinstance(net["cat"], Concat)
    assert net.output == "prob" and net.num_classes == 10
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9)).astype(np.float32)
    assert_close(net.forward(x).sum(axis=1), np.ones(2), 1e-6, "softmax rows")


INPUT_FORMS = {
    "input_shape": 'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 5 dim: 7 }\n',
    "Input layer": ('layer { name: "data" type: "Input" top: "data" '
                    'input_param { shape { dim: 10 dim: 3 dim: 5 dim: 7 } } }\n'),
}
TRAIN_ONLY = ('layer { name: "d" type: "Dropout" bottom: "c" top: "c" '
              '        include { phase: TRAIN } }\n'
              'layer { name: "e" type: "Data" top: "c" exclude { phase: TEST } }')


@pytest.mark.parametrize("form", INPUT_FORMS)
def test_input_forms_and_phases(form, parser):
    text = INPUT_FORMS[form] + conv("c", "data", "c", "num_output: 2 kernel_size: 1") + TRAIN_ONLY
    net = load_caffe(text, parser=parser)
    assert net.input_shape == (3, 5, 7) and [l.name for l in net.layers] == ["c"]


def test_pooling_variants(parser):
    pool = ('layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" '
            'pooling_param {{ {} }} }}')
    shapes = {"pool: AVE kernel_size: 2": (3, 8, 8),  # Caffe's default stride is 1
              "pool: MAX kernel_size: 2 stride: 2": (3, 5, 5),  # ceil mode
              "pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR": (3, 4, 4),
              "pool: AVE global_pooling: true": (3, 1, 1),
              "pool: MAX global_pooling: true": (3, 1, 1)}
    for param, shape in shapes.items():
        net = load_caffe(HEAD + pool.format(param), parser=parser)
        assert net.output_shape == shape, param
    net = load_caffe(HEAD + pool.format("pool: MAX global_pooling: true"), parser=parser)
    assert isinstance(net["p"], MaxPool2d) and net["p"].kernel == (9, 9)


def test_v1_layers(parser):
    text = HEAD + ('layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" '
                   'convolution_param { num_output: 2 kernel_size: 3 } }\n'
                   'layers { name: "r" type: RELU bottom: "c" top: "c" }\n'
                   'layers { name: "f" type: FLATTEN bottom: "c" top: "f" }\n')
    net = load_caffe(text, parser=parser)
    assert [(l.name, l.type) for l in net.layers] == [("c", "Convolution"), ("r", "ReLU"),
                                                      ("f", "Flatten")]
    assert net.output_shape == (2 * 7 * 7,)


@pytest.mark.parametrize("text, fragments", [
    (HEAD + 'layer { name: "fire2/odd" type: "TanH" bottom: "data" top: "x" }',
     ["fire2/odd (TanH)", "layer type 'TanH' is not supported"]),
    (HEAD + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
            'pooling_param { pool: STOCHASTIC kernel_size: 2 } }', ["p (Pooling)", "STOCHASTIC"]),
    (HEAD + 'layer { name: "g" type: "Pooling" bottom: "data" top: "g" '
            'pooling_param { pool: MAX global_pooling: true stride: 2 } }',
     ["g (Pooling)", "global pooling takes no pad or stride"]),
    (HEAD + conv("c", "data", "c", "kernel_size: 3"), ["c (Convolution)", "num_output"]),
    (HEAD + conv("c", "data", "c", "num_output: 2"),
     ["c (Convolution)", "kernel_size is required"]),
    (HEAD + conv("c", "data", "c", "num_output: 2 kernel_size: 3 kernel_h: 3"),
     ["c (Convolution)", "kernel_size or both kernel_h and kernel_w"]),
    (HEAD + conv("c", "nowhere", "c", "num_output: 2 kernel_size: 3"),
     ["c (Convolution)", "'nowhere'"]),
    (HEAD + 'layer { name: "d" type: "Dropout" bottom: "data" top: "data" '
            'dropout_param { dropout_ratio: 1.5 } }', ["d (Dropout)"]),
    # (per position over axis 1 is supported since issue 15 point 2; over axis 3 it is not)
    (HEAD + 'layer { name: "s" type: "Softmax" bottom: "data" top: "s" '
            'softmax_param { axis: 3 } }', ["s (Softmax)", "(3, 9, 9)"]),
    (conv("c", "data", "c", "num_output: 2 kernel_size: 1"), ["no input"]),
    ('input: "data"\ninput_dim: 3\ninput_dim: 9\n', ["four positive integers"]),
    (HEAD + 'input_shape { dim: 1 dim: 3 dim: 9 dim: 9 }', ["either input_dim or input_shape"]),
    (HEAD + 'layer { name: "d" type: "Dropout" bottom: "data" top: "data" '
            'include { phase: TEST } exclude { phase: TRAIN } }',
     ["d (Dropout)", "both include and exclude rules"]),
    (HEAD + 'layer { name: "x" bottom: "data" top: "x" }', ["layer 0 (x) has no type"]),
    (HEAD + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            'convolution_param { num_ouput: 3 } }', ["num_ouput"]),
])
def test_prototxt_errors(text, fragments, parser):
    with raises_naming("<prototxt>", *fragments):
        load_caffe(text, parser=parser)


def test_prototxt_from_a_path_names_the_file(tmp_path, parser):
    path = tmp_path / "deploy.prototxt"
    path.write_text(HEAD + 'layer { name: "x" type: "Deconvolution" bottom: "data" top: "x" }')
    with raises_naming(path, "x (Deconvolution)"):
        load_caffe(path, parser=parser)
    with raises_naming(path, "x (Deconvolution)"):
        load_caffe(str(path), parser=parser)
    path.write_text(HEAD + 'layer {\n name: "x"\n kernel_size: 3 }')
    with raises_naming(f"{path}:9", "kernel_size"):  # HEAD has 6 lines
        load_caffe(path, parser=parser)


def test_unknown_parser():
    with raises_naming("parser must be one of", "'lxml'"):
        read_net(SMALL_NET, parser="lxml")


# --- without protobuf ------------------------------------------------------------------------


def hide_protobuf(monkeypatch):
    """Make every import of google.protobuf fail, as on a machine without the caffe extra."""
    for name in [m for m in sys.modules if m == "google.protobuf"
                 or m.startswith("google.protobuf.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "google.protobuf", None)


def test_reading_prototxts_without_protobuf(monkeypatch, tmp_path):
    """The SqueezeNet deploy file and the Deep Compression model read without protobuf, the same
    net as with it; HDF5 weights load too; binary Caffe files say that they need protobuf."""
    reference = load_caffe(PROTOTXT, parser="protobuf").spec() if has_protobuf() else None
    small = HEAD + conv("c", "data", "c", "num_output: 2 kernel_size: 3")
    rng = np.random.default_rng(0)
    weights = random_caffe_weights(load_caffe(small, parser="text"), rng)
    h5 = tmp_path / "w.caffemodel.h5"
    write_h5_weights(h5, weights)
    hide_protobuf(monkeypatch)
    assert not has_protobuf()

    net = load_caffe(PROTOTXT)
    assert net.input_shape == (3, 227, 227) and net.num_params() == 1248424
    if reference is not None:
        assert net.spec() == reference
    from robustcnn.models.squeezenet_dc import squeezenet_v1_0_deep_compression

    dc = squeezenet_v1_0_deep_compression()
    assert dc["conv1"].weight_format.kind == "sparse_codebook"

    with_h5 = load_caffe(small, h5)
    np.testing.assert_array_equal(with_h5["c"].params["weight"],
                                  weights["c"][0].astype(np.float32))

    model = tmp_path / "w.caffemodel"
    model.write_bytes(b"\x00")
    with raises_naming(model, "reading a binary .caffemodel needs the protobuf package",
                       "pip install 'robustcnn[caffe]'", error=ImportError):
        load_caffe(small, model)
    with raises_naming("needs the protobuf package", error=ImportError):
        read_net(small, parser="protobuf")
    from robustcnn.models.caffe import read_mean_file, save_caffe

    with raises_naming("binaryproto", "needs the protobuf package", error=ImportError):
        read_mean_file(model)
    with raises_naming("writing Caffe files needs the protobuf package", error=ImportError):
        save_caffe(net, tmp_path / "out.prototxt")
    assert not (tmp_path / "out.prototxt").exists()
