"""certify/ibp.py and certify/crown_ibp.py: the bounds are sound, tight where they should be,
and their derivatives are right.

- Soundness by sampling: on a DAG with a layer of every type that has an interval rule, and
  on a LeNet-like chain, in every weight format, no sampled input of the box (uniform points
  and vertices) gives a logit outside IBP's box or a margin below IBP's or CROWN-IBP's bound
  (2·10⁴ samples per net here; 10⁶ in the slow test).
- Exact enumeration: a 2-D box through a one-hidden-layer ReLU net has its minimum margin at
  a vertex of the box cut by the neurons' lines; the bounds lie below it, and a fine grid's
  minimum lies above it.
- Tightness: on an affine region (a linear net, or eps so small that no ReLU is unstable)
  CROWN is exact and IBP is not tighter; on naturally initialised nets CROWN-IBP is tighter
  than IBP on average.
- Derivatives: finite differences of Σ w·bounds with respect to every parameter, through both
  passes, for every format.
"""

import itertools

import numpy as np
import pytest
from certify_nets import KINDS, every_layer_net, gradient_net, lenet_like, mlp_2d
from helpers import assert_close

from robustcnn.certify.crown_ibp import (linear_bounds, margin_bounds, margin_spec)
from robustcnn.certify.ibp import input_box, interval_forward, logit_bounds
from robustcnn.engine import LRN, Conv2d, Linear, Net


def sample_box(rng, lo, hi, count):
    """``count`` points per example of the box [lo, hi] (N, …): a quarter at random vertices,
    the rest uniform → (N, count, …)."""
    n = len(lo)
    shape = (n, count) + lo.shape[1:]
    t = rng.random(shape)
    corners = count // 4
    t[:, :corners] = t[:, :corners] > 0.5
    return lo[:, None] + t * (hi - lo)[:, None]


def check_sound(net, x, eps, samples, rng, batch=2000, clip=(0.0, 1.0)):
    """IBP's logit box and both margin bounds hold for ``samples`` points per example."""
    y = net.predict(x)
    lo, hi = input_box(x, eps, clip)
    zlo, zhi = logit_bounds(net, lo, hi)
    bounds = {m: margin_bounds(net, x, y, eps, method=m, clip=clip)[0]
              for m in ("ibp", "crown-ibp")}
    _, others = margin_spec(y, net.num_classes)
    scale = max(np.abs(zlo).max(), np.abs(zhi).max())
    tol = 1e-9 * scale
    worst = np.full(others.shape, np.inf)
    for done in range(0, samples, batch):
        pts = sample_box(rng, lo, hi, min(batch, samples - done))
        z = net.logits(pts.reshape((-1,) + x.shape[1:]), batch_size=4096).reshape(
            len(x), -1, net.num_classes)
        assert (z >= zlo[:, None] - tol).all(), "a sampled logit is below IBP's lower bound"
        assert (z <= zhi[:, None] + tol).all(), "a sampled logit is above IBP's upper bound"
        zy = z[np.arange(len(x)), :, y]
        margins = zy[:, :, None] - np.take_along_axis(
            z, np.repeat(others[:, None, :], z.shape[1], axis=1), axis=2)
        worst = np.minimum(worst, margins.min(axis=1))
    for m, b in bounds.items():
        assert (b <= worst + tol).all(), f"{m}: a sampled margin is below the bound"
    return bounds, worst


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("make", [every_layer_net, lenet_like], ids=["every-layer", "lenet-like"])
def test_bounds_hold_for_sampled_inputs(make, kind, rng):
    net = make(kind)
    x = rng.random((3,) + net.input_shape)
    bounds, worst = check_sound(net, x, 0.08, 20_000, rng)
    assert np.isfinite(bounds["crown-ibp"]).all()


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("make", [every_layer_net, lenet_like], ids=["every-layer", "lenet-like"])
def test_bounds_hold_for_a_million_samples(make, kind):
    rng = np.random.default_rng(99)
    net = make(kind, seed=3)
    x = rng.random((2,) + net.input_shape)
    check_sound(net, x, 0.1, 500_000, rng, batch=5000)  # 2 examples × 500,000


