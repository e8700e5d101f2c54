"""engine/norm.py: LRN across channels (Caffe) and batch norm for inference and for training,
forward and backward; folding a batch norm into the convolution or linear layer before it; the
BatchNorm layer in train and eval mode."""

import json

import numpy as np
import pytest
from helpers import F32, F64, assert_close, check_gradients, check_op

from robustcnn.engine import (Conv2d, Linear, Net, batch_norm_backward, batch_norm_forward,
                              conv2d_forward, fold_batch_norm, linear_forward, lrn_backward,
                              lrn_forward)
from robustcnn.engine.layers import Context

# ---------------------------------------------------------------------------------------------
# LRN reference (float64, loops over channels)


def lrn_scale_ref(x, n, alpha, k):
    """s[c] = k + (α/n) · Σ x[c']² over |c' − c| ≤ (n−1)/2 inside [0, C) (zeros outside)."""
    C, half = x.shape[1], (n - 1) // 2
    s = np.empty_like(x)
    for c in range(C):
        s[:, c] = k + alpha / n * sum(x[:, c2] ** 2 for c2 in range(C) if abs(c2 - c) <= half)
    return s


def lrn_ref(x, n, alpha, beta, k):
    return x * lrn_scale_ref(x, n, alpha, k) ** -beta


def lrn_ref_backward(dy, x, n, alpha, beta, k):
    """y_c = x_c · s_c^−β, so ∂y_c/∂x_j = [c = j] s_c^−β − β x_c s_c^(−β−1) · (α/n) · 2 x_j
    for every c whose window holds j."""
    C, half = x.shape[1], (n - 1) // 2
    s = lrn_scale_ref(x, n, alpha, k)
    dx = dy * s ** -beta
    for j in range(C):
        for c in range(C):
            if abs(c - j) <= half:
                dx[:, j] -= (dy[:, c] * beta * x[:, c] * s[:, c] ** (-beta - 1)
                             * alpha / n * 2 * x[:, j])
    return dx


# (local_size, alpha, beta, k, C): Caffe's defaults, strong normalisation, C < local_size.
LRN_CASES = [
    (5, 1e-4, 0.75, 1.0, 8),
    (1, 0.5, 0.75, 2.0, 3),
    (3, 0.9, 0.6, 1.5, 6),
    (5, 0.8, 0.75, 1.0, 7),
    (5, 1.2, 0.9, 0.7, 2),
    (7, 2.0, 1.5, 1.0, 3),
    (3, 0.0, 0.75, 1.0, 4),
]


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", LRN_CASES, ids=lambda c: "n{}_a{}_b{}_k{}_C{}".format(*c))
def test_lrn_matches_reference(case, dtype, rng):
    n, alpha, beta, k, C = case
    x = 1.5 * rng.standard_normal((2, C, 3, 4))
    check_op(lambda x: lrn_forward(x, n, alpha, beta, k), lambda x: lrn_ref(x, n, alpha, beta, k),
             [x], backward=lambda dy, x: lrn_backward(dy, x, n, alpha, beta, k),
             ref_backward=lambda dy, x: lrn_ref_backward(dy, x, n, alpha, beta, k),
             dtype=dtype, what=f"lrn(local_size={n})")


def test_lrn_hand_computed():
    # C = 3, local_size 3, alpha 3 (α/n = 1), beta 1, k 1: s = 1 + sum of squares in the window.
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    s = np.array([1 + 1 + 4, 1 + 1 + 4 + 9, 1 + 4 + 9])
    assert_close(lrn_forward(x, 3, 3.0, 1.0, 1.0).ravel(), np.array([1.0, 2.0, 3.0]) / s, 1e-15,
                 "hand-computed LRN")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n,alpha,beta,k,C", [(5, 1e-4, 0.75, 1.0, 16), (3, 0.7, 0.75, 2.0, 5),
                                              (5, 1.0, 0.5, 1.0, 3), (1, 0.3, 1.0, 1.0, 2)])
def test_lrn_matches_torch(n, alpha, beta, k, C, dtype, rng):
    """torch's local_response_norm averages the squares over ``size`` channels (zero padded) and
    then multiplies by alpha: k + alpha · Σ/size, the same α/n as Caffe and robustcnn."""
    torch = pytest.importorskip("torch")
    x = (1.5 * rng.standard_normal((2, C, 4, 5))).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.local_response_norm(tx, n, alpha=alpha, beta=beta, k=k)
    dy = rng.standard_normal(x.shape).astype(dtype)
    (ty * torch.tensor(dy)).sum().backward()
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert_close(lrn_forward(x, n, alpha, beta, k), ty.detach().numpy(), rtol, "lrn vs torch")
    assert_close(lrn_backward(dy, x, n, alpha, beta, k), tx.grad.numpy(), rtol,
                 "lrn gradient vs torch")


