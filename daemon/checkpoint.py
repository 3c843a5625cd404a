"""Checkpoints: sync the file with the batch number it holds, then start a fresh journal.

A crash between the steps is safe: replay re-applies the whole journal
(idempotent), and a flush cut short is repaired from it (recovery.py). The
client table survives in the fresh journal's first record.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .clients import ClientTable
from .journal import Journal, Snapshot

_PAUSE_S = float(os.environ.get("NSTORED_TEST_CHECKPOINT_PAUSE_S", "0") or 0)


def checkpoint(engine: Any, journal_file: str, seq: int, clients: ClientTable, fsync: str) -> Journal:
    """Make the file hold everything through batch ``seq``; the journal that replaces the old one."""
    engine.checkpoint(seq, fsync=fsync != "never")
    if _PAUSE_S:  # tests only: widen the window between file sync and journal truncation
        time.sleep(_PAUSE_S)
    clients.forget_idle()
    return Journal(journal_file, fsync, Snapshot(seq, clients.snapshot()))
