"""Caffe's prototxt (protobuf text format) read without protobuf: a parser, and its result typed
against the schema into the same ``Message`` the protobuf reader gives.

    msg = parse_prototxt(text)               # untyped: {"name": ["FireNet"], "layer": [{…}], …}
    net = parse_net(text, source="x.prototxt")   # a Message NetParameter, typed and checked

``files.read_net`` picks this reader or protobuf's; both give equal messages for a valid file.

**Text format.** A message is a sequence of fields ``key: value`` or ``key { message }`` (the
colon before ``{`` is optional, ``<``/``>`` may stand for the braces), separated by white space
and optionally ``,`` or ``;``; ``#`` starts a comment. Values are quoted strings (``"…"`` or
``'…'`` with C escapes; adjacent strings concatenate), numbers (``3``, ``-0.5``, ``1e-4``,
``0x1F``, ``inf``), ``true``/``false`` and enum names (``MAX``). A repeated field may be written
as a list, ``dim: [1, 3, 227, 227]`` or ``include [{ phase: TEST }, { stage: "x" }]``.

**Typing** (``parse_net``), as protobuf's text format does it: every field must be one the
schema (``caffe_subset.proto``) declares for its message; integers (decimal, ``0x`` hex, ``0``
octal) must fit their type; floats are rounded to float32 (``inf``, ``nan`` allowed); bools are
``true``/``false``/``t``/``f``/``1``/``0``; enums a value's name or number; strings quoted and
UTF-8; a field that is not repeated at most once. Anything else is a ValueError naming the
source, the line, the message type and the field. Two spellings that Python's protobuf lets
through are errors here: an unknown escape (``"\\q"``) and a float written ``1_0``.
"""

import math
import re
from collections import namedtuple

from .message import Message
from .schema import INTEGERS, enums, fields, float32

# Nesting deeper than this is refused (Caffe's nets nest 4 or 5 levels).
MAX_TEXT_DEPTH = 64

_TOKEN = re.compile(r"""
      (?P<space>[ \t\r\f\v]+|\#[^\n]*)
    | (?P<newline>\n)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?)(?![\w.]))
    | (?P<word>[-+]?[A-Za-z_][\w.]*)
    | (?P<punct>[{}<>:\[\],;])
""", re.VERBOSE)

_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v",
            "\\": b"\\", "'": b"'", '"': b'"', "?": b"?"}

# One parsed field: ``kind`` is "message" (``value``: its fields, a list of _Entry), "string"
# (``value``: the str), "number" or "word" (``value``: the token's text).
_Entry = namedtuple("_Entry", "key line kind value listed")


def _unquote(token, where):
    """A quoted token → str. Escapes stand for bytes (``\\303\\251`` is é in UTF-8), so the
    result is decoded as UTF-8 once whole."""
    body, out, i = token[1:-1], bytearray(), 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        nxt = body[i + 1]  # the token regex guarantees a character after every backslash
        if nxt in _ESCAPES:
            out += _ESCAPES[nxt]
            i += 2
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group()
            if int(digits, 8) > 255:
                raise ValueError(f"{where}: octal escape \\{digits} is more than a byte")
            out.append(int(digits, 8))
            i += 1 + len(digits)
        elif nxt in "xX" and re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:]):
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:]).group()
            out.append(int(digits, 16))
            i += 2 + len(digits)
        elif nxt in "uU" and re.match(r"[0-9a-fA-F]{%d}" % (4 if nxt == "u" else 8), body[i + 2:]):
            n = 4 if nxt == "u" else 8
            code = int(body[i + 2:i + 2 + n], 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ValueError(f"{where}: \\{nxt}{body[i + 2:i + 2 + n]} is not a character")
            out += chr(code).encode("utf-8")
            i += 2 + n
        else:
            raise ValueError(f"{where}: unknown escape \\{nxt} in string {token}")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where}: string {token} is not valid UTF-8 once unescaped") from None


def _tokens(text, source):
    """(kind, value, line) for every token; raises ValueError at the first unreadable character."""
    line, pos = 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"{source}:{line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup
        if kind == "newline":
            line += 1
        elif kind != "space":
            yield kind, m.group(), line
        pos = m.end()


