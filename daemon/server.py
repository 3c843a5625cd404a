"""nstored's loop: a ZeroMQ ROUTER socket in front of one NetCDFIODriver.

Receive what is waiting (up to ``max_batch`` messages), apply every op in
arrival order -- consecutive appends to one variable coalesced into a single
slice write -- then acknowledge. One thread, one writer: per-client order and
"a read sees every acknowledged op" follow from applying ops serially.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from typing import Any

import zmq

from nstore.protocol import PROTOCOL_VERSION
from nstore.protocol.endpoints import default_endpoint, real_path
from nstore.protocol.errors import ProtocolError
from nstore.protocol.messages import Op, decode_request, encode_reply

from .engine import NetCDFIODriver
from .lock import DaemonLock

log = logging.getLogger("nstored")

DEFAULT_MAX_BATCH = 256  # messages taken per loop turn
DEFAULT_MAX_MESSAGE_BYTES = 512 * 1024 * 1024
HIGH_WATER_MARK = 1000  # messages queued per peer before senders block
POLL_MS = 200  # how often the loop looks at its stop flag while idle


class Server:
    """Serve ``file_name`` on ``endpoint`` (default: the file's ipc socket)."""

    def __init__(self, file_name: str, endpoint: str | None = None, *,
                 max_batch: int = DEFAULT_MAX_BATCH, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        self.file_name = real_path(file_name)
        self.max_batch = max_batch
        self._lock = DaemonLock(self.file_name)
        self._lock.acquire()
        try:
            self.engine = NetCDFIODriver(self.file_name)
            self._context = zmq.Context()
            self._socket = self._context.socket(zmq.ROUTER)
            self._socket.setsockopt(zmq.LINGER, 2000)
            self._socket.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
            self._socket.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
            self._socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
            self.endpoint = self._bind(endpoint or default_endpoint(self.file_name))
            self._lock.record(self.endpoint, self.file_name)
        except BaseException:
            self._lock.release()
            raise
        self._stopping = False
        self.started = time.time()
        self.clients: set[bytes] = set()
        self.ops_applied: Counter = Counter()
        self.bytes_written = 0
        self.last_batch = 0
        log.info("serving %s on %s (pid %d)", self.file_name, self.endpoint, os.getpid())

    def _bind(self, endpoint: str) -> str:
        if endpoint.startswith("ipc://"):
            path = endpoint[len("ipc://"):]
            if os.path.exists(path):
                os.unlink(path)  # stale: we hold the file's lock, so no live daemon owns it
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
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        try:
            while not self._stopping:
                if poller.poll(POLL_MS):
                    self._turn()
            self._turn()  # acknowledge what already arrived before closing
        finally:
            self.close()

    def _turn(self) -> None:
        batch = []
        while len(batch) < self.max_batch:
            try:
                batch.append(self._socket.recv_multipart(zmq.NOBLOCK, copy=False))
            except zmq.Again:
                break
        self.last_batch = len(batch)
        if batch:
            for identity, frames in self.process(batch):
                self._socket.send_multipart([identity, *frames], copy=False)

    def process(self, batch: list) -> list:
        """Apply a batch of raw messages; the reply frames for each sender, in order."""
        parsed = []  # (identity, request id, ops or error)
        for frames in batch:
            identity = frames[0].bytes
            self.clients.add(identity)
            try:
                request = decode_request(frames[1:])
            except ProtocolError as exc:
                log.warning("bad request from %s: %s", identity.hex(), exc)
                parsed.append((identity, -1, exc))
                continue
            parsed.append((identity, request.id, request.ops))
        flat = [(m, i, op) for m, (_, _, ops) in enumerate(parsed) if isinstance(ops, list) for i, op in enumerate(ops)]
        results = [[None] * len(ops) if isinstance(ops, list) else [ops] for _, _, ops in parsed]
        position = 0
        while position < len(flat):
            end = position + 1
            if flat[position][2].name != "append":
                m, i, op = flat[position]
                results[m][i] = self._apply_one(op)
            else:
                while end < len(flat) and flat[end][2].name == "append":
                    end += 1
                self._apply_appends(flat[position:end], results)
            position = end
        return [(identity, encode_reply(rid, res)) for (identity, rid, _), res in zip(parsed, results)]

    def _apply_appends(self, run: list, results: list) -> None:
        """A run of consecutive appends: one slice write per variable.

        Appends to different variables commute (indices are per variable and
        nothing is acknowledged before the whole batch is applied), so grouping
        the run by path, keeping arrival order within each path, is invisible
        to clients.
        """
        by_path: dict[str, list] = {}
        for entry in run:
            by_path.setdefault(entry[2].path, []).append(entry)
        for path, entries in by_path.items():
            for (m, i, _), outcome in zip(entries, self._append_run([e[2] for e in entries])):
                results[m][i] = outcome

    def _append_run(self, ops: list[Op]) -> list:
        values = [op.args.get("data") for op in ops]
        try:
            outcomes = self.engine.append_many(ops[0].path, values)
        except Exception as exc:  # noqa: BLE001 - a bad request must not stop the daemon
            self._log_error("append", ops[0].path, exc)
            return [exc] * len(ops)
        for value, outcome in zip(values, outcomes):
            if isinstance(outcome, BaseException):
                self._log_error("append", ops[0].path, outcome)
            else:
                self.ops_applied["append"] += 1
                self.bytes_written += _nbytes(value)
        return outcomes

    def _apply_one(self, op: Op) -> Any:
        handler = getattr(self, f"_op_{op.name}")
        try:
            result = handler(op.path, **op.args)
        except Exception as exc:  # noqa: BLE001 - a bad request must not stop the daemon
            self._log_error(op.name, op.path, exc)
            return exc
        self.ops_applied[op.name] += 1
        return result

    def _log_error(self, name: str, path: str, exc: BaseException) -> None:
        log.info("%s %s failed: %s: %s", name, path, type(exc).__name__, exc)

    # --- ops (each returns the reply value) ---------------------------------------------------
    def _op_hello(self, path: str, version: int = PROTOCOL_VERSION) -> dict:
        if version != PROTOCOL_VERSION:
            raise ProtocolError(f"protocol version mismatch: client speaks {version}, daemon speaks {PROTOCOL_VERSION}")
        return {"version": PROTOCOL_VERSION, "file": self.file_name, "pid": os.getpid()}

    def _op_get_variable(self, path: str) -> None:
        self.engine.get_storage_variable(path)

    def _op_get_directory(self, path: str, create: bool = True) -> str:
        return self.engine.get_directory(path, create=create)

    def _op_list(self, path: str) -> list:
        return self.engine.list_directory(path)

    def _op_info(self, path: str) -> dict:
        return self.engine.variable_info(path)

    def _op_write(self, path: str, data: Any = None, at_index: int | None = None) -> None:
        self.engine.write_variable(path, data, at_index)
        self.bytes_written += _nbytes(data)

    def _op_read(self, path: str, index: Any = None) -> Any:
        return self.engine.read_variable(path, index)

    def _op_add_metadata(self, path: str, name: str = "", value: Any = None) -> None:
        self.engine.add_metadata(name, value, path=path or "/")

    def _op_metadata(self, path: str) -> dict:
        return self.engine.read_metadata(path or "/")

    def _op_sync(self, path: str) -> None:
        self.engine.sync()

    def _op_status(self, path: str) -> dict:
        return self.status()

    def _op_shutdown(self, path: str) -> dict:
        self.stop()
        return {"pid": os.getpid()}

    def status(self) -> dict:
        uptime = time.time() - self.started
        total = sum(self.ops_applied.values())
        return {
            "pid": os.getpid(),
            "file": self.file_name,
            "endpoint": self.endpoint,
            "version": PROTOCOL_VERSION,
            "uptime_s": round(uptime, 3),
            "clients_seen": len(self.clients),
            "ops_applied": dict(self.ops_applied),
            "ops_per_s": round(total / uptime, 1) if uptime > 0 else 0.0,
            "queue_depth": self.last_batch,
            "bytes_written": self.bytes_written,
        }

    # --- shutdown --------------------------------------------------------------------------------
    def close(self) -> None:
        """Sync and close the file, unbind, remove socket and lock."""
        try:
            self.engine.close()
        finally:
            self._socket.close()
            self._context.term()
            if self.endpoint.startswith("ipc://"):
                try:
                    os.unlink(self.endpoint[len("ipc://"):])
                except FileNotFoundError:
                    pass
            self._lock.release()
            log.info("stopped; %s closed", self.file_name)


def _nbytes(value: Any) -> int:
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    if isinstance(value, str):
        return len(value)
    return 8
