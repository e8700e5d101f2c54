"""Layers: the kernels with their parameters, shapes and saved state, as the Net runs them.

A layer is built from a small spec (its constructor arguments, which ``config()`` returns as
JSON-able data), learns its input shapes in ``setup`` (where shapes are checked and parameters
allocated), and then runs ``forward``/``backward`` on lists of arrays, because Concat and
Eltwise take several inputs. Shapes here are per example, without the batch axis.

``forward(xs, ctx)`` saves what ``backward`` needs only when ``ctx.keep`` is set, and
``backward(dys, ctx)`` computes parameter gradients only when ``ctx.param_grads`` is set and the
input gradient only when ``ctx.input_grad`` is set: attacks need dL/dx and nothing else.
"""

from dataclasses import dataclass

import numpy as np

from . import (activation, conv, linear, loss, median, merge, norm, pool, prelu, sigmoid,
               structured)
from ._args import pair
from .dropout import check_ratio, dropout_mask
from .formats import FORMATS
from .formats.dense import DenseWeight


@dataclass
class Context:
    """What one forward/backward pass needs: mode and which gradients to compute."""

    train: bool = False  # dropout active; batch norm on (and updating) batch statistics
    keep: bool = False  # save what backward needs
    param_grads: bool = False  # backward fills layer.grads
    input_grad: bool = True  # backward returns the input gradient
    rng: np.random.Generator = None  # dropout masks


class Layer:
    """Base class: a named node with bottoms (input blobs) and tops (output blobs)."""

    type = "Layer"
    n_inputs = 1  # None: any number ≥ 1

    def __init__(self, name, *, bottom=None, top=None):
        if not isinstance(name, str) or not name:
            raise ValueError(f"a layer name must be a non-empty string, got {name!r}")
        self.name = name
        self.bottom = [bottom] if isinstance(bottom, str) else (list(bottom) if bottom else None)
        self.top = [top] if isinstance(top, str) else (list(top) if top else None)
        self.params = {}  # trainable arrays by name
        self.buffers = {}  # non-trainable arrays (running statistics)
        self.grads = {}
        self.in_shapes = self.out_shapes = None
        self._saved = None

    @property
    def at(self):
        """Where, for error messages: ``conv2 (Convolution)``."""
        return f"{self.name} ({self.type})"

    def config(self):
        """The constructor arguments, JSON-able; ``type`` names the class."""
        cfg = {"class": type(self).__name__, "type": self.type, "name": self.name}
        if self.bottom is not None:
            cfg["bottom"] = list(self.bottom)
        if self.top is not None:
            cfg["top"] = list(self.top)
        cfg.update(self._config())
        return cfg

    def _config(self):
        return {}

    def setup(self, in_shapes, dtype):
        """Check the input shapes, allocate parameters, return the output shapes."""
        if self.n_inputs is not None and len(in_shapes) != self.n_inputs:
            raise ValueError(f"{self.at}: takes {self.n_inputs} input(s), got {len(in_shapes)}")
        self.in_shapes = [tuple(s) for s in in_shapes]
        self.out_shapes = [tuple(s) for s in self._setup(self.in_shapes, np.dtype(dtype))]
        return self.out_shapes

    def _setup(self, in_shapes, dtype):
        return in_shapes

    def init_params(self, rng):
        """Draw initial parameter values (Caffe's fillers)."""

    def param_values(self, in_shapes):
        """How many parameter and buffer values ``setup`` allocates for these input shapes:
        what a Net checks against its size limit before the layer allocates them."""
        return 0

    # Names of the parameters that take weight decay.
    decay = ()

    def state_keys(self):
        """Names of the arrays ``state_dict`` holds for this layer."""
        return tuple(self.params) + tuple(self.buffers)

    def load_state(self, arrays, source, names=None):
        """Copy ``arrays`` ({name: array}, exactly ``state_keys()``) into the layer, checked."""
        own = {**self.params, **self.buffers}
        for key in names or self.state_keys():
            value, target = np.asarray(arrays[key]), own[key]
            where_ = f"{source}: {self.name}/{key}"
            if value.shape != target.shape:
                raise ValueError(f"{where_} has shape {value.shape}, the net expects {target.shape}")
            if value.dtype.kind != "f":
                raise TypeError(f"{where_} has dtype {value.dtype}, expected floats")
            if not np.isfinite(value).all():
                raise ValueError(f"{where_} has non-finite values")
            target[...] = value

    def dense_param_count(self):
        """Trainable values as if dense (a compressed weight counts every weight)."""
        return int(sum(v.size for v in self.params.values()))

    def share_state(self, other):
        """Use ``other``'s parameter and buffer arrays (the same layer, set up for another
        input shape): the two layers then share them. ValueError if a shape differs."""
        for own, theirs in ((self.params, other.params), (self.buffers, other.buffers)):
            for key, value in theirs.items():
                if key not in own or own[key].shape != value.shape:
                    raise ValueError(f"{self.at}: its {key} would be "
                                     f"{own[key].shape if key in own else 'absent'} instead of "
                                     f"{value.shape}")
                own[key] = value

    def forward(self, xs, ctx):
        raise NotImplementedError

    def backward(self, dys, ctx):
        raise NotImplementedError

    def release(self):
        """Drop what the last forward saved."""
        self._saved = None

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({self.name!r}{', ' if args else ''}{args})"


def _fill(shape, how, fan_in, fan_out, rng, dtype):
    """Caffe's fillers: xavier = U(±√(3/fan_in)); msra = N(0, 2/fan_in); gaussian:σ; constant:v."""
    if how == "xavier":
        bound = np.sqrt(3.0 / fan_in)
        return _drawn(shape, dtype, lambda n: rng.uniform(-bound, bound, size=n))
    if how == "msra":
        return _drawn(shape, dtype, lambda n: rng.standard_normal(n) * np.sqrt(2.0 / fan_in))
    if how == "glorot":  # Keras' default: U(±√(6/(fan_in + fan_out)))
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        return _drawn(shape, dtype, lambda n: rng.uniform(-bound, bound, size=n))
    kind, _, value = str(how).partition(":")
    if kind == "gaussian" and value:
        return _drawn(shape, dtype, lambda n: rng.standard_normal(n) * float(value))
    if kind == "constant":
        return np.full(shape, float(value or 0.0), dtype=dtype)
    raise ValueError(f"unknown initialiser {how!r}: use xavier, msra, glorot, gaussian:STD or constant:VALUE")


_DRAW_CHUNK = 1 << 20


def _drawn(shape, dtype, draw):
    """An array of ``shape`` filled from ``draw(n)`` (float64 draws) in chunks of ``_DRAW_CHUNK``
    values: the same values as one draw of the whole size (the generator's stream is sequential),
    without a float64 temporary of it."""
    out = np.empty(shape, dtype=dtype)
    flat = out.reshape(-1)
    for lo in range(0, flat.size, _DRAW_CHUNK):
        flat[lo:lo + _DRAW_CHUNK] = draw(min(_DRAW_CHUNK, flat.size - lo))
    return out


