"""A Caffe message as plain data: what the translator (importer.py) reads, whichever reader made
it — protobuf (``from_protobuf``) or the project's text-format parser (prototxt.py).

    net = read_net("deploy.prototxt")          # a Message of type NetParameter
    conv = net.layer[0].convolution_param       # fields by name, as with protobuf
    conv.num_output, conv.has("num_output")     # a value (or the schema's default), set or not
    conv.values("kernel_size")                  # a field's values as a list, repeated or not

A ``Message`` holds the fields that were set; an unset field reads as the schema's default
(``caffe_subset.proto``, through ``schema.fields()``), an unset message field as an empty
message, an unset repeated field as (). Enum values are their names (``"MAX"``), float fields
the shortest float that spells their float32 value (``schema.float32``), strings str. Two
messages are equal when their types and set fields are.
"""

from .schema import INTEGERS, fields, float32


class Message:
    """One message of ``caffe_subset.proto``: ``message_type`` (``"LayerParameter"``) and the
    fields set. Read fields as attributes; ``has``, ``declares`` and ``values`` as below."""

    __slots__ = ("_type", "_values")

    def __init__(self, message_type, values=()):
        if message_type not in fields():
            raise KeyError(f"caffe_subset.proto has no message {message_type!r}")
        self._type = message_type
        self._values = dict(values)

    @property
    def message_type(self):
        return self._type

    def _field(self, name):
        table = fields()[self._type]
        if name not in table:
            raise AttributeError(f"{self._type} has no field {name!r}")
        return table[name]

    def __getattr__(self, name):
        if name.startswith("_"):  # copy and pickle probe for these before __init__ ran
            raise AttributeError(name)
        field = self._field(name)
        if name in self._values:
            return self._values[name]
        if field.repeated:
            return ()
        return Message(field.type) if field.kind == "message" else field.default

    def has(self, name):
        """Whether field ``name`` is set (for a repeated field: holds a value)."""
        self._field(name)
        return name in self._values

    def declares(self, name):
        """Whether this message type has a field ``name`` (V1 layers lack some)."""
        return name in fields()[self._type]

    def values(self, name):
        """The values of field ``name`` as a list: a repeated field's, [value] for a set optional
        one, [] for an unset one."""
        value = getattr(self, name)
        if self._field(name).repeated:
            return list(value)
        return [value] if name in self._values else []

    def set_fields(self):
        """[(name, value)] of the fields set, in the order they were set."""
        return list(self._values.items())

    def __eq__(self, other):
        return isinstance(other, Message) and self._type == other._type \
            and self._values == other._values

    __hash__ = None

    def __repr__(self):
        body = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"{self._type}({body})"


def from_protobuf(pb):
    """A protobuf message of the schema's classes (``schema.messages()``) → ``Message``."""
    name = pb.DESCRIPTOR.full_name.partition(".")[2] if "." in pb.DESCRIPTOR.full_name \
        else pb.DESCRIPTOR.full_name
    table = fields()[name]
    values = {}
    for descriptor, value in pb.ListFields():
        field = table[descriptor.name]
        if field.repeated:
            values[field.name] = tuple(_plain(field, descriptor, v) for v in value)
        else:
            values[field.name] = _plain(field, descriptor, value)
    return Message(name, values)


def _plain(field, descriptor, value):
    if field.kind == "message":
        return from_protobuf(value)
    if field.kind == "enum":
        return descriptor.enum_type.values_by_number[value].name
    if field.type == "float":
        return float32(value)
    if field.type == "double":
        return float(value)
    if field.type in INTEGERS:
        return int(value)
    if field.type == "bool":
        return bool(value)
    if field.type == "string" and isinstance(value, bytes):  # not UTF-8 in a binary file
        return value.decode("utf-8", "backslashreplace")
    return value
