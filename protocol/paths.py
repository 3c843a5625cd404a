"""Path syntax: what a directory or variable name may look like, checked once.

Both drivers call :func:`normalize_path` before touching anything, so a bad
path fails the same way in-process and through the daemon.

Names follow netCDF-4's rules (checked here so that a bad name fails with a
clear ValueError instead of an HDF5 error, or worse, a damaged file):

* at most :data:`MAX_NAME_BYTES` bytes of UTF-8 per name (netCDF's NC_MAX_NAME
  is 256, but a name of exactly 256 bytes makes the file unreadable for
  netCDF4-python);
* the first character is a letter, a digit, ``_`` or a non-ASCII character;
* no control characters, no leading or trailing whitespace;
* at the top level, none of the names the storage layout uses for its
  dimensions (``scalar``, ``iterable<N>``, ``unlimited<N>``): netCDF-4 keeps a
  dimension as a hidden dataset of that name in the root group, so a group or
  variable called like that collides with it and corrupts the file.
"""

from __future__ import annotations

import re

MAX_PATH_LENGTH = 1024
MAX_DEPTH = 32
MAX_NAME_BYTES = 255
# Dimension names of the on-disk layout: the root group holds those of top-level variables (and
# all of them in files of the classic layout), so no top-level group or variable may take them.
RESERVED_TOP_LEVEL = re.compile(r"^(scalar|iterable[0-9]+(_[0-9]+)?|unlimited[0-9]+)$")
_SHOWN = 80  # characters of a hostile path quoted in an error message


def _shown(path: str) -> str:
    return path if len(path) <= _SHOWN else f"{path[:_SHOWN]}..."


_NORMALIZED: dict[str, str] = {}  # path as given -> normalized: the same few paths arrive again and again
_MAX_REMEMBERED = 4096


def normalize_path(path: str) -> str:
    """``"/a//b/"``-style input is rejected; ``"/a/b"`` and ``"a/b/"`` become ``"a/b"``.

    The root is ``""``. Raises ValueError naming the path and the reason.
    """
    if type(path) is str:
        known = _NORMALIZED.get(path)
        if known is not None:
            return known
    normalized = _normalize(path)
    if len(_NORMALIZED) >= _MAX_REMEMBERED:
        _NORMALIZED.clear()
    _NORMALIZED[path] = normalized
    return normalized


def _normalize(path: str) -> str:
    if not isinstance(path, str):
        raise TypeError(f"path must be a str, not {type(path).__name__}")
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(f"{_shown(path)}: path longer than {MAX_PATH_LENGTH} characters")
    stripped = path.strip("/")
    if not stripped:
        return ""
    parts = stripped.split("/")
    if len(parts) > MAX_DEPTH:
        raise ValueError(f"{_shown(path)}: path deeper than {MAX_DEPTH} levels")
    for level, part in enumerate(parts):
        check_name(path, part, top_level=level == 0)
    return stripped


def check_name(path: str, part: str, top_level: bool = False) -> None:
    """ValueError naming ``path`` unless ``part`` is a name netCDF-4 stores safely."""
    if not part:
        raise ValueError(f"{_shown(path)}: empty path component")
    if part in (".", ".."):
        raise ValueError(f"{_shown(path)}: '{part}' is not allowed as a path component")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in part):
        raise ValueError(f"{_shown(path)}: control characters are not allowed in names")
    if part != part.strip():
        raise ValueError(f"{_shown(path)}: names may not start or end with whitespace")
    try:
        size = len(part.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{_shown(path)}: names must be valid unicode (no lone surrogates)") from None
    if size > MAX_NAME_BYTES:
        raise ValueError(f"{_shown(path)}: name longer than {MAX_NAME_BYTES} bytes")
    first = part[0]
    if first.isascii() and not (first.isalnum() or first == "_"):
        raise ValueError(f"{_shown(path)}: names must start with a letter, a digit or '_', not {first!r}")
    if top_level and RESERVED_TOP_LEVEL.match(part):
        raise ValueError(f"{_shown(path)}: '{part}' is reserved at the top level (a NetCDF dimension name)")


def split_path(path: str) -> tuple[str, str]:
    """``"a/b/c"`` -> ``("a/b", "c")``; the path must already be normalized."""
    head, _, name = path.rpartition("/")
    return head, name
