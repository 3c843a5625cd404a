"""The daemon's ZeroMQ ROUTER socket: bind (ipc or tcp, Curve keys), drain what waits, reply, close."""

from __future__ import annotations

import logging
import os

import zmq

from nstore.protocol.transport import recv_frames, send_frames

from .security import secure_server

log = logging.getLogger("nstored")

HIGH_WATER_MARK = 8  # requests queued per peer before its sends block: bounds daemon memory
# plain ints: pyzmq's enum operators cost calls per turn
_EVENTS, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)


class Router:
    """A bound ROUTER socket; ``close()`` also removes the ipc socket file it bound."""

    def __init__(self, endpoint: str, keys: str | None, max_message_bytes: int):
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self._authenticator = None
        self.endpoint, self._bound, self._wait_ms = endpoint, False, -1
        try:
            self.socket.setsockopt(zmq.LINGER, 2000)
            self.socket.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
            # Replies are never dropped: a ROUTER silently discards messages to a peer
            # past its send HWM, and a client waiting for a lost reply would hang.
            # Reply volume is bounded by the clients' windows (one reply per request).
            self.socket.setsockopt(zmq.SNDHWM, 0)
            self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self.socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
            self._authenticator = secure_server(self.context, self.socket, keys) if keys else None
            self.endpoint, self._bound = self._bind(endpoint), True
        except BaseException:
            self.close()
            raise

    def _bind(self, endpoint: str) -> str:
        if endpoint.startswith("ipc://"):
            path = endpoint[len("ipc://"):]
            if os.path.exists(path):
                if _socket_alive(path):
                    raise OSError(f"{endpoint} is in use by another live process (another file's daemon?)")
                os.unlink(path)  # stale: nobody listens on it any more
            self.socket.bind(endpoint)
            os.chmod(path, 0o600)
            return endpoint
        self.socket.bind(endpoint)
        return self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def drain(self, wait_ms: int, max_messages: int, max_bytes: int) -> list:
        """The messages waiting, after waiting up to ``wait_ms`` for the first (none: ``[]``); up to
        ``max_messages`` or ``max_bytes``. One blocking receive, no poller; the rest end on the
        socket's EVENTS, so only an idle wait ends in an exception."""
        socket = self.socket
        if wait_ms != self._wait_ms:
            socket.setsockopt(zmq.RCVTIMEO, wait_ms)
            self._wait_ms = wait_ms
        try:
            frames = recv_frames(socket)
        except zmq.Again:
            return []
        batch, size = [frames], sum(len(f) for f in frames)
        while len(batch) < max_messages and size < max_bytes and int(socket.getsockopt(_EVENTS)) & _POLLIN:
            frames = recv_frames(socket, _NOBLOCK)
            batch.append(frames)
            size += sum(len(f) for f in frames)
        return batch

    def send(self, replies: list) -> None:
        """Send each ``(identity, frames)``; a reply to a client that left is dropped."""
        for identity, frames in replies:
            try:
                send_frames(self.socket, [identity, *frames])
            except zmq.ZMQError as exc:  # EHOSTUNREACH: the client left before its reply
                log.info("reply to a departed client dropped: %s", exc)

    def close(self) -> None:
        """Close the socket (and its authenticator); remove the ipc socket file we bound."""
        self.socket.close()
        if self._authenticator is not None:
            self._authenticator.stop()
        self.context.term()
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
