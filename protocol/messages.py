"""Requests and replies: the message schema both sides check.

A request is ``pack({"v": version, "id": n, "client": str, "ops": [[op, path, args], ...]})``
(one op for a synchronous call, many for a pipelined batch); the reply is
``pack({"id": n, "results": [[True, value] | [False, error], ...]})`` with one
result per op, in order. Array buffers ride as extra frames (see values.py).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from . import PROTOCOL_VERSION
from .errors import ProtocolError, error_to_wire
from .values import pack, unpack

MAX_OPS_PER_MESSAGE = 10_000
MAX_COLUMN_ROWS = 10_000  # entries one append_column may carry (its bytes: the daemon's per-op size limit)
MAX_CLIENT_ID_LENGTH = 128

# op name -> {argument name: allowed python types}. Values of "data"/"value"
# are checked by the storage engine; here only the envelope is.
_ANY = object
OPS: dict[str, dict[str, tuple]] = {
    "hello": {"version": (int,)},
    "get_variable": {},
    "get_directory": {"create": (bool,)},
    "list": {},
    "info": {},
    "write": {"data": (_ANY,), "at_index": (_ANY,)},  # index types: checked by the engine, same error as in-process
    "append": {"data": (_ANY,)},
    # Consecutive pipelined appends of alike values, stacked along a new first axis (daemon/columns.py);
    # "kind" is the entries' IODriver_Type, "unit" the unit string of quantities.
    "append_column": {"data": (_ANY,), "kind": (str,), "unit": (str,)},
    "read": {"index": (_ANY,)},
    "add_metadata": {"name": (str,), "value": (_ANY,)},
    "metadata": {},
    "sync": {},
    "status": {},
    "layout": {},  # dimensions, dtypes, shapes and raw attributes of a subtree (xarray backend)
    "shutdown": {},
}


class Op(NamedTuple):
    name: str
    path: str
    args: dict


class Request(NamedTuple):
    id: int
    client: str
    ops: list


def encode_request(request_id: int, client: str, ops: Sequence[Op | tuple]) -> list:
    """Frames of a request carrying ``ops`` (each ``(name, path, args)``)."""
    return pack({"v": PROTOCOL_VERSION, "id": request_id, "client": client, "ops": [list(op) for op in ops]})


def _shown(value: Any) -> str:
    """``repr(value)``, cut short: error replies and log lines quote hostile input."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:80]}..."


def decode_request(frames: Sequence[Any]) -> Request:
    """Parse and check a request; ProtocolError (and nothing else) says what is wrong with it.

    Requests are the daemon's to decode: quantities in them come back as WireQuantity
    (magnitude, unit string), which the storage engine takes as it takes pint Quantities.
    """
    header = unpack(frames, light=True)
    try:
        return _check_request(header)
    except ProtocolError:
        raise
    except Exception as exc:  # a check tripping over a hostile value must not become another error type
        raise ProtocolError(f"malformed request: {type(exc).__name__}: {exc}") from None


def _check_request(header: Any) -> Request:
    if not isinstance(header, dict):
        raise ProtocolError("request must be a map")
    version = header.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:  # (a numpy array here must not reach ``!=``)
        raise ProtocolError(f"protocol version mismatch: client speaks {_shown(version)}, "
                            f"daemon speaks {PROTOCOL_VERSION}")
    request_id, client, ops = header.get("id"), header.get("client", ""), header.get("ops")
    if type(request_id) is not int or request_id < 0:  # -1 is the reply id of a request that could not be read
        raise ProtocolError("request id must be a non-negative integer")
    if not isinstance(client, str) or len(client) > MAX_CLIENT_ID_LENGTH:
        raise ProtocolError("client id must be a short string")
    if not isinstance(ops, list) or not ops:
        raise ProtocolError("request must carry a non-empty list of ops")
    if len(ops) > MAX_OPS_PER_MESSAGE:
        raise ProtocolError(f"request carries {len(ops)} ops, more than the limit of {MAX_OPS_PER_MESSAGE}")
    return Request(request_id, client, [_check_op(op) for op in ops])


def _check_op(raw: Any) -> Op:
    if not (isinstance(raw, list) and len(raw) == 3):
        raise ProtocolError("each op must be [name, path, args]")
    name, path, args = raw
    schema = OPS.get(name) if isinstance(name, str) else None
    if schema is None:
        raise ProtocolError(f"unknown op {_shown(name)}")
    if not isinstance(path, str):
        raise ProtocolError(f"{name}: path must be a string")
    if not isinstance(args, dict):
        raise ProtocolError(f"{name}: args must be a map")
    for key, value in args.items():
        allowed = schema.get(key)
        if allowed is None:
            raise ProtocolError(f"{name}: unexpected argument {_shown(key)}")
        if allowed != (_ANY,) and not isinstance(value, allowed):
            raise ProtocolError(f"{name}: argument {key!r} has type {type(value).__name__}")
    return Op(name, path, args)


def encode_reply_body(request_id: int, body: list) -> list:
    """Frames of a reply from an already wire-shaped body."""
    try:
        return pack({"id": request_id, "results": body})
    except Exception as exc:  # a result we cannot encode must not kill the daemon
        return pack({"id": request_id, "results": [[False, error_to_wire(exc)] for _ in body]})


def decode_reply(frames: Sequence[Any]) -> tuple[int, list]:
    """``(request id, [(ok, value-or-error), ...])`` from reply frames."""
    reply = unpack(frames)
    if not isinstance(reply, dict) or type(reply.get("id")) is not int or not isinstance(reply.get("results"), list):
        raise ProtocolError("malformed reply")
    return reply["id"], reply["results"]
