"""What the daemon remembers per client, so a resent request is answered, not re-applied.

For each client id, the wire results of the mutating ops of its last few
requests are kept (and journaled, op by op): after a daemon restart a client
resends what was not acknowledged and gets the original results -- an append
is never doubled, even for a request the crash interrupted half-way.
Each remembered request is bound to a digest of its frames (:func:`request_digest`):
only the identical request is answered from the table; a reused id carrying
anything else is refused with a ProtocolError. Only requests with a
mutating op are looked up or remembered: reads always run.
Clients silent for ``idle_s`` are forgotten (at checkpoints), and at most
``max_clients`` are kept: past that, the longest-silent one is forgotten, so a
flood of made-up client ids cannot grow the daemon's memory without bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from hashlib import sha256

from nstore.protocol.errors import ProtocolError

REMEMBERED_REQUESTS = 32  # > the client's pipeline window
IDLE_S = 3600.0
MAX_CLIENTS = 16384


def request_digest(frames: list) -> bytes:
    """16 bytes of the SHA-256 of a request's frames (sizes included): what "the identical request" means.

    SHA-256 rather than BLAKE2b: with the CPU's SHA instructions it hashes about
    2 GB/s here, twice BLAKE2b's rate (one digest per mutating request, not per op).
    """
    digest = sha256()
    for frame in frames:
        buffer = frame.buffer  # (zmq.Frame, as recv_multipart(copy=False) gives)
        digest.update(len(buffer).to_bytes(8, "little"))
        digest.update(buffer)
    return digest.digest()[:16]


class ClientTable:
    def __init__(self, idle_s: float = IDLE_S, max_clients: int = MAX_CLIENTS):
        self.idle_s = idle_s
        self.max_clients = max_clients
        # client -> [last seen, OrderedDict(request id -> [digest, {op index: wire}])], least recently seen first
        self._clients: OrderedDict[str, list] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def lookup(self, client: str, request_id: int, digest: bytes = b"") -> dict | None:
        """``{op index: wire result}`` this very request already got, or None if it is new.

        ProtocolError if the id was used for a request with another digest (an
        empty digest, from a journal before version 3, matches any request).
        """
        entry = self._clients.get(client)
        known = None if entry is None else entry[1].get(request_id)
        if known is None:
            return None
        if known[0] and known[0] != digest:
            raise ProtocolError(f"client {client!r}: request id {request_id} was already used for a different "
                                  f"request; refused (request ids must not be reused)")
        return known[1]

    def remember(self, client: str, request_id: int, op_index: int, wire: list, digest: bytes = b"") -> None:
        entry = self._clients.get(client)
        if entry is None:
            while len(self._clients) >= self.max_clients:
                self._clients.popitem(last=False)
            entry = self._clients[client] = [0.0, OrderedDict()]
        else:
            self._clients.move_to_end(client)
        entry[0] = time.time()
        requests = entry[1]
        requests.setdefault(request_id, [digest, {}])[1][op_index] = wire
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
        """Packable form for the journal: ``{client: [seen, [[request id, digest, [[op index, wire]...]]...]]}``."""
        return {client: [seen, [[rid, digest, [[i, wire] for i, wire in ops.items()]]
                                for rid, (digest, ops) in requests.items()]]
                for client, (seen, requests) in self._clients.items()}

    def restore(self, snapshot: dict) -> None:
        """Load a journal snapshot; journals before version 3 hold ``[request id, ops]`` (no digest)."""
        for client, (seen, requests) in snapshot.items():  # (snapshots list clients least recently seen first)
            self._clients[client] = [float(seen), OrderedDict(
                (rid, [bytes(rest[0]) if len(rest) == 2 else b"", dict(rest[-1])]) for rid, *rest in requests)]
            self._clients.move_to_end(client)
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
