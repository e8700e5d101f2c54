"""Dense kernels and whole nets against torch: convolution (grouped, depthwise) and fully
connected layers, forward and forward + backward; LeNet-5's forward, ``loss_and_input_grad``
and training step. Each case runs our functional API or our Net and the same computation in
torch, on the same weights."""

import numpy as np

from ..engine import conv2d_backward, conv2d_forward, linear_backward, linear_forward
from ..models.lenet import lenet5
from .pairs import Case


def _out_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


def conv_case(name, batch, channels, size, out_channels, kernel, *, stride=1, padding=0,
              groups=1, backward=False, seed=0):
    """conv2d_forward (+ conv2d_backward: dx, dW, db) against torch's F.conv2d (+ autograd)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    out = _out_size(size, kernel, stride, padding)
    x = rng.standard_normal((batch, channels, size, size), dtype=np.float32)
    w = rng.standard_normal((out_channels, channels // groups, kernel, kernel), dtype=np.float32)
    w *= 1 / np.sqrt(w[0].size)
    b = rng.standard_normal(out_channels, dtype=np.float32)
    dy = rng.standard_normal((batch, out_channels, out, out), dtype=np.float32)
    xt, wt, bt, dyt = (torch.from_numpy(a.copy()) for a in (x, w, b, dy))
    args = (stride, padding, 1, groups)
    flops = 2 * batch * out_channels * out * out * w[0].size

    if not backward:
        def ours():
            return (conv2d_forward(x, w, b, *args),)

        def peer():
            with torch.no_grad():
                return (F.conv2d(xt, wt, bt, *args),)

        return Case(f"{name} fwd", ours, peer, flops, target=0.5)

    for t in (xt, wt, bt):
        t.requires_grad_()

    def ours():
        return (conv2d_forward(x, w, b, *args),) + conv2d_backward(dy, x, w, *args)

    def peer():
        y = F.conv2d(xt, wt, bt, *args)
        return (y,) + torch.autograd.grad(y, (xt, wt, bt), dyt)

    return Case(f"{name} fwd+bwd", ours, peer, 3 * flops, target=0.5)


def linear_case(name, batch, in_features, out_features, *, backward=False, seed=0):
    """linear_forward (+ linear_backward: dx, dW, db) against torch's F.linear (+ autograd)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, in_features), dtype=np.float32)
    w = rng.standard_normal((out_features, in_features), dtype=np.float32)
    w *= 1 / np.sqrt(in_features)
    b = rng.standard_normal(out_features, dtype=np.float32)
    dy = rng.standard_normal((batch, out_features), dtype=np.float32)
    xt, wt, bt, dyt = (torch.from_numpy(a.copy()) for a in (x, w, b, dy))
    flops = 2 * batch * in_features * out_features

    if not backward:
        def ours():
            return (linear_forward(x, w, b),)

        def peer():
            with torch.no_grad():
                return (F.linear(xt, wt, bt),)

        return Case(f"{name} fwd", ours, peer, flops)

    for t in (xt, wt, bt):
        t.requires_grad_()

    def ours():
        return (linear_forward(x, w, b),) + linear_backward(dy, x, w)

    def peer():
        y = F.linear(xt, wt, bt)
        return (y,) + torch.autograd.grad(y, (xt, wt, bt), dyt)

    return Case(f"{name} fwd+bwd", ours, peer, 3 * flops)


def torch_lenet5(net):
    """Our LeNet-5 (conv20-pool-conv50-pool-ip500-relu-ip10) in torch, with our weights."""
    import torch
    from torch import nn

    p = {name: {k: torch.from_numpy(v.copy()) for k, v in params.items()}
         for name, params in net.params.items()}
    conv1, conv2 = (nn.Conv2d(p[n]["weight"].shape[1], p[n]["weight"].shape[0],
                              tuple(p[n]["weight"].shape[2:])) for n in ("conv1", "conv2"))
    ip1, ip2 = (nn.Linear(p[n]["weight"].shape[1], p[n]["weight"].shape[0]) for n in ("ip1", "ip2"))
    model = nn.Sequential(conv1, nn.MaxPool2d(2, 2, ceil_mode=True),  # Caffe pools in ceil mode
                          conv2, nn.MaxPool2d(2, 2, ceil_mode=True),
                          nn.Flatten(), ip1, nn.ReLU(), ip2)
    with torch.no_grad():
        for name, layer in (("conv1", conv1), ("conv2", conv2), ("ip1", ip1), ("ip2", ip2)):
            layer.weight.copy_(p[name]["weight"])
            layer.bias.copy_(p[name]["bias"])
    return model.eval()


