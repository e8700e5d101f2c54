"""Net: a DAG of named layers over named blobs, as in Caffe, with forward and backward passes.

Each layer names its input blobs (``bottom``, default: the previous layer's first output) and its
output blobs (``top``, default: the layer's name). A layer may write the blob it reads (Caffe's
in-place ReLU/Dropout): internally every write makes a new version of the blob, so the backward
pass still sees each value it needs.

    net = Net([Conv2d("conv1", 20, kernel=5), MaxPool2d("pool1", 2, 2), ...], input_shape=(1, 28, 28))
    logits = net.forward(x)                           # eval mode unless net.train() was called
    loss, dx = net.loss_and_input_grad(x, labels)     # what attacks call: no weight gradients
    loss, logits = net.loss_and_grad(x, labels)       # what training calls: fills net.grads
    for step in net.run_layers(x):                    # layer by layer: step.layer, step.outputs
        ...

Blobs are known by name: ``net.blob_shape(name)``, ``net.producer(name)`` (the layer writing a
blob), ``net.logits_blob()`` (the blob the loss reads). Nothing outside the engine reads the
Net's private attributes; what a caller needs is one of these public methods.

A net may have several named outputs (``net.outputs``; ``net.forward(x, output=["prob1",
"conv4-2"])``), and the loss and every attack work on any of them through
``net.with_output(name)``, a view sharing the layers. A net whose layers do not fix the input's
size (a fully convolutional one) runs at another size through ``net.at_input_shape(shape)``,
which plans the same layers and weights anew. ``net.bounds`` and ``net.preprocessing`` say what
its images are (``engine.preprocess``); ``net.with_preprocessing()`` takes images in image units.
"""

import copy
import json
from collections import defaultdict

import numpy as np

from ..limits import RAISE_HINT
from ._args import FLOAT_DTYPES, labels_array, nonfinite
from .layers import Context, Layer, Preprocess, Softmax, layer_from_config
from .loss import softmax_cross_entropy_rows
from .preprocess import affine, check_bounds, check_preprocessing, input_bounds

SPEC_FORMAT = "robustcnn-net"
SPEC_VERSION = 1


class LayerStep:
    """One layer's turn in ``Net.run_layers``: the ``layer``, the names of the blobs it reads and
    writes (``bottoms``, ``tops``: tuples) and their values (``inputs``, ``outputs``: lists of
    arrays). Unpacks as ``layer, outputs``. The run goes on from ``outputs``, whose entries the
    caller may replace."""

    __slots__ = ("layer", "bottoms", "tops", "inputs", "outputs", "_ctx")

    def __init__(self, layer, bottoms, tops, inputs, outputs, ctx):
        self.layer, self.bottoms, self.tops = layer, bottoms, tops
        self.inputs, self.outputs, self._ctx = inputs, outputs, ctx

    def rerun(self):
        """Run the layer again on its inputs (after a change to its parameters) → its new
        outputs, which the run goes on from. In train mode this draws another dropout mask and
        updates a batch norm's running averages a second time."""
        self.outputs[:] = self.layer.forward(self.inputs, self._ctx)
        return self.outputs

    def __iter__(self):
        return iter((self.layer, self.outputs))

    def __repr__(self):
        return f"LayerStep({self.layer.at}: {', '.join(self.bottoms)} → {', '.join(self.tops)})"


