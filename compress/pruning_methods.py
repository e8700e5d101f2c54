"""The pruning methods: one record per method, the table ``robustcnn compress --pruning``,
``robustcnn info``, the study's ``settings.pruning`` and ``compress.pipeline.compress`` read.

Each is the pruning stage of the Deep Compression pipeline (``compress.pipeline``): dense →
prune → quantize (k-means weight sharing) → Huffman-code. A method replaces the pruning stage
and leaves the others as the settings say, so each writes an ``.rcnn`` that the existing CSR,
sparse-codebook and Huffman kernels compute on:

    name       paper                          what it does
    magnitude  Han, Pool, Tran & Dally 2015   magnitude pruning in rounds, retraining
    obd        LeCun, Denker & Solla 1989     saliency ½·h_kk·w² pruning, retraining
    dns        Guo, Yao & Chen 2016           pruning and splicing masks while training
    hydra      Sehwag et al. 2020             scores learnt under the (adversarial) loss,
                                              top-k, fine-tuning
    admm       Ye et al. 2019                 ADMM under the (adversarial) loss, then
                                              masked retraining

A method's record: ``name``, ``function(stage, options)`` (the stage, given a
``pipeline.Stage`` and its options record), ``options`` (a dataclass of its own settings:
``CompressionSettings.pruning_options`` as a dict), ``paper`` and ``summary``. Adding a method
is its module and one record here.
"""

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Callable

from . import admm, dns, hydra, obd
from .prune import magnitude_stage


@dataclass
class NoOptions:
    """A method without options of its own (the CompressionSettings fields are its settings)."""


@dataclass(frozen=True)
class PruningMethod:
    """One pruning method (see the module docstring)."""

    name: str
    function: Callable
    options: type
    paper: str
    summary: str

    def parse_options(self, options, where="pruning_options"):
        """The options record from a dict (None: the defaults); unknown keys, wrong types and
        values its record refuses are one-line ValueErrors naming ``where`` and the method."""
        return parse_options(self, options, where)


PRUNING_METHODS = {m.name: m for m in (
    PruningMethod("magnitude", magnitude_stage, NoOptions, "Han, Pool, Tran & Dally 2015",
                  "magnitude pruning in rounds with retraining (Deep Compression's)"),
    PruningMethod("obd", obd.obd_stage, obd.OBDOptions, "LeCun, Denker & Solla 1989",
                  "prune by saliency ½·h_kk·w² (Gauss-Newton diagonal), retrain, in rounds"),
    PruningMethod("dns", dns.dns_stage, dns.DNSOptions, "Guo, Yao & Chen 2016",
                  "dynamic network surgery: masks pruned and spliced while training"),
    PruningMethod("hydra", hydra.hydra_stage, hydra.HydraOptions,
                  "Sehwag, Wang, Mittal & Jana 2020",
                  "importance scores optimised under the (adversarial) loss, weights frozen; "
                  "top-k; fine-tuning"),
    PruningMethod("admm", admm.admm_stage, admm.ADMMOptions, "Ye et al. 2019",
                  "ADMM pruning (irregular, column, filter) under the (adversarial) loss, "
                  "masked retraining"),
)}
DEFAULT = "magnitude"


def pruning_method(name, where="pruning"):
    """The record of pruning method ``name``; an unknown name is a ValueError listing the
    known."""
    spec = PRUNING_METHODS.get(name.strip().lower()) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"{where}: unknown pruning method {name!r}; known: "
                         f"{', '.join(PRUNING_METHODS)}")
    return spec


def pruning_stage(settings):
    """The pruning stage of ``settings`` (a CompressionSettings): a callable of a
    ``pipeline.Stage``. Its options are parsed here, so bad ones fail before any work."""
    spec = pruning_method(settings.pruning, "compression settings: pruning")
    options = spec.parse_options(settings.pruning_options,
                                 "compression settings: pruning_options")
    return lambda stage: spec.function(stage, options)


def _check_type(value, kind):
    """Whether ``value`` fits the annotation ``kind`` (float, int, str, bool, dict, unions)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_check_type(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is dict or origin is dict:
        return isinstance(value, dict)
    return isinstance(value, kind)


def parse_options(spec, options, where="pruning_options"):
    """See ``PruningMethod.parse_options``."""
    cls = spec.options
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValueError(f"{where}: options of method {spec.name} must be a table, got "
                         f"{options!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in options.items():
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise ValueError(f"{where}: unknown option {key!r} of method {spec.name} "
                             f"(known: {known})")
        if not _check_type(value, hints[key]):
            raise ValueError(f"{where}: option {key!r} of method {spec.name} must be "
                             f"{_type_name(hints[key])}, got {value!r}")
    try:
        return cls(**options)
    except ValueError as e:
        raise ValueError(f"{where}: method {spec.name}: {e}") from None


def _type_name(kind):
    args = typing.get_args(kind)
    if args:
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false",
            dict: "a table"}.get(kind, getattr(kind, "__name__", str(kind)))


def options_from_text(spec, text, where="--pruning-options"):
    """Options of ``spec`` from the command line: a JSON object, or KEY=VALUE pairs separated
    by commas with each value read as its field's type (numbers, strings, true/false) → dict
    (checked later by ``parse_options``)."""
    text = (text or "").strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not a JSON object ({e})") from None
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a JSON object, got {value!r}")
        return value
    hints = typing.get_type_hints(spec.options)
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{where} takes KEY=VALUE pairs or a JSON object, got {item!r}")
        out[key] = _read_value(raw.strip(), hints.get(key))
    return out


def _read_value(raw, kind):
    kinds = typing.get_args(kind) or (kind,)
    if bool in kinds and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for k in (int, float):
        if k in kinds or (k is int and float in kinds):
            try:
                return k(raw)
            except ValueError:
                pass
    return raw
