"""Kinds of ``list`` and ``tuple`` values: numeric ones as arrays, all others as YAML text.

Tuples travel as their own msgpack extension type so they stay tuples.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from nstore.protocol.errors import ProtocolError

from .base import TEXT, Kind, Signature, Wire, numeric_list
from .text import TextKind

EXT_TUPLE = 1


def _decode_tuple(inner: Any, buffers: list) -> tuple:
    if not isinstance(inner, list):
        raise ProtocolError("tuple payload is not a list")
    return tuple(inner)


TUPLE_WIRE = Wire(EXT_TUPLE, lambda obj: type(obj) is tuple, lambda obj, pack, frames: pack(list(obj)), _decode_tuple)


def sequence_one(raw: Any, sig: Signature) -> list | tuple:
    """One entry of a numeric list/tuple variable as the Python list or tuple it was."""
    items = np.asarray(raw).reshape(-1).tolist()
    return tuple(items) if sig.type_attr == "tuple" else items


class NumericSequence(Kind):
    """A non-empty ``list``/``tuple`` of only ints or only floats: an int64/float64 row per entry."""

    io_type, storage, py_types, wire = "iterable", "array", (list, tuple), TUPLE_WIRE

    def signature(self, value: Any) -> Signature | None:
        dtype = numeric_list(value) if type(value) in self.py_types else None
        return None if dtype is None else Signature("iterable", type(value).__name__, (len(value),), dtype)

    def encode(self, value: Any, sig: Signature, convert: Any) -> Any:
        return np.asarray(value, dtype=sig.dtype)

    def decode_one(self, raw: Any, sig: Signature) -> list | tuple:
        return sequence_one(raw, sig)

    def decode_many(self, raw: Any, sig: Signature) -> list:
        return [sequence_one(row, sig) for row in np.asarray(raw)]

    def describe(self, sig: Signature) -> str:
        return f"{sig.type_attr} of {'int' if sig.dtype.kind == 'i' else 'float'}"

    def has_shape(self, type_attr: str) -> bool:
        return True

    def sizes(self, item: Any) -> bool:
        return isinstance(item, (list, tuple))

    def payload(self, item: Any) -> tuple[int, Iterable[Any]]:
        return 0, item


class MixedSequence(TextKind):
    """Any other ``list``/``tuple`` (mixed, strings, nested, empty): YAML text per entry."""

    io_type, py_types, wire = "yaml", (list, tuple), TUPLE_WIRE

    def signature(self, value: Any) -> Signature | None:
        return Signature("yaml", type(value).__name__, (1,), TEXT) if type(value) in self.py_types else None


ITERABLE, YAML = NumericSequence(), MixedSequence()
