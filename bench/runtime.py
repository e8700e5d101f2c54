"""Whole networks against the runtime users deploy with: our Net.forward against onnxruntime
(CPU execution provider) running the same net exported by ``models.onnx.onnx_model``.

onnxruntime gets the threads Numba has (intra-op; one inter-op thread, sequential execution,
every graph optimisation on): the same cores as our kernels and torch.
"""

import sys

import numba

from .dense import lenet5_flops, lenet5_inputs
from .pairs import Case

ONNXRUNTIME = "onnxruntime"


def onnxruntime_session(net):
    """An onnxruntime session running ``net`` as exported to ONNX, with Numba's thread count."""
    import onnxruntime as ort

    from ..models.onnx import onnx_model

    options = ort.SessionOptions()
    options.intra_op_num_threads = numba.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(onnx_model(net).SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def lenet5_case(*, batch=256, seed=0):
    """LeNet-5 forward, ours against onnxruntime on the same weights (nonzero biases)."""
    net, x, _ = lenet5_inputs(batch, seed)
    session = onnxruntime_session(net)
    feed = {session.get_inputs()[0].name: x}

    def ours():
        return (net.forward(x),)

    def peer():
        return (session.run(None, feed)[0],)

    return Case(f"lenet5 forward b{batch} (onnxruntime)", ours, peer,
                sum(lenet5_flops(net, batch)), images=batch, target=1.0, peer_name=ONNXRUNTIME)


def cases():
    """The whole-net cases against onnxruntime (none, said on stderr, without onnx and
    onnxruntime: the bench extra installs both)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        print("  no onnxruntime cases: pip install 'robustcnn[bench]'", file=sys.stderr)
        return []
    return [lenet5_case()]