@pytest.mark.parametrize("local_size", [2, 4, 0, -1, 3.0, "5"])
def test_lrn_rejects_even_or_bad_local_size(local_size, rng):
    x = rng.standard_normal((1, 4, 2, 2))
    with pytest.raises(ValueError,
                       match=r"norm1 \(LRN\): local_size must be a positive odd integer"):
        lrn_forward(x, local_size, name="norm1")
    with pytest.raises(ValueError, match="local_size must be a positive odd integer"):
        lrn_backward(x, x, local_size)


@pytest.mark.parametrize("kwargs,match", [
    (dict(k=0.0), "k must be > 0"),
    (dict(k=-1.0), "k must be > 0"),
    (dict(alpha=-1e-4), "alpha must be >= 0"),
    (dict(alpha=np.nan), "alpha must be finite"),
    (dict(beta=np.inf), "beta must be finite"),
])
def test_lrn_rejects_bad_parameters(kwargs, match, rng):
    with pytest.raises(ValueError, match=match):
        lrn_forward(rng.standard_normal((1, 4, 2, 2)), 5, **kwargs)


def test_lrn_bad_input(rng):
    x = rng.standard_normal((1, 4, 2, 2))
    with pytest.raises(ValueError, match="input must have 4 axes"):
        lrn_forward(x[0])
    with pytest.raises(ValueError, match=r"output gradient shape \(1, 3, 2, 2\) does not match"):
        lrn_backward(x[:, :3], x)
    with pytest.raises(TypeError, match="output gradient is float32"):
        lrn_backward(x.astype(np.float32), x)


# ---------------------------------------------------------------------------------------------
# Batch norm (inference) reference


def bn_ref(x, mean, var, gamma, beta, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y


def bn_ref_backward(dy, x, mean, var, gamma, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    inv = 1 / np.sqrt(var.reshape(shape) + eps)
    g = 1.0 if gamma is None else gamma.reshape(shape)
    return dy * g * inv, (dy * (x - mean.reshape(shape)) * inv).sum(axis=axes), dy.sum(axis=axes)


def _bn_params(rng, C):
    return (rng.standard_normal(C), rng.uniform(0.2, 3.0, C), rng.uniform(0.5, 2.0, C),
            rng.standard_normal(C))


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (5, 7), (1, 1, 1, 1)], ids=str)
@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.0])
def test_batch_norm_matches_reference(shape, eps, dtype, rng):
    mean, var, gamma, beta = _bn_params(rng, shape[1])
    check_op(lambda x, m, v, g, b: batch_norm_forward(x, m, v, g, b, eps),
             lambda x, m, v, g, b: bn_ref(x, m, v, g, b, eps),
             [rng.standard_normal(shape), mean, var, gamma, beta],
             backward=lambda dy, x, m, v, g, b: batch_norm_backward(dy, x, m, v, g, eps),
             ref_backward=lambda dy, x, m, v, g, b: bn_ref_backward(dy, x, m, v, g, eps),
             wrt=(0, 3, 4), dtype=dtype, what="batch_norm")


def test_batch_norm_without_affine(rng):
    mean, var, _, _ = _bn_params(rng, 3)
    check_op(lambda x, m, v: batch_norm_forward(x, m, v),
             lambda x, m, v: bn_ref(x, m, v, None, None, 1e-5),
             [rng.standard_normal((2, 3, 4, 4)), mean, var],
             backward=lambda dy, x, m, v: batch_norm_backward(dy, x, m, v)[0],
             ref_backward=lambda dy, x, m, v: bn_ref_backward(dy, x, m, v, None, 1e-5)[0],
             what="batch_norm without gamma/beta")


