"""Low-rank factorisation of fully connected and convolutional layers, a compact baseline.

A fully connected weight W (out × in) is replaced by its truncated SVD W ≈ U_r S_r V_rᵀ, as
Sainath et al. 2013 ("Low-rank matrix factorization for deep neural network training with
high-dimensional output targets") and Denton et al. 2014 ("Exploiting linear structure within
convolutional networks for efficient evaluation") do: two layers, Linear(in → r, no bias) with
weight √S_r V_rᵀ, then Linear(r → out) with weight U_r √S_r and the original bias. A convolution
(out, c, kh, kw) is factorised through the SVD of its weight reshaped (out, c·kh·kw) into a
Conv2d(c → r, kh × kw, the layer's stride, padding and dilation, no bias) followed by a 1×1
Conv2d(r → out) with the bias: r full-size filters, then a linear recombination of their maps
(Jaderberg et al. 2014, "Speeding up convolutional neural networks with low rank expansions":
a basis of filters, here not separable; Denton et al.: the SVD of the unfolded weight). By
Eckart–Young the product is the best rank-r approximation of the weight in the Frobenius norm,
layer by layer; it is not the best for the net's output, and small ranks need retraining.

    ranks = ranks_for_ratio(net, 10)          # {"conv2": 3, "ip1": 31, …}: ≈ 10× fewer params
    small = factorise(net, ranks)             # a new Net; the rest of the net is untouched

The first factor is named ``<layer>_lr1`` and writes the blob ``<layer>_lr1``; the second keeps
the layer's name and tops and reads ``<layer>_lr1``, so every blob the rest of the net reads
still exists.

A common fraction of every layer's rank (``ranks_for_ratio``) can leave a small layer at rank 1:
LeNet-5 at 10× gets conv1 and the 10-class ip2 at rank 1, which caps its accuracy. Pass
``layers`` to factorise only the large layers.
"""

import numpy as np

from ..engine import Conv2d, Linear, Net


def _factorable(net, name):
    """The layer ``name`` of ``net`` as (layer, (out, in)), checked to be factorable."""
    try:
        layer = net.layer(name)
    except KeyError:
        raise ValueError(f"{net.name}: no layer named {name!r} to factorise; layers with a "
                         f"weight: {[l.name for l in net.layers if _weighted(l)]}") from None
    if not _weighted(layer):
        raise ValueError(f"{net.name}: {layer.at} is not a Linear or Conv2d layer; only those "
                         f"can be factorised")
    if isinstance(layer, Conv2d) and layer.groups != 1:
        raise ValueError(f"{net.name}: {layer.at} is a grouped convolution (groups="
                         f"{layer.groups}); only groups=1 layers can be factorised")
    shape = layer.weight_shape
    return layer, (shape[0], int(np.prod(shape[1:])))


def _weighted(layer):
    return isinstance(layer, (Linear, Conv2d))


def factorised_params(out, inp, rank):
    """Weights of a rank-``rank`` factorisation of an (out × inp) weight: r·(in + out)."""
    return rank * (out + inp)


def factorise(net, ranks):
    """A new Net where each layer of ``ranks`` ({layer name: rank}) is replaced by the two
    factors of its weight's truncated SVD (see the module docstring); every other layer, its
    weights and buffers are copied unchanged. Ranks must be integers in 1..min(out, in); the
    weights are read densely (a pruned or quantized layer is factorised as its dense weight)
    and the factors are dense. Works in the net's dtype (SVD in float64).
    """
    if not isinstance(ranks, dict):
        raise ValueError(f"{net.name}: ranks must be a dict {{layer name: rank}}, got "
                         f"{type(ranks).__name__}")
    plan = {}
    for name, rank in ranks.items():
        layer, (out, inp) = _factorable(net, name)
        full = min(out, inp)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or \
                not 1 <= rank <= full:
            raise ValueError(f"{net.name}: {layer.at}: rank must be an integer in 1..{full} "
                             f"(min(out, in) of its {out}×{inp} weight), got {rank!r}")
        plan[name] = int(rank)
    layers, state = [], {}
    old = net.state_dict()
    for layer in net.layers:
        cfg = layer.config()
        if layer.name not in plan:
            layers.append(type(layer)(**_kwargs(cfg)))
            state.update({f"{layer.name}/{k}": old[f"{layer.name}/{k}"]
                          for k in layer.state_keys()})
            continue
        first, second, arrays = _split(layer, plan[layer.name], cfg)
        layers += [first, second]
        state.update(arrays)
    new = Net(layers, net.input_shape, input_name=net.input_name, output=net.output,
              dtype=net.dtype, seed=net.seed, name=net.name)
    new.load_state_dict(state, source=f"{net.name} factorised")
    new.training = net.training
    return new


