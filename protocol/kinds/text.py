"""Kinds stored as one string per entry: ``str``, and ``dict`` as self-describing YAML text.

The YAML codec (:mod:`nstore.daemon.textcodec`) is loaded on first use: only
the side that touches the disk needs it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from .base import TEXT, Kind, Signature, column, scalar


def dumps(value: Any) -> str:
    """YAML text for a dict or mixed list (the daemon's text codec)."""
    from nstore.daemon import textcodec

    return textcodec.dumps(value)


def loads(text: str, sig: Signature) -> Any:
    """The value YAML ``text`` holds; a list comes back as a tuple if the variable holds tuples."""
    from nstore.daemon import textcodec

    value = textcodec.loads(text)
    if sig.type_attr == "tuple" and isinstance(value, list):
        return tuple(value)
    return value


class TextKind(Kind):
    """A value stored as one string per entry, read back one entry at a time."""

    storage = "text"

    def encode(self, value: Any, sig: Signature, convert: Callable[[Any], Any] | None) -> Any:
        return dumps(value)

    def decode_one(self, raw: Any, sig: Signature) -> Any:
        return loads(str(scalar(raw)), sig)

    def decode_many(self, raw: Any, sig: Signature) -> list:
        return [self.decode_one(entry, sig) for entry in column(raw)]


class Str(TextKind):
    """``str``, stored as it is."""

    io_type, py_types = "str", (str,)

    def signature(self, value: Any) -> Signature | None:
        if type(value) is not str:
            return None
        if "\x00" in value:  # netCDF strings are C strings: the rest would be cut off
            raise ValueError("a str holding NUL characters cannot be stored")
        return Signature("str", "str", (1,), TEXT)

    def encode(self, value: Any, sig: Signature, convert: Callable[[Any], Any] | None) -> Any:
        return value

    def decode_one(self, raw: Any, sig: Signature) -> Any:
        return str(scalar(raw))

    def sizes(self, item: Any) -> bool:
        return isinstance(item, str)

    def payload(self, item: Any) -> tuple[int, Iterable[Any]]:
        return len(item), ()


class Dict(TextKind):
    """``dict`` (nested; may hold quantities, arrays, lists, strings, numbers, None), stored as YAML."""

    io_type, py_types = "dict", (dict,)

    def signature(self, value: Any) -> Signature | None:
        return Signature("dict", "dict", (1,), TEXT) if type(value) is dict else None

    def sizes(self, item: Any) -> bool:
        return isinstance(item, dict)

    def payload(self, item: Any) -> tuple[int, Iterable[Any]]:
        return 0, [*item.keys(), *item.values()]


STR, DICT = Str(), Dict()
