"""The table of on-disk kinds: how each Python value maps to a NetCDF variable and back.

A value's :class:`Signature` says everything the first write fixes for its
variable (kind, Python type, entry shape, storage dtype, unit). One table,
:data:`KINDS`, keyed by the classic ``IODriver_Type`` attribute, says how a kind
is stored (``number``, ``text`` or ``array``) and read back, so there is no
class per Python type. The attribute names and values are those of the classic
storage layer, so files stay readable in both directions.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from nstore.protocol.errors import UnsupportedTypeError
from nstore.protocol.units import is_quantity, quantity, unit_string
from nstore.protocol.values import check_dtype, type_name

from . import textcodec

TEXT = str  # storage dtype of variable-length strings


class Signature(NamedTuple):
    """What the first write/append fixes for a variable."""

    io_type: str  # IODriver_Type: a key of KINDS
    type_attr: str  # the classic ``type`` attribute: python type or dtype name
    row_shape: tuple  # shape of one entry on disk (without the unlimited axis)
    dtype: Any  # numpy dtype on disk, or TEXT
    unit: str | None = None  # pint unit string for quantities


class Kind(NamedTuple):
    storage: str  # 'number' (one value per entry), 'text' (one string per entry), 'array'
    decode_one: Callable[[Any, Signature], Any]  # raw entry -> Python value
    decode_many: Callable[[Any, Signature], Any]  # raw entries (leading axis) -> stacked form


_I8, _F8, _BOOL_DISK = np.dtype("int64"), np.dtype("float64"), np.dtype("int8")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# --- classification ----------------------------------------------------------------


def _numeric_list(items: list | tuple) -> np.dtype | None:
    """int64/float64 for a non-empty list of only ints or only floats, else None."""
    if not items:
        return None
    first = type(items[0])
    if first not in (int, float) or any(type(x) is not first for x in items):
        return None
    if first is int:
        for x in items:
            _check_int64(x)
    return _I8 if first is int else _F8


def _check_int64(value: int) -> None:
    """ValueError unless the Python int fits the int64 it is stored as."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError("integer does not fit in 64 bits")


def _disk_dtype(dtype: np.dtype) -> np.dtype:
    dtype = check_dtype(dtype)
    if dtype.kind == "b":
        return _BOOL_DISK  # NetCDF has no bool
    if dtype.kind == "f" and dtype.itemsize not in (4, 8):
        raise TypeError(f"dtype {dtype} is not storable in NetCDF (use float32 or float64)")
    return dtype.newbyteorder("=")


def _array_signature(io_type: str, arr: np.ndarray, unit: str | None) -> Signature:
    try:
        disk = _disk_dtype(arr.dtype)
    except TypeError:
        raise UnsupportedTypeError(f"numpy.ndarray of {arr.dtype}") from None
    return Signature(io_type, arr.dtype.name if io_type == "numpy.ndarray" else "numpy.ndarray", arr.shape, disk, unit)


def signature(value: Any) -> Signature:
    """The signature ``value`` would give a new variable; UnsupportedTypeError if none."""
    cls = type(value)
    if cls is float:
        return Signature("float", "float", (1,), _F8)
    if cls is int:
        _check_int64(value)
        return Signature("int", "int", (1,), _I8)
    if cls is bool:
        return Signature("bool", "bool", (1,), _BOOL_DISK)
    if cls is str:
        if "\x00" in value:  # netCDF strings are C strings: the rest would be cut off
            raise ValueError("a str holding NUL characters cannot be stored")
        return Signature("str", "str", (1,), TEXT)
    if cls is dict:
        return Signature("dict", "dict", (1,), TEXT)
    if cls is list or cls is tuple:
        dtype = _numeric_list(value)
        if dtype is None:
            return Signature("yaml", cls.__name__, (1,), TEXT)
        return Signature("iterable", cls.__name__, (len(value),), dtype)
    if cls is np.ndarray:
        return _array_signature("numpy.ndarray", value, None)
    if isinstance(value, np.generic):
        try:
            disk = _disk_dtype(value.dtype)
        except TypeError:
            raise UnsupportedTypeError(type_name(value)) from None
        return Signature("numpy.scalar", value.dtype.name, (1,), disk)
    if is_quantity(value):
        return _quantity_signature(value)
    raise UnsupportedTypeError(type_name(value))


def _quantity_signature(value: Any) -> Signature:
    unit = unit_string(value.units)
    magnitude = value.magnitude
    if type(magnitude) is np.ndarray and magnitude.ndim == 0:  # force_ndarray_like registries (pint-xarray)
        magnitude = magnitude[()]
    cls = type(magnitude)
    if cls is float or isinstance(magnitude, np.floating):
        return Signature("quantity", "float", (1,), _F8, unit)
    if (cls is int or isinstance(magnitude, np.integer)) and cls is not bool:
        _check_int64(int(magnitude))
        return Signature("quantity", "int", (1,), _I8, unit)
    if cls is list or cls is tuple:
        dtype = _numeric_list(magnitude)
        if dtype is not None:
            return Signature("quantity", cls.__name__, (len(magnitude),), dtype, unit)
    if cls is np.ndarray and magnitude.dtype.kind in "iuf":
        return _array_signature("quantity", magnitude, unit)
    inner = f"numpy.ndarray of {magnitude.dtype}" if cls is np.ndarray else type_name(magnitude)
    raise UnsupportedTypeError(f"pint.Quantity of {inner}")