def _kwargs(cfg):
    """A layer's config as its constructor's keyword arguments."""
    return {k: v for k, v in cfg.items() if k not in ("class", "type")}


def _split(layer, rank, cfg):
    """The two factor layers replacing ``layer`` and their arrays {"layer/param": array}."""
    w = layer.dense_weight().astype(np.float64)
    out = w.shape[0]
    u, s, vt = np.linalg.svd(w.reshape(out, -1), full_matrices=False)
    root = np.sqrt(s[:rank])
    w1 = (root[:, None] * vt[:rank])  # (r, in)
    w2 = u[:, :rank] * root[None, :]  # (out, r)
    mid = f"{layer.name}_lr1"
    bottom = cfg.get("bottom")
    dtype = layer.dtype
    if isinstance(layer, Linear):
        first = Linear(mid, rank, bias=False, weight_init=layer.weight_init, bottom=bottom,
                       top=mid)
        second = Linear(layer.name, out, bias=layer.bias, weight_init=layer.weight_init,
                        bottom=mid, top=cfg.get("top"))
        w1 = w1.reshape(rank, -1)
    else:
        first = Conv2d(mid, rank, kernel=layer.kernel, stride=layer.stride,
                       padding=layer.padding, dilation=layer.dilation, bias=False,
                       weight_init=layer.weight_init, bottom=bottom, top=mid)
        second = Conv2d(layer.name, out, kernel=1, bias=layer.bias,
                        weight_init=layer.weight_init, bottom=mid, top=cfg.get("top"))
        w1 = w1.reshape((rank,) + w.shape[1:])
        w2 = w2.reshape(out, rank, 1, 1)
    arrays = {f"{mid}/weight": w1.astype(dtype), f"{layer.name}/weight": w2.astype(dtype)}
    if layer.bias:
        arrays[f"{layer.name}/bias"] = layer.params["bias"].copy()
    return first, second, arrays


def _full_params(net, names):
    return {n: _factorable(net, n)[1] for n in names}


def _ranks_at(shapes, fraction):
    """Each layer's rank at ``fraction`` of its full rank (≥ 1), or None where the
    factorisation would not have fewer weights than the layer."""
    ranks = {}
    for name, (out, inp) in shapes.items():
        rank = max(1, int(round(fraction * min(out, inp))))
        ranks[name] = rank if factorised_params(out, inp, rank) < out * inp else None
    return ranks


def _count(net, shapes, ranks):
    """Parameters of ``factorise(net, ranks)`` without building it."""
    total = net.num_params()
    for name, rank in ranks.items():
        if rank is not None:
            out, inp = shapes[name]
            total += factorised_params(out, inp, rank) - out * inp
    return total


def ranks_for_ratio(net, ratio, layers=None):
    """Ranks {layer: rank} so that ``factorise(net, ranks)`` has about ``net.num_params() /
    ratio`` parameters: every factorised layer keeps one common fraction of its full rank
    min(out, in) (rounded, at least 1), the fraction found by bisection. ``layers`` (default:
    every Linear and groups=1 Conv2d) are the candidates; a layer whose factorisation at that
    fraction would not have fewer weights than the layer itself is left out (stays whole).

    Raises ValueError if ``ratio`` < 1 or if even rank 1 everywhere keeps more parameters than
    the target (the message gives the largest reachable ratio). The count is exact for the
    chosen ranks, but rounding ranks makes it only approximately the target (closest of the
    bisection's last two brackets is returned).
    """
    if not (isinstance(ratio, (int, float)) and np.isfinite(ratio) and ratio >= 1):
        raise ValueError(f"{net.name}: ratio must be a finite number >= 1, got {ratio!r}")
    if layers is None:
        layers = [l.name for l in net.layers
                  if _weighted(l) and not (isinstance(l, Conv2d) and l.groups != 1)]
    shapes = _full_params(net, layers)
    if not shapes:
        raise ValueError(f"{net.name}: no Linear or groups=1 Conv2d layer to factorise")
    target = net.num_params() / ratio

    def count(f):
        return _count(net, shapes, _ranks_at(shapes, f))

    smallest = count(0.0)
    if smallest > target:
        raise ValueError(f"{net.name}: a {ratio:g}× smaller net is out of reach by factorising "
                         f"{sorted(shapes)}: rank 1 everywhere leaves {smallest:,} of "
                         f"{net.num_params():,} parameters (at most "
                         f"{net.num_params() / smallest:.3g}×)")
    lo, hi = 0.0, 1.0  # count(lo) ≤ target < count(hi) (or hi is full rank)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if count(mid) <= target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda f: abs(count(f) - target))
    return {n: r for n, r in _ranks_at(shapes, best).items() if r is not None}
