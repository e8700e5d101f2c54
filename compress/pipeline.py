"""Deep Compression end to end: prune → retrain → quantize → fine-tune centroids → Huffman-code.

``compress(net, x, y, settings)`` runs the stages on a trained net, measuring the accuracy after
each, and leaves every compressed layer in its final format (by default a pruned and quantized
layer is a sparse codebook, Huffman-coded where that makes it smaller); ``save_model`` then
writes it. ``PRESETS`` holds Deep Compression's LeNet settings (Han et al. 2016, Tables 2 and
3) and a CIFAR VGG-style net's (from its VGG-16 shares, Table 5): the share of weights each
layer keeps and its code bits.

The retraining and the centroid fine-tuning minimise the caller's training ``objective``
(cross-entropy by default). Adversarial-aware compression — Wijayanto, Choong, Madhawa &
Murata, "Towards Robust Compressed Convolutional Neural Networks" (IEEE BigComp 2019): adversarial
retraining inside the prune → retrain and quantize → fine-tune loop, so the compressed net keeps
the robustness the retraining gives it — passes an adversarial-training objective, built by the
caller from ``settings.adversarial`` (this module does not import the attacks).
"""

import time
from dataclasses import asdict, dataclass, field

from ..engine.formats import CmCodebookWeight, HuffmanCodebookWeight, RansCodebookWeight

ENTROPY_CODERS = {"huffman": HuffmanCodebookWeight, "rans": RansCodebookWeight,
                  "cm": CmCodebookWeight}
from ..engine.train import SGD, Schedule, fit
from .quantize import quantize_layer


@dataclass
class CompressionSettings:
    """What ``compress`` does.

    kept           layer → fraction of its weights kept by pruning (1.0: not pruned)
    bits           layer → code bits of its shared weights (omit a layer to leave it unquantized)
    gap_bits       layer → bits of its relative indices (default 4 for conv, 5 for FC)
    rounds         pruning rounds (the kept fraction shrinks geometrically to ``kept``)
    retrain_epochs epochs of retraining after each pruning round
    finetune_epochs epochs of centroid fine-tuning after quantization
    lr, finetune_lr learning rates (cosine-annealed within each stage)
    init           k-means initialisation: linear (the paper's choice), density or random
    huffman        entropy-code the sparse codebooks (each layer where that makes it smaller)
    entropy        the entropy coder: "huffman" (Deep Compression's), "rans" (rANS,
                   ``engine/formats/rans.py``) or "cm" (context mixing, ``engine/formats/cm.py``)
    adversarial    None, or the settings of the adversarial training the retraining and the
                   centroid fine-tuning use (attack, eps, fraction, steps, alpha; seeded with
                   ``seed``): the record of the objective the caller passes to ``compress``,
                   built by ``attacks.adversarial_training.adversarial_objective``
    pruning        the pruning stage: a name of ``compress.pruning_methods.PRUNING_METHODS``
                   (magnitude, Deep Compression's, the default; obd, dns, hydra, admm)
    pruning_options  that method's own settings (a dict of its options record's fields)
    """

    kept: dict
    bits: dict
    gap_bits: dict = field(default_factory=dict)
    rounds: int = 3
    retrain_epochs: int = 2
    finetune_epochs: int = 2
    lr: float = 0.005
    finetune_lr: float = 0.001
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4
    init: str = "linear"
    huffman: bool = True
    entropy: str = "huffman"
    seed: int = 0
    adversarial: dict = None
    pruning: str = "magnitude"
    pruning_options: dict = field(default_factory=dict)


# Deep Compression's LeNet settings as published (Han et al. 2016, Tables 2 and 3, MNIST): the
# share of weights each layer keeps and the code bits (6 for LeNet-300-100; 8 for conv and 5
# for FC in LeNet-5), with 5-bit relative indices.
PAPER_PRESETS = {
    "lenet-300-100-paper": dict(kept={"ip1": 0.08, "ip2": 0.09, "ip3": 0.26},
                                bits={"ip1": 6, "ip2": 6, "ip3": 6},
                                gap_bits={"ip1": 5, "ip2": 5, "ip3": 5}),
    "lenet5-paper": dict(kept={"conv1": 0.66, "conv2": 0.12, "ip1": 0.08, "ip2": 0.19},
                         bits={"conv1": 8, "conv2": 8, "ip1": 5, "ip2": 5},
                         gap_bits={"conv1": 5, "conv2": 5, "ip1": 5, "ip2": 5}),
}

