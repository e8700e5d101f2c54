"""The robustcnn command end to end on a tiny synthetic dataset (seconds, not minutes)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from robustcnn.cli import main
from robustcnn.models.idx import write_idx


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """128 training and 64 test images of MNIST's shape: class k lights up row block k."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 128), ("t10k", 64)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 4:2 * k + 7, 4:24] = 255
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


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
    assert main(["attack", str(model), "--eps", "0,0.3", "--json", str(table)] + common) == 0
    rows = json.loads(table.read_text())
    assert [r["eps"] for r in rows] == [0.0, 0.3]
    assert rows[0]["adversarial_accuracy"] == pytest.approx(trained / 100, abs=1e-6)
    assert rows[1]["adversarial_accuracy"] <= rows[0]["adversarial_accuracy"]

    assert main(["info", str(model)]) == 0
    info = capsys.readouterr().out
    assert "ip1" in info and "266,610" in info and '"dataset": "mnist"' in info


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
