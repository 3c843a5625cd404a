"""nstore: many processes, one NetCDF4 file.

``StorageInterface(NetCDFIODriver("run.nc"))`` stores in-process;
``StorageInterface(connect("run.nc"))`` goes through the nstored daemon that
owns the file. Importing nstore is light: every public name loads on first use
(netCDF4 and pint only when needed), so the daemon, which imports
``nstore.daemon.*``, loads none of the client modules.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["StorageInterface", "StorageInterfaceDirVar", "NetCDFIODriver", "connect", "ureg", "RESERVED_NAMES"]

# public name -> (module, attribute; None: the module itself): PEP 562 lazy attributes
_LAZY = {
    "StorageInterface": ("nstore.storage", "StorageInterface"),
    "StorageInterfaceDirVar": ("nstore.storage", "StorageInterfaceDirVar"),
    "RESERVED_NAMES": ("nstore.storage", "RESERVED_NAMES"),
    "NetCDFIODriver": ("nstore.daemon.engine", "NetCDFIODriver"),
    "connect": ("nstore.connecting", "connect"),
    "units": ("nstore.units", None),  # nstore.units.to_openmm without a separate import
}


def __getattr__(name: str) -> Any:
    if name == "ureg":
        from nstore.protocol.units import registry

        return registry()
    if name not in _LAZY:
        raise AttributeError(f"module 'nstore' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    loaded = importlib.import_module(module)
    return loaded if attribute is None else getattr(loaded, attribute)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