# The defaults: the paper's layer shares, with fewer code bits where a small layer's 256-entry
# codebook outweighs its codes and 4-bit codes for the large FC layer, and a longer retraining
# schedule. Chosen over a handful of Fashion-MNIST runs (README, "Compressing a model"): on the
# paper's settings the files came out at 34x (LeNet-5) and 36x (LeNet-300-100), below the
# paper's 39x and 40x, because small layers pay for their codebooks and Huffman tables.
PRESETS = {
    "lenet-300-100": dict(kept={"ip1": 0.06, "ip2": 0.08, "ip3": 0.26},
                          bits={"ip1": 4, "ip2": 5, "ip3": 5},
                          gap_bits={"ip1": 5, "ip2": 5, "ip3": 5},
                          rounds=4, retrain_epochs=3, finetune_epochs=3, lr=0.01,
                          finetune_lr=0.001),
    "lenet5": dict(kept={"conv1": 0.66, "conv2": 0.12, "ip1": 0.07, "ip2": 0.19},
                   bits={"conv1": 5, "conv2": 5, "ip1": 4, "ip2": 5},
                   gap_bits={"conv1": 4, "conv2": 4, "ip1": 5, "ip2": 5},
                   rounds=4, retrain_epochs=4, finetune_epochs=1, lr=0.01, finetune_lr=0.0001),
    # The CIFAR example's VGG-style net (models/zoo.py vgg_small): Han et al.'s VGG-16 shares
    # (Table 5: conv1_1 58%, conv1_2 22%, conv2_1 34%, conv2_2 36%, conv3_1 53%, conv3_2 24%,
    # fc6 4%, fc8 23%) times 0.37, so that the estimated file (compress/target.py, before
    # Huffman coding) is 40x: half of vgg_small's weights are in convolutions, against 7% of
    # VGG-16's, so the paper's own shares give only 17x here. Codes as lenet5's (5-bit conv,
    # 4-bit FC), the indices the widths best_gap_bits picks at these shares. Not tuned on
    # CIFAR-10 (not on the machine it was written on).
    "vgg_small": dict(kept={"conv1_1": 0.22, "conv1_2": 0.08, "conv2_1": 0.13, "conv2_2": 0.13,
                            "conv3_1": 0.20, "conv3_2": 0.09, "fc1": 0.015, "fc2": 0.09},
                      bits={"conv1_1": 5, "conv1_2": 5, "conv2_1": 5, "conv2_2": 5,
                            "conv3_1": 5, "conv3_2": 5, "fc1": 4, "fc2": 4},
                      gap_bits={"conv1_1": 4, "conv1_2": 5, "conv2_1": 5, "conv2_2": 4,
                                "conv3_1": 4, "conv3_2": 5, "fc1": 8, "fc2": 5},
                      rounds=4, retrain_epochs=2, finetune_epochs=1, lr=0.01,
                      finetune_lr=0.0005),
    **PAPER_PRESETS,
}

# The pipeline's stages, in order; a study's stage-only arms name them (``stages_of``).
STAGES = ("prune", "quantize", "huffman")


def stages_of(settings):
    """The stages of ``STAGES`` that settings (a CompressionSettings or its dict) run: prune
    when a layer keeps less than all its weights, quantize when a layer has code bits, huffman
    (the entropy coder: huffman, rans or cm) when both run and ``huffman`` is on — the coder codes
    the pruned layers' sparse codebooks only."""
    fields = asdict(settings) if isinstance(settings, CompressionSettings) else dict(settings)
    out = []
    if any(v < 1 for v in (fields.get("kept") or {}).values()):
        out.append("prune")
    if fields.get("bits"):
        out.append("quantize")
    if len(out) == 2 and fields.get("huffman", True):
        out.append("huffman")
    return tuple(out)


def preset(name, **overrides):
    """CompressionSettings of a preset (see ``PRESETS``), with fields overridden."""
    if name not in PRESETS:
        raise ValueError(f"no compression preset for {name!r}; presets: {sorted(PRESETS)}")
    return CompressionSettings(**{**PRESETS[name], **overrides})


def _train(net, x, y, epochs, lr, settings, val, progress, log, objective=None):
    if epochs < 1:
        return []
    steps = len(x) // settings.batch_size
    return fit(net, x, y, epochs=epochs, batch_size=settings.batch_size,
               optimizer=SGD(settings.momentum, settings.weight_decay),
               schedule=Schedule("cosine", lr, total=epochs * steps), seed=settings.seed,
               val=val, progress=progress, log=log, objective=objective)


