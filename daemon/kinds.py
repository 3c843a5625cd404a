"""The kinds of stored values, for the engine: re-exported from the registry in :mod:`nstore.protocol.kinds`.

Each kind (``KINDS[io_type]``) owns its signature, disk encoding and decoding
(``storage``, ``decode_one``, ``decode_many``); see that package to add one.
"""

from __future__ import annotations

from nstore.protocol.kinds import (
    DAEMON_KINDS,
    KINDS,
    TEXT,
    Kind,
    Signature,
    check_compatible,
    describe,
    encode,
    shape_text,
    signature,
)

__all__ = ["DAEMON_KINDS", "KINDS", "TEXT", "Kind", "Signature", "check_compatible", "describe", "encode", "shape_text", "signature"]
