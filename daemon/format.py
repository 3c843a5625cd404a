"""The on-disk format: how a stored variable is laid out in the netCDF4 file.

Groups are directories; all dimensions live in the root group (``scalar``,
``iterable<N>``, one ``unlimited<K>`` per appendable variable); each variable
carries the classic storage layer's attributes (``IODriver_Type``, ``type``,
``IODriver_Unit``, ``IODriver_Storage_Type``, ``IODriver_Appendable``) plus CF
``units`` for quantities; appendable variables are chunked by
:func:`chunk_rows`. Metadata attributes are plain netCDF attributes.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from nstore.protocol.values import type_name

from .kinds import KINDS, TEXT, Signature

# Chunking rule for appendable variables: as many entries per chunk as fit in
# CHUNK_BYTES, at least 1 and at most MAX_CHUNK_ROWS. 1 MiB rows get 1-row
# chunks (big chunks halve bandwidth: each append rewrites a partial chunk);
# scalars get 4096-entry chunks (small chunks make reads and file size balloon).
CHUNK_BYTES = 256 * 1024
MAX_CHUNK_ROWS = 4096
TEXT_CHUNK_ROWS = 1024
# HDF5 chunk cache per variable. netCDF-C's default (64 MiB here) makes a daemon
# writing 1 MiB rows to 16 variables hold ~1 GiB; a chunk larger than the cache
# is written straight through, which is what appends of large rows want.
CHUNK_CACHE_BYTES = 1024 * 1024

RESERVED_ATTRS = re.compile(r"^(IODriver_|nstore_|_)|^(type|units)$")
_UNLIMITED = re.compile(r"^unlimited(\d+)$")
CHECKPOINT_ATTR = "nstore_checkpoint_seq"  # global attribute: the last journaled batch the file holds


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


def next_unlimited(ncfile: Any) -> int:
    """The number of the next ``unlimited<K>`` dimension in this file."""
    numbers = [int(m.group(1)) for m in map(_UNLIMITED.match, ncfile.dimensions) if m]
    return max(numbers, default=-1) + 1


def load_variable(path: str, ncvar: Any) -> VarState:
    """Read a stored variable's signature from its attributes and shape."""
    attrs = {name: ncvar.getncattr(name) for name in ncvar.ncattrs()}
    io_type = attrs.get("IODriver_Type")
    if io_type not in KINDS:
        raise TypeError(f"{path}: variable has IODriver_Type {io_type!r}, which nstore cannot read")
    appendable = bool(int(attrs.get("IODriver_Appendable", 0)))
    unit = attrs.get("IODriver_Unit")
    unit = None if unit in (None, "NoneType") else str(unit)
    dtype = TEXT if ncvar.dtype is str else np.dtype(ncvar.dtype)
    row_shape = tuple(ncvar.shape[1:] if appendable else ncvar.shape)
    sig = Signature(io_type, str(attrs.get("type", "")), row_shape, dtype, unit)
    tune(ncvar)
    return VarState(ncvar, sig, appendable)


def create_variable(ncfile: Any, group: Any, name: str, sig: Signature, unlimited: int | None) -> VarState:
    """Create variable ``name`` in ``group``: appendable along ``unlimited<K>`` when ``unlimited`` is K."""
    dims = []
    for n in sig.row_shape:
        dim = "scalar" if (n == 1 and sig.io_type not in ("numpy.ndarray", "iterable") and sig.type_attr != "numpy.ndarray") else f"iterable{n}"
        if dim not in ncfile.dimensions:
            ncfile.createDimension(dim, n)
        dims.append(dim)
    options: dict[str, Any] = {}
    if unlimited is not None:
        ncfile.createDimension(f"unlimited{unlimited}", None)
        dims.insert(0, f"unlimited{unlimited}")
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


def tune(ncvar: Any) -> None:
    """Plain ndarrays on read (no masking) and a small chunk cache."""
    ncvar.set_auto_mask(False)
    if ncvar.chunking() != "contiguous":
        ncvar.set_var_chunk_cache(size=CHUNK_CACHE_BYTES)


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
