"""StorageInterface and its directory/variable proxies (SIDV): the attribute-path API.

``store.replica.energy.append(x)``: attribute access walks a tree of proxies;
the first write/append to a proxy makes it a variable, giving it children makes
it a directory. Proxies only ever talk to the driver API
(:class:`nstore.protocol.api.StorageDriver`), so the same code runs in-process
and through nstored.
"""

from __future__ import annotations

from typing import Any, Iterator

from nstore.protocol.api import StorageDriver, StorageVariable
from nstore.protocol.openmm_units import storable
from nstore.protocol.paths import normalize_path

#: Names the proxies use themselves; reach such a stored name with ``store["..."]``.
RESERVED_NAMES = frozenset({"write", "append", "read", "add_metadata", "metadata", "path", "name"})

_UNDECIDED, _DIRECTORY, _VARIABLE = "undecided", "directory", "variable"


class StorageInterfaceDirVar:
    """A directory or variable at one path, decided by how it is first used."""

    def __init__(self, name: str, interface: "StorageInterface", parent: "StorageInterfaceDirVar | None"):
        self._name = name
        self._interface = interface
        self._driver: StorageDriver = interface.storage_driver
        self._parent = parent
        self._path = f"{parent.path}/{name}" if parent is not None and parent.path else name
        self._role = _UNDECIDED
        self._bound = False  # known to exist on disk
        self._variable: StorageVariable | None = None
        self._children: dict[str, StorageInterfaceDirVar] = {}
        self._metadata_buffer: dict[str, Any] = {}

    # --- naming ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """This proxy's own name (the last path component)."""
        return self._name

    @property
    def path(self) -> str:
        """Full ``/``-separated path in the file."""
        return self._path

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._path!r} ({self._role})>"

    # --- tree walking ------------------------------------------------------------------
    def _child(self, name: str) -> "StorageInterfaceDirVar":
        if self._role == _VARIABLE:
            raise AttributeError(f"{self._path}: is a variable; it cannot hold {name!r}")
        child = self._children.get(name)
        if child is None:
            child = self._children[name] = StorageInterfaceDirVar(name, self._interface, self)
            self._role = _DIRECTORY
        return child

    def __getattr__(self, name: str) -> "StorageInterfaceDirVar":
        if name.startswith("_"):
            raise AttributeError(name)
        return self._child(name)

    def __getitem__(self, path: str) -> "StorageInterfaceDirVar":
        node = self
        for part in _parts(path):
            node = node._child(part)
        return node

    def __contains__(self, name: str) -> bool:
        return name in self._listing()

    def __iter__(self) -> Iterator[str]:
        return iter(self._listing())

    def _listing(self) -> list[str]:
        if self._role == _VARIABLE:
            raise AttributeError(f"{self._path}: is a variable, not a directory")
        try:
            return self._driver.list_directory(self._path)
        except KeyError:
            return []

    # --- variable operations -------------------------------------------------------------
    def _as_variable(self, action: str) -> None:
        if self._role == _DIRECTORY:
            raise AttributeError(f"{self._path}: is a directory; cannot {action}() on it")
        if not self._path:
            raise AttributeError(f"the root directory cannot {action}()")

    def _handle_for(self, data: Any) -> StorageVariable:
        """The variable's handle; ``data`` is already storable (its type is checked on creation)."""
        if self._variable is None:
            # No round trip: the first write/append creates the variable (and its
            # directories) atomically where the data is stored.
            self._variable = self._driver.create_storage_variable(self._path, type(data))
        return self._variable

    def _after_first_store(self) -> None:
        if not self._bound:
            self._role, self._bound = _VARIABLE, True
            self._flush_metadata()
            parent = self._parent
            while parent is not None and not parent._bound:
                parent._role, parent._bound = _DIRECTORY, True
                parent._flush_metadata()
                parent = parent._parent

    def write(self, data: Any, at_index: int | None = None) -> None:
        """Store ``data`` (fixed variable), or overwrite entry ``at_index`` of an appendable one."""
        self._as_variable("write")
        data = storable(data, self._path)  # OpenMM quantities -> pint, before the type check
        self._handle_for(data).write(data, at_index=at_index)
        self._after_first_store()

    def append(self, data: Any) -> int:
        """Append ``data`` as the next entry; returns the index it landed at."""
        self._as_variable("append")
        data = storable(data, self._path)
        index = self._handle_for(data).append(data)
        self._after_first_store()
        return index

    def read(self, index: int | slice | None = None) -> Any:
        """The whole variable, or one entry (int) / several (slice) of an appendable one."""
        self._as_variable("read")
        if self._variable is None:
            self._variable = self._driver.get_storage_variable(self._path)
            self._role, self._bound = _VARIABLE, True
        return self._variable.read(index)

    # --- metadata ------------------------------------------------------------------------
    def add_metadata(self, name: str, value: Any) -> None:
        """Attach ``name = value``; kept until this directory/variable exists on disk."""
        if self._bound or not self._path:
            self._driver.add_metadata(name, value, path=self._path or "/")
            return
        try:
            self._driver.add_metadata(name, value, path=self._path)
        except KeyError:
            self._metadata_buffer[name] = value
        else:
            self._bound = True

    def _flush_metadata(self) -> None:
        while self._metadata_buffer:
            name, value = next(iter(self._metadata_buffer.items()))
            self._driver.add_metadata(name, value, path=self._path)
            del self._metadata_buffer[name]

    @property
    def metadata(self) -> dict:
        """Metadata stored on disk for this directory/variable (KeyError if it does not exist)."""
        return self._driver.read_metadata(self._path or "/")


class StorageInterface:
    """The top of a store: ``StorageInterface(driver).group.var.append(x)``.

    ``driver`` is an in-process :class:`~nstore.NetCDFIODriver` or the remote
    driver returned by :func:`nstore.connect`.
    """

    def __init__(self, storage_driver: StorageDriver):
        self.storage_driver = storage_driver
        self._root = StorageInterfaceDirVar("", self, None)
        self._root._role, self._root._bound = _DIRECTORY, True

    @property
    def file_name(self) -> str:
        return self.storage_driver.file_name

    def __getattr__(self, name: str) -> StorageInterfaceDirVar:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in RESERVED_NAMES:
            raise AttributeError(f"{name!r} is a reserved name; reach it with store[{name!r}]")
        return self._root._child(name)

    def __getitem__(self, path: str) -> StorageInterfaceDirVar:
        return self._root[path]

    def __contains__(self, name: str) -> bool:
        return name in self._root

    def __iter__(self) -> Iterator[str]:
        return iter(self._root)

    def add_metadata(self, name: str, value: Any) -> None:
        """Attach metadata to the file itself."""
        self.storage_driver.add_metadata(name, value, path="/")

    @property
    def metadata(self) -> dict:
        return self.storage_driver.read_metadata("/")

    def sync(self) -> None:
        self.storage_driver.sync()

    def close(self) -> None:
        self.storage_driver.close()

    def __enter__(self) -> "StorageInterface":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<StorageInterface {self.file_name!r}>"


def _parts(path: str) -> list[str]:
    # normalize_path rejects "a//b", "..", control characters (ValueError) like the drivers do.
    normalized = normalize_path(str(path))
    if not normalized:
        raise KeyError(f"{path!r}: empty path")
    return normalized.split("/")
