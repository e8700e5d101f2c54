"""A study's CONFIG.toml → a validated ``Study``: models, attacks with their eps, data, seeds.

The file (see ``examples/demo.toml`` and ``examples/paper.toml`` for documented ones):

    [study]                      name, dataset ("fashion-mnist"), data_dir (optional), seeds
                                 ([0]), train_examples / test_examples (optional: the first N),
                                 sanity (true), sanity_examples (256), batch_size (256, attacks)
    [train]                      the recipe of trained models: epochs (12), batch_size (64),
                                 lr (0.02), momentum (0.9), weight_decay (5e-4), schedule
                                 ("cosine"), adversarial (optional: {attack, eps, fraction,
                                 steps}: adversarial training; or {objective = "trades",
                                 eps, beta, steps}: TRADES)
    [[models]]  kind = "dense"       name, arch (a name of models.lenet.MODELS or models.zoo.ZOO),
                                     kwargs (table, optional), train (table overriding [train])
    [[models]]  kind = "compact"     as dense, plus params (optional: build the architecture at
                                     the width that gives about this many parameters)
    [[models]]  kind = "compressed"  name, base (an earlier model), preset (a name of
                                     compress.pipeline.PRESETS, optional), settings (a table of
                                     CompressionSettings fields overriding the preset, e.g.
                                     adversarial = {...}: adversarial-aware compression;
                                     pruning = "hydra" and pruning_options = {...}: another
                                     pruning method, compress.pruning_methods), target_ratio
                                     (optional: scale the kept shares to reach it),
                                     match_bytes (optional, instead: an earlier model whose
                                     file size, per seed, the kept shares are scaled to
                                     reach: build.sized_settings), stages (optional: the pipeline stages to run,
                                     a non-empty list of "prune", "quantize", "huffman"; the
                                     default all three: ["prune"] keeps the preset's shares
                                     unquantized, ["quantize"] its code bits unpruned),
                                     code_bits (optional: every layer with a weight gets
                                     these code bits where settings.bits does not name it,
                                     e.g. 8 with stages = ["quantize"]: 8-bit weights). A
                                     base without a preset (a compact model) with a
                                     target_ratio or match_bytes starts from every layer with
                                     5-bit codes (compress.target.generic_settings)
    [[models]]  kind = "quantized"   name, base (an earlier model), method (a name of
                                     compress.methods.METHODS: int8, ttq, …), options (a table of
                                     the method's own options, e.g. epochs; its seed is the
                                     study's)
    [[models]]  kind = "finetuned"   name, base (an earlier model), train: more training of the
                                     base in its own weight formats (e.g. adversarially)
    [[models]]  kind = "structured"  name, structure ("circulant" or "toeplitz-like"), rank
                                     (displacement rank, 1; circulant: 1), arch (default
                                     "lenet-300-100-structured"), train: a net whose hidden
                                     FC layers are structured matrices trained from scratch
                                     (Sindhwani, Sainath & Kumar 2015)
    [[models]]  kind = "distilled"   as compact, plus teacher (an earlier model), temperature
                                     (4), alpha (0.9): Hinton et al.'s knowledge distillation
    [[models]]  kind = "lowrank"     name, base, ratio or ranks (a table layer → rank), train
                                     (the fine-tuning after factorising)
    [[models]]  kind = "imported"    name, path (a model file ``robustcnn.load`` reads: ONNX,
                                     Keras, Caffe prototxt, checkpoint, .rcnn; relative to the
                                     study file), weights (a Caffe prototxt's), bounds ([low,
                                     high]) and preprocessing (a table: mean, std, scale,
                                     channel_order) where the file does not say them, train
                                     (optional fine-tuning: epochs 0 unless set). The dataset's
                                     [0, 1] images are mapped onto its bounds and preprocessed
                                     in front of it (``Net.with_preprocessing``), so its eps
                                     are in [0, 1] units like every other model's
    [[attacks]]                      name (of attacks.ATTACKS or its aliases), eps (a list of
                                     radii; for unbounded attacks — DeepFool, C&W — optional
                                     radii at which to also report accuracy), source (optional:
                                     an earlier model whose adversarial examples are transferred
                                     to every other model), options (a table of keyword
                                     arguments of the attack, e.g. max_iter), examples
                                     (optional: attack only the first N of the study's test
                                     images, e.g. AutoAttack on fewer than the others)

A cell is one (model, attack, eps, seed), unbounded attacks one cell without eps, and with
``sanity`` one cell per (model, seed) of sanity checks. Errors are ``ValueError``s naming the file
and key, found when the file is read: a compressed model's layer names (in its preset and
settings) are checked against its base's architecture, code bits against what the weight
formats hold (1 to 8). A study file of more than ``MAX_CONFIG_BYTES`` is not read.
"""

import hashlib
import json
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field

