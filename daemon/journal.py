"""The journal: an append-only log of applied operations, next to the NetCDF file; owns its format.

A journal starts with a header, ``b"NSTOREJ\\n"`` and a u32 format version
(:data:`FORMAT_VERSION`). Each batch the daemon applies becomes ONE record
(group commit), written with one ``writev`` before the batch is acknowledged:
``[u32 payload length][u32 crc32 of payload][payload]``; the payload holds the
record's frames as ``[u32 frame count][u64 size]*count`` then the frame bytes.
The frames encode the record's plain form (:func:`_plain`) with nstore's
msgpack value encoding (protocol/values.py: body + array buffers); a test pins
the bytes of a sample record, so a codec change cannot silently change the
format: it must bump :data:`FORMAT_VERSION`. A torn tail (daemon killed
mid-write) fails the length or checksum test and is ignored, never applied.

Format 3 adds each entry's request digest (format 2 journals are still read).
A journal of another version is refused (:class:`JournalVersionError`) and
left untouched. A headerless journal (format 1, nstore before the header) is
still read.

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
from typing import Any, BinaryIO, Iterator, NamedTuple

from nstore.protocol.values import pack, unpack

from .safefiles import open_file

MAGIC = b"NSTOREJ\n"
FORMAT_VERSION = 3  # 3: request digests; 2: no digests; 1: headerless (records were the server's dicts and lists)
READABLE_VERSIONS = (2, 3)  # (and the headerless 1)
_HEADER = struct.Struct("<8sI")
HEADER_BYTES = _HEADER.size
_RECORD = struct.Struct("<II")
_COUNT = struct.Struct("<I")
_SIZE = struct.Struct("<Q")
MAX_RECORD_BYTES = 1 << 34  # a length beyond this is a torn header, not a record

FSYNC_POLICIES = ("never", "interval", "batch")
FSYNC_INTERVAL_S = 1.0


class Entry(NamedTuple):
    """One mutating op of a batch: who sent it, and what to apply again (None: it failed)."""

    client: str
    request_id: int
    op_index: int
    op: tuple | None  # (name, path, journaled args), see ops.OpSpec.journal
    wire: list  # the result the client got, for a resent request
    digest: bytes = b""  # of the request's frames (clients.request_digest); b"": before format 3


class Commit(NamedTuple):
    """The mutating ops of one batch, journaled before any of them is acknowledged."""

    seq: int
    entries: list


class Snapshot(NamedTuple):
    """The first record after a checkpoint: the batch number the file holds and the client table."""

    seq: int
    clients: dict


class JournalVersionError(ValueError):
    """A journal in a format this nstored does not read."""


def journal_path(file_name: str) -> str:
    return file_name + ".journal"


class Journal:
    """A fresh journal (replacing any at ``path``, atomically) that records are appended to."""

    def __init__(self, path: str, fsync: str = "never", first_record: Snapshot | None = None):
        """Written beside the old journal and renamed over it, so a crash leaves either the old
        journal or the new one, never an empty journal that forgot ``first_record``."""
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        self.path = path
        self.fsync = fsync
        scratch = path + ".new"
        self._fd = open_file(scratch, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)  # never through a planted link
        self.size = 0
        self.broken: OSError | None = None  # set when a failed record could not be cut off again
        self._last_fsync = time.monotonic()
        try:
            self._write([_HEADER.pack(MAGIC, FORMAT_VERSION)], _HEADER.size)
            if first_record is not None:
                self._write(*_record_parts(first_record))
            if fsync != "never":
                os.fsync(self._fd)
            os.replace(scratch, path)
        except BaseException:
            self.close()
            raise
        if fsync != "never":
            _fsync_directory(path)  # make the rename itself durable

    def append(self, record: Commit) -> None:
        """Write one record durably per the policy; on failure the journal is left as it was.

        A record cut short by a full disk is cut off again, so that records
        written once space is back are not hidden behind a torn one. If even
        that fails, the journal refuses every later record until a checkpoint
        replaces it (:attr:`broken`).
        """
        if self.broken is not None:
            raise self.broken
        size = self.size
        try:
            self._write(*_record_parts(record))
            if self.fsync == "batch" or (self.fsync == "interval"
                                         and time.monotonic() - self._last_fsync >= FSYNC_INTERVAL_S):
                os.fsync(self._fd)
                self._last_fsync = time.monotonic()
        except OSError as exc:
            self._cut_back(size, exc)
            raise

    def _cut_back(self, size: int, cause: OSError) -> None:
        """Drop whatever part of a failed record reached the file (it is O_APPEND: later writes go at the end)."""
        if cause.filename is None:
            cause.filename = self.path  # "[Errno 28] No space left on device: '.../run.nc.journal'"
        self.size = size
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            self.broken = cause

    def _write(self, parts: list, expected: int) -> None:
        """Write ``parts`` (``expected`` bytes in all) with one writev."""
        written = os.writev(self._fd, parts)
        while written < expected:  # rare short write: finish it
            rest = b"".join(bytes(p) for p in parts)[written:]
            written += os.write(self._fd, rest)
        self.size += expected

    def reset(self, first_record: Snapshot | None = None) -> None:
        """Replace the journal by one holding only ``first_record`` (checkpoints)."""
        fresh = Journal(self.path, self.fsync, first_record)
        self.close()
        self._fd, self.size = fresh._fd, fresh.size
        fresh._fd = None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _record_parts(record: Commit | Snapshot) -> tuple[list, int]:
    """The buffers of one framed record (header, frame index, frames) and their total size."""
    views = [memoryview(f).cast("B") for f in pack(_plain(record))]
    sizes = [view.nbytes for view in views]
    index = struct.pack(f"<I{len(sizes)}Q", len(sizes), *sizes)  # (_COUNT, then a _SIZE per frame)
    crc = zlib.crc32(index)
    for view in views:
        crc = zlib.crc32(view, crc)
    length = len(index) + sum(sizes)
    return [_RECORD.pack(length, crc), index, *views], _RECORD.size + length


def _plain(record: Commit | Snapshot) -> list:
    """The record's explicit plain form (format 3; format 2 lacked each entry's digest)."""
    if isinstance(record, Snapshot):
        return ["snapshot", record.seq, record.clients]
    return ["commit", record.seq, [[e.client, e.request_id, e.op_index, None if e.op is None else list(e.op), e.wire,
                                    e.digest] for e in record.entries]]


def _typed(plain: Any) -> Commit | Snapshot:
    kind, seq, body = plain
    if kind == "snapshot":
        return Snapshot(int(seq), body)
    if kind != "commit":
        raise ValueError(f"unknown journal record {kind!r}")
    return Commit(int(seq), [Entry(c, rid, i, None if op is None else tuple(op), wire,
                                   bytes(digest[0]) if digest else b"") for c, rid, i, op, wire, *digest in body])


def _typed_v1(record: dict) -> Commit | Snapshot:
    """A record of the headerless format 1 (appends were journaled as ``"put"``)."""
    if "snapshot" in record:
        return Snapshot(int(record["snapshot"]), record["clients"])
    entries = []
    for client, request_id, op_index, logged, wire in record["ops"]:
        if logged is not None:
            name, path, args = logged
            logged = ("append" if name == "put" else name, path, args)
        entries.append(Entry(client, request_id, op_index, logged, wire))
    return Commit(int(record["seq"]), entries)


def read_records(path: str, with_position: bool = False) -> Iterator[Any]:
    """Every intact record in order, typed; stops at the first torn or corrupt one.

    With ``with_position``, yields ``(record, bytes read so far)``. Raises
    JournalVersionError, before yielding anything, for a journal of another version.
    """
    try:
        fh = os.fdopen(open_file(path, os.O_RDONLY), "rb")  # a planted link is refused, not read as a journal
    except FileNotFoundError:
        return
    with fh:
        typed = _typed if _read_header(fh, path) else _typed_v1
        for payload in _payloads(fh):
            try:
                record = typed(unpack(_split_frames(payload), light=True))  # quantities: WireQuantity
            except Exception:  # checksum matched but content is not ours: stop, apply nothing more
                return
            yield (record, fh.tell()) if with_position else record


def _read_header(fh: BinaryIO, path: str) -> bool:
    """True for a current journal, False for a headerless (format 1) one; refuses any other version."""
    header = fh.read(_HEADER.size)
    if not header.startswith(MAGIC[: len(header)]) or not header:
        fh.seek(0)
        return False
    if len(header) < _HEADER.size:  # a header cut short: an empty journal
        return True
    _, version = _HEADER.unpack(header)
    if version not in READABLE_VERSIONS:
        raise JournalVersionError(
            f"{path}: journal format version {version}, but this nstored reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (and the headerless version 1); the journal is left "
            f"untouched: replay it with the nstore that wrote it (`nstored recover FILE`), or move it aside to start without it")
    return True


def _payloads(fh: BinaryIO) -> Iterator[bytes]:
    """The payload of each intact record, in order."""
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
        yield payload


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


def _fsync_directory(path: str) -> None:
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
