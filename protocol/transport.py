"""Reaching a daemon: one-shot requests, CurveZMQ client keys, and "is it the right daemon?".

Shared by ``connect()`` (client/remote.py), ``nstore`` (client/cli.py),
``nstored`` (daemon/cli.py) and ``nstore.mpi``, so each of them finds, checks
and talks to a daemon the same way. Needs only pyzmq and msgpack.

A daemon found through a file's lock (``run.nc.nstored``) may not serve that
file: the lock outlives a SIGKILLed daemon, and another file's daemon may have
taken its tcp port since. The ``hello`` reply names the served file (real path,
device, inode, host); :func:`verify_serves` refuses any other.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Sequence

import zmq

from . import PROTOCOL_VERSION
from .endpoints import default_endpoint, lock_path, read_lock, real_path
from .errors import ProtocolError, error_from_wire
from .messages import decode_reply, encode_request

CLIENT_SECRET, SERVER_PUBLIC = "client.key_secret", "server.key"  # what a client needs from `nstored keygen DIR`
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "[::]": "[::1]"}


class WrongDaemonError(ConnectionError):
    """The daemon reached for a file serves another file."""


# --- keys ---------------------------------------------------------------------------------------
def client_keys(keys: str | None, endpoint: str) -> str | None:
    """The keys directory to use for ``endpoint``: ``keys``, else ``$NSTORE_KEYS``; None off tcp.

    CurveZMQ applies to tcp only (an ipc socket is protected by file permissions).
    """
    keys = keys or os.environ.get("NSTORE_KEYS") or None
    return os.path.expanduser(keys) if keys and endpoint.startswith("tcp://") else None


def secure_client(sock: zmq.Socket, keys: str) -> None:
    """Make ``sock`` a CurveZMQ client with ``keys/client.key_secret`` and the server's ``keys/server.key``."""
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(os.path.join(keys, CLIENT_SECRET))
        server_public, _ = zmq.auth.load_certificate(os.path.join(keys, SERVER_PUBLIC))
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"{keys}: cannot load CurveZMQ client keys ({exc}); they come from "
                              f"`nstored keygen {keys}` on the daemon's host") from None
    if not secret:
        raise ConnectionError(f"{os.path.join(keys, CLIENT_SECRET)}: holds no secret key")
    sock.curve_secretkey, sock.curve_publickey, sock.curve_serverkey = secret, public, server_public


# --- messages on a socket ------------------------------------------------------------------------
_MORE = int(zmq.SNDMORE)  # a plain int: pyzmq's send_multipart ORs enum flags (about 1.5 us a message)


def send_frames(sock: zmq.Socket, frames: Sequence[Any]) -> None:
    """Send one multipart message (zmq.Again, or EHOSTUNREACH on a ROUTER, come from the first frame:
    a message is queued whole or not at all)."""
    last = len(frames) - 1
    for k, frame in enumerate(frames):
        sock.send(frame, _MORE if k < last else 0, copy=False)  # (small frames are copied anyway)


def recv_frames(sock: zmq.Socket, flags: int = 0) -> list:
    """Receive one multipart message as zmq.Frames (its later parts have already arrived with the first)."""
    frames = [sock.recv(flags, copy=False)]
    while frames[-1].more:
        frames.append(sock.recv(flags, copy=False))
    return frames


# --- one-shot requests ---------------------------------------------------------------------------
def exchange(endpoint: str, ops: Sequence[tuple], *, timeout: float, keys: str | None = None) -> list:
    """Send ``ops`` as one request on a fresh socket; their ``[ok, value]`` results, one per op.

    ConnectionError when nobody listens or answers within ``timeout`` seconds.
    The daemon applies the ops of one request without interleaving other clients'.
    """
    if endpoint.startswith("ipc://") and not os.path.exists(endpoint[len("ipc://"):]):
        raise ConnectionError(f"no nstored listens at {endpoint}")
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        keys = client_keys(keys, endpoint)
        if keys:
            secure_client(sock, keys)
        sock.connect(endpoint)
        sock.send_multipart(encode_request(1, "", list(ops)))
        if not sock.poll(int(timeout * 1000)):
            raise ConnectionError(f"no nstored answered at {endpoint} within {timeout:g} s")
        _, results = decode_reply(sock.recv_multipart())
    finally:
        sock.close()
    if len(results) != len(ops):
        raise ProtocolError(f"nstored at {endpoint} answered {len(results)} of {len(ops)} operations")
    return results