# ---------------------------------------------------------------------------------------------
# Layers with weights


class _Weighted(Layer):
    """A layer with a weight in some format (``engine/formats``) and an optional bias.

    ``params`` holds the format's trainable arrays (a dense ``weight``; CSR's ``data``; a
    codebook's ``centroids``) and the bias; ``buffers`` its fixed arrays (indices, codes, …).
    ``convert(kind, **options)`` re-encodes the weight; ``weight_format`` is the current one.
    """

    def __init__(self, name, *, bias, weight_init, weight_format=None, **kw):
        super().__init__(name, **kw)
        self.bias = bool(bias)
        self.weight_init = weight_init
        self._format_spec = dict(weight_format) if weight_format else {"kind": "dense"}
        if self._format_spec.get("kind") not in FORMATS:
            raise ValueError(f"{self.at}: unknown weight format {self._format_spec.get('kind')!r}; "
                             f"known: {sorted(FORMATS)}")
        self.weight_format = None
        self.dtype = None

    def _weight_config(self):
        cfg = dict(bias=self.bias, weight_init=self.weight_init)
        if self._format_spec["kind"] != "dense":
            cfg["weight_format"] = dict(self._format_spec)
        return cfg

    def _setup_weight(self, shape, dtype):
        self.dtype = np.dtype(dtype)
        self.weight_shape = tuple(shape)
        spec = self._format_spec
        if self.bias:
            self.params["bias"] = np.zeros(shape[0], dtype=dtype)
        self._set_format(DenseWeight(np.zeros(shape, dtype=dtype)))
        self._format_spec = spec  # the declared format arrives with load_state

    def _set_format(self, fmt):
        bias = self.params.get("bias")
        arrays = fmt.arrays()
        self.weight_format = fmt
        self.params = {k: arrays[k] for k in fmt.trainable}
        if bias is not None:
            self.params["bias"] = bias
        self.buffers = {k: v for k, v in arrays.items() if k not in fmt.trainable}
        self.grads = {}
        self._format_spec = {"kind": fmt.kind, **fmt.options()}

    @property
    def decay(self):
        """Names of the parameters that take weight decay (weights, not biases or centroids)."""
        return self.weight_format.decay

    def set_weight_format(self, fmt):
        """Use ``fmt`` (a WeightFormat of this layer's weight shape and dtype) as the weight."""
        if tuple(fmt.shape) != self.weight_shape:
            raise ValueError(f"{self.at}: a {fmt.kind} weight of shape {fmt.shape} does not match "
                             f"the layer's weight shape {self.weight_shape}")
        if fmt.dtype != self.dtype:
            fmt = fmt.astype(self.dtype)
        self._set_format(fmt)
        return fmt

    def convert(self, kind, **options):
        """Re-encode the weight in format ``kind`` (see ``engine.formats.FORMATS``) → the format.

        Conversions into a codebook keep the weight exact when its distinct values fit the
        codebook and otherwise quantize it to evenly spaced centroids; trained quantization
        (k-means, fine-tuning) lives in ``robustcnn.compress``.
        """
        if kind not in FORMATS:
            raise ValueError(f"{self.at}: unknown weight format {kind!r}; known: {sorted(FORMATS)}")
        try:
            fmt = FORMATS[kind].from_dense(self.weight_format.to_dense(), at=self.at, **options)
        except TypeError as e:  # an option the format does not take
            raise ValueError(f"{self.at}: bad options {options} for the {kind} format ({e})") from None
        return self.set_weight_format(fmt)

    def dense_weight(self):
        """The weight as a dense array (a new array)."""
        return self.weight_format.to_dense()

    def dense_param_count(self):
        return int(self.weight_format.size) + (int(self.params["bias"].size) if self.bias else 0)

    def share_state(self, other):
        if self.weight_shape != other.weight_shape:
            raise ValueError(f"{self.at}: its weight would be {self.weight_shape} instead of "
                             f"{other.weight_shape}: this layer fixes the input size")
        if self.bias:
            self.params["bias"] = other.params["bias"]
        self._set_format(other.weight_format)

    def state_keys(self):
        names = FORMATS[self._format_spec["kind"]].array_names
        return names + (("bias",) if self.bias else ())

    def load_state(self, arrays, source):
        cls = FORMATS[self._format_spec["kind"]]
        options = {k: v for k, v in self._format_spec.items() if k != "kind"}
        fmt = cls.from_arrays(self.weight_shape, {k: arrays[k] for k in cls.array_names}, options,
                              dtype=self.dtype, at=f"{source}: {self.at}")
        if self.bias:
            Layer.load_state(self, {"bias": arrays["bias"]}, source, names=("bias",))
        self._set_format(fmt)

    def _init_weight(self, rng, fan_in, fan_out):
        w = _fill(self.weight_shape, self.weight_init, fan_in, fan_out, rng, self.dtype)
        cls = FORMATS[self._format_spec["kind"]]
        options = {k: v for k, v in self._format_spec.items() if k in cls.creation_options}
        self._set_format(cls.from_dense(w, at=self.at, **options))  # in the declared format
        if self.bias:
            self.params["bias"][...] = 0

    def _store_grads(self, grads, dbias, ctx):
        if ctx.param_grads:
            self.grads = dict(grads)
            if self.bias:
                self.grads["bias"] = dbias


