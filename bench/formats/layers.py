"""FC and conv layers with a pruned weight in every format of ``robustcnn.engine.formats``,
side by side with their peers, all taking turns: each implementation checked against torch
float64 on the weight it stores.

The FC layer's peers are the table ``LINEAR_PEERS``: adding one (another sparse library, a
runtime) is one function there.
"""

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..common import selected
from .contenders import (OURS_DENSE, SCIPY, TORCH_DENSE, TORCH_SPARSE, TORCH_SPARSE_MV,
                         Contender, FormatCase, once)
from .weights import pruned_weight


@dataclass(frozen=True)
class LinearPeer:
    """An implementation of y = x·Wᵀ + b that is not ours, on the same pruned W."""

    name: str
    # (w, b) → (bind, stored bytes or None): bind(x) → () → (y,). The weight is converted once
    # and outside the timing; the bytes go to the bytes-read table (None: no column of its own).
    prepare: Callable
    batch1_only: bool = False  # a matrix-vector path


def _torch_dense_linear(w, b):
    import torch
    import torch.nn.functional as F

    wt, bt = torch.from_numpy(w), torch.from_numpy(b)

    def bind(x):
        xt = torch.from_numpy(x)
        return lambda: (F.linear(xt, wt, bt),)

    return bind, None


def _torch_csr(w):
    import torch

    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(w).to_sparse_csr()


def _torch_sparse_linear(w, b):
    """torch.sparse.mm(W.to_sparse_csr(), xᵀ)ᵀ + b (int64 indices)."""
    import torch

    wcsr, bt = _torch_csr(w), torch.from_numpy(b)

    def bind(x):
        xt = torch.from_numpy(x)
        return lambda: (torch.sparse.mm(wcsr, xt.T).T + bt,)

    nbytes = sum(t.numel() * t.element_size()
                 for t in (wcsr.values(), wcsr.col_indices(), wcsr.crow_indices()))
    return bind, nbytes


def _torch_sparse_mv(w, b):
    """torch.mv on the CSR tensor: torch's faster path for one vector (twice torch.sparse.mm's
    speed there)."""
    import torch

    wcsr, bt = _torch_csr(w), torch.from_numpy(b)

    def bind(x):
        xt = torch.from_numpy(x)
        return lambda: ((torch.mv(wcsr, xt[0]) + bt)[None],)

    return bind, None


def _scipy_sparse_linear(w, b):
    """scipy.sparse's csr_matrix @ xᵀ (single-threaded, int32 indices)."""
    import scipy.sparse

    sp = scipy.sparse.csr_matrix(w)

    def bind(x):
        return lambda: ((sp @ x.T).T + b,)

    return bind, sp.data.nbytes + sp.indices.nbytes + sp.indptr.nbytes


# The FC layer's peers, in the order they take turns after our formats
LINEAR_PEERS = (
    LinearPeer(TORCH_DENSE, _torch_dense_linear),
    LinearPeer(TORCH_SPARSE, _torch_sparse_linear),
    LinearPeer(SCIPY, _scipy_sparse_linear),
    LinearPeer(TORCH_SPARSE_MV, _torch_sparse_mv, batch1_only=True),
)


def sparse_linear_cases(in_features=4096, out_features=4096, batches=(1, 8, 64), sparsity=0.9, *,
                        seed=0, match=None):
    """FC forward, y = x·Wᵀ + b, with a pruned W in each format against each of
    ``LINEAR_PEERS`` (torch dense, torch sparse CSR, scipy.sparse; at batch 1 also torch.mv on
    the CSR tensor), one case per batch. Ratios against every peer and our dense."""
    from ...engine.formats.base import has_row_direct
    from ...engine.linear import direct_walk, linear_forward_format

    label = f"fc {in_features}->{out_features}"
    names = [f"{label} b{batch} {sparsity:.0%} sparse fwd" for batch in batches]
    if not any(selected(n, match) for n in names):
        return []
    pw = pruned_weight(f"{label} {sparsity:.0%} sparse", (out_features, in_features), sparsity,
                       code_bits=5, gap_bits=5, seed=seed)
    rng = np.random.default_rng(seed + 1)
    b = rng.standard_normal(out_features, dtype=np.float32)
    w = pw.levels[pw.code_bits]
    peers = []
    for peer in LINEAR_PEERS:
        bind, nbytes = peer.prepare(w, b)
        peers.append((peer, bind))
        if nbytes is not None:
            pw.extra_bytes[peer.name] = nbytes

    def ours(x, fmt, direct=None):
        return lambda: (linear_forward_format(x, fmt, b, direct=direct),)

    def other_kernel(batch):
        """Each sparse format's kernel that ``direct_walk`` does not pick at this batch (the
        direct walk or the row kernel), to show the crossover: [(name, fmt, bits, direct)]."""
        out = []
        for n, (fmt, bits) in pw.formats.items():
            if fmt.sparse and has_row_direct(fmt.operand()):
                direct = not direct_walk(fmt, fmt.operand(), batch)
                out.append((f"{n} ({'direct' if direct else 'rows'})", fmt, bits, direct))
        return out

    cases = []
    for batch, name in zip(batches, names):
        if not selected(name, match):
            continue
        x = rng.standard_normal((batch, in_features), dtype=np.float32)
        expected = {bits: once(lambda x=x, q=q: (x.astype(np.float64) @ q.T.astype(np.float64)
                                                 + b,))
                    for bits, q in pw.levels.items()}
        here = [(peer, bind) for peer, bind in peers if batch == 1 or not peer.batch1_only]
        contenders = [Contender(n, ours(x, fmt), expected[bits])
                      for n, (fmt, bits) in pw.formats.items()]
        contenders += [Contender(n, ours(x, fmt, direct), expected[bits])
                       for n, fmt, bits, direct in other_kernel(batch)]
        contenders += [Contender(peer.name, bind(x), expected[pw.code_bits])
                       for peer, bind in here]
        # the "vs" ratios: every peer and our dense, the matrix-vector paths last
        baselines = (tuple(p.name for p, _ in here if not p.batch1_only) + (OURS_DENSE,)
                     + tuple(p.name for p, _ in here if p.batch1_only))
        targets = ()
        if batch == 1 and sparsity == 0.9:
            targets = tuple(("robustcnn-csr", peer, minimum) for peer, minimum in
                            ((TORCH_DENSE, 3.0), (TORCH_SPARSE, 1.0), (TORCH_SPARSE_MV, 1.0)))
            # EIE at batch 1: the sparse codebook reads ~1.3 bytes per kept weight, CSR 8
            targets += (("robustcnn-sparse-codebook", TORCH_DENSE, 3.0),
                        ("robustcnn-sparse-codebook", "robustcnn-csr", 1.0),
                        ("robustcnn-huffman", TORCH_DENSE, 1.5))
        if batch >= 8:  # dense-pattern codebooks: decoding must not cost more than it saves
            targets = tuple((f"robustcnn-codebook{bits}", peer, 1.0)
                            for bits in (4, 5) for peer in (OURS_DENSE, TORCH_DENSE))
        cases.append(FormatCase(name, contenders, baselines, weight=pw, targets=targets))
    return cases