# The study's vocabulary: every other module of study/ takes these names from here.
KINDS = ("dense", "compact", "compressed", "quantized", "finetuned", "distilled", "lowrank",
         "imported", "structured")
TRAINED_FROM_SCRATCH = ("dense", "compact", "distilled", "structured")
# The headline's two sides: models made small by compression, and models designed (or
# distilled, or factorised) small.
COMPRESSED_KINDS = ("compressed", "quantized", "finetuned")
COMPACT_KINDS = ("compact", "distilled", "lowrank", "structured")
STRUCTURED_ARCH = "lenet-300-100-structured"  # a structured model's architecture by default
# How a model's lineage was trained adversarially (``Study.adversarial``) → what it is called.
ADVERSARIAL_LINEAGE = {"": "none", "compressed": "adversarial-aware compression",
                       "finetuned": "compress, then adversarial training",
                       "dense": "adversarial training, then compress"}
SANITY = "sanity"  # the attack name of a model's sanity-check cell: checks, not an attack
TRANSFER = "transfer"  # a transfer attack's label: transfer:fgsm<-lenet5 (attack_label)
TRAIN_DEFAULTS = dict(epochs=12, batch_size=64, lr=0.02, momentum=0.9, weight_decay=5e-4,
                      schedule="cosine")
ADVERSARIAL_KEYS = {"objective", "attack", "eps", "fraction", "steps"}
TRADES_KEYS = {"objective", "eps", "beta", "steps"}
MAX_CONFIG_BYTES = 1 << 20  # a study file is a few KiB
_STUDY_KEYS = {"name", "dataset", "data_dir", "seeds", "train_examples", "test_examples",
               "sanity", "sanity_examples", "batch_size"}
_MODEL_KEYS = {"dense": {"name", "kind", "arch", "kwargs", "train"},
               "compact": {"name", "kind", "arch", "kwargs", "params", "train"},
               "compressed": {"name", "kind", "base", "preset", "settings", "target_ratio",
                              "match_bytes", "stages", "code_bits"},
               "quantized": {"name", "kind", "base", "method", "options"},
               "finetuned": {"name", "kind", "base", "train"},
               "distilled": {"name", "kind", "arch", "kwargs", "params", "train", "teacher",
                             "temperature", "alpha"},
               "lowrank": {"name", "kind", "base", "ratio", "ranks", "train"},
               "structured": {"name", "kind", "arch", "structure", "rank", "train"},
               "imported": {"name", "kind", "path", "weights", "bounds", "preprocessing",
                            "train"}}


def attack_label(name, source=None):
    """The results' name of an attack: its own name, or for examples crafted on the model
    ``source`` and transferred, ``transfer:<name><-<source>``."""
    return f"{TRANSFER}:{name}<-{source}" if source else name


def parse_attack_label(label):
    """(attack, source model or None) of an attack label: ``transfer:FGSM<-lenet5`` →
    ("fgsm", "lenet5"); the attack lower-cased, as rows of any age spell it."""
    text = str(label)
    source = None
    if text.startswith(f"{TRANSFER}:") and "<-" in text:
        text, source = text[len(TRANSFER) + 1:].split("<-", 1)
        source = source.strip()
    return text.rsplit(":", 1)[-1].split("<-", 1)[0].strip().lower(), source


def base_attack(label):
    """The attack a (possibly transfer) label runs: ``transfer:fgsm<-lenet5`` → fgsm."""
    return parse_attack_label(label)[0]


def is_unbounded_attack(label):
    """Whether the attack a label runs takes no eps (DeepFool, C&W, …): the one place the
    study decides it from a name alone (report rows that stored eps as 0)."""
    from ..attacks.registry import attack_spec  # imports the engine: only when asked

    try:
        return not attack_spec(base_attack(label)).bounded
    except ValueError:  # a name this robustcnn does not know: a row from another version
        return False


@dataclass(frozen=True)
class ModelSpec:
    """One model of the grid. ``train`` is the full recipe (defaults merged) of the kinds that
    train; ``base`` names the model a compressed, finetuned or lowrank one starts from,
    ``teacher`` the one a distilled model learns from and ``match`` the one whose file size a
    compressed model is compressed to (``match_bytes``); ``options`` holds the kind's own
    fields (target_ratio, stages, code_bits, params, temperature, alpha, ratio, ranks; a quantized model's
    method and method_options; an imported model's bounds, preprocessing and its files'
    digest); ``path`` and ``weights`` are an imported model's files (absolute)."""

    name: str
    kind: str
    arch: str = None
    kwargs: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    base: str = None
    preset: str = None
    settings: dict = field(default_factory=dict)
    teacher: str = None
    options: dict = field(default_factory=dict)
    path: str = None
    weights: str = None
    match: str = None

    @property
    def parents(self):
        """The models this one is made from (its base first), and the one whose file size it
        matches: all built before it."""
        return [m for m in (self.base, self.teacher, self.match) if m]


