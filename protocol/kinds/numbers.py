"""Kinds holding one number per entry: ``int``, ``float``, ``bool`` and numpy scalars."""

from __future__ import annotations

from typing import Any

import numpy as np

from nstore.protocol.errors import ProtocolError, UnsupportedTypeError

from .base import ARRAY_KINDS, BOOL_DISK, F8, I8, Kind, Signature, Wire, check_int64, column, disk_dtype, scalar, type_name, wire_dtype

EXT_NUMPY_SCALAR = 3


class PythonNumber(Kind):
    """``int``, ``float`` or ``bool``: one number per entry, read back as that Python type."""

    def __init__(self, py: type, disk: np.dtype):
        self.io_type, self.py, self.disk, self.py_types = py.__name__, py, disk, (py,)
        self._signature = Signature(self.io_type, self.io_type, (1,), disk)  # (the same for every value)

    def signature(self, value: Any) -> Signature | None:
        if type(value) is not self.py:
            return None
        if self.py is int:
            check_int64(value)
        return self._signature

    def decode_one(self, raw: Any, sig: Signature) -> Any:
        return self.py(scalar(raw))

    def decode_many(self, raw: Any, sig: Signature) -> np.ndarray:
        return column(raw).astype(self.py)

    def entries_of(self, value: Any, type_attr: str) -> list:
        return value.tolist()  # Python numbers, as they were appended


def _encode_scalar(obj: Any, pack: Any, frames: list) -> bytes:
    return pack([obj.dtype.str, obj.tobytes()])


def _decode_scalar(inner: Any, buffers: list) -> Any:
    if not (isinstance(inner, list) and len(inner) == 2 and isinstance(inner[1], bytes)):
        raise ProtocolError("numpy scalar payload must be [dtype, bytes]")
    dtype = wire_dtype(inner[0])
    if len(inner[1]) != dtype.itemsize:
        raise ProtocolError(f"numpy scalar of {dtype} needs {dtype.itemsize} bytes, got {len(inner[1])}")
    return np.frombuffer(inner[1], dtype=dtype)[0]


class NumpyScalar(Kind):
    """A numpy scalar (``np.float32``, ``np.int16``, ...): one number per entry, keeping its dtype."""

    io_type = "numpy.scalar"
    wire = Wire(EXT_NUMPY_SCALAR, lambda obj: isinstance(obj, np.generic) and obj.dtype.kind in ARRAY_KINDS,
                _encode_scalar, _decode_scalar)

    def signature(self, value: Any) -> Signature | None:
        if not isinstance(value, np.generic):
            return None
        try:
            disk = disk_dtype(value.dtype)
        except TypeError:
            raise UnsupportedTypeError(type_name(value)) from None
        return Signature(self.io_type, value.dtype.name, (1,), disk)

    def accepts_type(self, py_type: type) -> bool:
        return issubclass(py_type, np.generic) and np.dtype(py_type).kind in ARRAY_KINDS

    def decode_one(self, raw: Any, sig: Signature) -> Any:
        return np.dtype(sig.type_attr).type(scalar(raw))

    def decode_many(self, raw: Any, sig: Signature) -> np.ndarray:
        return column(raw).astype(np.dtype(sig.type_attr))

    def describe(self, sig: Signature) -> str:
        return f"numpy.{sig.type_attr}"

    def python_type(self, type_attr: str) -> str:
        return f"numpy.{type_attr}"


INT, FLOAT, BOOL = PythonNumber(int, I8), PythonNumber(float, F8), PythonNumber(bool, BOOL_DISK)
NUMPY_SCALAR = NumpyScalar()
