"""The ``numpy.ndarray`` kind: numeric and bool arrays of any shape, one array per entry.

On the wire an array is ``[dtype, shape, data]``; data of at least
``INLINE_ARRAY_BYTES`` travels as its own ZeroMQ frame, which is sent without
copying and received as a read-only view.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from nstore.protocol.errors import ProtocolError, UnsupportedTypeError

from .base import Kind, Signature, Wire, check_dtype, disk_dtype, wire_dtype

EXT_ARRAY = 2
# Arrays smaller than this travel inside the msgpack body: a separate frame
# costs more than copying a few hundred bytes.
INLINE_ARRAY_BYTES = 4096
MAX_ARRAY_NDIM = 32


def _encode_array(arr: np.ndarray, pack: Any, frames: list) -> bytes:
    try:
        dtype = check_dtype(arr.dtype)
    except TypeError:
        raise UnsupportedTypeError(f"numpy.ndarray of {arr.dtype}") from None
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)
    if arr.nbytes < INLINE_ARRAY_BYTES:
        payload: Any = arr.tobytes()
    else:
        payload = len(frames)
        frames.append(arr.reshape(-1).view(np.uint8).data)  # flat bytes view, no copy
    return pack([dtype.str, list(arr.shape), payload])


def _decode_array(inner: Any, buffers: list) -> np.ndarray:
    if not (isinstance(inner, list) and len(inner) == 3 and isinstance(inner[1], list)):
        raise ProtocolError("array payload must be [dtype, shape, data]")
    dtype = wire_dtype(inner[0])
    shape = inner[1]
    if len(shape) > MAX_ARRAY_NDIM:
        raise ProtocolError(f"array has {len(shape)} dimensions, more than the limit of {MAX_ARRAY_NDIM}")
    if not all(type(n) is int and n >= 0 for n in shape):
        raise ProtocolError(f"array shape {shape!r} is not a list of non-negative integers")
    payload = inner[2]
    if type(payload) is int:
        if not 0 <= payload < len(buffers):
            raise ProtocolError(f"array refers to frame {payload}, message has {len(buffers)}")
        data = buffers[payload]
    elif isinstance(payload, bytes):
        data = payload
    else:
        raise ProtocolError("array data must be bytes or a frame index")
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(data):
        raise ProtocolError(
            f"array of shape {tuple(shape)} and dtype {dtype} needs {count * dtype.itemsize} bytes, got {len(data)}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(tuple(shape))


def array_signature(io_type: str, arr: np.ndarray, unit: str | None) -> Signature:
    """The signature of an array (``io_type`` quantity: the magnitude of a quantity)."""
    try:
        disk = disk_dtype(arr.dtype)
    except TypeError:
        raise UnsupportedTypeError(f"numpy.ndarray of {arr.dtype}") from None
    return Signature(io_type, arr.dtype.name if io_type == "numpy.ndarray" else "numpy.ndarray", arr.shape, disk, unit)


def can_hold(stored: Signature, new: Signature) -> bool:
    """Whether the disk dtype of ``stored`` holds ``new``'s without changing its kind of number."""
    return stored.dtype == new.dtype or np.can_cast(new.dtype, stored.dtype, "same_kind")


class NDArray(Kind):
    """A ``numpy.ndarray`` of bool, integers or float32/64; bools are stored as int8."""

    io_type, storage, py_types = "numpy.ndarray", "array", (np.ndarray,)
    wire = Wire(EXT_ARRAY, lambda obj: isinstance(obj, np.ndarray), _encode_array, _decode_array)

    def signature(self, value: Any) -> Signature | None:
        return array_signature(self.io_type, value, None) if type(value) is np.ndarray else None

    def same_type(self, stored: Signature, new: Signature) -> bool:
        if stored.type_attr != new.type_attr and "bool" in (stored.type_attr, new.type_attr):
            return False  # (any other dtype may go into a wider one of its kind)
        return can_hold(stored, new)

    def encode(self, value: Any, sig: Signature, convert: Any) -> Any:
        return np.asarray(value, dtype=sig.dtype)

    def decode_one(self, raw: Any, sig: Signature) -> np.ndarray:
        arr = np.asarray(raw)
        return arr.astype(bool) if sig.type_attr == "bool" else arr

    def decode_many(self, raw: Any, sig: Signature) -> np.ndarray:
        return self.decode_one(raw, sig)

    def sizes(self, item: Any) -> bool:
        return isinstance(item, np.ndarray)

    def payload(self, item: Any) -> tuple[int, Iterable[Any]]:
        return item.nbytes, ()

    def owned(self, value: Any) -> Any:
        return value.copy()

    def describe(self, sig: Signature) -> str:
        return f"numpy.ndarray of {sig.type_attr}"

    def python_type(self, type_attr: str) -> str:
        return f"numpy.ndarray[{type_attr}]"

    def has_shape(self, type_attr: str) -> bool:
        return True


NDARRAY = NDArray()