class Conv2d(_Weighted):
    type = "Convolution"

    def __init__(self, name, out_channels, kernel, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, weight_init="xavier", weight_format=None, **kw):
        super().__init__(name, bias=bias, weight_init=weight_init, weight_format=weight_format,
                         **kw)
        self.out_channels = int(out_channels)
        self.kernel = pair(kernel, "kernel", self.at, minimum=1)
        self.stride = pair(stride, "stride", self.at, minimum=1)
        self.padding = pair(padding, "padding", self.at)
        self.dilation = pair(dilation, "dilation", self.at, minimum=1)
        self.groups = int(groups)
        self.geom = None

    def _config(self):
        return dict(out_channels=self.out_channels, kernel=list(self.kernel),
                    stride=list(self.stride), padding=list(self.padding),
                    dilation=list(self.dilation), groups=self.groups, **self._weight_config())

    def _setup(self, in_shapes, dtype):
        if self.groups < 1 or in_shapes[0][0] % self.groups:
            raise ValueError(f"{self.at}: groups={self.groups} does not divide the {in_shapes[0][0]} "
                             f"input channels")
        weight_shape = (self.out_channels, in_shapes[0][0] // self.groups) + self.kernel
        self.geom = conv.conv2d_geometry(in_shapes[0], weight_shape, self.stride, self.padding,
                                         self.dilation, self.groups, at=self.at)
        self._setup_weight(weight_shape, dtype)
        return [self.geom.out_shape]

    def param_values(self, in_shapes):
        weights = self.out_channels * (_leading(in_shapes) // max(self.groups, 1)) * self.kernel[0] * self.kernel[1]
        return weights + (self.out_channels if self.bias else 0)

    def init_params(self, rng):
        O, Cg, kh, kw = self.weight_shape
        self._init_weight(rng, Cg * kh * kw, O * kh * kw // self.groups)

    def forward(self, xs, ctx):
        x = xs[0]
        if ctx.keep:
            self._saved = x
        return [conv.conv2d_forward_format(x, self.weight_format, self.params.get("bias"),
                                           self.geom)]

    def backward(self, dys, ctx):
        dx, grads, db = conv.conv2d_backward_format(dys[0], self._saved, self.weight_format,
                                                    self.geom, need_input=ctx.input_grad,
                                                    need_weight=ctx.param_grads)
        self._store_grads(grads, db, ctx)
        return [dx]


class Linear(_Weighted):
    """Caffe's InnerProduct: flattens (N, C, H, W) inputs to (N, C·H·W) first."""

    type = "InnerProduct"

    def __init__(self, name, out_features, bias=True, weight_init="xavier", weight_format=None,
                 **kw):
        super().__init__(name, bias=bias, weight_init=weight_init, weight_format=weight_format,
                         **kw)
        self.out_features = int(out_features)

    def _config(self):
        return dict(out_features=self.out_features, **self._weight_config())

    def _setup(self, in_shapes, dtype):
        if self.out_features < 1:
            raise ValueError(f"{self.at}: out_features must be >= 1, got {self.out_features}")
        self._setup_weight((self.out_features, int(np.prod(in_shapes[0]))), dtype)
        return [(self.out_features,)]

    def param_values(self, in_shapes):
        inputs = 1
        for d in in_shapes[0] if in_shapes else ():
            inputs *= int(d)
        return self.out_features * inputs + (self.out_features if self.bias else 0)

    def init_params(self, rng):
        O, I = self.weight_shape
        self._init_weight(rng, I, O)

    def forward(self, xs, ctx):
        x = merge.flatten_forward(xs[0])
        if ctx.keep:
            self._saved = x
        return [linear.linear_forward_format(x, self.weight_format, self.params.get("bias"))]

    def backward(self, dys, ctx):
        dx, grads, db = linear.linear_backward_format(dys[0], self._saved, self.weight_format,
                                                      need_input=ctx.input_grad,
                                                      need_weight=ctx.param_grads)
        self._store_grads(grads, db, ctx)
        return [None if dx is None else dx.reshape((dx.shape[0],) + self.in_shapes[0])]



class StructuredLinear(Layer):
    """A fully connected layer whose weight is circulant or Toeplitz-like of displacement rank
    ``rank`` (Sindhwani, Sainath & Kumar, NIPS 2015; ``engine/structured.py`` has the
    equations): its parameters are the generators (circulant ``g`` (n,); Toeplitz-like ``g``,
    ``h`` (rank, n), n = max(inputs, outputs)) and a bias, and forward and backward run by FFT
    in O(rank · n log n) per example. Flattens (N, C, H, W) inputs as InnerProduct does.

    Initial generators give W's entries variance ≈ 1/fan_in, a Toeplitz-like W starting near a
    circulant (``structured.initial_generators`` says why)."""

    type = "StructuredInnerProduct"
    decay = ("g", "h")

    def __init__(self, name, out_features, structure="toeplitz-like", rank=1, bias=True, **kw):
        super().__init__(name, **kw)
        if structure not in structured.STRUCTURES:
            raise ValueError(f"{self.at}: unknown structure {structure!r}; known: "
                             f"{', '.join(structured.STRUCTURES)}")
        for key, value in (("out_features", out_features), ("rank", rank)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{self.at}: {key} must be an integer >= 1, got {value!r}")
        if structure == "circulant" and rank != 1:
            raise ValueError(f"{self.at}: a circulant weight has rank 1, got rank={rank!r}")
        self.out_features = int(out_features)
        self.structure = structure
        self.rank = int(rank)
        self.bias = bool(bias)
        self.n = None

    def _config(self):
        return dict(out_features=self.out_features, structure=self.structure, rank=self.rank,
                    bias=self.bias)

    def _shapes(self, in_shapes):
        inputs = 1
        for d in in_shapes[0] if in_shapes else ():
            inputs *= int(d)
        n = structured.transform_size(inputs, self.out_features)
        return inputs, n, structured.generator_shapes(self.structure, n, self.rank)

    def param_values(self, in_shapes):
        _, _, shapes = self._shapes(in_shapes)
        return sum(int(np.prod(s)) for s in shapes.values()) + (
            self.out_features if self.bias else 0)

    def _setup(self, in_shapes, dtype):
        self.in_features, self.n, shapes = self._shapes(in_shapes)
        if self.rank > self.n:
            raise ValueError(f"{self.at}: rank {self.rank} exceeds the transform size {self.n} "
                             f"(max of {self.in_features} inputs and {self.out_features} outputs)")
        self.params = {k: np.zeros(s, dtype=dtype) for k, s in shapes.items()}
        if self.bias:
            self.params["bias"] = np.zeros(self.out_features, dtype=dtype)
        return [(self.out_features,)]

    def init_params(self, rng):
        values = structured.initial_generators(self.structure, self.n, self.rank,
                                               self.in_features, rng.standard_normal)
        for key, value in values.items():
            self.params[key][...] = value
        if self.bias:
            self.params["bias"][...] = 0

    def dense_weight(self):
        """W[:out, :in] as a dense (out, in) array (a new array)."""
        return structured.structured_dense(self.structure, self.params, self.out_features,
                                           self.in_features)

    def forward(self, xs, ctx):
        x = merge.flatten_forward(xs[0])
        y, saved = structured.structured_forward(self.structure, x, self.params,
                                                 self.out_features)
        if ctx.keep:
            self._saved = saved
        if self.bias:
            y += self.params["bias"]
        return [y]

    def backward(self, dys, ctx):
        dy = np.ascontiguousarray(dys[0])
        dx, grads = structured.structured_backward(
            self.structure, dy, self._saved, self.params, self.in_features,
            need_input=ctx.input_grad, need_weight=ctx.param_grads)
        if ctx.param_grads:
            self.grads = dict(grads)
            if self.bias:
                self.grads["bias"] = dy.sum(axis=0).astype(dy.dtype)
        return [None if dx is None else dx.reshape((dx.shape[0],) + self.in_shapes[0])]


def _leading(in_shapes):
    """The size of the first input's first axis (its channels), 0 if it has none."""
    return int(in_shapes[0][0]) if in_shapes and len(in_shapes[0]) else 0


def _channels(shape, at):
    """C of a per-example input shape (C,) or (C, H, W)."""
    if len(shape) not in (1, 3):
        raise ValueError(f"{at}: input must be (C,) or (C, H, W) per example, got {shape}")
    return shape[0]


class BatchNorm(Layer):
    """Batch norm (Ioffe & Szegedy 2015) with running mean/var buffers and an optional affine
    (γ, β: Caffe's Scale, trainable).

    Eval mode normalises with the running statistics. Train mode (``ctx.train``, as ``fit``
    sets it) normalises with the batch's per-channel mean and biased variance (over N and the
    spatial axes), back-propagates through them, and updates the running statistics in place:
    running ← momentum · running + (1 − momentum) · batch value, the variance unbiased (torch,
    Caffe). ``momentum`` is the weight of the old value, as Keras' and Caffe's
    ``moving_average_fraction``; the default 0.9 is torch's (its momentum 0.1 = 1 − 0.9).

    ``use_global_stats=True`` (Caffe's name) keeps the running statistics frozen in train mode
    too: a per-channel affine map whose γ, β still train (fine-tuning imported models).
    """

    type = "BatchNorm"

    def __init__(self, name, eps=1e-5, affine=True, momentum=0.9, use_global_stats=False, **kw):
        super().__init__(name, **kw)
        self.eps = float(eps)
        self.affine = bool(affine)
        self.momentum = float(momentum)
        self.use_global_stats = bool(use_global_stats)
        if not (np.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"{self.at}: eps must be finite and >= 0, got {eps!r}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"{self.at}: momentum must be in [0, 1], got {momentum!r}")

    def _config(self):
        return dict(eps=self.eps, affine=self.affine, momentum=self.momentum,
                    use_global_stats=self.use_global_stats)

    def param_values(self, in_shapes):
        return _leading(in_shapes) * (4 if self.affine else 2)

    def _setup(self, in_shapes, dtype):
        C = _channels(in_shapes[0], self.at)
        self.buffers["mean"] = np.zeros(C, dtype=dtype)
        self.buffers["var"] = np.ones(C, dtype=dtype)
        if self.affine:
            self.params["gamma"] = np.ones(C, dtype=dtype)
            self.params["beta"] = np.zeros(C, dtype=dtype)
        return in_shapes

    def _coefficients(self):
        return norm.batch_norm_coefficients(self.buffers["mean"], self.buffers["var"],
                                            self.params.get("gamma"), self.params.get("beta"),
                                            self.eps)

    def _affine(self, C, dtype):
        if self.affine:
            return self.params["gamma"], self.params["beta"]
        return np.ones(C, dtype), np.zeros(C, dtype)

    def forward(self, xs, ctx):
        x = xs[0]
        if ctx.train and not self.use_global_stats:
            return [self._forward_batch(x, ctx)]
        if ctx.keep:
            self._saved = (x, None)
        a, b = self._coefficients()
        y = np.empty(x.shape, x.dtype)
        flat = norm.flat_nchw(x.shape)
        norm.channel_affine_nchw(x.reshape(flat), a, b, y.reshape(flat))
        return [y]

    def _forward_batch(self, x, ctx):
        """Train mode: normalise with the batch statistics, update the running ones."""
        if self.eps <= 0:
            raise ValueError(f"{self.at}: eps must be > 0 to normalise with batch statistics "
                             f"(a constant channel has variance 0), got {self.eps}")
        x = np.ascontiguousarray(x)
        gamma, beta = self._affine(x.shape[1], x.dtype)
        y, mean, var = norm.batch_norm_train_forward_dense(x, gamma, beta, self.eps)
        norm.batch_norm_update_running(self.buffers["mean"], self.buffers["var"], mean, var,
                                       x.size // max(x.shape[1], 1), self.momentum)
        if ctx.keep:
            self._saved = (x, (mean, var))
        return y

    def backward(self, dys, ctx):
        dy = dys[0]
        x, batch_stats = self._saved
        if batch_stats is not None:  # train mode: through the batch statistics
            gamma, _ = self._affine(x.shape[1], x.dtype)
            dx, dgamma, dbeta = norm.batch_norm_train_backward_dense(
                dy, x, *batch_stats, gamma, self.eps, need_input=ctx.input_grad)
            if ctx.param_grads and self.affine:
                self.grads["gamma"], self.grads["beta"] = dgamma, dbeta
            return [dx]
        flat = norm.flat_nchw(dy.shape)
        dx = None
        if ctx.input_grad:
            a, _ = self._coefficients()
            dx = np.empty(dy.shape, dy.dtype)
            norm.channel_affine_nchw(dy.reshape(flat), a, np.zeros_like(a), dx.reshape(flat))
        if ctx.param_grads and self.affine:
            inv_std = (1.0 / np.sqrt(self.buffers["var"] + self.eps)).astype(dy.dtype)
            xhat = (x.reshape(flat) - self.buffers["mean"][:, None]) * inv_std[:, None]
            self.grads["gamma"] = (dy.reshape(flat) * xhat).sum(axis=(0, 2))
            self.grads["beta"] = dy.reshape(flat).sum(axis=(0, 2))
        return [dx]


# ---------------------------------------------------------------------------------------------
# Layers without weights


class _Pool(Layer):
    type = "Pooling"

    def __init__(self, name, kernel, stride=None, padding=0, ceil_mode=True, **kw):
        super().__init__(name, **kw)
        self.kernel = pair(kernel, "kernel", self.at, minimum=1)
        self.stride = self.kernel if stride is None else pair(stride, "stride", self.at, minimum=1)
        self.padding = pair(padding, "padding", self.at)
        self.ceil_mode = bool(ceil_mode)

    def _config(self):
        return dict(kernel=list(self.kernel), stride=list(self.stride),
                    padding=list(self.padding), ceil_mode=self.ceil_mode)

    def _setup(self, in_shapes, dtype):
        _, _, _, out = pool.pool2d_geometry(in_shapes[0], self.kernel, self.stride, self.padding,
                                            self.ceil_mode, at=self.at)
        return [out]

    def _args(self):
        return self.kernel + self.stride + self.padding


class MaxPool2d(_Pool):
    def forward(self, xs, ctx):
        x = xs[0]
        out = (x.shape[0],) + self.out_shapes[0]
        y = np.empty(out, dtype=x.dtype)
        if not ctx.keep:  # no backward will read the argmax
            pool.max_pool2d_values(x, *self._args(), y)
            return [y]
        argmax = np.empty(out, dtype=np.int64)
        pool.max_pool2d_nchw(x, *self._args(), y, argmax)
        self._saved = argmax
        return [y]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None]
        dx = np.zeros((dys[0].shape[0],) + self.in_shapes[0], dtype=dys[0].dtype)
        pool.max_pool2d_backward_nchw(dys[0], self._saved, dx)
        return [dx]


class AvgPool2d(_Pool):
    """Caffe's average pooling (the padding counts as zeros), or with ``count_pad=False`` the
    mean of each window's cells inside the input (TensorFlow/Keras 'same' pooling)."""

    def __init__(self, name, kernel, stride=None, padding=0, ceil_mode=True, count_pad=True,
                 **kw):
        super().__init__(name, kernel, stride, padding, ceil_mode, **kw)
        self.count_pad = bool(count_pad)

    def _config(self):
        cfg = super()._config()
        if not self.count_pad:  # (absent from the specs of Caffe-style pools)
            cfg["count_pad"] = False
        return cfg

    def forward(self, xs, ctx):
        x = xs[0]
        y = np.empty((x.shape[0],) + self.out_shapes[0], dtype=x.dtype)
        pool.avg_pool2d_forward_nchw(x, *self._args(), self.count_pad, y)
        return [y]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None]
        dx = np.zeros((dys[0].shape[0],) + self.in_shapes[0], dtype=dys[0].dtype)
        pool.avg_pool2d_backward_nchw(dys[0], *self._args(), self.count_pad, dx)
        return [dx]


class GlobalAvgPool2d(Layer):
    type = "Pooling"

    def _setup(self, in_shapes, dtype):
        if len(in_shapes[0]) != 3:
            raise ValueError(f"{self.at}: input must be (C, H, W) per example, got {in_shapes[0]}")
        return [(in_shapes[0][0], 1, 1)]

    def forward(self, xs, ctx):
        return [xs[0].mean(axis=(2, 3), keepdims=True)]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None]
        C, H, W = self.in_shapes[0]
        dy = dys[0] / (H * W)
        return [np.ascontiguousarray(np.broadcast_to(dy, (dy.shape[0], C, H, W)))]


class _Elementwise(Layer):
    """An elementwise layer run by a pair of flat kernels: ``_forward(x, y)`` fills y from x,
    ``_backward(dy, saved, dx)`` fills dx, where ``saved`` is the layer's output, or its input
    when ``saves_input`` (what the derivative is written in)."""

    saves_input = False

    def forward(self, xs, ctx):
        y = np.empty(xs[0].shape, xs[0].dtype)
        self._forward(xs[0].reshape(-1), y.reshape(-1))
        if ctx.keep:
            self._saved = xs[0] if self.saves_input else y
        return [y]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None]
        dx = np.empty(dys[0].shape, dys[0].dtype)
        self._backward(dys[0].reshape(-1), self._saved.reshape(-1), dx.reshape(-1))
        return [dx]


class ReLU(_Elementwise):
    type = "ReLU"

    def __init__(self, name, negative_slope=0.0, **kw):
        super().__init__(name, **kw)
        self.negative_slope = float(negative_slope)
        if not (np.isfinite(self.negative_slope) and self.negative_slope >= 0):
            raise ValueError(f"{self.at}: negative_slope must be finite and >= 0, got {negative_slope!r}")

    def _config(self):
        return dict(negative_slope=self.negative_slope)

    def _forward(self, x, y):
        activation.relu_forward_flat(x, self.negative_slope, y)

    def _backward(self, dy, saved, dx):
        activation.relu_backward_flat(dy, saved, self.negative_slope, dx)


class ReLU6(_Elementwise):
    type = "ReLU6"

    def _forward(self, x, y):
        activation.relu6_forward_flat(x, y)

    def _backward(self, dy, saved, dx):
        activation.relu6_backward_flat(dy, saved, dx)


class QuantizedReLU(_Elementwise):
    """A clipped ReLU followed by a k-level uniform quantiser, as in low-precision nets:
    y = s · round(clip(x, 0, max_value) / s) with s = max_value / (2**bits − 1).

    Its true gradient is zero almost everywhere: a gradient attack through it sees nothing
    (gradient masking, Athalye, Carlini & Wagner 2018). With ``straight_through`` set, the
    backward pass uses the clipped ReLU's gradient instead (the straight-through estimator;
    BPDA with g(x) = clip(x, 0, max_value)); the forward pass is the same either way.
    ``attacks.bpda(net)`` sets it on every such layer while attacking.
    """

    type = "QuantizedReLU"
    saves_input = True

    def __init__(self, name, bits=8, max_value=6.0, straight_through=False, **kw):
        super().__init__(name, **kw)
        activation.check_quantizer(bits, max_value, self.at)
        self.bits = int(bits)
        self.max_value = float(max_value)
        self.straight_through = bool(straight_through)

    def _config(self):
        return dict(bits=self.bits, max_value=self.max_value,
                    straight_through=self.straight_through)

    def _forward(self, x, y):
        levels, top = activation.check_quantizer(self.bits, self.max_value, self.at)
        activation.quantized_relu_forward_flat(x, levels, top, y)

    def _backward(self, dy, saved, dx):
        activation.quantized_relu_backward_flat(dy, saved, self.max_value,
                                                bool(self.straight_through), dx)


class MedianFilter(Layer):
    """Median of each channel over k×k windows (feature squeezing's median smoothing, Xu et al.
    2018), with SciPy's borders and window anchoring (``engine/median.py``). The gradient goes
    to the pixel each output took its value from."""

    type = "MedianFilter"

    def __init__(self, name, size=2, **kw):
        super().__init__(name, **kw)
        self.size = median.check_median_size(size, self.at)

    def _config(self):
        return dict(size=self.size)

    def _setup(self, in_shapes, dtype):
        if len(in_shapes[0]) != 3:
            raise ValueError(f"{self.at}: input must be (C, H, W) per example, got {in_shapes[0]}")
        return in_shapes

    def forward(self, xs, ctx):
        x = np.ascontiguousarray(xs[0])
        y = np.empty_like(x)
        source = np.empty(x.shape, np.int64)
        median.median_filter_forward_nchw(x, self.size, y, source)
        if ctx.keep:
            self._saved = source
        return [y]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None]
        dx = np.zeros(dys[0].shape, dys[0].dtype)
        median.median_filter_backward_nchw(dys[0], self._saved, dx)
        return [dx]


class QuantizeActivation(Layer):
    """The activation quantizer of quantized nets: y = clip(round(x / step), lo, hi), the integer
    codes of a uniform ``bits``-bit quantizer — unsigned 0..2**bits − 1 (uint8 for 8 bits),
    signed symmetric ±(2**(bits − 1) − 1) (int8: ±127), or binary sign(x) = ±1 (signed, one
    bit; Hubara et al.'s binarized activations).

    The next layer sees codes, not levels: its weight absorbs the step (an int8 or binary
    weight format then computes on them with integer kernels, see ``engine/quantized.py``).
    Like ``QuantizedReLU`` its true gradient is zero almost everywhere; ``straight_through``
    makes the backward pass use the clipped identity's, dx = dy / step inside the codes' range
    (the straight-through estimator of quantization-aware training; ``attacks.bpda`` sets it
    while attacking).
    """

    type = "QuantizeActivation"

    def __init__(self, name, bits=8, step=1.0, signed=False, straight_through=False, **kw):
        super().__init__(name, **kw)
        self.lo, self.hi = activation.quantizer_levels(bits, bool(signed), step, self.at)
        self.bits, self.signed, self.step = int(bits), bool(signed), float(step)
        self.straight_through = bool(straight_through)

    def _config(self):
        return dict(bits=self.bits, step=self.step, signed=self.signed,
                    straight_through=self.straight_through)

    @property
    def binary(self):
        return self.signed and self.bits == 1

    def forward(self, xs, ctx):
        y = np.empty(xs[0].shape, xs[0].dtype)
        activation.quantize_forward_flat(xs[0].reshape(-1), self.step, float(self.lo),
                                         float(self.hi), self.binary, y.reshape(-1))
        if ctx.keep:
            self._saved = xs[0]
        return [y]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None]
        dx = np.empty(dys[0].shape, dys[0].dtype)
        activation.quantize_backward_flat(dys[0].reshape(-1), self._saved.reshape(-1), self.step,
                                          float(self.lo), float(self.hi),
                                          bool(self.straight_through), dx.reshape(-1))
        return [dx]


