"""The daemon's engine: the in-process driver plus what only nstored needs.

Reserving appends (indices now, the write after the journal), coalesced
writes, idempotent journal replay and checkpoints. Kept out of the public
NetCDFIODriver, which the daemon's engine extends.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np

from nstore.protocol.paths import normalize_path

from .behind import REFUSE_PENDING_BYTES, WriteBehind
from .checkpoint import check_writable
from .engine import AppendReservation, NetCDFIODriver, _variable_path
from .format import CHECKPOINT_ATTR, VarState, write_block
from .kinds import DAEMON_KINDS

log = logging.getLogger("nstored")
MAX_CHECKPOINT_SEQ = 2**53  # far beyond any real count of batches, far below int64 overflow


class DaemonEngine(NetCDFIODriver):
    """NetCDFIODriver with nstored's batch, replay and checkpoint operations."""

    unsynced = False  # a checkpoint's file sync failed: reopen before syncing again (checkpoint.py)
    kinds = DAEMON_KINDS  # reads give quantities as WireQuantity: replies carry them without pint

    def __init__(self, file_name: str, access_mode: str | None = None):
        self.behind = WriteBehind(os.fspath(file_name))  # journaled appends waiting for the file; recent rows for reads
        super().__init__(file_name, access_mode)

    # --- write-behind ------------------------------------------------------------------------
    def reserve_appends(self, path: str, values: Sequence[Any]) -> AppendReservation:
        """Check ``values`` and take their indices, writing nothing (``stage`` or ``abort`` the result).

        Refused (OSError) while file writes fail and too much waits for the file already.
        """
        if self.behind.nbytes >= REFUSE_PENDING_BYTES:
            self.flush()
        return self._reserve(path, values)

    def stage(self, reservation: AppendReservation) -> list:
        """Queue journaled appends for the file (written by ``flush``); their results (indices)."""
        if len(reservation.rows):
            self.behind.stage(reservation.path, reservation.var, reservation.start, reservation.rows)
        return reservation.results

    def flush(self, path: str | None = None) -> None:
        """Write the queued appends of ``path`` (default: all) to the file (OSError naming the
        variable if that fails; the others are not held up by it)."""
        waiting = self.behind.rows if path is None else self.behind.waits(path)
        if waiting:
            try:
                check_writable(self.file_name, self.behind.nbytes)  # never start a write bound to fail
            except OSError as exc:
                self.behind.error = str(exc)
                raise
            self.behind.flush(path)

    def sync(self) -> None:
        self.flush()
        super().sync()

    def _stored_entry(self, path: str, var: VarState, index: int | None) -> Any:
        """From memory when recent or still waiting for the file (or a small fixed value read
        before); else from the file (a fixed value is then remembered)."""
        raw = self.behind.recent(path, 0 if index is None else index)
        if raw is not None:
            return raw
        if index is not None:
            raw = self.behind.waiting_entry(path, index)
            if raw is not None:
                return raw
        raw = super()._stored_entry(path, var, index)
        if index is None:
            self.behind.remember(path, 0, np.asarray(raw)[None])
        return raw

    def _stored_rows(self, path: str, var: VarState, lo: int, hi: int) -> Any:
        """The file's rows, then those still waiting for it: reads never wait for (or fail with) a file write."""
        first, waiting = self.behind.waiting(path)
        if hi <= first:
            return super()._stored_rows(path, var, lo, hi)
        tail = waiting[max(lo, first) - first : hi - first]
        return tail if lo >= first else np.concatenate((super()._stored_rows(path, var, lo, first), tail))

    def write_variable(self, path: str, data: Any, at_index: int | None = None) -> None:
        try:
            key = normalize_path(path)
        except (TypeError, ValueError):  # the driver's own checks raise the error
            return super().write_variable(path, data, at_index)
        self.flush(key)  # the entry it overwrites may still be waiting
        try:
            super().write_variable(path, data, at_index)
        finally:
            self.behind.forget(key)  # never serve what was overwritten

    def write_entries(self, path: str, start: int, values: Sequence[Any]) -> None:
        """Overwrite entries ``start``, ``start + 1``, ... of an appendable variable with one slice write.

        All or nothing: the daemon coalesces a run of ``write(..., at_index=i)``
        into this, and replays the writes one by one if it raises, so that each
        gets its own exact error.
        """
        path = _variable_path(path)
        self._check_writable()
        self.flush(path)
        self.behind.forget(path)
        var = self._variable(path)
        if var is None or not var.appendable or start < 0 or start + len(values) > var.length:
            raise ValueError(f"{path}: entries {start}..{start + len(values) - 1} are not all stored")
        rows = [self._prepare(path, var.sig, data, "write") for data in values]
        write_block(var, start, rows)

    def put_entry(self, path: str, index: int, data: Any) -> None:
        """Make entry ``index`` of appendable ``path`` hold ``data`` (journal replay; idempotent).

        Overwrites an existing entry, appends at the end, creates the variable
        for index 0. A gap (index beyond the end) means the journal and file
        disagree, which replay reports rather than papers over.
        """
        path = _variable_path(path)
        var = self._variable(path)
        length = 0 if var is None else var.length
        if index < length:
            self.write_variable(path, data, at_index=index)
        elif index == length:
            self.append_variable(path, data)
        else:
            raise ValueError(f"{path}: journal entry {index} but only {length} entries are stored")

    @property
    def checkpoint_seq(self) -> int:
        """Sequence number of the last journaled batch the file holds (global attribute).

        A value that is not an integer in ``[0, MAX_CHECKPOINT_SEQ]`` (a crafted or
        damaged file) is logged and read as 0: replay never trusts it to skip
        records (recovery.py), and the next checkpoint overwrites it.
        """
        try:
            value = self.ncfile.getncattr(CHECKPOINT_ATTR)
        except AttributeError:
            return 0
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) \
                and 0 <= value <= MAX_CHECKPOINT_SEQ:
            return int(value)
        log.warning("%s: %s is %r, not a batch number in [0, %d]; read as 0 (the next checkpoint rewrites it)",
                    self.file_name, CHECKPOINT_ATTR, getattr(value, "tolist", lambda: value)(), MAX_CHECKPOINT_SEQ)
        return 0

    def checkpoint(self, seq: int, fsync: bool = False) -> None:
        """Record ``seq`` in the file and sync it: everything up to ``seq`` is now in the file.

        ``fsync`` also forces the file to the disk (netCDF's sync only reaches the
        OS page cache, which survives a crashed process but not a power loss).
        """
        self.ncfile.setncattr(CHECKPOINT_ATTR, np.int64(seq))
        self.sync()
        if fsync:
            fd = os.open(self.file_name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
