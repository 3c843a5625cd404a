"""nstored's loop: a ZeroMQ ROUTER socket in front of one NetCDFIODriver.

Receive what is waiting (up to ``max_batch`` messages), apply every op in
arrival order -- a run of appends becomes one slice write per variable, and so
do writes at consecutive indices -- journal, then acknowledge. One thread, one writer: per-client order and
"a read sees every acknowledged op" follow from applying ops serially.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections import Counter
from typing import Any

import numpy as np
import zmq

from nstore.protocol import PROTOCOL_VERSION
from nstore.protocol.endpoints import default_endpoint, real_path
from nstore.protocol.errors import ProtocolError
from nstore.protocol.errors import error_to_wire
from nstore.protocol.messages import Op, decode_request, encode_reply_body
from nstore.protocol.units import is_quantity

from .clients import IDLE_S, ClientTable
from .checkpoint import checkpoint
from .journal import Commit, Entry, journal_path
from .lock import DaemonLock
from .ops import OPS
from .recovery import recover
from .security import check_endpoint, load_server_keys, secure_server

log = logging.getLogger("nstored")

DEFAULT_MAX_BATCH = 256  # messages taken per loop turn
DEFAULT_MAX_MESSAGE_BYTES = 512 * 1024 * 1024  # ZeroMQ drops the connection of a peer sending more
DEFAULT_MAX_ARRAY_BYTES = 256 * 1024 * 1024  # data one write/append/add_metadata may carry
HIGH_WATER_MARK = 8  # requests queued per peer before its sends block: bounds daemon memory
DEFAULT_MAX_BATCH_BYTES = 16 * 1024 * 1024  # stop draining the socket past this much per turn
MAX_RECENT_PEERS = 65536
POLL_MS = 200  # how often the loop looks at its stop flag while idle
GC_THRESHOLD = 100_000  # allocations between young-generation collections (CPython's default: 700)
CHECKPOINT_INTERVAL_S = 30.0
CHECKPOINT_BYTES = 256 * 1024 * 1024


class Server:
    """Serve ``file_name`` on ``endpoint`` (default: the file's ipc socket)."""

    def __init__(self, file_name: str, endpoint: str | None = None, *,
                 max_batch: int = DEFAULT_MAX_BATCH, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 fsync: str = "never", checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
                 checkpoint_bytes: int = CHECKPOINT_BYTES, keys: str | None = None, insecure: bool = False,
                 max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES, max_array_bytes: int = DEFAULT_MAX_ARRAY_BYTES,
                 client_idle_s: float = IDLE_S):
        """Limits: ``max_message_bytes`` (ZeroMQ MAXMSGSIZE: a bigger message drops its sender's
        connection), ``max_array_bytes`` (data per mutating op, refused with a ValueError before
        anything is written), ``client_idle_s`` (per-client resend state of clients silent that
        long is dropped at the next checkpoint)."""
        self.file_name = real_path(file_name)
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.max_array_bytes = max_array_bytes
        self.max_message_bytes = max_message_bytes
        endpoint = endpoint or default_endpoint(self.file_name)
        check_endpoint(endpoint, keys, insecure)
        if keys:
            load_server_keys(keys)  # bad keys fail before the file is touched
        self.checkpoint_interval_s = checkpoint_interval_s
        self.checkpoint_bytes = checkpoint_bytes
        self.clients = ClientTable(idle_s=client_idle_s)
        self._lock = DaemonLock(self.file_name)
        self._lock.acquire()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._authenticator = None
        self.endpoint, self._bound = endpoint, False
        try:
            # Bind first: a busy port or a bad endpoint fails before the file is touched.
            # Clients that connect meanwhile simply wait until recovery is done.
            self._socket.setsockopt(zmq.LINGER, 2000)
            self._socket.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
            # Replies are never dropped: a ROUTER silently discards messages to a peer
            # past its send HWM, and a client waiting for a lost reply would hang.
            # Reply volume is bounded by the clients' windows (one reply per request).
            self._socket.setsockopt(zmq.SNDHWM, 0)
            self._socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self._socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
            self._authenticator = secure_server(self._context, self._socket, keys) if keys else None
            self.endpoint, self._bound = self._bind(endpoint), True
            # If the file cannot be opened, the journal is left untouched.
            self.engine, self.seq, replayed = recover(self.file_name, journal_path(self.file_name), self.clients)
            if replayed:
                log.info("recovered %d journaled ops (through batch %d)", replayed, self.seq)
            self.journal = None
            self.checkpoint(fsync)
            self._lock.record(self.endpoint, self.file_name)
        except BaseException:
            self._close_transport()
            self._lock.release()
            raise
        self._stopping = False
        self.started = time.time()
        self.clients_seen = 0
        self._recent_peers: set[bytes] = set()  # connection identities; reset when large (counting only)
        self.ops_applied: Counter = Counter()
        self.bytes_written = 0
        self.last_batch = 0
        log.info("serving %s on %s (pid %d)", self.file_name, self.endpoint, os.getpid())

    def _bind(self, endpoint: str) -> str:
        if endpoint.startswith("ipc://"):
            path = endpoint[len("ipc://"):]
            if os.path.exists(path):
                if _socket_alive(path):
                    raise OSError(f"{endpoint} is in use by another live process (another file's daemon?)")
                os.unlink(path)  # stale: nobody listens on it any more
            self._socket.bind(endpoint)
            os.chmod(path, 0o600)
            return endpoint
        self._socket.bind(endpoint)
        return self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    # --- loop --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler)."""
        self._stopping = True

    def serve_forever(self) -> None:
        # Every op leaves a few small containers behind (results, the client
        # table); with CPython's default thresholds the cyclic collector then
        # took about half the daemon's CPU. Collect rarely, and never rescan
        # what exists at start-up.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 50, 100)
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        try:
            while not self._stopping:
                if poller.poll(POLL_MS):
                    self._turn()
                if time.monotonic() - self._last_checkpoint >= self.checkpoint_interval_s:
                    self.checkpoint()
            self._turn()  # acknowledge what already arrived before closing
        finally:
            self.close()

    def _turn(self) -> None:
        batch, size = [], 0
        while len(batch) < self.max_batch and size < self.max_batch_bytes:
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            batch.append(frames)
            size += sum(len(f) for f in frames)
        self.last_batch = len(batch)
        if batch:
            for identity, frames in self.process(batch):
                try:
                    self._socket.send_multipart([identity, *frames], copy=False)
                except zmq.ZMQError as exc:  # EHOSTUNREACH: the client left before its reply
                    log.info("reply to a departed client dropped: %s", exc)
            if self.journal.size >= self.checkpoint_bytes:
                self.checkpoint()

    def process(self, batch: list) -> list:
        """Apply a batch of raw messages; the reply frames for each sender, in order.

        Appends are checked and given their indices, journaled, and only then
        written to the file; other mutating ops (idempotent) are journaled
        right after they are applied. Replies go out after the journal write:
        nothing is acknowledged before it is in the journal. A request resent
        after a restart gets the results it got before, op by op.
        """
        parsed = []  # (identity, request or None, ProtocolError or None)
        for frames in batch:
            identity = frames[0].bytes
            if identity not in self._recent_peers:
                if len(self._recent_peers) >= MAX_RECENT_PEERS:
                    self._recent_peers.clear()
                self._recent_peers.add(identity)
                self.clients_seen += 1
            try:
                parsed.append((identity, decode_request(frames[1:]), None))
            except ProtocolError as exc:
                log.warning("bad request from %s: %s", identity.hex(), exc)
                parsed.append((identity, None, exc))
        results: list[list] = []
        work = []  # (message, op index, op) still to apply
        for m, (_, request, error) in enumerate(parsed):
            if request is None:
                results.append([error])
                continue
            known = self.clients.lookup(request.client, request.id) if request.client else None
            results.append([_Known(known[i]) if known and i in known else None for i in range(len(request.ops))])
            for i, op in enumerate(request.ops):
                if known and i in known:
                    continue
                too_big = self._check_size(op)
                if too_big is not None:  # refused before anything is applied: nothing to journal
                    self._log_error(op.name, op.path, too_big)
                    results[m][i] = too_big
                    continue
                work.append((m, i, op))
        self._segment: list = []  # journal entries not written yet
        self._commits: list = []  # append writes waiting for that journal write
        position = 0
        while position < len(work):
            end = position + 1
            if work[position][2].name == "append":
                while end < len(work) and work[end][2].name == "append":
                    end += 1
                self._prepare_appends(work[position:end], parsed, results)
            else:
                self._flush_segment(results)  # earlier appends must be in the file before this op
                end = position + self._apply_write_run(work[position:], parsed, results)
                if end == position:
                    m, i, op = work[position]
                    outcome = results[m][i] = self._apply_one(op)
                    self._log_mutation(parsed[m][1], i, op, outcome)
                    end = position + 1
            position = end
        self._flush_segment(results)
        return [(identity, encode_reply_body(request.id if request else -1, [_wire(r) for r in res]))
                for (identity, request, _), res in zip(parsed, results)]

    def _apply_write_run(self, work: list, parsed: list, results: list) -> int:
        """Writes at consecutive indices of one variable, as one slice write; how many ops it took.

        Returns 0 (nothing applied) unless ``work`` starts with at least two such
        writes, or when the block write refuses them: they are then applied one
        by one, each with its own exact error.
        """
        first = work[0][2]
        start = first.args.get("at_index") if first.name == "write" else None
        if type(start) is not int or start < 0:
            return 0
        count = 1
        while count < len(work):
            op = work[count][2]
            if op.name != "write" or op.path != first.path or op.args.get("at_index") != start + count:
                break
            count += 1
        if count < 2:
            return 0
        try:
            self.engine.write_entries(first.path, start, [entry[2].args.get("data") for entry in work[:count]])
        except Exception:  # noqa: BLE001 - one by one below gives each op its own error
            return 0
        for m, i, op in work[:count]:
            results[m][i] = None
            self.ops_applied["write"] += 1
            self.bytes_written += _payload_bytes(op.args.get("data"))
            self._log_mutation(parsed[m][1], i, op, None)
        return count

    def _log_mutation(self, request: Any, op_index: int, op: Op, outcome: Any) -> None:
        """Queue the journal entry of an applied non-append op (nothing for reads)."""
        spec = OPS[op.name]
        if spec.mutates:
            logged = None if isinstance(outcome, BaseException) else (op.name, op.path, spec.journal(op.args, outcome))
            self._log(request, op_index, logged, outcome)

    def _prepare_appends(self, run: list, parsed: list, results: list) -> None:
        """A run of consecutive appends: reserve indices now, one slice write per variable later.

        Appends to different variables commute (indices are per variable and
        nothing is acknowledged before the whole batch is done), so grouping
        the run by path, keeping arrival order within each path, is invisible
        to clients.
        """
        by_path: dict[str, list] = {}
        for entry in run:
            by_path.setdefault(entry[2].path, []).append(entry)
        for path, entries in by_path.items():
            values = [op.args.get("data") for _, _, op in entries]
            try:
                outcomes, commit = self.engine.prepare_appends(path, values)
            except Exception as exc:  # noqa: BLE001 - a bad request must not stop the daemon
                outcomes, commit = [exc] * len(entries), None
            for (m, i, _), value, outcome in zip(entries, values, outcomes):
                results[m][i] = outcome
                if isinstance(outcome, BaseException):
                    self._log_error("append", path, outcome)
                    self._log(parsed[m][1], i, None, outcome)
                else:
                    self.ops_applied["append"] += 1
                    self.bytes_written += _payload_bytes(value)
                    self._log(parsed[m][1], i, ("append", path, OPS["append"].journal({"data": value}, outcome)), outcome)
            if commit is not None:
                self._commits.append((entries, commit))

    def _check_size(self, op: Op) -> ValueError | None:
        """The error for a mutating op carrying more than ``max_array_bytes`` of data, else None."""
        if not OPS[op.name].mutates:
            return None
        size = _payload_bytes(op.args.get("data", op.args.get("value")), self.max_array_bytes)
        if size <= self.max_array_bytes:
            return None
        return ValueError(f"{op.path}: {op.name} carries at least {size} bytes of data; the daemon's limit is "
                          f"{self.max_array_bytes} bytes ({self.max_array_bytes / 2**20:g} MiB) per operation "
                          f"(nstored --max-array-mb)")

    def _log(self, request: Any, op_index: int, logged: tuple | None, outcome: Any) -> None:
        """Queue a mutating op's journal entry (``logged`` None: it failed, only its result is kept)."""
        wire = _wire(outcome)
        if request.client:
            self.clients.remember(request.client, request.id, op_index, wire)
        self._segment.append(Entry(request.client, request.id, op_index, logged, wire))

    def _flush_segment(self, results: list) -> None:
        """Write the queued journal entries as one record, then the appends they cover."""
        if self._segment:
            self.seq += 1
            self.journal.append(Commit(self.seq, self._segment))
            self._segment = []
        for entries, commit in self._commits:
            for (m, i, _), outcome in zip(entries, commit()):
                results[m][i] = outcome
        self._commits = []

    def checkpoint(self, fsync: str | None = None) -> None:
        """Sync the file with the batch number it now holds, then start a fresh journal (checkpoint.py)."""
        old = self.journal
        self.journal = checkpoint(self.engine, journal_path(self.file_name), self.seq, self.clients,
                                  fsync or old.fsync)
        if old is not None:
            old.close()
        self._last_checkpoint = time.monotonic()

    def _apply_one(self, op: Op) -> Any:
        try:
            result = OPS[op.name].apply(self, op.path, op.args)
        except Exception as exc:  # noqa: BLE001 - a bad request must not stop the daemon
            self._log_error(op.name, op.path, exc)
            return exc
        self.ops_applied[op.name] += 1
        if "data" in op.args:
            self.bytes_written += _payload_bytes(op.args["data"])
        return result

    def _log_error(self, name: str, path: str, exc: BaseException) -> None:
        log.info("%s %s failed: %s: %s", name, path, type(exc).__name__, exc)

    def status(self) -> dict:
        uptime = time.time() - self.started
        total = sum(self.ops_applied.values())
        return {
            "pid": os.getpid(),
            "file": self.file_name,
            "endpoint": self.endpoint,
            "version": PROTOCOL_VERSION,
            "uptime_s": round(uptime, 3),
            "clients_seen": self.clients_seen,
            "clients_remembered": len(self.clients),
            "last_batch_seq": self.seq,
            "journal_bytes": self.journal.size,
            "fsync": self.journal.fsync,
            "ops_applied": dict(self.ops_applied),
            "ops_per_s": round(total / uptime, 1) if uptime > 0 else 0.0,
            "queue_depth": self.last_batch,
            "bytes_written": self.bytes_written,
        }

    # --- shutdown --------------------------------------------------------------------------------
    def close(self) -> None:
        """Sync and close the file, unbind, remove socket and lock."""
        try:
            self.checkpoint()
            self.journal.close()
            self.engine.close()
        finally:
            self._close_transport()
            self._lock.release()
            log.info("stopped; %s closed", self.file_name)

    def _close_transport(self) -> None:
        """Close the socket (and its authenticator); remove the ipc socket file we bound."""
        self._socket.close()
        if self._authenticator is not None:
            self._authenticator.stop()
        self._context.term()
        if self._bound and self.endpoint.startswith("ipc://"):
            try:
                os.unlink(self.endpoint[len("ipc://"):])
            except FileNotFoundError:
                pass


def _socket_alive(path: str) -> bool:
    """True when something accepts connections on the Unix socket at ``path``."""
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


_SCALARS = frozenset({float, int, bool, type(None)})


def _payload_bytes(value: Any, limit: int = 1 << 62) -> int:
    """Bytes of data in ``value`` as it would be stored (arrays: nbytes; numbers: 8; text: its
    length), walking lists, tuples, dicts and quantities; stops counting once past ``limit``."""
    if type(value) in _SCALARS:
        return 8  # the common case
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, np.ndarray):
            total += item.nbytes
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (str, bytes)):
            total += len(item)
        elif is_quantity(item):
            stack.append(item.magnitude)
        elif item is not None:
            total += 8
    return total


class _Known:
    """A result the daemon already sent for a resent request (kept in wire form)."""

    __slots__ = ("wire",)

    def __init__(self, wire: list):
        self.wire = wire


def _wire(outcome: Any) -> list:
    """``[ok, value-or-error]`` as a reply carries it."""
    if isinstance(outcome, _Known):
        return list(outcome.wire)
    if isinstance(outcome, BaseException):
        return [False, error_to_wire(outcome)]
    return [True, outcome]
