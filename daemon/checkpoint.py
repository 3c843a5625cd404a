"""Checkpoints: sync the file with the batch number it holds, then start a fresh journal.

A crash between the steps is safe: replay re-applies the whole journal
(idempotent), and a flush cut short is repaired from it (recovery.py). The
client table survives in the fresh journal's first record.
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any

from .clients import ClientTable
from .journal import Journal, Snapshot

_PAUSE_S = float(os.environ.get("NSTORED_TEST_CHECKPOINT_PAUSE_S", "0") or 0)


def checkpoint(engine: Any, journal_file: str, seq: int, clients: ClientTable, fsync: str) -> Journal:
    """Make the file hold everything through batch ``seq``; the journal that replaces the old one.

    If syncing the file fails, ``engine.unsynced`` is set: after an HDF5 flush
    failed half-way its caches cannot be trusted (a later flush wrote garbage),
    so the daemon reopens the file and replays the journal (server.py)."""
    try:
        engine.checkpoint(seq, fsync=fsync != "never")
    except Exception:
        engine.unsynced = True
        raise
    if _PAUSE_S:  # tests only: widen the window between file sync and journal truncation
        time.sleep(_PAUSE_S)
    clients.forget_idle()
    return Journal(journal_file, fsync, Snapshot(seq, clients.snapshot()))


FLUSH_MARGIN_BYTES = 1024 * 1024  # free space a checkpoint wants beyond twice the journal's size


def check_writable(file_name: str, journal_bytes: int) -> None:
    """OSError naming ``file_name`` if a checkpoint (or a write of ``journal_bytes`` of waiting
    appends) would fail half-way: the file cannot be written (read-only file system, immutable
    file, no permission) or the disk is (nearly) full.

    A failed HDF5 write or flush is costly (see :func:`checkpoint`; on a full disk it
    can leave the file unreadable until the journal is replayed into it), so it is
    not started when it is bound to fail; the space needed is an estimate (the data
    the journal holds, twice over, plus a margin)."""
    if not os.access(file_name, os.W_OK):
        raise PermissionError(errno.EPERM, "the file cannot be written (read-only file system, immutable "
                              "file or no permission)", file_name)
    info = os.statvfs(os.path.dirname(file_name) or ".")
    free, needed = info.f_bavail * info.f_frsize, 2 * journal_bytes + FLUSH_MARGIN_BYTES
    if free < needed:
        raise OSError(errno.ENOSPC, f"No space left on device (writing to the file needs about {needed} bytes free, "
                      f"{free} are)", file_name)
