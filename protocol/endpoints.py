"""Where a file's daemon lives: default ipc endpoint, lock file, discovery.

The default endpoint is an ipc socket in a per-user 0700 directory, named from
a hash of the file's real path, so every process of the machine derives the
same name. The daemon also records ``{pid, endpoint, file}`` in a lock file
next to the data file (``run.nc.nstored``): ``connect("run.nc")`` reads it to
find tcp endpoints too, e.g. from another node on a shared file system.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

LOCK_SUFFIX = ".nstored"


def runtime_dir() -> str:
    """Per-user directory for sockets, created 0700 (refused if others can write to it)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not os.path.isdir(base) or not os.access(base, os.W_OK):
        base = tempfile.gettempdir()
    path = os.path.join(base, f"nstore-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{path}: socket directory must belong to you with mode 0700 (it is {oct(info.st_mode & 0o777)})")
    return path


def real_path(file_name: str) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(file_name))))


def default_endpoint(file_name: str) -> str:
    """``ipc://<runtime dir>/<hash of real path>.sock`` for this file."""
    digest = hashlib.sha256(real_path(file_name).encode()).hexdigest()[:24]
    return f"ipc://{os.path.join(runtime_dir(), digest)}.sock"


def lock_path(file_name: str) -> str:
    return real_path(file_name) + LOCK_SUFFIX


def read_lock(file_name: str) -> dict | None:
    """What the daemon serving ``file_name`` recorded, or None."""
    try:
        with open(lock_path(file_name), encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("endpoint"), str) else None


def is_endpoint(target: str) -> bool:
    return isinstance(target, str) and target.startswith(("ipc://", "tcp://", "inproc://"))


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs. An exited process its parent has not reaped yet (a
    zombie: a late-reaping container init or supervisor) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False  # no /proc (not Linux) or the process vanished: kill(0) said enough
    return state in (b"Z", b"X")
