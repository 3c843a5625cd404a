"""What the daemon remembers per client, so a resent request is answered, not re-applied.

For each client id, the wire results of the mutating ops of its last few
requests are kept (and journaled, op by op): after a daemon restart a client
resends what was not acknowledged and gets the original results -- an append
is never doubled, even for a request the crash interrupted half-way.
Clients silent for ``idle_s`` are forgotten (at checkpoints), and at most
``max_clients`` are kept: past that, the longest-silent one is forgotten, so a
flood of made-up client ids cannot grow the daemon's memory without bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict

REMEMBERED_REQUESTS = 32  # > the client's pipeline window
IDLE_S = 3600.0
MAX_CLIENTS = 16384


class ClientTable:
    def __init__(self, idle_s: float = IDLE_S, max_clients: int = MAX_CLIENTS):
        self.idle_s = idle_s
        self.max_clients = max_clients
        # client -> [last seen, OrderedDict(request id -> {op index: wire})], least recently seen first
        self._clients: OrderedDict[str, list] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def lookup(self, client: str, request_id: int) -> dict | None:
        """``{op index: wire result}`` this request already got, or None if it is new."""
        entry = self._clients.get(client)
        return None if entry is None else entry[1].get(request_id)

    def remember(self, client: str, request_id: int, op_index: int, wire: list) -> None:
        entry = self._clients.get(client)
        if entry is None:
            while len(self._clients) >= self.max_clients:
                self._clients.popitem(last=False)
            entry = self._clients[client] = [0.0, OrderedDict()]
        else:
            self._clients.move_to_end(client)
        entry[0] = time.time()
        requests = entry[1]
        requests.setdefault(request_id, {})[op_index] = wire
        while len(requests) > REMEMBERED_REQUESTS:
            requests.popitem(last=False)

    def forget_idle(self) -> int:
        """Drop clients silent for longer than ``idle_s``; returns how many."""
        cutoff = time.time() - self.idle_s
        gone = [client for client, (seen, _) in self._clients.items() if seen < cutoff]
        for client in gone:
            del self._clients[client]
        return len(gone)

    def snapshot(self) -> dict:
        """Packable form for the journal."""
        return {client: [seen, [[rid, [[i, wire] for i, wire in ops.items()]] for rid, ops in requests.items()]]
                for client, (seen, requests) in self._clients.items()}

    def restore(self, snapshot: dict) -> None:
        for client, (seen, requests) in snapshot.items():  # (snapshots list clients least recently seen first)
            self._clients[client] = [float(seen), OrderedDict((rid, dict(ops)) for rid, ops in requests)]
            self._clients.move_to_end(client)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
