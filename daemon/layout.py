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
    _describe(engine, group, path, out)
    return out


def _describe(engine: Any, group: Any, path: str, out: dict) -> None:
    variables = {name: _variable(engine, ncvar, f"{path}/{name}" if path else name)
                 for name, ncvar in group.variables.items()}
    out[path] = {"attrs": _attrs(group), "variables": variables}
    for name, child in group.groups.items():
        _describe(engine, child, f"{path}/{name}" if path else name, out)


def _variable(engine: Any, ncvar: Any, path: str) -> dict:
    attrs = _attrs(ncvar)
    readable = attrs.get("IODriver_Type") in KINDS
    shape = list(ncvar.shape)
    if readable and shape and int(attrs.get("IODriver_Appendable", 0)):
        shape[0] = engine.variable_info(path)["length"]  # the entries reads see (the engine's count)
    return {
        "dims": list(ncvar.dimensions),
        "shape": shape,
        "dtype": "str" if ncvar.dtype is str else np.dtype(ncvar.dtype).str,
        "attrs": attrs,
        "readable": readable,
    }


def _attrs(obj: Any) -> dict:
    return {name: obj.getncattr(name) for name in obj.ncattrs()}
