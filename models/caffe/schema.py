"""The Caffe schema, ``caffe_subset.proto``, read in Python: its fields and defaults as plain
tables, and — with the ``protobuf`` package — its message classes.

The project declares the messages it reads itself (``caffe_subset.proto``, beside this file,
with Caffe's field numbers). This module reads that file with a small parser for the proto2
constructs it uses — ``syntax``, ``package``, messages and enums (nested too), ``optional``/
``repeated`` fields of scalar, enum or message type with ``[default = …]`` and
``[packed = true]``. Two things are made from it:

- ``fields()`` and ``enums()``: every message's fields (type, repeated or not, default) and every
  enum's values, as plain Python. The translator reads defaults from them, and the text-format
  reader types a prototxt against them; neither needs protobuf.
- ``messages()``: protobuf message classes, from a ``FileDescriptorProto`` built here. No
  ``protoc`` is needed and no generated code is committed, so no generated code ties the schema
  to one protobuf version (tested with protobuf 4.21 and 7.x). The tests check the descriptor
  against ``protoc``'s compilation of the same file.

    from robustcnn.models.caffe.schema import fields, messages
    fields()["PoolingParameter"]["round_mode"].default      # 'CEIL'
    NetParameter = messages()["NetParameter"]                # needs protobuf

The classes live in a private descriptor pool: they do not clash with another ``caffe.*``
schema loaded in the same process (OpenCV's, or a ``caffe_pb2``).
"""

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROTO = Path(__file__).resolve().parent / "caffe_subset.proto"

_SCALARS = {  # proto type name → FieldDescriptorProto.Type name
    "double": "TYPE_DOUBLE", "float": "TYPE_FLOAT", "int64": "TYPE_INT64",
    "uint64": "TYPE_UINT64", "int32": "TYPE_INT32", "uint32": "TYPE_UINT32",
    "bool": "TYPE_BOOL", "string": "TYPE_STRING", "bytes": "TYPE_BYTES",
}
_FLOATS = ("double", "float")

_TOKEN = re.compile(r"""
      (?P<skip>\s+|//[^\n]*|/\*.*?\*/)
    | (?P<string>"[^"\\\n]*"|'[^'\\\n]*')
    | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<word>[A-Za-z_][\w.]*)
    | (?P<punct>[{}\[\]=;,])
""", re.VERBOSE | re.DOTALL)


def _tokens(text, source):
    pos, line = 0, 1
    out = []
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"{source}:{line}: unexpected character {text[pos]!r}")
        if m.lastgroup != "skip":
            out.append((m.group(), line))
        line += m.group().count("\n")
        pos = m.end()
    return out


class _Reader:
    """Recursive descent over the tokens; builds nested dicts, resolved afterwards."""

    def __init__(self, text, source):
        self.toks = _tokens(text, source)
        self.i = 0
        self.source = source

    def peek(self):
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def take(self, expected=None):
        if self.i >= len(self.toks):
            raise ValueError(f"{self.source}: unexpected end of file")
        tok, line = self.toks[self.i]
        if expected is not None and tok != expected:
            raise ValueError(f"{self.source}:{line}: expected {expected!r}, found {tok!r}")
        self.i += 1
        return tok

    def line(self):
        return self.toks[min(self.i, len(self.toks) - 1)][1]

    def file(self):
        package, items = "", []
        while self.peek() is not None:
            tok = self.take()
            if tok == "syntax":
                self.take("=")
                if self.take().strip("\"'") != "proto2":
                    raise ValueError(f"{self.source}: only proto2 is understood")
                self.take(";")
            elif tok == "package":
                package = self.take()
                self.take(";")
            elif tok in ("message", "enum"):
                items.append(self.message() if tok == "message" else self.enum())
            else:
                raise ValueError(f"{self.source}:{self.line()}: unexpected {tok!r}")
        return package, items

    def enum(self):
        name = self.take()
        self.take("{")
        values = []
        while self.peek() != "}":
            vname = self.take()
            self.take("=")
            values.append((vname, int(self.take())))
            self.take(";")
        self.take("}")
        return {"kind": "enum", "name": name, "values": values}

    def message(self):
        name = self.take()
        self.take("{")
        fields, nested = [], []
        while self.peek() != "}":
            tok = self.take()
            if tok in ("message", "enum"):
                nested.append(self.message() if tok == "message" else self.enum())
            elif tok in ("optional", "repeated"):
                fields.append(self.field(tok))
            else:
                raise ValueError(f"{self.source}:{self.line()}: expected a field, message or "
                                 f"enum in {name}, found {tok!r}")
        self.take("}")
        return {"kind": "message", "name": name, "fields": fields, "nested": nested}

    def field(self, label):
        ftype, name = self.take(), self.take()
        self.take("=")
        number = int(self.take())
        options = {}
        if self.peek() == "[":
            self.take("[")
            while True:
                key = self.take()
                self.take("=")
                options[key] = self.take()
                if self.take() == "]":
                    break
        self.take(";")
        unknown = set(options) - {"default", "packed"}
        if unknown:
            raise ValueError(f"{self.source}: field {name}: options {sorted(unknown)} are not "
                             f"understood")
        return {"label": label, "type": ftype, "name": name, "number": number,
                "options": options}


