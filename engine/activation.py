"""Elementwise activations, forward and backward: ReLU (with Caffe's negative_slope), ReLU6 and
the quantized ReLU of low-precision nets.

Kernels run over flat views; for ReLU and ReLU6 the Net keeps only the output for the backward,
because the sign pattern it needs is the same in y as in x (y > 0 ⇔ x > 0 for
negative_slope ≥ 0). The quantized ReLU keeps its input: small inputs round to a zero output.
"""

import numpy as np
from numba import njit, prange, uint64

from ._args import float_array, where
from ._jit import JIT, JIT_PARALLEL, chunk_bounds, run_chunks, work_chunks


@njit(**JIT)
def relu_forward_chunk(t, x, negative_slope, chunks, y):
    # x, y: (M,), the entries of chunk t written;  y = x if x > 0 else negative_slope · x
    lo, hi = chunk_bounds(t, chunks, x.shape[0])
    for i in range(uint64(lo), uint64(hi)):  # unsigned: no wraparound test, so it vectorises
        v = x[i]
        y[i] = v if v > 0 else negative_slope * v


@njit(**JIT_PARALLEL)
def relu_forward_chunks(x, negative_slope, chunks, y):
    # ``relu_forward_chunk`` for every chunk, one per thread
    for t in prange(chunks):
        relu_forward_chunk(np.int64(t), x, negative_slope, chunks, y)


def relu_forward_flat(x, negative_slope, y):
    """ReLU of flat checked arrays into ``y``: one chunk per thread, or in this thread when
    ``x`` is small (``work_chunks``)."""
    chunks = work_chunks(x.shape[0], x.shape[0])
    run_chunks(relu_forward_chunks, relu_forward_chunk, chunks, x, negative_slope, chunks, y)


@njit(**JIT_PARALLEL)
def relu_backward_flat(dy, ref, negative_slope, dx):
    # dy, ref, dx: (M,); ref is x or y (same sign);  dx = dy if ref > 0 else negative_slope · dy
    for i in prange(dy.shape[0]):
        dx[i] = dy[i] if ref[i] > 0 else negative_slope * dy[i]


@njit(**JIT_PARALLEL)
def relu6_forward_flat(x, y):
    # y = min(max(x, 0), 6)
    for i in prange(x.shape[0]):
        y[i] = min(max(x[i], 0.0), 6.0)


@njit(**JIT_PARALLEL)
def relu6_backward_flat(dy, ref, dx):
    # dx = dy where 0 < x < 6, else 0 (ref is x or y: the same cells pass)
    for i in prange(dy.shape[0]):
        dx[i] = dy[i] if 0.0 < ref[i] < 6.0 else 0.0


@njit(**JIT_PARALLEL)
def quantized_relu_forward_flat(x, levels, max_value, y):
    # x, y: (M,);  y = s · floor(clip(x, 0, max_value) / s + 1/2) with s = max_value / levels:
    # a staircase of levels + 1 values 0, s, …, max_value (a k-level uniform quantiser after a
    # clipped ReLU; ties round up). Computed in float64, stored in y's dtype.
    scale = levels / max_value
    step = max_value / levels
    for i in prange(x.shape[0]):
        v = min(max(np.float64(x[i]), 0.0), max_value)
        y[i] = np.floor(v * scale + 0.5) * step


@njit(**JIT_PARALLEL)
def quantized_relu_backward_flat(dy, x, max_value, straight_through, dx):
    # dy, x, dx: (M,). True gradient: dx = 0 (the staircase is flat between its jumps and has no
    # derivative on them). Straight-through (BPDA): the clipped ReLU's, dx = dy where
    # 0 < x < max_value, else 0.
    for i in prange(dy.shape[0]):
        if straight_through and 0.0 < x[i] < max_value:
            dx[i] = dy[i]
        else:
            dx[i] = 0.0


def _check_slope(negative_slope, at):
    slope = float(negative_slope)
    if not np.isfinite(slope) or slope < 0:
        raise ValueError(f"{at}: negative_slope must be finite and >= 0, got {negative_slope!r}")
    return slope


def _pair_check(dy, x, at):
    x = float_array(x, "input", at)
    dy = float_array(dy, "output gradient", at, dtype=x.dtype)
    if dy.shape != x.shape:
        raise ValueError(f"{at}: output gradient shape {dy.shape} does not match the input {x.shape}")
    return dy, x


def relu_forward(x, negative_slope=0.0, *, name="relu"):
    """max(x, 0) + negative_slope · min(x, 0), any shape."""
    at = where(name, "ReLU")
    x = float_array(x, "input", at)
    y = np.empty_like(x)
    relu_forward_flat(x.reshape(-1), _check_slope(negative_slope, at), y.reshape(-1))
    return y


def relu_backward(dy, x, negative_slope=0.0, *, name="relu"):
    """Gradient of ``relu_forward`` w.r.t. x (at x = 0 the slope is negative_slope, as in Caffe)."""
    at = where(name, "ReLU")
    dy, x = _pair_check(dy, x, at)
    dx = np.empty_like(x)
    relu_backward_flat(dy.reshape(-1), x.reshape(-1), _check_slope(negative_slope, at), dx.reshape(-1))
    return dx


def relu6_forward(x, *, name="relu6"):
    """min(max(x, 0), 6), any shape (MobileNet's activation)."""
    x = float_array(x, "input", where(name, "ReLU6"))
    y = np.empty_like(x)
    relu6_forward_flat(x.reshape(-1), y.reshape(-1))
    return y


