"""Value encoding for the wire: msgpack for structure, numpy buffers as frames.

``pack(obj)`` returns a list of frames: the msgpack body first, then one frame
per large array, which ZeroMQ can send without copying. ``unpack(frames)``
reverses it; arrays come back as read-only ``np.frombuffer`` views of the
received frames. Python types that msgpack would blur are kept distinct with
extension types: tuples stay tuples, numpy scalars keep their dtype, pint
quantities travel as (magnitude, unit string) (the daemon keeps them so:
``unpack(frames, light=True)``). No pickle, ever.

Any malformed input makes ``unpack`` raise :class:`ProtocolError`, and only that.
"""

from __future__ import annotations

from typing import Any, Sequence

import msgpack
import numpy as np

from .errors import ProtocolError, UnsupportedTypeError
from .kinds import WIRES, Wire, check_storable_type
from .kinds.arrays import EXT_ARRAY, INLINE_ARRAY_BYTES, MAX_ARRAY_NDIM
from .kinds.base import ARRAY_KINDS, check_dtype, type_name
from .kinds.numbers import EXT_NUMPY_SCALAR
from .kinds.quantity import EXT_QUANTITY
from .kinds.sequences import EXT_TUPLE

EXT_SLICE = 5

# Tuples, arrays, numpy scalars, quantities and slices nest as extension types;
# each level unpacks with a fresh msgpack C context (tens of kB of C stack), so
# a hostile message nesting a few hundred of them would crash the process.
MAX_EXT_DEPTH = 32


def _decode_slice(inner: Any, buffers: list) -> slice:
    if not (isinstance(inner, list) and len(inner) == 3):
        raise ProtocolError("slice payload must be [start, stop, step]")
    if not all(x is None or (type(x) is int) for x in inner):
        raise ProtocolError("slice bounds must be integers or None")
    return slice(*inner)


# Stored values' extension types (each kind owns its own), and slices for read indices.
_WIRES = (*WIRES, Wire(EXT_SLICE, lambda obj: type(obj) is slice,
                       lambda obj, pack, frames: pack([obj.start, obj.stop, obj.step]), _decode_slice))
_DECODERS = {wire.code: wire.decode for wire in _WIRES}
# The daemon's: quantities become WireQuantity (magnitude, unit string), never pint objects.
_LIGHT_DECODERS = {wire.code: wire.decode_light or wire.decode for wire in _WIRES}

__all__ = ["ARRAY_KINDS", "EXT_ARRAY", "EXT_NUMPY_SCALAR", "EXT_QUANTITY", "EXT_SLICE", "EXT_TUPLE",
           "INLINE_ARRAY_BYTES", "MAX_ARRAY_NDIM", "MAX_EXT_DEPTH", "check_dtype", "check_storable_type",
           "frames_body", "pack", "type_name", "unpack"]


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
        for wire in _WIRES:
            if wire.claims(obj):
                return msgpack.ExtType(wire.code, wire.encode(obj, self.pack, self.frames))
        if type(obj) in (bool, int, float, str, list, dict) or obj is None:
            return obj  # a subclass that strict_types refused; pack it as its base
        if isinstance(obj, (int, float, str)) and not isinstance(obj, np.generic):
            base = next(t for t in (bool, int, float, str) if isinstance(obj, t))
            return base(obj)
        raise UnsupportedTypeError(type_name(obj))


def pack(obj: Any) -> list:
    """Frames for ``obj``: ``[msgpack body, *array buffers]``."""
    packer = _Packer()
    body = packer.pack(obj)
    return [body, *packer.frames]


def unpack(frames: Sequence[Any], light: bool = False) -> Any:
    """The value ``pack`` made these frames from; ProtocolError if they are malformed.

    ``light`` (the daemon): quantities come back as WireQuantity, not pint Quantities.
    """
    decoders = _LIGHT_DECODERS if light else _DECODERS
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
        decode = decoders.get(code)
        if decode is None:
            raise ProtocolError(f"unknown extension type {code}")
        return decode(inner, buffers)

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
