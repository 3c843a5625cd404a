"""The driver contract: what ``StorageInterface`` needs from a storage driver.

Both drivers (the in-process ``NetCDFIODriver`` and the remote driver that talks
to nstored) implement :class:`StorageDriver`; variable handles are the same thin
:class:`StorageVariable` for both, so one behaviour cannot drift between them.
"""

from __future__ import annotations

import abc
from typing import Any

from .openmm_units import storable


class StorageDriver(abc.ABC):
    """Path-based storage operations. Paths are ``/``-separated, root is ``""``."""

    file_name: str

    # --- variables -----------------------------------------------------------
    @abc.abstractmethod
    def get_storage_variable(self, path: str) -> "StorageVariable":
        """Handle to the variable stored at ``path``; KeyError when absent."""

    @abc.abstractmethod
    def create_storage_variable(self, path: str, py_type: type) -> "StorageVariable":
        """Handle for a new variable of ``py_type``; nothing is stored until the first write/append."""

    @abc.abstractmethod
    def write_variable(self, path: str, data: Any, at_index: int | None = None) -> None:
        """Store ``data`` at ``path`` (fixed), or overwrite entry ``at_index`` of an appendable one."""

    @abc.abstractmethod
    def append_variable(self, path: str, data: Any) -> int:
        """Append ``data`` to the appendable variable at ``path``; returns its index."""

    @abc.abstractmethod
    def read_variable(self, path: str, index: int | slice | None = None) -> Any:
        """The whole variable, one entry (int) or several (slice) of an appendable one."""

    @abc.abstractmethod
    def variable_info(self, path: str) -> dict:
        """``{appendable, io_type, type, shape, length, unit}`` of a stored variable; KeyError if absent."""

    # --- directories and metadata ---------------------------------------------
    @abc.abstractmethod
    def get_directory(self, path: str, create: bool = True) -> str:
        """Make sure the directory exists (``mkdir -p`` when ``create``); KeyError otherwise."""

    @abc.abstractmethod
    def list_directory(self, path: str = "") -> list[str]:
        """Names of the directories and variables directly under ``path``."""

    @abc.abstractmethod
    def add_metadata(self, name: str, value: Any, path: str = "/") -> None:
        """Attach an attribute to the file, a directory or a variable."""

    @abc.abstractmethod
    def read_metadata(self, path: str = "/") -> dict:
        """User attributes of the file, a directory or a variable."""

    # --- lifecycle ---------------------------------------------------------------
    @abc.abstractmethod
    def sync(self) -> None:
        """Make everything written so far durable in the file."""

    @abc.abstractmethod
    def close(self) -> None:
        """Sync and release the file (or connection)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StorageVariable:
    """A variable at a path, operated through its driver.

    Values enter both drivers here: OpenMM quantities become pint ones (see ``openmm_units``).
    """

    __slots__ = ("driver", "path")

    def __init__(self, driver: StorageDriver, path: str):
        self.driver = driver
        self.path = path

    def write(self, data: Any, at_index: int | None = None) -> None:
        self.driver.write_variable(self.path, storable(data, self.path), at_index)

    def append(self, data: Any) -> int:
        return self.driver.append_variable(self.path, storable(data, self.path))

    def read(self, index: int | slice | None = None) -> Any:
        return self.driver.read_variable(self.path, index)

    def add_metadata(self, name: str, value: Any) -> None:
        self.driver.add_metadata(name, value, path=self.path)

    @property
    def metadata(self) -> dict:
        return self.driver.read_metadata(self.path)

    def __repr__(self) -> str:
        return f"<StorageVariable {self.path!r} of {self.driver.file_name!r}>"