class LRN(Layer):
    type = "LRN"

    def __init__(self, name, local_size=5, alpha=1e-4, beta=0.75, k=1.0, **kw):
        super().__init__(name, **kw)
        self.local_size, self.alpha, self.beta, self.k = norm.lrn_check(local_size, alpha, beta,
                                                                         k, self.at)

    def _config(self):
        return dict(local_size=self.local_size, alpha=self.alpha, beta=self.beta, k=self.k)

    def _setup(self, in_shapes, dtype):
        if len(in_shapes[0]) != 3:
            raise ValueError(f"{self.at}: input must be (C, H, W) per example, got {in_shapes[0]}")
        return in_shapes

    def forward(self, xs, ctx):
        y, scale = norm.lrn_forward_dense(xs[0], self.local_size, self.alpha, self.beta, self.k)
        if ctx.keep:
            self._saved = (xs[0], y, scale)
        return [y]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None]
        x, y, scale = self._saved
        return [norm.lrn_backward_dense(dys[0], x, y, scale, self.local_size, self.alpha, self.beta)]


class LRNWithin(Layer):
    """Local response normalisation within each channel over local_size × local_size windows
    (Caffe's ``norm_region: WITHIN_CHANNEL``; no k: Caffe adds 1)."""

    type = "LRN"

    def __init__(self, name, local_size=3, alpha=5e-5, beta=0.75, **kw):
        super().__init__(name, **kw)
        self.local_size, self.alpha, self.beta = norm.lrn_within_check(local_size, alpha, beta,
                                                                       self.at)

    def _config(self):
        return dict(local_size=self.local_size, alpha=self.alpha, beta=self.beta)

    def _setup(self, in_shapes, dtype):
        if len(in_shapes[0]) != 3:
            raise ValueError(f"{self.at}: input must be (C, H, W) per example, got {in_shapes[0]}")
        return in_shapes

    def forward(self, xs, ctx):
        y, scale = norm.lrn_within_forward_dense(xs[0], self.local_size, self.alpha, self.beta)
        if ctx.keep:
            self._saved = (xs[0], y, scale)
        return [y]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None]
        x, y, scale = self._saved
        return [norm.lrn_within_backward_dense(dys[0], x, y, scale, self.local_size, self.alpha,
                                               self.beta)]


