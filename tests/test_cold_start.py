"""What keeps a fresh process's first LeNet-5 forward quick (bench/coldstart.py times it): the
model's import pulls in no attack, compression or study code, and a batch-1 forward runs every
layer's chunk function in the calling thread, so no parallel wrapper is compiled (or loaded)."""

import json
import subprocess
import sys

_FIRST_FORWARD = """
import json, sys
import numpy as np
from robustcnn.models.lenet import lenet5
imported = sorted(m for m in sys.modules if m.split(".")[:2] in (
    ["robustcnn", "attacks"], ["robustcnn", "compress"], ["robustcnn", "study"],
    ["robustcnn", "certify"], ["robustcnn", "defences"]) or m.split(".")[0] in ("h5py", "torch"))
net = lenet5()
net.forward(np.zeros((1,) + net.input_shape, dtype=np.float32))
from robustcnn.engine import activation, conv, linear, pool
# conv1 (one channel) runs the im2col kernel, conv2 (20) the channels-last patch kernels
wrappers = {"conv1": conv.conv2d_forward_im2col, "conv2": conv.conv2d_forward_patches,
            "pad": conv.pad_channels_last_batch, "linear": linear.linear_forward_gemm,
            "pool": pool.max_pool2d_values_nchw, "relu": activation.relu_forward_chunks}
chunks = {"conv1": conv.conv2d_forward_im2col_chunk, "conv2": conv.conv2d_forward_patches_chunk,
          "pad": conv.pad_channels_last_chunk, "linear": linear.linear_forward_gemm_chunk,
          "pool": pool.max_pool2d_values_chunk, "relu": activation.relu_forward_chunk}
print(json.dumps({"imported": imported,
                  "wrappers": {k: len(d.signatures) for k, d in wrappers.items()},
                  "chunks": {k: len(d.signatures) for k, d in chunks.items()}}))
"""


def _first_forward():
    out = subprocess.run([sys.executable, "-c", _FIRST_FORWARD], capture_output=True, text=True,
                         check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_batch_one_lenet5_forward_imports_and_compiles_only_what_it_runs():
    seen = _first_forward()
    assert seen["imported"] == []
    assert seen["wrappers"] == {k: 0 for k in seen["chunks"]}, seen["wrappers"]
    assert all(n >= 1 for n in seen["chunks"].values()), seen["chunks"]
