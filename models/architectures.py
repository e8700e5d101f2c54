"""Every architecture robustcnn builds by name — the LeNets (``lenet.MODELS``) and the zoo
(``zoo.ZOO``) — made for a dataset's images: the one place ``robustcnn train`` and the study
turn a name into a fresh net.

    names()                                         every architecture's name
    build_architecture("squeezenet_small", input_shape=(1, 28, 28), num_classes=10, width=0.5)
    net, kwargs = fresh_net("mobilenet_small", x_train, 10, seed=0, params=11_000)

The small zoo nets (``zoo.WIDTH_KNOBS``) take any input size and are initialised from data
(``zoo.data_init``); the ImageNet ones have their papers' input sizes, and a dataset of other
images is refused with a message saying which nets fit.
"""

import inspect

# Examples ``zoo.data_init`` scales a fresh small zoo net on (the first N of the training set).
DATA_INIT_EXAMPLES = 256


def _builders():
    from .lenet import MODELS
    from .zoo import ZOO

    return {**MODELS, **ZOO}


def names():
    """Every architecture's name, sorted."""
    return sorted(_builders())


def build_architecture(name, *, input_shape, num_classes, seed=0, **kwargs):
    """A freshly initialised net of architecture ``name`` for per-example ``input_shape``
    images and ``num_classes`` classes; ``kwargs`` are the builder's own (a width, α,
    blocks …). ValueError naming the architecture for an unknown name, a keyword it does not
    take, or images it cannot take."""
    builders = _builders()
    if name not in builders:
        raise ValueError(f"unknown model {name!r} (the architectures: "
                         f"{', '.join(sorted(builders))})")
    build = builders[name]
    takes = inspect.signature(build).parameters
    bad = sorted(set(kwargs) - set(takes))
    if bad:
        raise ValueError(f"{name}: takes no option {bad[0]!r} (its options: "
                         f"{', '.join(k for k in takes if k not in ('seed', 'dtype'))})")
    shape = tuple(int(s) for s in input_shape)
    if "input_shape" in takes:
        kwargs["input_shape"] = shape
    elif "input_size" in takes and len(shape) == 3 and shape[1] == shape[2]:
        kwargs["input_size"] = shape[1]
    try:
        net = build(num_classes=num_classes, seed=seed, **kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot build it for {shape} images with {kwargs}: "
                         f"{e}") from None
    if net.input_shape != shape:
        any_size = sorted(n for n, b in builders.items()
                          if "input_shape" in inspect.signature(b).parameters)
        raise ValueError(f"{name} takes {net.input_shape} images, these are {shape}; "
                         f"architectures for any image size: {', '.join(any_size)}")
    return net


def fresh_net(name, x, num_classes, *, seed=0, params=None, **kwargs):
    """A net of ``name`` to train on the images ``x`` (N, C, H, W) → (net, the kwargs used):
    at the width that gives about ``params`` parameters when asked (``zoo.compact_for_params``),
    and for the small zoo nets initialised from the first ``DATA_INIT_EXAMPLES`` images."""
    from .zoo import WIDTH_KNOBS, compact_for_params, data_init

    shape = tuple(x.shape[1:])
    kwargs = dict(kwargs)
    if params is not None:
        try:
            kwargs = compact_for_params(name, params, input_shape=shape,
                                        num_classes=num_classes, **kwargs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: cannot size it to {params:,} parameters for {shape} "
                             f"images: {e}") from None
        kwargs = {k: v for k, v in kwargs.items() if k not in ("input_shape", "num_classes")}
    net = build_architecture(name, input_shape=shape, num_classes=num_classes, seed=seed,
                             **kwargs)
    if name in WIDTH_KNOBS:
        data_init(net, x[:DATA_INIT_EXAMPLES])
    return net, kwargs