def test_batch_norm_bad_input(rng):
    x = rng.standard_normal((2, 3, 4, 4))
    mean, var, gamma, beta = _bn_params(rng, 3)
    with pytest.raises(ValueError,
                       match=r"bn1 \(BatchNorm\): input must be \(N, C\) or \(N, C, H, W\)"):
        batch_norm_forward(x[0], mean, var, name="bn1")
    with pytest.raises(ValueError, match=r"var shape \(2,\) does not match channels 3"):
        batch_norm_forward(x, mean, var[:2])
    with pytest.raises(ValueError, match=r"gamma shape \(4,\) does not match channels 3"):
        batch_norm_forward(x, mean, var, np.ones(4))
    with pytest.raises(ValueError, match="var has negative entries"):
        batch_norm_forward(x, mean, -var)
    with pytest.raises(ValueError, match="var has zeros and eps is 0"):
        batch_norm_forward(x, mean, np.array([1.0, 0.0, 1.0]), eps=0.0)
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        batch_norm_forward(x, mean, var, eps=-1e-5)
    with pytest.raises(ValueError, match="mean is required"):
        batch_norm_forward(x, None, var)
    with pytest.raises(TypeError, match="mean is float32 but the input is float64"):
        batch_norm_forward(x, mean.astype(np.float32), var)
    with pytest.raises(ValueError, match="beta has 1 non-finite"):
        batch_norm_forward(x, mean, var, gamma, np.array([0.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match=r"output gradient shape \(2, 3, 4, 3\) does not match"):
        batch_norm_backward(x[..., :3], x, mean, var, gamma)


# ---------------------------------------------------------------------------------------------
# Batch norm (training): batch statistics, running statistics, the BatchNorm layer's modes


def bn_train_ref(x, gamma, beta, eps):
    """Ioffe & Szegedy's Algorithm 1 in float64: the batch's mean and biased variance."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    xhat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return xhat * gamma.reshape(shape) + beta.reshape(shape)


def bn_train_ref_backward(dy, x, gamma, beta, eps):
    """dx = (γ/σ)·(dy − mean(dy) − x̂·mean(dy·x̂)), dγ = Σ dy·x̂, dβ = Σ dy, per channel."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = 1 / np.sqrt(x.var(axis=axes).reshape(shape) + eps)
    xhat = (x - x.mean(axis=axes).reshape(shape)) * inv
    dgamma, dbeta = (dy * xhat).sum(axis=axes), dy.sum(axis=axes)
    dx = gamma.reshape(shape) * inv * (dy - dy.mean(axis=axes, keepdims=True)
                                       - xhat * (dy * xhat).mean(axis=axes, keepdims=True))
    return dx, dgamma, dbeta


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (5, 7), (3, 3, 1, 1), (1, 2, 3, 3)], ids=str)
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_batch_norm_train_matches_reference(shape, eps, dtype, rng):
    """Functional API, with finite differences in float64 w.r.t. x, γ and β."""
    from robustcnn.engine.norm import batch_norm_train_backward, batch_norm_train_forward

    C = shape[1]
    x = 2.0 * rng.standard_normal(shape) + rng.standard_normal((1, C) + (1,) * (len(shape) - 2))
    gamma, beta = rng.uniform(0.5, 2.0, C), rng.standard_normal(C)
    check_op(lambda x, g, b: batch_norm_train_forward(x, g, b, eps)[0],
             lambda x, g, b: bn_train_ref(x, g, b, eps), [x, gamma, beta],
             backward=lambda dy, x, g, b: batch_norm_train_backward(dy, x, g, eps),
             ref_backward=lambda dy, x, g, b: bn_train_ref_backward(dy, x, g, b, eps),
             wrt=(0, 1, 2), dtype=dtype, grad_rtol=1e-9 if dtype == F64 else 1e-4,
             fd_rtol=1e-5, what=f"batch_norm_train{shape}")


def test_batch_norm_train_statistics_and_defaults(rng):
    from robustcnn.engine.norm import batch_norm_train_backward, batch_norm_train_forward

    x = rng.standard_normal((4, 3, 2, 5))
    y, mean, var = batch_norm_train_forward(x)
    assert_close(mean, x.mean(axis=(0, 2, 3)), 1e-12, "batch mean")
    assert_close(var, x.var(axis=(0, 2, 3)), 1e-12, "biased batch variance")
    # No affine: zero mean and unit variance per channel (up to ε).
    assert_close(y.mean(axis=(0, 2, 3)), np.zeros(3), 0, "normalised mean", atol=1e-12)
    assert_close(y.var(axis=(0, 2, 3)), var / (var + 1e-5), 1e-12, "normalised variance")
    dx, dgamma, dbeta = batch_norm_train_backward(np.ones_like(x), x)
    # A constant gradient passes nothing back through the mean: dx = 0.
    assert_close(dx, np.zeros_like(x), 0, "dx of a constant dy", atol=1e-12)
    with pytest.raises(ValueError, match=r"bn1 \(BatchNorm\): eps must be finite and > 0"):
        batch_norm_train_forward(x, eps=0.0, name="bn1")
    with pytest.raises(ValueError, match=r"gamma shape \(2,\) does not match channels 3"):
        batch_norm_train_forward(x, np.ones(2))
    with pytest.raises(ValueError, match=r"output gradient shape \(4, 3, 2, 4\) does not match"):
        batch_norm_train_backward(x[..., :4], x)


