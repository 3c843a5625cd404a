"""Write-behind: acknowledged appends wait here, then reach the file in blocks; recent rows serve reads.

nstored acknowledges an append once it is in the journal (the contract); the
file write can wait. :class:`WriteBehind` queues each batch's journaled rows
per variable and writes them when the daemon is idle or a bound is reached,
so many turns share one HDF5 call per variable. It also keeps the
last rows of each variable (:class:`Tail`) so that a small read of what was
just appended is answered from memory. Every queued row is in the journal: a
SIGKILL before the write loses nothing, replay writes it. A write that fails
(full disk, read-only file) keeps its rows queued for the next try; a
checkpoint flushes first, so it never drops a journal that holds rows the file lacks.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np

from .format import TEXT, VarState, block, row, write_rows

MAX_PENDING_ROWS = 8192  # write once this many rows wait ...
MAX_PENDING_BYTES = 4 * 1024 * 1024  # ... or this many bytes (big rows gain nothing from waiting) ...
MAX_PENDING_S = 0.05  # ... or the oldest has waited this long (or the daemon is idle, server.py)
REFUSE_PENDING_BYTES = 256 * 1024 * 1024  # past this, with writes failing, new appends are refused
BIG_ROW_BYTES = 64 * 1024  # rows this big are written one by one, never copied into a common block
TAIL_ROWS = 64  # recent entries kept per variable for reads ...
TAIL_BYTES = 64 * 1024  # ... at most this many bytes of them (bigger rows are not kept)
CACHE_BYTES = 32 * 1024 * 1024  # all variables' tails together; the least recently used go first


_NONE_WAITING = (1 << 62, ())


class Tail:
    """The last entries of one variable as the file holds them: ``rows[k]`` is entry ``start + k``."""

    __slots__ = ("start", "rows")

    def __init__(self, start: int, rows: np.ndarray):  # (rows: an array owned by the tail)
        self.start, self.rows = start, rows

    def extend(self, start: int, rows: np.ndarray, keep: int) -> None:
        """Add entries ``start, start + 1, ...`` (normally the next ones), keeping the last ``keep``."""
        end = start + len(rows)
        if start == self.start + len(self.rows):
            rows = np.concatenate((self.rows, rows))
        self.rows = rows[-keep:].copy()  # (a copy: a view would keep the whole block alive)
        self.start = end - len(self.rows)

    def get(self, index: int) -> Any:
        """Entry ``index`` as the file would give it, or None if it is not kept here."""
        offset = index - self.start
        return self.rows[offset] if 0 <= offset < len(self.rows) else None


def _owned(data: Any) -> Any:
    """``data``, copied if it is a small view: a small array decoded from a message views that
    message, and waiting must not keep whole messages alive (a few bytes of data could pin MiBs)."""
    if type(data) is np.ndarray and data.base is not None and data.nbytes < BIG_ROW_BYTES:
        return data.copy()
    return data


class _Waiting:
    """Entries ``start, ...`` of one variable, journaled, not yet in the file.

    Single appends arrive as loose entries (a list append each); columns as
    blocks. They become one block when written or read."""

    __slots__ = ("var", "start", "count", "nbytes", "blocks", "loose", "row_bytes")

    def __init__(self, var: VarState, start: int):
        self.var, self.start, self.count, self.nbytes, self.blocks, self.loose = var, start, 0, 0, [], []
        sig = var.sig
        self.row_bytes = 0 if sig.dtype is TEXT else int(np.prod(sig.row_shape, dtype=np.int64)) * sig.dtype.itemsize

    def add(self, rows: Any) -> int:
        """Entries as the engine checked them: a list of entries, or one stacked block (a column);
        returns the bytes they add (text: its length, plus 64 a string)."""
        if type(rows) is list:
            self.loose += [_owned(entry) for entry in rows] if type(rows[0]) is np.ndarray else rows
        else:
            self._close_loose()
            self.blocks.append(_owned(block(rows, self.var.sig)))  # (shaped as the file holds it)
        self.count += len(rows)
        nbytes = len(rows) * self.row_bytes if self.row_bytes else sum(64 + len(text) for text in rows)
        self.nbytes += nbytes
        return nbytes

    def _close_loose(self) -> None:
        if self.loose:
            self.blocks.append(block(self.loose, self.var.sig))
            self.loose = []

    def pieces(self) -> list:
        """``(offset, block)`` pieces covering every waiting entry, for the file write: big rows one
        by one (no copy into a common block), small ones closed into one block."""
        if self.loose and (self.row_bytes or self.nbytes // self.count) >= BIG_ROW_BYTES:
            sig, blocked = self.var.sig, self.count - len(self.loose)
            singles = [(blocked + k, block([entry], sig)) for k, entry in enumerate(self.loose)]
        else:
            self._close_loose()
            singles = []
        offset, out = 0, []
        for part in self.blocks:
            out.append((offset, part))
            offset += len(part)
        return out + singles

    def data(self) -> np.ndarray:
        """The waiting entries as the file will hold them, as one block."""
        self._close_loose()
        if len(self.blocks) > 1:
            self.blocks = [np.concatenate(self.blocks)]
        return self.blocks[0]

    def entry(self, offset: int) -> Any:
        """Entry ``start + offset`` as the file will hold it (0 <= offset < count)."""
        blocked = self.count - len(self.loose)
        if offset >= blocked:
            return row(self.loose[offset - blocked], self.var.sig)
        for part in self.blocks:
            if offset < len(part):
                return part[offset]
            offset -= len(part)
        raise IndexError(offset)  # (never: offset < count)


class WriteBehind:
    """Journaled rows waiting for the file, and the recent rows of each variable."""

    def __init__(self, file_name: str) -> None:
        self.file_name = file_name  # (named in errors)
        self._pending: dict[str, _Waiting] = {}  # path -> its waiting entries, in arrival order
        self.rows = self.nbytes = 0
        self.since = 0.0  # when the oldest pending row arrived
        self.error: str | None = None  # why the last write failed, until one succeeds
        self._tails: OrderedDict[str, Tail] = OrderedDict()  # least recently used first
        self._tail_bytes = 0

    # --- queue ---------------------------------------------------------------------------
    def stage(self, path: str, var: VarState, start: int, rows: Any) -> None:
        """Queue entries ``start, ...`` of ``var`` (already journaled and acknowledged): a list of
        entries (a list append: the block is built once, when written or read) or a block (a column)."""
        waiting = self._pending.get(path)
        if waiting is None:
            if not self._pending:
                self.since = time.monotonic()
            waiting = self._pending[path] = _Waiting(var, start)
        self.nbytes += waiting.add(rows)
        self.rows += len(rows)

    def due(self) -> bool:
        """Whether a bound says: write now."""
        return bool(self._pending) and (self.rows >= MAX_PENDING_ROWS or self.nbytes >= MAX_PENDING_BYTES
                                        or time.monotonic() - self.since >= MAX_PENDING_S)

    def flush(self, path: str | None = None) -> None:
        """Write the queued rows of ``path`` (default: of every variable), one slice write per
        variable; OSError naming the variable if one fails.

        What was written leaves the queue (its last rows stay in memory for reads);
        a variable whose write fails stays for the next try and holds up no other.
        """
        failed = None
        for key in list(self._pending) if path is None else [path] if path in self._pending else []:
            try:
                self._write(key)
            except OSError as exc:
                failed = failed or exc
        if failed is not None:
            self.error = str(failed)
            raise failed
        if not self._pending:
            self.error = None

    def _write(self, path: str) -> None:
        """Write the waiting rows of ``path``; on success they leave the queue for the recent rows."""
        waiting = self._pending[path]
        try:
            for offset, data in waiting.pieces():
                write_rows(waiting.var.ncvar, waiting.start + offset, data)
        except Exception as exc:
            self.error = f"{path}: writing {waiting.count} acknowledged entries to {self.file_name} failed " \
                         f"(they are safe in the journal; retried): {type(exc).__name__}: {exc}"
            raise OSError(self.error) from exc
        del self._pending[path]
        self.rows -= waiting.count
        self.nbytes -= waiting.nbytes
        self.remember(path, waiting.start + offset, data)  # (the last piece: recent rows for reads)

    def waits(self, path: str) -> bool:
        """Whether entries of ``path`` wait for the file."""
        return path in self._pending

    def waiting_entry(self, path: str, index: int) -> Any:
        """Entry ``index`` of ``path`` as the file will hold it, if it waits for the file; else None."""
        waiting = self._pending.get(path)
        if waiting is None or not 0 <= index - waiting.start < waiting.count:
            return None
        return waiting.entry(index - waiting.start)

    def waiting(self, path: str) -> tuple[int, Any]:
        """``(first, rows)``: entries ``first, ...`` of ``path`` wait for the file (first is huge if none)."""
        waiting = self._pending.get(path)
        return _NONE_WAITING if waiting is None else (waiting.start, waiting.data())

    # --- recent rows ----------------------------------------------------------------------
    def remember(self, path: str, start: int, data: np.ndarray) -> None:
        """Keep entries ``start, ...`` of ``path`` (as the file holds them) for reads, within the bounds."""
        keep = min(TAIL_ROWS, TAIL_BYTES // max(1, data[:1].nbytes))
        if data.dtype == object or not keep or not len(data):
            self.forget(path)  # text (sizes unknown) and big rows are read from the file
            return
        tail = self._tails.pop(path, None)
        if tail is None:
            tail = Tail(start, data[-keep:].copy())
        else:
            self._tail_bytes -= tail.rows.nbytes
            tail.extend(start, data, keep)
        self._tails[path] = tail
        self._tail_bytes += tail.rows.nbytes
        while self._tail_bytes > CACHE_BYTES:
            _, gone = self._tails.popitem(last=False)
            self._tail_bytes -= gone.rows.nbytes

    def recent(self, path: str, index: int) -> Any:
        """Entry ``index`` of ``path`` from memory, or None."""
        tail = self._tails.get(path)
        if tail is None:
            return None
        self._tails.move_to_end(path)  # (least recently used go first)
        return tail.get(index)

    def forget(self, path: str) -> None:
        """Stop serving ``path`` from memory (an entry was overwritten)."""
        tail = self._tails.pop(path, None)
        if tail is not None:
            self._tail_bytes -= tail.rows.nbytes
