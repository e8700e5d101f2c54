"""The kernels run as plain Python (``NUMBA_DISABLE_JIT=1``, to read them in a debugger) and
give what the compiled kernels give.

A child process with the JIT disabled runs LeNet-5 (float64, pruned and on a few levels) in every
weight format: forward, backward (loss, weight and input gradients; sparse layers at one
example, two and nine, which take their direct and their decoding paths) and one FGSM step; the
int8 format also on byte inputs, where its integer kernels run (LeNet-5's conv1 and
LeNet-300-100's ip1). This process runs the same with the kernels compiled. Plain Python once
failed in the format hubs (``weight_rows`` had no Python body) and, silently, in BLAS (an
external function called from Python did nothing, so every product was zero).

Run as a script (``python test_plain_python.py OUT.npz``) it is the child.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

WEIGHTED = ("conv1", "conv2", "ip1", "ip2")
OPTIONS = {"dense": {}, "csr": {}, "codebook": dict(bits=4),
           "sparse_codebook": dict(code_bits=4, gap_bits=4),
           "huffman": dict(code_bits=4, gap_bits=4), "int8": {}, "ternary": {}, "ttq_latent": {}}


def lenet5_in(kind):
    """LeNet-5 in float64 with 60 % of each weight pruned and the rest on 15 levels, every
    weighted layer in format ``kind``."""
    from robustcnn.engine.formats import DenseWeight
    from robustcnn.models.lenet import lenet5

    net = lenet5(seed=3, dtype=np.float64)
    for name in WEIGHTED:
        w = net[name].dense_weight()
        s = np.abs(w).max()
        q = s * np.round(w / s * 7) / 7
        q[np.abs(q) <= np.quantile(np.abs(q), 0.6)] = 0.0
        net[name].set_weight_format(DenseWeight.from_dense(q))
        net.convert(name, kind, **OPTIONS[kind])
    return net


def run_every_format():
    """{"<format>/<quantity>": array} for each format: logits, loss, weight and bias gradients,
    input gradient, one FGSM step; for int8 also the logits on byte inputs."""
    from robustcnn.attacks import ATTACKS
    from robustcnn.models.lenet import lenet_300_100

    rng = np.random.default_rng(0)
    x, y = rng.random((2, 1, 28, 28)), np.array([3, 7])
    x9 = rng.random((9, 1, 28, 28))
    out = {}
    for kind in OPTIONS:
        net = lenet5_in(kind)
        out[f"{kind}/logits"] = net.logits(x)
        loss, _ = net.loss_and_grad(x, y)
        out[f"{kind}/loss"] = np.array(loss)
        for name in WEIGHTED:
            for key, g in net.grads[name].items():
                out[f"{kind}/d{name}.{key}"] = g.copy()
        out[f"{kind}/dx"] = net.loss_and_input_grad(x, y)[1]
        # Sparse FC layers walk a row's entries directly at small batches and decode rows at
        # larger ones (linear.DIRECT_MAX_BATCH): one example and nine take both paths.
        out[f"{kind}/dx_one"] = net.loss_and_input_grad(x[:1], y[:1])[1]
        out[f"{kind}/logits_nine"] = net.logits(x9)
        out[f"{kind}/fgsm"] = ATTACKS["fgsm"](net, x, y, eps=0.1)
    # Byte inputs take the int8 format's integer kernels (conv and linear).
    net = lenet5_in("int8")
    out["int8/logits_bytes"] = net.logits(np.round(255 * x))
    mlp = lenet_300_100(seed=3, dtype=np.float64)
    for name in ("ip1", "ip2", "ip3"):
        mlp.convert(name, "int8")
    out["int8/mlp_logits_bytes"] = mlp.logits(np.round(255 * x))
    return out


@pytest.fixture(scope="module")
def plain_python(tmp_path_factory):
    path = tmp_path_factory.mktemp("plain") / "results.npz"
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, __file__, str(path)], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(path) as results:
        return dict(results)


@pytest.fixture(scope="module")
def compiled():
    from numba.core import config

    assert not config.DISABLE_JIT, "this process must run the compiled kernels"
    return run_every_format()


@pytest.mark.slow
@pytest.mark.parametrize("kind", OPTIONS)
def test_plain_python_matches_the_compiled_kernels(kind, plain_python, compiled):
    keys = sorted(k for k in compiled if k.startswith(f"{kind}/"))
    assert keys == sorted(k for k in plain_python if k.startswith(f"{kind}/"))
    assert len(keys) >= 14  # logits ×2, loss, 8 parameter gradients (or more), dx ×2, fgsm
    for key in keys:
        np.testing.assert_allclose(plain_python[key], compiled[key], rtol=1e-9, atol=1e-12,
                                   err_msg=key)
    # The comparison bites: the net computes something and the step moves the input.
    assert np.ptp(compiled[f"{kind}/logits"]) > 1e-3
    assert np.abs(compiled[f"{kind}/dx"]).max() > 0


if __name__ == "__main__":
    np.savez(sys.argv[1], **run_every_format())