def bn_layer(shape, dtype=np.float64, rng=None, **kwargs):
    """A set-up BatchNorm layer for (N,) + ``shape`` inputs with random statistics and affine."""
    from robustcnn.engine import BatchNorm

    layer = BatchNorm("bn", **kwargs)
    layer.setup([shape], dtype)
    rng = rng or np.random.default_rng(0)
    C = shape[0]
    layer.buffers["mean"][...] = rng.standard_normal(C)
    layer.buffers["var"][...] = rng.uniform(0.5, 2.0, C)
    if layer.affine:
        layer.params["gamma"][...] = rng.uniform(0.5, 2.0, C)
        layer.params["beta"][...] = rng.standard_normal(C)
    return layer


def torch_bn(torch, layer, dtype):
    """torch's BatchNorm{1,2}d with the layer's state; torch's momentum is 1 − ours."""
    C = layer.buffers["mean"].shape[0]
    cls = torch.nn.BatchNorm2d if len(layer.in_shapes[0]) == 3 else torch.nn.BatchNorm1d
    bn = cls(C, eps=layer.eps, momentum=1 - layer.momentum, affine=layer.affine)
    bn = bn.to(torch.float64 if dtype == F64 else torch.float32)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor(layer.buffers["mean"]))
        bn.running_var.copy_(torch.tensor(layer.buffers["var"]))
        if layer.affine:
            bn.weight.copy_(torch.tensor(layer.params["gamma"]))
            bn.bias.copy_(torch.tensor(layer.params["beta"]))
    return bn.train()


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,affine,momentum", [((4, 3, 5, 6), True, 0.9),
                                                   ((4, 3, 5, 6), False, 0.99),
                                                   ((6, 5), True, 0.9),
                                                   ((3, 4, 1, 1), True, 0.5),
                                                   ((7, 2), False, 0.0)], ids=str)
def test_batch_norm_layer_train_mode_matches_torch(shape, affine, momentum, dtype, rng):
    """Two training steps: outputs, gradients and the running statistics after each."""
    torch = pytest.importorskip("torch")

    layer = bn_layer(shape[1:], dtype, rng, affine=affine, momentum=momentum)
    bn = torch_bn(torch, layer, dtype)
    rtol = 1e-10 if dtype == F64 else 2e-5
    for step in range(2):
        x = (1.5 * rng.standard_normal(shape) + 0.7 * step).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        (y,) = layer.forward([x], Context(train=True, keep=True))
        tx = torch.tensor(x, requires_grad=True)
        ty = bn(tx)
        (ty * torch.tensor(dy)).sum().backward()
        assert y.dtype == dtype and y.shape == x.shape
        assert_close(y, ty.detach().numpy(), rtol, f"train forward, step {step}")
        for key, theirs in (("mean", bn.running_mean), ("var", bn.running_var)):
            assert layer.buffers[key].dtype == dtype
            assert_close(layer.buffers[key], theirs.numpy(), rtol, f"running {key}, step {step}")
        layer.grads = {}
        (dx,) = layer.backward([dy], Context(param_grads=True, input_grad=True))
        layer.release()
        assert dx.dtype == dtype
        assert_close(dx, tx.grad.numpy(), 10 * rtol, f"dx, step {step}")
        if affine:
            assert_close(layer.grads["gamma"], bn.weight.grad.numpy(), 10 * rtol, "dgamma")
            assert_close(layer.grads["beta"], bn.bias.grad.numpy(), 10 * rtol, "dbeta")
            bn.weight.grad = bn.bias.grad = None
        else:
            assert not layer.grads


def test_batch_norm_layer_backward_without_input_gradient(rng):
    layer = bn_layer((3, 4, 4), rng=rng)
    x, dy = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    layer.forward([x], Context(train=True, keep=True))
    (dx,) = layer.backward([dy], Context(param_grads=True, input_grad=True))
    full = dict(layer.grads)
    layer.forward([x], Context(train=True, keep=True))
    assert layer.backward([dy], Context(param_grads=True, input_grad=False)) == [None]
    for k in ("gamma", "beta"):
        assert_close(layer.grads[k], full[k], 1e-14, k)
    _, dgamma, dbeta = bn_train_ref_backward(dy, x, layer.params["gamma"], None, layer.eps)
    assert_close(full["gamma"], dgamma, 1e-12, "dgamma")


