"""RemoteDriver: the driver API as messages to nstored (connect() in connecting.py makes one).

Every call is one request on a DEALER socket and waits (with a timeout) for
its reply, so errors raise at the call site with the same type and message the
in-process driver gives. The socket belongs to the process that made it: after
``fork`` the child notices the pid change and opens its own.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from time import monotonic
from typing import Any

import zmq

from nstore.protocol import PROTOCOL_VERSION
from nstore.protocol.api import StorageDriver, StorageVariable
from nstore.protocol.endpoints import pid_alive
from nstore.protocol.errors import ProtocolError, UnsupportedTypeError, error_from_wire
from nstore.protocol.messages import decode_reply, encode_request
from nstore.protocol.transport import (WrongDaemonError, client_keys, hello, recv_frames, secure_client, send_frames,
                                      verify_serves)
from nstore.protocol.values import check_storable_type

from .linkwatch import LinkWatch
from .pipeline import (INT64_MAX, INT64_MIN, PIPELINE_MAX_DELAY_S, PIPELINE_WINDOW, ColumnIndex, PendingBatch,
                       PendingIndex, checked, column_key, live_pipelines, name_operation, op_bytes, owned_copy)

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_GRACE_S = 30.0
POLL_SLICE_S = 0.5  # how often a waiting client checks that its daemon still exists
PROBE_TIMEOUT_S = 1.0  # how long a client riding through a restart waits for one hello

class RemoteDriver(StorageDriver):
    """Driver that forwards every operation to the nstored serving ``endpoint``.

    Synchronous by default: each call waits for its acknowledgement, so errors
    raise where they happen. With ``pipeline=True``, writes and appends are
    batched and sent without waiting (``append`` returns a
    :class:`PendingIndex`); ``flush()`` waits for everything and raises the
    first error, naming the failed operation. Reads, ``sync()`` and
    ``close()`` flush first, so a client always reads its own writes.
    ``serves``: a file name the daemon must serve (else WrongDaemonError).
    """

    def __init__(self, endpoint: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S, pipeline: bool = False,
                 grace: float = DEFAULT_GRACE_S, keys: str | None = None, serves: str | None = None):
        self.endpoint = endpoint
        self.keys = client_keys(keys, endpoint)
        self.timeout = timeout
        self.grace = grace
        self.daemon_pid = -1
        self.pipeline = pipeline
        self._pid = -1
        self._socket: zmq.Socket | None = None
        self._watch: LinkWatch | None = None
        self._next_id = 0
        self._lock = threading.RLock()
        self._closed = False
        self._reset_queues()
        grace, self.grace = self.grace, 0.0  # no ride-through for the first contact
        try:
            reply = self._call("hello", "", timeout=connect_timeout, version=PROTOCOL_VERSION)
        finally:
            self.grace = grace
        self.file_name: str = reply["file"]
        self.daemon_pid: int = reply["pid"]
        self.identity: dict = reply  # a daemon found after a restart must serve this same file (_reprobe)
        if serves is not None:
            try:
                verify_serves(reply, serves, endpoint)
            except WrongDaemonError:
                self.close()
                raise
        if pipeline:
            live_pipelines.add(self)

    def _reset_queues(self) -> None:
        self._batch = PendingBatch()  # pipelined ops not sent yet
        self._in_flight: dict[int, tuple[list, list | None]] = {}  # request id -> (ops, handles; None: synchronous)
        self._errors: list[BaseException] = []

    # --- transport ------------------------------------------------------------------------
    def _sock(self) -> zmq.Socket:
        if self._pid != os.getpid():
            # New process (first use or after fork): never touch the parent's socket,
            # and forget the parent's queued operations (they are the parent's to send).
            if self._pid != -1:
                self._reset_queues()
            self._pid = os.getpid()
            self._client_id = f"{socket.gethostname()}:{self._pid}:{uuid.uuid4().hex[:8]}"
            self._socket = self._watch = None
        if self._socket is None:
            if self._ipc_path and not os.path.exists(self._ipc_path):
                raise ConnectionError(f"no nstored listens at {self.endpoint}")
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 5000)  # at exit, give queued messages time to leave
            # The daemon answers a resent request from its exactly-once table only over the
            # connection whose routing id is the client id (see daemon/batch.py _check_owner).
            sock.setsockopt(zmq.ROUTING_ID, self._client_id.encode())
            # Never let this socket reconnect to a restarted daemon by itself: it
            # would deliver requests sent after the crash before the lost earlier
            # ones are resent, breaking this client's order. _ride_through()
            # reconnects with a fresh socket and resends in order instead.
            sock.setsockopt(zmq.RECONNECT_IVL, -1)
            sock.setsockopt(zmq.SNDTIMEO, int(POLL_SLICE_S * 1000))
            if self._ipc_path is None:
                self._watch = LinkWatch(sock)  # tcp: no pid to watch; heartbeats and a monitor instead
            if self.keys:
                secure_client(sock, self.keys)
            sock.connect(self.endpoint)
            self._socket, self._wait_ms = sock, -1
        return self._socket

    def _drop_socket(self, linger: int | None = 0) -> None:
        """Close this process's socket (unsent messages are dropped, unless ``linger`` is None: the
        socket's own LINGER); the next _sock() opens a fresh one."""
        if self._watch is not None:
            self._watch.close()
        if self._socket is not None:
            self._socket.close(linger=linger)
        self._socket = self._watch = None

    @property
    def _ipc_path(self) -> str | None:
        return self.endpoint[len("ipc://"):] if self.endpoint.startswith("ipc://") else None

    def _daemon_gone(self) -> bool:
        """True when the daemon we talk to is gone: ipc, its socket or process vanished; tcp, the connection."""
        if self._ipc_path is None:
            return self._watch is not None and self._watch.lost()
        return not os.path.exists(self._ipc_path) or (self.daemon_pid > 0 and not pid_alive(self.daemon_pid))

    def _ride_through(self) -> None:
        """Wait (up to ``grace`` s) for a daemon to serve the endpoint again, then resend.

        Requests keep their client id and request id, and the daemon remembers
        what it acknowledged, so a resent append is answered, never applied twice.
        """
        self._drop_socket()
        deadline = time.monotonic() + self.grace
        while True:
            try:
                self.daemon_pid = self._reprobe()
                sock = self._sock()
                for request_id in sorted(self._in_flight):
                    frames = encode_request(request_id, self._client_id, self._in_flight[request_id][0])
                    send_frames(sock, frames)
                return
            except WrongDaemonError:  # another file's daemon took the endpoint: never resend to it
                raise
            except (ConnectionError, zmq.Again):  # not back yet, or gone again while we resent
                self._drop_socket()
                if time.monotonic() >= deadline:
                    if self.daemon_pid == -1:  # first contact: nothing to ride through
                        raise ConnectionError(f"no nstored answered at {self.endpoint}") from None
                    lost = sum(len(ops) for ops, _ in self._in_flight.values())
                    raise ConnectionError(
                        f"nstored at {self.endpoint} went away and did not come back within {self.grace:g} s "
                        f"({lost} operations unacknowledged)") from None
                time.sleep(0.1)

    def _reprobe(self) -> int:
        """The pid of the daemon answering at our endpoint now; it must serve the file we began with."""
        reply = hello(self.endpoint, timeout=PROBE_TIMEOUT_S, keys=self.keys)
        verify_serves(reply, self.identity, self.endpoint)
        return reply["pid"]

    def _send(self, ops: list, handles: list | None) -> int:
        if self._closed:
            raise ValueError(f"{self.endpoint}: the connection is closed")
        sock = self._sock()
        self._next_id += 1
        request_id = self._next_id
        try:
            frames = encode_request(request_id, self._client_id, ops)
        except UnsupportedTypeError as exc:  # (pipelined values were checked when queued)
            raise exc.at(ops[0][1]) from None
        self._in_flight[request_id] = (ops, handles)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                send_frames(sock, frames)
                return request_id
            except zmq.Again:  # no daemon to take it (the connection is gone; see _sock)
                if self._daemon_gone():
                    self._ride_through()  # resends everything in flight, this request included
                    return request_id
                if time.monotonic() >= deadline:
                    del self._in_flight[request_id]
                    raise ConnectionError(f"nstored at {self.endpoint} took no request for {self.timeout:g} s") from None
                sock = self._sock()

    def _receive(self, timeout: float) -> tuple[int, list]:
        """Take one reply and settle its ops; ConnectionError if none comes in time.

        If the daemon dies meanwhile, ride through its restart (see ``_ride_through``).
        """
        deadline = time.monotonic() + timeout
        wait_ms = int(min(POLL_SLICE_S, timeout) * 1000)
        while True:
            sock = self._sock()
            if self._wait_ms != wait_ms:
                sock.setsockopt(zmq.RCVTIMEO, wait_ms)
                self._wait_ms = wait_ms
            try:  # one blocking receive per reply (no poller): it waits at most one slice
                frames = recv_frames(sock)
                break
            except zmq.Again:
                pass
            if self._daemon_gone():
                self._ride_through()
                deadline = time.monotonic() + timeout
            wait_ms = int(min(POLL_SLICE_S, max(0.0, deadline - time.monotonic())) * 1000)
            if wait_ms <= 0:
                self._drop_socket()  # a late reply must not be taken for a later request's
                lost = sum(len(ops) for ops, _ in self._in_flight.values())
                self._in_flight.clear()
                raise ConnectionError(f"nstored at {self.endpoint} did not answer within {timeout:g} s "
                                      f"({lost} operations unacknowledged)")
        reply_id, results = decode_reply(frames)
        if reply_id == -1 and self._in_flight:  # the daemon could not parse a request of ours
            reply_id = min(self._in_flight)
            results = results * len(self._in_flight[reply_id][0])
        ops, handles = self._in_flight.pop(reply_id, ((), None))
        if handles is not None:  # a pipelined batch: settle its handles, keep its errors for flush()
            for op, handle, (ok, value) in zip(ops, handles, results):
                if not ok:
                    value = name_operation(error_from_wire(value), op)
                    self._errors.append(value)
                if handle is not None:
                    handle._resolve(ok, value)
        return reply_id, results

    def _request(self, ops: list, timeout: float) -> list:
        """Send ``ops`` now (after anything pending) and wait for their results."""
        with self._lock:
            self._send_pending()
            request_id = self._send(ops, None)  # (no handles: the caller reads the results)
            while True:
                reply_id, results = self._receive(timeout)
                if reply_id == request_id:
                    return results

    def _call(self, op: str, path: str, timeout: float | None = None, **args: Any) -> Any:
        results = self._request([(op, path, args)], self.timeout if timeout is None else timeout)
        if len(results) != 1:
            raise ProtocolError(f"expected 1 result, got {len(results)}")
        ok, value = results[0]
        if not ok:
            raise error_from_wire(value)
        return value

    # --- pipelining ---------------------------------------------------------------------------
    def _enqueue(self, op: str, path: str, want_index: bool = False, **args: Any) -> PendingIndex | None:
        with self._lock:
            if self._pid != os.getpid():
                self._sock()
            handle = PendingIndex(self) if want_index else None
            self._batch.add((op, path, args), handle, op_bytes(args))
            if self._batch.due():
                self._send_pending()
            return handle

    def _append_to_column(self, path: str, data: Any) -> PendingIndex:
        """A pipelined append: into the open column if ``data`` is alike, else a new column or a plain op."""
        key = column_key(data)
        if key is None:
            return self._enqueue("append", path, want_index=True, data=owned_copy(checked(data, path)))
        if self._pid != os.getpid():  # (a forked child has no open column: pipeline.py)
            self._sock()
        batch = self._batch
        column = batch.open_column(self, path, key, data)
        live_pipelines.add(self)
        handle = column.add(data)
        batch.nbytes += column.row_bytes
        if batch.due():
            self._send_pending()
        return handle

    def _send_pending(self) -> None:
        if not self._batch.ops:
            return
        while len(self._in_flight) >= PIPELINE_WINDOW:
            self._receive(self.timeout)  # backpressure: wait for the oldest batch
        self._send(*self._batch.take())

    def _wait_for(self, handle: PendingIndex) -> None:
        with self._lock:
            self._send_pending()
            while not handle.done():
                self._receive(self.timeout)

    def _reported(self, error: BaseException) -> None:
        """An error the caller has seen through its PendingIndex is not raised again by flush()."""
        with self._lock:
            self._errors = [e for e in self._errors if e is not error]

    def flush(self) -> None:
        """Send what is pending and wait for every acknowledgement; raise the first error."""
        with self._lock:
            if self._pid != os.getpid():
                return
            self._send_pending()
            while self._in_flight:
                self._receive(self.timeout)
            if self._errors:
                first, more = self._errors[0], len(self._errors) - 1
                self._errors = []
                if more:
                    first.add_note(f"{more} more pipelined operation(s) failed too")
                raise first

    # --- driver API ---------------------------------------------------------------------------
    def get_storage_variable(self, path: str) -> StorageVariable:
        self._call("get_variable", path)
        return StorageVariable(self, path)

    def create_storage_variable(self, path: str, py_type: type) -> StorageVariable:
        # Local check only: the variable is created atomically by its first write/append.
        check_storable_type(py_type, path)
        return StorageVariable(self, path)

    def write_variable(self, path: str, data: Any, at_index: int | None = None) -> None:
        if self.pipeline:
            self._enqueue("write", path, data=owned_copy(checked(data, path)), at_index=at_index)
        else:
            self._call("write", path, data=data, at_index=at_index)

    def append_variable(self, path: str, data: Any) -> int | PendingIndex:
        if not self.pipeline:
            return self._call("append", path, data=data)
        with self._lock:
            # The fast path: one more plain number for the open column, while the batch is not due.
            # (After fork, the child has no open column: pipeline.py.)
            column = self._batch.column
            if column is not None and type(data) is column.scalar and path == column.path:
                values = column.values
                row = len(values)
                if (row < column.room - 1 and monotonic() - self._batch.since < PIPELINE_MAX_DELAY_S
                        and (column.scalar is float or INT64_MIN <= data <= INT64_MAX)):
                    values.append(data)
                    return ColumnIndex(column, row)
            return self._append_to_column(path, data)

    def read_variable(self, path: str, index: int | slice | None = None) -> Any:
        return self._call("read", path, index=index)

    def variable_info(self, path: str) -> dict:
        return self._call("info", path)

    def get_directory(self, path: str, create: bool = True) -> str:
        return self._call("get_directory", path, create=create)

    def list_directory(self, path: str = "") -> list[str]:
        return self._call("list", path)

    def add_metadata(self, name: str, value: Any, path: str = "/") -> None:
        # Synchronous even when pipelining: metadata is rare, and callers (the
        # SIDV buffer) need its KeyError for a target that does not exist yet.
        self._call("add_metadata", path, name=name, value=value)

    def read_metadata(self, path: str = "/") -> dict:
        return self._call("metadata", path)

    def layout(self, path: str = "") -> dict:
        """Dimensions, dtypes, shapes and raw attributes of ``path`` and its subgroups, in one cut
        (see nstore.daemon.layout; used by the xarray backend)."""
        return self._call("layout", path)

    def status(self) -> dict:
        """The daemon's status (pid, uptime, clients, ops applied, ...)."""
        return self._call("status", "")

    def sync(self) -> None:
        """Wait for every pipelined op, then have the daemon sync the file."""
        self.flush()
        self._call("sync", "")

    def close(self) -> None:
        """Wait for every acknowledgement, then release the socket."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            if self._pid == os.getpid():
                self._drop_socket(linger=None)  # (queued messages may still leave)
            self._socket, self._watch, self._closed = None, None, True
            live_pipelines.discard(self)

    def __repr__(self) -> str:
        return f"<RemoteDriver {self.endpoint!r} serving {getattr(self, 'file_name', '?')!r}>"
