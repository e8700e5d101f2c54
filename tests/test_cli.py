"""The robustcnn command end to end on a tiny synthetic dataset (seconds, not minutes)."""

import json
import subprocess
import sys

import pytest
from helpers import single_thread, write_tiny_mnist

from robustcnn.cli import main


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    return write_tiny_mnist(tmp_path_factory.mktemp("data"))


def test_train_eval_attack_info(tiny_mnist, tmp_path, capsys):
    model = tmp_path / "m.h5"
    common = ["--dataset", "mnist", "--data-dir", str(tiny_mnist)]
    assert main(["train", "--model", "lenet-300-100", "--epochs", "3", "--batch-size", "16",
                 "--lr", "0.05", "--no-progress", "-o", str(model)] + common) == 0
    out = capsys.readouterr().out
    assert "clean test accuracy:" in out and model.exists()
    trained = float(out.split("clean test accuracy:")[1].split("%")[0])

    assert main(["eval", str(model)] + common) == 0
    assert f"clean test accuracy: {trained:.2f}%" in capsys.readouterr().out

    table = tmp_path / "fgsm.json"
    with single_thread():  # tiny batches: waking the thread pool costs more than the work
        assert main(["attack", str(model), "--eps", "0,0.3", "--json", str(table)] + common) == 0
    out = capsys.readouterr().out
    assert "sanity checks" in out and "gradients:" in out
    result = json.loads(table.read_text())
    rows = result["rows"]
    assert [r["eps"] for r in rows] == [0.0, 0.3]
    assert rows[0]["adversarial_accuracy"] == pytest.approx(trained / 100, abs=1e-6)
    assert rows[1]["adversarial_accuracy"] <= rows[0]["adversarial_accuracy"]
    assert {c["name"] for c in result["sanity"]} >= {"gradients", "large_eps"}
    assert result["sanity_passed"] == all(c["passed"] for c in result["sanity"])

    assert main(["info", str(model)]) == 0
    info = capsys.readouterr().out
    assert "ip1" in info and "266,610" in info and '"dataset": "mnist"' in info


