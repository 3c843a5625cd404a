"""Look at NetCDF files below the Python API: groups, dimensions, variables and exact attribute types.

netCDF4-python returns text attributes as ``str`` whether they are NC_CHAR or
NC_STRING on disk, so the attribute *types* come from libnetcdf itself (the
copy netCDF4-python loaded), through ctypes. Only used on closed files.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import netCDF4
import numpy as np

# netCDF external type codes (netcdf.h)
NC_NAMES = {1: "NC_BYTE", 2: "NC_CHAR", 3: "NC_SHORT", 4: "NC_INT", 5: "NC_FLOAT", 6: "NC_DOUBLE",
            7: "NC_UBYTE", 8: "NC_USHORT", 9: "NC_UINT", 10: "NC_INT64", 11: "NC_UINT64", 12: "NC_STRING"}
NC_GLOBAL = -1


@functools.lru_cache(maxsize=1)
def _libnetcdf() -> ctypes.CDLL:
    with open("/proc/self/maps", encoding="utf-8") as fh:
        paths = sorted({line.split()[-1] for line in fh if "libnetcdf" in line.split()[-1]})
    if len(paths) != 1:
        raise RuntimeError(f"expected netCDF4-python to have loaded one libnetcdf, found {paths}")
    return ctypes.CDLL(paths[0])


def _check(status: int, what: str) -> None:
    if status != 0:
        raise OSError(f"libnetcdf {what} failed with status {status}")


def attribute_types(path: str) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """``{(group, variable): [(attribute, "NC_CHAR"), ...]}`` in stored order; variable "" = the group itself.

    ``group`` is ``"/"`` for the root, else ``"/a/b"``.
    """
    layout = structure(path)
    lib = _libnetcdf()
    ncid = ctypes.c_int()
    _check(lib.nc_open(str(path).encode(), 0, ctypes.byref(ncid)), f"nc_open({path})")
    try:
        result: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for group, info in layout.items():
            gid = ctypes.c_int(ncid.value)
            if group != "/":
                _check(lib.nc_inq_grp_full_ncid(ncid, group.encode(), ctypes.byref(gid)), f"group {group}")
            targets = [("", NC_GLOBAL)]
            for name in info["variables"]:
                varid = ctypes.c_int()
                _check(lib.nc_inq_varid(gid, name.encode(), ctypes.byref(varid)), f"variable {name}")
                targets.append((name, varid.value))
            for name, varid in targets:
                natts = ctypes.c_int()
                if varid == NC_GLOBAL:
                    _check(lib.nc_inq_natts(gid, ctypes.byref(natts)), "nc_inq_natts")
                else:
                    _check(lib.nc_inq_varnatts(gid, varid, ctypes.byref(natts)), "nc_inq_varnatts")
                attrs = []
                buf = ctypes.create_string_buffer(512)
                for i in range(natts.value):
                    _check(lib.nc_inq_attname(gid, varid, i, buf), "nc_inq_attname")
                    xtype = ctypes.c_int()
                    _check(lib.nc_inq_atttype(gid, varid, buf.value, ctypes.byref(xtype)), "nc_inq_atttype")
                    attrs.append((buf.value.decode(), NC_NAMES.get(xtype.value, str(xtype.value))))
                result[(group, name)] = attrs
        return result
    finally:
        lib.nc_close(ncid)


def structure(path: str) -> dict[str, dict[str, Any]]:
    """Every group (``"/"``, ``"/a"``, ...) -> its dimensions, attributes and variables, read with netCDF4.

    Variables map to ``{dimensions, dtype, attrs (ordered list of (name, value)), data}``.
    """
    out: dict[str, dict[str, Any]] = {}
    with netCDF4.Dataset(str(path), "r") as ds:
        ds.set_auto_mask(False)

        def visit(group: Any, name: str) -> None:
            variables = {}
            for vname, var in group.variables.items():
                variables[vname] = {
                    "dimensions": var.dimensions,
                    "dtype": "string" if var.dtype is str else np.dtype(var.dtype).str,
                    "attrs": [(a, var.getncattr(a)) for a in var.ncattrs()],
                    "data": var[...],
                }
            out[name] = {
                "dimensions": {d: (len(dim), dim.isunlimited()) for d, dim in group.dimensions.items()},
                "attrs": [(a, group.getncattr(a)) for a in group.ncattrs()],
                "variables": variables,
            }
            for gname, sub in group.groups.items():
                visit(sub, f"{name.rstrip('/')}/{gname}")

        visit(ds, "/")
    return out
