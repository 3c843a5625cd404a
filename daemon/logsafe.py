"""Escaping request data in nstored's log: a newline in a path must not forge a log line.

A filter on the ``nstored`` logger rewrites every string (and exception) argument
of a record, and its message, so that control characters -- line breaks above
all -- appear as ``\\n``, ``\\x1b``, ``\\u2028`` instead of acting.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """``text`` with every control character written as a backslash escape."""
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def _escape_arg(arg: Any) -> Any:
    if isinstance(arg, str):
        return escape(arg)
    if isinstance(arg, BaseException):
        return escape(str(arg))
    return arg


class EscapeControlCharacters(logging.Filter):
    """Escapes control characters in a record's message and string/exception arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = escape(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_escape_arg(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _escape_arg(value) for key, value in record.args.items()}
        return True


def install(logger: logging.Logger) -> None:
    """Add the filter to ``logger`` once."""
    if not any(isinstance(f, EscapeControlCharacters) for f in logger.filters):
        logger.addFilter(EscapeControlCharacters())