def sparse_conv_cases(name, batch, channels, size, out_channels, kernel, *, padding=0, groups=1,
                      sparsity=0.9, seed=0, match=None):
    """Conv forward with a pruned W in each format against torch's dense conv (torch has no
    sparse conv), and forward + backward for dense and CSR → [fwd case, fwd+bwd case]."""
    import torch
    import torch.nn.functional as F

    from ...engine.conv import conv2d_backward_format, conv2d_forward_format, conv2d_geometry

    names = [f"{name} {sparsity:.0%} sparse fwd", f"{name} {sparsity:.0%} sparse fwd+bwd"]
    if not any(selected(n, match) for n in names):
        return []
    shape = (out_channels, channels // groups, kernel, kernel)
    weight_name = name.rsplit(" b", 1)[0]  # the case's name without its batch
    pw = pruned_weight(f"{weight_name} {sparsity:.0%} sparse", shape, sparsity, code_bits=8,
                       gap_bits=4, seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch, channels, size, size), dtype=np.float32)
    b = rng.standard_normal(out_channels, dtype=np.float32)
    geom = conv2d_geometry(x.shape[1:], shape, 1, padding, 1, groups)
    dy = rng.standard_normal((batch,) + geom.out_shape, dtype=np.float32)
    args = (1, padding, 1, groups)
    w = pw.levels[pw.code_bits]
    xt, wt, bt, dyt = (torch.from_numpy(a) for a in (x, w, b, dy))

    def reference(q, backward):
        x64, w64, b64 = (torch.from_numpy(a).double().requires_grad_(backward) for a in (x, q, b))
        y = F.conv2d(x64, w64, b64, *args)
        if not backward:
            return (y.detach().numpy(),)
        return (y,) + torch.autograd.grad(y, (x64, w64, b64), torch.from_numpy(dy).double())

    expected = {bits: once(lambda q=q: reference(q, False)) for bits, q in pw.levels.items()}
    train_ref = once(lambda: [a.detach().numpy() for a in reference(w, True)])

    def ours(fmt):
        return lambda: (conv2d_forward_format(x, fmt, b, geom),)

    def ours_train(fmt):
        def run():
            y = conv2d_forward_format(x, fmt, b, geom)
            dx, grads, db = conv2d_backward_format(dy, x, fmt, geom)
            return (y, dx, grads[fmt.trainable[0]], db)

        def want():  # the format's own weight gradient: dW itself, or dW at the stored positions
            y, dx, dw, db = train_ref()
            return (y, dx, fmt.reduce_dense_grad(dw)[fmt.trainable[0]], db)

        return run, want

    xg, wg, bg = (t.clone().requires_grad_() for t in (xt, wt, bt))  # apart from the forward's

    def torch_train():
        y = F.conv2d(xg, wg, bg, *args)
        return (y,) + torch.autograd.grad(y, (xg, wg, bg), dyt)

    cases = []
    if selected(names[0], match):
        contenders = [Contender(n, ours(fmt), expected[bits])
                      for n, (fmt, bits) in pw.formats.items()]
        contenders.append(Contender(TORCH_DENSE, lambda: (F.conv2d(xt, wt, bt, *args),),
                                    expected[pw.code_bits]))
        targets = ()
        if sparsity == 0.9:
            targets = (("robustcnn-csr", OURS_DENSE, 1.5),
                       ("robustcnn-sparse-codebook", OURS_DENSE, 1.5))
        cases.append(FormatCase(names[0], contenders, (TORCH_DENSE, OURS_DENSE), weight=pw,
                                targets=targets))
    if selected(names[1], match):
        contenders = [Contender(n, *ours_train(pw.formats[n][0]))
                      for n in (OURS_DENSE, "robustcnn-csr")]
        contenders.append(Contender(TORCH_DENSE, torch_train, train_ref))
        cases.append(FormatCase(names[1], contenders, (TORCH_DENSE, OURS_DENSE), weight=pw))
    return cases