class Dropout(Layer):
    type = "Dropout"

    def __init__(self, name, p=0.5, **kw):
        super().__init__(name, **kw)
        self.p = check_ratio(p, self.at)

    def _config(self):
        return dict(p=self.p)

    def forward(self, xs, ctx):
        if not ctx.train or self.p == 0:
            if ctx.keep:
                self._saved = None
            return [xs[0]]
        mask = dropout_mask(xs[0].shape, self.p, ctx.rng, xs[0].dtype)
        if ctx.keep:
            self._saved = mask
        return [xs[0] * mask]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None]
        return [dys[0] if self._saved is None else dys[0] * self._saved]


class Flatten(Layer):
    type = "Flatten"

    def _setup(self, in_shapes, dtype):
        return [(int(np.prod(in_shapes[0])),)]

    def forward(self, xs, ctx):
        return [merge.flatten_forward(xs[0])]

    def backward(self, dys, ctx):
        return [None if not ctx.input_grad else dys[0].reshape((dys[0].shape[0],) + self.in_shapes[0])]


class Softmax(Layer):
    """Probabilities over axis 1: for (K,) or (K, 1, 1) per example one distribution, for
    (K, H, W) one at every position (Caffe's Softmax on a fully convolutional net's map, as
    MTCNN's P-Net has it); attacks want the logits before it."""

    type = "Softmax"

    def _setup(self, in_shapes, dtype):
        shape = in_shapes[0]
        if len(shape) not in (1, 3):
            raise ValueError(f"{self.at}: input must be (K,) or (K, H, W) per example, got {shape}")
        return in_shapes

    @staticmethod
    def _rows(a):
        """(N, K, …) → (N · positions, K) rows, a copy with the class axis last."""
        K = a.shape[1]
        return np.ascontiguousarray(np.moveaxis(a, 1, -1)).reshape(-1, K)

    def _unrows(self, rows, shape):
        moved = (shape[0],) + shape[2:] + (shape[1],)
        return np.ascontiguousarray(np.moveaxis(rows.reshape(moved), -1, 1))

    def forward(self, xs, ctx):
        x = xs[0]
        z = self._rows(x)
        p = np.empty(z.shape, x.dtype)
        if len(z):
            loss.softmax_rows(z, p)
        if ctx.keep:
            self._saved = p
        return [self._unrows(p, x.shape)]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None]
        p = self._saved
        dy = self._rows(dys[0])  # dx = p ⊙ (dy − Σ_k dy ⊙ p), per row
        return [self._unrows(p * (dy - (dy * p).sum(axis=1, keepdims=True)), dys[0].shape)]


