"""One loop turn's work: parse the messages, apply their ops in order, journal, and build the replies.

Appends are checked and given their indices (a reservation), journaled, and
only then queued for the file (behind.py: written after the reply, in
blocks); other mutating ops (idempotent) are journaled right after they are applied. Replies are built after the journal write:
nothing is acknowledged before it is in the journal. A request resent after a
restart gets the results it got before, op by op -- only if it is the very
same request (same digest) and comes from the connection whose ZeroMQ routing
id is its client id (clients.py). All of this state lives and dies with one :class:`Batch`.
"""

from __future__ import annotations

import logging
from typing import Any

from nstore.protocol.errors import ProtocolError, error_to_wire
from nstore.protocol.kinds import payload_bytes
from nstore.protocol.messages import Op, Request, decode_request, encode_reply_body
from nstore.protocol.paths import normalize_path

from .clients import request_digest
from .columns import reserve_column
from .journal import Commit, Entry
from .limits import size_error
from .ops import OPS

log = logging.getLogger("nstored")
_APPENDS = ("append", "append_column")  # ops applied in runs: indices reserved now, written after the journal


class _Slot:
    """One op of one request and, once known, its outcome (a value, an exception or a _Known)."""

    __slots__ = ("request", "index", "op", "outcome", "digest")

    def __init__(self, request: Request, index: int, op: Op, digest: bytes):
        self.request, self.index, self.op, self.outcome, self.digest = request, index, op, None, digest


class _Known:
    """A result the daemon already sent for a resent request (kept in wire form)."""

    __slots__ = ("wire",)

    def __init__(self, wire: list):
        self.wire = wire


