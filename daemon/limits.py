"""How much data an op carries or a read returns, and the daemon's limits on both.

An op carrying more than the limit is refused before anything is written. A
read whose reply would exceed it is refused too, suggesting a slice: the daemon
serves every client from one thread, so a single huge reply would stall the
others and grow the daemon without bound. Numeric reads are sized from the
variable's shape before anything is read; text (dicts, lists, str) cannot be,
so its decoded value is measured before it is encoded, walking at most
``limit / 8`` items (every item counts 8 bytes more than its data).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from nstore.protocol.kinds import payload_bytes
from nstore.protocol.messages import Op
from nstore.protocol.paths import normalize_path


def size_error(op: Op, limit: int) -> ValueError | None:
    """The error for a mutating op carrying more than ``limit`` bytes of data, else None."""
    size = payload_bytes(op.args.get("data", op.args.get("value")), limit)
    if size <= limit:
        return None
    return ValueError(f"{op.path}: {op.name} carries at least {size} bytes of data; the daemon's limit is "
                      f"{limit} bytes ({limit / 2**20:g} MiB) per operation (nstored --max-array-mb)")


TEXT_TYPES = frozenset({"str", "dict", "yaml"})  # IODriver_Type of variables stored as text
_ITEM_BYTES = 8  # what every number, container and string costs at least in a reply


def bounded_read(engine: Any, path: str, index: Any, limit: int) -> Any:
    """``engine.read_variable(path, index)``, or ValueError if its reply would exceed ``limit`` bytes."""
    info = engine.variable_info(path)
    count = _entries(info, index)
    row_items = math.prod(info["shape"])
    if info["io_type"] not in TEXT_TYPES:
        row_bytes = row_items * _itemsize(info["type"])
        if count * row_bytes > limit:
            raise _too_big(path, info, count, count * row_bytes, limit, row_bytes)
        return engine.read_variable(path, index)
    value = engine.read_variable(path, index)
    size = payload_bytes(value, limit, item_bytes=_ITEM_BYTES)
    if size > limit:
        raise _too_big(path, info, count, size, limit, max(1, size // max(1, count)))
    return value


def _entries(info: dict, index: Any) -> int:
    """How many entries the read returns (1 when the engine will refuse the index anyway)."""
    if not info["appendable"]:
        return 1
    if index is None:
        return info["length"]
    if type(index) is slice:
        try:
            return len(range(*index.indices(info["length"])))
        except (TypeError, ValueError):
            return 1
    return 1


@functools.lru_cache(maxsize=256)
def _itemsize(type_attr: str) -> int:
    try:
        return np.dtype(type_attr).itemsize  # numpy types, 'int', 'float', 'bool'
    except TypeError:
        return _ITEM_BYTES  # lists, tuples, quantities of arrays: at most 8 bytes per number


def _too_big(path: str, info: dict, count: int, size: int, limit: int, row_bytes: int) -> ValueError:
    what = f"{count} entries" if info["appendable"] else "it"
    hint = ""
    if info["appendable"]:
        rows = max(1, limit // max(1, row_bytes))
        hint = f"; read a slice instead, e.g. read(slice(0, {rows})) (nstore read --slice 0:{rows})"
    return ValueError(f"{normalize_path(path)}: reading {what} would reply at least {size} bytes, more than the daemon's limit "
                      f"of {limit} bytes ({limit / 2**20:g} MiB) per reply (nstored --max-array-mb){hint}")
