"""Write NetCDF fixtures with the classic openmmtools storage layer.

nstore aims to read and write files that match the ones written by
``openmmtools.storage`` (StorageInterface + NetCDFIODriver). This script writes
two small reference files with that classic layer:

* ``classic_fixed.nc``    - values stored with ``.write()`` (not appendable)
* ``classic_appended.nc`` - values stored with ``.append()``, including one
  ``.write(..., at_index=1)`` overwrite and appends inside a nested group

Run it BY HAND in a throwaway virtualenv (NOT in CI; nstore itself never
depends on openmmtools). From the repository root:

    python3 -m venv /tmp/classic-venv
    /tmp/classic-venv/bin/pip install --no-deps openmmtools==0.27.0
    /tmp/classic-venv/bin/pip install openmm pyyaml netCDF4 numpy \
        scipy mdtraj mpiplus pymbar numba
    /tmp/classic-venv/bin/python scripts/make_classic_fixtures.py [OUTPUT_DIR]

(--no-deps skips pdbfixer and pandas, which storage never touches; but
openmmtools' own __init__ imports scipy, mdtraj, mpiplus, pymbar and numba,
so ``import openmmtools.storage`` needs those even though storage does not.
pymbar prints a "JAX NOT FOUND" banner on import; it is harmless.)

OUTPUT_DIR defaults to ``tests/data`` in this repository. Existing fixture
files there are overwritten. After writing, the script reads every variable
back through the classic layer and checks it against the constants below.

The expected values are the plain constants at the top of this file; the
tests restate them.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from openmm import unit
from openmmtools.storage import NetCDFIODriver, StorageInterface

# --------------------------------------------------------------------------
# classic_fixed.nc: every variable written once with .write()
# --------------------------------------------------------------------------

FIXED_INT = 42
FIXED_FLOAT = 3.25
FIXED_STR = "hello, classic storage"
FIXED_LIST_OF_FLOATS = [0.5, 1.5, -2.25]
FIXED_TUPLE_OF_INTS = (1, 2, 3)
FIXED_ARRAY_2D = np.arange(6.0).reshape(2, 3)
FIXED_TEMPERATURE = 300.0 * unit.kelvin                 # float magnitude
FIXED_TEMPERATURE_INT = 300 * unit.kelvin               # int magnitude
FIXED_ENERGY = -1.5 * unit.kilojoule / unit.mole
FIXED_POSITIONS = np.array([[0.1, 0.2, 0.3], [1.0, 1.1, 1.2]]) * unit.nanometer
FIXED_RATE = 2.0 / unit.nanosecond
FIXED_AREAS = [1.0, 2.0] * unit.nanometer**2            # list quantity
FIXED_DICT = {
    "n_steps": 500,
    "timestep_fs": 2.0,
    "name": "langevin",
    "flag": True,
    "sizes": [1, 2, 3],
    "nested": {"a": 1, "b": "two"},
    "temperature": 300.0 * unit.kelvin,
}
FIXED_GROUP_LABEL = "inside group"       # group/label
FIXED_GROUP_SUB_VALUE = 12.5             # group/sub/value
FIXED_GROUP_SUB_ENERGY = 4.0 * unit.kilojoule / unit.mole  # group/sub/energy

# Metadata (attributes) written with add_metadata
FIXED_ROOT_METADATA = {"title": "classic fixed fixture", "fixture_version": 1}
FIXED_GROUP_METADATA = {"description": "a plain group"}       # on group
FIXED_VARIABLE_METADATA = {"comment": "the answer"}           # on int_value

# --------------------------------------------------------------------------
# classic_appended.nc: every variable grown with .append() (3 entries each)
# --------------------------------------------------------------------------

APPENDED_INTS = [1, 2, 3]
APPENDED_INTS_OVERWRITE_AT_1 = 20        # ints.write(20, at_index=1)
APPENDED_INTS_FINAL = [1, 20, 3]
APPENDED_FLOATS = [0.5, 1.5, 2.5]
APPENDED_STRS = ["alpha", "beta", "gamma"]
APPENDED_LISTS = [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
APPENDED_ARRAYS = [np.arange(6.0).reshape(2, 3) + 10.0 * i for i in range(3)]
APPENDED_TEMPERATURES = [300.0 * unit.kelvin, 310.0 * unit.kelvin, 320.0 * unit.kelvin]
APPENDED_ENERGIES = [e * unit.kilojoule / unit.mole for e in (-1.0, -2.0, -3.0)]
APPENDED_POSITIONS = [(np.arange(6.0).reshape(2, 3) + i) * unit.nanometer for i in range(3)]
APPENDED_DICTS = [
    {"step": 0, "label": "a"},
    {"step": 1, "label": "b", "temperature": 310.0 * unit.kelvin},
    {"step": 2, "label": "c", "nested": {"x": 1.5}},
]
APPENDED_GROUP_COUNTER = [10, 11, 12]    # group/counter
APPENDED_GROUP_SUB_ENERGIES = [e * unit.kilojoule / unit.mole for e in (0.5, 1.0, 1.5)]  # group/sub/energies

APPENDED_ROOT_METADATA = {"title": "classic appended fixture"}


def write_fixed(path):
    driver = NetCDFIODriver(str(path), access_mode="w")
    store = StorageInterface(driver)
    for name, value in FIXED_ROOT_METADATA.items():
        store.add_metadata(name, value)

    for name, value in FIXED_VARIABLE_METADATA.items():
        store.int_value.add_metadata(name, value)   # buffered until bound
    store.int_value.write(FIXED_INT)
    store.float_value.write(FIXED_FLOAT)
    store.str_value.write(FIXED_STR)
    store.list_of_floats.write(FIXED_LIST_OF_FLOATS)
    store.tuple_of_ints.write(FIXED_TUPLE_OF_INTS)
    store.array_2d.write(FIXED_ARRAY_2D)
    store.temperature.write(FIXED_TEMPERATURE)
    store.temperature_int.write(FIXED_TEMPERATURE_INT)
    store.energy.write(FIXED_ENERGY)
    store.positions.write(FIXED_POSITIONS)
    store.rate.write(FIXED_RATE)
    store.areas.write(FIXED_AREAS)
    store.settings.write(FIXED_DICT)

    for name, value in FIXED_GROUP_METADATA.items():
        store.group.add_metadata(name, value)       # buffered until group is bound
    store.group.label.write(FIXED_GROUP_LABEL)
    store.group.sub.value.write(FIXED_GROUP_SUB_VALUE)
    store.group.sub.energy.write(FIXED_GROUP_SUB_ENERGY)
    driver.close()


def write_appended(path):
    driver = NetCDFIODriver(str(path), access_mode="w")
    store = StorageInterface(driver)
    for name, value in APPENDED_ROOT_METADATA.items():
        store.add_metadata(name, value)

    for i in range(3):
        store.ints.append(APPENDED_INTS[i])
        store.floats.append(APPENDED_FLOATS[i])
        store.strs.append(APPENDED_STRS[i])
        store.lists.append(APPENDED_LISTS[i])
        store.arrays.append(APPENDED_ARRAYS[i])
        store.temperatures.append(APPENDED_TEMPERATURES[i])
        store.energies.append(APPENDED_ENERGIES[i])
        store.positions.append(APPENDED_POSITIONS[i])
        store.dicts.append(APPENDED_DICTS[i])
        store.group.counter.append(APPENDED_GROUP_COUNTER[i])
        store.group.sub.energies.append(APPENDED_GROUP_SUB_ENERGIES[i])
    store.ints.write(APPENDED_INTS_OVERWRITE_AT_1, at_index=1)
    driver.close()


def _same(got, want):
    """Compare a classic read() result with an expected constant."""
    if isinstance(want, unit.Quantity):
        return isinstance(got, unit.Quantity) and str(got.unit) == str(want.unit) and \
            _same(got.value_in_unit(got.unit), want.value_in_unit(want.unit))
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and \
            all(_same(got[k], want[k]) for k in want)
    if isinstance(want, (list, tuple, np.ndarray)):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    return bool(np.all(got == want))


def verify(path, expected):
    driver = NetCDFIODriver(str(path), access_mode="r")
    store = StorageInterface(driver)
    for var_path, want in expected.items():
        node = store
        for part in var_path.split("/"):
            node = getattr(node, part)
        got = node.read()
        if not _same(got, want):
            raise AssertionError(f"{path.name}:{var_path}: read {got!r}, expected {want!r}")
    driver.close()


def main(argv=None):
    default_out = Path(__file__).resolve().parent.parent / "tests" / "data"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", nargs="?", default=str(default_out))
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    fixed, appended = out / "classic_fixed.nc", out / "classic_appended.nc"
    write_fixed(fixed)
    write_appended(appended)

    verify(fixed, {
        "int_value": FIXED_INT, "float_value": FIXED_FLOAT, "str_value": FIXED_STR,
        "list_of_floats": FIXED_LIST_OF_FLOATS, "tuple_of_ints": FIXED_TUPLE_OF_INTS,
        "array_2d": FIXED_ARRAY_2D, "temperature": FIXED_TEMPERATURE,
        "temperature_int": FIXED_TEMPERATURE_INT, "energy": FIXED_ENERGY,
        "positions": FIXED_POSITIONS, "rate": FIXED_RATE, "areas": FIXED_AREAS,
        "settings": FIXED_DICT, "group/label": FIXED_GROUP_LABEL,
        "group/sub/value": FIXED_GROUP_SUB_VALUE, "group/sub/energy": FIXED_GROUP_SUB_ENERGY,
    })
    verify(appended, {
        "ints": APPENDED_INTS_FINAL, "floats": APPENDED_FLOATS, "strs": APPENDED_STRS,
        "lists": APPENDED_LISTS, "arrays": APPENDED_ARRAYS,
        "temperatures": unit.Quantity([q.value_in_unit(unit.kelvin) for q in APPENDED_TEMPERATURES],
                                      unit.kelvin),
        "energies": unit.Quantity([q.value_in_unit(unit.kilojoule / unit.mole) for q in APPENDED_ENERGIES],
                                  unit.kilojoule / unit.mole),
        "positions": unit.Quantity(np.array([q.value_in_unit(unit.nanometer) for q in APPENDED_POSITIONS]),
                                   unit.nanometer),
        "dicts": APPENDED_DICTS, "group/counter": APPENDED_GROUP_COUNTER,
        "group/sub/energies": unit.Quantity(
            [q.value_in_unit(unit.kilojoule / unit.mole) for q in APPENDED_GROUP_SUB_ENERGIES],
            unit.kilojoule / unit.mole),
    })
    for f in (fixed, appended):
        print(f"wrote {f} ({os.path.getsize(f)} bytes), read back OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
