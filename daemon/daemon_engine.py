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

from .engine import NetCDFIODriver, _variable_path
from .format import write_block
from .kinds import DAEMON_KINDS
from .format import CHECKPOINT_ATTR

log = logging.getLogger("nstored")
MAX_CHECKPOINT_SEQ = 2**53  # far beyond any real count of batches, far below int64 overflow


class DaemonEngine(NetCDFIODriver):
    """NetCDFIODriver with nstored's batch, replay and checkpoint operations."""

    unsynced = False  # a checkpoint's file sync failed: reopen before syncing again (checkpoint.py)
    kinds = DAEMON_KINDS  # reads give quantities as WireQuantity: replies carry them without pint

    # reserve_appends(path, values) -> AppendReservation: check ``values`` and take their
    # indices, writing nothing until ``commit()`` (an alias: no extra call on the hot path).
    reserve_appends = NetCDFIODriver._reserve

    def write_entries(self, path: str, start: int, values: Sequence[Any]) -> None:
        """Overwrite entries ``start``, ``start + 1``, ... of an appendable variable with one slice write.

        All or nothing: the daemon coalesces a run of ``write(..., at_index=i)``
        into this, and replays the writes one by one if it raises, so that each
        gets its own exact error.
        """
        path = _variable_path(path)
        self._check_writable()
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