class _Parser:
    def __init__(self, text, source):
        self.toks = list(_tokens(text, source))
        self.i = 0
        self.source = source

    def where(self):
        line = self.toks[min(self.i, len(self.toks) - 1)][2] if self.toks else 1
        return f"{self.source}:{line}"

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None, None)

    def take(self):
        tok = self.peek()
        if tok[0] is None:
            raise ValueError(f"{self.where()}: unexpected end of text")
        self.i += 1
        return tok

    def message(self, close=None, depth=0):
        """The fields up to ``close`` (or the end of the text) → [_Entry]."""
        if depth > MAX_TEXT_DEPTH:
            raise ValueError(f"{self.where()}: nested more than {MAX_TEXT_DEPTH} levels deep")
        entries = []
        while True:
            kind, value, line = self.peek()
            if kind is None:
                if close:
                    raise ValueError(f"{self.where()}: missing {close!r} at the end of the text")
                return entries
            if kind == "punct" and value == close:
                self.i += 1
                return entries
            if kind != "word":
                raise ValueError(f"{self.where()}: expected a field name, found {value!r}")
            key = self.take()[1]
            kind, value, _ = self.peek()
            colon = kind == "punct" and value == ":"
            if colon:
                self.i += 1
                kind, value, _ = self.peek()
            if kind == "punct" and value in "{<":
                self.i += 1
                entries.append(_Entry(key, line, "message",
                                      self.message("}" if value == "{" else ">", depth + 1), False))
            elif kind == "punct" and value == "[":
                self.i += 1
                entries.extend(self.listed(key, line, depth))
            elif not colon:
                raise ValueError(f"{self.where()}: expected ':' or '{{' after {key!r}, "
                                 f"found {value!r}")
            else:
                entries.append(self.scalar(key))
            kind, value, _ = self.peek()
            if kind == "punct" and value in ",;":
                self.i += 1

    def listed(self, key, line, depth):
        """The values of ``key: [a, b, …]`` (scalars or messages) after the ``[``."""
        entries = []
        while True:
            kind, value, _ = self.peek()
            if kind == "punct" and value == "]" and not entries:
                self.i += 1
                return entries
            if kind == "punct" and value in "{<":
                self.i += 1
                entries.append(_Entry(key, line, "message",
                                      self.message("}" if value == "{" else ">", depth + 1), True))
            else:
                entries.append(self.scalar(key)._replace(listed=True))
            kind, value, line = self.take()
            if (kind, value) == ("punct", "]"):
                return entries
            if (kind, value) != ("punct", ","):
                raise ValueError(f"{self.source}:{line}: expected ',' or ']' in the list {key!r}, "
                                 f"found {value!r}")

    def scalar(self, key):
        kind, value, line = self.take()
        where = f"{self.source}:{line}"
        if kind == "string":
            parts = [_unquote(value, where)]
            while self.peek()[0] == "string":  # adjacent strings concatenate
                _, value, next_line = self.take()
                parts.append(_unquote(value, f"{self.source}:{next_line}"))
            return _Entry(key, line, "string", "".join(parts), False)
        if kind in ("number", "word"):
            return _Entry(key, line, kind, value, False)
        raise ValueError(f"{where}: expected a value for {key!r}, found {value!r}")


# ---------------------------------------------------------------------------------------------
# Untyped: {key: [value, …]}

_WORD_VALUES = {"true": True, "True": True, "false": False, "False": False, "inf": math.inf,
                "+inf": math.inf, "-inf": -math.inf, "infinity": math.inf,
                "-infinity": -math.inf, "nan": math.nan}


def _number(text):
    if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", text):
        return int(text, 16)
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    return float(text.rstrip("fF"))


def _untyped(entries):
    msg = {}
    for e in entries:
        if e.kind == "message":
            value = _untyped(e.value)
        elif e.kind == "number":
            value = _number(e.value)
        elif e.kind == "word":
            value = _WORD_VALUES.get(e.value, e.value)
        else:
            value = e.value
        msg.setdefault(e.key, []).append(value)
    return msg


def parse_prototxt(text, *, source="<prototxt>"):
    """Parse protobuf text format → {key: [value, …]} with nested messages as dicts, without a
    schema: any field name, numbers as int or float, ``true``/``false``/``inf``/``nan`` as such,
    other words (enum names) as str. Every key maps to the list of its values in file order.

    Raises ValueError naming ``source`` and the line for malformed text.
    """
    return _untyped(_Parser(text, source).message())


