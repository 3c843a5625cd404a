"""One daemon per file: an flock'd lock file next to the data file.

The kernel drops an flock when its process dies, even by SIGKILL, so a stale
lock file never blocks a new daemon; its JSON content (pid, endpoint) names
the running daemon in the error a second one gives.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

from nstore.protocol.endpoints import lock_path


class AlreadyServedError(RuntimeError):
    """Another live daemon holds the file."""


class DaemonLock:
    def __init__(self, file_name: str):
        self.path = lock_path(file_name)
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                info = _read(self.path)
                raise AlreadyServedError(
                    f"{self.path[: -len('.nstored')]} is already served by nstored "
                    f"(pid {info.get('pid', '?')}, endpoint {info.get('endpoint', '?')})"
                ) from None
            # A daemon that was releasing may have unlinked the file between our open and
            # flock: a lock on that deleted file excludes nobody. Retry on the current one.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        self._fd = fd

    def record(self, endpoint: str, file_name: str) -> None:
        """Write who we are into the lock file (after the socket is bound)."""
        info = {"pid": os.getpid(), "endpoint": endpoint, "file": file_name,
                "host": socket.gethostname(), "started": time.time()}
        data = json.dumps(info).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None


def _same_file(fd: int, path: str) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _read(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}
