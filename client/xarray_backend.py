"""xarray backend ``engine="nstore"``: open a store while nstored serves it, or the closed file.

``xr.open_dataset("run.nc", engine="nstore", group="replica0")`` and
``xr.open_datatree("run.nc", engine="nstore")`` go through the daemon serving
the file when there is one (``endpoint=``/``keys=`` for a remote daemon), else
read the file in-process, read-only. Either way the dataset is built from one
``layout`` cut -- dimension names, dtypes, shapes, raw attributes -- so it looks
exactly like the closed file opened with the default engine, and the lengths of
appendable variables are those of that instant. Data is lazy: indexing an
appendable variable reads only the entries indexed (one ``read(path, slice)``);
a fixed variable is read whole when first touched. Dict and mixed-list
variables (YAML text on disk) hold the decoded Python objects in an object
array. Loaded only by xarray (entry point), never by ``import nstore``.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterable

import numpy as np
from xarray import Dataset, Variable
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.backends.common import AbstractDataStore, datatree_from_dict_with_io_cleanup
from xarray.backends.store import StoreBackendEntrypoint
from xarray.coding.strings import create_vlen_dtype
from xarray.core import indexing

from nstore.protocol.units import is_quantity

DEFAULT_TIMEOUT_S = 60.0
OBJECT_KINDS = ("dict", "yaml")  # YAML text on disk, decoded objects in the dataset
OMITTED_ATTR = "nstore_omitted"  # names of variables nstore cannot read (foreign IODriver_Type)


class _Source:
    """One driver shared by the datasets of one open call; closed when the last of them closes."""

    def __init__(self, driver: Any):
        self.driver = driver
        self.users = 1  # datasets that still need the driver
        self._lock = threading.Lock()

    def layout(self, path: str) -> dict:
        if hasattr(self.driver, "layout"):  # RemoteDriver: one request, one cut
            return self.driver.layout(path)
        from nstore.daemon.layout import layout

        return layout(self.driver, path)

    def read(self, path: str, index: Any = None) -> Any:
        with self._lock:
            return self.driver.read_variable(path, index)

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            if self.users == 0:
                self.driver.close()


def open_driver(target: str, endpoint: str | None = None, keys: str | None = None,
                timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """A driver for ``target``: the daemon at ``endpoint``, else the one serving the file, else the file
    (read-only, in-process) -- the way ``nstore inspect/read/tail`` reach it."""
    from .cli import open_source

    return open_source(os.fspath(target), endpoint, timeout, keys)[0]


class NstoreArray(BackendArray):
    """One variable as the default engine would show it, read through the driver on demand."""

    def __init__(self, source: _Source, path: str, spec: dict):
        self.source = source
        self.path = path
        self.shape = tuple(spec["shape"])
        self.io_type = spec["attrs"].get("IODriver_Type")
        self.appendable = bool(int(spec["attrs"].get("IODriver_Appendable", 0)))
        if spec["dtype"] != "str":
            self.dtype = np.dtype(spec["dtype"])
        else:
            self.dtype = np.dtype(object) if self.io_type in OBJECT_KINDS else create_vlen_dtype(str)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._read)

    def _read(self, key: tuple) -> np.ndarray:
        if not self.appendable:
            return self._raw(self.source.read(self.path), self.shape)[key]
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            index = range(self.shape[0])[first]  # (IndexError beyond the cut)
            return self._rows(slice(index, index + 1))[(0, *rest)]
        return self._rows(first)[(slice(None), *rest)]

    def _rows(self, which: slice) -> np.ndarray:
        """Entries ``which`` of the cut (never beyond its length), fetched in one read."""
        positions = range(*which.indices(self.shape[0]))
        if not positions:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        lo, hi, step = min(positions), max(positions) + 1, abs(positions.step)
        rows = self._raw(self.source.read(self.path, slice(lo, hi, step)), (len(positions), *self.shape[1:]))
        return rows if positions.step > 0 else rows[::-1]

    def _raw(self, value: Any, shape: tuple) -> np.ndarray:
        """A read result (nstore's Python form) back in the on-disk form the default engine gives."""
        if is_quantity(value):
            value = value.magnitude
        if self.dtype.kind != "O":
            return np.asarray(value).astype(self.dtype, copy=False).reshape(shape)
        cells = np.empty(shape, dtype=self.dtype)
        flat = cells.reshape(-1)
        for i, item in enumerate(value if self.appendable else [value]):
            flat[i] = item
        return cells


class NstoreDataStore(AbstractDataStore):
    """One directory of the cut, as the store xarray's CF decoding reads."""

    def __init__(self, source: _Source, path: str, group: dict):
        self.source = source
        self.path = path
        self.group = group

    def get_variables(self) -> dict:
        """The variables CF decoding sees: all readable ones but those holding Python objects."""
        return {name: self._variable(name, spec) for name, spec in self.group["variables"].items()
                if spec["readable"] and not _holds_objects(spec)}

    def object_variables(self) -> dict:
        """Dict and mixed-list variables (decoded objects; CF decoding would peek into them)."""
        return {name: self._variable(name, spec) for name, spec in self.group["variables"].items()
                if spec["readable"] and _holds_objects(spec)}

    def order(self) -> list[str]:
        return [name for name, spec in self.group["variables"].items() if spec["readable"]]

    def _variable(self, name: str, spec: dict) -> Variable:
        path = f"{self.path}/{name}" if self.path else name
        data = indexing.LazilyIndexedArray(NstoreArray(self.source, path, spec))
        return Variable(tuple(spec["dims"]), data, spec["attrs"])

    def get_attrs(self) -> dict:
        attrs = dict(self.group["attrs"])
        omitted = sorted(name for name, spec in self.group["variables"].items() if not spec["readable"])
        if omitted:
            attrs[OMITTED_ATTR] = omitted
        return attrs

    def get_dimensions(self) -> dict:
        return {dim: size for spec in self.group["variables"].values() for dim, size in zip(spec["dims"], spec["shape"])}

    def get_encoding(self) -> dict:
        return {"unlimited_dims": {spec["dims"][0] for spec in self.group["variables"].values()
                                   if int(spec["attrs"].get("IODriver_Appendable", 0))}}

    def close(self) -> None:
        if self.source is not None:
            source, self.source = self.source, None
            source.release()


def _holds_objects(spec: dict) -> bool:
    return spec["attrs"].get("IODriver_Type") in OBJECT_KINDS


class NstoreBackendEntrypoint(BackendEntrypoint):
    """``engine="nstore"``: a live store through nstored, or a closed file, lazily."""

    description = "nstore files: live through the nstored serving them, or closed, lazily and as one consistent cut"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "group", "endpoint", "keys", "timeout",
                               "mask_and_scale", "decode_times", "concat_characters", "decode_coords",
                               "use_cftime", "decode_timedelta")
    supports_groups = True

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        return False  # plain .nc files stay with the default engine; ask for engine="nstore"

    def open_dataset(self, filename_or_obj: Any, *, drop_variables: str | Iterable[str] | None = None,
                     group: str | None = None, endpoint: str | None = None, keys: str | None = None,
                     timeout: float = DEFAULT_TIMEOUT_S, **decoders: Any) -> Dataset:
        source, path, cut = _open_cut(filename_or_obj, group, endpoint, keys, timeout)
        return _decoded(NstoreDataStore(source, path, cut[path]), drop_variables, decoders)

    def open_groups_as_dict(self, filename_or_obj: Any, *, drop_variables: str | Iterable[str] | None = None,
                            group: str | None = None, endpoint: str | None = None, keys: str | None = None,
                            timeout: float = DEFAULT_TIMEOUT_S, **decoders: Any) -> dict[str, Dataset]:
        source, root, cut = _open_cut(filename_or_obj, group, endpoint, keys, timeout)
        source.users = len(cut)
        out = {}
        for path, spec in cut.items():
            relative = path[len(root):].strip("/") if root else path
            out[f"/{relative}"] = _decoded(NstoreDataStore(source, path, spec), drop_variables, decoders)
        return out

    def open_datatree(self, filename_or_obj: Any, **kwargs: Any) -> Any:
        return datatree_from_dict_with_io_cleanup(self.open_groups_as_dict(filename_or_obj, **kwargs))


def _open_cut(target: Any, group: str | None, endpoint: str | None, keys: str | None,
              timeout: float) -> tuple[_Source, str, dict]:
    """The source, the normalized group path, and the layout of that group and everything below it."""
    path = (group or "").strip("/")
    source = _Source(open_driver(target, endpoint, keys, timeout))
    try:
        return source, path, source.layout(path)
    except BaseException:
        source.release()
        raise


def _decoded(store: NstoreDataStore, drop_variables: Any, decoders: dict) -> Dataset:
    """CF decoding exactly as the default engine does it (xarray's own store entry point)."""
    try:
        ds = StoreBackendEntrypoint().open_dataset(store, drop_variables=drop_variables, **decoders)
    except BaseException:
        store.close()
        raise
    dropped = {drop_variables} if isinstance(drop_variables, str) else set(drop_variables or ())
    objects = {name: var for name, var in store.object_variables().items() if name not in dropped}
    if not objects:
        return ds
    ds = ds.assign(objects)
    order = [name for name in store.order() if name in ds.data_vars]
    return ds[order]  # the file's order, as the default engine gives it
