"""Structured FC layers (Sindhwani, Sainath & Kumar 2015; ``engine/structured.py``) against the
dense product with the same matrix: FC 4096², circulant and Toeplitz-like of displacement rank
4, forward at batch 1 and 64, against torch's dense ``F.linear`` and our dense kernel on the
assembled W. Both sides are the functional kernels, no Net around them (a Net's input and output
checks cost more than a batch-1 FFT on a loaded machine). The FLOPs column counts the dense
product's (2 per multiply-add of the 4096² matrix): for the structured side it is an effective
rate, the FFTs do far fewer."""

import numpy as np

from ...engine import Net, StructuredLinear
from ...engine.formats import DenseWeight
from ...engine.linear import linear_forward_format
from ...engine.structured import structured_forward
from ..common import OURS_DENSE, TORCH_DENSE
from ..pairs import Case

FC = 4096
BATCHES = (1, 64)
ARMS = (("circulant", 1), ("toeplitz-like", 4))


def _layer(structure, rank, seed):
    """A set-up StructuredLinear FC×FC with random generators and bias (float32)."""
    net = Net([StructuredLinear("fc", FC, structure=structure, rank=rank)], (FC,), seed=seed)
    layer = net.layer("fc")
    layer.params["bias"][...] = np.random.default_rng(seed).uniform(-0.1, 0.1, FC)
    return net, layer


def cases(seed=0):
    """Every structured case (a ``pairs`` case family)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    out = []
    for structure, rank in ARMS:
        _, layer = _layer(structure, rank, seed)
        w, b = layer.dense_weight(), layer.params["bias"]
        dense = DenseWeight.from_dense(w)
        wt, bt = torch.from_numpy(w), torch.from_numpy(b.copy())
        label = "circulant" if structure == "circulant" else f"toeplitz-like r={rank}"
        for n in BATCHES:
            x = rng.standard_normal((n, FC)).astype(np.float32)
            xt = torch.from_numpy(x)

            def ours(x=x, structure=structure, params=layer.params):
                y, _ = structured_forward(structure, x, params, FC)  # the layer's forward
                return (y + params["bias"],)

            def torch_dense(xt=xt, wt=wt, bt=bt):
                with torch.no_grad():
                    return (F.linear(xt, wt, bt),)

            def ours_dense(x=x, dense=dense, b=b):
                return (linear_forward_format(x, dense, b),)

            flops = 2 * n * FC * FC
            name = f"structured FC {FC}² {label} batch {n} fwd"
            out.append(Case(f"{name} vs torch dense", ours, torch_dense, flops,
                            ours_name=f"robustcnn-{structure}", peer_name=TORCH_DENSE))
            out.append(Case(f"{name} vs our dense", ours, ours_dense, flops,
                            ours_name=f"robustcnn-{structure}", peer_name=OURS_DENSE))
    return out
