"""The ``quantity`` kind: a pint Quantity of an int, a float, a numeric list/tuple or an array.

The magnitude is stored in the variable's unit (fixed by the first write) and
the unit as a string attribute. pint is imported by :mod:`nstore.protocol.units`
on first use only.

The daemon holds quantities as :class:`WireQuantity` (a magnitude and the unit's
stored spelling), never as pint objects: it decodes requests and journal
records to them and replies with them, so an append in the variable's own unit
is a string comparison, and one in another unit a cached factor. Clients decode
them to pint Quantities.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from nstore.protocol.errors import ProtocolError, UnsupportedTypeError
from nstore.protocol.units import is_quantity, quantity, registry, stored_unit, unit_string

from .arrays import array_signature, can_hold
from .base import F8, I8, SHOWN_NAMES, Kind, Signature, Wire, check_int64, column, numeric_list, scalar, type_name
from .sequences import sequence_one

EXT_QUANTITY = 4
_UNIT_TEXTS: dict = {}  # pint's units container of a quantity -> its unit string
_MAX_UNIT_TEXTS = 1024


def unit_text(value: Any) -> str:
    """``unit_string(value.units)``, remembered per units container: pint formats a unit in tens of us.

    The container (pint's immutable, hashable name -> exponent map) fixes the
    string: the stored spelling is parsed back with the application registry.
    """
    key = getattr(value, "_units", None)
    text = _UNIT_TEXTS.get(key) if key is not None else None
    if text is None:
        text = unit_string(value.units)
        if key is not None and len(_UNIT_TEXTS) < _MAX_UNIT_TEXTS:
            _UNIT_TEXTS[key] = text
    return text


class WireQuantity:
    """A quantity as the daemon holds it: its magnitude and the stored spelling of its unit (a str).

    The quantity kind takes it exactly as it takes a pint Quantity, and it travels
    as the same extension type; error messages name its type as the client's
    (``pint.Quantity``). Build it with :func:`wire_quantity`, which checks the unit.
    """

    __slots__ = ("magnitude", "unit")

    def __init__(self, magnitude: Any, unit: str):
        self.magnitude, self.unit = magnitude, unit

    def __repr__(self) -> str:
        return f"WireQuantity({self.magnitude!r}, {self.unit!r})"


SHOWN_NAMES[WireQuantity] = "pint.Quantity"


def wire_quantity(magnitude: Any, unit: str) -> WireQuantity:
    """The quantity pint would build, without pint: lists become arrays, the unit its stored
    spelling (ValueError if it is not a unit; cached per string)."""
    if type(magnitude) is list or type(magnitude) is tuple:
        magnitude = np.asarray(magnitude)
    return WireQuantity(magnitude, stored_unit(unit))


def quantity_parts(value: Any) -> tuple[Any, str] | None:
    """``(magnitude, stored unit string)`` of a pint Quantity or a WireQuantity; None for anything else."""
    if type(value) is WireQuantity:
        return value.magnitude, value.unit
    if is_quantity(value):
        return value.magnitude, unit_text(value)
    return None


def _is_any_quantity(value: Any) -> bool:
    return type(value) is WireQuantity or is_quantity(value)


def _encode_quantity(obj: Any, pack: Callable[[Any], bytes], frames: list) -> bytes:
    try:
        return pack(list(quantity_parts(obj)))
    except UnsupportedTypeError as exc:  # named like the engine names it
        raise UnsupportedTypeError(f"pint.Quantity of {exc.type_name}") from None


def _checked_payload(inner: Any) -> tuple[Any, str]:
    """``(magnitude, unit)`` of a quantity's wire payload; ProtocolError unless it holds numbers and a str."""
    if not (isinstance(inner, list) and len(inner) == 2 and isinstance(inner[1], str)):
        raise ProtocolError("quantity payload must be [magnitude, unit]")
    magnitude, unit = inner
    if not isinstance(magnitude, (int, float, list, tuple, np.ndarray, np.generic)) or isinstance(magnitude, bool):
        raise ProtocolError(f"quantity magnitude of type {type(magnitude).__name__} is not allowed")
    if np.asarray(magnitude).dtype.kind not in "iuf":  # (ragged lists raise; the caller maps that)
        raise ProtocolError("quantity magnitude must be an integer or float number or array")
    return magnitude, unit


def _quantity_decoder(build: Callable[[Any, str], Any]) -> Callable[[Any, list], Any]:
    """A decoder of the quantity extension building its value with ``build(magnitude, unit)``."""

    def decode(inner: Any, buffers: list) -> Any:
        magnitude, unit = _checked_payload(inner)
        try:
            return build(magnitude, unit)
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None

    return decode


_decode_quantity = _quantity_decoder(quantity)  # a pint Quantity (clients)
_decode_wire_quantity = _quantity_decoder(wire_quantity)  # a WireQuantity (the daemon): same checks and errors, no pint


class Quantity(Kind):
    """A pint Quantity; reads give a Quantity in the stored unit (classic list quantities: arrays)."""

    io_type, storage = "quantity", "array"
    wire = Wire(EXT_QUANTITY, _is_any_quantity, _encode_quantity, _decode_quantity, _decode_wire_quantity)
    make = staticmethod(quantity)  # (magnitude, unit string) -> what reads give

    def signature(self, value: Any) -> Signature | None:
        parts = quantity_parts(value)
        if parts is None:
            return None
        magnitude, unit = parts
        if type(magnitude) is np.ndarray and magnitude.ndim == 0:  # force_ndarray_like registries (pint-xarray)
            magnitude = magnitude[()]
        cls = type(magnitude)
        if cls is float or isinstance(magnitude, np.floating):
            return Signature("quantity", "float", (1,), F8, unit)
        if (cls is int or isinstance(magnitude, np.integer)) and cls is not bool:
            check_int64(int(magnitude))
            return Signature("quantity", "int", (1,), I8, unit)
        if cls is list or cls is tuple:
            dtype = numeric_list(magnitude)
            if dtype is not None:
                return Signature("quantity", cls.__name__, (len(magnitude),), dtype, unit)
        if cls is np.ndarray and magnitude.dtype.kind in "iuf":
            return array_signature("quantity", magnitude, unit)
        inner = f"numpy.ndarray of {magnitude.dtype}" if cls is np.ndarray else type_name(magnitude)
        raise UnsupportedTypeError(f"pint.Quantity of {inner}")

    def accepts_type(self, py_type: type) -> bool:
        return py_type.__module__.startswith("pint") and py_type.__name__ == "Quantity"

    def same_type(self, stored: Signature, new: Signature) -> bool:
        classic_list = stored.type_attr in ("list", "tuple") and new.type_attr == "numpy.ndarray"  # pint has arrays
        return (stored.type_attr == new.type_attr or classic_list) and can_hold(stored, new)

    def encode(self, value: Any, sig: Signature, convert: Callable[[Any], Any] | None) -> Any:
        magnitude = value.magnitude if convert is None else convert(value.magnitude)
        return np.asarray(magnitude, dtype=sig.dtype)

    def decode_one(self, raw: Any, sig: Signature) -> Any:
        if sig.type_attr in ("int", "float"):
            magnitude = (int if sig.type_attr == "int" else float)(scalar(raw))
        elif sig.type_attr in ("list", "tuple"):
            magnitude = sequence_one(raw, sig)
        else:
            magnitude = np.asarray(raw)
        return self.make(magnitude, sig.unit or "")

    def decode_many(self, raw: Any, sig: Signature) -> Any:
        raw = np.asarray(raw)
        if sig.type_attr in ("int", "float"):
            raw = column(raw)
        return self.make(raw, sig.unit or "")

    def sizes(self, item: Any) -> bool:
        return _is_any_quantity(item)

    def payload(self, item: Any) -> tuple[int, Iterable[Any]]:
        return 0, [item.magnitude]

    def owned(self, value: Any) -> Any:
        magnitude = value.magnitude
        if not isinstance(magnitude, np.ndarray):
            return value
        if type(value) is WireQuantity:
            return WireQuantity(magnitude.copy(), value.unit)
        return type(value)(magnitude.copy(), value.units)

    def describe(self, sig: Signature) -> str:
        return f"pint.Quantity of {sig.type_attr}"

    def python_type(self, type_attr: str) -> str:  # pint has no list magnitudes: classic list quantities are arrays
        return f"pint.Quantity[{'numpy.ndarray' if type_attr in ('list', 'tuple') else type_attr}]"

    def has_shape(self, type_attr: str) -> bool:
        return type_attr in ("numpy.ndarray", "list", "tuple")

    def entries_of(self, value: Any, type_attr: str) -> list:
        Q, units, magnitude = registry().Quantity, value.units, value.magnitude
        if type_attr == "int":
            return [Q(int(x), units) for x in magnitude]
        if type_attr == "float":
            return [Q(float(x), units) for x in magnitude]
        return [Q(row, units) for row in magnitude]


class DaemonQuantity(Quantity):
    """The quantity kind as the daemon reads it: WireQuantity values, which its replies carry as they are."""

    make = staticmethod(wire_quantity)


QUANTITY, DAEMON_QUANTITY = Quantity(), DaemonQuantity()