@dataclass(frozen=True)
class AttackSpec:
    """One [[attacks]] entry: the attack's canonical name, its eps (None for an unbounded
    attack's single run), the transfer ``source`` model or None, keyword ``options``."""

    name: str
    norm: str
    eps: tuple
    bounded: bool
    source: str = None
    options: dict = field(default_factory=dict)
    examples: int = None  # the first N of the study's test images; None: all of them

    @property
    def label(self):
        """The attack column of the results: ``fgsm``, or ``transfer:fgsm<-lenet5``."""
        return attack_label(self.name, self.source)


@dataclass(frozen=True)
class Cell:
    """One row of the results: a model, an attack (its label) at one eps (None: unbounded, or
    the sanity checks), a seed."""

    model: str
    attack: str
    eps: float
    seed: int

    def describe(self):
        """One line for progress bars: ``dense fgsm eps 0.1 seed 0``."""
        eps = "" if self.eps is None else f" eps {self.eps:g}"
        return f"{self.model} {self.attack}{eps} seed {self.seed}"


@dataclass
class Study:
    name: str
    dataset: str
    data_dir: str
    seeds: list
    train_examples: int
    test_examples: int
    sanity: bool
    sanity_examples: int
    batch_size: int
    models: list          # [ModelSpec], parents before the models made from them
    attacks: dict         # label → AttackSpec
    source: str = None
    config_hash: str = None  # of the parsed document (provenance.config_hash)

    def model(self, name):
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def arch(self, name):
        """The architecture a model has (or was made from)."""
        m = self.model(name)
        if m.kind == "imported":
            return os.path.basename(m.path)
        return m.arch if m.arch else self.arch(m.base)

    def adversarial(self, name):
        """How a model or one of its ancestors was trained adversarially: "" (never), or the
        kinds of adversarial training along its lineage, e.g. "compressed" for adversarial-aware
        compression, "dense" for a compressed model of an adversarially trained base."""
        m = self.model(name)
        own = bool(m.train.get("adversarial") or m.settings.get("adversarial"))
        found = [m.kind] if own else []
        if m.base:
            found += [k for k in self.adversarial(m.base).split("+") if k]
        return "+".join(found)

    def adversarial_recipe(self, name):
        """The adversarial-training record nearest along a model's lineage (its own, else its
        base's, …; ``_adversarial``'s dict), or None when none of them trained adversarially."""
        m = self.model(name)
        own = m.train.get("adversarial") or m.settings.get("adversarial")
        if own:
            return own
        return self.adversarial_recipe(m.base) if m.base else None

    def bounded_eps(self):
        """Every eps of the bounded white-box attacks, sorted: what the sanity cells check."""
        return sorted({e for a in self.attacks.values() if a.bounded and not a.source
                       for e in a.eps})

    def cells(self):
        """Every cell, in run order: seed, then model, then attack, then eps; a model's sanity
        cell after its attacks. A transfer attack skips its own source model."""
        out = []
        for s in self.seeds:
            for m in self.models:
                for label, a in self.attacks.items():
                    if a.source == m.name:
                        continue
                    out += [Cell(m.name, label, e, s) for e in (a.eps if a.bounded else [None])]
                if self.sanity:
                    out.append(Cell(m.name, SANITY, None, s))
        return out

    def cell_models(self, cell):
        """The models a cell needs: its own, and a transfer attack's source."""
        a = self.attacks.get(cell.attack)
        return [cell.model] + ([a.source] if a is not None and a.source else [])

    def model_identity(self, name, seed):
        """What determines a trained (or compressed) model: JSON-ready, recursive through its
        parents. Two studies that agree on it share the model artifact."""
        m = self.model(name)
        ident = {"kind": m.kind, "dataset": self.dataset, "train_examples": self.train_examples,
                 "seed": seed}
        if m.kind == "compressed":
            ident.update(base=self.model_identity(m.base, seed), settings=self.compression(m))
        else:
            ident.update(train=m.train)
        if m.arch:
            ident.update(arch=m.arch, kwargs=m.kwargs)
        if m.base and m.kind != "compressed":
            ident.update(base=self.model_identity(m.base, seed))
        if m.teacher:
            ident.update(teacher=self.model_identity(m.teacher, seed))
        if m.match:  # its file's size, hence the target, is that model's
            ident.update(match=self.model_identity(m.match, seed))
        if m.options:
            ident.update(options=m.options)
        return ident

    def model_key(self, name, seed):
        """A short stable hash of ``model_identity``."""
        return _digest(self.model_identity(name, seed))[:16]

    def compression(self, m):
        """The CompressionSettings fields of a compressed model as a dict (preset + settings,
        then its ``stages``: a stage left out clears what it reads)."""
        from ..compress.pipeline import PRESETS, CompressionSettings

        fields = dict(PRESETS[m.preset]) if m.preset else {"kept": {}, "bits": {}}
        fields.update(m.settings)
        stages = m.options.get("stages")
        if stages is not None:
            if "prune" not in stages:
                fields["kept"] = {}
            if "quantize" not in stages:
                fields["bits"], fields["gap_bits"] = {}, {}
            if "huffman" not in stages:
                fields["huffman"] = False
        out = asdict(CompressionSettings(**fields))
        if out["pruning"] == "magnitude" and not out["pruning_options"]:
            del out["pruning"], out["pruning_options"]  # keys of models from before stay
        if out["entropy"] == "huffman":
            del out["entropy"]  # likewise
        return out

    def cell_key(self, cell):
        """The unique key of a cell's row: the model's identity, the attack (with a transfer
        source's identity), eps, seed and the evaluation settings. A rerun with the same key
        skips the cell."""
        ident = {"model": self.model_identity(cell.model, cell.seed), "attack": cell.attack,
                 "eps": cell.eps, "seed": cell.seed, "test_examples": self.test_examples,
                 "batch_size": self.batch_size}
        if cell.attack == SANITY:
            ident.update(sanity_examples=self.sanity_examples, checked_eps=self.bounded_eps())
        else:
            a = self.attacks[cell.attack]
            if a.options:
                ident["options"] = a.options
            if a.examples:
                ident["examples"] = a.examples
            if a.source:
                ident["source"] = self.model_identity(a.source, cell.seed)
            if not a.bounded and a.eps:
                ident["thresholds"] = list(a.eps)
        return _digest(ident)


