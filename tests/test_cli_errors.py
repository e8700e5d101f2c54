"""Bad command lines: each ends with exit status 2 and exactly one line on stderr naming the
file or option and what is wrong, never a traceback, and before any work (no output file
written, no foreign database changed). In-process through ``cli.main`` for speed; a few through
``python -m robustcnn`` to see the whole stderr of a real process."""

import hashlib
import json
import sqlite3
import struct
import subprocess
import sys
import zlib

import h5py
import numpy as np
import pytest
from helpers import write_tiny_mnist

from robustcnn.cli import main

STUDY = """[study]
name = "t"
dataset = "mnist"
[[models]]
name = "dense"
kind = "dense"
arch = "lenet-300-100"
[[models]]
name = "dc"
kind = "compressed"
base = "dense"
{compressed}
[[attacks]]
name = "fgsm"
eps = [0.1]
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every file the cases need, in one directory."""
    from robustcnn.compress.modelfile import encode_model
    from robustcnn.engine.checkpoint import save_checkpoint
    from robustcnn.models.lenet import lenet_300_100
    from robustcnn.study.store import Store

    d = tmp_path_factory.mktemp("cli")
    f = {"dir": d / "a_directory", "data": write_tiny_mnist(d), "empty": d / "empty_data"}
    f["dir"].mkdir()
    f["empty"].mkdir()
    from robustcnn.models.idx import write_idx

    for split in ("train", "t10k"):  # a dataset of zero images
        write_idx(f["empty"] / f"{split}-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
        write_idx(f["empty"] / f"{split}-labels-idx1-ubyte", np.zeros(0, np.uint8))
    for name, damage in (("idx_truncated", "truncate"), ("idx_no_labels", "drop_labels")):
        f[name] = write_tiny_mnist(_subdir(d, name))  # then one file damaged or removed
        if damage == "truncate":
            images = f[name] / "t10k-images-idx3-ubyte.gz"
            images.write_bytes(images.read_bytes()[:200])
        else:
            (f[name] / "t10k-labels-idx1-ubyte.gz").unlink()
    record = bytes([3]) + bytes(3072)  # CIFAR-10 binary: a label byte, 3,072 pixel bytes
    f["cifar_truncated"] = _subdir(d, "cifar_truncated")
    (f["cifar_truncated"] / "test_batch.bin").write_bytes(record * 2 + record[:100])
    f["cifar_no_test"] = _subdir(d, "cifar_no_test")
    (f["cifar_no_test"] / "data_batch_1.bin").write_bytes(record)
    f["cifar_pickled"] = _subdir(d, "cifar_pickled")
    (f["cifar_pickled"] / "cifar-10-batches-py").mkdir()
    (f["cifar_pickled"] / "cifar-10-batches-py" / "test_batch").write_bytes(b"\x80\x04junk")
    net = lenet_300_100()
    f["model"] = d / "model.h5"
    save_checkpoint(f["model"], net, meta={"model": "lenet-300-100", "dataset": "mnist"})
    f["text"] = d / "notes.txt"
    f["text"].write_text("not a model\n" * 20)
    f["file_parent"] = f["text"] / "out.h5"  # a path under a file

    huge = lenet_300_100()
    huge.params["ip1"]["weight"][...] = 3e38  # finite, but the first forward overflows
    f["huge"] = d / "huge.h5"
    save_checkpoint(f["huge"], huge)

    data = bytearray(encode_model(net, {"model": "lenet-300-100"}))
    data[0] ^= 0x20  # the magic damaged
    f["bad_magic"] = d / "bad_magic.rcnn"
    f["bad_magic"].write_bytes(bytes(data))
    f["inf_header"] = d / "inf_header.rcnn"
    f["inf_header"].write_bytes(_resealed_rcnn(encode_model(net, {}), "out_features", "Infinity"))

    f["truncated"] = d / "truncated.h5"
    f["truncated"].write_bytes(f["model"].read_bytes()[:3000])
    f["declares_2e31"] = d / "declares_2e31.h5"
    f["declares_2e31"].write_bytes(f["model"].read_bytes())
    with h5py.File(f["declares_2e31"], "r+") as h:
        del h["state/ip1/weight"]
        h.create_dataset("state/ip1/weight", shape=(2**31,), dtype="f4", chunks=(1 << 16,))
    f["tampered"] = d / "tampered.h5"
    f["tampered"].write_bytes(f["model"].read_bytes())
    with h5py.File(f["tampered"], "r+") as h:
        spec = json.loads(h.attrs["spec"])
        spec["layers"][1]["negative_slope"] = 5.0  # relu1 becomes a leaky ReLU of slope 5
        h.attrs["spec"] = json.dumps(spec)
    f["external"] = d / "external.h5"
    f["external"].write_bytes(f["model"].read_bytes())
    with h5py.File(f["external"], "r+") as h:
        h["state/elsewhere"] = h5py.ExternalLink(str(f["model"]), "/state")

    from onnx import TensorProto, helper

    from robustcnn.models.onnx import onnx_model

    f["onnx_truncated"] = d / "truncated.onnx"
    f["onnx_truncated"].write_bytes(onnx_model(net).SerializeToString()[:5000])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    sparse = helper.make_sparse_tensor(  # dense dims of 2**28 floats, no entries: 100 bytes
        helper.make_tensor("w", TensorProto.FLOAT, [0], []),
        helper.make_tensor("i", TensorProto.INT64, [0], []), [2**14, 2**14])
    f["onnx_sparse"] = d / "sparse.onnx"
    f["onnx_sparse"].write_bytes(helper.make_model(
        helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"])], "g", [x], [y],
                          sparse_initializer=[sparse]),
        opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    f["caffe_wide"] = d / "wide.prototxt"
    f["caffe_wide"].write_text(
        'name: "wide"\ninput: "data"\ninput_shape { dim: 1 dim: 1 dim: 28 dim: 28 }\n'
        'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" '
        'inner_product_param { num_output: 1000000 } }\n')

    f["foreign"] = d / "foreign.sqlite"
    with sqlite3.connect(f["foreign"]) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
    f["store"] = d / "study.sqlite"
    Store(f["store"]).close()
    for name, compressed in (
            ("study_ok", 'settings = { kept = { ip1 = 0.5 }, bits = { ip1 = 4 } }'),
            ("study_bits12", 'settings = { kept = { ip1 = 0.5 }, bits = { ip1 = 12 } }'),
            ("study_layer", 'settings = { kept = { ip9 = 0.5 }, bits = { ip1 = 4 } }'),
            ("study_preset_list", 'preset = ["lenet-300-100"]'),
            ("study_preset_layers", 'preset = "lenet5"')):
        f[name] = d / f"{name}.toml"
        f[name].write_text(STUDY.format(compressed=compressed))
    f["study_nested"] = d / "nested.toml"
    f["study_nested"].write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    return f


def _subdir(root, name):
    path = root / name
    path.mkdir()
    return path


def _resealed_rcnn(data, key, value):
    """An .rcnn file whose header has ``"key": value`` (raw JSON text) in its first layer that
    holds the key, its checksum recomputed."""
    magic, version, hlen = struct.unpack_from("<8sHI", data)
    text = zlib.decompress(data[14:14 + hlen]).decode()
    text = text.replace(f'"{key}":', f'"{key}":{value},"was":', 1)
    header = zlib.compress(text.encode())
    body = struct.pack("<8sHI", magic, version, len(header)) + header + data[14 + hlen:-32]
    return body + hashlib.sha256(body).digest()


# (id, command line with {placeholders} of ``files``, what the one line must contain)
CASES = [
    # numbers out of range, NaN, infinities
    ("batch-size-0", "train --batch-size 0", "--batch-size must be >= 1, got 0"),
    ("epochs-0", "train --epochs 0", "--epochs must be >= 1, got 0"),
    ("lr-nan", "train --lr nan", "--lr must be finite and > 0, got nan"),
    ("lr-negative", "train --lr -0.1", "--lr must be finite and > 0"),
    ("momentum-1.5", "train --momentum 1.5", "--momentum must be finite and >= 0 and < 1"),
    ("weight-decay-inf", "train --weight-decay inf", "--weight-decay must be finite"),
    ("seed-negative", "train --seed -1", "--seed must be >= 0"),
    ("epochs-not-int", "train --epochs x", "argument --epochs: invalid int value: 'x'"),
    ("limit-0", "attack {model} --limit 0", "--limit must be >= 1, got 0"),
    ("limit-negative", "attack {model} --limit -5", "--limit must be >= 1"),
    ("sanity-examples-0", "attack {model} --sanity-examples 0", "--sanity-examples must be >= 1"),
    ("eps-nan", "attack {model} --eps 0.1,nan --data-dir {data} --dataset mnist",
     "--eps must be finite numbers >= 0, got nan"),
    ("eps-negative", "attack {model} --eps -0.1 --data-dir {data} --dataset mnist",
     "--eps must be finite numbers >= 0"),
    ("eps-inf", "attack {model} --eps inf --data-dir {data} --dataset mnist", "--eps must be"),
    ("eps-empty", "attack {model} --eps , --data-dir {data} --dataset mnist", "--eps is empty"),
    ("eps-text", "attack {model} --eps 0.1,x --data-dir {data} --dataset mnist",
     "--eps must be comma-separated numbers"),
    ("rounds-0", "compress {model} -o {tmp}/o.rcnn --rounds 0", "--rounds must be >= 1"),
    ("finetune-lr-0", "compress {model} -o {tmp}/o.rcnn --finetune-lr 0",
     "--finetune-lr must be finite and > 0"),
    ("holdout-negative", "sensitivity {model} --holdout -1", "--holdout must be >= 0"),
    ("max-drop-2", "sensitivity {model} --max-drop 2", "--max-drop must be finite and >= 0 and <= 1"),
    ("study-limit-0", "study {study_ok} --db {tmp}/s.sqlite --limit 0", "--limit must be >= 1"),
    ("max-model-bytes-0", "info {model} --max-model-bytes 0",
     "--max-model-bytes must be a positive number of bytes"),
    ("max-model-bytes-text", "info {model} --max-model-bytes lots",
     "--max-model-bytes must be a positive number of bytes"),
    # unknown names
    ("dataset", "train --dataset nope", "--dataset: unknown dataset 'nope'"),
    ("model-name", "train --model nope --dataset mnist --data-dir {data} -o {tmp}/m.h5",
     "unknown model 'nope'"),
    ("attack-name", "attack {model} --attack fgsm,nope --data-dir {data} --dataset mnist",
     "unknown attack 'nope'"),
    ("preset", "compress {model} -o {tmp}/o.rcnn --preset nope", "unknown preset 'nope'"),
    ("prune-layer", "compress {model} -o {tmp}/o.rcnn --prune ip9=0.5",
     "--prune: {model} has no layer 'ip9' with a weight"),
    ("prune-relu", "compress {model} -o {tmp}/o.rcnn --prune relu1=0.5",
     "has no layer 'relu1' with a weight"),
    ("bits-layer", "compress {model} -o {tmp}/o.rcnn --bits ip9=4", "--bits: {model} has no layer"),
    ("bits-12", "compress {model} -o {tmp}/o.rcnn --bits ip1=12",
     "--bits: ip1's value must be in 1..8, got '12'"),
    ("gap-bits-0", "compress {model} -o {tmp}/o.rcnn --gap-bits ip1=0", "--gap-bits: ip1's value"),
    ("bits-not-int", "compress {model} -o {tmp}/o.rcnn --bits ip1=4.5",
     "--bits takes LAYER=VALUE pairs, got 'ip1=4.5'"),
    ("prune-1.5", "compress {model} -o {tmp}/o.rcnn --prune ip1=1.5",
     "--prune: ip1's value must be in [0, 1)"),
    ("prune-nan", "compress {model} -o {tmp}/o.rcnn --prune ip1=nan", "--prune: ip1's value"),
    ("prune-no-value", "compress {model} -o {tmp}/o.rcnn --prune ip1", "--prune takes LAYER=VALUE"),
    ("sensitivity-layer", "sensitivity {model} --layers relu1 --dataset mnist --data-dir {data}",
     "no layer 'relu1'"),
    ("sensitivity-sparsities", "sensitivity {model} --sparsities a,b --dataset mnist "
                               "--data-dir {data}", "--sparsities must be comma-separated"),
    ("command", "nope", "invalid choice: 'nope'"),
    ("no-command", "", "the following arguments are required: command"),
    ("missing-positional", "eval", "the following arguments are required: model"),
    ("unknown-option", "eval {model} --bogus", "unrecognized arguments: --bogus"),
    # input files: missing, directories, not a model, damaged, hostile
    ("model-missing", "eval {tmp}/missing.h5", "{tmp}/missing.h5: no such model file"),
    ("model-directory", "info {dir}", "{dir}: is a directory, not a model file"),
    ("model-text", "info {text}", "{text}: not a model file robustcnn reads"),
    ("rcnn-bad-magic", "info {bad_magic}", "{bad_magic}: not a robustcnn model file"),
    ("rcnn-infinity", "info {inf_header}", "{inf_header}: unreadable header"),
    ("h5-truncated", "info {truncated}", "{truncated}"),
    ("h5-declares-2e31", "info {declares_2e31}", "but the file stores 0 bytes for it"),
    ("h5-tampered-spec", "info {tampered}", "{tampered}: checksum mismatch"),
    ("h5-external-link", "info {external}", "links to another file"),
    ("max-model-bytes-small", "info {model} --max-model-bytes 1K", "more than the limit of 1,024"),
    ("onnx-truncated", "info {onnx_truncated}", "{onnx_truncated}: "),
    ("onnx-sparse-2e28", "eval {onnx_sparse}", "{onnx_sparse}: the initializer data takes "
                                               "1,073,741,824 bytes, more than the limit"),
    ("caffe-num-output-1e6", "info {caffe_wide}", "{caffe_wide}: ip1 (InnerProduct): declares "),
    ("weights-for-checkpoint", "info {model} --weights {text}",
     "weights are given separately only for a Caffe prototxt"),
    ("weights-missing", "info {model} --weights {tmp}/none.caffemodel", "no such weights file"),
    ("huge-weights", "eval {huge} --dataset mnist --data-dir {data}",
     "{huge}: lenet-300-100: ip1 (InnerProduct) produced non-finite values"),
    ("zero-images", "eval {model} --dataset mnist --data-dir {empty}", "holds no images"),
    ("data-dir-missing", "eval {model} --dataset mnist --data-dir {tmp}/nowhere",
     "data directory does not exist"),
    ("idx-truncated", "eval {model} --dataset mnist --data-dir {idx_truncated}",
     "{idx_truncated}/t10k-images-idx3-ubyte.gz: "),
    ("idx-labels-missing", "eval {model} --dataset mnist --data-dir {idx_no_labels}",
     "{idx_no_labels}/t10k-labels-idx1-ubyte[.gz]: file not found"),
    ("cifar-truncated", "eval {model} --dataset cifar-10 --data-dir {cifar_truncated}",
     "{cifar_truncated}/test_batch.bin: size 6246 bytes is not a positive multiple of 3,073"),
    ("cifar-batch-missing", "eval {model} --dataset cifar-10 --data-dir {cifar_no_test}",
     "{cifar_no_test}: missing CIFAR-10 batch file(s) test_batch.bin of the test split"),
    ("cifar-pickled", "eval {model} --dataset cifar-10 --data-dir {cifar_pickled}",
     "{cifar_pickled}/cifar-10-batches-py: this is CIFAR-10's Python (pickled) "
     "version, which robustcnn does not read"),
    ("config-missing", "study {tmp}/none.toml --db {tmp}/s.sqlite", "none.toml"),
    ("config-directory", "study {dir} --db {tmp}/s.sqlite", "is a directory, not a study file"),
    ("config-text", "study {text} --db {tmp}/s.sqlite", "{text}: not valid TOML"),
    ("config-bits-12", "study {study_bits12} --db {tmp}/s.sqlite",
     "models[1] (dc).settings.bits.ip1: expected an integer in [1, 8]"),
    ("config-layer", "study {study_layer} --db {tmp}/s.sqlite",
     "models[1] (dc).settings.kept.ip9: the base model dense has no layer 'ip9'"),
    ("config-preset-list", "study {study_preset_list} --db {tmp}/s.sqlite",
     "models[1] (dc).preset: expected a non-empty string, got ['lenet-300-100']"),
    ("config-preset-layers", "study {study_preset_layers} --db {tmp}/s.sqlite",
     "preset (lenet5): the base model dense has no layer 'conv1'"),
    ("config-nested", "study {study_nested} --db {tmp}/s.sqlite", "{study_nested}: not valid TOML"),
    ("report-missing", "report {tmp}/none.sqlite", "no such results database"),
    ("report-text", "report {text} -o {tmp}/r", "{text}: not a robustcnn study database"),
    ("report-foreign", "report {foreign} -o {tmp}/r", "{foreign}: not a robustcnn study database"),
    # output paths, refused before any work
    ("train-out-directory", "train -o {dir} --dataset mnist --data-dir {data}",
     "-o {dir}: is a directory, not a file"),
    ("train-out-under-file", "train -o {file_parent}", "is not a directory"),
    ("train-checkpoint-directory", "train --checkpoint {dir} -o {tmp}/m.h5",
     "--checkpoint {dir}: is a directory"),
    ("attack-json-directory", "attack {model} --json {dir}", "--json {dir}: is a directory"),
    ("attack-csv-under-file", "attack {model} --csv {file_parent}", "is not a directory"),
    ("attack-plot-directory", "attack {model} --plot {dir}", "--plot {dir}: is a directory"),
    ("compress-out-directory", "compress {model} -o {dir}", "-o {dir}: is a directory"),
    ("sensitivity-json-directory", "sensitivity {model} --json {dir}", "--json {dir}: is a"),
    ("study-db-directory", "study {study_ok} --db {dir}", "--db {dir}: is a directory"),
    ("study-db-foreign", "study {study_ok} --db {foreign}",
     "--db {foreign}: not a robustcnn study database"),
    ("study-db-text", "study {study_ok} --db {text}", "not a robustcnn study database"),
    ("report-onto-file", "report {store} -o {text}", "-o {text}: is a file, not a directory"),
    ("report-under-file", "report {store} -o {file_parent}", "is not a directory"),
    ("demo-db-directory", "demo --db {dir}", "--db {dir}: is a directory"),
    ("demo-config-missing", "demo --config {tmp}/none.toml --db {tmp}/d.sqlite", "none.toml"),
]


def _argv(line, files, tmp_path):
    values = {k: str(v) for k, v in files.items()}
    values["tmp"] = str(tmp_path)
    return [a.format(**values) for a in line.split()], values


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_command_line_is_one_line_and_status_2(case, files, tmp_path, capsys):
    _, line, expected = case
    argv, values = _argv(line, files, tmp_path)
    foreign = files["foreign"].read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    assert expected.format(**values) in err, err
    assert err.startswith("robustcnn"), err
    assert files["foreign"].read_bytes() == foreign  # nothing was written to it
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "work started before the error"


def test_the_cases_cover_every_command():
    commands = {c[1].split()[0] for c in CASES if c[1]}
    assert commands >= {"train", "eval", "attack", "info", "compress", "sensitivity", "study",
                        "report", "demo"}
    assert len(CASES) >= 60


# Through a real process: the whole of stderr is the one line.
SUBPROCESS = ["batch-size-0", "h5-truncated", "report-foreign", "zero-images", "command",
              "huge-weights"]


@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_no_traceback_from_a_real_process(case_id, files, tmp_path):
    _, line, expected = next(c for c in CASES if c[0] == case_id)
    argv, values = _argv(line, files, tmp_path)
    done = subprocess.run([sys.executable, "-m", "robustcnn"] + argv, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert expected.format(**values) in done.stderr


def test_an_internal_error_still_shows_its_traceback(files, monkeypatch):
    """Not an input error: main lets it through (the interpreter prints the traceback)."""
    import robustcnn.cli as cli

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "_info", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["info", str(files["model"])])


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path):
    """`robustcnn info --json MODEL | head -1`: the rest of the output has nowhere to go; the
    command stops with status 1 and no traceback."""
    import os
    import subprocess
    import sys

    from robustcnn.compress.modelfile import save_model
    from robustcnn.models.lenet import lenet5

    model = tmp_path / "m.rcnn"
    save_model(model, lenet5(seed=0))
    read_end, write_end = os.pipe()
    cmd = subprocess.Popen([sys.executable, "-m", "robustcnn", "info", "--json", str(model)],
                           stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    os.close(read_end)  # gone before the command, still importing, writes a byte
    stderr = cmd.stderr.read().decode()
    assert cmd.wait(timeout=120) == 1
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