def bn_net(dtype=np.float64, **kwargs):
    """conv → BatchNorm → fc (smooth: finite differences hold everywhere)."""
    from robustcnn.engine import BatchNorm

    net = Net([Conv2d("conv1", 3, kernel=3), BatchNorm("bn1", **kwargs), Linear("fc", 4)],
              (2, 5, 5), dtype=dtype, seed=3, name="bn_net")
    layer_rng = np.random.default_rng(5)
    bn = net["bn1"]
    bn.buffers["mean"][...] = layer_rng.standard_normal(3)
    bn.buffers["var"][...] = layer_rng.uniform(0.5, 2.0, 3)
    bn.params["gamma"][...] = layer_rng.uniform(0.5, 2.0, 3)
    bn.params["beta"][...] = layer_rng.standard_normal(3)
    return net


def train_mode_loss(net, labels):
    """Σ_n cross-entropy of a train-mode forward, with the running statistics restored after
    every call: they do not change a train-mode output, and each call would move them."""

    def loss(x):
        saved = {k: v.copy() for k, v in net["bn1"].buffers.items()}
        try:
            logits = net.forward(x, train=True)
        finally:
            for k, v in saved.items():
                net["bn1"].buffers[k][...] = v
        z = logits - logits.max(axis=1, keepdims=True)
        return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), labels]

    return loss


def test_batch_norm_net_train_mode_gradients_by_finite_differences(rng):
    """The whole train-mode pass (the batch couples the examples), in float64."""
    net = bn_net()
    x, labels = rng.standard_normal((4, 2, 5, 5)), np.array([0, 3, 1, 1])
    loss = train_mode_loss(net, labels)
    _, dx = net.loss_and_input_grad(x, labels, train=True)  # dx = d Σ_n loss[n] / dx
    check_gradients(loss, [x], np.ones(4), (dx,), samples=24, what="bn net dΣL/dx")
    net.train()
    mean_loss, _ = net.loss_and_grad(x, labels)
    assert_close(mean_loss, loss(x).mean(), 1e-12, "train-mode loss")
    for lname, key in (("bn1", "gamma"), ("bn1", "beta"), ("conv1", "weight"), ("fc", "weight")):
        param, grad = net.params[lname][key], net.grads[lname][key].copy()
        original = param.copy()

        def f(p, param=param):
            param[...] = p
            return loss(x).mean()

        try:
            check_gradients(f, [original.copy()], 1.0, (grad,), samples=12,
                            what=f"bn net d loss / d {lname}/{key}")
        finally:
            param[...] = original
    # conv1's bias is absorbed by the batch mean: its gradient is 0.
    assert_close(net.grads["conv1"]["bias"], np.zeros(3), 0, "conv bias gradient", atol=1e-12)


def test_batch_norm_eval_mode_is_unchanged_and_touches_no_statistic(rng):
    from robustcnn.engine.norm import batch_norm_coefficients, channel_affine_nchw

    net = bn_net()
    bn = net["bn1"]
    saved = {k: v.copy() for k, v in bn.buffers.items()}
    x, labels = rng.standard_normal((3, 2, 5, 5)), np.array([0, 1, 2])
    conv_out = net["conv1"].forward([x], Context())[0]
    # The inference formula as it was before train mode existed.
    a, b = batch_norm_coefficients(bn.buffers["mean"], bn.buffers["var"], bn.params["gamma"],
                                   bn.params["beta"], bn.eps)
    want = np.empty_like(conv_out)
    channel_affine_nchw(conv_out.reshape(3, 3, 9), a, b, want.reshape(3, 3, 9))
    got = bn.forward([conv_out], Context())[0]
    assert np.array_equal(got, want)  # deliberately exact: eval mode is the same code, bit for bit
    assert_close(got, bn_ref(conv_out, *saved.values(), bn.params["gamma"], bn.params["beta"],
                             bn.eps), 1e-12, "eval BatchNorm vs reference")
    # Attacks' passes (eval mode) and predictions leave the statistics alone, even while the
    # net is in train mode.
    net.loss_and_input_grad(x, labels)
    net.train()
    net.logits(x)
    net.loss_and_input_grad(x, labels)
    net.forward(x, train=False)
    for k, v in bn.buffers.items():
        assert np.array_equal(v, saved[k]), k  # deliberately exact: not touched
    # Eval-mode gradients are the affine map's: dx = γ/√(var + ε) · dy.
    net.eval()
    _, dx_eval = net.loss_and_input_grad(x, labels)
    _, dx_train = net.loss_and_input_grad(x, labels, train=True)
    assert not np.allclose(dx_eval, dx_train)
    # A train-mode pass moves them.
    net.forward(x, train=True)
    assert not np.allclose(bn.buffers["mean"], saved["mean"])
    assert not np.allclose(bn.buffers["var"], saved["var"])


