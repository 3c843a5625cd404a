"""Path syntax: what a directory or variable name may look like, checked once.

Both drivers call :func:`normalize_path` before touching anything, so a bad
path fails the same way in-process and through the daemon.
"""

from __future__ import annotations

MAX_PATH_LENGTH = 1024
MAX_DEPTH = 32


def normalize_path(path: str) -> str:
    """``"/a//b/"``-style input is rejected; ``"/a/b"`` and ``"a/b/"`` become ``"a/b"``.

    The root is ``""``. Raises ValueError naming the path and the reason.
    """
    if not isinstance(path, str):
        raise TypeError(f"path must be a str, not {type(path).__name__}")
    if len(path) > MAX_PATH_LENGTH:
        raise ValueError(f"{path[:40]}...: path longer than {MAX_PATH_LENGTH} characters")
    stripped = path.strip("/")
    if not stripped:
        return ""
    parts = stripped.split("/")
    if len(parts) > MAX_DEPTH:
        raise ValueError(f"{path}: path deeper than {MAX_DEPTH} levels")
    for part in parts:
        if not part:
            raise ValueError(f"{path}: empty path component")
        if part in (".", ".."):
            raise ValueError(f"{path}: '{part}' is not allowed as a path component")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in part):
            raise ValueError(f"{path}: control characters are not allowed in names")
        if part != part.strip():
            raise ValueError(f"{path}: names may not start or end with whitespace")
    return stripped


def split_path(path: str) -> tuple[str, str]:
    """``"a/b/c"`` -> ``("a/b", "c")``; the path must already be normalized."""
    head, _, name = path.rpartition("/")
    return head, name
