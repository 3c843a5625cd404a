"""The shape of a kind: :class:`Kind` (one per kind of stored value), :class:`Signature`, :class:`Wire`.

A kind owns everything about one kind of stored value; the defaults here are
those of a plain number, and each entry overrides what differs. Only numpy is
imported: pint (through :mod:`nstore.protocol.units`) and the text codec load
when a kind first needs them.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple

import numpy as np

from nstore.protocol.errors import ProtocolError

TEXT = str  # storage dtype of variable-length strings
# numpy kinds nstore stores: bool, signed and unsigned integers, floats.
ARRAY_KINDS = frozenset("biuf")
I8, F8, BOOL_DISK = np.dtype("int64"), np.dtype("float64"), np.dtype("int8")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Classes the daemon holds in place of the client's (a kind's Wire.decode_light) -> the name errors give:
# an error names the type the client sent, whichever side raised it.
SHOWN_NAMES: dict[type, str] = {}


class Signature(NamedTuple):
    """What the first write/append fixes for a variable."""

    io_type: str  # IODriver_Type: the key of its kind in the registry
    type_attr: str  # the classic ``type`` attribute: python type or dtype name
    row_shape: tuple  # shape of one entry on disk (without the unlimited axis)
    dtype: Any  # numpy dtype on disk, or TEXT
    unit: str | None = None  # pint unit string for quantities


class Wire(NamedTuple):
    """A msgpack extension type: which objects it carries and how (``pack`` packs a nested value)."""

    code: int
    claims: Callable[[Any], bool]  # True for the objects this extension type carries
    encode: Callable[[Any, Callable[[Any], bytes], list], bytes]  # (obj, pack, out-of-band frames) -> payload
    decode: Callable[[Any, list], Any]  # (unpacked payload, message buffers) -> obj; ProtocolError if malformed
    # The daemon's decode, if it keeps a lighter object than clients get (quantities: no pint object).
    decode_light: Callable[[Any, list], Any] | None = None


class Kind:
    """One kind of stored value (an ``IODriver_Type``): matching, signature, disk codec, size, description."""

    io_type = ""
    storage = "number"  # 'number' (one value per entry), 'text' (one string per entry), 'array'
    py_types: tuple = ()  # the exact classes of the values it may hold (and that create_storage_variable accepts)
    wire: Wire | None = None  # the extension type its values travel as, if msgpack has none

    # --- which values -----------------------------------------------------------------
    def signature(self, value: Any) -> Signature | None:
        """The signature ``value`` gives a new variable, None if this kind does not hold it."""
        raise NotImplementedError

    def accepts_type(self, py_type: type) -> bool:
        """Whether ``create_storage_variable(path, py_type)`` may name this kind."""
        return py_type in self.py_types

    def same_type(self, stored: Signature, new: Signature) -> bool:
        """Whether a value of signature ``new`` may go into a variable of ``stored`` (shape aside)."""
        if stored.type_attr != new.type_attr:
            return False
        return self.storage != "array" or stored.dtype == new.dtype or np.can_cast(new.dtype, stored.dtype, "same_kind")

    # --- disk ---------------------------------------------------------------------------
    def encode(self, value: Any, sig: Signature, convert: Callable[[Any], Any] | None) -> Any:
        """What to assign to one entry on disk (``convert`` maps quantity magnitudes to the stored unit)."""
        return value

    def decode_one(self, raw: Any, sig: Signature) -> Any:
        """One raw entry read from disk -> the Python value."""
        raise NotImplementedError

    def decode_many(self, raw: Any, sig: Signature) -> Any:
        """Raw entries (leading axis) -> the stacked form ``read()`` returns."""
        raise NotImplementedError

    # --- size and queueing ------------------------------------------------------------------
    def sizes(self, item: Any) -> bool:
        """Whether :meth:`payload` measures ``item`` (any instance of the kind's classes)."""
        return False

    def payload(self, item: Any) -> tuple[int, Iterable[Any]]:
        """``(bytes, children)``: the data bytes of ``item`` itself, and the items inside it to count too."""
        return 8, ()

    def owned(self, value: Any) -> Any:
        """``value``, copied if the caller could change it while a pipelined op waits to be sent."""
        return value

    # --- description ------------------------------------------------------------------------
    def describe(self, sig: Signature) -> str:
        """Human name of what a signature holds, for error messages."""
        return sig.type_attr

    def python_type(self, type_attr: str) -> str:
        """The Python type ``read()`` gives for one entry, as ``nstore inspect`` prints it."""
        return type_attr

    def has_shape(self, type_attr: str) -> bool:
        """Whether ``nstore inspect`` shows the entry shape."""
        return False

    def entries_of(self, value: Any, type_attr: str) -> list:
        """The stacked form ``read(slice)`` returns, split back into the entries that were appended."""
        return list(value)


# --- helpers the entries share ------------------------------------------------------------


def check_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype for ``dtype`` if nstore can store it, else TypeError."""
    try:
        dt = np.dtype(dtype)
    except Exception:
        raise TypeError(f"unknown dtype {dtype!r}") from None
    if dt.kind not in ARRAY_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise TypeError(f"dtype {dt} is not storable (only bool, integer and float arrays are)")
    return dt


def type_name(value: Any) -> str:
    """A user-facing name for the type of ``value``: ``numpy.float32``, ``set``, ..."""
    return class_name(type(value))


def class_name(cls: type) -> str:
    """A user-facing name for ``cls``: ``numpy.float32``, ``set``, ``fractions.Fraction``."""
    shown = SHOWN_NAMES.get(cls)
    if shown is not None:
        return shown
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module.startswith("numpy"):
        return f"numpy.{cls.__qualname__}"
    return f"{module}.{cls.__qualname__}"


def check_int64(value: int) -> None:
    """ValueError unless the Python int fits the int64 it is stored as."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError("integer does not fit in 64 bits")


def numeric_list(items: list | tuple) -> np.dtype | None:
    """int64/float64 for a non-empty list of only ints or only floats, else None."""
    if not items:
        return None
    first = type(items[0])
    if first not in (int, float) or any(type(x) is not first for x in items):
        return None
    if first is int:
        for x in items:
            check_int64(x)
    return I8 if first is int else F8


def disk_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a numpy dtype is stored as (NetCDF has no bool; float16 is refused)."""
    dtype = check_dtype(dtype)
    if dtype.kind == "b":
        return BOOL_DISK
    if dtype.kind == "f" and dtype.itemsize not in (4, 8):
        raise TypeError(f"dtype {dtype} is not storable in NetCDF (use float32 or float64)")
    return dtype.newbyteorder("=")


def scalar(raw: Any) -> Any:
    """The one number of a raw entry."""
    return np.asarray(raw).reshape(-1)[0]


def column(raw: Any) -> np.ndarray:
    """Raw entries of one number each as a 1-D array."""
    raw = np.asarray(raw)
    return raw.reshape(raw.shape[0]) if raw.ndim else raw.reshape(1)


def wire_dtype(text: Any) -> np.dtype:
    """The dtype a message names; ProtocolError unless it is a short string naming a storable dtype."""
    if not isinstance(text, str) or len(text) > 16:
        raise ProtocolError("dtype must be a short string")
    try:
        return check_dtype(text)
    except TypeError as exc:
        raise ProtocolError(str(exc)) from None