def test_attack_several_attacks_files_and_sanity(tiny_mnist, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    model = tmp_path / "m.h5"
    common = ["--dataset", "mnist", "--data-dir", str(tiny_mnist)]
    assert main(["train", "--model", "lenet-300-100", "--epochs", "3", "--batch-size", "16",
                 "--lr", "0.05", "--no-progress", "-o", str(model)] + common) == 0
    capsys.readouterr()
    files = {k: tmp_path / f"out.{k}" for k in ("json", "csv", "png")}
    with single_thread():
        assert main(["attack", str(model), "--attack", "fgsm,pgd,deepfool,noise", "--eps",
                     "0.1,0.2", "--limit", "40", "--json", str(files["json"]), "--csv",
                     str(files["csv"]), "--plot", str(files["png"]), "--sanity-examples",
                     "20"] + common) == 0
    captured = capsys.readouterr()
    result = json.loads(files["json"].read_text())
    assert result["examples"] == 40 and result["attacks"] == ["fgsm", "pgd-linf", "deepfool",
                                                              "noise-linf"]
    assert [(r["attack"], r["eps"]) for r in result["rows"]] == [
        ("fgsm", 0.1), ("fgsm", 0.2), ("pgd-linf", 0.1), ("pgd-linf", 0.2), ("deepfool", None),
        ("noise-linf", 0.1), ("noise-linf", 0.2)]
    assert [w["eps"] for w in result["worst_case"]] == [0.1, 0.2]
    for w in result["worst_case"]:  # the worst case is no better than any attack at its eps
        assert all(w["robust_accuracy"] <= r["adversarial_accuracy"] for r in result["rows"]
                   if r["eps"] == w["eps"])
    assert "worst case" in captured.out and "deepfool" in captured.out
    assert ("WARNING" in captured.out) == (not result["sanity_passed"])
    lines = files["csv"].read_text().splitlines()
    assert lines[0].startswith("attack,norm,eps,") and len(lines) == 1 + 7 + 2
    assert files["png"].read_bytes()[:4] == b"\x89PNG"
    with single_thread():
        assert main(["attack", str(model), "--bpda", "--limit", "8", "--sanity-examples", "8"]
                    + common) == 0
    captured = capsys.readouterr()
    assert "--bpda changes nothing here" in captured.err and ", BPDA:" in captured.out
    # Bad arguments fail before any attack runs, with the option named.
    assert main(["attack", str(model), "--attack", "fgsm,nope"] + common) == 2
    assert "unknown attack 'nope'" in capsys.readouterr().err
    assert main(["attack", str(model), "--limit", "0"] + common) == 2
    assert "--limit must be >= 1" in capsys.readouterr().err
    assert main(["attack", str(model), "--eps", "0.1,x"] + common) == 2
    assert "--eps must be comma-separated numbers" in capsys.readouterr().err


def test_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing.h5")]) == 2
    assert "missing.h5" in capsys.readouterr().err
    (tmp_path / "junk.h5").write_bytes(b"\x00" * 100)
    assert main(["info", str(tmp_path / "junk.h5")]) == 2
    assert "junk.h5" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_command():
    result = subprocess.run([sys.executable, "-m", "robustcnn", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for command in ("train", "eval", "attack", "info", "demo"):
        assert command in result.stdout


def test_compress_info_eval_on_a_compressed_file(tiny_mnist, tmp_path, capsys):
    model, out = tmp_path / "m.h5", tmp_path / "m.rcnn"
    common = ["--dataset", "mnist", "--data-dir", str(tiny_mnist)]
    assert main(["train", "--model", "lenet-300-100", "--epochs", "2", "--batch-size", "16",
                 "--lr", "0.05", "--no-progress", "-o", str(model)] + common) == 0
    capsys.readouterr()
    assert main(["compress", str(model), "-o", str(out), "--rounds", "1", "--retrain-epochs",
                 "1", "--finetune-epochs", "1", "--no-progress"] + common) == 0
    text = capsys.readouterr().out
    assert "ratio P+Q+H" in text and "file on disk:" in text and out.exists()
    assert "compressed in" in text
    compressed = float(text.split("compressed ")[-1].split("%")[0])

    assert main(["eval", str(out)] + common) == 0
    assert f"clean test accuracy: {compressed:.2f}%" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "huffman" in info and f"{out.stat().st_size:,} bytes" in info
    assert main(["compress", str(model), "-o", str(out), "--prune", "ip1"] + common) != 0
    assert main(["compress", str(model), "-o", str(out), "--preset", "nope"] + common) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    # Another pruning method, its options and the info line naming it.
    assert main(["compress", str(model), "-o", str(out), "--pruning", "dns", "--pruning-options",
                 "c_rate=1,epochs=1", "--retrain-epochs", "0", "--finetune-epochs", "1",
                 "--no-progress"] + common) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert 'pruning method: dns (Guo, Yao & Chen 2016); options {"c_rate": 1' in \
        capsys.readouterr().out
    assert main(["compress", str(model), "-o", str(out), "--pruning", "dns", "--pruning-options",
                 "c=1"] + common) == 2
    assert "--pruning-options: unknown option 'c' of method dns" in capsys.readouterr().err
    assert main(["compress", str(model), "-o", str(out), "--pruning", "lottery"] + common) == 2
    assert "--pruning: unknown pruning method 'lottery'" in capsys.readouterr().err


def test_sensitivity(tiny_mnist, tmp_path, capsys):
    model = tmp_path / "m.h5"
    common = ["--dataset", "mnist", "--data-dir", str(tiny_mnist)]
    assert main(["train", "--model", "lenet-300-100", "--epochs", "2", "--batch-size", "16",
                 "--lr", "0.05", "--no-progress", "-o", str(model)] + common) == 0
    capsys.readouterr()
    rows = tmp_path / "s.json"
    assert main(["sensitivity", str(model), "--layers", "ip1,ip3", "--sparsities", "0.5,0.99",
                 "--holdout", "64", "--json", str(rows), "--csv", str(tmp_path / "s.csv"),
                 "--no-progress"] + common) == 0
    out = capsys.readouterr().out
    assert "the last 64 training images" in out and "highest tried sparsity" in out
    result = json.loads(rows.read_text())
    assert [(r["layer"], r["sparsity"]) for r in result["rows"]] == [
        ("ip1", 0.5), ("ip1", 0.99), ("ip3", 0.5), ("ip3", 0.99)]
    assert set(result["suggested_kept"]) == {"ip1", "ip3"}
    assert (tmp_path / "s.csv").read_text().count("\n") == 5
    assert main(["sensitivity", str(model), "--layers", "relu1"] + common) == 2
    assert "no layer 'relu1'" in capsys.readouterr().err
    assert main(["sensitivity", str(model), "--sparsities", "a,b"] + common) == 2


def test_certify_and_the_squeezing_defence(tiny_mnist, tmp_path, capsys):
    model = tmp_path / "m.h5"
    common = ["--dataset", "mnist", "--data-dir", str(tiny_mnist)]
    assert main(["train", "--model", "lenet-300-100", "--epochs", "3", "--batch-size", "16",
                 "--lr", "0.05", "--no-progress", "-o", str(model)] + common) == 0
    out = capsys.readouterr().out
    trained = float(out.split("clean test accuracy:")[1].split("%")[0])
    files = {k: tmp_path / f"ibp.{k}" for k in ("json", "csv", "png")}
    with single_thread():
        assert main(["certify", str(model), "--method", "ibp", "--eps", "0,0.001,0.05",
                     "--no-progress", "--json", str(files["json"]), "--csv", str(files["csv"]),
                     "--plot", str(files["png"])] + common) == 0
    assert "certified accuracy" in capsys.readouterr().out
    result = json.loads(files["json"].read_text())
    accs = [r["certified_accuracy"] for r in result["rows"]]
    assert result["examples"] == 64 and result["dtype"] == "float64"
    assert accs[0] == pytest.approx(trained / 100, abs=1e-6)  # eps 0: the clean accuracy
    assert accs == sorted(accs, reverse=True)
    assert files["csv"].read_text().splitlines()[0].startswith("method,norm,eps,")
    assert files["png"].read_bytes()[:4] == b"\x89PNG"
    with single_thread():
        assert main(["certify", str(model), "--method", "crown-ibp", "--eps", "0.001",
                     "--limit", "16", "--dtype", "float32", "--no-progress"] + common) == 0
        capsys.readouterr()
        smooth = tmp_path / "smooth.json"
        assert main(["certify", str(model), "--method", "smoothing", "--sigma", "0.1", "--n",
                     "300", "--limit", "8", "--eps", "0,0.1", "--no-progress", "--json",
                     str(smooth)] + common) == 0
    assert "forward passes" in capsys.readouterr().out
    result = json.loads(smooth.read_text())
    assert result["n"] == 300 and len(result["radius"]) == 8 and result["norm"] == "l2"
    assert main(["certify", str(model), "--method", "smoothing"] + common) == 2
    assert "needs --sigma" in capsys.readouterr().err

    table = tmp_path / "squeeze.json"
    with single_thread():
        assert main(["attack", str(model), "--attack", "fgsm", "--eps", "0.3", "--limit", "32",
                     "--sanity-examples", "16", "--defence", "squeeze", "--json", str(table)]
                    + common) == 0
    out = capsys.readouterr().out
    assert "feature squeezing" in out and "clean test images flagged" in out
    defence = json.loads(table.read_text())["defence"]
    assert defence["squeezers"] == ["bit-depth-1", "median-2x2", "median-3x3"]
    assert [(r["attack"], r["eps"]) for r in defence["rows"]] == [("fgsm", 0.3)]
    assert 0 <= defence["false_positive_rate"] <= 1


def test_attack_autoattack_version_progress_and_json(tiny_mnist, tmp_path, capsys):
    model = tmp_path / "m.h5"
    common = ["--dataset", "mnist", "--data-dir", str(tiny_mnist)]
    assert main(["train", "--model", "lenet-300-100", "--epochs", "3", "--batch-size", "16",
                 "--lr", "0.05", "--no-progress", "-o", str(model)] + common) == 0
    capsys.readouterr()
    out = tmp_path / "aa.json"
    with single_thread():
        assert main(["attack", str(model), "--attack", "autoattack", "--version", "rand",
                     "--eps", "0.3", "--limit", "20", "--sanity-examples", "8", "--json",
                     str(out)] + common) == 0
    captured = capsys.readouterr()
    result = json.loads(out.read_text())
    row = result["rows"][0]
    assert row["attack"] == "autoattack-linf" and row["version"] == "rand"
    assert [s["attack"] for s in row["stages"]] == ["apgd-ce", "apgd-dlr"]
    assert row["stages"][-1]["robust_accuracy"] == pytest.approx(row["adversarial_accuracy"])
    assert {"zero_gradient", "random_forward", "logits"} <= {c["name"] for c in result["sanity"]}
    assert "robust accuracy after each attack" in captured.out
    assert "autoattack-linf eps 0.3:" in captured.err and "ex/s" in captured.err  # the bar


@pytest.mark.parametrize("method", ["int8", "ttq", "inq", "binary"])
def test_compress_by_method(method, tiny_mnist, tmp_path, capsys):
    model, out = tmp_path / "m.h5", tmp_path / f"m-{method}.rcnn"
    common = ["--dataset", "mnist", "--data-dir", str(tiny_mnist)]
    assert main(["train", "--model", "lenet-300-100", "--epochs", "2", "--batch-size", "16",
                 "--lr", "0.05", "--no-progress", "-o", str(model)] + common) == 0
    capsys.readouterr()
    extra = {"int8": ["--options", "calibration=64"], "ttq": ["--epochs", "1"],
             "inq": ["--bits", "5", "--epochs", "1"],
             "binary": ["--epochs", "1", "--activation-bits", "1"]}[method]
    assert main(["compress", str(model), "-o", str(out), "--method", method, "--no-progress"]
                + extra + common) == 0
    text = capsys.readouterr().out
    assert f"by {method}" in text and "file on disk:" in text and out.exists()
    accuracy = float(text.split(f"{method} ")[-1].split("%")[0])
    assert main(["eval", str(out)] + common) == 0
    assert f"clean test accuracy: {accuracy:.2f}%" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in info.splitlines()
            if line.startswith("ip")
            and {"int8": "int8", "ttq": "ternary", "inq": "pow2", "binary": "binary"}[method]
            in line}
    assert set(rows) == {"ip1", "ip2", "ip3"}
    assert all(r[4] == {"int8": "8", "ttq": "2", "inq": "5", "binary": "1"}[method]
               for r in rows.values())
    assert f'"method": "{method}"' in info
    assert main(["compress", str(model), "-o", str(out), "--method", method,
                 "--options", "nope=1"] + common) == 2
    assert "unknown option 'nope'" in capsys.readouterr().err


def test_compress_by_soft_sharing(tiny_mnist, tmp_path, capsys):
    model, out = tmp_path / "m.h5", tmp_path / "m-soft.rcnn"
    common = ["--dataset", "mnist", "--data-dir", str(tiny_mnist)]
    assert main(["train", "--model", "lenet-300-100", "--epochs", "2", "--batch-size", "16",
                 "--lr", "0.05", "--no-progress", "-o", str(model)] + common) == 0
    capsys.readouterr()
    assert main(["compress", str(model), "-o", str(out), "--method", "soft-sharing",
                 "--epochs", "1", "--options", "components=5,batch_size=16,tau=0.1",
                 "--no-progress"] + common) == 0
    text = capsys.readouterr().out
    assert "by soft-sharing" in text and "file on disk:" in text and out.exists()
    accuracy = float(text.split("soft-sharing ")[-1].split("%")[0])
    assert main(["eval", str(out)] + common) == 0
    assert f"clean test accuracy: {accuracy:.2f}%" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    rows = [line.split() for line in info.splitlines() if line.startswith("ip")]
    assert {r[0] for r in rows if r[1] in ("sparse_codebook", "huffman")} == {"ip1", "ip2", "ip3"}
    assert '"method": "soft-sharing"' in info
    assert main(["compress", str(model), "-o", str(out), "--method", "soft-sharing",
                 "--options", "pi_zero=2"] + common) == 2
    assert "soft-sharing: pi_zero must be in (0, 1), got 2.0" in capsys.readouterr().err


def test_digits_train_eval_attack_compress(tmp_path, capsys):
    # The digits need no files: every command takes --dataset digits, and compress finds it in
    # the model file's metadata.
    pytest.importorskip("sklearn")
    model, out = tmp_path / "m.h5", tmp_path / "m.rcnn"
    assert main(["train", "--model", "lenet-300-100", "--epochs", "2", "--batch-size", "32",
                 "--lr", "0.05", "--no-progress", "--dataset", "digits", "-o", str(model)]) == 0
    text = capsys.readouterr().out
    assert "lenet-300-100 on digits: 1198 training and 599 test images" in text
    trained = float(text.split("clean test accuracy:")[1].split("%")[0])
    assert trained > 50  # ten classes: chance is 10 %

    assert main(["eval", str(model), "--dataset", "digits"]) == 0
    text = capsys.readouterr().out
    assert "on 599 digits test images" in text and f"clean test accuracy: {trained:.2f}%" in text
    with single_thread():
        assert main(["attack", str(model), "--dataset", "digits", "--limit", "40", "--eps",
                     "0.1", "--no-sanity", "--no-progress"]) == 0
    assert "40 digits test images" in capsys.readouterr().out
    assert main(["compress", str(model), "-o", str(out), "--rounds", "1", "--retrain-epochs",
                 "0", "--finetune-epochs", "0", "--no-progress"]) == 0
    assert "(lenet-300-100) on digits: 1198 training images" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    assert '"dataset": "digits"' in capsys.readouterr().out
