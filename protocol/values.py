"""Value encoding for the wire: msgpack for structure, numpy buffers as frames.

``pack(obj)`` returns a list of frames: the msgpack body first, then one frame
per large array, which ZeroMQ can send without copying. ``unpack(frames)``
reverses it; arrays come back as read-only ``np.frombuffer`` views of the
received frames. Python types that msgpack would blur are kept distinct with
extension types: tuples stay tuples, numpy scalars keep their dtype, pint
quantities travel as (magnitude, unit string). No pickle, ever.

Any malformed input makes ``unpack`` raise :class:`ProtocolError`, and only that.
"""

from __future__ import annotations

from typing import Any, Sequence

import msgpack
import numpy as np

from .errors import ProtocolError, UnsupportedTypeError
from .units import is_quantity, quantity, unit_string

EXT_TUPLE = 1
EXT_ARRAY = 2
EXT_NUMPY_SCALAR = 3
EXT_QUANTITY = 4
EXT_SLICE = 5

# Arrays smaller than this travel inside the msgpack body: a separate frame
# costs more than copying a few hundred bytes.
INLINE_ARRAY_BYTES = 4096
# numpy kinds nstore stores: bool, signed and unsigned integers, floats.
ARRAY_KINDS = frozenset("biuf")
MAX_ARRAY_NDIM = 32
# Tuples, arrays, numpy scalars, quantities and slices nest as extension types;
# each level unpacks with a fresh msgpack C context (tens of kB of C stack), so
# a hostile message nesting a few hundred of them would crash the process.
MAX_EXT_DEPTH = 32


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
    cls = type(value)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module.startswith("numpy"):
        return f"numpy.{cls.__qualname__}"
    return f"{module}.{cls.__qualname__}"


class _Packer:
    """Collects out-of-band buffers while msgpack walks a value."""

    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.depth = 0

    def pack(self, obj: Any) -> bytes:
        # A fresh packb per level: msgpack's Packer is not re-entrant from `default`.
        if self.depth > MAX_EXT_DEPTH:
            raise ValueError(f"value nests tuples/arrays/quantities deeper than {MAX_EXT_DEPTH} levels")
        self.depth += 1
        try:
            return msgpack.packb(obj, default=self._default, strict_types=True, use_bin_type=True)
        except OverflowError:
            raise ValueError("integer does not fit in 64 bits") from None
        finally:
            self.depth -= 1

    def _default(self, obj: Any) -> msgpack.ExtType:
        if type(obj) is tuple:
            return msgpack.ExtType(EXT_TUPLE, self.pack(list(obj)))
        if isinstance(obj, np.ndarray):
            return msgpack.ExtType(EXT_ARRAY, self._pack_array(obj))
        if isinstance(obj, np.generic) and obj.dtype.kind in ARRAY_KINDS:
            return msgpack.ExtType(EXT_NUMPY_SCALAR, self.pack([obj.dtype.str, obj.tobytes()]))
        if is_quantity(obj):
            try:
                payload = self.pack([obj.magnitude, unit_string(obj.units)])
            except UnsupportedTypeError as exc:  # named like the engine names it
                raise UnsupportedTypeError(f"pint.Quantity of {exc.type_name}") from None
            return msgpack.ExtType(EXT_QUANTITY, payload)
        if type(obj) is slice:
            return msgpack.ExtType(EXT_SLICE, self.pack([obj.start, obj.stop, obj.step]))
        if type(obj) in (bool, int, float, str, list, dict) or obj is None:
            return obj  # a subclass that strict_types refused; pack it as its base
        if isinstance(obj, (int, float, str)) and not isinstance(obj, np.generic):
            base = next(t for t in (bool, int, float, str) if isinstance(obj, t))
            return base(obj)
        raise UnsupportedTypeError(type_name(obj))

    def _pack_array(self, arr: np.ndarray) -> bytes:
        try:
            dtype = check_dtype(arr.dtype)
        except TypeError:
            raise UnsupportedTypeError(f"numpy.ndarray of {arr.dtype}") from None
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)
        if arr.nbytes < INLINE_ARRAY_BYTES:
            payload: Any = arr.tobytes()
        else:
            payload = len(self.frames)
            self.frames.append(arr.reshape(-1).view(np.uint8).data)  # flat bytes view, no copy
        return self.pack([dtype.str, list(arr.shape), payload])


def pack(obj: Any) -> list:
    """Frames for ``obj``: ``[msgpack body, *array buffers]``."""
    packer = _Packer()
    body = packer.pack(obj)
    return [body, *packer.frames]


