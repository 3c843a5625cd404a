"""The kind registry: one entry per kind of stored value, owning everything about it.

An entry (a :class:`~.base.Kind`) says which Python values it holds, the
signature a value gives its variable (``IODriver_Type``, type, entry shape,
dtype, unit), its msgpack extension type if it needs one, how an entry is
encoded to disk and decoded (one entry and many), its payload size, whether a
queued value must be copied, and how ``nstore inspect`` and the CLI describe
it. Adding a type means adding one entry to :data:`KINDS` (and its tests).
"""

from __future__ import annotations

from typing import Any, Callable

from nstore.protocol.errors import UnsupportedTypeError

from .arrays import NDARRAY
from .base import TEXT, Kind, Signature, Wire, class_name, type_name
from .numbers import BOOL, FLOAT, INT, NUMPY_SCALAR
from .quantity import DAEMON_QUANTITY, QUANTITY
from .sequences import ITERABLE, YAML
from .text import DICT, STR

# Order matters only among kinds holding the same class: a numeric list is
# 'iterable' before it is 'yaml'.
KINDS: dict[str, Kind] = {k.io_type: k for k in (
    INT, FLOAT, BOOL, NUMPY_SCALAR, STR, DICT, ITERABLE, YAML, NDARRAY, QUANTITY)}
_BY_CLASS: dict[type, tuple[Kind, ...]] = {
    cls: tuple(k for k in KINDS.values() if cls in k.py_types) for kind in KINDS.values() for cls in kind.py_types}
_OPEN = tuple(k for k in KINDS.values() if not k.py_types)  # kinds matched by more than an exact class
# What the daemon's reads decode with: quantities stay WireQuantity (its replies carry them as they are).
DAEMON_KINDS: dict[str, Kind] = {**KINDS, DAEMON_QUANTITY.io_type: DAEMON_QUANTITY}
# The msgpack extension types of stored values, one per code (list and tuple kinds share the tuple's).
WIRES: tuple[Wire, ...] = tuple(sorted({k.wire for k in KINDS.values() if k.wire is not None}, key=lambda w: w.code))


def signature(value: Any) -> Signature:
    """The signature ``value`` would give a new variable; UnsupportedTypeError if no kind holds it."""
    for kind in _BY_CLASS.get(type(value), _OPEN):
        sig = kind.signature(value)
        if sig is not None:
            return sig
    raise UnsupportedTypeError(type_name(value))


def check_storable_type(py_type: Any, path: str) -> None:
    """UnsupportedTypeError (a TypeError) naming ``py_type`` and ``path`` unless a kind holds it."""
    if not isinstance(py_type, type):
        raise UnsupportedTypeError(repr(py_type), path)
    if not any(kind.accepts_type(py_type) for kind in KINDS.values()):
        raise UnsupportedTypeError(class_name(py_type), path)


def describe(sig: Signature) -> str:
    """Human name of what a signature holds, for error messages."""
    return KINDS[sig.io_type].describe(sig)


def shape_text(sig: Signature) -> str:
    """An entry shape as error messages print it: ``(3,)``."""
    return str(tuple(sig.row_shape))


def check_compatible(stored: Signature, new: Signature, path: str, verb: str) -> None:
    """Raise unless ``new`` may go into a variable of ``stored`` (units are checked by the caller)."""
    if stored.io_type != new.io_type or not KINDS[stored.io_type].same_type(stored, new):
        raise TypeError(f"{path}: cannot {verb} {describe(new)}: the variable holds {describe(stored)}")
    if stored.row_shape != new.row_shape:
        done = {"write": "written", "append": "appended"}.get(verb, f"{verb}ed")
        raise ValueError(f"{path}: {done} shape {shape_text(new)} does not match stored shape {shape_text(stored)}")


def encode(value: Any, sig: Signature, convert: Callable[[Any], Any] | None = None) -> Any:
    """What to assign to one entry on disk (``convert`` maps quantity magnitudes to the stored unit)."""
    return KINDS[sig.io_type].encode(value, sig, convert)


# --- sizes and queueing ---------------------------------------------------------------------

_SCALARS = frozenset({float, int, bool, type(None)})
_MEASURED_BY: dict[type, Kind | None] = {}  # class -> the kind that measures its instances (None: no kind)


def _other_payload(item: Any) -> tuple[int, tuple]:
    """Anything no kind measures: bytes by length, None nothing, any other object 8 bytes."""
    if isinstance(item, bytes):
        return len(item), ()
    return (0 if item is None else 8), ()


def _measuring_kind(item: Any) -> Kind | None:
    """The kind whose :meth:`~.base.Kind.payload` measures ``item`` (looked up once per class)."""
    cls = type(item)
    try:
        return _MEASURED_BY[cls]
    except KeyError:
        kind = _MEASURED_BY[cls] = next((k for k in KINDS.values() if k.sizes(item)), None)
        return kind


def payload_bytes(value: Any, limit: int = 1 << 62, item_bytes: int = 0) -> int:
    """Bytes of data in ``value`` as it would be stored (arrays: nbytes; numbers: 8; text: its
    length) plus ``item_bytes`` per item, walking lists, tuples, dicts and quantities; stops
    counting once past ``limit``."""
    if type(value) in _SCALARS:
        return 8 + item_bytes  # the common case
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        kind = _measuring_kind(item)
        nbytes, inside = _other_payload(item) if kind is None else kind.payload(item)
        total += nbytes + item_bytes
        stack.extend(inside)
    return total


def owned(value: Any) -> Any:
    """``value``, its array data copied: the caller may reuse it before a pipelined op is sent."""
    if type(value) in _SCALARS:
        return value
    kind = _measuring_kind(value)
    return value if kind is None else kind.owned(value)


# --- description --------------------------------------------------------------------------------


def python_type(io_type: str, type_attr: str) -> str:
    """The Python type ``read()`` gives for one entry: ``float``, ``numpy.ndarray[float32]``, ``pint.Quantity[float]``."""
    kind = KINDS.get(io_type)
    return type_attr if kind is None else kind.python_type(type_attr)


def has_shape(io_type: str, type_attr: str) -> bool:
    """Whether the entry shape of a variable says something (arrays, numeric lists), for ``nstore inspect``."""
    kind = KINDS.get(io_type)
    return kind is not None and kind.has_shape(type_attr)


__all__ = ["DAEMON_KINDS", "KINDS", "TEXT", "WIRES", "Kind", "Signature", "Wire", "check_compatible", "check_storable_type",
           "describe", "encode", "has_shape", "owned", "payload_bytes", "python_type", "shape_text", "signature"]
