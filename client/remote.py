"""RemoteDriver and connect(): the driver API as messages to nstored.

Every call is one request on a DEALER socket and waits (with a timeout) for
its reply, so errors raise at the call site with the same type and message the
in-process driver gives. The socket belongs to the process that made it: after
``fork`` the child notices the pid change and opens its own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from typing import Any

import zmq

from nstore.protocol import PROTOCOL_VERSION
from nstore.protocol.api import StorageDriver, StorageVariable
from nstore.protocol.endpoints import default_endpoint, is_endpoint, read_lock, real_path
from nstore.protocol.errors import ProtocolError, error_from_wire
from nstore.protocol.messages import decode_reply, encode_request
from nstore.protocol.values import check_storable_type

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
SPAWN_TIMEOUT_S = 60.0


class RemoteDriver(StorageDriver):
    """Driver that forwards every operation to the nstored serving ``endpoint``."""

    def __init__(self, endpoint: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S):
        self.endpoint = endpoint
        self.timeout = timeout
        self._pid = -1
        self._socket: zmq.Socket | None = None
        self._next_id = 0
        self._lock = threading.Lock()
        self._closed = False
        hello = self._call("hello", "", timeout=connect_timeout, version=PROTOCOL_VERSION)
        self.file_name: str = hello["file"]
        self.daemon_pid: int = hello["pid"]

    # --- transport ------------------------------------------------------------------------
    def _sock(self) -> zmq.Socket:
        if self._pid != os.getpid():
            # New process (first use or after fork): never touch the parent's socket.
            self._pid = os.getpid()
            self._client_id = f"{socket.gethostname()}:{self._pid}:{uuid.uuid4().hex[:8]}"
            if self.endpoint.startswith("ipc://") and not os.path.exists(self.endpoint[len("ipc://"):]):
                raise ConnectionError(f"no nstored listens at {self.endpoint}")
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 5000)  # at exit, give queued messages time to leave
            sock.connect(self.endpoint)
            self._socket = sock
        return self._socket

    def _request(self, ops: list, timeout: float) -> list:
        if self._closed:
            raise ValueError(f"{self.endpoint}: the connection is closed")
        with self._lock:
            sock = self._sock()
            self._next_id += 1
            request_id = self._next_id
            sock.send_multipart(encode_request(request_id, self._client_id, ops), copy=False)
            while True:
                if not sock.poll(int(timeout * 1000)):
                    # Drop the socket: a late reply must not be taken for the next request's.
                    sock.close(linger=0)
                    self._pid = -1
                    name, path = ops[0][0], ops[0][1]
                    raise ConnectionError(f"nstored at {self.endpoint} did not answer {name} {path!r} within {timeout:g} s")
                reply_id, results = decode_reply(sock.recv_multipart(copy=False))
                if reply_id == request_id:
                    return results
                if reply_id == -1:  # the daemon could not parse our request
                    ok, error = results[0]
                    raise error_from_wire(error)

    def _call(self, op: str, path: str, timeout: float | None = None, **args: Any) -> Any:
        results = self._request([(op, path, args)], self.timeout if timeout is None else timeout)
        if len(results) != 1:
            raise ProtocolError(f"expected 1 result, got {len(results)}")
        ok, value = results[0]
        if not ok:
            raise error_from_wire(value)
        return value

    # --- driver API ---------------------------------------------------------------------------
    def get_storage_variable(self, path: str) -> StorageVariable:
        self._call("get_variable", path)
        return StorageVariable(self, path)

    def create_storage_variable(self, path: str, py_type: type) -> StorageVariable:
        # Local check only: the variable is created atomically by its first write/append.
        check_storable_type(py_type, path)
        return StorageVariable(self, path)

    def write_variable(self, path: str, data: Any, at_index: int | None = None) -> None:
        self._call("write", path, data=_checked(data, path), at_index=at_index)

    def append_variable(self, path: str, data: Any) -> int:
        return self._call("append", path, data=_checked(data, path))

    def read_variable(self, path: str, index: int | slice | None = None) -> Any:
        return self._call("read", path, index=index)

    def variable_info(self, path: str) -> dict:
        return self._call("info", path)

    def get_directory(self, path: str, create: bool = True) -> str:
        return self._call("get_directory", path, create=create)

    def list_directory(self, path: str = "") -> list[str]:
        return self._call("list", path)

    def add_metadata(self, name: str, value: Any, path: str = "/") -> None:
        self._call("add_metadata", path, name=name, value=_checked(value, path))

    def read_metadata(self, path: str = "/") -> dict:
        return self._call("metadata", path)

    def status(self) -> dict:
        """The daemon's status (pid, uptime, clients, ops applied, ...)."""
        return self._call("status", "")

    def sync(self) -> None:
        self._call("sync", "")

    def close(self) -> None:
        """Release the socket; every call has already been acknowledged."""
        if self._socket is not None and self._pid == os.getpid():
            self._socket.close()
        self._socket, self._closed = None, True

    def __repr__(self) -> str:
        return f"<RemoteDriver {self.endpoint!r} serving {getattr(self, 'file_name', '?')!r}>"


def _checked(value: Any, path: str) -> Any:
    """Values we cannot encode fail here, naming the path, before anything is sent."""
    from nstore.protocol.errors import UnsupportedTypeError
    from nstore.protocol.values import pack

    try:
        pack(value)  # cheap for scalars; arrays are not copied
    except UnsupportedTypeError as exc:
        raise exc.at(path) from None
    return value


def connect(target: str, *, spawn: bool = False, timeout: float = DEFAULT_TIMEOUT_S,
            connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S) -> RemoteDriver:
    """A driver talking to the daemon that serves ``target`` (a file path or an endpoint).

    With ``spawn=True`` and no daemon serving the file, start one (``nstored
    start``) and wait until it accepts connections. Without it, fail within
    ``connect_timeout`` seconds with a ConnectionError that says what to do.
    """
    if is_endpoint(target):
        return RemoteDriver(target, timeout=timeout, connect_timeout=connect_timeout)
    file_name = real_path(target)
    try:
        return RemoteDriver(_endpoint_for(file_name), timeout=timeout, connect_timeout=connect_timeout)
    except ConnectionError as exc:
        if not spawn:
            raise ConnectionError(
                f"no nstored serves {file_name} ({exc}); start one with `nstored start {file_name}` "
                f"or use connect(..., spawn=True)"
            ) from None
    _spawn(file_name)
    return RemoteDriver(_endpoint_for(file_name), timeout=timeout, connect_timeout=connect_timeout)


def _endpoint_for(file_name: str) -> str:
    info = read_lock(file_name)
    return info["endpoint"] if info else default_endpoint(file_name)


def _spawn(file_name: str) -> None:
    """Run ``nstored start FILE``; losing a start race to another process is fine."""
    result = subprocess.run([sys.executable, "-m", "nstore.daemon.cli", "start", file_name],
                            capture_output=True, text=True, timeout=SPAWN_TIMEOUT_S)
    if result.returncode != 0 and "already served" not in result.stderr:
        raise ConnectionError(f"could not start nstored for {file_name}: {result.stderr.strip()}")
