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
import shutil
import time
from typing import Callable

from .clients import ClientTable
from .engine import NetCDFIODriver
from .journal import read_records

log = logging.getLogger("nstored")


def apply_logged(engine: NetCDFIODriver, op: list) -> None:
    """Apply one journaled op (as recorded by the server)."""
    name, path, args = op
    if name == "put":
        engine.put_entry(path, args["index"], args["data"])
    elif name == "write":
        engine.write_variable(path, args["data"], args.get("at_index"))
    elif name == "add_metadata":
        engine.add_metadata(args["name"], args["value"], path=path or "/")
    elif name == "get_directory":
        engine.get_directory(path, create=True)
    else:
        raise ValueError(f"unknown journaled op {name!r}")


def replay(engine: NetCDFIODriver, journal: str, clients: ClientTable,
           progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Apply every journaled op again; returns ``(last sequence number, ops replayed)``.

    Ops that fail to replay are logged, and the journal is kept aside as
    ``<journal>.unreplayed-<time>`` so nothing is lost by the truncation that follows.
    """
    last = engine.checkpoint_seq
    total = os.path.getsize(journal) if os.path.exists(journal) else 0
    replayed = failed = 0
    for record, position in read_records(journal, with_position=True):
        if progress:
            progress(position, total)
        if "snapshot" in record:
            clients.restore(record["clients"])
            continue
        seq = record["seq"]
        for client, request_id, op_index, logged, wire in record["ops"]:
            if client:
                clients.remember(client, request_id, op_index, wire)
            if logged is None:
                continue
            try:
                apply_logged(engine, logged)
                replayed += 1
            except Exception as exc:  # noqa: BLE001 - report, keep going, keep the journal
                failed += 1
                log.error("replay of %s %s (batch %d) failed: %s: %s", logged[0], logged[1], seq, type(exc).__name__, exc)
        last = max(last, seq)
    if failed:
        kept = f"{journal}.unreplayed-{int(time.time())}"
        shutil.copyfile(journal, kept)
        log.error("%d journaled ops could not be replayed; the journal is kept as %s", failed, kept)
    return last, replayed


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