class Net:
    """A network of layers; see the module docstring.

    Parameters
    ----------
    layers : list of Layer, in an order where every layer comes after the layers feeding it.
    input_shape : per-example input shape, e.g. (1, 28, 28).
    input_name : name of the input blob.
    output : name of the output blob (default: the last layer's first top). If the layer that
        writes it is a Softmax, the loss functions use the Softmax's input as the logits.
    outputs : names of further output blobs (a detector's box head beside its class head):
        ``net.outputs`` is ``output`` and these; ``forward(x, output=name)`` returns any.
    dtype : float32 (default) or float64 (for gradient checks).
    seed : seeds the parameter initialisation and the dropout masks.
    preprocessing, bounds : what the net's images are (see ``engine.preprocess``).
    init : draw the initial weights (Caffe's fillers); False leaves zeros for a caller that loads
        every parameter next (``load_state_dict``), so nothing is drawn only to be replaced.
    max_bytes : refuse (ValueError) a net whose parameters and buffers (counted layer by layer
        before each is allocated) or any blob of one example take more bytes than this; None:
        no limit. The file readers pass ``robustcnn.limits``' limit.
    """

    def __init__(self, layers, input_shape, *, input_name="data", output=None, outputs=None,
                 dtype=np.float32, seed=0, name="net", preprocessing=None, bounds=None,
                 init=True, max_bytes=None):
        self.name = name
        self.dtype = np.dtype(dtype)
        if self.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}: dtype must be float32 or float64, got {self.dtype}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.input_name = input_name
        self.layers = list(layers)
        self.training = False
        self._rng = np.random.default_rng(seed)
        self._seed = seed
        self._build(output, outputs, max_bytes)
        self.preprocessing = preprocessing
        self.bounds = bounds
        init_rng = np.random.default_rng(seed)
        for layer in self.layers if init else ():
            layer.init_params(init_rng)

    # -----------------------------------------------------------------------------------------
    # Building

    def _build(self, output, outputs=None, max_bytes=None):
        seen = set()
        for layer in self.layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"{self.name}: {layer!r} is not a Layer")
            if layer.name in seen:
                raise ValueError(f"{self.name}: two layers are named {layer.name!r}")
            seen.add(layer.name)
        param_bytes, itemsize = 0, self.dtype.itemsize
        if max_bytes is not None and int(np.prod(self.input_shape, dtype=object)) * itemsize \
                > max_bytes:
            raise ValueError(f"{self.name}: an input of {self.input_shape} per example takes "
                             f"more than the limit of {max_bytes:,} bytes ({RAISE_HINT})")
        current = {self.input_name: self.input_name}  # blob name → id of its latest version
        shapes = {self.input_name: self.input_shape}
        names = {self.input_name: self.input_name}  # blob id → blob name
        self._plan = []
        previous = self.input_name
        for layer in self.layers:
            bottoms = layer.bottom or [previous]
            for b in bottoms:
                if b not in current:
                    raise ValueError(f"{layer.at}: input blob {b!r} is not made by any earlier "
                                     f"layer (known blobs: {sorted(current)})")
            in_ids = [current[b] for b in bottoms]
            if max_bytes is not None:
                param_bytes += layer.param_values([shapes[i] for i in in_ids]) * itemsize
                if param_bytes > max_bytes:
                    raise ValueError(f"{layer.at}: the net's parameters reach {param_bytes:,} "
                                     f"bytes here, more than the limit of {max_bytes:,} "
                                     f"({RAISE_HINT})")
            out_shapes = layer.setup([shapes[i] for i in in_ids], self.dtype)
            for shape in out_shapes if max_bytes is not None else ():
                if int(np.prod(shape, dtype=object)) * itemsize > max_bytes:
                    raise ValueError(f"{layer.at}: an output of {tuple(shape)} per example takes "
                                     f"more than the limit of {max_bytes:,} bytes ({RAISE_HINT})")
            tops = layer.top or [layer.name]
            if len(tops) != len(out_shapes):
                raise ValueError(f"{layer.at}: names {len(tops)} outputs but makes {len(out_shapes)}")
            out_ids = []
            for top, shape in zip(tops, out_shapes):
                blob_id = top if top not in current else f"{top}@{layer.name}"
                current[top] = blob_id
                shapes[blob_id] = shape
                names[blob_id] = top
                out_ids.append(blob_id)
            self._plan.append((layer, in_ids, out_ids))
            previous = tops[0]
        if not self._plan:
            raise ValueError(f"{self.name}: has no layers")
        self._current = current
        self._names = names
        self._producer = {o: step for step, (_, _, out_ids) in enumerate(self._plan)
                          for o in out_ids}  # blob id → the plan step writing it
        self._step_names = [(tuple(names[i] for i in in_ids), tuple(names[o] for o in out_ids))
                            for _, in_ids, out_ids in self._plan]  # (bottoms, tops) per step
        self.blob_shapes = {name: shapes[blob_id] for name, blob_id in current.items()}
        self._shapes = shapes
        self._set_outputs(output or previous, outputs)

    def _set_outputs(self, output, outputs):
        """Make ``output`` the output (and the loss's) and ``outputs`` the others kept."""
        names = list(dict.fromkeys([output] + [o for o in (outputs or ()) if o != output]))
        for o in names:
            if not isinstance(o, str) or o not in self._current:
                raise ValueError(f"{self.name}: output blob {o!r} is not made by any layer")
        self.output, self.outputs = names[0], tuple(names)
        self._output_id = self._current[self.output]
        self._logits_id = self._logits_of(self._output_id)
        kept = {self._current[o] for o in self.outputs} | {self._logits_id}
        # After which plan step each blob is read for the last time, to free it early.
        last_use = {}
        for step, (_, in_ids, _) in enumerate(self._plan):
            for i in in_ids:
                last_use[i] = step
        self._free_after = defaultdict(list)
        for blob_id, step in last_use.items():
            if blob_id not in kept:
                self._free_after[step].append(blob_id)

    def plan(self):
        """The layers in run order with the ids of the blobs each reads and writes →
        [(layer, input ids, output ids)]: the structure ``run_layers`` walks with values, for
        interpreters that walk it with something else (bound propagation in ``robustcnn.certify``).
        A blob id is the blob's name, or ``name@layer`` for the new version an in-place layer
        writes; the input's id is ``input_name``, the logits' is ``logits_id``, and
        ``blob_shape`` takes ids too."""
        return [(layer, list(in_ids), list(out_ids)) for layer, in_ids, out_ids in self._plan]

    @property
    def logits_id(self):
        """Id in ``plan`` of the blob the loss reads as logits (see ``logits_blob``)."""
        return self._logits_id

    def _logits_of(self, blob_id):
        """The blob id the loss reads as logits for output ``blob_id``: the input of the Softmax
        writing it, else the blob itself."""
        step = self._producer.get(blob_id)
        if step is not None and isinstance(self._plan[step][0], Softmax):
            return self._plan[step][1][0]
        return blob_id

    def _blob_id(self, name):
        if isinstance(name, str) and name not in self._current and name in self._shapes:
            return name  # a version id of ``plan``
        if not isinstance(name, str) or name not in self._current:
            raise ValueError(f"{self.name}: no blob named {name!r}; blobs: "
                             f"{sorted(self._current)}")
        return self._current[name]

    @property
    def output_shape(self):
        return self._shapes[self._output_id]

    @property
    def seed(self):
        """The seed the net was built with (its parameter initialisation; its dropout masks
        until ``seed_dropout``)."""
        return self._seed

    def blob_shape(self, name):
        """Per-example shape of blob ``name`` (of its last version, when layers write it in
        place; or of a version id of ``plan``), e.g. ``(20, 24, 24)``; the input blob's is
        ``input_shape``."""
        return self._shapes[self._blob_id(name)]

    def producer(self, name):
        """The layer writing blob ``name`` (its last version, when layers write it in place), or
        None for the net's input blob."""
        step = self._producer.get(self._blob_id(name))
        return None if step is None else self._plan[step][0]

    def logits_blob(self, output=None):
        """Name of the blob the loss and ``logits`` read for ``output`` (a blob name; default
        ``net.output``): the output itself, or the input of the Softmax that makes it."""
        blob_id = self._output_id if output is None else self._blob_id(output)
        return self._names[self._logits_of(blob_id)]

    @property
    def num_classes(self):
        """Values of the logits blob per example (its classes; a spatial map's values
        flattened)."""
        shape = self._shapes[self._logits_id]
        return int(np.prod(shape))

    # -----------------------------------------------------------------------------------------
    # Outputs, input size, what the images are

    def with_output(self, name):
        """A view of this net whose output — what ``forward`` returns and the loss, ``logits``
        and every attack read — is the blob ``name`` (any blob; for a Softmax's output its
        input is the logits). It shares the layers and weights with this net (a change to one
        shows in the other); its ``outputs`` are ``name`` and this net's others."""
        view = copy.copy(self)
        view._set_outputs(name, self.outputs)
        return view

    def at_input_shape(self, input_shape):
        """This net planned for inputs of another per-example shape (a fully convolutional
        net at another image size: MTCNN's P-Net on a whole photo), sharing its weights → a
        new Net (this net itself for its own shape). ValueError naming the first layer that
        cannot take the new shape or whose weights would change (an InnerProduct after a
        Flatten fixes the size)."""
        shape = tuple(int(s) for s in input_shape)
        if shape == self.input_shape:
            return self
        spec = self.spec()
        spec["input_shape"] = list(shape)
        try:
            other = Net.from_spec(spec, dtype=self.dtype, seed=self._seed, source=self.name,
                                  init=False)
            for mine, theirs in zip(self.layers, other.layers):
                theirs.share_state(mine)
        except ValueError as e:
            raise ValueError(f"{self.name}: cannot run at input shape {shape} (planned for "
                             f"{self.input_shape}): {e}") from None
        other.training = self.training
        return other

    @property
    def preprocessing(self):
        """How an image becomes this net's input (``engine.preprocess``): a dict, {} if
        nothing is known. Assigning checks it (and reads Caffe's key names)."""
        return dict(self._preprocessing)

    @preprocessing.setter
    def preprocessing(self, value):
        self._preprocessing = check_preprocessing(value, self.input_shape[0],
                                                  f"{self.name}: preprocessing")

    @property
    def bounds(self):
        """(low, high) of the images in image units (numbers or one per channel), or None
        when the model does not say. Assigning checks it."""
        return None if self._bounds is None else tuple(self._bounds)

    @bounds.setter
    def bounds(self, value):
        self._bounds = check_bounds(value, self.input_shape[0], f"{self.name}: bounds")

    def input_bounds(self):
        """(low, high) of this net's input values (after the preprocessing) for images within
        ``bounds``: numbers, or (C,) arrays when they differ per channel; None without
        bounds. The clip range of an attack on inputs already preprocessed."""
        return input_bounds(self._bounds, self._preprocessing, self.input_shape[0])

    def with_preprocessing(self, from_range=None):
        """A net that takes images in image units (``bounds``) and applies the preprocessing
        itself, as a ``Preprocess`` layer in front of a copy of this net — the net to attack
        with eps in image units. This net itself when nothing changes the values. Its
        ``preprocessing`` keeps only what is about image files (resize, crop).

        ``from_range`` = (low, high): take values in that range instead (a dataset's [0, 1]),
        mapped linearly onto ``bounds`` first (per channel where they are), so that eps is in
        those units; the new net's ``bounds`` are ``from_range``. Without ``bounds`` the
        values are taken as they are."""
        C = self.input_shape[0]
        m = affine(self._preprocessing, C)
        order, a, b = m if m is not None else (np.arange(C), np.ones(C), np.zeros(C))
        bounds = self._bounds
        if from_range is not None and bounds is not None:
            flo, fhi = check_bounds(from_range, C, f"{self.name}: from_range")
            lo, hi = (np.broadcast_to(np.asarray(v, float), (C,)) for v in bounds)
            flo, fhi = (np.broadcast_to(np.asarray(v, float), (C,)) for v in (flo, fhi))
            r = (hi - lo) / (fhi - flo)  # image = lo + (x − flo) · r, per image channel
            a, b = r[order] * a, (lo - flo * r)[order] * a + b
            bounds = check_bounds(from_range, C)
        if np.array_equal(order, np.arange(C)) and np.all(a == 1) and np.all(b == 0):
            if bounds == self._bounds:
                return self
            other = self.copy()
            other.bounds = bounds
            return other
        spec = self.spec()
        first = spec["layers"][0]
        name = "preprocess"
        while any(l["name"] == name for l in spec["layers"]):
            name += "_"
        head = Preprocess(name, order, a, b, top=f"{self.input_name}/{name}").config()
        for layer in spec["layers"]:  # the layers reading the input read the preprocessed one
            reads = layer.get("bottom") or ([self.input_name] if layer is first else [])
            if self.input_name in reads:
                layer["bottom"] = [head["top"][0] if b == self.input_name else b for b in reads]
        spec["layers"].insert(0, head)
        spec["preprocessing"] = {k: v for k, v in self._preprocessing.items()
                                 if k in ("resize", "crop")}
        spec["bounds"] = bounds
        other = Net.from_spec(spec, dtype=self.dtype, seed=self._seed, source=self.name,
                              init=False)
        other.load_state_dict(self.state_dict())
        other.training = self.training
        return other

    # -----------------------------------------------------------------------------------------
    # Modes, parameters, state

    def train(self):
        """Train mode: dropout active, batch norms normalise with (and update their running
        averages from) the batch's statistics."""
        self.training = True
        return self

    def eval(self):
        """Eval mode (the default): dropout is the identity, batch norms use their running
        statistics."""
        self.training = False
        return self

    def seed_dropout(self, seed):
        """Reseed the dropout masks (training seeds them per epoch)."""
        self._rng = np.random.default_rng(seed)

    def layer(self, name):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"{self.name}: no layer named {name!r}; layers: {[l.name for l in self.layers]}")

    __getitem__ = layer

    @property
    def params(self):
        """{layer name: {param name: array}} for the layers that have trainable parameters."""
        return {l.name: l.params for l in self.layers if l.params}

    @property
    def grads(self):
        """{layer name: {param name: gradient}} from the last ``backward`` with weight gradients."""
        return {l.name: l.grads for l in self.layers if l.params}

    def named_params(self):
        """("layer/param", array) for every trainable parameter, in layer order."""
        for l in self.layers:
            for k, v in l.params.items():
                yield f"{l.name}/{k}", v

    def num_params(self):
        """Trainable values as stored: a compressed layer counts its stored values (a CSR
        layer's non-zeros, a codebook's centroids), not its weights; see ``num_dense_params``."""
        return int(sum(v.size for _, v in self.named_params()))

    def num_dense_params(self):
        """Every weight and bias of the architecture, as if dense (what a paper's parameter
        count is): a compressed layer counts all its weights, whatever it stores."""
        return int(sum(l.dense_param_count() for l in self.layers))

    def convert(self, layer_name, kind, **options):
        """Re-encode one layer's weight in another format (see ``engine.formats``) → the format."""
        layer = self.layer(layer_name)
        if not hasattr(layer, "convert"):
            raise ValueError(f"{self.name}: {layer.at} has no weight to convert")
        return layer.convert(kind, **options)

    def state_dict(self):
        """Every parameter and buffer as {"layer/name": array} (the arrays themselves, not copies)."""
        state = {}
        for l in self.layers:
            for k, v in list(l.params.items()) + list(l.buffers.items()):
                state[f"{l.name}/{k}"] = v
        return state

    def load_state_dict(self, state, *, source="state"):
        """Load parameters and buffers from {"layer/name": array}; every name the net's layers
        declare must be there and nothing else. Weight formats are rebuilt (and validated) from
        their arrays, so a pruned or quantized layer loads as it was saved."""
        expected = {f"{l.name}/{k}" for l in self.layers for k in l.state_keys()}
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f"{source}: does not match {self.name}: missing {missing}, "
                             f"unexpected {unexpected}")
        for l in self.layers:
            keys = l.state_keys()
            if keys:
                l.load_state({k: state[f"{l.name}/{k}"] for k in keys}, source)

    def spec(self):
        """The architecture as JSON-able data; ``Net.from_spec`` rebuilds it (weights aside).
        Further outputs, preprocessing and bounds are there when the net has them."""
        spec = {"format": SPEC_FORMAT, "version": SPEC_VERSION, "name": self.name,
                "input_shape": list(self.input_shape), "input_name": self.input_name,
                "output": self.output, "dtype": self.dtype.name,
                "layers": [l.config() for l in self.layers]}
        if len(self.outputs) > 1:
            spec["outputs"] = list(self.outputs)
        if self._preprocessing:
            spec["preprocessing"] = json.loads(json.dumps(self._preprocessing))
        if self._bounds is not None:
            spec["bounds"] = json.loads(json.dumps(self._bounds))
        return spec

    @classmethod
    def from_spec(cls, spec, *, dtype=None, seed=0, source="spec", init=True, max_bytes=None):
        """Build a Net from ``spec()`` output (a dict or its JSON text). Evaluates nothing.
        ``init`` and ``max_bytes`` as the constructor's."""
        if isinstance(spec, (str, bytes)):
            try:
                spec = json.loads(spec)
            except (json.JSONDecodeError, RecursionError) as e:
                raise ValueError(f"{source}: the architecture is not valid JSON ({e})") from None
        if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
            raise ValueError(f"{source}: not a robustcnn architecture spec")
        if spec.get("version") != SPEC_VERSION:
            raise ValueError(f"{source}: architecture spec version {spec.get('version')!r} is not "
                             f"supported (this robustcnn reads version {SPEC_VERSION})")
        try:
            layers = [layer_from_config(c) for c in spec["layers"]]
            return cls(layers, spec["input_shape"], input_name=spec["input_name"],
                       output=spec["output"], outputs=spec.get("outputs"),
                       dtype=dtype or spec.get("dtype", "float32"), seed=seed,
                       name=spec.get("name", "net"), preprocessing=spec.get("preprocessing"),
                       bounds=spec.get("bounds"), init=init, max_bytes=max_bytes)
        except ValueError as e:
            raise e if str(e).startswith(source) else ValueError(f"{source}: {e}") from None
        except (KeyError, TypeError, IndexError, AttributeError, OverflowError) as e:
            raise ValueError(f"{source}: malformed architecture spec ({e!r})") from None

    def copy(self, *, dtype=None):
        """A new Net with the same architecture and a copy of the weights (cast to ``dtype``)."""
        other = Net.from_spec(self.spec(), dtype=dtype or self.dtype, seed=self._seed,
                              init=False)
        other.load_state_dict(self.state_dict())
        other.training = self.training
        return other

    def astype(self, dtype):
        return self.copy(dtype=dtype)

    def summary(self):
        """A table of layers: name, type, output shape, parameters (every weight and bias, as
        a paper counts them) and, when some layer is compressed, the values it stores (a CSR
        layer's non-zeros, a codebook's centroids: what trains)."""
        stored = self.num_params() != self.num_dense_params()
        rows = [("layer", "type", "output", "params") + (("stored",) if stored else ())]
        for layer, _, out_ids in self._plan:
            n = layer.dense_param_count()
            m = sum(v.size for v in layer.params.values())
            rows.append((layer.name, layer.type, " ".join(str(self._shapes[o]) for o in out_ids),
                         f"{n:,}") + ((f"{m:,}" if m != n else "",) if stored else ()))
        rows.append(("total", "", "", f"{self.num_dense_params():,}")
                    + ((f"{self.num_params():,}",) if stored else ()))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

    def __repr__(self):
        n, m = self.num_dense_params(), self.num_params()
        stored = f", {m:,} stored" if m != n else ""
        return f"Net({self.name!r}, {len(self.layers)} layers, input {self.input_shape}, " \
               f"{n:,} parameters{stored})"

    # -----------------------------------------------------------------------------------------
    # Passes

    def _check_input(self, x):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{self.name}: input must be a numpy array, got {type(x).__name__}")
        if x.dtype.kind not in "fiu":
            raise TypeError(f"{self.name}: input must be numeric, got {x.dtype}")
        if x.shape[1:] != self.input_shape or x.ndim != len(self.input_shape) + 1:
            raise ValueError(f"{self.name}: input shape {x.shape} does not match the net's input "
                             f"(N,) + {self.input_shape}")
        x = np.ascontiguousarray(x, dtype=self.dtype)
        bad = nonfinite(x)
        if bad:
            raise ValueError(f"{self.name}: input has {bad} non-finite value(s) (NaN or inf)")
        return x

    def _steps(self, ctx, blobs, *, yielding=True, keep=()):
        """Run the plan on ``blobs`` ({blob id: array}, holding the input), dropping blobs no
        later layer reads (but those in ``keep``). ``yielding``: a LayerStep per layer, the run
        going on from its outputs (a caller may replace them); else nothing is yielded
        (``forward``'s lean path)."""
        for index, (layer, in_ids, out_ids) in enumerate(self._plan):
            inputs = [blobs[i] for i in in_ids]
            outputs = made = layer.forward(inputs, ctx)
            if yielding:
                step = LayerStep(layer, *self._step_names[index], inputs, list(made), ctx)
                yield step
                outputs = self._step_outputs(step, made, out_ids, len(inputs[0]))
            for o, y in zip(out_ids, outputs):
                blobs[o] = y
            for blob_id in self._free_after[index]:
                if blob_id not in keep:
                    blobs.pop(blob_id, None)

    def _step_outputs(self, step, made, out_ids, n):
        """A step's outputs after the caller's turn: those it replaced checked, and laid out
        as the kernels read them."""
        at = step.layer.at
        if len(step.outputs) != len(out_ids):
            raise ValueError(f"{self.name}: {at} makes {len(out_ids)} output(s); its step "
                             f"holds {len(step.outputs)}")
        outputs = []
        for o, y, mine in zip(out_ids, step.outputs, made):
            if y is not mine:
                shape = (n,) + self._shapes[o]
                if not isinstance(y, np.ndarray) or y.shape != shape:
                    raise ValueError(f"{self.name}: {at}: output {self._names[o]!r} must be an "
                                     f"array of shape {shape}, got "
                                     f"{getattr(y, 'shape', type(y).__name__)}")
                y = np.ascontiguousarray(y, dtype=self.dtype)
            outputs.append(y)
        return outputs

    def _run(self, x, ctx, keep=()):
        """Run the plan; returns the blob dict holding at least the outputs, the logits and the
        blob ids in ``keep``."""
        blobs = {self.input_name: x}
        for _ in self._steps(ctx, blobs, yielding=False, keep=keep):
            pass
        if any(nonfinite(blobs[i]) for i in (self._output_id,) + tuple(keep)):
            self._raise_nonfinite(x)
        return blobs

    def _raise_nonfinite(self, x):
        """Name the first layer whose output is not finite (the input was checked finite)."""
        for step in self._steps(Context(), {self.input_name: x}):
            if any(nonfinite(y) for y in step.outputs):
                raise FloatingPointError(
                    f"{self.name}: {step.layer.at} produced non-finite values from finite "
                    f"inputs (overflow? check the weights and the input scale)")
        raise FloatingPointError(f"{self.name}: the output is not finite")

    def run_layers(self, x, *, train=None):
        """Run the net on ``x`` (N, *input_shape) one layer at a time → an iterator of
        ``LayerStep``, one per layer in the order they run.

        A step holds the ``layer``, the names of the blobs it reads and writes (``bottoms``,
        ``tops``) and their values (``inputs``, ``outputs``: lists of (N, *shape) arrays); it
        unpacks as ``layer, outputs``. The next layer runs when the next step is asked for, on
        ``step.outputs`` as they are then: between two steps a caller may change the layer's
        parameters and either call ``step.rerun()`` or put outputs it computed itself into
        ``step.outputs`` (same shapes) — what a data-dependent initialisation does. With nothing
        changed, every step's outputs are what ``forward(x)`` computes for those blobs. The mode
        follows ``train`` as in ``forward``; nothing is kept for ``backward``, and outputs are
        not checked for NaN/inf.
        """
        x = self._check_input(x)  # here, not at the first step: bad input fails at the call
        ctx = Context(train=self.training if train is None else train, rng=self._rng)
        return self._steps(ctx, {self.input_name: x})

    def forward(self, x, *, train=None, output=None):
        """Output of the net for ``x`` (N, *input_shape) — logits, or probabilities if the net
        ends with a Softmax. Eval mode unless ``train`` or ``net.train()`` says otherwise.

        ``output``: a blob name (one of ``net.outputs``, or any blob) → that blob's values
        instead; a list of names → {name: values}, from one pass."""
        x = self._check_input(x)
        ctx = Context(train=self.training if train is None else train, rng=self._rng)
        if output is None:
            return self._run(x, ctx)[self._output_id]
        names = [output] if isinstance(output, str) else list(output)
        ids = [self._blob_id(n) for n in names]
        blobs = self._run(x, ctx, keep=tuple(ids))
        if isinstance(output, str):
            return blobs[ids[0]]
        return {n: blobs[i] for n, i in zip(names, ids)}

    def _forward_keep(self, x, train):
        ctx = Context(train=train, keep=True, rng=self._rng)
        return self._run(x, ctx)

    def backward(self, dout, *, param_grads=True, input_grad=True, of="output", on_layer=None):
        """Back-propagate ``dout`` (the gradient w.r.t. the output, or w.r.t. the logits with
        ``of="logits"``) through the last ``forward_for_backward`` pass.

        Fills ``net.grads`` when ``param_grads``; returns dL/dx when ``input_grad`` (else None).
        ``on_layer(layer, dys)``, if given, sees each layer's output gradients (a list of
        (N, …) arrays, not to be modified) before the layer back-propagates them: per-example
        quantities such as the squared gradients of a Hessian diagonal start there.
        """
        start = self._output_id if of == "output" else self._logits_id
        grads = {start: dout}
        reached = False
        for layer, in_ids, out_ids in reversed(self._plan):
            if not reached:
                if start not in out_ids:
                    continue
                reached = True
            dys = [grads.pop(o, None) for o in out_ids]
            if all(d is None for d in dys):
                layer.release()
                continue
            # Kernels view their arrays flat: every gradient goes in C-contiguous.
            dys = [np.zeros((dout.shape[0],) + self._shapes[o], dtype=dout.dtype) if d is None
                   else np.ascontiguousarray(d) for d, o in zip(dys, out_ids)]
            need_input = input_grad or any(i != self.input_name for i in in_ids)
            if on_layer is not None:
                on_layer(layer, dys)
            ctx = Context(param_grads=param_grads, input_grad=need_input)
            dxs = layer.backward(dys, ctx)
            layer.release()
            for i, dx in zip(in_ids, dxs):
                if dx is None:
                    continue
                grads[i] = dx if i not in grads else grads[i] + dx
        return grads.get(self.input_name) if input_grad else None

    def forward_for_backward(self, x, *, train=None):
        """Forward pass that keeps what ``backward`` needs → (output, logits)."""
        x = self._check_input(x)
        blobs = self._forward_keep(x, self.training if train is None else train)
        return blobs[self._output_id], blobs[self._logits_id]

    def _loss(self, logits, labels):
        logits = logits.reshape(logits.shape[0], self.num_classes)  # (no -1: N may be 0)
        labels = labels_array(labels, logits.shape[0], logits.shape[1], self.name)
        loss = np.empty(logits.shape[0], dtype=logits.dtype)
        dlogits = np.empty_like(logits)
        if logits.shape[0]:
            softmax_cross_entropy_rows(np.ascontiguousarray(logits), labels, loss, dlogits)
        return loss, dlogits

    def loss_and_grad(self, x, labels):
        """One training step's pass: mean cross-entropy, its gradients in ``net.grads``.

        Returns (mean loss, logits). Train mode follows ``net.training``. dL/dx is not computed.
        """
        _, logits = self.forward_for_backward(x)
        loss, dlogits = self._loss(logits, labels)
        dlogits /= max(len(loss), 1)
        self.backward(dlogits.reshape(logits.shape), param_grads=True, input_grad=False,
                      of="logits")
        return float(loss.mean()) if len(loss) else 0.0, logits

    def loss_and_input_grad(self, x, labels, *, train=False):
        """Per-example cross-entropy and its gradient w.r.t. the input → (loss (N,), dx).

        ``dx[n]`` is d loss[n] / d x[n]. No weight gradient is computed. Eval mode unless
        ``train=True`` (where batch-statistics batch norms couple the examples: ``dx[n]`` is
        then d Σ loss / d x[n], and the running statistics are updated). This is what gradient
        attacks call, many times.
        """
        _, logits = self.forward_for_backward(x, train=train)
        loss, dlogits = self._loss(logits, labels)
        dx = self.backward(dlogits.reshape(logits.shape), param_grads=False, input_grad=True,
                           of="logits")
        return loss, dx

    def logits(self, x, *, batch_size=256):
        """Logits for ``x`` in batches (eval mode) → (N, K)."""
        x = np.asarray(x)
        out = np.empty((x.shape[0], self.num_classes), dtype=self.dtype)
        ctx = Context(train=False)
        for lo in range(0, x.shape[0], batch_size):
            xb = self._check_input(x[lo:lo + batch_size])
            out[lo:lo + batch_size] = self._run(xb, ctx)[self._logits_id].reshape(len(xb), -1)
        return out

    def predict(self, x, *, batch_size=256):
        """Predicted classes for ``x`` (argmax of the logits) → int64 (N,)."""
        return self.logits(x, batch_size=batch_size).argmax(axis=1)

    def accuracy(self, x, labels, *, batch_size=256):
        """Fraction of ``x`` classified as ``labels``."""
        labels = np.asarray(labels)
        if len(labels) == 0:
            return float("nan")
        return float((self.predict(x, batch_size=batch_size) == labels).mean())

    def __deepcopy__(self, memo):
        return self.copy()