def unpack(frames: Sequence[Any]) -> Any:
    """The value ``pack`` made these frames from; ProtocolError if they are malformed."""
    if not frames:
        raise ProtocolError("empty message")
    try:
        buffers = [memoryview(frames_body(f)).cast("B") for f in frames[1:]]
    except (TypeError, ValueError) as exc:  # a frame that is not a flat bytes-like buffer
        raise ProtocolError(f"malformed frame: {exc}") from None

    depth = 0

    def ext_hook(code: int, data: bytes) -> Any:
        nonlocal depth
        if depth >= MAX_EXT_DEPTH:
            raise ProtocolError(f"extension types nested deeper than {MAX_EXT_DEPTH} levels")
        depth += 1
        try:
            return _decode_ext(code, msgpack.unpackb(data, ext_hook=ext_hook, raw=False, strict_map_key=False))
        finally:
            depth -= 1

    def _decode_ext(code: int, inner: Any) -> Any:
        if code == EXT_TUPLE:
            if not isinstance(inner, list):
                raise ProtocolError("tuple payload is not a list")
            return tuple(inner)
        if code == EXT_ARRAY:
            return _unpack_array(inner, buffers)
        if code == EXT_NUMPY_SCALAR:
            if not (isinstance(inner, list) and len(inner) == 2 and isinstance(inner[1], bytes)):
                raise ProtocolError("numpy scalar payload must be [dtype, bytes]")
            dtype = _dtype(inner[0])
            if len(inner[1]) != dtype.itemsize:
                raise ProtocolError(f"numpy scalar of {dtype} needs {dtype.itemsize} bytes, got {len(inner[1])}")
            return np.frombuffer(inner[1], dtype=dtype)[0]
        if code == EXT_QUANTITY:
            if not (isinstance(inner, list) and len(inner) == 2 and isinstance(inner[1], str)):
                raise ProtocolError("quantity payload must be [magnitude, unit]")
            magnitude, unit = inner
            if not isinstance(magnitude, (int, float, list, tuple, np.ndarray, np.generic)) or isinstance(magnitude, bool):
                raise ProtocolError(f"quantity magnitude of type {type(magnitude).__name__} is not allowed")
            if np.asarray(magnitude).dtype.kind not in "iuf":  # (ragged lists raise; caught below)
                raise ProtocolError("quantity magnitude must be an integer or float number or array")
            try:
                return quantity(magnitude, unit)
            except ValueError as exc:
                raise ProtocolError(str(exc)) from None
        if code == EXT_SLICE:
            if not (isinstance(inner, list) and len(inner) == 3):
                raise ProtocolError("slice payload must be [start, stop, step]")
            if not all(x is None or (type(x) is int) for x in inner):
                raise ProtocolError("slice bounds must be integers or None")
            return slice(*inner)
        raise ProtocolError(f"unknown extension type {code}")

    try:
        return msgpack.unpackb(frames_body(frames[0]), ext_hook=ext_hook, raw=False, strict_map_key=False)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack and numpy raise many types on garbage
        raise ProtocolError(f"malformed message: {type(exc).__name__}: {exc}") from None
    finally:
        # ext_hook refers to itself, a reference cycle that only the cyclic GC frees (rarely, in
        # the daemon); it must not keep the message's buffers alive meanwhile. The arrays
        # returned hold their own references to the frames they view.
        buffers.clear()


def frames_body(frame: Any) -> Any:
    """The bytes-like body of a frame (a zmq.Frame, bytes or memoryview)."""
    return frame.buffer if hasattr(frame, "buffer") else frame


def _dtype(text: Any) -> np.dtype:
    if not isinstance(text, str) or len(text) > 16:
        raise ProtocolError("dtype must be a short string")
    try:
        return check_dtype(text)
    except TypeError as exc:
        raise ProtocolError(str(exc)) from None


def _unpack_array(inner: Any, buffers: list) -> np.ndarray:
    if not (isinstance(inner, list) and len(inner) == 3 and isinstance(inner[1], list)):
        raise ProtocolError("array payload must be [dtype, shape, data]")
    dtype = _dtype(inner[0])
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


def check_storable_type(py_type: Any, path: str) -> None:
    """UnsupportedTypeError (a TypeError) naming ``py_type`` and ``path`` unless it is a contract type."""
    if isinstance(py_type, type):
        if py_type in (int, float, bool, str, list, tuple, dict, np.ndarray):
            return
        if issubclass(py_type, np.generic) and np.dtype(py_type).kind in ARRAY_KINDS:
            return
        if py_type.__module__.startswith("pint") and py_type.__name__ == "Quantity":
            return
        module = py_type.__module__
        prefix = "" if module == "builtins" else ("numpy." if module.startswith("numpy") else f"{module}.")
        raise UnsupportedTypeError(f"{prefix}{py_type.__qualname__}", path)
    raise UnsupportedTypeError(repr(py_type), path)