class Concat(Layer):
    type = "Concat"
    n_inputs = None

    def __init__(self, name, axis=1, **kw):
        super().__init__(name, **kw)
        self.axis = int(axis)
        if self.axis < 1:
            raise ValueError(f"{self.at}: axis must be >= 1 (axis 0 is the batch), got {axis}")

    def _config(self):
        return dict(axis=self.axis)

    def _setup(self, in_shapes, dtype):
        a = self.axis - 1
        first = in_shapes[0]
        for i, s in enumerate(in_shapes):
            if len(s) != len(first) or a >= len(s) or \
                    any(p != q for d, (p, q) in enumerate(zip(s, first)) if d != a):
                raise ValueError(f"{self.at}: input {i} shape {s} does not match input 0 shape "
                                 f"{first} outside axis {self.axis}")
        out = list(first)
        out[a] = sum(s[a] for s in in_shapes)
        return [tuple(out)]

    def forward(self, xs, ctx):
        return [np.concatenate(xs, axis=self.axis)]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None] * len(self.in_shapes)
        return merge.concat_backward(dys[0], [s[self.axis - 1] for s in self.in_shapes], self.axis)


class EltwiseSum(Layer):
    type = "Eltwise"
    n_inputs = None

    def __init__(self, name, coeffs=None, **kw):
        super().__init__(name, **kw)
        self.coeffs = None if coeffs is None else [float(c) for c in coeffs]

    def _config(self):
        return dict(coeffs=self.coeffs)

    def _setup(self, in_shapes, dtype):
        for i, s in enumerate(in_shapes):
            if s != in_shapes[0]:
                raise ValueError(f"{self.at}: input {i} shape {s} does not match input 0 shape {in_shapes[0]}")
        if self.coeffs is not None and len(self.coeffs) != len(in_shapes):
            raise ValueError(f"{self.at}: {len(self.coeffs)} coefficients for {len(in_shapes)} inputs")
        return [in_shapes[0]]

    def _coeffs(self):
        return self.coeffs or [1.0] * len(self.in_shapes)

    def forward(self, xs, ctx):
        c = self._coeffs()
        y = xs[0] * xs[0].dtype.type(c[0])
        for ci, x in zip(c[1:], xs[1:]):
            y += x.dtype.type(ci) * x
        return [y]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None] * len(self.in_shapes)
        return merge.eltwise_sum_backward(dys[0], self._coeffs())


