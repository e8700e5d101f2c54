"""ONNX models → ``Net``, and back (``save_onnx``, see exporter.py).

    from robustcnn.models.onnx import is_onnx_file, load_onnx, save_onnx
    is_onnx_file("model.onnx")           # content sniffing: the first bytes, no parse
    net = load_onnx("model.onnx")        # NCHW, as ONNX; the graph's first output
    save_onnx(net, "again.onnx")

Files are read with the ``onnx`` package's protobuf messages (the ``onnx`` extra: ``pip
install 'robustcnn[onnx]'``); nothing in a file is executed, and no shape it declares is
allocated before the bytes holding it are checked (``files.py``). Opsets 7 to the newest the
installed ``onnx`` knows; external data files beside the model (never outside its folder).

**One input, one output.** The engine's Net has one of each: a model with several inputs is
refused, and of several outputs the first is built (``output=`` names another, or any value of
the graph). Axis 0 is the batch, of any size when the net runs; shape arithmetic in the file
(``Shape``) sees it at its declared size, and a symbolic one as a marker that a Reshape must
carry through (as ``0``, ``-1`` or the value ``Shape`` gave): a literal size there would mix
examples. Input dims must be known but for the batch (``input_shape=`` fills in symbolic ones).

**Operators** (ONNX → engine layer):

- Conv → Conv2d: group, dilations, strides, pads (uneven ones become a Pad2d first), auto_pad;
  2-D only. Gemm (transB, alpha, beta, C per output) and MatMul of a flat input by a 2-D
  constant → Linear; an Add of a constant after a Conv, Gemm, MatMul or Mul is folded into
  its bias.
- MaxPool / AveragePool (ceil_mode, count_include_pad, auto_pad, uneven pads; no dilations) →
  MaxPool2d / AvgPool2d; GlobalAveragePool and ReduceMean over (2, 3) → GlobalAvgPool2d;
  GlobalMaxPool → MaxPool2d over the plane.
- Relu, LeakyRelu (alpha ≥ 0) → ReLU; Clip to [0, 6] → ReLU6 (to [0, ∞) → ReLU); PRelu (a
  slope per channel or one) → PReLU; Sigmoid, HardSigmoid, HardSwish → Sigmoid, HardSigmoid,
  HardSwish; Softmax over every value of an example → Softmax; LRN (odd size) → LRN;
  BatchNormalization (inference) → BatchNorm; Dropout → Dropout.
- Add/Sub/Mul/Div of a tensor and a constant with one value per channel (or one for all) →
  Scale; Add/Sub/Mul of two same-shape tensors, Sum, Max → EltwiseSum / EltwiseProd /
  EltwiseMax; Concat (not over the batch) → Concat.
- Flatten, Reshape (static target; the batch axis kept), Squeeze / Unsqueeze (static axes) →
  Flatten or Reshape; Transpose keeping the batch first → Permute; Pad (zeros, on H and W) →
  Pad2d; Identity → nothing.
- Constant, and any of Constant, Identity, Shape, Size, Gather, Unsqueeze, Squeeze, Concat,
  Cast, ConstantOfShape, Reshape, Flatten, Transpose, Add, Sub, Mul, Div, Neg, Sqrt,
  Reciprocal, Slice, Range on constants (initializers, folded values, the static shape of a
  tensor) → folded at import into a constant.

Anything else — another operator, a custom domain, an option the engine has no layer for, a
shape that cannot be folded — is a one-line ValueError naming the file, the node and its
operator. Nodes that the chosen output does not depend on are not read.
"""

try:
    import onnx  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("robustcnn.models.onnx needs the onnx package: "
                      "pip install 'robustcnn[onnx]'") from None

from .exporter import onnx_model, save_onnx
from .files import is_onnx_file, read_model
from .importer import load_onnx

__all__ = ["is_onnx_file", "load_onnx", "save_onnx", "onnx_model", "read_model"]