class Batch:
    """The messages one loop turn took from the socket, applied against ``server``'s engine."""

    def __init__(self, server: Any, raw: list):
        self.server = server
        self.replies: list = []  # (identity, request or None, slots or the ProtocolError)
        self.work: list[_Slot] = []  # slots still to apply, in arrival order
        self.entries: list[Entry] = []  # journal entries not written yet
        self.journaled: list[_Slot] = []  # the slots of those entries
        self.reservations: list = []  # (slots, reservation): appends waiting for that journal write
        for frames in raw:
            self._take(frames)

    def _take(self, frames: list) -> None:
        """Parse one message; queue its ops that are new and not too big."""
        identity = frames[0].bytes
        self.server.stats.count_peer(identity)
        try:
            request = decode_request(frames[1:])
        except ProtocolError as exc:
            log.warning("bad request from %s: %s", identity.hex(), exc)
            self.replies.append((identity, None, exc))
            return
        server = self.server
        digest, known = b"", None
        if request.client and any(OPS[op.name].mutates for op in request.ops):
            try:  # exactly-once: only for the identical request, from the connection holding the client id
                _check_owner(identity, request)
                digest = request_digest(frames[1:])
                known = server.clients.lookup(request.client, request.id, digest)
            except ProtocolError as exc:  # every op of it gets the error; nothing is applied
                log.warning("refused request from %s: %s", identity.hex(), exc)
                slots = [_Slot(request, i, op, digest) for i, op in enumerate(request.ops)]
                for slot in slots:
                    slot.outcome = exc
                self.replies.append((identity, request, slots))
                return
        slots = [_Slot(request, i, op, digest) for i, op in enumerate(request.ops)]
        for slot in slots:
            op = slot.op
            if known and slot.index in known:
                slot.outcome = _Known(known[slot.index])
                continue
            if OPS[op.name].mutates:
                slot.outcome = size_error(op, server.max_array_bytes)
                if slot.outcome is not None:  # refused before anything is applied: nothing to journal
                    _log_error(op.name, op.path, slot.outcome)
                    continue
            self.work.append(slot)
        self.replies.append((identity, request, slots))

    def run(self) -> list:
        """Apply every queued op in order; the reply frames for each sender, in order."""
        work, position = self.work, 0
        while position < len(work):
            if work[position].op.name in _APPENDS:
                end = position + 1
                while end < len(work) and work[end].op.name in _APPENDS:
                    end += 1
                self._reserve_appends(work[position:end])
            else:
                self._commit()  # earlier appends must be journaled (and queued for the file) before this op
                end = position + (self._write_run(work[position:]) or self._apply_one(work[position]))
            position = end
        self._commit()
        return [(identity, encode_reply_body(request.id, [_wire(slot.outcome) for slot in slots]) if request
                 else encode_reply_body(-1, [_wire(slots)])) for identity, request, slots in self.replies]

    def _apply_one(self, slot: _Slot) -> int:
        op, spec = slot.op, OPS[slot.op.name]
        try:
            slot.outcome = spec.apply(self.server, op.path, op.args)
        except Exception as exc:  # noqa: BLE001 - a bad request must not stop the daemon
            _log_error(op.name, op.path, exc)
            slot.outcome = exc
        else:
            self.server.stats.applied(op)
        if spec.mutates:
            self._journal(slot)
        return 1

    def _write_run(self, work: list) -> int:
        """Writes at consecutive indices of one variable, as one slice write; how many ops it took.

        Returns 0 (nothing applied) unless ``work`` starts with at least two such
        writes, or when the block write refuses them: they are then applied one
        by one, each with its own exact error.
        """
        first = work[0].op
        start = first.args.get("at_index") if first.name == "write" else None
        if type(start) is not int or start < 0:
            return 0
        count = 1
        while count < len(work):
            op = work[count].op
            if op.name != "write" or op.path != first.path or op.args.get("at_index") != start + count:
                break
            count += 1
        if count < 2:
            return 0
        try:
            self.server.engine.write_entries(first.path, start, [slot.op.args.get("data") for slot in work[:count]])
        except Exception:  # noqa: BLE001 - one by one below gives each op its own error
            return 0
        for slot in work[:count]:
            self.server.stats.applied(slot.op)
            self._journal(slot)
        return count

    def _reserve_appends(self, run: list) -> None:
        """A run of consecutive appends: reserve indices now, one slice write per variable later.

        Appends to different variables commute (indices are per variable and
        nothing is acknowledged before the whole batch is done), so grouping
        the run by path, keeping arrival order within each path, is invisible
        to clients. A column (append_column) is a reservation of its own, in its place.
        """
        by_path: dict[tuple, list] = {}  # (path, segment) -> single appends, or one column
        segment: dict[str, int] = {}
        for slot in run:
            path = _spelled_once(slot.op.path)
            if slot.op.name == "append_column":
                segment[path] = segment.get(path, 0) + 2  # (singles before it and after it get their own)
                by_path[path, segment[path] - 1] = [slot]
            else:
                by_path.setdefault((path, segment.get(path, 0)), []).append(slot)
        for (path, _), slots in by_path.items():
            values = [slot.op.args.get("data") for slot in slots]
            try:
                if slots[0].op.name == "append_column":
                    reservation = reserve_column(self.server.engine, path, slots[0].op.args)
                else:
                    reservation = self.server.engine.reserve_appends(path, values)
                outcomes = reservation.results
            except Exception as exc:  # noqa: BLE001 - a bad request must not stop the daemon
                reservation, outcomes = None, [exc] * len(slots)
            landed = nbytes = 0
            for slot, value, outcome in zip(slots, values, outcomes):
                slot.outcome = outcome
                if isinstance(outcome, BaseException):
                    _log_error(slot.op.name, path, outcome)
                else:
                    landed += len(value) if slot.op.name == "append_column" else 1  # counted in appends
                    nbytes += payload_bytes(value)
                self._journal(slot)
            self.server.stats.applied_run("append", landed, nbytes)
            if reservation is not None:
                self.reservations.append((slots, reservation))

    def _journal(self, slot: _Slot) -> None:
        """Queue a mutating op's journal entry (a failed op: only its result is kept)."""
        outcome, op, request = slot.outcome, slot.op, slot.request
        wire = _wire(outcome)
        logged = None if isinstance(outcome, BaseException) else (op.name, op.path, OPS[op.name].journal(op.args, outcome))
        if request.client:
            self.server.clients.remember(request.client, request.id, slot.index, wire, slot.digest)
        self.entries.append(Entry(request.client, request.id, slot.index, logged, wire, slot.digest))
        self.journaled.append(slot)

    def _commit(self) -> None:
        """Write the queued journal entries as one record, then queue the appends they cover for the file."""
        reservations, self.reservations = self.reservations, []
        if self.entries:
            server = self.server
            slots, self.journaled = self.journaled, []
            try:
                server.journal.append(Commit(server.seq + 1, self.entries))
            except Exception as exc:  # noqa: BLE001 - e.g. a full disk: refuse these ops, keep serving
                for _, reservation in reservations:
                    reservation.abort()  # nothing reaches the file that the journal lacks
                self.entries = []
                self._refuse(slots, exc)
                return
            server.seq += 1
            self.entries = []
        for _, reservation in reservations:
            self.server.engine.stage(reservation)  # journaled: the file write may wait (behind.py)

    def _refuse(self, slots: list, exc: Exception) -> None:
        """Ops whose journal record could not be written: not acknowledged, each gets ``exc``
        (a resent request gets it too)."""
        log.error("journal write failed, %d op(s) refused: %s: %s", len(slots), type(exc).__name__, exc)
        for slot in slots:
            if not isinstance(slot.outcome, BaseException):
                slot.outcome = exc
            if slot.request.client:
                self.server.clients.remember(slot.request.client, slot.request.id, slot.index, _wire(slot.outcome),
                                             slot.digest)


def _spelled_once(path: str) -> str:
    """``path`` normalized (``x`` and ``/x`` are one variable: one run, one order); as sent if invalid
    (its appends then fail with the engine's error)."""
    try:
        return normalize_path(path)
    except (TypeError, ValueError):
        return path


def _check_owner(identity: bytes, request: Request) -> None:
    """A request naming a client id must come over the connection whose routing id is that client id.

    ZeroMQ's ROUTER refuses a second live connection with a routing id in use,
    so no peer can claim (and be answered with) another connected client's
    results; a client reconnecting on a fresh socket (after a restart or link
    loss) reuses its routing id once the old connection is gone.
    """
    if identity != request.client.encode():
        raise ProtocolError(f"client {request.client!r}: request {request.id} names a client id that is not its "
                            f"connection's routing id (set zmq.ROUTING_ID to the client id, or send no client id)")


def _wire(outcome: Any) -> list:
    """``[ok, value-or-error]`` as a reply carries it."""
    if isinstance(outcome, _Known):
        return list(outcome.wire)
    if isinstance(outcome, BaseException):
        return [False, error_to_wire(outcome)]
    return [True, outcome]


def _log_error(name: str, path: str, exc: BaseException) -> None:
    log.info("%s %s failed: %s: %s", name, path, type(exc).__name__, exc)
