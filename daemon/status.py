"""The daemon's counters and the ``status`` reply built from them."""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

from nstore.protocol import PROTOCOL_VERSION
from nstore.protocol.messages import Op
from nstore.protocol.kinds import payload_bytes

MAX_RECENT_PEERS = 65536


class Stats:
    """Counters the loop updates: peers seen, ops applied by name, bytes written and read, last batch size."""

    def __init__(self) -> None:
        self.started = time.time()
        self.clients_seen = 0
        self._recent_peers: set[bytes] = set()  # connection identities; reset when large (counting only)
        self.ops_applied: Counter = Counter()
        self.bytes_written = 0
        self.bytes_read = 0  # data sent by read ops (shows that lazy readers fetch only what they index)
        self.last_batch = 0

    def count_peer(self, identity: bytes) -> None:
        if identity not in self._recent_peers:
            if len(self._recent_peers) >= MAX_RECENT_PEERS:
                self._recent_peers.clear()
            self._recent_peers.add(identity)
            self.clients_seen += 1

    def applied(self, op: Op) -> None:
        self.ops_applied[op.name] += 1
        if "data" in op.args:
            self.bytes_written += payload_bytes(op.args["data"])

    def applied_run(self, name: str, count: int, nbytes: int) -> None:
        """``count`` ops called ``name`` carrying ``nbytes`` of data were applied (one call per run)."""
        self.ops_applied[name] += count
        self.bytes_written += nbytes


def status(server: Any) -> dict:
    """What ``nstored status`` shows."""
    stats = server.stats
    uptime = time.time() - stats.started
    total = sum(stats.ops_applied.values())
    return {
        "pid": os.getpid(),
        "file": server.file_name,
        "endpoint": server.endpoint,
        "version": PROTOCOL_VERSION,
        "uptime_s": round(uptime, 3),
        "clients_seen": stats.clients_seen,
        "clients_remembered": len(server.clients),
        "last_batch_seq": server.seq,
        "journal_bytes": server.journal.size,
        "fsync": server.journal.fsync,
        "ops_applied": dict(stats.ops_applied),
        "ops_per_s": round(total / uptime, 1) if uptime > 0 else 0.0,
        "queue_depth": stats.last_batch,
        "bytes_written": stats.bytes_written,
        "bytes_read": stats.bytes_read,
        "pending_rows": server.engine.behind.rows,  # acknowledged (journaled) appends not yet in the file
        "write_error": server.engine.behind.error,  # None, or why writing them failed (it is retried)
        "checkpoint_error": server.checkpoint_error,  # None, or why the last try failed (it is retried)
        "last_checkpoint_ok": server.last_checkpoint_ok,  # time.time() of the last checkpoint that succeeded
    }
