"""``eval`` and ``attack`` on another output of a net with several (issue 15 point 2):
``--output NAME`` evaluates and attacks that head, and a name the net does not have, or a head
with fewer values than the dataset has classes, is a one-line error."""

import json
import re

import numpy as np
import pytest
from helpers import single_thread, write_tiny_mnist

from robustcnn.cli import main
from robustcnn.engine import Flatten, Linear, Net
from robustcnn.engine.checkpoint import save_checkpoint
from robustcnn.models.datasets import load_dataset


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    """A checkpoint of flatten → ``good`` (10 classes, each the template of tiny MNIST's
    class: its lit row block), ``bad`` (the negated templates), ``small`` (3 values); the
    output is ``bad`` → (path, net, data directory)."""
    root = tmp_path_factory.mktemp("heads")
    data = write_tiny_mnist(root)
    net = Net([Flatten("flat"), Linear("bad", 10, bottom="flat"),
               Linear("good", 10, bottom="flat"), Linear("small", 3, bottom="flat")],
              input_shape=(1, 28, 28), output="bad", outputs=["good", "small"], seed=0)
    templates = np.zeros((10, 1, 28, 28))
    for k in range(10):
        templates[k, 0, 2 * k + 4:2 * k + 7, 4:24] = 1.0 / 60
    net.params["good"]["weight"][...] = templates.reshape(10, -1)
    net.params["bad"]["weight"][...] = -templates.reshape(10, -1)
    for head in ("good", "bad"):
        net.params[head]["bias"][...] = 0.0
    path = root / "heads.h5"
    save_checkpoint(path, net)
    return path, net, data


def _accuracy(net, data, limit):
    x, y = load_dataset("mnist", "test", data_dir=str(data))
    return 100 * net.accuracy(x[:limit], y[:limit])


def test_eval_and_attack_the_chosen_output(two_heads, capsys, tmp_path):
    path, net, data = two_heads
    common = [str(path), "--dataset", "mnist", "--data-dir", str(data), "--limit", "32"]
    good = _accuracy(net.with_output("good"), data, 32)
    bad = _accuracy(net, data, 32)
    assert good > 90 and bad < 20  # the two heads are told apart by their accuracies
    assert main(["eval"] + common + ["--no-progress"]) == 0
    assert f"clean test accuracy: {bad:.2f}%" in capsys.readouterr().out
    assert main(["eval"] + common + ["--output", "good", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "output good" in out and f"clean test accuracy: {good:.2f}%" in out
    table = tmp_path / "attack.json"
    with single_thread():
        assert main(["attack"] + common + ["--output", "good", "--attack", "fgsm", "--eps",
                                           "0,0.6", "--no-sanity", "--no-progress", "--json",
                                           str(table)]) == 0
    assert "output good" in capsys.readouterr().out.splitlines()[0]
    rows = json.loads(table.read_text())["rows"]
    assert rows[0]["adversarial_accuracy"] == pytest.approx(good / 100, abs=1e-6)
    assert rows[1]["adversarial_accuracy"] < rows[0]["adversarial_accuracy"]  # it was attacked


@pytest.mark.parametrize("name, message", [
    ("nowhere", r"--output nowhere: .*'nowhere' is not made by any layer \(the net's outputs: "
                r"bad, good, small\)"),
    ("small", r"--output small: 3 values per example, but mnist's labels go up to 9"),
])
def test_a_wrong_output_is_one_line(two_heads, capsys, name, message):
    path, _, data = two_heads
    assert main(["eval", str(path), "--dataset", "mnist", "--data-dir", str(data),
                 "--output", name]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
