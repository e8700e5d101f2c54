"""The quantized formats' kernels against our float32 kernels and torch (issue rows: FC 4096²
and AlexNet's conv2, batch 1 and 64).

int8 (Vanhoucke et al. 2011): 8-bit activation codes in, as a ``QuantizeActivation`` layer gives
them (the quantizer's pass over the float input is timed with ours), int8 weights with int32
sums, against our float32 dense kernels on the same (decoded) weights and, for FC, torch's
dynamically quantized Linear (``torch.ao.quantization.quantize_dynamic``: int8 weights,
activations quantized per call, fbgemm's int8 GEMM). The outputs agree to the float rounding of
the decoded weights (the int8 sums are exact).

ternary (Zhu et al. 2017): the add/subtract kernel against our float32 dense kernels on the
decoded weights (+wp, 0, −wn at TTQ's ~50% zeros).

pow2 (Zhou et al. 2017, INQ at 5 bits): rows decoded block by block for BLAS, against our float32
dense kernels on the decoded weights; and the decode itself, table lookup (ours) against an
``ldexp`` per weight (``pow2_rows_ldexp``), which picked the table.
"""

import warnings

import numpy as np

from ...engine.activation import quantize_forward
from ...engine.conv import conv2d_forward_format, conv2d_geometry
from ...engine.formats import DenseWeight, Int8Weight, Pow2Weight, TernaryWeight
from ...engine.formats.base import weight_rows
from ...engine.formats.pow2 import pow2_rows_ldexp
from ...engine.linear import linear_forward_format
from ..common import OURS_DENSE, relative_error
from ..pairs import Case

STEP = 1 / 255  # pixels in [0, 1] as uint8 codes
# torch's dynamic quantization rounds the activations again with its own per-call scale (7 bits
# on x86: reduce_range), so its outputs differ from ours by about a percent.
TORCH_DYNAMIC_TOLERANCE = 3e-2
FC = 4096
BATCHES = (1, 64)
# AlexNet conv2: 96 → 256 channels, 5×5, pad 2, groups 2, on 27×27
CONV2 = dict(input_shape=(96, 27, 27), weight_shape=(256, 48, 5, 5), stride=1, padding=2,
             dilation=1, groups=2)


def _fc_weights(rng):
    w = (rng.standard_normal((FC, FC)) / np.sqrt(FC)).astype(np.float32)
    return w, (rng.standard_normal(FC) * 0.1).astype(np.float32)


def _step_absorbed(int8):
    """The layer's int8 weight with the activation step folded into its scales."""
    return Int8Weight(int8.shape, int8.codes.copy(), int8.scales * np.float32(STEP))


def _torch_dynamic_linear(weight, bias):
    import torch

    lin = torch.nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(weight))
        lin.bias.copy_(torch.from_numpy(bias))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice
        return torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear},
                                                      dtype=torch.qint8)


def int8_fc_cases(seed=0):
    import torch

    rng = np.random.default_rng(seed)
    w, b = _fc_weights(rng)
    int8 = Int8Weight.from_dense(w)
    dense = DenseWeight.from_dense(int8.to_dense())
    fmt = _step_absorbed(int8)
    qlin = _torch_dynamic_linear(int8.to_dense(), b)
    cases = []
    for n in BATCHES:
        x = np.round(rng.uniform(0, 1, (n, FC)) * 255).astype(np.float32) * np.float32(STEP)
        xt = torch.from_numpy(x)
        flops = 2 * n * FC * FC

        def ours(x=x):
            return (linear_forward_format(quantize_forward(x, 8, STEP), fmt, b),)

        def ours_float(x=x):
            return (linear_forward_format(x, dense, b),)

        def peer(xt=xt):
            with torch.no_grad():
                return (qlin(xt),)

        def agreement(ours=ours, peer=peer):
            error = relative_error(ours(), peer())
            return error < TORCH_DYNAMIC_TOLERANCE, f"{error:.0e} (< {TORCH_DYNAMIC_TOLERANCE})"

        target = 1.5 if n == 64 else None
        cases.append(Case(f"int8 FC {FC}² batch {n} fwd vs our float32", ours, ours_float, flops, target=target,
                          ours_name="robustcnn-int8", peer_name=OURS_DENSE))
        cases.append(Case(f"int8 FC {FC}² batch {n} fwd vs torch dynamic", ours, peer, flops,
                          target=1.0 if n == 64 else None, ours_name="robustcnn-int8",
                          peer_name="torch-dynamic-int8", agreement=agreement))
    return cases


