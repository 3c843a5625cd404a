"""Exceptions that cross the wire: how an error becomes a reply and back.

The remote driver must raise the same exception type with the same message as
the in-process driver would, so errors travel as ``{type, message, args}`` and
are rebuilt from a fixed allow-list (never by importing a name the peer sent).
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """A message that does not follow the nstore wire format."""


class UnsupportedTypeError(TypeError):
    """A value of a type nstore cannot store; ``type_name`` names the offender."""

    def __init__(self, type_name: str, path: str = ""):
        self.type_name = type_name
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}cannot store a value of type {type_name!r}")

    def at(self, path: str) -> "UnsupportedTypeError":
        """The same error, naming the path it happened at."""
        return UnsupportedTypeError(self.type_name, path)


# Types a reply may carry. Anything else arrives as RuntimeError with the
# original type's name in the message.
_PLAIN = {
    "KeyError": KeyError,
    "TypeError": TypeError,
    "ValueError": ValueError,
    "OSError": OSError,
    "IndexError": IndexError,
    "PermissionError": PermissionError,
    "ConnectionError": ConnectionError,
    "TimeoutError": TimeoutError,
    "RuntimeError": RuntimeError,
    "AttributeError": AttributeError,
    "ProtocolError": ProtocolError,
}


def error_to_wire(exc: BaseException) -> dict:
    """Describe ``exc`` for a reply: its type name, message and constructor args."""
    name = type(exc).__name__
    if name == "DimensionalityError":
        args = [str(exc.units1), str(exc.units2), str(exc.dim1), str(exc.dim2), str(exc.extra_msg)]
        return {"type": name, "message": str(exc), "args": args}
    if isinstance(exc, UnsupportedTypeError):
        return {"type": "UnsupportedTypeError", "message": str(exc), "args": [exc.type_name, exc.path]}
    if isinstance(exc, KeyError) and exc.args:
        return {"type": "KeyError", "message": str(exc.args[0]), "args": [str(exc.args[0])]}
    for base in _PLAIN.values():
        if type(exc) is base:
            return {"type": name, "message": str(exc), "args": [str(exc)]}
    # Keep the closest allowed base type so callers can still catch it.
    for base_name, base in _PLAIN.items():
        if isinstance(exc, base):
            return {"type": base_name, "message": str(exc), "args": [str(exc)]}
    return {"type": "RuntimeError", "message": f"{name}: {exc}", "args": [f"{name}: {exc}"]}


def error_from_wire(err: dict) -> BaseException:
    """Rebuild the exception a reply describes (unknown types become RuntimeError)."""
    if not isinstance(err, dict):
        return ProtocolError(f"malformed error reply: {err!r}")
    name = err.get("type")
    message = str(err.get("message", ""))
    args = err.get("args") or [message]
    if not isinstance(args, list):
        args = [message]
    if name == "DimensionalityError":
        from pint.errors import DimensionalityError

        return DimensionalityError(*[str(a) for a in args[:5]])
    if name == "UnsupportedTypeError" and len(args) == 2:
        return UnsupportedTypeError(str(args[0]), str(args[1]))
    cls = _PLAIN.get(name)
    if cls is None:
        return RuntimeError(f"{name}: {message}")
    return cls(*[str(a) for a in args[:1]])
