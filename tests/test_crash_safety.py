"""Writes survive kill -9: atomic writes leave the old file or the new one, and the next write
to the same path removes the temporary file a killed write left. ``train --checkpoint`` killed
while writing a checkpoint resumes from the last one it finished and ends with the weights of
an uninterrupted run; ``compress -o`` killed while writing its file leaves the old file whole.
(The study store's kill -9 tests are in tests/study/test_store.py.)"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import write_tiny_mnist

from robustcnn.atomic import atomic_path, remove_stale

# Runs the command, hanging in the n-th rename onto TARGET (the write is complete in its
# temporary file, not yet in place) after touching MARKER, until killed. n = 0: no hang.
_SCRIPT = textwrap.dedent("""
    import os, sys, time
    target, marker, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    real, seen = os.replace, [0]

    def replace(src, dst):
        if os.path.abspath(dst) == os.path.abspath(target):
            seen[0] += 1
            if seen[0] == n:
                open(marker, "w").close()
                time.sleep(600)
        return real(src, dst)

    os.replace = replace
    from robustcnn.cli import main
    sys.exit(main(sys.argv[4:]))
""")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_mnist(tmp_path_factory.mktemp("data"))


def _run(tmp_path, target, argv, hang_at=0):
    """Run the command in a child; with ``hang_at``, kill -9 it inside that write."""
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    marker = tmp_path / "hanging"
    if marker.exists():
        marker.unlink()
    args = [sys.executable, str(script), str(target), str(marker), str(hang_at)] + argv
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not hang_at:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err
        return
    deadline = time.monotonic() + 900
    while not marker.exists():
        assert proc.poll() is None, f"the run ended early: {proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _temporaries(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_killed_training_resumes_from_its_last_checkpoint(tiny, tmp_path):
    from robustcnn.engine.checkpoint import read_checkpoint

    common = ["train", "--model", "lenet-300-100", "--epochs", "3", "--batch-size", "32",
              "--lr", "0.05", "--no-progress", "--dataset", "mnist", "--data-dir", str(tiny)]
    ckpt = tmp_path / "run.ckpt.h5"
    # Killed while writing the checkpoint of epoch 2: epoch 1's is there, whole.
    _run(tmp_path, ckpt, common + ["--checkpoint", str(ckpt), "-o", str(tmp_path / "m.h5")],
         hang_at=2)
    assert read_checkpoint(ckpt)["meta"]["epoch"] == 1
    assert len(_temporaries(tmp_path)) == 1  # the killed write's, complete but not renamed
    _run(tmp_path, ckpt, common + ["--checkpoint", str(ckpt), "-o", str(tmp_path / "m.h5")])
    assert _temporaries(tmp_path) == []  # the next write to the path removed it
    _run(tmp_path, tmp_path / "straight.h5", common + ["-o", str(tmp_path / "straight.h5")])
    resumed = read_checkpoint(tmp_path / "m.h5")["state"]
    straight = read_checkpoint(tmp_path / "straight.h5")["state"]
    for key in straight:  # the same run, so the same bits
        np.testing.assert_array_equal(resumed[key], straight[key], err_msg=key)


def test_killed_compress_leaves_the_old_file_whole(tiny, tmp_path):
    from robustcnn.compress.modelfile import encode_model, load_model
    from robustcnn.engine.checkpoint import save_checkpoint
    from robustcnn.models.lenet import lenet_300_100

    model, out = tmp_path / "m.h5", tmp_path / "m.rcnn"
    save_checkpoint(model, lenet_300_100(), meta={"model": "lenet-300-100", "dataset": "mnist"})
    old = encode_model(lenet_300_100(seed=5), {"old": True})
    out.write_bytes(old)
    argv = ["compress", str(model), "-o", str(out), "--rounds", "1", "--retrain-epochs", "0",
            "--finetune-epochs", "0", "--no-progress", "--dataset", "mnist", "--data-dir",
            str(tiny)]
    _run(tmp_path, out, argv, hang_at=1)
    assert out.read_bytes() == old
    assert len(_temporaries(tmp_path)) == 1
    _run(tmp_path, out, argv)
    assert _temporaries(tmp_path) == []
    net, meta = load_model(out)
    assert meta["model"] == "lenet-300-100" and net["ip1"].weight_format.kind == "huffman"


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / "out.txt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    with atomic_path(target) as tmp:  # learn this host's naming
        host = os.path.basename(tmp).split(".")[3]
        open(tmp, "w").write("new")
    names = {"stale": f".out.txt.{host}.{dead}.0123abcd.tmp",
             "live": f".out.txt.{host}.{os.getppid()}.0123abcd.tmp",
             "other_host": f".out.txt.elsewhere.{dead}.0123abcd.tmp",
             "other_file": f".other.txt.{host}.{dead}.0123abcd.tmp"}
    for name in names.values():
        (tmp_path / name).write_text("half")
    with atomic_path(target) as tmp:
        open(tmp, "w").write("newer")
    left = {p.name for p in tmp_path.iterdir()}
    assert names["stale"] not in left
    assert {names["live"], names["other_host"], names["other_file"]} <= left
    assert target.read_text() == "newer"
    assert remove_stale(str(tmp_path), "other.txt") == [str(tmp_path / names["other_file"])]
