"""How much data an op carries, and the daemon's per-op limit on it."""

from __future__ import annotations

from typing import Any

import numpy as np

from nstore.protocol.messages import Op
from nstore.protocol.units import is_quantity

_SCALARS = frozenset({float, int, bool, type(None)})


def _payload_bytes(value: Any, limit: int = 1 << 62) -> int:
    """Bytes of data in ``value`` as it would be stored (arrays: nbytes; numbers: 8; text: its
    length), walking lists, tuples, dicts and quantities; stops counting once past ``limit``."""
    if type(value) in _SCALARS:
        return 8  # the common case
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, np.ndarray):
            total += item.nbytes
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (str, bytes)):
            total += len(item)
        elif is_quantity(item):
            stack.append(item.magnitude)
        elif item is not None:
            total += 8
    return total


def size_error(op: Op, limit: int) -> ValueError | None:
    """The error for a mutating op carrying more than ``limit`` bytes of data, else None."""
    size = _payload_bytes(op.args.get("data", op.args.get("value")), limit)
    if size <= limit:
        return None
    return ValueError(f"{op.path}: {op.name} carries at least {size} bytes of data; the daemon's limit is "
                      f"{limit} bytes ({limit / 2**20:g} MiB) per operation (nstored --max-array-mb)")