class Scale(Layer):
    """Caffe's Scale: a learned factor per channel (axis 1), and a bias with ``bias_term``;
    after a BatchNorm it is the batch norm's affine."""

    type = "Scale"

    def __init__(self, name, bias=False, **kw):
        super().__init__(name, **kw)
        self.bias = bool(bias)

    def _config(self):
        return dict(bias=self.bias)

    def param_values(self, in_shapes):
        return _leading(in_shapes) * (2 if self.bias else 1)

    def _setup(self, in_shapes, dtype):
        if len(in_shapes[0]) < 1:
            raise ValueError(f"{self.at}: input must have a channel axis, got {in_shapes[0]}")
        C = in_shapes[0][0]
        self.params["weight"] = np.ones(C, dtype=dtype)
        if self.bias:
            self.params["bias"] = np.zeros(C, dtype=dtype)
        return in_shapes

    def forward(self, xs, ctx):
        x = xs[0]
        if ctx.keep:
            self._saved = x
        gamma = self.params["weight"]
        beta = self.params.get("bias", np.zeros_like(gamma))
        y = np.empty(x.shape, x.dtype)
        flat = norm.flat_nchw(x.shape)
        norm.channel_affine_nchw(x.reshape(flat), gamma, beta, y.reshape(flat))
        return [y]

    def backward(self, dys, ctx):
        dx, dgamma, dbeta = norm.scale_backward_dense(dys[0], self._saved, self.params["weight"],
                                                      ctx.input_grad, ctx.param_grads)
        if ctx.param_grads:
            self.grads = {"weight": dgamma}
            if self.bias:
                self.grads["bias"] = dbeta
        return [dx]


class Preprocess(Layer):
    """A model's preprocessing in the graph (``engine.preprocess``): the channels put in
    ``order`` (RGB → BGR), then an affine map per channel, y[:, c] = x[:, order[c]] · scale[c]
    + shift[c]. Nothing trains; ``net.with_preprocessing()`` puts one in front of a net so that
    it takes images in image units."""

    type = "Preprocess"

    def __init__(self, name, order, scale, shift, **kw):
        super().__init__(name, **kw)
        self.order = [int(i) for i in order]
        self.scale = [float(v) for v in scale]
        self.shift = [float(v) for v in shift]
        C = len(self.order)
        if sorted(self.order) != list(range(C)) or len(self.scale) != C or len(self.shift) != C:
            raise ValueError(f"{self.at}: order must be a permutation of the channels, with one "
                             f"scale and shift per channel; got {order}, {scale}, {shift}")
        if not all(np.isfinite(v) for v in self.scale + self.shift):
            raise ValueError(f"{self.at}: scale and shift must be finite")

    def _config(self):
        return dict(order=list(self.order), scale=list(self.scale), shift=list(self.shift))

    def _setup(self, in_shapes, dtype):
        if _channels(in_shapes[0], self.at) != len(self.order):
            raise ValueError(f"{self.at}: made for {len(self.order)} channels, the input has "
                             f"{in_shapes[0][0]}")
        self._a = np.asarray(self.scale, dtype=dtype)
        self._b = np.asarray(self.shift, dtype=dtype)
        return in_shapes

    def forward(self, xs, ctx):
        x = np.ascontiguousarray(xs[0][:, self.order])
        y = np.empty(x.shape, x.dtype)
        flat = norm.flat_nchw(x.shape)
        norm.channel_affine_nchw(x.reshape(flat), self._a, self._b, y.reshape(flat))
        return [y]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None]
        dy = dys[0]
        dxp = np.empty(dy.shape, dy.dtype)
        flat = norm.flat_nchw(dy.shape)
        norm.channel_affine_nchw(dy.reshape(flat), self._a, np.zeros_like(self._a),
                                 dxp.reshape(flat))
        dx = np.empty_like(dxp)
        dx[:, self.order] = dxp  # dx[:, order[c]] = dy[:, c] · scale[c]
        return [dx]


class PReLU(Layer):
    """Parametric ReLU: a learned negative slope per channel, or one for all channels with
    ``channel_shared`` (Caffe's PReLU; initial slope 0.25 as in Caffe and He et al.)."""

    type = "PReLU"

    def __init__(self, name, channel_shared=False, init=0.25, **kw):
        super().__init__(name, **kw)
        self.channel_shared = bool(channel_shared)
        self.init = float(init)

    def _config(self):
        return dict(channel_shared=self.channel_shared, init=self.init)

    def param_values(self, in_shapes):
        return 1 if self.channel_shared else _leading(in_shapes)

    def _setup(self, in_shapes, dtype):
        n = 1 if self.channel_shared else _channels(in_shapes[0], self.at)
        self.params["slope"] = np.full(n, self.init, dtype=dtype)
        return in_shapes

    def init_params(self, rng):
        self.params["slope"][...] = self.init

    def forward(self, xs, ctx):
        x = xs[0]
        if ctx.keep:
            self._saved = x
        y = np.empty(x.shape, x.dtype)
        flat = prelu.prelu_shape(x.shape)
        prelu.prelu_forward_ncp(x.reshape(flat), self.params["slope"], y.reshape(flat))
        return [y]

    def backward(self, dys, ctx):
        dy, x = dys[0], self._saved
        flat = prelu.prelu_shape(x.shape)
        dx = np.empty(x.shape, x.dtype) if ctx.input_grad else np.empty((0, 0, 0), x.dtype)
        dslope = np.zeros(x.shape[1], dtype=x.dtype)
        prelu.prelu_backward_ncp(dy.reshape(flat), x.reshape(flat), self.params["slope"],
                                 ctx.input_grad, dx.reshape(flat) if ctx.input_grad else dx,
                                 dslope)
        if ctx.param_grads:
            self.grads = {"slope": dslope.sum(keepdims=True) if self.channel_shared else dslope}
        return [dx if ctx.input_grad else None]


