"""The binary format's kernels (BinaryConnect / XNOR-Net weights: sign bits and a scale per output
channel) against our float32 dense kernels and torch's on the decoded weights (issue rows: FC
4096² and AlexNet's conv2, batch 1 and 64).

Two inputs per layer: float activations (the add/subtract kernel, as a binarized net's first
layer or one with float activations computes) and ±1 activations (the XNOR-popcount kernel, as
a layer behind a binary ``QuantizeActivation`` computes; its check of the input and the packing
of the activations to bits are timed with it). The peers multiply the same ±1 values in
float32; the outputs agree to float32 rounding (the popcount sums are exact).
"""

import numpy as np

from ...engine.conv import conv2d_forward_format
from ...engine.formats import BinaryWeight, DenseWeight
from ...engine.linear import linear_forward_format
from ..common import OURS_DENSE, TORCH_DENSE
from ..pairs import Case
from . import quantized  # the shapes and weights of the quantized formats' rows


def _signs(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def _torch_linear(w, b):
    import torch

    tw, tb = torch.from_numpy(w), torch.from_numpy(b)
    return lambda x: (torch.nn.functional.linear(torch.from_numpy(x), tw, tb),)


def _torch_conv(w, b):
    import torch

    tw, tb = torch.from_numpy(w), torch.from_numpy(b)
    return lambda x: (torch.nn.functional.conv2d(torch.from_numpy(x), tw, tb,
                                                 padding=quantized.CONV2["padding"],
                                                 groups=quantized.CONV2["groups"]),)


def cases(seed=0):
    """Every binary-format case (a ``pairs`` case family)."""
    rng = np.random.default_rng(seed)
    FC, CONV2 = quantized.FC, quantized.CONV2
    w, b = quantized._fc_weights(rng)
    fc = BinaryWeight.from_dense(w)
    fc_w = fc.to_dense()
    fc_dense = DenseWeight.from_dense(fc_w)
    geom, cw, cb = quantized._conv2(rng)
    conv = BinaryWeight.from_dense(cw)
    conv_w = conv.to_dense()
    conv_dense = DenseWeight.from_dense(conv_w)
    torch_fc, torch_conv = _torch_linear(fc_w, b), _torch_conv(conv_w, cb)
    out = []
    for n in quantized.BATCHES:
        x = rng.standard_normal((n, FC)).astype(np.float32)
        xs = _signs(rng, (n, FC))
        xc = rng.standard_normal((n,) + CONV2["input_shape"]).astype(np.float32)
        xcs = _signs(rng, (n,) + CONV2["input_shape"])
        fc_flops, conv_flops = 2 * n * FC * FC, geom.flops(n)
        out += [
            Case(f"binary FC {FC}² batch {n} fwd, float input vs our float32",
                 lambda x=x: (linear_forward_format(x, fc, b),),
                 lambda x=x: (linear_forward_format(x, fc_dense, b),), fc_flops,
                 ours_name="robustcnn-binary", peer_name=OURS_DENSE),
            Case(f"binary FC {FC}² batch {n} fwd, ±1 input (XNOR) vs our float32",
                 lambda x=xs: (linear_forward_format(x, fc, b),),
                 lambda x=xs: (linear_forward_format(x, fc_dense, b),), fc_flops,
                 ours_name="robustcnn-xnor", peer_name=OURS_DENSE),
            Case(f"binary FC {FC}² batch {n} fwd, ±1 input (XNOR) vs torch float32",
                 lambda x=xs: (linear_forward_format(x, fc, b),),
                 lambda x=xs: torch_fc(x), fc_flops,
                 ours_name="robustcnn-xnor", peer_name=TORCH_DENSE),
            Case(f"binary AlexNet conv2 batch {n} fwd, float input vs our float32",
                 lambda x=xc: (conv2d_forward_format(x, conv, cb, geom),),
                 lambda x=xc: (conv2d_forward_format(x, conv_dense, cb, geom),), conv_flops,
                 ours_name="robustcnn-binary", peer_name=OURS_DENSE),
            Case(f"binary AlexNet conv2 batch {n} fwd, ±1 input (XNOR) vs our float32",
                 lambda x=xcs: (conv2d_forward_format(x, conv, cb, geom),),
                 lambda x=xcs: (conv2d_forward_format(x, conv_dense, cb, geom),), conv_flops,
                 ours_name="robustcnn-xnor", peer_name=OURS_DENSE),
            Case(f"binary AlexNet conv2 batch {n} fwd, ±1 input (XNOR) vs torch float32",
                 lambda x=xcs: (conv2d_forward_format(x, conv, cb, geom),),
                 lambda x=xcs: torch_conv(x), conv_flops,
                 ours_name="robustcnn-xnor", peer_name=TORCH_DENSE),
        ]
    return out
