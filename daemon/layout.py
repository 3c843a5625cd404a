"""The NetCDF layout of a directory and everything below it, as plain data (the ``layout`` op).

xarray needs what the default netCDF4 engine sees -- dimension names, on-disk
dtype and shape, raw attributes -- to present a live store exactly as it would
present the closed file. One call describes a whole subtree, so through the
daemon it is one consistent cut: the lengths of appendable variables are those
at that instant.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nstore.protocol.paths import normalize_path

from .kinds import KINDS


def layout(engine: Any, path: str = "") -> dict:
    """``{group path: {"attrs": {...}, "variables": {name: {...}}}}`` for ``path`` and its subgroups.

    Per variable: ``dims``, ``shape`` (what is on disk now), ``dtype`` (numpy
    dtype string, or ``"str"`` for variable-length strings), raw ``attrs``, and
    ``readable`` (nstore knows its ``IODriver_Type``). KeyError if ``path`` is
    not a directory.
    """
    path = normalize_path(path)
    group = engine.ncfile
    if path:
        engine.get_directory(path, create=False)  # KeyError/TypeError naming the path
        for part in path.split("/"):
            group = group.groups[part]
    out: dict[str, dict] = {}
    _describe(group, path, out)
    return out


def _describe(group: Any, path: str, out: dict) -> None:
    out[path] = {"attrs": _attrs(group), "variables": {name: _variable(ncvar) for name, ncvar in group.variables.items()}}
    for name, child in group.groups.items():
        _describe(child, f"{path}/{name}" if path else name, out)


def _variable(ncvar: Any) -> dict:
    attrs = _attrs(ncvar)
    return {
        "dims": list(ncvar.dimensions),
        "shape": list(ncvar.shape),
        "dtype": "str" if ncvar.dtype is str else np.dtype(ncvar.dtype).str,
        "attrs": attrs,
        "readable": attrs.get("IODriver_Type") in KINDS,
    }


def _attrs(obj: Any) -> dict:
    return {name: obj.getncattr(name) for name in obj.ncattrs()}
