"""Pipelined mode: the handle a pipelined append returns, columns, batch sizing, and naming a failed op.

A batch leaves when it holds PIPELINE_MAX_OPS ops (a column counts its
entries) or PIPELINE_MAX_BYTES bytes, or when its oldest op has waited
PIPELINE_MAX_DELAY_S at the next call; at most PIPELINE_WINDOW batches are
unacknowledged before the next send blocks (backpressure). Pipelined drivers
are flushed at interpreter exit, because ZeroMQ drops unsent messages when a
process exits.

Consecutive appends to one variable of alike values (:func:`column_key`) form
a :class:`Column`, sent as one ``append_column`` op carrying them stacked
(daemon/columns.py): one buffer frame, one journal entry, one block write.
Scalars are kept in a list and stacked when the batch is sent; arrays are
copied at once into the column's block (the caller may reuse its array), so a
column costs one copy per array, as a single queued append does.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from nstore.protocol import kinds
from nstore.protocol.errors import UnsupportedTypeError
from nstore.protocol.kinds.quantity import unit_text
from nstore.protocol.units import is_quantity
from nstore.protocol.values import pack

if TYPE_CHECKING:
    from .remote import RemoteDriver

PIPELINE_MAX_OPS = 1024
PIPELINE_MAX_BYTES = 1024 * 1024
PIPELINE_MAX_DELAY_S = 0.005
PIPELINE_WINDOW = 8

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
COLUMN_FIRST_ROWS = 16  # rows an array column's block holds at first (it doubles as it fills)

live_pipelines: "weakref.WeakSet[RemoteDriver]" = weakref.WeakSet()


class PendingIndex:
    """The index a pipelined append will land at, known once the daemon acknowledges it.

    ``result()`` (or ``int(...)``) waits for the acknowledgement, sending what
    is pending first; it raises the append's error if it failed.
    """

    __slots__ = ("_driver", "_value", "_error", "_done")

    def __init__(self, driver: "RemoteDriver"):
        self._driver = driver
        self._value: int | None = None
        self._error: BaseException | None = None
        self._done = False

    def done(self) -> bool:
        return self._done

    def result(self) -> int:
        if not self._done:
            self._driver._wait_for(self)
        if self._error is not None:
            self._driver._reported(self._error)
            raise self._error
        return self._value

    def __int__(self) -> int:
        return self.result()

    __index__ = __int__

    def _resolve(self, ok: bool, value: Any) -> None:
        self._done = True
        if ok:
            self._value = value
        else:
            self._error = value

    def __repr__(self) -> str:
        state = self._value if self._done and self._error is None else ("failed" if self._done else "pending")
        return f"<PendingIndex {state}>"


class ColumnIndex(PendingIndex):
    """The PendingIndex of entry ``row`` of a column: the column's start index plus ``row``."""

    __slots__ = ("_column", "_row")

    def __init__(self, column: "Column", row: int):
        self._column, self._row = column, row

    def done(self) -> bool:
        return self._column.finished

    def result(self) -> int:
        column = self._column
        if not column.finished:
            column.driver._wait_for(column)
        if column.error is not None:
            column.driver._reported(column.error)
            raise column.error
        return column.start + self._row

    def __repr__(self) -> str:
        column = self._column
        state = ("pending" if not column.finished else "failed" if column.error is not None
                 else column.start + self._row)
        return f"<PendingIndex {state}>"


def _storable(dtype: np.dtype, kinds_: str) -> bool:
    """Whether arrays of ``dtype`` can form a column (what the daemon stores: no float16, no structs)."""
    return dtype.kind in kinds_ and dtype.fields is None and (dtype.kind != "f" or dtype.itemsize in (4, 8))


