"""Who may talk to a daemon: private ipc sockets by default, CurveZMQ keys on tcp.

* ipc: the socket's directory must belong to you (or root) and not be writable by
  others; the socket is 0600. Only you (and root) can connect.
* tcp, loopback included: requires CurveZMQ keys (``nstored keygen DIR``), or
  ``--insecure``, which warns loudly: without keys every local user (and, beyond
  loopback, anyone on the network) could read, write and stop the daemon.
* The keys directory and its ``authorized`` list must be yours and writable by
  you alone: whoever can add a key file there is admitted.

Authentication uses pyzmq's own ``zmq.auth.ThreadAuthenticator``: the server
accepts only clients whose public keys are in ``DIR/authorized``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import stat
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("nstored")

SERVER_NAME, CLIENT_NAME, AUTHORIZED = "server", "client", "authorized"


def keygen(directory: str) -> dict[str, str]:
    """Create server and client key pairs in ``directory``; authorize the client key.

    ``directory`` and ``directory/authorized`` are created, or tightened, to 0700,
    and the key files to 0600. Entries someone else may have planted (another
    user's files, symbolic links) are refused: a directory that was
    world-writable may already hold a key its owner never meant to admit.
    """
    authorized = os.path.join(directory, AUTHORIZED)
    key_files = [f"{name}{suffix}" for name in (SERVER_NAME, CLIENT_NAME) for suffix in (".key", ".key_secret")]
    for folder, names in ((directory, key_files + [AUTHORIZED]), (authorized, None)):
        os.makedirs(folder, mode=0o700, exist_ok=True)
        _refuse_planted(folder, os.listdir(folder) if names is None else names)
        os.chmod(folder, 0o700)
    server_public, server_secret = zmq.auth.create_certificates(directory, SERVER_NAME)
    client_public, client_secret = zmq.auth.create_certificates(directory, CLIENT_NAME)
    shutil.copy(client_public, authorized)
    for path in [os.path.join(directory, name) for name in key_files] + _entries(authorized):
        os.chmod(path, 0o600)
    return {"server_public": server_public, "server_secret": server_secret,
            "client_public": client_public, "client_secret": client_secret, "authorized": authorized}


def _entries(directory: str) -> list[str]:
    return [os.path.join(directory, name) for name in sorted(os.listdir(directory))]


def _refuse_planted(directory: str, names: list[str]) -> None:
    """PermissionError if ``directory`` or one of ``names`` in it is another user's, or such an entry is a link."""
    if os.stat(directory).st_uid != os.getuid():
        raise PermissionError(f"{directory}: belongs to another user (uid {os.stat(directory).st_uid}); "
                              f"make keys in a directory of your own")
    for name in names:
        path = os.path.join(directory, name)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
            what = "is a symbolic link" if stat.S_ISLNK(info.st_mode) else f"belongs to another user (uid {info.st_uid})"
            raise PermissionError(f"{path}: {what}; someone may have planted it. Remove it, or make keys in a "
                                  f"new directory")


def check_keys_dir(keys: str) -> None:
    """Refuse a keys directory (or its ``authorized`` list, or a key in it) that others may change."""
    authorized = os.path.join(keys, AUTHORIZED)
    for path in [keys, authorized] + (_entries(authorized) if os.path.isdir(authorized) else []):
        try:
            info = os.stat(path)
        except FileNotFoundError:
            continue  # (load_server_keys says what is missing)
        if info.st_uid not in (os.getuid(), 0):
            raise PermissionError(f"{path}: belongs to another user (uid {info.st_uid}), who could admit any "
                                  f"client key; keep CurveZMQ keys in a directory of your own")
        if info.st_mode & 0o022:
            raise PermissionError(f"{path}: others may write to it (mode {oct(info.st_mode & 0o777)}), so they "
                                  f"could admit a client key of their own; run `chmod go-w {path}`")


def is_loopback(endpoint: str) -> bool:
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a host name: beyond loopback


def check_endpoint(endpoint: str, keys: str | None, insecure: bool) -> None:
    """Refuse endpoints that would let others in unauthenticated."""
    if endpoint.startswith("ipc://"):
        directory = os.path.dirname(os.path.abspath(endpoint[len("ipc://"):]))
        info = os.stat(directory)
        mode = info.st_mode
        if info.st_uid not in (os.getuid(), 0):
            raise PermissionError(f"{directory}: belongs to another user (uid {info.st_uid}), who could replace "
                                  f"the socket; put the ipc socket in a directory of your own")
        if mode & 0o022:
            raise PermissionError(f"{directory}: others may write to this directory (mode {oct(mode & 0o777)}); "
                                  f"put the ipc socket in a private directory")
    elif endpoint.startswith("tcp://") and not keys:
        local = is_loopback(endpoint)
        if not insecure and local:
            raise PermissionError(f"{endpoint}: without keys, every user of this machine could read, write and "
                                  f"stop the daemon: give --keys DIR (see `nstored keygen`), use the default ipc "
                                  f"socket, or accept that with --insecure")
        if not insecure:
            raise PermissionError(f"{endpoint} is reachable beyond this machine: give --keys DIR "
                                  f"(see `nstored keygen`) or, on a trusted network, --insecure")
        log.warning("INSECURE: %s accepts unauthenticated clients from %s", endpoint,
                    "every user of this machine" if local else "the network")


def load_server_keys(keys: str) -> tuple[bytes, bytes]:
    """The server's (public, secret) CurveZMQ keys from ``keys``; OSError naming what is missing."""
    check_keys_dir(keys)
    path = os.path.join(keys, f"{SERVER_NAME}.key_secret")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise OSError(f"{path}: cannot load the server's CurveZMQ keys ({exc}); make them with `nstored keygen {keys}`") from None
    if not secret:
        raise OSError(f"{path}: holds no secret key; make keys with `nstored keygen {keys}`")
    if not os.path.isdir(os.path.join(keys, AUTHORIZED)):
        raise OSError(f"{keys}/{AUTHORIZED}: missing; it lists the client keys to admit")
    return public, secret


def secure_server(context: zmq.Context, socket: zmq.Socket, keys: str) -> ThreadAuthenticator:
    """Make ``socket`` a CurveZMQ server accepting only keys in ``keys/authorized``."""
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    authenticator.configure_curve(domain="*", location=os.path.join(keys, AUTHORIZED))
    public, secret = load_server_keys(keys)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    return authenticator