def _digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def load_config(path):
    """Read and validate a study file → ``Study``."""
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, not a study file")
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: {size:,} bytes, more than a study file may hold "
                         f"({MAX_CONFIG_BYTES:,})")
    with open(path, "rb") as f:
        try:
            data = tomllib.loads(f.read(MAX_CONFIG_BYTES + 1).decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.start})") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML: {e}") from None
        except RecursionError:
            raise ValueError(f"{path}: not valid TOML: nested too deep") from None
    return parse_config(data, source=str(path))


def _err(source, key, message):
    return ValueError(f"{source}: {key}: {message}")


def _int(value, source, key, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _err(source, key, f"expected an integer >= {low}, got {value!r}")
    return value


def _number(value, source, key, low=0.0, high=math.inf, low_open=False):
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < low or value > high
            or (low_open and value == low)):
        bounds = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}"
                                                          if high < math.inf else "")
        raise _err(source, key, f"expected a finite number {bounds}, got {value!r}")
    return float(value)


def _str(value, source, key):
    if not isinstance(value, str) or not value:
        raise _err(source, key, f"expected a non-empty string, got {value!r}")
    return value


def _table(value, source, key):
    if not isinstance(value, dict):
        raise _err(source, key, f"expected a table, got {value!r}")
    return value


def _unknown(table, allowed, source, where):
    extra = sorted(set(table) - set(allowed))
    if extra:
        raise _err(source, f"{where}.{extra[0]}",
                   f"unknown key (allowed: {', '.join(sorted(allowed))})")


def adversarial_recipe_label(recipe):
    """An adversarial-training record in a few words: ``fgsm ε=0.1, 50% of each batch``,
    ``pgd-10 ε=0.1, 100% of each batch``, ``trades ε=0.1 β=6``; "" for None."""
    if not recipe:
        return ""
    if recipe.get("objective") == "trades":
        steps = f"-{recipe['steps']}" if "steps" in recipe else ""
        return f"trades{steps} ε={recipe['eps']:g} β={recipe.get('beta', 6.0):g}"
    steps = f"-{recipe['steps']}" if recipe.get("steps") else ""
    return (f"{recipe['attack']}{steps} ε={recipe['eps']:g}, "
            f"{100 * recipe.get('fraction', 0.5):g}% of each batch")


def _adversarial(table, source, where):
    """An adversarial-training table → its canonical dict (attack name resolved). With
    ``objective = "trades"`` (Zhang et al.'s TRADES): eps, beta (6), steps (10), no attack."""
    from ..attacks.registry import attack_spec

    table = _table(table, source, where)
    objective = table.get("objective", "mixed")
    if objective not in ("mixed", "trades"):
        raise _err(source, f"{where}.objective", f"expected mixed or trades, got {objective!r}")
    if objective == "trades":
        _unknown(table, TRADES_KEYS, source, where)
        if "eps" not in table:
            raise _err(source, f"{where}.eps", "missing (the radius of the inner maximisation)")
        out = {"objective": "trades", "eps": _number(table["eps"], source, f"{where}.eps"),
               "beta": _number(table.get("beta", 6.0), source, f"{where}.beta")}
        if "steps" in table:
            out["steps"] = _int(table["steps"], source, f"{where}.steps", 1)
        return out
    _unknown(table, ADVERSARIAL_KEYS, source, where)
    try:
        record = attack_spec(_str(table.get("attack", "fgsm"), source, f"{where}.attack"), where)
    except ValueError as e:
        raise _err(source, f"{where}.attack", str(e)) from None
    attack = record.name
    if not record.bounded:
        raise _err(source, f"{where}.attack", f"{attack} has no eps; adversarial training "
                                              f"needs a bounded attack")
    if "eps" not in table:
        raise _err(source, f"{where}.eps", "missing (the radius of the training attack)")
    out = {"attack": attack, "eps": _number(table["eps"], source, f"{where}.eps"),
           "fraction": _number(table.get("fraction", 0.5), source, f"{where}.fraction", 0, 1)}
    if "steps" in table:
        out["steps"] = _int(table["steps"], source, f"{where}.steps", 1)
    return out