def describe(sig: Signature) -> str:
    """Human name of what a signature holds, for error messages."""
    if sig.io_type == "numpy.ndarray":
        return f"numpy.ndarray of {sig.type_attr}"
    if sig.io_type == "iterable":
        return f"{sig.type_attr} of {'int' if sig.dtype.kind == 'i' else 'float'}"
    if sig.io_type == "numpy.scalar":
        return f"numpy.{sig.type_attr}"
    if sig.io_type == "quantity":
        return f"pint.Quantity of {sig.type_attr}"
    return sig.type_attr


def shape_text(sig: Signature) -> str:
    return str(tuple(sig.row_shape))


def check_compatible(stored: Signature, new: Signature, path: str, verb: str) -> None:
    """Raise unless ``new`` may go into a variable of ``stored`` (units are checked by the caller)."""
    same_type = stored.io_type == new.io_type and stored.type_attr == new.type_attr
    if not same_type and stored.io_type == new.io_type == "numpy.ndarray":
        same_type = stored.type_attr != "bool" and new.type_attr != "bool" and np.can_cast(
            new.dtype, stored.dtype, "same_kind"
        )
    if not same_type and stored.io_type == new.io_type == "quantity":  # classic list quantities: pint has arrays
        same_type = stored.type_attr in ("list", "tuple") and new.type_attr == "numpy.ndarray"
    if same_type and KINDS[stored.io_type].storage == "array" and stored.dtype != new.dtype:
        same_type = np.can_cast(new.dtype, stored.dtype, "same_kind")
    if not same_type:
        raise TypeError(f"{path}: cannot {verb} {describe(new)}: the variable holds {describe(stored)}")
    if stored.row_shape != new.row_shape:
        done = {"write": "written", "append": "appended"}.get(verb, f"{verb}ed")
        raise ValueError(f"{path}: {done} shape {shape_text(new)} does not match stored shape {shape_text(stored)}")


# --- encoding -------------------------------------------------------------------------


def encode(value: Any, sig: Signature, convert: Callable[[Any], Any] | None = None) -> Any:
    """What to assign to one entry on disk (``convert`` maps quantity magnitudes to the stored unit)."""
    storage = KINDS[sig.io_type].storage
    if sig.io_type == "quantity":
        value = value.magnitude if convert is None else convert(value.magnitude)
    if storage == "number":
        return value
    if storage == "text":
        return value if sig.io_type == "str" else textcodec.dumps(value)
    return np.asarray(value, dtype=sig.dtype)


# --- decoding -------------------------------------------------------------------------


def _scalar(raw: Any) -> Any:
    return np.asarray(raw).reshape(-1)[0]


def _column(raw: Any) -> np.ndarray:
    raw = np.asarray(raw)
    return raw.reshape(raw.shape[0]) if raw.ndim else raw.reshape(1)


def _caster(py: type) -> Kind:
    return Kind("number", lambda raw, sig: py(_scalar(raw)), lambda raw, sig: _column(raw).astype(py))


def _numpy_scalar_one(raw: Any, sig: Signature) -> Any:
    return np.dtype(sig.type_attr).type(_scalar(raw))


def _numpy_scalar_many(raw: Any, sig: Signature) -> np.ndarray:
    return _column(raw).astype(np.dtype(sig.type_attr))


def _text_one(raw: Any, sig: Signature) -> Any:
    text = str(_scalar(raw))
    if sig.io_type == "str":
        return text
    value = textcodec.loads(text)
    if sig.type_attr == "tuple" and isinstance(value, list):
        return tuple(value)
    return value


def _text_many(raw: Any, sig: Signature) -> list:
    return [_text_one(entry, sig) for entry in _column(raw)]


def _array_one(raw: Any, sig: Signature) -> np.ndarray:
    arr = np.asarray(raw)
    return arr.astype(bool) if sig.type_attr == "bool" else arr


def _array_many(raw: Any, sig: Signature) -> np.ndarray:
    return _array_one(raw, sig)


def _iterable_one(raw: Any, sig: Signature) -> list | tuple:
    items = np.asarray(raw).reshape(-1).tolist()
    return tuple(items) if sig.type_attr == "tuple" else items


def _iterable_many(raw: Any, sig: Signature) -> list:
    return [_iterable_one(row, sig) for row in np.asarray(raw)]


def _magnitude_one(raw: Any, sig: Signature) -> Any:
    if sig.type_attr in ("int", "float"):
        return (int if sig.type_attr == "int" else float)(_scalar(raw))
    if sig.type_attr in ("list", "tuple"):
        return _iterable_one(raw, sig)
    return np.asarray(raw)


def _quantity_one(raw: Any, sig: Signature) -> Any:
    return quantity(_magnitude_one(raw, sig), sig.unit or "")


def _quantity_many(raw: Any, sig: Signature) -> Any:
    raw = np.asarray(raw)
    if sig.type_attr in ("int", "float"):
        raw = _column(raw)
    return quantity(raw, sig.unit or "")


KINDS: dict[str, Kind] = {
    "int": _caster(int),
    "float": _caster(float),
    "bool": _caster(bool),
    "numpy.scalar": Kind("number", _numpy_scalar_one, _numpy_scalar_many),
    "str": Kind("text", _text_one, _text_many),
    "dict": Kind("text", _text_one, _text_many),
    "yaml": Kind("text", _text_one, _text_many),
    "iterable": Kind("array", _iterable_one, _iterable_many),
    "numpy.ndarray": Kind("array", _array_one, _array_many),
    "quantity": Kind("array", _quantity_one, _quantity_many),
}