def test_batch_norm_use_global_stats_freezes_the_statistics(rng):
    frozen, normal = bn_net(use_global_stats=True), bn_net()
    x, labels = rng.standard_normal((3, 2, 5, 5)), np.array([0, 1, 2])
    saved = {k: v.copy() for k, v in frozen["bn1"].buffers.items()}
    frozen.train()
    y_train = frozen.forward(x)
    assert_close(y_train, normal.forward(x), 1e-14, "frozen train mode = eval mode")
    frozen.loss_and_grad(x, labels)
    normal.loss_and_grad(x, labels)  # eval mode: the old frozen behaviour
    for k, v in frozen["bn1"].buffers.items():
        assert np.array_equal(v, saved[k]), k  # deliberately exact: not touched
    for lname, grads in normal.grads.items():
        for key, g in grads.items():
            assert_close(frozen.grads[lname][key], g, 1e-14, f"frozen {lname}/{key}")


def test_batch_norm_spec_and_state_round_trip(tmp_path):
    from robustcnn.engine import BatchNorm
    from robustcnn.engine.layers import layer_from_config

    net = bn_net(momentum=0.75, use_global_stats=True, eps=1e-3)
    net.train().forward(np.ones((2, 2, 5, 5)))
    spec = json.loads(json.dumps(net.spec()))
    cfg = [c for c in spec["layers"] if c["name"] == "bn1"][0]
    assert cfg["momentum"] == 0.75 and cfg["use_global_stats"] is True and cfg["eps"] == 1e-3
    again = Net.from_spec(spec, dtype=np.float64)
    bn = again["bn1"]
    assert (bn.momentum, bn.use_global_stats, bn.eps, bn.affine) == (0.75, True, 1e-3, True)
    again.load_state_dict({k: v.copy() for k, v in net.state_dict().items()})
    assert set(again.state_dict()) >= {"bn1/mean", "bn1/var", "bn1/gamma", "bn1/beta"}
    x = np.random.default_rng(2).standard_normal((3, 2, 5, 5))
    assert_close(again.forward(x), net.eval().forward(x), 1e-14, "round-tripped net")
    copy = net.copy()
    assert (copy["bn1"].momentum, copy["bn1"].use_global_stats) == (0.75, True)
    # Specs written before train mode existed load with the defaults.
    old = layer_from_config({"class": "BatchNorm", "type": "BatchNorm", "name": "bn",
                             "eps": 1e-5, "affine": True})
    assert (old.momentum, old.use_global_stats) == (0.9, False)
    assert repr(BatchNorm("b")) == ("BatchNorm('b', eps=1e-05, affine=True, momentum=0.9, "
                                    "use_global_stats=False)")


@pytest.mark.parametrize("kwargs,match", [(dict(momentum=1.5), "momentum must be in"),
                                          (dict(momentum=-0.1), "momentum must be in"),
                                          (dict(eps=-1e-5), "eps must be finite and >= 0"),
                                          (dict(eps=float("nan")), "eps must be finite")])
def test_batch_norm_layer_rejects_bad_arguments(kwargs, match):
    from robustcnn.engine import BatchNorm

    with pytest.raises(ValueError, match=r"bn \(BatchNorm\): " + match):
        BatchNorm("bn", **kwargs)


def test_batch_norm_eps_zero_is_refused_only_with_batch_statistics(rng):
    layer = bn_layer((3,), eps=0.0)
    x = rng.standard_normal((4, 3))
    layer.forward([x], Context())  # eval: the running variance is positive
    with pytest.raises(ValueError, match=r"bn \(BatchNorm\): eps must be > 0 to normalise"):
        layer.forward([x], Context(train=True))


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 3), (4, 3, 1, 1)], ids=str)
def test_batch_norm_single_value_per_channel_stays_finite(shape, dtype, rng):
    """N·H·W = 1: the variance is 0, ε keeps 1/σ finite; x̂ = 0 so y = β and dx = 0."""
    layer = bn_layer(shape[1:], dtype, rng)
    x = rng.standard_normal(shape).astype(dtype)
    if shape[0] > 1:
        x[...] = x[:1]  # constant per channel: variance 0 with M > 1
    mean0, var0 = layer.buffers["mean"].copy(), layer.buffers["var"].copy()
    (y,) = layer.forward([x], Context(train=True, keep=True))
    dy = rng.standard_normal(shape).astype(dtype)
    (dx,) = layer.backward([dy], Context(param_grads=True, input_grad=True))
    for what, a in (("y", y), ("dx", dx), ("dgamma", layer.grads["gamma"]),
                    ("dbeta", layer.grads["beta"]), ("mean", layer.buffers["mean"]),
                    ("var", layer.buffers["var"])):
        assert np.isfinite(a).all(), what
    beta = np.broadcast_to(layer.params["beta"].reshape((1, -1) + (1,) * (len(shape) - 2)),
                           shape)
    assert_close(y, beta, 1e-6, "y = beta")
    if shape[0] == 1:  # M = 1: dy − mean(dy) = 0
        assert_close(dx, np.zeros(shape), 0, "dx", atol=1e-6)
    else:  # x̂ = 0: dx = γ/√ε · (dy − mean(dy)), large but finite
        want, _, _ = bn_train_ref_backward(dy.astype(F64), x.astype(F64), layer.params["gamma"],
                                           None, layer.eps)
        assert_close(dx, want, 1e-5, "dx")
    assert_close(layer.buffers["mean"], 0.9 * mean0 + 0.1 * x[0].reshape(3, -1)[:, 0], 1e-6,
                 "running mean")
    assert_close(layer.buffers["var"], 0.9 * var0, 1e-6, "running var (a zero variance)")


