"""NetCDFIODriver: the storage engine, the driver API over one netCDF4 file.

Groups are directories, one variable per stored object, an unlimited first
dimension for appendable variables; attributes follow the classic storage
layer (see :mod:`nstore.daemon.kinds`). Per-variable state (signature, length,
netCDF handle) is cached: this process is the file's only writer, so the cache
stays true and the hot path reads no attributes.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Sequence

import netCDF4
import numpy as np

from nstore.protocol.api import StorageDriver, StorageVariable
from nstore.protocol.errors import UnsupportedTypeError
from nstore.protocol.paths import check_name, normalize_path, split_path
from nstore.protocol.units import converter
from nstore.protocol.values import check_storable_type, type_name

from .kinds import KINDS, TEXT, Signature, check_compatible, encode, signature
from .lock import refuse_if_served
from .textcodec import StoredTextError

SUPPORTED_TYPES = "int, float, bool, str, list, tuple, dict, numpy.ndarray, numpy scalars, pint.Quantity"

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

_RESERVED_ATTRS = re.compile(r"^(IODriver_|nstore_|_)|^(type|units)$")
_UNLIMITED = re.compile(r"^unlimited(\d+)$")


def chunk_rows(sig: Signature) -> int:
    """Entries per chunk for an appendable variable with this signature."""
    if sig.dtype is TEXT:
        return TEXT_CHUNK_ROWS
    row_bytes = max(1, int(np.prod(sig.row_shape, dtype=np.int64)) * sig.dtype.itemsize)
    return max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // row_bytes))


class _Var:
    """Cached state of one variable on disk."""

    __slots__ = ("ncvar", "sig", "appendable", "length")

    def __init__(self, ncvar: Any, sig: Signature, appendable: bool):
        self.ncvar = ncvar
        self.sig = sig
        self.appendable = appendable
        self.length = ncvar.shape[0] if appendable else 1


def _check_index(path: str, index: Any, length: int) -> int:
    if type(index) is not int and not isinstance(index, np.integer):
        raise TypeError(f"{path}: index must be an int, not {type_name(index)}")
    index = int(index)
    if not -length <= index < length:
        raise ValueError(f"{path}: index {index} is out of range for {length} stored entries")
    return index % length


class NetCDFIODriver(StorageDriver):
    """In-process driver: reads and writes ``file_name`` directly with netCDF4.

    ``access_mode``: None (create or append), 'w' (create, clobbering), 'a'
    (the file must exist), 'r' (read-only).
    """

    def __init__(self, file_name: str, access_mode: str | None = None):
        if access_mode not in (None, "w", "a", "r"):
            raise ValueError(f"access_mode must be None, 'w', 'a' or 'r', not {access_mode!r}")
        self.file_name = os.fspath(file_name)
        self.access_mode = access_mode
        self._ncfile: netCDF4.Dataset | None = None
        self._groups: dict[str, Any] = {}
        self._vars: dict[str, _Var] = {}
        self._next_unlimited: int | None = None  # found on the first creation (walks every group once)
        self._opened = False
        self._open()

    # --- file ------------------------------------------------------------------------
    def _open(self) -> None:
        mode = self.access_mode
        if mode is None:
            mode = "a" if os.path.isfile(self.file_name) else "w"
        elif mode == "w" and self._opened:
            mode = "a"  # reopening after close() must never clobber
        if mode == "a" and not os.path.isfile(self.file_name):
            raise FileNotFoundError(f"{self.file_name}: no such file (access_mode 'a' needs an existing file)")
        if mode != "r":
            refuse_if_served(self.file_name)  # a second writer would corrupt the file
        try:
            self._ncfile = netCDF4.Dataset(self.file_name, mode, format="NETCDF4")
        except OSError as exc:
            raise OSError(f"{self.file_name}: cannot open as NetCDF4 ({exc})") from None
        self._ncfile.set_auto_mask(False)
        self._groups = {"": self._ncfile}
        self._vars = {}
        self._opened = True

    @property
    def ncfile(self) -> netCDF4.Dataset:
        """The open netCDF4 Dataset (reopened in append mode after close())."""
        if self._ncfile is None:
            if self.access_mode == "w":
                self.access_mode = "a"
            self._open()
        return self._ncfile

    def _check_writable(self) -> None:
        if self.access_mode == "r":
            raise PermissionError(f"{self.file_name}: opened read-only (access_mode 'r')")

    def sync(self) -> None:
        if self._ncfile is not None and self.access_mode != "r":
            self._ncfile.sync()

    def close(self) -> None:
        if self._ncfile is not None:
            self.sync()
            self._ncfile.close()
            self._ncfile = None
            self._groups, self._vars = {}, {}

    # --- directories ---------------------------------------------------------------------
    def _group(self, path: str, create: bool, whole: str | None = None) -> Any:
        """The group at normalized ``path``; creates missing levels when ``create``."""
        group = self._groups.get(path)
        if group is not None:
            return group
        ncfile = self.ncfile
        group, walked = ncfile, []
        for part in path.split("/"):
            walked.append(part)
            if part in group.groups:
                group = group.groups[part]
            elif part in group.variables:
                raise TypeError(f"{whole or path}: '{'/'.join(walked)}' is a variable, not a directory")
            elif create:
                self._check_writable()
                if part in group.dimensions:
                    raise ValueError(f"{whole or path}: '{'/'.join(walked)}' is a NetCDF dimension name there; "
                                     "choose another name")
                group = group.createGroup(part)
            else:
                raise KeyError(f"{whole or path}: no directory '{'/'.join(walked)}'")
        self._groups[path] = group
        return group

    def get_directory(self, path: str, create: bool = True) -> str:
        path = normalize_path(path)
        if path:
            self._group(path, create)
        return path

    def list_directory(self, path: str = "") -> list[str]:
        path = normalize_path(path)
        group = self._group(path, create=False) if path else self.ncfile
        return sorted([*group.groups, *group.variables])

    # --- variables -------------------------------------------------------------------------
    def _variable(self, path: str) -> _Var | None:
        """Cached state of the variable at normalized ``path``; None if nothing is stored there."""
        var = self._vars.get(path)
        if var is not None:
            return var
        head, name = split_path(path)
        try:
            group = self._group(head, create=False, whole=path) if head else self.ncfile
        except KeyError:
            return None
        if name in group.groups:
            raise TypeError(f"{path}: is a directory, not a variable")
        ncvar = group.variables.get(name)
        if ncvar is None:
            return None
        var = self._vars[path] = self._load(path, ncvar)
        return var

    def _load(self, path: str, ncvar: Any) -> _Var:
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
        _tune(ncvar)
        return _Var(ncvar, sig, appendable)

    def _create(self, path: str, sig: Signature, appendable: bool) -> _Var:
        self._check_writable()
        if any(n == 0 for n in sig.row_shape):
            raise ValueError(f"{path}: cannot store shape {sig.row_shape}: NetCDF has no fixed zero-length axes")
        head, name = split_path(path)
        group = self._group(head, create=True, whole=path) if head else self.ncfile
        if name in group.dimensions:
            raise ValueError(f"{path}: '{name}' is a NetCDF dimension name there; choose another name")
        dims, bases = [], []
        for n in sig.row_shape:
            base = "scalar" if (n == 1 and sig.io_type not in ("numpy.ndarray", "iterable") and sig.type_attr != "numpy.ndarray") else f"iterable{n}"
            # One name per axis (xarray refuses most work on (iterable3, iterable3)): iterable3, iterable3_1, ...
            dim = f"{base}_{bases.count(base)}" if base in bases else base
            bases.append(base)
            dims.append(self._dimension(group, name, dim, n))
        options: dict[str, Any] = {}
        if appendable:
            dims.insert(0, self._dimension(group, name, self._unlimited_name(group, name), None))
            rows = chunk_rows(sig)
            options["chunksizes"] = (rows, *sig.row_shape)
        if sig.dtype is not TEXT:
            options["fill_value"] = False
        ncvar = group.createVariable(name, sig.dtype, tuple(dims), **options)
        _tune(ncvar)
        attrs = {
            "IODriver_Type": sig.io_type,
            "type": sig.type_attr,
            "IODriver_Unit": sig.unit if sig.unit else "NoneType",
            "IODriver_Storage_Type": "variables",
            "IODriver_Appendable": int(appendable),
        }
        if sig.unit:
            attrs["units"] = sig.unit
        ncvar.setncatts(attrs)
        var = self._vars[path] = _Var(ncvar, sig, appendable)
        var.length = 0 if appendable else 1  # (a fixed variable always holds its one entry)
        return var

    def _dimension(self, group: Any, var_name: str, dim: str, size: int | None) -> str:
        """Dimension ``dim`` for a new variable ``var_name`` of ``group``, defined in that group.

        Dimensions live beside their variables (layout 2): a dimension shared by
        every variable of the file makes HDF5 rewrite its ever-growing list of
        users at each creation, which costs time and file space quadratic in
        the number of variables. A name already taken in the group by a
        variable or subgroup (or the new variable's own) falls back to the root,
        where older files keep theirs.
        """
        if dim in group.dimensions:
            return dim
        taken = dim == var_name or dim in group.variables or dim in group.groups
        target = self.ncfile if taken else group
        if dim not in target.dimensions:
            target.createDimension(dim, size)
        return dim

    def _unlimited_name(self, group: Any, var_name: str) -> str:
        """``unlimited<K>`` with K numbered across the file in creation order, free in ``group``."""
        if self._next_unlimited is None:
            self._next_unlimited = _last_unlimited(self.ncfile) + 1
        while True:
            name = f"unlimited{self._next_unlimited}"
            self._next_unlimited += 1
            if name != var_name and name not in group.variables and name not in group.groups:
                return name

    def _prepare(self, path: str, stored: Signature, data: Any, verb: str) -> Any:
        """Check ``data`` against the ``stored`` signature and return the entry to assign on disk.

        Everything that can fail happens here, before anything is created or written.
        """
        sig = _signature(path, data)
        check_compatible(stored, sig, path, verb)
        convert = None
        if sig.unit is not None and sig.unit != stored.unit:
            try:
                convert = converter(sig.unit, stored.unit)
            except Exception as exc:
                if type(exc).__name__ == "DimensionalityError":
                    exc.extra_msg = f" (storing at {path})"
                raise
            if stored.dtype is not TEXT and stored.dtype.kind in "iu":
                convert = _whole_numbers(convert, path, stored.unit)
        try:
            return encode(data, stored, convert)
        except UnsupportedTypeError as exc:  # e.g. a set inside a dict
            raise exc.at(path) from None

    def get_storage_variable(self, path: str) -> StorageVariable:
        path = _variable_path(path)
        if self._variable(path) is None:
            raise KeyError(f"{path}: no variable stored here")
        return StorageVariable(self, path)

    def create_storage_variable(self, path: str, py_type: type) -> StorageVariable:
        path = _variable_path(path)
        check_storable_type(py_type, path)
        return StorageVariable(self, path)

    def write_variable(self, path: str, data: Any, at_index: int | None = None) -> None:
        path = _variable_path(path)
        self._check_writable()
        var = self._variable(path)
        if at_index is not None:
            if var is None:
                raise OSError(f"{path}: cannot write at index {at_index}: nothing has been stored here yet")
            if not var.appendable:
                raise TypeError(f"{path}: was stored with write(), so it has no entries to write at_index")
            entry = self._prepare(path, var.sig, data, "write")
            index = _check_index(path, at_index, var.length)
            var.ncvar[index] = _row(entry, var.sig)
            return
        if var is None:
            sig = _signature(path, data)
            entry = self._prepare(path, sig, data, "write")
            var = self._create(path, sig, appendable=False)
        elif var.appendable:
            raise TypeError(f"{path}: was stored with append(); use append() or write(..., at_index=i)")
        else:
            entry = self._prepare(path, var.sig, data, "write")
        var.ncvar[...] = entry if var.sig.dtype is not TEXT else _text_cell(entry, var.ncvar.shape)

    def write_entries(self, path: str, start: int, values: Sequence[Any]) -> None:
        """Overwrite entries ``start``, ``start + 1``, ... of an appendable variable with one slice write.

        All or nothing: the daemon coalesces a run of ``write(..., at_index=i)``
        into this, and replays the writes one by one if it raises, so that each
        gets its own exact error.
        """
        path = _variable_path(path)
        self._check_writable()
        var = self._variable(path)
        if var is None or not var.appendable or start < 0 or start + len(values) > var.length:
            raise ValueError(f"{path}: entries {start}..{start + len(values) - 1} are not all stored")
        rows = [self._prepare(path, var.sig, data, "write") for data in values]
        _write_rows(var.ncvar, start, _block(rows, var.sig))

    def append_variable(self, path: str, data: Any) -> int:
        result = self.append_many(path, [data])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def append_many(self, path: str, values: Sequence[Any]) -> list:
        """Append several entries with one slice write; per entry its index or its exception.

        An entry that fails its checks gets its exception and takes no index;
        the others land.
        """
        results, commit = self.prepare_appends(path, values)
        return commit()

    def prepare_appends(self, path: str, values: Sequence[Any]) -> tuple[list, Callable[[], list]]:
        """Check and place entries without writing them: ``(results, commit)``.

        ``results`` holds each entry's index (or exception) and the indices are
        reserved; ``commit()`` writes all entries with one slice assignment and
        returns the final results. The daemon journals between the two, so an
        append reaches the file only once it is in the journal.
        """
        path = _variable_path(path)
        self._check_writable()
        var = self._variable(path)
        results: list = []
        rows: list = []
        for data in values:
            try:
                if var is None:
                    sig = _signature(path, data)
                    entry = self._prepare(path, sig, data, "append")
                    var = self._create(path, sig, appendable=True)
                elif not var.appendable:
                    raise TypeError(f"{path}: was stored with write(); it cannot be appended to")
                else:
                    entry = self._prepare(path, var.sig, data, "append")
                rows.append(entry)
                results.append(var.length + len(rows) - 1)
            except Exception as exc:  # noqa: BLE001 - each entry gets its own error
                results.append(exc)
        if not rows:
            return results, lambda: results
        start = var.length
        var.length = start + len(rows)

        def commit() -> list:
            try:
                _write_rows(var.ncvar, start, _block(rows, var.sig))
            except Exception as exc:
                var.length = min(var.length, start)
                error = OSError(f"{path}: writing {len(rows)} entries failed: {exc}")
                return [error if not isinstance(r, BaseException) else r for r in results]
            return results

        return results, commit

    def read_variable(self, path: str, index: int | slice | None = None) -> Any:
        try:
            return self._read_variable(path, index)
        except StoredTextError as exc:  # hostile or unreadable stored text: name the variable
            raise ValueError(f"{normalize_path(path)}: {exc}") from None

    def _read_variable(self, path: str, index: int | slice | None = None) -> Any:
        path = _variable_path(path)
        var = self._variable(path)
        if var is None:
            raise KeyError(f"{path}: no variable stored here")
        kind = KINDS[var.sig.io_type]
        if not var.appendable:
            if index is not None:
                raise TypeError(f"{path}: was stored with write(); read() takes no index for it")
            return kind.decode_one(var.ncvar[...], var.sig)
        if index is None:
            return kind.decode_many(var.ncvar[: var.length], var.sig)
        if type(index) is slice:
            positions = range(*index.indices(var.length))
            if not positions:
                return kind.decode_many(var.ncvar[0:0], var.sig)
            lo, hi = min(positions), max(positions) + 1
            block = np.asarray(var.ncvar[lo:hi])[positions.start - lo :: positions.step] if positions.step > 0 else (
                np.asarray(var.ncvar[lo:hi])[positions.start - lo :: positions.step]
            )
            return kind.decode_many(block, var.sig)
        return kind.decode_one(var.ncvar[_check_index(path, index, var.length)], var.sig)

    def variable_info(self, path: str) -> dict:
        """Kind, type, entry shape, length and unit of a stored variable (for tools)."""
        path = _variable_path(path)
        var = self._variable(path)
        if var is None:
            raise KeyError(f"{path}: no variable stored here")
        return {
            "appendable": var.appendable,
            "io_type": var.sig.io_type,
            "type": var.sig.type_attr,
            "shape": list(var.sig.row_shape),
            "length": var.length,
            "unit": var.sig.unit,
        }

    def put_entry(self, path: str, index: int, data: Any) -> None:
        """Make entry ``index`` of appendable ``path`` hold ``data`` (journal replay; idempotent).

        Overwrites an existing entry, appends at the end, creates the variable
        for index 0. A gap (index beyond the end) means the journal and file
        disagree, which replay reports rather than papers over.
        """
        path = _variable_path(path)
        var = self._variable(path)
        length = 0 if var is None else var.length
        if index < length:
            self.write_variable(path, data, at_index=index)
        elif index == length:
            result = self.append_many(path, [data])[0]
            if isinstance(result, BaseException):
                raise result
        else:
            raise ValueError(f"{path}: journal entry {index} but only {length} entries are stored")

    @property
    def checkpoint_seq(self) -> int:
        """Sequence number of the last journaled batch the file holds (global attribute)."""
        try:
            return int(self.ncfile.getncattr("nstore_checkpoint_seq"))
        except AttributeError:
            return 0

    def checkpoint(self, seq: int, fsync: bool = False) -> None:
        """Record ``seq`` in the file and sync it: everything up to ``seq`` is now in the file.

        ``fsync`` also forces the file to the disk (netCDF's sync only reaches the
        OS page cache, which survives a crashed process but not a power loss).
        """
        self.ncfile.setncattr("nstore_checkpoint_seq", np.int64(seq))
        self.sync()
        if fsync:
            fd = os.open(self.file_name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # --- metadata ----------------------------------------------------------------------------
    def _target(self, path: str) -> Any:
        """The netCDF object (file, group or variable) at normalized ``path``."""
        if not path:
            return self.ncfile
        try:
            var = self._variable(path)
        except TypeError:  # a directory
            return self._group(path, create=False)
        if var is not None:
            return var.ncvar
        try:
            return self._group(path, create=False)
        except KeyError:
            raise KeyError(f"{path}: nothing stored here to hold metadata") from None

    def add_metadata(self, name: str, value: Any, path: str = "/") -> None:
        path = normalize_path(path)
        self._check_writable()
        if not isinstance(name, str) or not name or _RESERVED_ATTRS.match(name):
            raise ValueError(f"{path or '/'}: metadata name {name!r} is reserved or empty")
        check_name(f"{path or '/'}: metadata {name!r}", name)  # netCDF's name rules, as for paths
        value = _attribute_value(value, path or "/", name)  # before the lookup: a bad value never waits
        self._target(path).setncattr(name, value)

    def read_metadata(self, path: str = "/") -> dict:
        path = normalize_path(path)
        target = self._target(path)
        return {
            name: _python_attribute(target.getncattr(name))
            for name in target.ncattrs()
            if not _RESERVED_ATTRS.match(name)
        }


# --- helpers ---------------------------------------------------------------------------------


def _signature(path: str, data: Any) -> Signature:
    """``signature(data)``, with errors naming ``path``."""
    try:
        return signature(data)
    except UnsupportedTypeError as exc:
        raise exc.at(path) from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _whole_numbers(convert: Any, path: str, unit: str) -> Any:
    """``convert`` for a variable of integers: refuses results that are not whole numbers.

    (Without this, 3 centimeter appended to a variable of integer meters would be
    truncated to 0.)
    """

    def whole(magnitude: Any) -> np.ndarray:
        value = np.asarray(convert(magnitude), dtype=np.float64)
        rounded = np.rint(value)
        if not np.allclose(value, rounded, rtol=1e-9, atol=0.0):
            raise ValueError(f"{path}: the variable stores whole numbers of {unit}; {value.tolist()} {unit} is not")
        return rounded

    return whole


def _write_rows(ncvar: Any, start: int, block: np.ndarray) -> None:
    """``ncvar[start:start + len(block)] = block``, by netCDF4's low-level ``_put`` where it can.

    Slice assignment spends ~35 us per call in netCDF4's Python index
    arithmetic; appends know their start/count already, and ``_put`` takes them
    directly (~7 us). Text and anything unusual take the public path.
    """
    put = getattr(ncvar, "_put", None)
    if put is None or block.dtype == object or block.dtype != ncvar.dtype or not block.flags.c_contiguous:
        ncvar[start : start + len(block)] = block
        return
    first = np.zeros(block.ndim, dtype=np.intp)
    first[0] = start
    put(block, first, np.array(block.shape, dtype=np.intp), np.ones(block.ndim, dtype=np.intp))


def _tune(ncvar: Any) -> None:
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


def _last_unlimited(group: Any) -> int:
    """The largest K of the ``unlimited<K>`` dimensions in ``group`` and below (-1: none)."""
    numbers = [int(m.group(1)) for m in map(_UNLIMITED.match, group.dimensions) if m]
    return max([*numbers, *(_last_unlimited(child) for child in group.groups.values()), -1])


def _variable_path(path: str) -> str:
    path = normalize_path(path)
    if not path:
        raise ValueError("a variable needs a name; the root '/' is a directory")
    return path


def _text_cell(text: str, shape: tuple) -> np.ndarray:
    cell = np.empty(shape, dtype=object)
    cell[...] = text
    return cell


def _row(entry: Any, sig: Signature) -> Any:
    """One appendable entry shaped for ``ncvar[i] = ...``."""
    if sig.dtype is TEXT:
        return _text_cell(entry, sig.row_shape)
    return np.asarray(entry, dtype=sig.dtype).reshape(sig.row_shape)


def _block(rows: list, sig: Signature) -> np.ndarray:
    """Several entries stacked for one slice assignment."""
    if sig.dtype is TEXT:
        block = np.empty((len(rows), *sig.row_shape), dtype=object)
        block.reshape(len(rows), -1)[:, 0] = rows
        return block
    if len(rows) == 1:
        return np.asarray(rows[0], dtype=sig.dtype).reshape((1, *sig.row_shape))
    return np.asarray(rows, dtype=sig.dtype).reshape((len(rows), *sig.row_shape))


def _attribute_value(value: Any, path: str, name: str) -> Any:
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


def _python_attribute(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size != 1 else value.reshape(-1)[0].item()
    if isinstance(value, np.generic):
        return value.item()
    return value