def column_key(data: Any) -> tuple | None:
    """What appended values must share to travel in one column, None if ``data`` never does.

    A Python float or int (in int64), a numpy array (at least 1-D) of one
    shape and dtype, or a pint Quantity of those with one unit string.
    """
    cls = type(data)
    if cls is float or (cls is int and INT64_MIN <= data <= INT64_MAX):
        return (cls,)
    if cls is np.ndarray:
        return (cls, data.shape, data.dtype) if data.ndim and _storable(data.dtype, "biuf") else None
    if is_quantity(data):
        magnitude = data.magnitude
        mcls = type(magnitude)
        if mcls is float or (mcls is int and INT64_MIN <= magnitude <= INT64_MAX):
            return ("quantity", unit_text(data), mcls)
        if mcls is np.ndarray and magnitude.ndim and _storable(magnitude.dtype, "iuf"):
            return ("quantity", unit_text(data), magnitude.shape, magnitude.dtype)
    return None


class Column:
    """Consecutive pipelined appends to one variable of values alike (one :func:`column_key`).

    Entries go in ``values`` (numbers) or are copied into ``rows`` (arrays);
    ``room`` bounds how many the column takes. Sent as ``op()``: one
    ``append_column`` op, or a plain ``append`` if it holds one entry. It is
    its own handle in the driver's queues: ``_resolve`` gets its start index.
    """

    __slots__ = ("driver", "path", "key", "first", "unit", "scalar", "values", "rows", "filled", "room",
                 "row_bytes", "start", "error", "finished")

    def __init__(self, driver: "RemoteDriver", path: str, key: tuple, first: Any, room: int):
        self.driver, self.path, self.key, self.first, self.room = driver, path, key, first, room
        self.unit = key[1] if key[0] == "quantity" else None
        magnitude = first if self.unit is None else first.magnitude
        self.scalar = key[0] if key[0] in (float, int) else None  # plain numbers: the driver's fast path
        self.values: list | None = None
        self.rows: np.ndarray | None = None
        self.row_bytes = 8
        if type(magnitude) is np.ndarray:
            self.row_bytes = magnitude.nbytes
            fit = max(1, PIPELINE_MAX_BYTES // max(1, magnitude.nbytes))
            self.rows = np.empty((min(room, fit, COLUMN_FIRST_ROWS), *magnitude.shape), magnitude.dtype)
        else:
            self.values = []
        self.filled = 0  # rows used in ``rows``
        self.start = self.error = None
        self.finished = False

    def __len__(self) -> int:
        return self.filled if self.values is None else len(self.values)

    def add(self, data: Any) -> ColumnIndex:
        """Take one more entry (of this column's key); its handle."""
        magnitude = data if self.unit is None else data.magnitude
        if self.values is not None:
            self.values.append(magnitude)
            return ColumnIndex(self, len(self.values) - 1)
        row, rows = self.filled, self.rows
        if row == len(rows):
            self.rows = np.empty((min(self.room, 2 * row), *rows.shape[1:]), rows.dtype)
            self.rows[:row] = rows
        self.rows[row] = magnitude  # the copy: the caller may reuse its array
        self.filled = row + 1
        return ColumnIndex(self, row)

    def op(self) -> tuple:
        """The op that carries this column: ``append_column``, or ``append`` for a single entry."""
        if len(self) == 1:
            magnitude = self.values[0] if self.values is not None else self.rows[0]
            value = magnitude if self.unit is None else type(self.first)(magnitude, self.first.units)
            return ("append", self.path, {"data": value})
        if self.values is not None:
            data = np.array(self.values, dtype=np.float64 if type(self.values[0]) is float else np.int64)
        else:
            data = self.rows[: self.filled]
        if self.unit is None:
            kind = "numpy.ndarray" if self.values is None else self.key[0].__name__
            return ("append_column", self.path, {"data": data, "kind": kind})
        return ("append_column", self.path, {"data": data, "kind": "quantity", "unit": self.unit})

    def done(self) -> bool:
        return self.finished

    def _resolve(self, ok: bool, value: Any) -> None:
        self.finished = True
        if ok:
            self.start = value
        else:
            self.error = value


class PendingBatch:
    """The ops a pipelined driver has not sent yet, with their handles; the last may be an open
    :class:`Column` that more alike appends join. ``take()`` empties it for sending."""

    __slots__ = ("ops", "handles", "count", "column", "nbytes", "since")

    def __init__(self) -> None:
        self.ops: list = []  # (name, path, args), or a Column
        self.handles: list = []  # per op: PendingIndex, Column or None
        self.count = 0  # entries, but those of the open column
        self.column: Column | None = None  # the open column: the last op, until another op comes
        self.nbytes = 0
        self.since = 0.0  # when the oldest op was queued

    def add(self, op: "tuple | Column", handle: Any, nbytes: int) -> None:
        """Queue one op; it closes the open column (which keeps its place)."""
        self._close_column()
        if not self.ops:
            self.since = time.monotonic()
        self.ops.append(op)
        self.handles.append(handle)
        self.count += 1
        self.nbytes += nbytes

    def open_column(self, driver: "RemoteDriver", path: str, key: tuple, data: Any) -> "Column":
        """The open column if ``data`` may join it, else a new one queued in its place."""
        column = self.column
        if column is None or column.path != path or column.key != key or len(column) >= column.room:
            column = Column(driver, path, key, data, PIPELINE_MAX_OPS - self.count)
            self.add(column, column, 0)
            self.count -= 1  # (counted by its length instead)
            self.column = column
        return column

    def _close_column(self) -> None:
        if self.column is not None:
            self.count += len(self.column)
            self.column = None

    def due(self) -> bool:
        """Whether the batch should leave now (size or age)."""
        column = self.column
        return (self.count + (len(column) if column is not None else 0) >= PIPELINE_MAX_OPS
                or self.nbytes >= PIPELINE_MAX_BYTES or time.monotonic() - self.since >= PIPELINE_MAX_DELAY_S)

    def take(self) -> tuple[list, list]:
        """``(ops, handles)`` to send (columns become their op), leaving the batch empty."""
        ops = [op.op() if type(op) is Column else op for op in self.ops]
        handles = self.handles
        self.__init__()
        return ops, handles


def checked(value: Any, path: str) -> Any:
    """A value to queue: one we cannot encode fails here, naming the path, not at a later send."""
    try:
        pack(value)  # cheap for scalars; arrays are not copied
    except UnsupportedTypeError as exc:
        raise exc.at(path) from None
    return value


def owned_copy(value: Any) -> Any:
    """A copy of array data the caller may reuse before a pipelined op is sent."""
    return kinds.owned(value)


def op_bytes(args: dict) -> int:
    """Bytes a pipelined op adds to its batch: its data as the daemon counts it, at least 64."""
    return max(64, kinds.payload_bytes(args.get("data", args.get("value")), PIPELINE_MAX_BYTES))


def name_operation(exc: BaseException, op: tuple) -> BaseException:
    """The same exception, its message saying which pipelined op failed."""
    name, path = op[0], op[1]
    if name == "append_column":
        name = f"append_column ({len(op[2]['data'])} appends)"
    note = f"pipelined {name} to {path!r} failed"
    if type(exc).__name__ == "DimensionalityError":
        exc.extra_msg = f"{exc.extra_msg} ({note})"
        return exc
    message = exc.args[0] if exc.args else ""
    try:
        return type(exc)(f"{note}: {message}")
    except Exception:
        exc.add_note(note)
        return exc


def _forget_columns() -> None:
    """In a forked child: no driver appends to its parent's open column (the next append checks the pid)."""
    for driver in list(live_pipelines):
        driver._batch.column = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_columns)


@atexit.register
def _flush_at_exit() -> None:
    """ZeroMQ drops unsent messages when a process exits: send and confirm them first."""
    for driver in list(live_pipelines):
        try:
            driver.flush()
        except Exception as exc:  # at exit, report rather than raise
            print(f"nstore: pipelined operations to {driver.endpoint} failed at exit: {exc}", file=sys.stderr)