def _default_text(ftype, value):
    """A ``[default = …]`` as FieldDescriptorProto.default_value spells it."""
    if ftype in _FLOATS:
        v = float(value)
        return str(int(v)) if v == int(v) and abs(v) < 1e15 else repr(v)
    if ftype == "string":
        return value[1:-1]
    return value  # integers, bool, enum value names


def _declared(package, items, source):
    """{full name (".caffe.X.Y"): item} of every message and enum, nested ones included."""
    declared = {}

    def register(item, scope):
        full = f"{scope}.{item['name']}"
        if full in declared:
            raise ValueError(f"{source}: {full[1:]} is declared twice")
        declared[full] = item
        for child in item.get("nested", ()):
            register(child, full)

    for item in items:
        register(item, f".{package}" if package else "")
    return declared


def _resolve(declared, name, scope, source):
    """The full name a field's type ``name`` refers to from message ``scope``: innermost scope
    first, as protoc does."""
    while True:
        candidate = f"{scope}.{name}"
        if candidate in declared:
            return candidate
        if not scope:
            raise ValueError(f"{source}: unknown type {name!r}")
        scope = scope.rpartition(".")[0]


def _build(package, items, source):
    from google.protobuf import descriptor_pb2

    FDP = descriptor_pb2.FieldDescriptorProto
    declared = _declared(package, items, source)
    root = f".{package}" if package else ""

    def fill_enum(proto, item):
        proto.name = item["name"]
        for vname, number in item["values"]:
            proto.value.add(name=vname, number=number)

    def fill_message(proto, item, scope):
        full = f"{scope}.{item['name']}"
        proto.name = item["name"]
        for child in item["nested"]:
            if child["kind"] == "enum":
                fill_enum(proto.enum_type.add(), child)
            else:
                fill_message(proto.nested_type.add(), child, full)
        numbers = set()
        for f in item["fields"]:
            if f["number"] in numbers:
                raise ValueError(f"{source}: {full[1:]}.{f['name']}: field number "
                                 f"{f['number']} is used twice")
            numbers.add(f["number"])
            field = proto.field.add(name=f["name"], number=f["number"])
            field.label = FDP.LABEL_REPEATED if f["label"] == "repeated" else FDP.LABEL_OPTIONAL
            if f["type"] in _SCALARS:
                field.type = getattr(FDP, _SCALARS[f["type"]])
            else:
                target = _resolve(declared, f["type"], full, source)
                field.type_name = target
                field.type = FDP.TYPE_ENUM if declared[target]["kind"] == "enum" \
                    else FDP.TYPE_MESSAGE
            options = f["options"]
            if "default" in options:
                field.default_value = _default_text(f["type"], options["default"])
            if options.get("packed") == "true":
                field.options.packed = True

    fdp = descriptor_pb2.FileDescriptorProto(name="robustcnn/caffe_subset.proto",
                                             package=package, syntax="proto2")
    for item in items:
        if item["kind"] == "enum":
            fill_enum(fdp.enum_type.add(), item)
        else:
            fill_message(fdp.message_type.add(), item, root)
    return fdp


# ---------------------------------------------------------------------------------------------
# The schema as plain tables (no protobuf)

INTEGERS = {"int32": (-2**31, 2**31 - 1), "uint32": (0, 2**32 - 1),
            "int64": (-2**63, 2**63 - 1), "uint64": (0, 2**64 - 1)}