def _train_recipe(table, base, source, where):
    table = _table(table, source, where)
    _unknown(table, set(TRAIN_DEFAULTS) | {"adversarial"}, source, where)
    recipe = dict(base)
    for k, v in table.items():
        key = f"{where}.{k}"
        if k in ("epochs", "batch_size"):
            recipe[k] = _int(v, source, key, 1 if k == "batch_size" else 0)
        elif k == "schedule":
            if v not in ("cosine", "step", "constant"):
                raise _err(source, key, f"expected cosine, step or constant, got {v!r}")
            recipe[k] = v
        elif k == "adversarial":
            recipe[k] = _adversarial(v, source, key)
        else:
            recipe[k] = _number(v, source, key)
    return recipe


def _architectures():
    from ..models.architectures import names

    return set(names())


def _compression_settings(m, source, where):
    from ..compress.pipeline import CompressionSettings

    settings = dict(_table(m.get("settings", {}), source, f"{where}.settings"))
    allowed = set(CompressionSettings.__dataclass_fields__) - {"seed"}
    _unknown(settings, allowed, source, f"{where}.settings")
    for what, ok, expect in (
            ("kept", lambda v: not isinstance(v, bool) and isinstance(v, (int, float))
             and 0 < v <= 1, "a fraction in (0, 1]"),
            ("bits", lambda v: not isinstance(v, bool) and isinstance(v, int)
             and 1 <= v <= 8, "an integer in [1, 8] (the weight formats' code widths)"),
            ("gap_bits", lambda v: not isinstance(v, bool) and isinstance(v, int)
             and 1 <= v <= 8, "an integer in [1, 8] (the weight formats' index widths)")):
        if what in settings:
            table = _table(settings[what], source, f"{where}.settings.{what}")
            for layer, v in table.items():
                if not ok(v):
                    raise _err(source, f"{where}.settings.{what}.{layer}",
                               f"expected {expect}, got {v!r}")
    if "adversarial" in settings:
        settings["adversarial"] = _adversarial(settings["adversarial"], source,
                                               f"{where}.settings.adversarial")
    if "pruning" in settings or "pruning_options" in settings:
        from ..compress.pruning_methods import pruning_method

        try:
            spec = pruning_method(settings.get("pruning", "magnitude"),
                                  f"{where}.settings.pruning")
            spec.parse_options(settings.get("pruning_options"),
                               f"{where}.settings.pruning_options")
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        settings["pruning"] = spec.name
    return settings


def _weighted_layers(models, name, dataset, seen=None):
    """The names of the layers with a weight of model ``name`` (an earlier ``ModelSpec``), or
    None when they cannot be known before it is built (its architecture does not build with
    its kwargs here: the build reports that)."""
    m = next(x for x in models if x.name == name)
    if m.kind == "imported":  # known once its file is loaded: the build reports it
        return None
    if m.arch is None:
        base = _weighted_layers(models, m.base, dataset)
        if base is None or m.kind != "lowrank":
            return base
        return base | {f"{n}_lr1" for n in base}  # a factorised layer's first factor
    from ..models.datasets import DATASETS, input_shape
    from ..models.lenet import MODELS, build_model
    from ..models.zoo import build_zoo

    try:
        net = (build_model if m.arch in MODELS else build_zoo)(
            m.arch, input_shape=input_shape(dataset), num_classes=len(DATASETS[dataset]),
            **m.kwargs)
    except (TypeError, ValueError):
        return None
    return {layer.name for layer in net.layers if hasattr(layer, "weight_format")}


def _check_layer_names(fields, models, dataset, source, where):
    """Every layer a compressed model's preset and settings name is a layer with a weight of
    its base."""
    from ..compress.pipeline import PRESETS

    named = [(f"{where}.preset ({fields['preset']})", layer)
             for what in ("kept", "bits", "gap_bits")
             for layer in PRESETS.get(fields["preset"], {}).get(what, {})
             if what not in fields["settings"]]
    named += [(f"{where}.settings.{what}.{layer}", layer) for what in ("kept", "bits", "gap_bits")
              for layer in fields["settings"].get(what, {})]
    if not named:
        return
    known = _weighted_layers(models, fields["base"], dataset)
    for key, layer in named:
        if known is not None and layer not in known:
            raise _err(source, key, f"the base model {fields['base']} has no layer {layer!r} "
                                    f"with a weight (layers with a weight: "
                                    f"{', '.join(sorted(known))})")