def test_bounds_without_clipping_and_at_eps_zero(rng):
    net = lenet_like()
    x = rng.standard_normal((2,) + net.input_shape)
    check_sound(net, x, 0.3, 4000, rng, clip=None)
    lo, hi = logit_bounds(net, x, x)
    assert_close(lo, net.logits(x), 1e-12, "eps 0 lower")
    assert_close(hi, net.logits(x), 1e-12, "eps 0 upper")


# ---------------------------------------------------------------------------------------------
# Exact enumeration and tightness


def exact_min_margins(net, x0, eps, y):
    """The minimum of every margin over the box [x0 ± eps] (2-D) of a one-hidden-layer ReLU
    net: the function is linear between the neurons' lines, so its minimum is at a corner of
    the box, where a line crosses an edge, or where two lines cross inside the box."""
    w = net.layer("ip0").dense_weight()
    b = net.layer("ip0").params["bias"]
    lo, hi = x0 - eps, x0 + eps
    pts = [np.array(c) for c in itertools.product(*zip(lo, hi))]
    for (wa, ba) in zip(w, b):  # a line crossing an edge x_d = const
        for d in range(2):
            for v in (lo[d], hi[d]):
                if abs(wa[1 - d]) > 1e-15:
                    p = np.empty(2)
                    p[d] = v
                    p[1 - d] = -(ba + wa[d] * v) / wa[1 - d]
                    pts.append(p)
    for i, j in itertools.combinations(range(len(w)), 2):  # two lines crossing
        a = np.array([w[i], w[j]])
        if abs(np.linalg.det(a)) > 1e-12:
            pts.append(np.linalg.solve(a, -np.array([b[i], b[j]])))
    pts = np.array([p for p in pts if (p >= lo - 1e-12).all() and (p <= hi + 1e-12).all()])
    z = net.logits(np.clip(pts, lo, hi))
    return np.array([(z[:, y] - z[:, k]).min() for k in range(3) if k != y])


@pytest.mark.parametrize("seed", range(6))
def test_bounds_below_the_exact_minimum_of_a_2d_box(seed):
    net = mlp_2d((8,), seed=seed)
    x0 = np.random.default_rng(seed).normal(0, 0.5, 2)
    eps = 0.4
    y = int(net.predict(x0[None])[0])
    exact = exact_min_margins(net, x0, eps, y)
    # a fine grid of the box never goes below the exact minimum, and comes close to it
    g = np.linspace(-eps, eps, 801)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2) + x0
    z = net.logits(grid, batch_size=65536)
    grid_min = np.array([(z[:, y] - z[:, k]).min() for k in range(3) if k != y])
    scale = np.abs(z).max()
    assert (grid_min >= exact - 1e-9 * scale).all()
    assert (grid_min - exact <= 0.01 * scale).all()
    for method in ("ibp", "crown-ibp"):
        b, _ = margin_bounds(net, x0[None], [y], eps, method=method, clip=None)
        assert (b[0] <= exact + 1e-9 * scale).all(), method