def test_batch_norm_train_mode_empty_batch(rng):
    layer = bn_layer((3, 2, 2), rng=rng)
    saved = {k: v.copy() for k, v in layer.buffers.items()}
    x = np.zeros((0, 3, 2, 2))
    (y,) = layer.forward([x], Context(train=True, keep=True))
    (dx,) = layer.backward([x], Context(param_grads=True, input_grad=True))
    assert y.shape == x.shape and dx.shape == x.shape
    assert not layer.grads["gamma"].any() and not layer.grads["beta"].any()
    for k, v in layer.buffers.items():
        assert np.array_equal(v, saved[k]), k  # deliberately exact: nothing to learn from


def test_mobilenet_learns_with_batch_statistics():
    """A tiny MobileNet trained from scratch with ``fit``: the loss falls, faster than with
    frozen statistics, and the running statistics it gathered make the eval-mode loss fall."""
    from robustcnn.engine.train import SGD, Schedule, fit
    from robustcnn.models.zoo import mobilenet_small

    rng = np.random.default_rng(0)
    n = 96
    y = rng.integers(0, 3, n)
    x = rng.uniform(0, 0.3, (n, 1, 28, 28)).astype(np.float32)
    x[y == 0, 0, ::4, :] += 0.6  # horizontal stripes, vertical stripes, noise alone
    x[y == 1, 0, :, ::4] += 0.6
    histories = {}
    for frozen in (False, True):
        net = mobilenet_small(0.01, blocks=3, input_shape=(1, 28, 28), num_classes=3)
        bns = [layer for layer in net.layers if layer.type == "BatchNorm"]
        assert bns and all(not b.use_global_stats and b.momentum == 0.9 for b in bns)
        for b in bns:
            b.use_global_stats = frozen
        before = net.eval().loss_and_input_grad(x, y)[0].mean()
        histories[frozen] = fit(net, x, y, epochs=4, batch_size=16, optimizer=SGD(0.9, 0.0),
                                schedule=Schedule("constant", 0.05), progress=False, log=None)
        assert not net.training
        if not frozen:
            after = net.loss_and_input_grad(x, y)[0].mean()
            assert after < 0.5 * before
            assert net.accuracy(x, y) > 0.9
            assert not np.allclose(bns[0].buffers["var"], 1.0)
    loss = {frozen: [r["train_loss"] for r in h] for frozen, h in histories.items()}
    assert loss[False][-1] < 0.5 * loss[False][0]
    assert loss[False][-1] < 0.7 * loss[True][-1]  # (0.31 vs 0.93 when written)


