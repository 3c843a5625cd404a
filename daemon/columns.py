"""Appends in columns: consecutive pipelined appends of alike values to one variable, as one op.

A client sends ``append_column`` with ``data``, the entries stacked along a new
first axis, ``kind`` (the entries' IODriver_Type: ``float``, ``int``,
``numpy.ndarray`` or ``quantity``) and, for quantities, ``unit``. Quantities of
a Python float or int stack to 1-D magnitudes, quantities of arrays to the
arrays stacked. The column is checked once, against the first entry as a
single append would have carried it, so it creates the same variable (same
Signature, same file) as appending the entries one by one; it is converted and
cast as a whole, and fails as a whole: nothing of it is stored then. Its
result is the index of its first entry; entry ``k`` lands at ``start + k``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nstore.protocol.messages import MAX_COLUMN_ROWS
from nstore.protocol.kinds.quantity import wire_quantity

from .conversion import unit_converter
from .engine import AppendReservation, _signature, _variable_path
from .format import VarState, write_block
from .kinds import check_compatible

_SCALAR_DTYPES = {"float": np.dtype(np.float64), "int": np.dtype(np.int64)}


def first_entry(path: str, args: dict) -> Any:
    """The column's first entry as a single append would carry it; ValueError naming ``path`` if the column is malformed."""
    data, kind, unit = args.get("data"), args.get("kind"), args.get("unit")
    if type(data) is not np.ndarray or data.ndim < 1 or not 1 <= len(data) <= MAX_COLUMN_ROWS:
        raise ValueError(f"{path}: append_column needs an array of 1 to {MAX_COLUMN_ROWS} entries along its first axis")
    if kind not in ("float", "int", "numpy.ndarray", "quantity"):
        raise ValueError(f"{path}: append_column cannot carry entries of kind {str(kind)[:40]!r}")
    if (unit is not None) != (kind == "quantity"):
        raise ValueError(f"{path}: append_column of {kind!r} entries {'needs' if unit is None else 'takes no'} unit")
    if kind in ("float", "int") or (kind == "quantity" and data.ndim == 1):  # one number per entry
        dtype = _SCALAR_DTYPES.get(kind, data.dtype)
        if data.ndim != 1 or data.dtype != dtype or dtype not in _SCALAR_DTYPES.values():
            raise ValueError(f"{path}: append_column of {kind!r} entries needs 1-D float64 or int64 data, "
                             f"not {data.ndim}-D {data.dtype}")
        entry = float(data[0]) if dtype.kind == "f" else int(data[0])
        return entry if unit is None else wire_quantity(entry, unit)
    if data.ndim < 2:
        raise ValueError(f"{path}: append_column of array entries needs data of at least 2 dimensions")
    if kind == "quantity" and data.dtype.kind not in "iuf":
        raise ValueError(f"{path}: quantity magnitudes must be integer or float numbers, not {data.dtype}")
    return data[0] if unit is None else wire_quantity(data[0], unit)


def prepare_column(engine: Any, path: str, args: dict) -> tuple[VarState, np.ndarray]:
    """Check a column against the variable at normalized ``path`` and encode it for the disk, all at once.

    Creates the variable on first use, as the first single append would, only
    once every check has passed. Returns the variable and the block of rows.
    """
    entry = first_entry(path, args)
    sig = _signature(path, entry)
    var = engine._variable(path)
    if var is not None and not var.appendable:
        raise TypeError(f"{path}: was stored with write(); it cannot be appended to")
    stored = sig if var is None else var.sig
    check_compatible(stored, sig, path, "append")
    data = args["data"]
    if sig.unit is not None and sig.unit != stored.unit:
        data = unit_converter(path, sig.unit, stored)(data)  # the whole column at once
    rows = np.asarray(data, dtype=stored.dtype)
    if var is None:
        var = engine._create(path, sig, appendable=True)
    return var, rows


def reserve_column(engine: Any, path: str, args: dict) -> AppendReservation:
    """Check a column and take its indices (written by ``commit()``, like any reservation); result: its start index."""
    path = _variable_path(path)
    engine._check_writable()
    var, rows = prepare_column(engine, path, args)
    return AppendReservation(path, var, rows, [var.length])


def put_column(engine: Any, path: str, args: dict) -> None:
    """Make entries ``index``, ``index + 1``, ... hold a journaled column (journal replay; idempotent).

    As ``put_entry``: overwrites what is stored, appends past the end, and
    reports a gap (an index beyond the end) rather than papering over it.
    """
    path = _variable_path(path)
    index = args["index"]
    var = engine._variable(path)
    length = 0 if var is None else var.length
    if index > length:
        raise ValueError(f"{path}: journal entry {index} but only {length} entries are stored")
    var, rows = prepare_column(engine, path, args)
    write_block(var, index, rows)
    var.length = max(var.length, index + len(rows))
