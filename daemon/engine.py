"""NetCDFIODriver: the in-process driver API over one netCDF4 file (layout: format.py).

Values are checked against the stored signature (kinds.py) before anything is
created or written. Per-variable state (signature, length, netCDF handle) is
cached: this process is the file's only writer, so the cache stays true and the
hot path reads no attributes. The daemon's extra machinery is in daemon_engine.py.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import netCDF4
import numpy as np

from nstore.protocol.api import StorageDriver, StorageVariable
from nstore.protocol.errors import UnsupportedTypeError
from nstore.protocol.paths import check_name, normalize_path, split_path
from nstore.protocol.values import check_storable_type, type_name

from .conversion import unit_converter
from .format import (RESERVED_ATTRS, VarState, attribute_value, create_variable, last_unlimited, load_variable,
                     open_dataset, python_attribute, row, text_cell, write_block)
from .kinds import KINDS, TEXT, Signature, check_compatible, encode, signature
from .lock import refuse_if_served
from .textcodec import StoredTextError


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

    kinds = KINDS  # the registry reads decode with (the daemon's: DAEMON_KINDS)

    def __init__(self, file_name: str, access_mode: str | None = None):
        if access_mode not in (None, "w", "a", "r"):
            raise ValueError(f"access_mode must be None, 'w', 'a' or 'r', not {access_mode!r}")
        self.file_name = os.fspath(file_name)
        self.access_mode = access_mode
        self._ncfile: netCDF4.Dataset | None = None
        self._groups: dict[str, Any] = {}
        self._vars: dict[str, VarState] = {}
        self._next_unlimited: int | None = None  # found at the first creation (walks every group once)
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
        self._ncfile = open_dataset(self.file_name, mode)
        self._ncfile.set_auto_mask(False)
        self._groups = {"": self._ncfile}
        self._vars = {}
        self._next_unlimited = None
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
    def _variable(self, path: str) -> VarState | None:
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
        var = self._vars[path] = load_variable(path, ncvar)
        return var

    def _create(self, path: str, sig: Signature, appendable: bool) -> VarState:
        self._check_writable()
        if any(n == 0 for n in sig.row_shape):
            raise ValueError(f"{path}: cannot store shape {sig.row_shape}: NetCDF has no fixed zero-length axes")
        head, name = split_path(path)
        group = self._group(head, create=True, whole=path) if head else self.ncfile
        var = self._vars[path] = create_variable(self.ncfile, group, path, sig,
                                                 self._take_unlimited if appendable else None)
        return var

    def _take_unlimited(self) -> int:
        """The next K for an ``unlimited<K>`` dimension: numbered across the file in creation order."""
        if self._next_unlimited is None:
            self._next_unlimited = last_unlimited(self.ncfile) + 1
        self._next_unlimited += 1
        return self._next_unlimited - 1

    def _prepare(self, path: str, stored: Signature, data: Any, verb: str) -> Any:
        """Check ``data`` against the ``stored`` signature and return the entry to assign on disk.

        Everything that can fail happens here, before anything is created or written.
        """
        sig = _signature(path, data)
        check_compatible(stored, sig, path, verb)
        convert = None if sig.unit is None or sig.unit == stored.unit else unit_converter(path, sig.unit, stored)
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
            var.ncvar[index] = row(entry, var.sig)
            return
        if var is None:
            sig = _signature(path, data)
            entry = self._prepare(path, sig, data, "write")
            var = self._create(path, sig, appendable=False)
        elif var.appendable:
            raise TypeError(f"{path}: was stored with append(); use append() or write(..., at_index=i)")
        else:
            entry = self._prepare(path, var.sig, data, "write")
        var.ncvar[...] = entry if var.sig.dtype is not TEXT else text_cell(entry, var.ncvar.shape)

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
        return self._reserve(path, values).commit()

    def _reserve(self, path: str, values: Sequence[Any]) -> "AppendReservation":
        """Check and place entries without writing them (see AppendReservation)."""
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
        return AppendReservation(path, var, rows, results)

    def read_variable(self, path: str, index: int | slice | None = None) -> Any:
        try:
            return self._read_variable(path, index)
        except StoredTextError as exc:  # hostile or unreadable stored text: name the variable
            raise ValueError(f"{normalize_path(path)}: {exc}") from None

    def _read_variable(self, path: str, index: int | slice | None) -> Any:
        path = _variable_path(path)
        var = self._variable(path)
        if var is None:
            raise KeyError(f"{path}: no variable stored here")
        kind = self.kinds[var.sig.io_type]
        if not var.appendable:
            if index is not None:
                raise TypeError(f"{path}: was stored with write(); read() takes no index for it")
            return kind.decode_one(self._stored_entry(path, var, None), var.sig)
        if index is None:
            return kind.decode_many(self._stored_rows(path, var, 0, var.length), var.sig)
        if type(index) is slice:
            positions = range(*index.indices(var.length))
            if not positions:
                return kind.decode_many(self._stored_rows(path, var, 0, 0), var.sig)
            lo, hi = min(positions), max(positions) + 1
            rows = np.asarray(self._stored_rows(path, var, lo, hi))
            return kind.decode_many(rows[positions.start - lo :: positions.step], var.sig)
        return kind.decode_one(self._stored_entry(path, var, _check_index(path, index, var.length)), var.sig)

    def _stored_entry(self, path: str, var: VarState, index: int | None) -> Any:
        """Entry ``index`` of ``var`` as the file holds it (None: the value of a variable stored with write())."""
        return var.ncvar[...] if index is None else var.ncvar[index]

    def _stored_rows(self, path: str, var: VarState, lo: int, hi: int) -> Any:
        """Entries ``lo`` to ``hi`` (exclusive) of appendable ``var`` as the file holds them."""
        return var.ncvar[lo:hi]

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
        if not isinstance(name, str) or not name or RESERVED_ATTRS.match(name):
            raise ValueError(f"{path or '/'}: metadata name {name!r} is reserved or empty")
        check_name(f"{path or '/'}: metadata {name!r}", name)  # netCDF's name rules, as for paths
        value = attribute_value(value, path or "/", name)  # before the lookup: a bad value never waits
        self._target(path).setncattr(name, value)

    def read_metadata(self, path: str = "/") -> dict:
        path = normalize_path(path)
        target = self._target(path)
        return {
            name: python_attribute(target.getncattr(name))
            for name in target.ncattrs()
            if not RESERVED_ATTRS.match(name)
        }


class AppendReservation:
    """Appends checked and given their indices but not yet written: ``commit()`` or ``abort()``.

    ``results`` holds each entry's index (or exception); the indices are taken.
    ``commit()`` writes all entries with one slice assignment and returns the
    final results; ``abort()`` gives the indices back, writing nothing. The
    daemon journals between the two, so an append reaches the file only once
    it is in the journal. ``rows`` may also be one stacked block (an array whose
    first axis is the entries: a column, daemon/columns.py).
    """

    __slots__ = ("path", "var", "rows", "results", "start")

    def __init__(self, path: str, var: VarState | None, rows: list, results: list):
        self.path, self.var, self.rows, self.results = path, var, rows, results
        self.start = var.length if len(rows) else 0
        if len(rows):
            var.length += len(rows)

    def commit(self) -> list:
        if not len(self.rows):
            return self.results
        var = self.var
        try:
            write_block(var, self.start, self.rows)
        except Exception as exc:
            self.abort()
            error = OSError(f"{self.path}: writing {len(self.rows)} entries failed: {exc}")
            return [error if not isinstance(r, BaseException) else r for r in self.results]
        return self.results

    def abort(self) -> None:
        if len(self.rows):
            self.var.length = min(self.var.length, self.start)


# --- helpers ---------------------------------------------------------------------------------


def _signature(path: str, data: Any) -> Signature:
    """``signature(data)``, with errors naming ``path``."""
    try:
        return signature(data)
    except UnsupportedTypeError as exc:
        raise exc.at(path) from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _variable_path(path: str) -> str:
    path = normalize_path(path)
    if not path:
        raise ValueError("a variable needs a name; the root '/' is a directory")
    return path