@dataclass(frozen=True)
class Field:
    """One field of a message: ``type`` is a scalar type (``uint32``, ``float``, ``string`` …)
    or the name of an enum or message (``PoolingParameter.PoolMethod``), ``kind`` says which.
    ``default`` is the value of an unset field: its ``[default = …]``, else proto2's (0, false,
    "", an enum's first value); an enum's value by name; None for a message."""

    name: str
    number: int
    repeated: bool
    type: str
    kind: str  # "scalar", "enum" or "message"
    default: object


def float32(value):
    """A float32 field's value as the shortest float that spells it (0.1, not
    0.10000000149011612): what both readers of a Caffe file return, so that they agree."""
    with np.errstate(over="ignore"):  # beyond float32's range: inf, as protobuf stores it
        return float(str(np.float32(value)))


def _default_value(ftype, kind, options, first_enum_value):
    text = options.get("default")
    if kind == "message":
        return None
    if kind == "enum":
        return first_enum_value if text is None else text
    if ftype in _FLOATS:
        value = 0.0 if text is None else float(text)
        return float32(value) if ftype == "float" else value
    if ftype in INTEGERS:
        return 0 if text is None else int(text)
    if ftype == "bool":
        return text == "true"
    if ftype == "bytes":
        return b"" if text is None else text[1:-1].encode()
    return "" if text is None else text[1:-1]


def _tables(package, items, source):
    declared = _declared(package, items, source)
    prefix = f".{package}." if package else "."
    messages, enums = {}, {}
    for full, item in declared.items():
        name = full.removeprefix(prefix)
        if item["kind"] == "enum":
            enums[name] = dict(item["values"])
            continue
        table = {}
        for f in item["fields"]:
            kind, ftype, first = "scalar", f["type"], None
            if ftype not in _SCALARS:
                target = _resolve(declared, ftype, full, source)
                kind, ftype = declared[target]["kind"], target.removeprefix(prefix)
                if kind == "enum":
                    first = declared[target]["values"][0][0]
            table[f["name"]] = Field(f["name"], f["number"], f["label"] == "repeated", ftype,
                                     kind, _default_value(ftype, kind, f["options"], first))
        messages[name] = table
    return messages, enums


@functools.lru_cache(maxsize=1)
def _schema_tables():
    text = PROTO.read_text(encoding="utf-8")
    return _tables(*_Reader(text, str(PROTO)).file(), str(PROTO))


def fields():
    """{message name: {field name: Field}} for every message of ``caffe_subset.proto``, nested
    ones as ``Outer.Inner``."""
    return _schema_tables()[0]


def enums():
    """{enum name: {value name: number}} for every enum of ``caffe_subset.proto``, in declared
    order (``PoolingParameter.PoolMethod``: {"MAX": 0, "AVE": 1, "STOCHASTIC": 2})."""
    return _schema_tables()[1]


# ---------------------------------------------------------------------------------------------
# The schema as protobuf classes


def has_protobuf():
    """Whether the protobuf package (the ``caffe`` extra) can be imported."""
    try:
        import google.protobuf  # noqa: F401
    except ImportError:
        return False
    return True


def require_protobuf(what):
    """Raise ImportError saying that ``what`` needs protobuf, unless it is installed."""
    if not has_protobuf():
        raise ImportError(f"{what} needs the protobuf package: pip install 'robustcnn[caffe]' "
                          f"(a .prototxt and .caffemodel.h5 weights are read without it)")


def file_descriptor_proto(path=PROTO):
    """``caffe_subset.proto`` (or another file in the same subset of proto2) as a
    ``FileDescriptorProto``."""
    text = Path(path).read_text(encoding="utf-8")
    return _build(*_Reader(text, str(path)).file(), str(path))


@functools.lru_cache(maxsize=1)
def messages():
    """{message name: class} for the top-level messages of ``caffe_subset.proto``."""
    require_protobuf("Caffe's protobuf messages")
    from google.protobuf import descriptor_pool, message_factory

    fdp = file_descriptor_proto()
    pool = descriptor_pool.DescriptorPool()
    file_desc = pool.Add(fdp)
    if file_desc is None:  # older runtimes return nothing from Add
        file_desc = pool.FindFileByName(fdp.name)
    classes = {}
    for name, desc in file_desc.message_types_by_name.items():
        if hasattr(message_factory, "GetMessageClass"):
            classes[name] = message_factory.GetMessageClass(desc)
        else:  # older runtimes
            classes[name] = message_factory.MessageFactory(pool).GetPrototype(desc)
    return classes