def relu6_backward(dy, x, *, name="relu6"):
    """Gradient of ``relu6_forward`` w.r.t. x (zero at the kinks 0 and 6)."""
    dy, x = _pair_check(dy, x, where(name, "ReLU6"))
    dx = np.empty_like(x)
    relu6_backward_flat(dy.reshape(-1), x.reshape(-1), dx.reshape(-1))
    return dx


def check_quantizer(bits, max_value, at):
    """(levels, max_value) for a quantized ReLU: ``bits`` an integer in [1, 16] (levels =
    2**bits − 1 steps above 0), ``max_value`` finite and > 0."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"{at}: bits must be an integer in [1, 16], got {bits!r}")
    try:
        top = float(max_value)
    except (TypeError, ValueError):
        top = float("nan")
    if not (np.isfinite(top) and top > 0):
        raise ValueError(f"{at}: max_value must be finite and > 0, got {max_value!r}")
    return (1 << int(bits)) - 1, top


def quantized_relu_forward(x, bits=8, max_value=6.0, *, name="quantized_relu"):
    """clip(x, 0, max_value) rounded to the nearest of 2**bits evenly spaced values from 0 to
    max_value (ties up), any shape."""
    at = where(name, "QuantizedReLU")
    levels, top = check_quantizer(bits, max_value, at)
    x = float_array(x, "input", at)
    y = np.empty_like(x)
    quantized_relu_forward_flat(x.reshape(-1), levels, top, y.reshape(-1))
    return y


def quantized_relu_backward(dy, x, bits=8, max_value=6.0, straight_through=False, *,
                            name="quantized_relu"):
    """Gradient of ``quantized_relu_forward`` w.r.t. x: zero everywhere (the true gradient of a
    staircase, which masks every gradient-based attack), or with ``straight_through`` the
    clipped ReLU's (1 for 0 < x < max_value, else 0: the straight-through estimator, which BPDA
    uses; Athalye, Carlini & Wagner 2018)."""
    at = where(name, "QuantizedReLU")
    _, top = check_quantizer(bits, max_value, at)
    dy, x = _pair_check(dy, x, at)
    dx = np.empty_like(x)
    quantized_relu_backward_flat(dy.reshape(-1), x.reshape(-1), top, bool(straight_through),
                                 dx.reshape(-1))
    return dx


# ---------------------------------------------------------------------------------------------
# The activation quantizer of quantized nets: integer codes of a uniform quantizer


@njit(**JIT_PARALLEL)
def quantize_forward_flat(x, step, lo, hi, binary, y):
    # x, y: (M,);  y = clip(floor(x / step + 1/2), lo, hi): the integer code of the nearest level
    # (ties round up); binary: y = sign(x) ∈ {−1, +1} (+1 at 0). Computed in float64, stored in
    # y's dtype (codes are exact in float32).
    inv = 1.0 / step
    for i in prange(x.shape[0]):
        v = np.float64(x[i])
        if binary:
            y[i] = 1.0 if v >= 0.0 else -1.0
        else:
            y[i] = min(max(np.floor(v * inv + 0.5), lo), hi)


@njit(**JIT_PARALLEL)
def quantize_backward_flat(dy, x, step, lo, hi, straight_through, dx):
    # dy, x, dx: (M,). True gradient: dx = 0 (a staircase). Straight-through: the gradient of
    # the clipped identity clip(x / step, lo, hi) (for the binary quantizer, lo = −1 and hi = 1:
    # the hard tanh's), dx = dy / step where lo·step ≤ x ≤ hi·step, else 0.
    a = lo * step
    b = hi * step
    for i in prange(dy.shape[0]):
        if straight_through and a <= x[i] <= b:
            dx[i] = dy[i] / step
        else:
            dx[i] = 0.0


def quantizer_levels(bits, signed, step, at):
    """(lowest code, highest code) of a uniform ``bits``-bit quantizer with a positive ``step``:
    unsigned codes 0..2**bits − 1; signed codes symmetric, ±(2**(bits − 1) − 1), and for one
    bit the binary codes ±1 (sign: no code 0)."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise ValueError(f"{at}: bits must be an integer in [1, 8], got {bits!r}")
    try:
        s = float(step)
    except (TypeError, ValueError):
        s = float("nan")
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"{at}: step must be finite and > 0, got {step!r}")
    if not signed:
        return 0, (1 << int(bits)) - 1
    if bits == 1:
        return -1, 1
    top = (1 << (int(bits) - 1)) - 1
    return -top, top


def quantize_forward(x, bits=8, step=1.0, signed=False, *, name="quantize"):
    """The integer codes of x under a uniform quantizer (see ``quantizer_levels``): unsigned
    clip(round(x / step), 0, 2**bits − 1), signed clip(round(x / step), ±(2**(bits−1) − 1)),
    binary (signed, 1 bit) sign(x) with sign(0) = +1."""
    at = where(name, "QuantizeActivation")
    lo, hi = quantizer_levels(bits, signed, step, at)
    x = float_array(x, "input", at)
    y = np.empty_like(x)
    quantize_forward_flat(x.reshape(-1), float(step), float(lo), float(hi),
                          bool(signed and bits == 1), y.reshape(-1))
    return y


def quantize_backward(dy, x, bits=8, step=1.0, signed=False, straight_through=False, *,
                      name="quantize"):
    """Gradient of ``quantize_forward`` w.r.t. x: zero (the true gradient of a staircase), or
    with ``straight_through`` that of the clipped identity x / step (BPDA's surrogate)."""
    at = where(name, "QuantizeActivation")
    lo, hi = quantizer_levels(bits, signed, step, at)
    dy, x = _pair_check(dy, x, at)
    dx = np.empty_like(x)
    quantize_backward_flat(dy.reshape(-1), x.reshape(-1), float(step), float(lo), float(hi),
                           bool(straight_through), dx.reshape(-1))
    return dx