# ---------------------------------------------------------------------------------------------
# Folding


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("conv_bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_fold_batch_norm_into_conv(conv_bias, affine, dtype, rng):
    x = rng.standard_normal((2, 3, 7, 7)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype) if conv_bias else None
    mean, var, gamma, beta = (p.astype(dtype) for p in _bn_params(rng, 4))
    if not affine:
        gamma = beta = None
    eps = 1e-3
    want = batch_norm_forward(conv2d_forward(x, w, b, stride=2, padding=1), mean, var, gamma,
                              beta, eps)
    w2, b2 = fold_batch_norm(w, b, mean, var, gamma, beta, eps)
    assert w2.dtype == dtype and b2.dtype == dtype and w2.shape == w.shape and b2.shape == (4,)
    got = conv2d_forward(x, w2, b2, stride=2, padding=1)
    assert_close(got, want, 1e-10 if dtype == F64 else 1e-5, "conv ∘ BN vs folded conv")
    assert_close(got, bn_ref(conv2d_forward(x, w, b, stride=2, padding=1).astype(np.float64),
                             *(None if p is None else p.astype(np.float64)
                               for p in (mean, var, gamma, beta)), eps),
                 1e-10 if dtype == F64 else 1e-5, "folded conv vs reference BN")


def test_fold_batch_norm_into_linear(rng):
    x, w, b = rng.standard_normal((5, 6)), rng.standard_normal((3, 6)), rng.standard_normal(3)
    mean, var, gamma, beta = _bn_params(rng, 3)
    w2, b2 = fold_batch_norm(w, b, mean, var, gamma, beta)
    assert_close(linear_forward(x, w2, b2),
                 batch_norm_forward(linear_forward(x, w, b), mean, var, gamma, beta), 1e-10,
                 "linear ∘ BN vs folded linear")


def test_empty_batch(rng):
    # An empty batch passes through (the kernels see (0, C, H·W) views).
    x = np.zeros((0, 4, 3, 3))
    assert lrn_forward(x, 3).shape == x.shape
    assert lrn_backward(x, x, 3).shape == x.shape
    mean, var, gamma, beta = _bn_params(rng, 4)
    assert batch_norm_forward(x, mean, var, gamma, beta).shape == x.shape
    dx, dgamma, dbeta = batch_norm_backward(x, x, mean, var, gamma)
    assert dx.shape == x.shape and not dgamma.any() and not dbeta.any()


# ---------------------------------------------------------------------------------------------
# Scale (Caffe's Scale layer)


def scale_ref(x, gamma, beta):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return x * gamma.reshape(shape) + beta.reshape(shape)


def scale_ref_backward(dy, x, gamma, beta):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    return dy * gamma.reshape(shape), (dy * x).sum(axis=axes), dy.sum(axis=axes)


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 6), (1, 2, 1, 1), (0, 3, 2, 2)])
def test_scale(shape, dtype, rng):
    from robustcnn.engine import scale_backward, scale_forward

    x = rng.standard_normal(shape)
    gamma, beta = rng.uniform(0.5, 2.0, shape[1]), rng.standard_normal(shape[1])
    check_op(scale_forward, scale_ref, [x, gamma, beta],
             backward=lambda dy, x, g, b: scale_backward(dy, x, g),
             ref_backward=scale_ref_backward, wrt=(0, 1, 2), dtype=dtype, what=f"scale{shape}")


def test_scale_bad_input(rng):
    from robustcnn.engine import scale_forward

    x = rng.standard_normal((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"s1 \(Scale\): scale shape \(4,\) does not match "
                                         r"channels 3"):
        scale_forward(x, np.ones(4), name="s1")
    with pytest.raises(ValueError, match=r"bias shape \(2,\) does not match channels 3"):
        scale_forward(x, np.ones(3), np.ones(2))


# ---------------------------------------------------------------------------------------------
# LRN within channels (Caffe's WITHIN_CHANNEL)


def lrn_within_ref(x, n, alpha, beta):
    """Caffe's construction: AVE pooling of x² (pad (n−1)/2, divisor n²), then (1 + α·avg)^−β."""
    half = (n - 1) // 2
    sq = np.pad(x ** 2, ((0, 0), (0, 0), (half, half), (half, half)))
    H, W = x.shape[2:]
    s = np.zeros_like(x)
    for a in range(n):
        for b in range(n):
            s += sq[:, :, a:a + H, b:b + W]
    return x * (1.0 + alpha / n ** 2 * s) ** -beta


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("n,alpha,beta,shape", [(3, 5e-2, 0.75, (2, 3, 5, 6)),
                                                (5, 0.5, 0.5, (1, 2, 4, 4)),
                                                (1, 1.0, 1.5, (2, 2, 3, 3)),
                                                (3, 0.3, 0.75, (2, 1, 1, 7))])
def test_lrn_within(n, alpha, beta, shape, dtype, rng):
    from robustcnn.engine import lrn_within_backward, lrn_within_forward

    x = rng.standard_normal(shape) * 2
    check_op(lambda x: lrn_within_forward(x, n, alpha, beta),
             lambda x: lrn_within_ref(x, n, alpha, beta), [x],
             backward=lambda dy, x: lrn_within_backward(dy, x, n, alpha, beta),
             dtype=dtype, what=f"lrn_within n={n}")


def test_lrn_within_bad_input(rng):
    from robustcnn.engine import lrn_within_forward

    x = rng.standard_normal((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"n1 \(LRN\): local_size must be a positive odd"):
        lrn_within_forward(x, 2, name="n1")
    with pytest.raises(ValueError, match="input must have 4 axes"):
        lrn_within_forward(x[0])
