"""The on-disk format: how a stored variable is laid out in the netCDF4 file.

Groups are directories. Dimensions (``scalar``, ``iterable<N>`` with
``iterable<N>_<k>`` for a repeated size, one ``unlimited<K>`` per appendable
variable) are defined in the group of the variables that use them ("layout 2";
files of layout 1, written before, keep theirs all in the root group and keep
reading and growing); each variable
carries the classic storage layer's attributes (``IODriver_Type``, ``type``,
``IODriver_Unit``, ``IODriver_Storage_Type``, ``IODriver_Appendable``) plus CF
``units`` for quantities; appendable variables are chunked by
:func:`chunk_rows`. Metadata attributes are plain netCDF attributes.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

from nstore.protocol.values import type_name

from .kinds import KINDS, TEXT, Signature

# Chunking rule for appendable variables: as many entries per chunk as fit in
# CHUNK_BYTES, at least 1 and at most MAX_CHUNK_ROWS. 1 MiB rows get 1-row
# chunks (big chunks halve bandwidth: each append rewrites a partial chunk).
# Scalars get 256-entry (2 KiB) chunks: a chunk is allocated whole at the first
# append, so a run with thousands of nearly empty variables pays one chunk
# each (a nearly empty scalar variable costs about 6 KiB of file), and 256
# entries per chunk still read a long trace in few reads.
CHUNK_BYTES = 256 * 1024
MAX_CHUNK_ROWS = 256
TEXT_CHUNK_ROWS = 256
# HDF5 chunk cache per variable: room for CACHED_CHUNKS chunks, at most
# CHUNK_CACHE_BYTES. netCDF-C's default (64 MiB, 1000 slots) makes a daemon
# writing 1 MiB rows to 16 variables hold ~1 GiB, and its hash table alone
# costs 8 KB per variable; a chunk larger than the cache is written straight
# through, which is what appends of large rows want.
CHUNK_CACHE_BYTES = 1024 * 1024
CACHED_CHUNKS = 2
CACHE_SLOTS = 7

RESERVED_ATTRS = re.compile(r"^(IODriver_|nstore_|_)|^(type|units)$")
_UNLIMITED = re.compile(r"^unlimited(\d+)$")
CHECKPOINT_ATTR = "nstore_checkpoint_seq"  # global attribute: the last journaled batch the file holds
MAX_ENTRY_BYTES = 1 << 36  # an entry declaring more (64 GiB) is a crafted or damaged file, not one nstore wrote


def chunk_rows(sig: Signature) -> int:
    """Entries per chunk for an appendable variable with this signature."""
    if sig.dtype is TEXT:
        return TEXT_CHUNK_ROWS
    row_bytes = max(1, int(np.prod(sig.row_shape, dtype=np.int64)) * sig.dtype.itemsize)
    return max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // row_bytes))


class VarState:
    """Cached state of one variable on disk: its netCDF handle, signature, kind and length."""

    __slots__ = ("ncvar", "sig", "appendable", "length")

    def __init__(self, ncvar: Any, sig: Signature, appendable: bool):
        self.ncvar = ncvar
        self.sig = sig
        self.appendable = appendable
        self.length = ncvar.shape[0] if appendable else 1


def last_unlimited(group: Any) -> int:
    """The largest K of the ``unlimited<K>`` dimensions in ``group`` and below (-1: none)."""
    numbers = [int(m.group(1)) for m in map(_UNLIMITED.match, group.dimensions) if m]
    return max([*numbers, *(last_unlimited(child) for child in group.groups.values()), -1])


def load_variable(path: str, ncvar: Any) -> VarState:
    """Read a stored variable's signature from its attributes and shape.

    A variable nstore did not write, or a crafted one, gets one ValueError
    naming it and what is wrong (tools list it as unreadable and carry on).
    """
    attrs = {name: ncvar.getncattr(name) for name in ncvar.ncattrs()}
    io_type = attrs.get("IODriver_Type")
    if not isinstance(io_type, str) or io_type not in KINDS:
        raise ValueError(f"{path}: IODriver_Type {io_type!r} is not a kind nstore knows; this variable cannot be read")
    appendable = _appendable(path, attrs.get("IODriver_Appendable", 0), ncvar)
    unit = attrs.get("IODriver_Unit")
    unit = None if unit in (None, "NoneType") else str(unit)
    dtype = TEXT if ncvar.dtype is str else np.dtype(ncvar.dtype)
    row_shape = tuple(ncvar.shape[1:] if appendable else ncvar.shape)
    entry_bytes = int(np.prod(row_shape, dtype=np.float64)) * (16 if dtype is TEXT else dtype.itemsize)
    if entry_bytes > MAX_ENTRY_BYTES:
        raise ValueError(f"{path}: declares entries of shape {row_shape} ({entry_bytes} bytes each), more than "
                         f"nstore stores ({MAX_ENTRY_BYTES} bytes): a crafted or damaged file")
    sig = Signature(io_type, str(attrs.get("type", "")), row_shape, dtype, unit)
    tune(ncvar)
    return VarState(ncvar, sig, appendable)


def _appendable(path: str, flag: Any, ncvar: Any) -> bool:
    """``IODriver_Appendable`` as a bool: it must be 0 or 1, and 1 needs an axis to append along."""
    if isinstance(flag, (bool, np.bool_)) or not isinstance(flag, (int, np.integer)) or flag not in (0, 1):
        raise ValueError(f"{path}: IODriver_Appendable is {python_attribute(flag)!r}, not 0 or 1")
    if flag and not ncvar.ndim:
        raise ValueError(f"{path}: IODriver_Appendable is 1 but the variable has no dimension to append along")
    return bool(flag)


def open_dataset(file_name: str, mode: str) -> Any:
    """``netCDF4.Dataset(file_name, mode)``; OSError naming the file if it does not open or is not NETCDF4
    (nstore's groups, strings and chunking need NETCDF4)."""
    import netCDF4

    try:
        ncfile = netCDF4.Dataset(file_name, mode, format="NETCDF4")
    except OSError as exc:
        raise OSError(f"{file_name}: cannot open as NetCDF4 ({exc})") from None
    if ncfile.data_model != "NETCDF4":
        model = ncfile.data_model
        ncfile.close()
        raise OSError(f"{file_name}: is a {model} file; nstore reads and writes NETCDF4 files only "
                      f"(convert it first, e.g. `nccopy -k netCDF-4 {file_name} new.nc`)")
    return ncfile


def create_variable(ncfile: Any, group: Any, path: str, sig: Signature,
                    unlimited: Callable[[], int] | None) -> VarState:
    """Create variable ``path`` in ``group``; appendable when ``unlimited`` (it numbers ``unlimited<K>``)."""
    name = path.rpartition("/")[2]
    if name in group.dimensions:
        raise ValueError(f"{path}: '{name}' is a NetCDF dimension name there; choose another name")
    dims, bases = [], []
    for n in sig.row_shape:
        base = "scalar" if (n == 1 and sig.io_type not in ("numpy.ndarray", "iterable") and sig.type_attr != "numpy.ndarray") else f"iterable{n}"
        # One name per axis (xarray refuses most work on (iterable3, iterable3)): iterable3, iterable3_1, ...
        dim = f"{base}_{bases.count(base)}" if base in bases else base
        bases.append(base)
        dims.append(_dimension(ncfile, group, name, dim, n))
    options: dict[str, Any] = {}
    if unlimited is not None:
        dims.insert(0, _dimension(ncfile, group, name, _unlimited_name(group, name, unlimited), None))
        options["chunksizes"] = (chunk_rows(sig), *sig.row_shape)
    if sig.dtype is not TEXT:
        options["fill_value"] = False
    ncvar = group.createVariable(name, sig.dtype, tuple(dims), **options)
    tune(ncvar)
    attrs = {
        "IODriver_Type": sig.io_type,
        "type": sig.type_attr,
        "IODriver_Unit": sig.unit if sig.unit else "NoneType",
        "IODriver_Storage_Type": "variables",
        "IODriver_Appendable": int(unlimited is not None),
    }
    if sig.unit:
        attrs["units"] = sig.unit
    ncvar.setncatts(attrs)
    var = VarState(ncvar, sig, unlimited is not None)
    var.length = 0 if var.appendable else 1  # (a fixed variable always holds its one entry)
    return var


def _dimension(ncfile: Any, group: Any, var_name: str, dim: str, size: int | None) -> str:
    """Dimension ``dim`` for a new variable ``var_name`` of ``group``, defined in that group.

    A dimension shared by every variable of the file makes HDF5 rewrite its
    ever-growing list of users at each creation, which costs time and file
    space quadratic in the number of variables. A name already taken in the
    group by a variable or subgroup (or the new variable's own) falls back to
    the root, where layout 1 keeps them all.
    """
    if dim in group.dimensions:
        return dim
    taken = dim == var_name or dim in group.variables or dim in group.groups
    target = ncfile if taken else group
    if dim not in target.dimensions:
        target.createDimension(dim, size)
    return dim


def _unlimited_name(group: Any, var_name: str, unlimited: Callable[[], int]) -> str:
    """``unlimited<K>`` for the next K that names nothing else in ``group``."""
    while True:
        name = f"unlimited{unlimited()}"
        if name != var_name and name not in group.variables and name not in group.groups:
            return name


def tune(ncvar: Any) -> None:
    """Plain ndarrays on read (no masking) and a chunk cache of a few chunks.

    The cache holds the chunk that appends are filling; chunks larger than the
    cache are written straight through, which is what large rows want.
    """
    ncvar.set_auto_mask(False)
    chunking = ncvar.chunking()
    if chunking != "contiguous":
        itemsize = 16 if ncvar.dtype is str else ncvar.dtype.itemsize
        chunk_bytes = int(np.prod(chunking, dtype=np.int64)) * itemsize
        ncvar.set_var_chunk_cache(size=min(CHUNK_CACHE_BYTES, CACHED_CHUNKS * chunk_bytes), nelems=CACHE_SLOTS)


def text_cell(text: str, shape: tuple) -> np.ndarray:
    """A text entry shaped for a string variable."""
    cell = np.empty(shape, dtype=object)
    cell[...] = text
    return cell


def row(entry: Any, sig: Signature) -> Any:
    """One appendable entry shaped for ``ncvar[i] = ...``."""
    if sig.dtype is TEXT:
        return text_cell(entry, sig.row_shape)
    return np.asarray(entry, dtype=sig.dtype).reshape(sig.row_shape)


def block(rows: list, sig: Signature) -> np.ndarray:
    """Several entries stacked for one slice assignment."""
    if sig.dtype is TEXT:
        stacked = np.empty((len(rows), *sig.row_shape), dtype=object)
        stacked.reshape(len(rows), -1)[:, 0] = rows
        return stacked
    if len(rows) == 1:
        return np.asarray(rows[0], dtype=sig.dtype).reshape((1, *sig.row_shape))
    return np.asarray(rows, dtype=sig.dtype).reshape((len(rows), *sig.row_shape))


def write_block(var: VarState, start: int, rows: list) -> None:
    """Entries ``start``, ``start + 1``, ... of ``var`` hold ``rows`` (one slice write)."""
    write_rows(var.ncvar, start, block(rows, var.sig))


def write_rows(ncvar: Any, start: int, data: np.ndarray) -> None:
    """``ncvar[start:start + len(data)] = data``, by netCDF4's low-level ``_put`` where it can.

    Slice assignment spends ~35 us per call in netCDF4's Python index
    arithmetic; appends know their start/count already, and ``_put`` takes them
    directly (~7 us). Text and anything unusual take the public path.
    """
    put = getattr(ncvar, "_put", None)
    if put is None or data.dtype == object or data.dtype != ncvar.dtype or not data.flags.c_contiguous:
        ncvar[start : start + len(data)] = data
        return
    first = np.zeros(data.ndim, dtype=np.intp)
    first[0] = start
    put(data, first, np.array(data.shape, dtype=np.intp), np.ones(data.ndim, dtype=np.intp))


def attribute_value(value: Any, path: str, name: str) -> Any:
    """``value`` as a netCDF attribute holds it (bools as int8); TypeError/ValueError otherwise."""
    if isinstance(value, bool) or isinstance(value, np.bool_):
        return np.int8(value)
    if isinstance(value, str) and "\x00" in value:  # netCDF would cut the text at the NUL
        raise ValueError(f"{path}: metadata {name!r} holds a NUL character")
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value)
        if arr.dtype.kind in "iuf" and arr.ndim == 1 and arr.size:
            return arr
        if arr.dtype.kind == "U" and arr.ndim == 1 and arr.size:
            return [str(x) for x in arr]
    raise TypeError(
        f"{path}: metadata {name!r} must be a str, number or 1-D list of numbers, not {type_name(value)}"
    )


def python_attribute(value: Any) -> Any:
    """A netCDF attribute as a plain Python value."""
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size != 1 else value.reshape(-1)[0].item()
    if isinstance(value, np.generic):
        return value.item()
    return value
