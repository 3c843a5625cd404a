"""The journal: an append-only log of applied operations, next to the NetCDF file.

Each batch the daemon applies becomes ONE record (group commit), written with
one ``writev`` before the batch is acknowledged. A record is
``[u32 payload length][u32 crc32 of payload][payload]``; the payload holds the
record's frames (``values.pack`` output: msgpack body + array buffers) as
``[u32 frame count][u64 size]*count`` followed by the frame bytes. A torn
tail (daemon killed mid-write) fails the length or checksum test and is
ignored, never applied.

Durability policies (``--fsync``):

* ``never``    -- write() only. The OS keeps written pages, so a SIGKILL of the
                  daemon loses nothing acknowledged; a power loss may.
* ``interval`` -- as ``never``, plus an fsync at most every second.
* ``batch``    -- fsync before every acknowledgement: survives power loss.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from typing import Any, Iterator

from nstore.protocol.values import pack, unpack

from .safefiles import open_file

_RECORD = struct.Struct("<II")
_COUNT = struct.Struct("<I")
_SIZE = struct.Struct("<Q")
MAX_RECORD_BYTES = 1 << 34  # a length beyond this is a torn header, not a record

FSYNC_POLICIES = ("never", "interval", "batch")
FSYNC_INTERVAL_S = 1.0


def journal_path(file_name: str) -> str:
    return file_name + ".journal"


class Journal:
    """Append-only record log with a durability policy."""

    def __init__(self, path: str, fsync: str = "never"):
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self.path = path
        self.fsync = fsync
        self._fd = open_file(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)  # never through a planted link
        self.size = os.fstat(self._fd).st_size
        self._last_fsync = time.monotonic()

    def append(self, record: Any) -> None:
        """Write one record (a packable value) durably per the policy."""
        frames = pack(record)
        views = [memoryview(f).cast("B") for f in frames]
        index = _COUNT.pack(len(views)) + b"".join(_SIZE.pack(v.nbytes) for v in views)
        crc = zlib.crc32(index)
        for view in views:
            crc = zlib.crc32(view, crc)
        length = len(index) + sum(v.nbytes for v in views)
        parts = [_RECORD.pack(length, crc), index, *views]
        written = os.writev(self._fd, parts)
        expected = _RECORD.size + length
        while written < expected:  # rare short write: finish it
            rest = b"".join(bytes(p) for p in parts)[written:]
            written += os.write(self._fd, rest)
        self.size += expected
        if self.fsync == "batch" or (self.fsync == "interval" and time.monotonic() - self._last_fsync >= FSYNC_INTERVAL_S):
            os.fsync(self._fd)
            self._last_fsync = time.monotonic()

    def reset(self, first_record: Any = None) -> None:
        """Replace the journal by one holding only ``first_record`` (or nothing), atomically.

        Used by checkpoints: the new journal is written beside the old one and
        renamed over it, so a crash leaves either the old journal or the new
        one, never an empty journal that forgot ``first_record``.
        """
        fresh = Journal(self.path + ".new", fsync="never")
        os.ftruncate(fresh._fd, 0)
        fresh.size = 0
        if first_record is not None:
            fresh.append(first_record)
        if self.fsync != "never":
            os.fsync(fresh._fd)
        os.replace(fresh.path, self.path)
        os.close(self._fd)
        self._fd, self.size = fresh._fd, fresh.size
        fresh._fd = None
        if self.fsync != "never":
            directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
            try:
                os.fsync(directory)  # make the rename itself durable
            finally:
                os.close(directory)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_records(path: str, with_position: bool = False) -> Iterator[Any]:
    """Every intact record in order; stops at the first torn or corrupt one.

    With ``with_position``, yields ``(record, bytes read so far)``.
    """
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    with fh:
        while True:
            header = fh.read(_RECORD.size)
            if len(header) < _RECORD.size:
                return
            length, crc = _RECORD.unpack(header)
            if length > MAX_RECORD_BYTES:
                return
            payload = fh.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return
            try:
                record = unpack(_split_frames(payload))
            except Exception:  # checksum matched but content is not ours: stop, apply nothing more
                return
            yield (record, fh.tell()) if with_position else record


def _split_frames(payload: bytes) -> list:
    view = memoryview(payload)
    (count,) = _COUNT.unpack_from(view, 0)
    offset = _COUNT.size
    sizes = [_SIZE.unpack_from(view, offset + i * _SIZE.size)[0] for i in range(count)]
    offset += count * _SIZE.size
    frames = []
    for size in sizes:
        frames.append(view[offset : offset + size])
        offset += size
    return frames