# ---------------------------------------------------------------------------------------------
# Typed against the schema: a Message

_INTEGER = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_OCTAL = re.compile(r"[-+]?0[0-7]+")
_FLOAT_WORD = re.compile(r"[-+]?(?:inf(?:inity)?|nan)f?", re.IGNORECASE)
_BOOLS = {"true": True, "t": True, "True": True, "false": False, "f": False, "False": False,
          "1": True, "0": False}


def _integer(text):
    """An integer token as protobuf reads it (0x: hex; a leading 0: octal), or None."""
    if not _INTEGER.fullmatch(text):
        return None
    sign = -1 if text[0] == "-" else 1
    digits = text.lstrip("+-")
    if digits[:2] in ("0x", "0X"):
        return sign * int(digits[2:], 16)
    return sign * int(digits, 8 if len(digits) > 1 and digits[0] == "0" else 10)


def _scalar(entry, field, at):
    """A scalar entry's value as field ``field`` of the schema holds it, checked."""
    text = entry.value
    if field.kind == "enum":
        values = enums()[field.type]
        number = _integer(text) if entry.kind == "number" and not _OCTAL.fullmatch(text) \
            else None  # (protobuf reads no octal enum numbers)
        if entry.kind == "word" and text in values:
            return text
        names = {n: v for v, n in reversed(list(values.items()))}  # number → first name
        if number is not None and number in names:
            return names[number]
        raise ValueError(f"{at}: {text if entry.kind != 'string' else repr(text)} is not a value "
                         f"of {field.type} ({', '.join(values)})")
    if field.type in ("string", "bytes"):
        if entry.kind != "string":
            raise ValueError(f"{at}: expected a quoted string, found {text}")
        return text.encode("utf-8") if field.type == "bytes" else text
    if entry.kind == "string":
        raise ValueError(f"{at}: expected a {field.type}, found the string {text!r}")
    if field.type == "bool":
        if text not in _BOOLS:
            raise ValueError(f"{at}: expected true or false, found {text}")
        return _BOOLS[text]
    if field.type in INTEGERS:
        value = _integer(text) if entry.kind == "number" else None
        if value is None:
            raise ValueError(f"{at}: expected an integer ({field.type}), found {text}")
        low, high = INTEGERS[field.type]
        if not low <= value <= high:
            raise ValueError(f"{at}: {text} is out of range for {field.type}")
        return value
    # float or double
    if entry.kind == "word" and _FLOAT_WORD.fullmatch(text):
        word = text.lower()
        value = float(word[:-1] if word.endswith("f") and not word.endswith("inf") else word)
    elif entry.kind == "number" and not re.match(r"[-+]?0[xX\d]", text):
        value = float(text.rstrip("fF"))
    else:
        raise ValueError(f"{at}: expected a number ({field.type}), found {text}")
    return float32(value) if field.type == "float" else value


def _typed(entries, message_type, source):
    table = fields()[message_type]
    values, lines = {}, {}
    for e in entries:
        at = f"{source}:{e.line}: {message_type}.{e.key}"
        field = table.get(e.key)
        if field is None:
            raise ValueError(f"{source}:{e.line}: {message_type} has no field named {e.key!r}")
        if e.listed and not field.repeated:
            raise ValueError(f"{at}: a list [...] is for repeated fields only")
        if field.kind == "message":
            if e.kind != "message":
                raise ValueError(f"{at}: expected a message {{ … }}, found {e.value!r}")
            value = _typed(e.value, field.type, source)
        elif e.kind == "message":
            raise ValueError(f"{at}: expected a value, found a message {{ … }}")
        else:
            value = _scalar(e, field, at)
        if field.repeated:
            values.setdefault(e.key, []).append(value)
        elif e.key in values:
            raise ValueError(f"{at}: given twice (lines {lines[e.key]} and {e.line}); it is not "
                             f"a repeated field")
        else:
            values[e.key], lines[e.key] = value, e.line
    return Message(message_type, {k: tuple(v) if table[k].repeated else v
                                  for k, v in values.items()})


def parse_net(text, *, source="<prototxt>"):
    """A Caffe net in protobuf text format → ``Message`` (NetParameter), typed against the
    schema. Raises ValueError naming ``source`` and the line for malformed text or a field the
    schema does not declare or a value of the wrong type."""
    return _typed(_Parser(text, source).message(), "NetParameter", source)