def call(endpoint: str, op: str, *, timeout: float, keys: str | None = None, **args: Any) -> Any:
    """The result of one ``op`` (on the root path); the daemon's error is raised as itself."""
    ok, value = exchange(endpoint, [(op, "", args)], timeout=timeout, keys=keys)[0]
    if not ok:
        raise error_from_wire(value)
    return value


HELLO = ("hello", "", {"version": PROTOCOL_VERSION})


def hello(endpoint: str, *, timeout: float, keys: str | None = None) -> dict:
    """The daemon's ``hello``: version, pid and the file it serves (see :func:`file_identity`)."""
    return call(endpoint, HELLO[0], timeout=timeout, keys=keys, **HELLO[2])


# --- finding the daemon of a file, and checking it is the right one --------------------------------
def endpoint_for(file_name: str) -> str:
    """The endpoint the daemon of ``file_name`` recorded in its lock (else the default ipc one).

    A wildcard bind (``tcp://0.0.0.0:P``) is reached on loopback from the daemon's
    own host and by the recorded host name from others.
    """
    info = read_lock(file_name)
    if not info:
        return default_endpoint(file_name)
    endpoint = info["endpoint"]
    for wildcard, loopback in _WILDCARD_HOSTS.items():
        prefix = f"tcp://{wildcard}:"
        if endpoint.startswith(prefix):
            host = info.get("host")
            if not isinstance(host, str) or host == socket.gethostname():
                host = loopback
            return f"tcp://{host}:{endpoint[len(prefix):]}"
    return endpoint


def file_identity(file_name: str) -> dict:
    """``{file, dev, ino, host}`` of ``file_name`` as this host sees it (dev/ino None if it is missing)."""
    path = real_path(file_name)
    try:
        info = os.stat(path)
        dev, ino = info.st_dev, info.st_ino
    except OSError:
        dev = ino = None
    return {"file": path, "dev": dev, "ino": ino, "host": socket.gethostname()}


def verify_serves(reply: dict, wanted: str | dict, endpoint: str) -> dict:
    """Check that the daemon whose ``hello`` is ``reply`` serves ``wanted``; its identity, or WrongDaemonError.

    ``wanted``: a file name (compared with the file found here) or the identity
    from an earlier, trusted ``hello``. Real path and inode must match; the
    device too when both were seen from one host (device numbers of a shared
    file system differ between hosts).
    """
    expected = file_identity(wanted) if isinstance(wanted, str) else wanted
    found = {key: reply.get(key) for key in ("file", "dev", "ino", "host")}
    same = (found["file"] == expected["file"] and expected["ino"] is not None and found["ino"] == expected["ino"]
            and (found["host"] != expected["host"] or found["dev"] == expected["dev"]))
    if same:
        return found
    where = "" if found["host"] == socket.gethostname() else f" on {found['host']}"
    daemon = f"the nstored at {endpoint} (pid {reply.get('pid', '?')}{where})"
    if found["file"] != expected["file"]:
        problem = f"{daemon} serves {found['file']}, not this file"
    elif expected["ino"] is None:
        problem = f"{daemon} serves a file of this name, but none exists here"
    else:
        problem = (f"{daemon} serves another file of this name (device {found['dev']}, inode {found['ino']}; "
                   f"here: device {expected['dev']}, inode {expected['ino']})")
    raise WrongDaemonError(f"{expected['file']}: {problem}; refused (a stale lock {lock_path(expected['file'])}, "
                           f"or the daemon was replaced). Start this file's own daemon with "
                           f"`nstored start {expected['file']}`")
