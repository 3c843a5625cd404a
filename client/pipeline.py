"""Pipelined mode: the handle a pipelined append returns, batch sizing, and naming a failed op.

A batch leaves when it holds PIPELINE_MAX_OPS ops or PIPELINE_MAX_BYTES bytes,
or when its oldest op has waited PIPELINE_MAX_DELAY_S at the next call; at
most PIPELINE_WINDOW batches are unacknowledged before the next send blocks
(backpressure). Pipelined drivers are flushed at interpreter exit, because
ZeroMQ drops unsent messages when a process exits.
"""

from __future__ import annotations

import atexit
import sys
import weakref
from typing import TYPE_CHECKING, Any

from nstore.protocol import kinds
from nstore.protocol.errors import UnsupportedTypeError
from nstore.protocol.values import pack

if TYPE_CHECKING:
    from .remote import RemoteDriver

PIPELINE_MAX_OPS = 1024
PIPELINE_MAX_BYTES = 1024 * 1024
PIPELINE_MAX_DELAY_S = 0.005
PIPELINE_WINDOW = 8

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


@atexit.register
def _flush_at_exit() -> None:
    """ZeroMQ drops unsent messages when a process exits: send and confirm them first."""
    for driver in list(live_pipelines):
        try:
            driver.flush()
        except Exception as exc:  # at exit, report rather than raise
            print(f"nstore: pipelined operations to {driver.endpoint} failed at exit: {exc}", file=sys.stderr)