class _EltwiseSameShapes(Layer):
    type = "Eltwise"
    n_inputs = None

    def _setup(self, in_shapes, dtype):
        for i, s in enumerate(in_shapes):
            if s != in_shapes[0]:
                raise ValueError(f"{self.at}: input {i} shape {s} does not match input 0 shape {in_shapes[0]}")
        return [in_shapes[0]]


class EltwiseProd(_EltwiseSameShapes):
    """Caffe's Eltwise PROD: the elementwise product of the inputs."""

    def forward(self, xs, ctx):
        if ctx.keep:
            self._saved = list(xs)
        y = xs[0].copy()
        for x in xs[1:]:
            y *= x
        return [y]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None] * len(self.in_shapes)
        return merge.eltwise_prod_backward(dys[0], self._saved)


class EltwiseMax(_EltwiseSameShapes):
    """Caffe's Eltwise MAX: the elementwise maximum; the gradient goes to the first input
    holding it."""

    def forward(self, xs, ctx):
        y, argmax = merge.eltwise_max_dense(xs)
        if ctx.keep:
            self._saved = argmax
        return [y]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None] * len(self.in_shapes)
        return merge.eltwise_max_backward(dys[0], self._saved, len(self.in_shapes))


class Reshape(Layer):
    """A new per-example shape for the same values (one entry may be -1, inferred)."""

    type = "Reshape"

    def __init__(self, name, shape, **kw):
        super().__init__(name, **kw)
        self.shape = tuple(int(s) for s in shape)

    def _config(self):
        return dict(shape=list(self.shape))

    def _setup(self, in_shapes, dtype):
        return [merge.reshape_target(in_shapes[0], self.shape, self.at)]

    def forward(self, xs, ctx):
        return [xs[0].reshape((xs[0].shape[0],) + self.out_shapes[0])]

    def backward(self, dys, ctx):
        if not ctx.input_grad:
            return [None]
        return [np.ascontiguousarray(dys[0].reshape((dys[0].shape[0],) + self.in_shapes[0]))]


class Pad2d(Layer):
    """Zero padding of (C, H, W), possibly uneven: ((top, bottom), (left, right))."""

    type = "Pad2d"

    def __init__(self, name, padding, **kw):
        super().__init__(name, **kw)
        self.padding = merge.check_pad2d(padding, self.at)

    def _config(self):
        return dict(padding=[list(p) for p in self.padding])

    def _setup(self, in_shapes, dtype):
        if len(in_shapes[0]) != 3:
            raise ValueError(f"{self.at}: input must be (C, H, W) per example, got {in_shapes[0]}")
        (t, b), (l, r) = self.padding
        C, H, W = in_shapes[0]
        return [(C, H + t + b, W + l + r)]

    def forward(self, xs, ctx):
        (t, b), (l, r) = self.padding
        return [np.pad(xs[0], ((0, 0), (0, 0), (t, b), (l, r)))]

    def backward(self, dys, ctx):
        return [merge.pad2d_backward(dys[0], self.padding) if ctx.input_grad else None]


class Permute(Layer):
    """The per-example axes in a new order, e.g. (1, 2, 0): (C, H, W) → (H, W, C), as Keras
    lays out a channels-last blob before Flatten or Reshape."""

    type = "Permute"

    def __init__(self, name, axes, **kw):
        super().__init__(name, **kw)
        self.axes = tuple(int(a) for a in axes)

    def _config(self):
        return dict(axes=list(self.axes))

    def _setup(self, in_shapes, dtype):
        merge.check_permutation(self.axes, len(in_shapes[0]), self.at)
        return [tuple(in_shapes[0][a] for a in self.axes)]

    def forward(self, xs, ctx):
        return [np.ascontiguousarray(xs[0].transpose((0,) + tuple(a + 1 for a in self.axes)))]

    def backward(self, dys, ctx):
        return [merge.permute_backward(dys[0], self.axes) if ctx.input_grad else None]


class Sigmoid(_Elementwise):
    """The logistic sigmoid 1 / (1 + e^−x), elementwise."""

    type = "Sigmoid"

    def _forward(self, x, y):
        sigmoid.sigmoid_forward_flat(x, y)

    def _backward(self, dy, saved, dx):
        sigmoid.sigmoid_backward_flat(dy, saved, dx)


class HardSigmoid(_Elementwise):
    """max(0, min(1, alpha · x + beta)), elementwise (ONNX's HardSigmoid; torch's
    Hardsigmoid is alpha = 1/6, beta = 1/2)."""

    type = "HardSigmoid"
    saves_input = True

    def __init__(self, name, alpha=0.2, beta=0.5, **kw):
        super().__init__(name, **kw)
        self.alpha, self.beta = sigmoid.check_hard_sigmoid(alpha, beta, self.at)

    def _config(self):
        return dict(alpha=self.alpha, beta=self.beta)

    def _forward(self, x, y):
        sigmoid.hard_sigmoid_forward_flat(x, self.alpha, self.beta, y)

    def _backward(self, dy, saved, dx):
        sigmoid.hard_sigmoid_backward_flat(dy, saved, self.alpha, self.beta, dx)


class HardSwish(_Elementwise):
    """x · max(0, min(1, x/6 + 1/2)), elementwise (MobileNetV3's activation)."""

    type = "HardSwish"
    saves_input = True

    def _forward(self, x, y):
        sigmoid.hard_swish_forward_flat(x, y)

    def _backward(self, dy, saved, dx):
        sigmoid.hard_swish_backward_flat(dy, saved, dx)


# Every layer class by its spec name, to rebuild a Net from JSON without evaluating anything.
LAYER_CLASSES = {cls.__name__: cls for cls in (
    Conv2d, Linear, BatchNorm, MaxPool2d, AvgPool2d, GlobalAvgPool2d, ReLU, ReLU6, QuantizedReLU,
    QuantizeActivation, LRN, Dropout, Flatten, Softmax, Concat, EltwiseSum, Scale, PReLU,
    EltwiseProd, EltwiseMax, Reshape, Pad2d, Permute, LRNWithin, Sigmoid, HardSigmoid, HardSwish,
    Preprocess, MedianFilter, StructuredLinear)}


def layer_from_config(cfg):
    """Build a layer from ``config()`` output (with ``class`` naming the Python class)."""
    cfg = dict(cfg)
    cls_name = cfg.pop("class", None)
    cfg.pop("type", None)
    if cls_name not in LAYER_CLASSES:
        raise ValueError(f"unknown layer class {cls_name!r} in spec; known: {sorted(LAYER_CLASSES)}")
    name = cfg.pop("name")
    return LAYER_CLASSES[cls_name](name, **cfg)