def _conv2(rng):
    g = CONV2
    geom = conv2d_geometry(g["input_shape"], g["weight_shape"], g["stride"], g["padding"],
                           g["dilation"], g["groups"])
    w = (rng.standard_normal(geom.weight_shape) / np.sqrt(np.prod(g["weight_shape"][1:])))
    O = g["weight_shape"][0]
    return geom, w.astype(np.float32), (rng.standard_normal(O) * 0.1).astype(np.float32)


def int8_conv_cases(seed=0):
    rng = np.random.default_rng(seed)
    geom, w, b = _conv2(rng)
    int8 = Int8Weight.from_dense(w)
    dense = DenseWeight.from_dense(int8.to_dense())
    fmt = _step_absorbed(int8)
    cases = []
    for n in BATCHES:
        x = (np.round(rng.uniform(0, 1, (n,) + CONV2["input_shape"]) * 255).astype(np.float32)
             * np.float32(STEP))

        def ours(x=x):
            return (conv2d_forward_format(quantize_forward(x, 8, STEP), fmt, b, geom),)

        def ours_float(x=x):
            return (conv2d_forward_format(x, dense, b, geom),)

        cases.append(Case(f"int8 AlexNet conv2 batch {n} fwd vs our float32", ours, ours_float,
                          geom.flops(n), target=1.5 if n == 64 else None,
                          ours_name="robustcnn-int8", peer_name=OURS_DENSE))
    return cases


def ternary_cases(seed=0):
    rng = np.random.default_rng(seed)
    w, b = _fc_weights(rng)
    fc = TernaryWeight.from_dense(w, threshold=0.3)  # about half the weights zero
    fc_dense = DenseWeight.from_dense(fc.to_dense())
    geom, cw, cb = _conv2(rng)
    conv = TernaryWeight.from_dense(cw, threshold=0.3)
    conv_dense = DenseWeight.from_dense(conv.to_dense())
    cases = []
    for n in BATCHES:
        x = rng.standard_normal((n, FC)).astype(np.float32)
        xc = rng.standard_normal((n,) + CONV2["input_shape"]).astype(np.float32)
        cases.append(Case(f"ternary FC {FC}² batch {n} fwd vs our float32",
                          lambda x=x: (linear_forward_format(x, fc, b),),
                          lambda x=x: (linear_forward_format(x, fc_dense, b),),
                          2 * n * FC * FC, ours_name="robustcnn-ternary", peer_name=OURS_DENSE))
        cases.append(Case(f"ternary AlexNet conv2 batch {n} fwd vs our float32",
                          lambda x=xc: (conv2d_forward_format(x, conv, cb, geom),),
                          lambda x=xc: (conv2d_forward_format(x, conv_dense, cb, geom),),
                          geom.flops(n), ours_name="robustcnn-ternary",
                          peer_name=OURS_DENSE))
    return cases


def pow2_cases(seed=0, bits=5):
    rng = np.random.default_rng(seed)
    w, b = _fc_weights(rng)
    fc = Pow2Weight.from_dense(w, bits)
    fc_dense = DenseWeight.from_dense(fc.to_dense())
    geom, cw, cb = _conv2(rng)
    conv = Pow2Weight.from_dense(cw, bits)
    conv_dense = DenseWeight.from_dense(conv.to_dense())
    scratch = np.empty((FC, FC), np.float32)
    operand = fc.operand()
    cases = [Case(f"pow2 {bits}-bit decode {FC}² rows: table vs ldexp",
                  lambda: (weight_rows(operand, 0, FC, scratch).copy(),),
                  lambda: (pow2_rows_ldexp(fc.codes, bits, fc.n1, FC, 0, FC, scratch).copy(),),
                  FC * FC, ours_name="robustcnn-pow2-table", peer_name="robustcnn-pow2-ldexp")]
    for n in BATCHES:
        x = rng.standard_normal((n, FC)).astype(np.float32)
        xc = rng.standard_normal((n,) + CONV2["input_shape"]).astype(np.float32)
        cases.append(Case(f"pow2 {bits}-bit FC {FC}² batch {n} fwd vs our float32",
                          lambda x=x: (linear_forward_format(x, fc, b),),
                          lambda x=x: (linear_forward_format(x, fc_dense, b),),
                          2 * n * FC * FC, ours_name="robustcnn-pow2", peer_name=OURS_DENSE))
        cases.append(Case(f"pow2 {bits}-bit AlexNet conv2 batch {n} fwd vs our float32",
                          lambda x=xc: (conv2d_forward_format(x, conv, cb, geom),),
                          lambda x=xc: (conv2d_forward_format(x, conv_dense, cb, geom),),
                          geom.flops(n), ours_name="robustcnn-pow2", peer_name=OURS_DENSE))
    return cases


def cases():
    """Every quantized-format case (a ``pairs`` case family)."""
    return int8_fc_cases() + int8_conv_cases() + ternary_cases() + pow2_cases()