def lenet5_flops(net, batch):
    """Forward FLOPs of each layer with weights, in layer order (2 per multiply-add)."""
    return [2 * batch * int(np.prod(layer.out_shapes[0])) * layer.params["weight"][0].size
            for layer in net.layers if "weight" in layer.params]


def torch_lenet5_passes(net, x, labels, train_batch, dtype):
    """torch closures of our LeNet-5's forward, loss_and_input_grad and loss_and_grad (on the first
    ``train_batch`` examples), computed in ``dtype``."""
    import torch
    import torch.nn.functional as F

    frozen = torch_lenet5(net).to(dtype).requires_grad_(False)
    trainable = torch_lenet5(net).to(dtype)
    params = list(trainable.parameters())
    xt, yt = torch.from_numpy(x.copy()).to(dtype), torch.from_numpy(labels)
    xg = xt.clone().requires_grad_()
    xs, ys = xt[:train_batch], yt[:train_batch]

    def forward():
        with torch.no_grad():
            return (frozen(xt),)

    def input_grad():
        loss = F.cross_entropy(frozen(xg), yt, reduction="none")
        return (loss,) + torch.autograd.grad(loss.sum(), xg)

    def train():
        loss = F.cross_entropy(trainable(xs), ys)
        return (loss,) + torch.autograd.grad(loss, params)

    return forward, input_grad, train


def lenet5_inputs(batch, seed=0):
    """The benchmark's LeNet-5 (nonzero biases, so that the output checks cover them), ``batch``
    images and labels → (net, x, labels)."""
    rng = np.random.default_rng(seed)
    net = lenet5(seed=seed)
    for params in net.params.values():
        params["bias"][...] = rng.uniform(-0.1, 0.1, params["bias"].shape)
    x = rng.random((batch,) + net.input_shape, dtype=np.float32)
    return net, x, rng.integers(0, net.num_classes, batch)


def lenet5_cases(*, eval_batch=256, train_batch=64, seed=0):
    """Net.forward, Net.loss_and_input_grad and Net.loss_and_grad against the same net in torch."""
    import torch

    net, x, labels = lenet5_inputs(eval_batch, seed)
    names = [key.rsplit("/", 1) for key, _ in net.named_params()]  # in torch's parameter order

    def forward():
        return (net.forward(x),)

    def input_grad():
        return net.loss_and_input_grad(x, labels)

    def train():
        loss, _ = net.loss_and_grad(x[:train_batch], labels[:train_batch])
        return (np.float32(loss),) + tuple(net.grads[layer][p] for layer, p in names)

    peer = torch_lenet5_passes(net, x, labels, train_batch, torch.float32)
    reference = torch_lenet5_passes(net, x, labels, train_batch, torch.float64)
    fwd = sum(lenet5_flops(net, eval_batch))
    per_layer = lenet5_flops(net, train_batch)
    return [
        Case(f"lenet5 forward b{eval_batch}", forward, peer[0], fwd, images=eval_batch,
             reference=reference[0]),
        Case(f"lenet5 loss_and_input_grad b{eval_batch}", input_grad, peer[1], 2 * fwd,
             images=eval_batch, target=0.7, reference=reference[1]),
        Case(f"lenet5 loss_and_grad b{train_batch}", train, peer[2],
             3 * sum(per_layer) - per_layer[0], images=train_batch, reference=reference[2]),
    ]


# The convolution layers of the benchmark issue, by a short name (the format suite times two of
# them with pruned weights): conv_case's arguments.
CONVS = {
    "lenet5-conv2": dict(name="lenet5-conv2 20x12x12->50 5x5 b64", batch=64, channels=20,
                         size=12, out_channels=50, kernel=5),
    "alexnet-conv2": dict(name="alexnet-conv2 96x27x27->256 5x5 p2 g2 b8", batch=8, channels=96,
                          size=27, out_channels=256, kernel=5, padding=2, groups=2),
    "vgg": dict(name="vgg 64x56x56->64 3x3 p1 b8", batch=8, channels=64, size=56,
                out_channels=64, kernel=3, padding=1),
    "depthwise": dict(name="depthwise 32x112x112 3x3 p1 b8", batch=8, channels=32, size=112,
                      out_channels=32, kernel=3, padding=1, groups=32),
}


def cases():
    """The dense cases of the project's benchmark issue, in table order."""
    out = []
    for spec in CONVS.values():
        out += [conv_case(**spec), conv_case(**spec, backward=True)]
    for batch in (1, 64):
        for backward in (False, True):
            out.append(linear_case(f"fc 4096->4096 b{batch}", batch, 4096, 4096,
                                   backward=backward))
    return out + lenet5_cases()
