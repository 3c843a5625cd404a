"""One daemon per file: flock'd lock files, one named after the data file, one after its inode.

The kernel drops an flock when its process dies, even by SIGKILL, so a stale
lock file never blocks a new daemon; its JSON content (pid, endpoint) names
the running daemon in the error a second one gives. The lock next to the data
file (``run.nc.nstored``) is how clients find the daemon; the second one, in
the per-user runtime directory and named by the file's device and inode, also
catches a second daemon (or an in-process writer) reaching the same file
through another name, e.g. a hard link.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

from nstore.protocol.endpoints import lock_path, real_path, runtime_dir

from .safefiles import open_file

_HELD: set = set()  # (device, inode) and name-lock paths of the data files this process serves


class AlreadyServedError(RuntimeError):
    """Another live daemon holds the file."""


class DaemonLock:
    def __init__(self, file_name: str):
        self.file_name = real_path(file_name)
        self.path = lock_path(file_name)
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._inode_fd: int | None = None

    def acquire(self) -> None:
        """Take the name lock, and the inode lock if the file exists (else :meth:`record` takes it)."""
        fd = _flock(self.path)
        if fd is None:
            raise _served_error(self.file_name, _read(self.path))
        self._fd = fd
        _HELD.add(self.path)
        try:
            self._lock_inode()
        except BaseException:
            self.release()
            raise

    def _lock_inode(self) -> None:
        """Lock the data file's current inode (again, if a repair swapped in a new file)."""
        inode = file_id(self.file_name)
        if inode is None or inode == self._inode:
            return
        path = inode_lock_path(inode)
        fd = _flock(path)
        if fd is None:
            raise _served_error(self.file_name, _read(path))
        self._release_inode()
        self._inode, self._inode_fd = inode, fd
        _HELD.add(inode)
        _write(fd, {"pid": os.getpid(), "file": self.file_name})

    def record(self, endpoint: str, file_name: str) -> None:
        """Write who we are into the lock files (after the socket is bound and the file exists)."""
        self._lock_inode()
        info = {"pid": os.getpid(), "endpoint": endpoint, "file": file_name,
                "host": socket.gethostname(), "started": time.time()}
        for fd in (self._fd, self._inode_fd):
            if fd is not None:
                _write(fd, info)

    def release(self, exit_error: str | None = None) -> None:
        """Unlock and remove the lock files; with ``exit_error`` (the daemon did not close cleanly)
        the name lock stays behind saying why, for ``nstored stop`` to report (it blocks no one)."""
        self._release_inode()
        if self._fd is not None:
            _HELD.discard(self.path)
            if exit_error is None:
                _unlock(self.path, self._fd)
            else:
                try:
                    _write(self._fd, {"pid": os.getpid(), "file": self.file_name, "exit_error": exit_error})
                except OSError:
                    pass  # (a full disk) the lock still names this pid: `nstored stop` reports an unclean exit
                os.close(self._fd)
            self._fd = None

    def _release_inode(self) -> None:
        if self._inode_fd is not None:
            _HELD.discard(self._inode)
            _unlock(inode_lock_path(self._inode), self._inode_fd)
            self._inode, self._inode_fd = None, None


def unclean_exit(file_name: str, pid: int) -> str | None:
    """Why daemon ``pid``, now gone, did not exit cleanly, or None if it did (it removed its lock)."""
    info = _read(lock_path(file_name))
    if info.get("pid") != pid:
        return None
    return str(info.get("exit_error") or "it ended without closing the file or removing its lock (killed or crashed)")


def file_id(file_name: str) -> tuple[int, int] | None:
    """``(device, inode)`` of the file, or None if it does not exist."""
    try:
        info = os.stat(file_name)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def inode_lock_path(inode: tuple[int, int]) -> str:
    return os.path.join(runtime_dir(), f"file-{inode[0]}-{inode[1]}.lock")


def refuse_if_served(file_name: str) -> None:
    """AlreadyServedError naming the daemon if a live nstored (not this process) serves the file."""
    inode = file_id(file_name)
    if inode is None or inode in _HELD:
        return
    paths = [lock_path(file_name)]
    try:
        paths.insert(0, inode_lock_path(inode))
    except OSError:  # no usable runtime directory here: the name lock is all we can check
        pass
    for path in paths:
        if path not in _HELD and _is_locked(path):
            raise _served_error(real_path(file_name), _read(path), in_process=True)


def _served_error(file_name: str, info: dict, in_process: bool = False) -> AlreadyServedError:
    who = f"nstored (pid {info.get('pid', '?')}, endpoint {info.get('endpoint', '?')})"
    if in_process:
        return AlreadyServedError(f"{file_name} is served by {who}; writing it in-process would corrupt it. "
                                  f"Use nstore.connect({file_name!r}) to reach it through the daemon")
    other = info.get("file")
    via = f" as {other}" if isinstance(other, str) and other != file_name else ""
    return AlreadyServedError(f"{file_name} is already served by {who}{via}")


def _flock(path: str) -> int | None:
    """An fd holding an exclusive flock on the lock file ``path``; None if someone else holds it."""
    while True:
        fd = open_file(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # A daemon that was releasing may have unlinked the file between our open and
        # flock: a lock on that deleted file excludes nobody. Retry on the current one.
        if _same_file(fd, path):
            return fd
        os.close(fd)


def _is_locked(path: str) -> bool:
    """True if some process holds an flock on the existing file ``path`` (never creates it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _write(fd: int, info: dict) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)


def _unlock(path: str, fd: int) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.close(fd)


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
