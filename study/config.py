"""A study's CONFIG.toml → a validated ``Study``: models, attacks with their eps, data, seeds.

The file (see ``examples/small.toml`` for a documented one):

    [study]                      name, dataset ("fashion-mnist"), data_dir (optional), seeds
                                 ([0]), train_examples / test_examples (optional: the first N),
                                 sanity (true), sanity_examples (256), batch_size (256, attacks)
    [train]                      the recipe of dense and compact models: epochs (12), batch_size
                                 (64), lr (0.02), momentum (0.9), weight_decay (5e-4),
                                 schedule ("cosine")
    [[models]]  kind = "dense"       name, arch (a name of models.lenet.MODELS or models.zoo.ZOO),
                                     kwargs (table, optional), train (table overriding [train])
    [[models]]  kind = "compressed"  name, base (the name of a dense model), preset (a name of
                                     compress.pipeline.PRESETS, optional), settings (a table of
                                     CompressionSettings fields overriding the preset)
    [[models]]  kind = "compact"     as dense: a small architecture trained from scratch
    [[attacks]]                      name (of attacks.ATTACKS or its aliases; bounded attacks
                                     only for now), eps (a list of radii)

A cell is one (model, attack, eps, seed). Errors are ``ValueError``s naming the file and key.
"""

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field

KINDS = ("dense", "compressed", "compact")
TRAIN_DEFAULTS = dict(epochs=12, batch_size=64, lr=0.02, momentum=0.9, weight_decay=5e-4,
                      schedule="cosine")
_STUDY_KEYS = {"name", "dataset", "data_dir", "seeds", "train_examples", "test_examples",
               "sanity", "sanity_examples", "batch_size"}
_MODEL_KEYS = {"dense": {"name", "kind", "arch", "kwargs", "train"},
               "compact": {"name", "kind", "arch", "kwargs", "train"},
               "compressed": {"name", "kind", "base", "preset", "settings"}}


@dataclass(frozen=True)
class ModelSpec:
    """One model of the grid. ``base`` and ``settings`` only for compressed models; ``train``
    is the full recipe (defaults merged) for dense and compact ones."""

    name: str
    kind: str
    arch: str = None
    kwargs: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    base: str = None
    preset: str = None
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    """One row of the results: a model, an attack at one eps, a seed."""

    model: str
    attack: str
    eps: float
    seed: int


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
    models: list          # [ModelSpec], bases before the models compressed from them
    attacks: dict         # canonical attack name → [eps]
    source: str = None

    def model(self, name):
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def cells(self):
        """Every cell, in run order: seed, then model, then attack, then eps."""
        return [Cell(m.name, a, e, s) for s in self.seeds for m in self.models
                for a, eps in self.attacks.items() for e in eps]

    def model_identity(self, name, seed):
        """What determines a trained (or compressed) model: JSON-ready, recursive through
        ``base``. Two studies that agree on it share the model artifact."""
        m = self.model(name)
        ident = {"kind": m.kind, "dataset": self.dataset, "train_examples": self.train_examples,
                 "seed": seed}
        if m.kind == "compressed":
            ident.update(base=self.model_identity(m.base, seed), settings=self.compression(m))
        else:
            ident.update(arch=m.arch, kwargs=m.kwargs, train=m.train)
        return ident

    def model_key(self, name, seed):
        """A short stable hash of ``model_identity``."""
        return _digest(self.model_identity(name, seed))[:16]

    def compression(self, m):
        """The CompressionSettings fields of a compressed model as a dict (preset + settings)."""
        from ..compress.pipeline import PRESETS, CompressionSettings

        fields = dict(PRESETS[m.preset]) if m.preset else {"kept": {}, "bits": {}}
        fields.update(m.settings)
        return asdict(CompressionSettings(**fields))

    def cell_key(self, cell):
        """The unique key of a cell's row: the model's identity, the attack, eps, seed and the
        evaluation settings. A rerun with the same key skips the cell."""
        return _digest({"model": self.model_identity(cell.model, cell.seed),
                        "attack": cell.attack, "eps": cell.eps, "seed": cell.seed,
                        "test_examples": self.test_examples, "sanity": self.sanity,
                        "sanity_examples": self.sanity_examples,
                        "batch_size": self.batch_size})


def _digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def load_config(path):
    """Read and validate a study file → ``Study``."""
    with open(path, "rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML: {e}") from None
    study = parse_config(data, source=str(path))
    return study


def _err(source, key, message):
    return ValueError(f"{source}: {key}: {message}")


