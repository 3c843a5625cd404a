"""connect(): a RemoteDriver for the daemon serving a file (started if asked) or at an endpoint."""

from __future__ import annotations

import subprocess
import sys

from nstore.protocol.endpoints import is_endpoint, real_path
from nstore.protocol.transport import WrongDaemonError, endpoint_for

from .remote import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_GRACE_S, DEFAULT_TIMEOUT_S, RemoteDriver

SPAWN_TIMEOUT_S = 60.0


def connect(target: str, *, spawn: bool = False, pipeline: bool = False, timeout: float = DEFAULT_TIMEOUT_S,
            connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S, grace: float = DEFAULT_GRACE_S,
            keys: str | None = None) -> RemoteDriver:
    """A driver talking to the daemon that serves ``target`` (a file path or an endpoint).

    With ``spawn=True`` and no daemon serving the file, start one (``nstored
    start``) and wait until it accepts connections. Without it, fail within
    ``connect_timeout`` seconds with a ConnectionError that says what to do.
    ``pipeline=True`` batches writes without waiting (see :class:`RemoteDriver`).
    If the daemon dies, calls wait up to ``grace`` seconds for it to be
    restarted and carry on; nothing acknowledged is lost or applied twice.
    ``keys``: the directory from ``nstored keygen`` for a CurveZMQ daemon
    (default: ``$NSTORE_KEYS``).
    """
    options = {"timeout": timeout, "connect_timeout": connect_timeout, "pipeline": pipeline, "grace": grace,
               "keys": keys}
    if is_endpoint(target):
        return RemoteDriver(target, **options)
    file_name = real_path(target)
    try:
        return RemoteDriver(endpoint_for(file_name), serves=file_name, **options)
    except WrongDaemonError:
        if not spawn:
            raise
    except ConnectionError as exc:
        if not spawn:
            raise ConnectionError(
                f"no nstored serves {file_name} ({exc}); start one with `nstored start {file_name}` "
                f"or use connect(..., spawn=True)"
            ) from None
    _spawn(file_name)
    return RemoteDriver(endpoint_for(file_name), serves=file_name, **options)


def _spawn(file_name: str) -> None:
    """Run ``nstored start FILE``; losing a start race to another process is fine."""
    result = subprocess.run([sys.executable, "-m", "nstore.daemon.cli", "start", file_name],
                            capture_output=True, text=True, timeout=SPAWN_TIMEOUT_S)
    if result.returncode != 0 and "already served" not in result.stderr:
        raise ConnectionError(f"could not start nstored for {file_name}: {result.stderr.strip()}")
