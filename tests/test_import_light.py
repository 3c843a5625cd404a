"""``import nstore`` in a worker must stay light: no netCDF4, pint, OpenMM or xarray until they are used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("netCDF4", "pint", "openmm", "xarray")  # (xarray imports nstore.xarray_backend, never the other way)


def loaded_after(code: str) -> set[str]:
    """Top-level names of the modules a fresh interpreter has loaded after running ``code``."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import nstore",
        "import nstore; nstore.StorageInterface; nstore.RESERVED_NAMES",
        "from nstore import StorageInterface, StorageInterfaceDirVar",
        "import nstore.protocol.values, nstore.protocol.paths, nstore.protocol.errors, nstore.protocol.api",
        "from nstore.protocol.values import pack, unpack; unpack(pack({'a': (1, 2.5), 'b': [None, 'x']}))",
        "import nstore; nstore.units.to_openmm",  # the OpenMM bridge imports OpenMM only when it converts
        "from nstore.protocol.openmm_units import storable; storable({'a': [1.5]}, 'x'); storable(2.5, 'y')",
    ],
)
def test_light_imports_load_no_heavy_module(code):
    loaded = loaded_after(code)
    assert "nstore" in loaded
    for heavy in HEAVY:
        assert heavy not in loaded, f"{code!r} imported {heavy}"


def test_the_probe_sees_heavy_modules_when_they_are_used():
    """Control: the same probe does report netCDF4, pint and OpenMM once the engine, units or to_openmm are used."""
    assert "netCDF4" in loaded_after("import nstore; nstore.NetCDFIODriver")
    assert "pint" in loaded_after("import nstore; nstore.ureg")
    assert "openmm" in loaded_after("import nstore; from nstore.units import to_openmm; to_openmm(nstore.ureg.Quantity(1.0, 'nm'))")


def test_xarray_finds_the_nstore_engine_through_its_entry_point():
    """engine="nstore" is registered by the package metadata; xarray imports the backend, not nstore."""
    loaded = loaded_after("import xarray as xr; assert type(xr.backends.list_engines()['nstore']).__name__ "
                          "== 'NstoreBackendEntrypoint'")
    assert "nstore" in loaded


CLIENT_MODULES = ("nstore.storage", "nstore.remote", "nstore.connecting", "nstore.pipeline", "nstore.inspect", "nstore.cli",
                  "nstore.mpi")


def test_the_daemon_loads_no_client_module():
    """``import nstore.daemon.server`` runs nstore/__init__.py, which must not pull in the client side."""
    script = ("import json, sys\nimport nstore.daemon.server, nstore.daemon.cli\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.startswith('nstore'))))")
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "nstore.daemon.server" in loaded
    assert not loaded & set(CLIENT_MODULES), sorted(loaded & set(CLIENT_MODULES))


def test_public_names_still_resolve_lazily():
    import nstore

    assert nstore.StorageInterface.__module__ == "nstore.storage"
    assert "connect" in dir(nstore) and callable(nstore.connect)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nstore.nope  # noqa: B018