@pytest.mark.parametrize("seed", range(4))
def test_crown_is_exact_on_a_linear_net_and_ibp_is_not_tighter(seed):
    net = mlp_2d((6, 5), seed=seed, relu=False)
    x0 = np.random.default_rng(seed).normal(0, 1, (4, 2))
    y = net.predict(x0)
    eps = 0.5
    crown, _ = margin_bounds(net, x0, y, eps, method="crown-ibp", clip=None)
    # "ibp" folds every affine layer above the last nonlinearity into the margins: here all
    ibp, _ = margin_bounds(net, x0, y, eps, method="ibp", clip=None)
    lo, hi = logit_bounds(net, *input_box(x0, eps, None))
    _, others = margin_spec(y, 3)
    boxes = lo[np.arange(4), y][:, None] - np.take_along_axis(hi, others, axis=1)
    corners = np.array(list(itertools.product((-eps, eps), repeat=2)))
    for n in range(len(x0)):
        z = net.logits(x0[n] + corners)
        exact = np.array([(z[:, y[n]] - z[:, k]).min() for k in range(3) if k != y[n]])
        assert_close(crown[n], exact, 1e-12, "CROWN on a linear net")
        assert_close(ibp[n], exact, 1e-12, "IBP with every layer folded")
        assert (boxes[n] <= crown[n] + 1e-12).all()
    assert (boxes < crown - 1e-6).any(), "the logit boxes lose something through two layers"


def test_crown_is_exact_where_no_relu_is_unstable(rng):
    net = lenet_like()
    x = rng.random((3,) + net.input_shape)
    y = net.predict(x)
    eps = 1e-5
    tape = interval_forward(net, *input_box(x, eps, None))
    lo, hi = tape.boxes["ip1"]
    assert ((lo > 0) | (hi < 0)).all(), "eps too large: a ReLU is unstable"
    crown, _ = margin_bounds(net, x, y, eps, method="crown-ibp", clip=None)
    ibp, _ = margin_bounds(net, x, y, eps, method="ibp", clip=None)
    assert (ibp <= crown + 1e-12).all()
    # the pools' winners do not change either: each margin is affine on the box, m(x0) + g·δ
    # with g its input gradient, so its exact minimum is m(x0) − eps·‖g‖₁
    spec, _ = margin_spec(y, 4)
    for n in range(3):
        rows = np.repeat(x[n:n + 1], 3, axis=0)
        _, z = net.forward_for_backward(rows)
        g = net.backward(spec[n], param_grads=False, input_grad=True, of="logits")
        exact = (spec[n] * z).sum(axis=1) - eps * np.abs(g.reshape(3, -1)).sum(axis=1)
        assert_close(crown[n], exact, 1e-9, "CROWN on an affine region")
        assert (ibp[n] < exact).all()


def test_crown_ibp_is_tighter_than_ibp_on_untrained_nets(rng):
    gaps = []
    for seed in range(3):
        net = lenet_like(seed=seed)
        x = rng.random((8,) + net.input_shape)
        y = net.predict(x)
        crown, _ = margin_bounds(net, x, y, 0.02, method="crown-ibp")
        ibp, _ = margin_bounds(net, x, y, 0.02, method="ibp")
        gaps.append(crown - ibp)
    gaps = np.concatenate([g.ravel() for g in gaps])
    assert gaps.mean() > 0
    assert (gaps > 0).mean() > 0.9


def test_ibp_margins_at_least_as_tight_as_the_logit_boxes(rng):
    net = every_layer_net()
    x = rng.random((4,) + net.input_shape)
    y = net.predict(x)
    lo, hi = logit_bounds(net, *input_box(x, 0.05))
    spec, others = margin_spec(y, 5)
    naive = lo[np.arange(4), y][:, None] - np.take_along_axis(hi, others, axis=1)
    ibp, _ = margin_bounds(net, x, y, 0.05, method="ibp")
    assert (ibp >= naive - 1e-12).all()


def test_ibp_by_hand():
    # y = relu(W x + b) with W = [[1, −2]], b = [0.5]; x ∈ [0, 1]²: W x + b ∈ [−1.5, 1.5]
    net = Net([Linear("ip", 1)], (2,), dtype=np.float64)
    net.layer("ip").params["weight"][...] = [[1.0, -2.0]]
    net.layer("ip").params["bias"][...] = [0.5]
    lo, hi = logit_bounds(net, np.zeros((1, 2)), np.ones((1, 2)))
    assert_close(lo, [[-1.5]], 0, "lower")
    assert_close(hi, [[1.5]], 0, "upper")


