"""One-shot control requests (status, shutdown) from the nstored CLI to a daemon."""

from __future__ import annotations

from typing import Any

import zmq

from nstore.protocol.errors import error_from_wire
from nstore.protocol.messages import decode_reply, encode_request


def query(endpoint: str, op: str, timeout: float = 5.0, keys: str | None = None) -> Any:
    """Send one ``op`` and return its result; ConnectionError when nobody answers in time."""
    if endpoint.startswith("ipc://"):
        import os

        if not os.path.exists(endpoint[len("ipc://"):]):
            raise ConnectionError(f"no nstored listens at {endpoint}")
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if keys:
        from .security import secure_client

        secure_client(sock, keys)
    try:
        sock.connect(endpoint)
        sock.send_multipart(encode_request(1, "nstored-cli", [(op, "", {})]))
        if not sock.poll(int(timeout * 1000)):
            raise ConnectionError(f"no nstored answered at {endpoint} within {timeout:g} s")
        _, results = decode_reply(sock.recv_multipart())
    finally:
        sock.close()
    ok, value = results[0]
    if not ok:
        raise error_from_wire(value)
    return value
