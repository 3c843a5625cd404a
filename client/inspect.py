"""A readable tree of what a store holds, through any driver (used by the demo and `nstore inspect`).

Only the driver API is used (``list_directory``, ``variable_info``,
``read_metadata``), so the same code describes a file opened in-process and a
file served by nstored.
"""

from __future__ import annotations

from typing import Any, Iterator

from nstore.protocol import kinds
from nstore.protocol.api import StorageDriver


def walk(driver: StorageDriver, path: str = "") -> Iterator[tuple[str, dict | None]]:
    """``(path, info)`` for every directory (info None) and variable below ``path``, depth first.

    A variable nstore cannot read (a crafted or damaged file) comes as ``{"error": message}``.
    """
    for name in driver.list_directory(path):
        child = f"{path}/{name}" if path else name
        try:
            info = driver.variable_info(child)
        except (KeyError, TypeError):  # a directory
            yield child, None
            yield from walk(driver, child)
        except ValueError as exc:  # stored in a way nstore cannot read: say so, list the rest
            yield child, {"error": str(exc)}
        else:
            yield child, info


def python_type(info: dict) -> str:
    """The Python type ``read()`` gives for one entry: ``float``, ``numpy.ndarray[float32]``, ``pint.Quantity[float]``."""
    return kinds.python_type(info["io_type"], info["type"])


def describe(info: dict) -> str:
    """``appendable pint.Quantity[float] x1000 [kilojoule/mole]``-style summary of one variable."""
    kind = "appendable" if info["appendable"] else "fixed"
    shape = "x".join(map(str, info["shape"])) if kinds.has_shape(info["io_type"], info["type"]) else ""
    if info["appendable"]:
        size = f" x{info['length']}" + (f" of shape {shape}" if shape else "")
    else:
        size = f" shape {shape}" if shape else ""
    unit = f" [{info['unit']}]" if info.get("unit") else ""
    return f"{kind} {python_type(info)}{size}{unit}"


def entries(driver: StorageDriver, metadata: bool = True) -> list[dict[str, Any]]:
    """Every group and variable as a dict: ``path``, ``kind`` (group/fixed/appendable/unreadable), and for
    variables ``python_type``, ``io_type``, ``type``, ``shape``, ``length`` (appendable only), ``unit``, or
    ``error`` (unreadable); ``metadata`` too."""
    out = []
    for path, info in walk(driver):
        if info is not None and "error" in info:
            out.append({"path": path, "kind": "unreadable", "error": info["error"]})
            continue
        if info is None:
            entry: dict[str, Any] = {"path": path, "kind": "group"}
        else:
            entry = {"path": path, "kind": "appendable" if info["appendable"] else "fixed",
                     "python_type": python_type(info), "io_type": info["io_type"], "type": info["type"],
                     "shape": list(info["shape"]), "unit": info.get("unit")}
            if info["appendable"]:
                entry["length"] = info["length"]
        if metadata:
            entry["metadata"] = driver.read_metadata(path)
        out.append(entry)
    return out


def _metadata_lines(metadata: dict, indent: str) -> list[str]:
    return [f"{indent}@{name} = {value!r}" for name, value in metadata.items()]


def tree_lines(driver: StorageDriver, metadata: bool = True) -> list[str]:
    """The whole store as indented lines; metadata as ``@name = value`` under its owner."""
    lines = [f"{driver.file_name}"]
    if metadata:
        lines += _metadata_lines(driver.read_metadata("/"), "  ")
    for entry in entries(driver, metadata=metadata):
        depth = entry["path"].count("/")
        name = entry["path"].rsplit("/", 1)[-1]
        indent = "  " * (depth + 1)
        if entry["kind"] == "group":
            lines.append(f"{indent}{name}/")
        elif entry["kind"] == "unreadable":
            lines.append(f"{indent}{name}: UNREADABLE: {entry['error']}")
            continue
        else:
            lines.append(f"{indent}{name}: {describe_entry(entry)}")
        if metadata:
            lines += _metadata_lines(entry["metadata"], indent + "  ")
    return lines


def describe_entry(entry: dict) -> str:
    """:func:`describe` for an item of :func:`entries`."""
    info = {"appendable": entry["kind"] == "appendable", "io_type": entry["io_type"], "type": entry["type"],
            "shape": entry["shape"], "length": entry.get("length"), "unit": entry["unit"]}
    return describe(info)


def tree(driver: StorageDriver, metadata: bool = True) -> str:
    return "\n".join(tree_lines(driver, metadata=metadata))
