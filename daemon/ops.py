"""Every op the daemon serves, declared once: what it does live, whether it mutates, how it is journaled and replayed.

The live loop (batch.py) and journal replay (recovery.py) both go through
:data:`OPS`; adding an op is one entry here (plus its argument schema in
protocol/messages.py and the client call).
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

from nstore.protocol import PROTOCOL_VERSION
from nstore.protocol.errors import ProtocolError
from nstore.protocol.kinds import payload_bytes
from nstore.protocol.transport import file_identity

from .columns import put_column
from .layout import layout
from .limits import bounded_read


class OpSpec(NamedTuple):
    """How the daemon handles one op."""

    mutates: bool  # changes the file: size-checked, journaled, counted in bytes_written
    apply: Callable[[Any, str, dict], Any] | None  # (server, path, args) -> reply value; None: applied in runs
    journal: Callable[[dict, Any], dict] | None = None  # (args, result) -> journaled args (mutating ops)
    replay: Callable[[Any, str, dict], None] | None = None  # (engine, path, journaled args): apply again


def _as_sent(args: dict, result: Any) -> dict:
    return args


def _on_engine(action: Callable[[Any, str, dict], Any]) -> Callable[[Any, str, dict], Any]:
    """A live handler applying ``action`` to the server's engine (shared by live ops and replay)."""
    return lambda server, path, args: action(server.engine, path, args)


def _write(engine: Any, path: str, args: dict) -> None:
    engine.write_variable(path, args.get("data"), args.get("at_index"))


def _add_metadata(engine: Any, path: str, args: dict) -> None:
    engine.add_metadata(args.get("name", ""), args.get("value"), path=path or "/")


def _get_directory(engine: Any, path: str, args: dict) -> str:
    return engine.get_directory(path, create=args.get("create", True))


def _get_variable(engine: Any, path: str, args: dict) -> None:
    engine.get_storage_variable(path)  # KeyError when absent


def _put_entry(engine: Any, path: str, args: dict) -> None:
    engine.put_entry(path, args["index"], args["data"])


def _hello(server: Any, path: str, args: dict) -> dict:
    version = args.get("version", PROTOCOL_VERSION)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version mismatch: client speaks {version}, daemon speaks {PROTOCOL_VERSION}")
    # file, dev, ino, host: clients check they reached the daemon of the file they meant
    return {"version": PROTOCOL_VERSION, "pid": os.getpid(), **file_identity(server.file_name)}


def _read(server: Any, path: str, args: dict) -> Any:
    value = bounded_read(server.engine, path, args.get("index"), server.max_array_bytes)  # no reply stalls the rest
    server.stats.bytes_read += payload_bytes(value)
    return value


def _layout(engine: Any, path: str, args: dict) -> dict:
    engine.flush()  # dimension lengths come from the file: it must hold every acknowledged append
    return layout(engine, path)


def _shutdown(server: Any, path: str, args: dict) -> dict:
    server.stop()
    return {"pid": os.getpid(), "file": server.file_name}  # `nstored stop` checks the lock for an unclean exit


OPS: dict[str, OpSpec] = {
    "hello": OpSpec(False, _hello),
    "get_variable": OpSpec(False, _on_engine(_get_variable)),
    "get_directory": OpSpec(True, _on_engine(_get_directory), _as_sent, _get_directory),
    "list": OpSpec(False, _on_engine(lambda engine, path, args: engine.list_directory(path))),
    "info": OpSpec(False, _on_engine(lambda engine, path, args: engine.variable_info(path))),
    "write": OpSpec(True, _on_engine(_write), _as_sent, _write),
    # Appends are applied in runs (indices reserved, written after the journal); journaled with their index.
    "append": OpSpec(True, None, lambda args, index: {"data": args.get("data"), "index": index}, _put_entry),
    # A column of appends (columns.py): applied in the same runs, journaled with its start index.
    "append_column": OpSpec(True, None, lambda args, start: {**args, "index": start}, put_column),
    "read": OpSpec(False, _read),
    "add_metadata": OpSpec(True, _on_engine(_add_metadata), _as_sent, _add_metadata),
    "metadata": OpSpec(False, _on_engine(lambda engine, path, args: engine.read_metadata(path or "/"))),
    "sync": OpSpec(False, _on_engine(lambda engine, path, args: engine.sync())),
    "status": OpSpec(False, lambda server, path, args: server.status()),
    "shutdown": OpSpec(False, _shutdown),
    "layout": OpSpec(False, _on_engine(_layout)),
}


def replay_op(engine: Any, name: str, path: str, args: dict) -> None:
    """Apply one journaled op again (journal replay)."""
    spec = OPS.get(name)
    if spec is None or spec.replay is None:
        raise ValueError(f"unknown journaled op {name!r}")
    spec.replay(engine, path, args)
