"""A readable tree of what a store holds, through any driver (used by the demo and `nstore inspect`)."""

from __future__ import annotations

from typing import Any, Iterator

from nstore.protocol.api import StorageDriver


def walk(driver: StorageDriver, path: str = "") -> Iterator[tuple[str, dict | None]]:
    """``(path, info)`` for every directory (info None) and variable below ``path``, depth first."""
    for name in driver.list_directory(path):
        child = f"{path}/{name}" if path else name
        try:
            info = driver.variable_info(child)
        except (KeyError, TypeError):  # a directory
            yield child, None
            yield from walk(driver, child)
        else:
            yield child, info


def describe(info: dict) -> str:
    """``appendable float x1000 [kilojoule/mole]``-style summary of one variable."""
    kind = "appendable" if info["appendable"] else "fixed"
    what = info["type"] if info["io_type"] not in ("numpy.ndarray", "quantity") else f"{info['io_type']}[{info['type']}]"
    shape = "" if info["shape"] in ([1], []) else " entry shape " + "x".join(map(str, info["shape"]))
    count = f" x{info['length']}" if info["appendable"] else ""
    unit = f" [{info['unit']}]" if info.get("unit") else ""
    return f"{kind} {what}{count}{shape}{unit}"


def tree_lines(driver: StorageDriver) -> list[str]:
    """The whole store as indented lines."""
    lines = [f"{driver.file_name}"]
    for path, info in walk(driver):
        depth = path.count("/")
        name = path.rsplit("/", 1)[-1]
        lines.append("  " * (depth + 1) + (f"{name}/" if info is None else f"{name}: {describe(info)}"))
    return lines


def tree(driver: StorageDriver) -> str:
    return "\n".join(tree_lines(driver))


def as_dict(driver: StorageDriver) -> dict[str, Any]:
    """Machine-readable form: path -> info (None for directories)."""
    return dict(walk(driver))
