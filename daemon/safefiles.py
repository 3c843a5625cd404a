"""Opening the files nstore keeps next to a data file without writing through planted links.

Anyone who can write the data file's directory could plant a symlink (or a
hard link) where nstore creates its lock, journal, repair, kept-journal and
log files, and make it overwrite the link's target. Every such file is opened
here: never through a symlink (``O_NOFOLLOW``), only as a regular file with no
other hard link, and new files only with ``O_EXCL``. A planted link is refused
with a :class:`PlantedLinkError` naming it.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class PlantedLinkError(OSError):
    """A symlink, hard link or non-regular file sits where nstore keeps one of its own files."""

    def __init__(self, path: str, what: str = "is a symbolic link"):
        super().__init__(errno.ELOOP, f"{path} {what}; nstore does not write through it (remove it if it is not yours)", path)

    def __str__(self) -> str:
        return self.strerror


def open_file(path: str, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that refuses a symlink at ``path`` and, once open, anything but a lone regular file."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) or (exc.errno == errno.EEXIST and os.path.islink(path)):
            raise PlantedLinkError(path) from None
        raise
    try:
        _check_lone_regular(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_new(path: str, mode: int = 0o600) -> int:
    """A new, empty file at ``path`` (``O_EXCL``): FileExistsError if anything is there already."""
    return open_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)


def open_append(path: str):
    """A binary file object appending to ``path`` (created 0600 if missing), e.g. a log."""
    return os.fdopen(open_file(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab")


def copy_new(source: str, target: str) -> str:
    """Copy ``source`` into a new file: ``target``, or ``target.1``, ... if that is taken; the name used.

    Never overwrites or follows anything: a link at ``target`` is refused.
    """
    name, n = target, 0
    while True:
        try:
            fd = create_new(name)
            break
        except FileExistsError:
            n += 1
            name = f"{target}.{n}"
    with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out)
    return name


def refuse_link(path: str) -> None:
    """PlantedLinkError if a symlink sits at ``path`` (checked before a path is handed to a library)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise PlantedLinkError(path)
    _check_lone_regular(path, info)


def _check_lone_regular(path: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        if stat.S_ISCHR(info.st_mode):  # /dev/null as a log is fine: nothing to overwrite
            return
        raise PlantedLinkError(path, "is not a regular file")
    if info.st_nlink > 1:
        raise PlantedLinkError(path, f"has {info.st_nlink - 1} other hard link(s)")