def test_margin_spec():
    spec, others = margin_spec([2, 0], 3)
    assert others.tolist() == [[0, 1], [1, 2]]
    assert spec[0].tolist() == [[-1, 0, 1], [0, -1, 1]]
    assert spec[1].tolist() == [[1, -1, 0], [1, 0, -1]]


# ---------------------------------------------------------------------------------------------
# Derivatives


def bound_loss_and_grads(net, lo, hi, spec, w, mode):
    tape = interval_forward(net, lo, hi)
    part = linear_bounds(tape, spec, mode)
    grads, seeds = part.backward(w)
    total = {}
    for d in (grads, tape.backward(seeds)):
        for layer, gs in d.items():
            for k, g in gs.items():
                total[(layer, k)] = total.get((layer, k), 0) + g
    return float((part.bounds * w).sum()), total


@pytest.mark.parametrize("mode", ["ibp", "crown"])
@pytest.mark.parametrize("kind", KINDS)
def test_bound_gradients_match_finite_differences(kind, mode):
    rng = np.random.default_rng(5)
    net = gradient_net(kind)
    x = rng.random((3,) + net.input_shape)
    y = net.predict(x)
    lo, hi = input_box(x, 0.05)
    spec, _ = margin_spec(y, 4)
    w = rng.normal(size=(3, 3))
    _, grads = bound_loss_and_grads(net, lo, hi, spec, w, mode)
    params = {(l.name, k): v for l in net.layers for k, v in l.params.items()}
    assert set(grads) == set(params), "every parameter gets a gradient"
    h = 1e-6
    for key, p in params.items():
        # The sparse formats' centroid 0 is fixed at 0.0 (code 0 marks zeros and fillers, which
        # their kernels may multiply through): not a free parameter, so not perturbed.
        first = 1 if key[1] == "centroids" and kind in ("sparse_codebook", "huffman") else 0
        for idx in first + rng.choice(p.size - first, size=min(4, p.size - first), replace=False):
            old = p.flat[idx]
            p.flat[idx] = old + h
            up, _ = bound_loss_and_grads(net, lo, hi, spec, w, mode)
            p.flat[idx] = old - h
            down, _ = bound_loss_and_grads(net, lo, hi, spec, w, mode)
            p.flat[idx] = old
            fd = (up - down) / (2 * h)
            got = grads[key].flat[idx]
            assert abs(fd - got) <= 1e-5 * max(abs(fd), 1.0), f"{key}[{idx}]: fd {fd}, got {got}"


# ---------------------------------------------------------------------------------------------
# Errors


def test_layer_without_a_rule_is_named():
    net = Net([Conv2d("c", 2, kernel=3), LRN("norm1"), Linear("ip", 3)], (1, 6, 6))
    with pytest.raises(ValueError, match=r"norm1 \(LRN\): no interval bound rule"):
        interval_forward(net, np.zeros((1, 1, 6, 6), np.float32), np.ones((1, 1, 6, 6), np.float32))


@pytest.mark.parametrize("lo, hi, match", [
    (np.ones((1, 2)), np.zeros((1, 2)), "lower bound exceeds"),
    (np.zeros((1, 3)), np.ones((1, 3)), "do not match the net's input"),
    (np.full((1, 2), np.nan), np.ones((1, 2)), "must be finite"),
])
def test_bad_input_bounds(lo, hi, match):
    net = Net([Linear("ip", 2)], (2,), dtype=np.float64)
    with pytest.raises(ValueError, match=match):
        interval_forward(net, lo, hi)


def test_bad_method():
    net = Net([Linear("ip", 2)], (2,), dtype=np.float64)
    with pytest.raises(ValueError, match="method must be one of"):
        margin_bounds(net, np.zeros((1, 2)), [0], 0.1, method="crown")
