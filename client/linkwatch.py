"""Notice that a tcp connection to nstored is gone: ZeroMQ heartbeats plus a socket monitor.

A tcp client cannot watch the daemon's pid (it may run on another host), so it
asks ZeroMQ itself: the socket pings the daemon every ``HEARTBEAT_IVL_S`` and
drops the connection when nothing comes back within ``HEARTBEAT_TIMEOUT_S``
(a dead host, a pulled cable, a frozen daemon); a daemon that dies with its
host still up closes the connection at once. Either way the monitor reports a
disconnect, and because the socket never reconnects by itself (see
``RemoteDriver._sock``), a lost connection stays lost until the client opens a
fresh socket and resends in order.
"""

from __future__ import annotations

import zmq
from zmq.utils.monitor import recv_monitor_message

HEARTBEAT_IVL_S = 1.0
HEARTBEAT_TIMEOUT_S = 5.0  # also the TTL the daemon applies to us: it drops a client silent this long
_LOST = zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED  # closed: a connect that failed (never retried)


class LinkWatch:
    """Heartbeats on a tcp socket (set before it connects) and a monitor of its connection."""

    def __init__(self, sock: zmq.Socket):
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(HEARTBEAT_IVL_S * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(HEARTBEAT_TIMEOUT_S * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TTL, int(HEARTBEAT_TIMEOUT_S * 1000))
        self._socket = sock
        self._monitor = sock.get_monitor_socket(_LOST)
        self._lost = False

    def lost(self) -> bool:
        """True once the connection has dropped (or could not be made); it does not come back."""
        while not self._lost and self._monitor.poll(0):
            self._lost = bool(recv_monitor_message(self._monitor)["event"] & _LOST)
        return self._lost

    def close(self) -> None:
        """Stop monitoring (before the socket itself is closed)."""
        try:
            self._socket.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)