def _int(value, source, key, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _err(source, key, f"expected an integer >= {low}, got {value!r}")
    return value


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


def _train_recipe(table, base, source, where):
    table = _table(table, source, where)
    _unknown(table, TRAIN_DEFAULTS, source, where)
    recipe = dict(base)
    for k, v in table.items():
        key = f"{where}.{k}"
        if k in ("epochs", "batch_size"):
            recipe[k] = _int(v, source, key, 1 if k == "batch_size" else 0)
        elif k == "schedule":
            if v not in ("cosine", "step", "constant"):
                raise _err(source, key, f"expected cosine, step or constant, got {v!r}")
            recipe[k] = v
        else:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise _err(source, key, f"expected a number >= 0, got {v!r}")
            recipe[k] = float(v)
    return recipe


def _architectures():
    from ..models.lenet import MODELS
    from ..models.zoo import ZOO

    return set(MODELS) | set(ZOO)


def parse_config(data, *, source="<config>"):
    """Validate a parsed TOML document (a dict) → ``Study``."""
    from ..attacks.evaluate import BOUNDED, UNBOUNDED, canonical_attack
    from ..compress.pipeline import PRESETS, CompressionSettings

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
    models, names = [], set()
    for i, m in enumerate(raw_models):
        where = f"models[{i}]"
        m = _table(m, source, where)
        name = _str(m.get("name"), source, f"{where}.name")
        where = f"models[{i}] ({name})"
        if name in names:
            raise _err(source, f"{where}.name", "repeated model name")
        kind = m.get("kind")
        if kind not in KINDS:
            raise _err(source, f"{where}.kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
        _unknown(m, _MODEL_KEYS[kind], source, where)
        if kind == "compressed":
            base = _str(m.get("base"), source, f"{where}.base")
            if base not in names:
                raise _err(source, f"{where}.base", f"no dense model named {base!r} before it")
            if next(x for x in models if x.name == base).kind != "dense":
                raise _err(source, f"{where}.base", f"{base!r} is not a dense model")
            preset = m.get("preset")
            if preset is not None and preset not in PRESETS:
                raise _err(source, f"{where}.preset",
                           f"unknown preset {preset!r} (presets: {', '.join(sorted(PRESETS))})")
            settings = dict(_table(m.get("settings", {}), source, f"{where}.settings"))
            allowed = set(CompressionSettings.__dataclass_fields__) - {"seed"}
            _unknown(settings, allowed, source, f"{where}.settings")
            for what, ok, expect in (
                    ("kept", lambda v: not isinstance(v, bool) and isinstance(v, (int, float))
                     and 0 < v <= 1, "a fraction in (0, 1]"),
                    ("bits", lambda v: not isinstance(v, bool) and isinstance(v, int)
                     and 1 <= v <= 16, "an integer in [1, 16]"),
                    ("gap_bits", lambda v: not isinstance(v, bool) and isinstance(v, int)
                     and 1 <= v <= 16, "an integer in [1, 16]")):
                if what in settings:
                    table = _table(settings[what], source, f"{where}.settings.{what}")
                    for layer, v in table.items():
                        if not ok(v):
                            raise _err(source, f"{where}.settings.{what}.{layer}",
                                       f"expected {expect}, got {v!r}")
            if preset is None and not (settings.get("kept") or settings.get("bits")):
                raise _err(source, where, "give a preset or settings.kept / settings.bits")
            spec = ModelSpec(name, kind, base=base, preset=preset, settings=settings)
        else:
            arch = _str(m.get("arch"), source, f"{where}.arch")
            if arch not in archs:
                raise _err(source, f"{where}.arch",
                           f"unknown architecture {arch!r} (known: {', '.join(sorted(archs))})")
            kwargs = dict(_table(m.get("kwargs", {}), source, f"{where}.kwargs"))
            bad = sorted(set(kwargs) & {"seed", "dtype", "num_classes", "input_shape"})
            if bad:
                raise _err(source, f"{where}.kwargs.{bad[0]}", "set by the study, not the model")
            recipe = _train_recipe(m.get("train", {}), train, source, f"{where}.train")
            spec = ModelSpec(name, kind, arch=arch, kwargs=kwargs, train=recipe)
        models.append(spec)
        names.add(name)

    raw_attacks = data.get("attacks")
    if not isinstance(raw_attacks, list) or not raw_attacks:
        raise _err(source, "attacks", "expected at least one [[attacks]] entry")
    attacks = {}
    for i, a in enumerate(raw_attacks):
        where = f"attacks[{i}]"
        a = _table(a, source, where)
        _unknown(a, {"name", "eps"}, source, where)
        try:
            name = canonical_attack(_str(a.get("name"), source, f"{where}.name"), where)
        except ValueError as e:
            raise _err(source, f"{where}.name", str(e)) from None
        if name in UNBOUNDED:
            raise _err(source, f"{where}.name", f"{name} is unbounded (no eps); the study runs "
                                                f"bounded attacks only for now: "
                                                f"{', '.join(sorted(BOUNDED))}")
        if name in attacks:
            raise _err(source, f"{where}.name", f"attack {name} listed twice")
        eps = a.get("eps")
        if not isinstance(eps, list) or not eps:
            raise _err(source, f"{where}.eps", f"expected a non-empty list of numbers, got {eps!r}")
        values = []
        for e in eps:
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 <= e < float("inf"):
                raise _err(source, f"{where}.eps", f"every eps must be a finite number >= 0, "
                                                   f"got {e!r}")
            values.append(float(e))
        if len(set(values)) != len(values):
            raise _err(source, f"{where}.eps", f"repeated eps in {values}")
        attacks[name] = values

    return Study(name=str(st.get("name", "study")), dataset=dataset, data_dir=data_dir,
                 seeds=seeds, train_examples=opt["train_examples"],
                 test_examples=opt["test_examples"], sanity=sanity,
                 sanity_examples=_int(st.get("sanity_examples", 256), source,
                                      "study.sanity_examples", 1),
                 batch_size=_int(st.get("batch_size", 256), source, "study.batch_size", 1),
                 models=models, attacks=attacks, source=source)