class Stage:
    """What a pruning method's stage function gets (``compress.pruning_methods``): the ``net`` being
    compressed, the training data ``x``, ``y``, the ``settings``, the caller's training
    ``objective`` (None: cross-entropy), ``progress``; ``train(epochs, lr)`` runs the
    pipeline's SGD on that objective (or on ``objective=`` another one), ``record(stage,
    seconds)`` adds a line to the report, ``report`` is the report dict a method may add
    its own entries to."""

    def __init__(self, net, x, y, settings, objective, progress, record, report):
        self.net, self.x, self.y, self.settings = net, x, y, settings
        self.objective, self.progress, self.record, self.report = (objective, progress, record,
                                                                   report)

    def train(self, epochs, lr, *, objective=None):
        """SGD with the settings' batch size, momentum and weight decay, cosine-annealed from
        ``lr`` over ``epochs`` epochs, on ``objective`` (default: the caller's) → history."""
        return _train(self.net, self.x, self.y, epochs, lr, self.settings, None, self.progress,
                      None, objective if objective is not None else self.objective)


def kmeans_stage(stage):
    """Deep Compression's trained quantization: k-means weight sharing per layer of
    ``settings.bits``, then ``finetune_epochs`` of centroid fine-tuning."""
    settings, net = stage.settings, stage.net
    if not settings.bits:
        return
    t0 = time.perf_counter()
    for name, bits in settings.bits.items():
        quantize_layer(net.layer(name), bits, init=settings.init,
                       gap_bits=settings.gap_bits.get(name))
    stage.record("quantize", time.perf_counter() - t0)
    t0 = time.perf_counter()
    stage.train(settings.finetune_epochs, settings.finetune_lr)
    stage.record("fine-tune centroids", time.perf_counter() - t0)


def compress(net, x, y, settings, *, objective=None, val=None, progress=True, log=print):
    """Compress a trained ``net`` in place on training data (x, y) → a report dict.

    The report holds the accuracy on ``val`` (x, y) before and after each stage, the stage wall
    times and the settings. ``objective`` is what the retraining after each pruning round and the
    centroid fine-tuning minimise: an ``engine.train.fit`` objective, or None for cross-entropy.
    Adversarial-aware compression passes the one ``settings.adversarial`` records,
    ``attacks.adversarial_training.adversarial_objective(settings.adversarial, settings.seed)``
    (x must then lie in [0, 1]); settings that record one without it are refused.

    ``settings.pruning`` names the pruning stage, a method of
    ``compress.pruning_methods.PRUNING_METHODS`` (Deep Compression's magnitude pruning by
    default; OBD, DNS, HYDRA, ADMM), with ``settings.pruning_options`` its own settings; the
    quantization and Huffman coding that follow are the same for every method.
    """
    from .pruning_methods import pruning_stage

    prune_stage = pruning_stage(settings)  # unknown methods and bad options fail here
    weighted = [layer.name for layer in net.layers if hasattr(layer, "weight_format")]
    unknown = sorted((set(settings.kept) | set(settings.bits) | set(settings.gap_bits))
                     - set(weighted))
    if unknown:  # fails before any work
        raise ValueError(f"compression settings: {net.name} has no layer {unknown[0]!r} with a "
                         f"weight (layers with a weight: {', '.join(weighted)})")
    if settings.adversarial is not None and objective is None:
        raise ValueError(f"compression settings: adversarial is {settings.adversarial!r} but no "
                         f"objective was given; pass objective=attacks.adversarial_training."
                         f"adversarial_objective(settings.adversarial, settings.seed)")
    report = {"settings": asdict(settings), "stages": []}
    if objective is not None and hasattr(objective, "config"):
        report["objective"] = objective.config()
    log = log or (lambda *a: None)

    def record(stage, seconds):
        acc = net.accuracy(*val) if val is not None else None
        report["stages"].append({"stage": stage, "accuracy": acc, "seconds": seconds})
        log(f"{stage:<24} " + (f"accuracy {100 * acc:.2f}%  " if acc is not None else "")
            + f"{seconds:.1f} s")

    if settings.entropy not in ENTROPY_CODERS:
        raise ValueError(f"unknown entropy coder {settings.entropy!r}; coders: "
                         f"{', '.join(ENTROPY_CODERS)}")
    record("dense", 0.0)
    stage = Stage(net, x, y, settings, objective, progress, record, report)
    prune_stage(stage)
    kmeans_stage(stage)
    if settings.huffman:
        t0 = time.perf_counter()
        coder = ENTROPY_CODERS[settings.entropy]
        for layer in net.layers:
            fmt = getattr(layer, "weight_format", None)
            if fmt is not None and fmt.kind == "sparse_codebook":
                coded = coder.from_sparse_codebook(fmt, at=layer.at)
                # A small layer's code tables can outweigh what entropy coding saves.
                if coded.stored_bytes() < fmt.stored_bytes():
                    layer.set_weight_format(coded)
        record(settings.entropy, time.perf_counter() - t0)
    return report
