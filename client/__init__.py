"""nstore: many processes, one NetCDF4 file.

``StorageInterface(NetCDFIODriver("run.nc"))`` stores in-process;
``StorageInterface(connect("run.nc"))`` goes through the nstored daemon that
owns the file. Importing nstore is light: netCDF4 and pint load only when used.
"""

from __future__ import annotations

from typing import Any

from .storage import RESERVED_NAMES, StorageInterface, StorageInterfaceDirVar

__version__ = "0.1.0"

__all__ = ["StorageInterface", "StorageInterfaceDirVar", "NetCDFIODriver", "connect", "ureg", "RESERVED_NAMES"]


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attributes: keep netCDF4 and pint out of `import nstore`.
    if name == "NetCDFIODriver":
        from nstore.daemon.engine import NetCDFIODriver

        return NetCDFIODriver
    if name == "ureg":
        from nstore.protocol.units import registry

        return registry()
    if name == "connect":
        from .remote import connect

        return connect
    if name == "units":  # nstore.units.to_openmm without a separate import
        import importlib

        return importlib.import_module("nstore.units")
    raise AttributeError(f"module 'nstore' has no attribute {name!r}")
