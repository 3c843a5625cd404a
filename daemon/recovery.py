"""Replaying the journal into the file: on every start, and alone as ``nstored recover``.

Every journaled op is applied again, in order; appends carry the index they
were acknowledged at, so replay puts each entry exactly there (idempotent,
whether or not the crash left it in the file).

The file's checkpoint sequence number is NOT trusted to skip records: a
checkpoint writes that number and the data it vouches for in one HDF5 flush,
whose writes reach the file in no particular order, so a SIGKILL in the
middle of the flush can leave a file claiming batches whose entries never
landed. The journal only holds what followed the last completed truncation,
and replaying it all is always correct.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

from .clients import ClientTable
from .daemon_engine import DaemonEngine
from .journal import JournalVersionError, Snapshot, read_records
from .ops import replay_op
from .safefiles import copy_new

log = logging.getLogger("nstored")


def recover(file_name: str, journal: str, clients: ClientTable,
            progress: Callable[[int, int], None] | None = None) -> tuple[DaemonEngine, int, int]:
    """Open the file and replay the journal into it: ``(engine, last sequence number, ops replayed)``.

    If some journaled ops cannot be applied (a crash mid-flush left a variable
    unreadable), the file is rebuilt from its readable parts plus the journal
    (see :mod:`nstore.daemon.repair`). OSError if the file does not open at
    all, JournalVersionError if the journal has a format this nstored does not read; the
    journal is then left untouched.
    """
    engine = DaemonEngine(file_name)
    try:
        seq, replayed, failed = replay(engine, journal, clients, progress)
    except JournalVersionError:
        engine.close()
        raise
    if not failed:
        return engine, seq, replayed
    from .repair import copy_readable, swap_in

    engine.close()
    rebuilt = f"{file_name}.rebuild"
    skipped = copy_readable(file_name, rebuilt)
    candidate = DaemonEngine(rebuilt)
    seq, replayed, failed = replay(candidate, journal, ClientTable())
    candidate.close()
    if failed:
        log.error("rebuilding %s did not help (%d ops still fail); serving it as it is, see %s.unreplayed-*",
                  file_name, failed, journal)
        os.remove(rebuilt)
    else:
        kept = swap_in(file_name, rebuilt)
        log.warning("rebuilt %s: %s were unreadable and are restored from the journal; the damaged "
                    "file is kept as %s", file_name, ", ".join(skipped) or "no variables", kept)
    return DaemonEngine(file_name), seq, replayed


def replay(engine: DaemonEngine, journal: str, clients: ClientTable,
           progress: Callable[[int, int], None] | None = None) -> tuple[int, int, int]:
    """Apply every journaled op again; returns ``(last sequence number, ops replayed, ops failed)``.

    Ops that fail to replay are logged, and the journal is kept aside as
    ``<journal>.unreplayed-<time>`` so nothing is lost by the truncation that follows.
    A journal whose intact records end before the file does (a corrupt record
    in the middle, not a torn tail) is kept aside the same way.
    """
    last = engine.checkpoint_seq
    total = os.path.getsize(journal) if os.path.exists(journal) else 0
    replayed = failed = 0
    position = 0
    for record, position in read_records(journal, with_position=True):
        if progress:
            progress(position, total)
        if isinstance(record, Snapshot):
            clients.restore(record.clients)
            continue
        seq = record.seq
        for entry in record.entries:
            if entry.client:
                clients.remember(entry.client, entry.request_id, entry.op_index, entry.wire, entry.digest)
            if entry.op is None:
                continue
            try:
                replay_op(engine, *entry.op)
                replayed += 1
            except Exception as exc:  # noqa: BLE001 - report, keep going, keep the journal
                failed += 1
                log.error("replay of %s %s (batch %d) failed: %s: %s", entry.op[0], entry.op[1], seq,
                          type(exc).__name__, exc)
        last = max(last, seq)
    unread = total - position
    if failed or unread:
        # A torn tail (a write the crash cut short, never acknowledged) is normal; but
        # a record corrupted in the middle would hide what follows: keep the bytes.
        kept = f"{journal}.unreplayed-{int(time.time())}"
        kept = copy_new(journal, kept)  # O_EXCL: never over a planted link or an earlier copy
        log.warning("%d journaled ops could not be replayed, %d bytes at the end of the journal were not "
                    "an intact record; the journal is kept as %s", failed, unread, kept)
    return last, replayed, failed


def progress_bar() -> Callable[[int, int], None]:
    """A callback drawing a one-line progress bar on stderr (for ``nstored recover``)."""
    import sys

    shown = [-1]

    def draw(done: int, total: int) -> None:
        percent = int(100 * done / total) if total else 100
        if percent == shown[0]:
            return
        shown[0] = percent
        bar = "#" * (percent * 40 // 100)
        sys.stderr.write(f"\rreplaying journal [{bar:<40}] {percent:3d}%" + ("\n" if percent >= 100 else ""))
        sys.stderr.flush()

    return draw
