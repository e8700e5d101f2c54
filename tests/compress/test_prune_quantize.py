"""Pruning and trained quantization: exact sparsity, masks through retraining, k-means."""

import numpy as np
import pytest
import scipy.cluster.vq

from robustcnn.compress.prune import magnitude_mask, prune, prune_layer, schedule
from robustcnn.compress.quantize import init_centroids, kmeans_1d, quantize_layer
from robustcnn.engine.train import SGD
from robustcnn.models.lenet import lenet5


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.88, 0.92, 0.999, 1.0])
def test_exact_sparsity_per_layer(sparsity):
    net = lenet5(seed=1)
    kept = prune(net, {name: sparsity for name in ("conv1", "conv2", "ip1", "ip2")})
    for name, fraction in kept.items():
        w = net[name].dense_weight()
        assert net[name].weight_format.kind == "csr"
        assert np.count_nonzero(w) == round((1 - sparsity) * w.size), name
        assert fraction == pytest.approx(np.count_nonzero(w) / w.size)


def test_pruning_keeps_the_largest_magnitudes():
    w = np.array([[0.1, -0.5, 0.3], [-0.05, 0.4, -0.2]])
    mask = magnitude_mask(w, sparsity=0.5)
    np.testing.assert_array_equal(mask, [[False, True, True], [False, True, False]])
    # Han et al.'s threshold: quality × std
    q = magnitude_mask(w, quality=1.0)
    np.testing.assert_array_equal(q, np.abs(w) > w.std())
    with pytest.raises(ValueError, match="exactly one"):
        magnitude_mask(w)
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_mask(w, sparsity=1.5)


def test_schedule_is_geometric_and_ends_at_the_target():
    s = schedule(0.08, 3)
    assert s[-1] == pytest.approx(0.08)
    assert s[0] / 1.0 == pytest.approx(s[1] / s[0]) == pytest.approx(s[2] / s[1])
    with pytest.raises(ValueError):
        schedule(0.0, 3)


def test_masks_hold_through_retraining():
    net = lenet5(seed=2)
    prune(net, {"conv2": 0.9, "ip1": 0.95})
    zero = {n: net[n].dense_weight() == 0 for n in ("conv2", "ip1")}
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 32)
    net.train()
    opt = SGD(momentum=0.9, weight_decay=5e-4)
    before = net["ip1"].dense_weight()
    for _ in range(5):
        net.loss_and_grad(x, y)
        opt.step(net, 0.05)
    for name, z in zero.items():
        w = net[name].dense_weight()
        assert np.all(w[z] == 0), name  # pruned stay exactly zero
    assert not np.allclose(net["ip1"].dense_weight()[~zero["ip1"]], before[~zero["ip1"]])


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_kmeans_agrees_with_scipy_kmeans2_from_the_same_start(init):
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(-0.1, 0.02, 500), rng.normal(0.15, 0.05, 300)])
    start = init_centroids(values, 8, init, rng=np.random.default_rng(1))
    ours, labels = kmeans_1d(values, start, iterations=200)
    theirs, their_labels = scipy.cluster.vq.kmeans2(values[:, None], start[:, None], iter=200,
                                                    minit="matrix", missing="warn")
    np.testing.assert_allclose(np.sort(ours), np.sort(theirs[:, 0]), rtol=1e-9, atol=1e-12)
    assert (ours[labels] == theirs[their_labels, 0]).mean() == pytest.approx(1.0)


def test_inits():
    v = np.array([0.0, 1.0, 2.0, 10.0])
    np.testing.assert_allclose(init_centroids(v, 3, "linear"), [0, 5, 10])
    np.testing.assert_allclose(init_centroids(v, 2, "density"), np.quantile(v, [0.25, 0.75]))
    r = init_centroids(v, 3, "random", rng=np.random.default_rng(0))
    assert set(r) <= set(v) and len(set(r)) == 3
    with pytest.raises(ValueError, match="unknown"):
        init_centroids(v, 3, "kmeans++")


def test_quantize_pruned_and_dense_layers():
    net = lenet5(seed=4, dtype=np.float64)
    prune_layer(net["ip1"], sparsity=0.9)
    nonzero = net["ip1"].dense_weight() != 0
    fmt = quantize_layer(net["ip1"], 5)
    assert fmt.kind == "sparse_codebook" and fmt.centroids.size == 32 and fmt.centroids[0] == 0
    w = net["ip1"].dense_weight()
    np.testing.assert_array_equal(w != 0, nonzero)  # quantizing keeps the pattern
    assert len(np.unique(w[nonzero])) <= 31
    dense = quantize_layer(net["conv1"], 3)
    assert dense.kind == "codebook" and len(np.unique(net["conv1"].dense_weight())) <= 8


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    # Deep Compression eq. 3 on a hand-made 2×3 layer: codes [[0, 1, 1], [2, 0, 1]].
    from robustcnn.engine import Linear, Net
    from robustcnn.engine.formats import CodebookWeight

    net = Net([Linear("ip", 2, bias=False)], input_shape=(3,), dtype=np.float64)
    centroids = np.array([-1.0, 0.5, 2.0])
    w = centroids[np.array([[0, 1, 1], [2, 0, 1]])]
    net["ip"].set_weight_format(CodebookWeight.from_dense(w, 2, centroids=centroids))
    x = np.array([[1.0, 2.0, 3.0]])
    dy = np.array([[1.0, -1.0]])
    net.forward_for_backward(x)
    net.backward(dy, param_grads=True, input_grad=False)
    dW = dy.T @ x  # [[1, 2, 3], [-1, -2, -3]]
    expected = [dW[0, 0] + dW[1, 1], dW[0, 1] + dW[0, 2] + dW[1, 2], dW[1, 0]]
    np.testing.assert_allclose(net.grads["ip"]["centroids"][:3], expected, rtol=1e-12)