def _quantization(m, source, where):
    """A quantized model's {"method", "method_options"}: the method's options checked by
    ``compress.methods.method_options`` (the seed is the study's)."""
    from ..compress.methods import METHODS, method_options

    method = _str(m.get("method"), source, f"{where}.method")
    if method not in METHODS:
        raise _err(source, f"{where}.method",
                   f"unknown method {method!r} (methods: {', '.join(sorted(METHODS))})")
    given = dict(_table(m.get("options", {}), source, f"{where}.options"))
    if "seed" in given:
        raise _err(source, f"{where}.options.seed", "set by the study, not the model")
    try:
        method_options(method, given)
    except ValueError as e:
        raise _err(source, f"{where}.options", str(e)) from None
    return {"method": method, "method_options": given}


def _parse_model(m, i, models, train, archs, source, dataset="fashion-mnist"):
    from ..compress.pipeline import PRESETS

    where = f"models[{i}]"
    m = _table(m, source, where)
    name = _str(m.get("name"), source, f"{where}.name")
    where = f"models[{i}] ({name})"
    if any(x.name == name for x in models):
        raise _err(source, f"{where}.name", "repeated model name")
    kind = m.get("kind")
    if kind not in KINDS:
        raise _err(source, f"{where}.kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
    _unknown(m, _MODEL_KEYS[kind], source, where)
    earlier = {x.name: x for x in models}

    def parent(key):
        value = _str(m.get(key), source, f"{where}.{key}")
        if value not in earlier:
            raise _err(source, f"{where}.{key}", f"no model named {value!r} before it")
        return value

    fields = {"name": name, "kind": kind}
    options = {}
    if kind in TRAINED_FROM_SCRATCH:
        arch = _str(m.get("arch", STRUCTURED_ARCH if kind == "structured" else None), source,
                    f"{where}.arch")
        if arch not in archs:
            raise _err(source, f"{where}.arch",
                       f"unknown architecture {arch!r} (known: {', '.join(sorted(archs))})")
        kwargs = dict(_table(m.get("kwargs", {}), source, f"{where}.kwargs"))
        bad = sorted(set(kwargs) & {"seed", "dtype", "num_classes", "input_shape"})
        if bad:
            raise _err(source, f"{where}.kwargs.{bad[0]}", "set by the study, not the model")
        if kind == "structured":
            kwargs = _structure(m, source, where)
        fields.update(arch=arch, kwargs=kwargs)
        if "params" in m:
            options["params"] = _int(m["params"], source, f"{where}.params", 1)
    if kind == "imported":
        fields.update(_imported(m, source, where))
        options.update(fields.pop("options"))
        train = {**train, "epochs": 0}  # fine-tuned only when its own train table says
    if kind not in ("compressed", "quantized"):
        fields["train"] = _train_recipe(m.get("train", {}), train, source, f"{where}.train")
    if kind in ("compressed", "quantized", "finetuned", "lowrank"):
        fields["base"] = parent("base")
    if kind == "quantized":
        options.update(_quantization(m, source, where))
    if kind == "compressed":
        preset = m.get("preset")
        if preset is not None:
            preset = _str(preset, source, f"{where}.preset")
        if preset is not None and preset not in PRESETS:
            raise _err(source, f"{where}.preset",
                       f"unknown preset {preset!r} (presets: {', '.join(sorted(PRESETS))})")
        settings = _compression_settings(m, source, where)
        if "target_ratio" in m and "match_bytes" in m:
            raise _err(source, f"{where}.match_bytes", "give either target_ratio or "
                                                       "match_bytes, not both")
        if "target_ratio" in m:
            options["target_ratio"] = _number(m["target_ratio"], source,
                                              f"{where}.target_ratio", 1, low_open=True)
        if "match_bytes" in m:
            fields["match"] = parent("match_bytes")
            if fields["match"] == fields["base"]:
                raise _err(source, f"{where}.match_bytes", f"the base {fields['base']} itself: "
                                                           f"a file its own size needs no "
                                                           f"compression")
        if "code_bits" in m:
            bits = m["code_bits"]
            if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
                raise _err(source, f"{where}.code_bits",
                           f"expected an integer in [1, 8] (the weight formats' code widths), "
                           f"got {bits!r}")
            options["code_bits"] = bits
        if "stages" in m:
            options["stages"] = _stages(m["stages"], settings, options, fields, source, where)
        if preset is None and not (settings.get("kept") or settings.get("bits")
                                   or options.get("target_ratio") or fields.get("match")
                                   or options.get("code_bits")):
            raise _err(source, where, "give a preset, settings.kept / settings.bits, "
                                      "code_bits, a target_ratio or match_bytes")
        fields.update(preset=preset, settings=settings)
        _check_layer_names(fields, models, dataset, source, where)
    if kind == "distilled":
        fields["teacher"] = parent("teacher")
        options["temperature"] = _number(m.get("temperature", 4.0), source,
                                         f"{where}.temperature", 0, low_open=True)
        options["alpha"] = _number(m.get("alpha", 0.9), source, f"{where}.alpha", 0, 1)
    if kind == "lowrank":
        if ("ratio" in m) == ("ranks" in m):
            raise _err(source, where, "give either ratio or ranks")
        if "ratio" in m:
            options["ratio"] = _number(m["ratio"], source, f"{where}.ratio", 1, low_open=True)
        else:
            ranks = _table(m["ranks"], source, f"{where}.ranks")
            options["ranks"] = {k: _int(v, source, f"{where}.ranks.{k}", 1)
                                for k, v in ranks.items()}
    return ModelSpec(options=options, **fields)


def _stages(value, settings, options, fields, source, where):
    """A compressed model's ``stages`` → the list in pipeline order, checked: known and
    distinct names; huffman only with prune and quantize (the coder codes the pruned layers'
    codes); no setting of a stage left out; a size target only with the prune stage (it scales
    the kept shares)."""
    from ..compress.pipeline import STAGES

    key = f"{where}.stages"
    if not isinstance(value, list) or not value:
        raise _err(source, key, f"expected a non-empty list of {', '.join(STAGES)}, got "
                                f"{value!r}")
    for v in value:
        if v not in STAGES:
            raise _err(source, key, f"unknown stage {v!r} (stages: {', '.join(STAGES)})")
    if len(set(value)) != len(value):
        raise _err(source, key, f"repeated stage in {value}")
    if "huffman" in value and not {"prune", "quantize"} <= set(value):
        raise _err(source, key, "huffman codes the pruned and quantized layers' codes: give "
                                "it with prune and quantize (Huffman coding alone is lossless: "
                                "the model it leaves is the base itself)")
    for stage, setting in (("prune", "kept"), ("quantize", "bits"), ("quantize", "gap_bits")):
        if stage not in value and setting in settings:
            raise _err(source, f"{where}.settings.{setting}", f"set, but stages leave out "
                                                              f"{stage}")
    if "quantize" not in value and "code_bits" in options:
        raise _err(source, f"{where}.code_bits", "set, but stages leave out quantize")
    if "huffman" not in value and settings.get("huffman"):
        raise _err(source, f"{where}.settings.huffman", "true, but stages leave out huffman")
    if "prune" not in value and (options.get("target_ratio") or fields.get("match")):
        target = "target_ratio" if options.get("target_ratio") else "match_bytes"
        raise _err(source, f"{where}.{target}", "reaches its size by scaling the kept shares: "
                                                "stages must include prune")
    return [s for s in STAGES if s in value]


def _structure(m, source, where):
    """A structured model's {structure, rank}, checked: the architecture's keyword arguments."""
    from ..engine.structured import STRUCTURES

    structure = _str(m.get("structure"), source, f"{where}.structure")
    if structure not in STRUCTURES:
        raise _err(source, f"{where}.structure",
                   f"expected one of {', '.join(STRUCTURES)}, got {structure!r}")
    rank = _int(m.get("rank", 1), source, f"{where}.rank", 1)
    if structure == "circulant" and rank != 1:
        raise _err(source, f"{where}.rank", f"a circulant matrix has rank 1, got {rank}")
    return {"structure": structure, "rank": rank}


def _imported(m, source, where):
    """An imported model's files (checked, absolute: relative paths from the study file's
    folder) and its input options → {"path", "weights", "options"}; the options hold the
    bounds and preprocessing given, and the files' SHA-256, so that another file is another
    model."""
    folder = os.path.dirname(os.path.abspath(source)) if os.path.exists(str(source)) \
        else os.getcwd()
    files = {}
    for key in ("path", "weights"):
        if key not in m and key == "weights":
            continue
        value = os.path.join(folder, _str(m.get(key), source, f"{where}.{key}"))
        if not os.path.isfile(value):
            raise _err(source, f"{where}.{key}", f"no file {value}")
        files[key] = value
    digest = hashlib.sha256()
    for key in sorted(files):
        with open(files[key], "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    options = {"sha256": digest.hexdigest()}
    # The form only: the values are checked against the net's channels when it loads.
    if m.get("bounds") is not None:
        bounds = m["bounds"]
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise _err(source, f"{where}.bounds", f"expected [low, high] (numbers, or lists of "
                                                  f"one per channel), got {bounds!r}")
        options["bounds"] = bounds
    if m.get("preprocessing") is not None:
        options["preprocessing"] = dict(_table(m["preprocessing"], source,
                                               f"{where}.preprocessing"))
    return {"path": files["path"], "weights": files.get("weights"), "options": options}


def _parse_attack(a, i, attacks, models, source, test_examples=None):
    from ..attacks.registry import attack_spec

    where = f"attacks[{i}]"
    a = _table(a, source, where)
    _unknown(a, {"name", "eps", "source", "options", "examples"}, source, where)
    try:
        record = attack_spec(_str(a.get("name"), source, f"{where}.name"), where)
    except ValueError as e:
        raise _err(source, f"{where}.name", str(e)) from None
    name, bounded = record.name, record.bounded
    src = None
    if "source" in a:
        src = _str(a["source"], source, f"{where}.source")
        if src not in {m.name for m in models}:
            raise _err(source, f"{where}.source", f"no model named {src!r}")
        if not bounded:
            raise _err(source, f"{where}.source", f"transfer attacks need a bounded attack; "
                                                  f"{name} is unbounded")
    eps = a.get("eps")
    if eps is None and not bounded:
        eps = []
    if not isinstance(eps, list) or (bounded and not eps):
        raise _err(source, f"{where}.eps", f"expected a non-empty list of numbers, got {eps!r}")
    values = [_number(e, source, f"{where}.eps") for e in eps]
    if len(set(values)) != len(values):
        raise _err(source, f"{where}.eps", f"repeated eps in {values}")
    options = dict(_table(a.get("options", {}), source, f"{where}.options"))
    bad = sorted(set(options) & {"eps", "clip", "batch_size", "seed", "y", "x", "net",
                                 "progress"})
    if bad:
        raise _err(source, f"{where}.options.{bad[0]}", "set by the study, not the attack")
    examples = None
    if "examples" in a:
        examples = _int(a["examples"], source, f"{where}.examples", 1)
        if test_examples is not None and examples > test_examples:
            raise _err(source, f"{where}.examples", f"{examples} is more than the study's "
                                                    f"test_examples ({test_examples})")
    spec = AttackSpec(name, record.norm, tuple(values), bounded, src, options, examples)
    if spec.label in attacks:
        raise _err(source, f"{where}.name", f"attack {spec.label} listed twice")
    return spec


def parse_config(data, *, source="<config>"):
    """Validate a parsed TOML document (a dict) → ``Study``."""
    from .provenance import config_hash

    data = _table(data, source, "<top level>")
    _unknown(data, {"study", "train", "models", "attacks"}, source, "<top level>")
    st = _table(data.get("study", {}), source, "study")
    _unknown(st, _STUDY_KEYS, source, "study")
    from ..models.datasets import DATASETS

    dataset = _str(st.get("dataset", "fashion-mnist"), source, "study.dataset")
    if dataset not in DATASETS:
        raise _err(source, "study.dataset", f"unknown dataset {dataset!r} (known: "
                                            f"{', '.join(sorted(DATASETS))})")
    seeds = st.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise _err(source, "study.seeds", f"expected a non-empty list of integers, got {seeds!r}")
    seeds = [_int(s, source, "study.seeds", 0) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise _err(source, "study.seeds", f"repeated seeds in {seeds}")
    opt = {}
    for key in ("train_examples", "test_examples"):
        opt[key] = None if st.get(key) is None else _int(st[key], source, f"study.{key}", 1)
    sanity = st.get("sanity", True)
    if not isinstance(sanity, bool):
        raise _err(source, "study.sanity", f"expected true or false, got {sanity!r}")
    data_dir = st.get("data_dir")
    if data_dir is not None:
        data_dir = _str(data_dir, source, "study.data_dir")
    train = _train_recipe(data.get("train", {}), TRAIN_DEFAULTS, source, "train")

    raw_models = data.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise _err(source, "models", "expected at least one [[models]] entry")
    archs = _architectures()
    models = []
    for i, m in enumerate(raw_models):
        models.append(_parse_model(m, i, models, train, archs, source, dataset))

    raw_attacks = data.get("attacks")
    if not isinstance(raw_attacks, list) or not raw_attacks:
        raise _err(source, "attacks", "expected at least one [[attacks]] entry")
    attacks = {}
    for i, a in enumerate(raw_attacks):
        spec = _parse_attack(a, i, attacks, models, source, opt["test_examples"])
        attacks[spec.label] = spec

    return Study(name=str(st.get("name", "study")), dataset=dataset, data_dir=data_dir,
                 seeds=seeds, train_examples=opt["train_examples"],
                 test_examples=opt["test_examples"], sanity=sanity,
                 sanity_examples=_int(st.get("sanity_examples", 256), source,
                                      "study.sanity_examples", 1),
                 batch_size=_int(st.get("batch_size", 256), source, "study.batch_size", 1),
                 models=models, attacks=attacks, source=source, config_hash=config_hash(data))
