"""The engine: Numba kernels (forward and backward), layers, Net and training.

Functional API (checked arguments; NCHW; float32, or float64 for gradient checks; ``stride``,
``padding`` and ``dilation`` are ints or (h, w) pairs):

    conv2d_forward(x, weight, bias, stride, padding, dilation, groups)           → y
    conv2d_backward(dy, x, weight, stride, padding, dilation, groups)            → (dx, dweight, dbias)
    linear_forward(x, weight, bias)                                              → y
    linear_backward(dy, x, weight)                                               → (dx, dweight, dbias)
    max_pool2d_forward(x, kernel, stride, padding, ceil_mode)                    → y
    max_pool2d_backward(dy, x, kernel, stride, padding, ceil_mode)               → dx
    avg_pool2d_forward / avg_pool2d_backward                                     (same, + count_pad)
    global_avg_pool2d_forward(x) / global_avg_pool2d_backward(dy, x)
    lrn_forward(x, local_size, alpha, beta, k) / lrn_backward(dy, x, local_size, alpha, beta, k)
    lrn_within_forward(x, local_size, alpha, beta) / lrn_within_backward(dy, x, …)
    relu_forward(x, negative_slope) / relu_backward(dy, x, negative_slope), relu6_*
    batch_norm_forward(x, mean, var, gamma, beta, eps) / batch_norm_backward(...), fold_batch_norm
    dropout_forward(x, p, rng) → (y, mask) / dropout_backward(dy, mask)
    prelu_forward(x, slope) → y / prelu_backward(dy, x, slope) → (dx, dslope)
    scale_forward(x, gamma, beta) → y / scale_backward(dy, x, gamma) → (dx, dgamma, dbeta)
    concat_*, eltwise_sum_*, eltwise_prod_*, eltwise_max_*, flatten_*, reshape_*, pad2d_*,
    permute_*, softmax_forward / softmax_backward
    sigmoid_forward(x) / sigmoid_backward(dy, x), hard_sigmoid_* (+ alpha, beta), hard_swish_*
    softmax_cross_entropy(logits, labels)                                        → (loss (N,), dlogits)
    median_filter_forward(x, k)                  (k×k median per channel, SciPy's conventions)
    structured.circulant_forward(x, g, out) / circulant_backward(dy, x, g) → (dx, dg);
    structured.toeplitz_like_forward(x, g, h, out) → (y, saved) /
    toeplitz_like_backward(dy, saved, g, h, in) → (dx, dg, dh)   (FFT, Sindhwani et al. 2015)

Functions that check their arguments take a keyword ``name`` used in their error messages;
the plumbing helpers (``concat_backward``, ``eltwise_sum_backward``, ``flatten_*``) check nothing.
"""

from .activation import relu6_backward, relu6_forward, relu_backward, relu_forward
from .conv import conv2d_backward, conv2d_forward, conv2d_geometry, conv_output_size
from .dropout import dropout_backward, dropout_forward
from .layers import (LRN, AvgPool2d, BatchNorm, Concat, Conv2d, Dropout, EltwiseMax,
                     EltwiseProd, EltwiseSum, Flatten, GlobalAvgPool2d, HardSigmoid, HardSwish,
                     Layer, Linear, LRNWithin, MaxPool2d, MedianFilter, Pad2d, Permute, PReLU,
                     ReLU, ReLU6, Reshape, Scale, Sigmoid, Softmax, StructuredLinear)
from .linear import linear_backward, linear_forward
from .loss import softmax_backward, softmax_cross_entropy, softmax_forward
from .merge import (concat_backward, concat_forward, eltwise_max_backward, eltwise_max_forward,
                    eltwise_prod_backward, eltwise_prod_forward, eltwise_sum_backward,
                    eltwise_sum_forward, flatten_backward, flatten_forward, pad2d_backward,
                    pad2d_forward, permute_backward, permute_forward, reshape_backward,
                    reshape_forward)
from .median import median_filter_forward
from .net import LayerStep, Net
from .norm import (batch_norm_backward, batch_norm_forward, fold_batch_norm, lrn_backward,
                   lrn_forward, lrn_within_backward, lrn_within_forward, scale_backward,
                   scale_forward)
from .prelu import prelu_backward, prelu_forward
from .pool import (avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d_backward,
                   global_avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward,
                   pool_output_size)
from .sigmoid import (hard_sigmoid_backward, hard_sigmoid_forward, hard_swish_backward,
                      hard_swish_forward, sigmoid_backward, sigmoid_forward)

__all__ = [
    "conv2d_forward", "conv2d_backward", "conv2d_geometry", "conv_output_size",
    "linear_forward", "linear_backward",
    "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
    "global_avg_pool2d_forward", "global_avg_pool2d_backward", "pool_output_size",
    "lrn_forward", "lrn_backward", "relu_forward", "relu_backward", "relu6_forward",
    "relu6_backward", "batch_norm_forward", "batch_norm_backward", "fold_batch_norm",
    "dropout_forward", "dropout_backward", "concat_forward", "concat_backward",
    "eltwise_sum_forward", "eltwise_sum_backward", "flatten_forward", "flatten_backward",
    "softmax_forward", "softmax_backward", "softmax_cross_entropy",
    "prelu_forward", "prelu_backward", "scale_forward", "scale_backward",
    "lrn_within_forward", "lrn_within_backward",
    "eltwise_prod_forward", "eltwise_prod_backward", "eltwise_max_forward",
    "eltwise_max_backward", "reshape_forward", "reshape_backward", "pad2d_forward",
    "median_filter_forward", "MedianFilter",
    "pad2d_backward", "permute_forward", "permute_backward",
    "sigmoid_forward", "sigmoid_backward", "hard_sigmoid_forward", "hard_sigmoid_backward",
    "hard_swish_forward", "hard_swish_backward",
    "Net", "LayerStep", "Layer", "Conv2d", "Linear", "MaxPool2d", "AvgPool2d",
    "GlobalAvgPool2d", "ReLU", "ReLU6", "LRN", "Dropout", "BatchNorm", "Flatten", "Softmax",
    "Concat", "EltwiseSum", "Scale", "PReLU", "EltwiseProd", "EltwiseMax", "Reshape", "Pad2d",
    "Permute", "LRNWithin", "Sigmoid", "HardSigmoid", "HardSwish", "StructuredLinear",
]
