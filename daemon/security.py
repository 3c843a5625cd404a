"""Who may talk to a daemon: private ipc sockets, loopback tcp, CurveZMQ beyond it.

* ipc: the socket's directory must belong to you (or root) and not be writable by
  others; the socket is 0600.
* tcp on loopback: allowed as is (only local users reach it).
* tcp on any other address: requires CurveZMQ keys (``nstored keygen DIR``), or
  ``--insecure`` for trusted networks, which warns loudly.

Authentication uses pyzmq's own ``zmq.auth.ThreadAuthenticator``: the server
accepts only clients whose public keys are in ``DIR/authorized``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("nstored")

SERVER_NAME, CLIENT_NAME, AUTHORIZED = "server", "client", "authorized"


def keygen(directory: str) -> dict[str, str]:
    """Create server and client key pairs in ``directory``; authorize the client key."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    authorized = os.path.join(directory, AUTHORIZED)
    os.makedirs(authorized, mode=0o700, exist_ok=True)
    server_public, server_secret = zmq.auth.create_certificates(directory, SERVER_NAME)
    client_public, client_secret = zmq.auth.create_certificates(directory, CLIENT_NAME)
    shutil.copy(client_public, authorized)
    for path in (server_secret, client_secret):
        os.chmod(path, 0o600)
    return {"server_public": server_public, "server_secret": server_secret,
            "client_public": client_public, "client_secret": client_secret, "authorized": authorized}


def is_loopback(endpoint: str) -> bool:
    host = urlsplit(endpoint.replace("tcp://", "tcp://", 1)).hostname or ""
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
    elif endpoint.startswith("tcp://") and not is_loopback(endpoint) and not keys:
        if not insecure:
            raise PermissionError(f"{endpoint} is reachable beyond this machine: give --keys DIR "
                                  f"(see `nstored keygen`) or, on a trusted network, --insecure")
        log.warning("INSECURE: %s accepts unauthenticated clients from the network", endpoint)


def load_server_keys(keys: str) -> tuple[bytes, bytes]:
    """The server's (public, secret) CurveZMQ keys from ``keys``; OSError naming what is missing."""
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
