"""The two readers of a prototxt — protobuf's text format and the project's own parser
(models/caffe/prototxt.py) — give equal messages and build identical nets (the same spec, the
same initial weights, the same outputs on random weights) from every prototxt the tests have:
the shipped SqueezeNet deploy file, the small nets of the importer tests, the exporter's
outputs and the open_nsfw deploy file; and a mutated prototxt is refused by both or by neither."""

import numpy as np
import pytest
from helpers import assert_close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from net_helpers import randomised

from robustcnn.models.caffe import load_caffe, read_net, save_caffe
from robustcnn.models.squeezenet_dc import PROTOTXT

pytest.importorskip("google.protobuf", reason="protobuf (the caffe extra) is one of the readers")

# The test modules' prototxts (importing them also skips without protobuf).
from test_bad_input import PROTOTXT as BAD_INPUT_NET  # noqa: E402
from test_bad_input import TOKENS  # noqa: E402
from test_exporter import NETS, every_layer_net  # noqa: E402
from test_importer import (BODY, DATA_LAYERS, HEADS, MIXED_NET, TRAIN_VAL,  # noqa: E402
                           data_layer_net)
from test_layers_opencv import CASES, V1_NET, header, layer  # noqa: E402
from test_prototxt import INPUT_FORMS, SMALL_NET, TRAIN_ONLY, conv, hide_protobuf  # noqa: E402

LRN_TRANSPOSE_NET = header((2, 5, 2, 3)) + layer(
    "n", "LRN", "data", body="lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }") + layer(
    "fc", "InnerProduct", "n", body="inner_product_param { num_output: 4 transpose: true }")

# name → (prototxt text or path, input_shape for load_caffe)
PROTOTXTS = {"squeezenet_deploy": (PROTOTXT, None), "v1": (V1_NET, None),
             "lrn_k_transpose": (LRN_TRANSPOSE_NET, None), "mixed": (MIXED_NET, None),
             "train_val": (TRAIN_VAL, (2, 6, 6)), "bad_input_small": (BAD_INPUT_NET, None),
             "prototxt_small": (SMALL_NET, None)}
PROTOTXTS.update({f"layer_{name}": (header((2,) + shape) + "".join(body), None)
                  for name, (shape, body) in CASES.items()})
PROTOTXTS.update({f"head_{name}": (head + BODY, None) for name, head in HEADS.items()})
PROTOTXTS.update({f"data_layer_{i}": (data_layer_net(data), None)
                  for i, (data, _) in enumerate(DATA_LAYERS)})
PROTOTXTS.update({f"input_form_{name}": (head + conv("c", "data", "c", "num_output: 2 "
                                                    "kernel_size: 1") + TRAIN_ONLY, None)
                  for name, head in INPUT_FORMS.items()})


def assert_readers_agree(prototxt, what, input_shape=None, seed=0, batch=2):
    """Both readers: equal messages, then nets with the same spec, preprocessing and initial
    weights, and the same outputs once their weights are random (on ``batch`` examples; 0: the
    outputs are not compared)."""
    ours, theirs = read_net(prototxt, parser="text"), read_net(prototxt, parser="protobuf")
    assert ours == theirs, f"{what}: the readers' messages differ"
    a = load_caffe(prototxt, input_shape=input_shape, parser="protobuf")
    b = load_caffe(prototxt, input_shape=input_shape, parser="text")
    assert b.spec() == a.spec(), what
    assert b.preprocessing == a.preprocessing, what
    state_a, state_b = a.state_dict(), b.state_dict()
    assert sorted(state_b) == sorted(state_a), what
    for key, value in state_a.items():  # the same draw from the same fillers: exactly equal
        np.testing.assert_array_equal(state_b[key], value, err_msg=f"{what} {key}")
    if not batch:
        return
    randomised(a, seed)
    b.load_state_dict(a.state_dict())
    x = np.random.default_rng(seed).standard_normal((batch,) + a.input_shape).astype(np.float32)
    assert_close(b.forward(x), a.forward(x), 0, f"{what}: outputs")


@pytest.mark.parametrize("name", PROTOTXTS)
def test_readers_build_identical_nets(name):
    prototxt, input_shape = PROTOTXTS[name]
    assert_readers_agree(prototxt, name, input_shape)


@pytest.mark.parametrize("make", [*NETS.values(), lambda: every_layer_net(shared_prelu=True)],
                         ids=[*NETS, "every_layer_shared_prelu"])
def test_readers_agree_on_the_exporters_output(make, tmp_path):
    net = make()
    proto = tmp_path / "net.prototxt"
    save_caffe(net, proto)
    assert_readers_agree(proto, f"{net.name} written by save_caffe")


def test_readers_agree_on_open_nsfw(nsfw_files, tmp_path):
    deploy, caffemodel = nsfw_files
    assert_readers_agree(deploy, "open_nsfw deploy.prototxt", batch=1)  # (ResNet-50: slow)
    proto = tmp_path / "nsfw.prototxt"
    save_caffe(load_caffe(deploy, caffemodel), proto)
    assert_readers_agree(proto, "open_nsfw written by save_caffe", batch=0)


def test_every_prototxt_reads_without_protobuf(monkeypatch):
    """With protobuf hidden, as on a machine without the caffe extra, every prototxt above
    builds the net it builds with protobuf: every layer type the translator supports."""
    specs = {name: load_caffe(prototxt, input_shape=shape, parser="protobuf").spec()
             for name, (prototxt, shape) in PROTOTXTS.items()}
    hide_protobuf(monkeypatch)
    for name, (prototxt, shape) in PROTOTXTS.items():
        assert load_caffe(prototxt, input_shape=shape).spec() == specs[name], name


def outcome(prototxt, parser):
    """("net", the net's spec) or ("error", None) for a ValueError naming the file."""
    try:
        return "net", load_caffe(prototxt, parser=parser).spec()
    except ValueError as e:
        assert str(prototxt) in str(e), f"{parser}: the message does not name the file: {e}"
        return "error", None


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["delete", "insert", "replace"]),
                          st.integers(0, 10**6), st.integers(1, 12), st.sampled_from(TOKENS)),
                min_size=1, max_size=3))
def test_mutated_prototxts_are_refused_by_both_readers_or_neither(tmp_path_factory, edits):
    text = BAD_INPUT_NET
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
    assert outcome(proto, "text") == outcome(proto, "protobuf"), text
