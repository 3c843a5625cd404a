"""Files of the classic openmmtools storage layer, through nstore, with both drivers.

tests/data/classic_fixed.nc and classic_appended.nc were written by the classic
layer (scripts/make_classic_fixtures.py); the expected values below restate
that script's constants with pint units. nstore returns appendable variables in
its own stacked forms (numbers -> 1-D ndarray, arrays -> stacked ndarray,
quantities -> Quantity of an ndarray, str/dict/list/tuple -> list), not in the
classic layer's (n, 1) masked arrays; those stacked forms are what is tested.
The fixtures are copied into tmp_path first and never touched in place.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import netCDF4
import numpy as np
import pint
import pytest

from daemons import stop_daemon_on_close
from nstore import NetCDFIODriver, StorageInterface, connect, ureg
from nstore.daemon import textcodec
from nstore.protocol.units import parse_unit

from ncfiles import attribute_types, structure

DATA = Path(__file__).parent / "data"
FIXTURES = ("classic_fixed.nc", "classic_appended.nc")
Q = ureg.Quantity
KJ_MOL = ureg.kilojoule / ureg.mole

# --- expected values (scripts/make_classic_fixtures.py) -----------------------------------
FIXED_NAMES = ["areas", "array_2d", "energy", "float_value", "group", "int_value", "list_of_floats",
               "positions", "rate", "settings", "str_value", "temperature", "temperature_int", "tuple_of_ints"]
APPENDED_NAMES = ["arrays", "dicts", "energies", "floats", "group", "ints", "lists", "positions", "strs",
                  "temperatures"]
ARRAY_2D = np.arange(6.0).reshape(2, 3)
FIXED_POSITIONS = np.array([[0.1, 0.2, 0.3], [1.0, 1.1, 1.2]])
APPENDED_ARRAYS = np.array([np.arange(6.0).reshape(2, 3) + 10.0 * i for i in range(3)])
APPENDED_POSITIONS = np.array([np.arange(6.0).reshape(2, 3) + i for i in range(3)])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_ORIGINAL_DIGESTS = {name: _digest(DATA / name) for name in FIXTURES}


@pytest.fixture
def classic(tmp_path, driver_kind, daemon_factory):
    """``classic(name)`` -> (StorageInterface on a copy of tests/data/<name>, path of the copy).

    Remote driver: a daemon is started on the copy and the store connects to its
    endpoint; ``store.close()`` also stops that daemon, so the copy can then be
    opened with netCDF4 directly.
    """
    opened: list[StorageInterface] = []

    def _open(name: str) -> tuple[StorageInterface, Path]:
        path = tmp_path / name
        if not path.exists():
            shutil.copyfile(DATA / name, path)
        if driver_kind == "inprocess":
            driver = NetCDFIODriver(str(path))
        else:
            daemon = daemon_factory(path)
            driver = connect(daemon.endpoint, timeout=30)
            stop_daemon_on_close(driver, daemon)
        store = StorageInterface(driver)
        opened.append(store)
        return store, path

    yield _open
    for store in opened:
        try:
            store.close()
        except Exception:
            pass
    for name in FIXTURES:  # the originals are never modified
        assert _digest(DATA / name) == _ORIGINAL_DIGESTS[name]


def assert_quantity(value, magnitude, unit, magnitude_type, exact=True):
    assert isinstance(value, pint.Quantity), type(value)
    assert type(value.magnitude) is magnitude_type, type(value.magnitude)
    assert value.units == ureg.Unit(unit)
    if magnitude_type is np.ndarray:
        assert value.magnitude.shape == np.shape(magnitude)
        assert value.magnitude.dtype == np.float64
        assert np.array_equal(value.magnitude, magnitude) if exact else np.allclose(value.magnitude, magnitude)
    else:
        assert value.magnitude == magnitude


# --- reading classic_fixed.nc --------------------------------------------------------------


def test_fixed_plain_values_and_types(classic):
    store, _ = classic("classic_fixed.nc")
    assert list(store) == FIXED_NAMES
    assert list(store.group) == ["label", "sub"]
    assert list(store.group.sub) == ["energy", "value"]

    value = store.int_value.read()
    assert type(value) is int and value == 42
    value = store.float_value.read()
    assert type(value) is float and value == 3.25
    value = store.str_value.read()
    assert type(value) is str and value == "hello, classic storage"
    value = store.list_of_floats.read()
    assert type(value) is list and value == [0.5, 1.5, -2.25]
    assert [type(x) for x in value] == [float, float, float]
    value = store.tuple_of_ints.read()
    assert type(value) is tuple and value == (1, 2, 3)
    assert [type(x) for x in value] == [int, int, int]
    value = store.array_2d.read()
    assert type(value) is np.ndarray and value.dtype == np.float64 and value.shape == (2, 3)
    assert np.array_equal(value, ARRAY_2D)
    value = store.group.label.read()
    assert type(value) is str and value == "inside group"
    value = store.group.sub.value.read()
    assert type(value) is float and value == 12.5


def test_fixed_quantities_get_pint_units(classic):
    store, _ = classic("classic_fixed.nc")

    temperature = store.temperature.read()
    assert_quantity(temperature, 300.0, "kelvin", float)
    assert temperature.to("degC").magnitude == pytest.approx(26.85)

    temperature_int = store.temperature_int.read()
    assert_quantity(temperature_int, 300, "kelvin", int)

    energy = store.energy.read()  # 'kilojoule/mole'
    assert_quantity(energy, -1.5, "kilojoule/mole", float)
    assert energy.units == KJ_MOL
    assert energy.to("kilocalorie/mole").magnitude == pytest.approx(-1.5 / 4.184)
    assert energy.to("joule/mole").magnitude == pytest.approx(-1500.0)

    positions = store.positions.read()
    assert_quantity(positions, FIXED_POSITIONS, "nanometer", np.ndarray)
    assert np.allclose(positions.to("angstrom").magnitude, FIXED_POSITIONS * 10.0)

    rate = store.rate.read()  # '/nanosecond' (openmm's spelling of 1/ns)
    assert_quantity(rate, 2.0, "1/nanosecond", float)
    assert rate.units == 1 / ureg.nanosecond
    assert rate.to("1/picosecond").magnitude == pytest.approx(0.002)
    assert rate.to("hertz").magnitude == pytest.approx(2.0e9)

    # 'nanometer**2'; written from a list quantity, but pint quantities of lists are arrays
    areas = store.areas.read()
    assert_quantity(areas, np.array([1.0, 2.0]), "nanometer**2", np.ndarray)
    assert areas.units == ureg.nanometer**2
    assert np.allclose(areas.to("angstrom**2").magnitude, [100.0, 200.0])

    sub_energy = store.group.sub.energy.read()
    assert_quantity(sub_energy, 4.0, "kilojoule/mole", float)
    assert sub_energy.to("kilocalorie/mole").magnitude == pytest.approx(4.0 / 4.184)


def test_fixed_dict_from_classic_yaml(classic):
    store, _ = classic("classic_fixed.nc")
    settings = store.settings.read()
    assert type(settings) is dict
    temperature = settings.pop("temperature")
    assert_quantity(temperature, 300.0, "kelvin", float)
    assert settings == {"flag": True, "n_steps": 500, "name": "langevin", "nested": {"a": 1, "b": "two"},
                        "sizes": [1, 2, 3], "timestep_fs": 2.0}
    assert type(settings["flag"]) is bool and type(settings["n_steps"]) is int
    assert type(settings["timestep_fs"]) is float


def test_fixed_metadata_and_info(classic):
    store, _ = classic("classic_fixed.nc")
    metadata = store.metadata
    assert metadata == {"title": "classic fixed fixture", "fixture_version": 1}
    assert type(metadata["fixture_version"]) is int
    assert store.group.metadata == {"description": "a plain group"}
    assert store.group.sub.metadata == {}
    assert store.int_value.metadata == {"comment": "the answer"}
    assert store.float_value.metadata == {}  # the 5 IODriver attributes are not user metadata
    driver = store.storage_driver
    assert driver.variable_info("rate") == {"appendable": False, "io_type": "quantity", "type": "float",
                                            "shape": [1], "length": 1, "unit": "/nanosecond"}
    assert driver.variable_info("array_2d") == {"appendable": False, "io_type": "numpy.ndarray", "type": "float64",
                                                "shape": [2, 3], "length": 1, "unit": None}
    assert driver.variable_info("group/label") == {"appendable": False, "io_type": "str", "type": "str",
                                                   "shape": [1], "length": 1, "unit": None}


def test_fixed_variables_reject_appends_like_classic(classic):
    store, _ = classic("classic_fixed.nc")
    with pytest.raises(TypeError, match="int_value: was stored with write"):
        store.int_value.append(43)
    with pytest.raises(TypeError, match="int_value: was stored with write"):
        store.int_value.write(43, at_index=0)
    assert store.int_value.read() == 42


# --- reading classic_appended.nc -------------------------------------------------------------


def test_appended_numbers_and_strings_in_stacked_form(classic):
    store, _ = classic("classic_appended.nc")
    assert list(store) == APPENDED_NAMES
    assert list(store.group) == ["counter", "sub"]

    ints = store.ints.read()  # classic: MaskedArray of shape (3, 1)
    assert type(ints) is np.ndarray and ints.dtype == np.int64 and ints.shape == (3,)
    assert ints.tolist() == [1, 20, 3]  # includes the classic write(20, at_index=1)
    assert type(store.ints.read(1)) is int and store.ints.read(1) == 20
    assert store.ints.read(-1) == 3
    part = store.ints.read(slice(0, 2))
    assert type(part) is np.ndarray and part.tolist() == [1, 20]

    floats = store.floats.read()
    assert type(floats) is np.ndarray and floats.dtype == np.float64 and floats.shape == (3,)
    assert floats.tolist() == [0.5, 1.5, 2.5]
    assert type(store.floats.read(0)) is float and store.floats.read(0) == 0.5

    strs = store.strs.read()  # classic: '<U5' array of shape (3, 1)
    assert type(strs) is list and strs == ["alpha", "beta", "gamma"]
    assert store.strs.read(2) == "gamma"
    assert store.strs.read(slice(1, None)) == ["beta", "gamma"]

    counter = store.group.counter.read()
    assert type(counter) is np.ndarray and counter.dtype == np.int64 and counter.tolist() == [10, 11, 12]


def test_appended_lists_arrays_and_dicts_in_stacked_form(classic):
    store, _ = classic("classic_appended.nc")

    lists = store.lists.read()  # classic: object array of lists of np.float64
    assert type(lists) is list and lists == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert all(type(row) is list and all(type(x) is float for x in row) for row in lists)
    assert store.lists.read(1) == [2.0, 3.0] and type(store.lists.read(1)) is list

    arrays = store.arrays.read()
    assert type(arrays) is np.ndarray and arrays.dtype == np.float64 and arrays.shape == (3, 2, 3)
    assert np.array_equal(arrays, APPENDED_ARRAYS)
    one = store.arrays.read(2)
    assert type(one) is np.ndarray and one.shape == (2, 3) and np.array_equal(one, APPENDED_ARRAYS[2])

    dicts = store.dicts.read()
    assert type(dicts) is list and len(dicts) == 3 and all(type(d) is dict for d in dicts)
    assert dicts[0] == {"label": "a", "step": 0}
    assert dicts[2] == {"label": "c", "nested": {"x": 1.5}, "step": 2}
    second = dict(dicts[1])
    assert_quantity(second.pop("temperature"), 310.0, "kelvin", float)
    assert second == {"label": "b", "step": 1}
    assert store.dicts.read(0) == {"label": "a", "step": 0}


def test_appended_quantities_in_stacked_form(classic):
    store, _ = classic("classic_appended.nc")

    temperatures = store.temperatures.read()  # classic: Quantity of a (3, 1) MaskedArray
    assert_quantity(temperatures, np.array([300.0, 310.0, 320.0]), "kelvin", np.ndarray)
    assert np.allclose(temperatures.to("degC").magnitude, [26.85, 36.85, 46.85])
    assert_quantity(store.temperatures.read(1), 310.0, "kelvin", float)

    energies = store.energies.read()
    assert_quantity(energies, np.array([-1.0, -2.0, -3.0]), "kilojoule/mole", np.ndarray)
    assert np.allclose(energies.to("kilocalorie/mole").magnitude, np.array([-1.0, -2.0, -3.0]) / 4.184)
    assert_quantity(store.energies.read(slice(1, 3)), np.array([-2.0, -3.0]), "kilojoule/mole", np.ndarray)

    positions = store.positions.read()
    assert_quantity(positions, APPENDED_POSITIONS, "nanometer", np.ndarray)
    assert np.allclose(positions.to("angstrom").magnitude, APPENDED_POSITIONS * 10.0)
    assert_quantity(store.positions.read(0), APPENDED_POSITIONS[0], "nanometer", np.ndarray)

    sub = store.group.sub.energies.read()
    assert_quantity(sub, np.array([0.5, 1.0, 1.5]), "kilojoule/mole", np.ndarray)


def test_appended_metadata_and_info(classic):
    store, _ = classic("classic_appended.nc")
    assert store.metadata == {"title": "classic appended fixture"}
    assert store.group.metadata == {}
    driver = store.storage_driver
    assert driver.variable_info("positions") == {"appendable": True, "io_type": "quantity", "type": "numpy.ndarray",
                                                 "shape": [2, 3], "length": 3, "unit": "nanometer"}
    assert driver.variable_info("strs") == {"appendable": True, "io_type": "str", "type": "str",
                                            "shape": [1], "length": 3, "unit": None}
    assert driver.variable_info("lists") == {"appendable": True, "io_type": "iterable", "type": "list",
                                             "shape": [2], "length": 3, "unit": None}


# --- nstore writing into classic files ----------------------------------------------------------


def test_append_continues_classic_unlimited_dimensions(classic):
    store, path = classic("classic_appended.nc")
    assert store.ints.append(4) == 3
    assert store.floats.append(3.5) == 3
    assert store.strs.append("delta") == 3
    assert store.lists.append([6.0, 7.0]) == 3
    assert store.arrays.append(np.full((2, 3), 30.0)) == 3
    assert store.temperatures.append(Q(56.85, "degC")) == 3  # converted to the stored kelvin
    assert store.energies.append(-1.0 * ureg.kilocalorie / ureg.mole) == 3
    assert store.positions.append(np.ones((2, 3)) * ureg.angstrom) == 3
    assert store.dicts.append({"step": 3, "label": "d"}) == 3
    assert store.group.counter.append(13) == 3
    assert store.group.sub.energies.append(2.0 * KJ_MOL) == 3
    store.ints.write(100, at_index=0)
    assert store.fresh.append(1.0) == 0  # a new appendable variable in the classic file

    assert store.ints.read().tolist() == [100, 20, 3, 4]
    assert store.strs.read() == ["alpha", "beta", "gamma", "delta"]
    assert store.lists.read(-1) == [6.0, 7.0]
    assert_quantity(store.temperatures.read(), np.array([300.0, 310.0, 320.0, 330.0]), "kelvin", np.ndarray)
    energies = store.energies.read()
    assert energies.units == KJ_MOL and np.allclose(energies.magnitude, [-1.0, -2.0, -3.0, -4.184])
    assert np.allclose(store.positions.read(3).magnitude, np.full((2, 3), 0.1))
    assert store.dicts.read(3) == {"step": 3, "label": "d"}
    with pytest.raises(TypeError, match="ints: cannot append float"):
        store.ints.append(1.5)
    with pytest.raises(pint.DimensionalityError):
        store.energies.append(1.0 * ureg.nanometer)
    store.close()

    before, after = structure(DATA / "classic_appended.nc"), structure(path)
    root = after["/"]["dimensions"]
    # every classic unlimited dimension grew by one; the new variable got the next free number
    assert root == {**{name: (4 if unlimited else size, unlimited)
                       for name, (size, unlimited) in before["/"]["dimensions"].items()},
                    "unlimited11": (1, True)}
    assert after["/"]["variables"]["fresh"]["dimensions"] == ("unlimited11", "scalar")
    for group in before:
        for name, var in before[group]["variables"].items():
            new = after[group]["variables"][name]
            assert new["dimensions"] == var["dimensions"]
            assert new["dtype"] == var["dtype"]
            assert [a for a, _ in new["attrs"]] == [a for a, _ in var["attrs"]]  # no attribute added
            assert new["data"].shape == (4, *var["data"].shape[1:])
    assert after["/"]["variables"]["ints"]["data"].tolist() == [[100], [20], [3], [4]]
    assert after["/"]["variables"]["strs"]["data"][:, 0].tolist() == ["alpha", "beta", "gamma", "delta"]
    assert after["/"]["variables"]["dicts"]["data"][:3].tolist() == before["/"]["variables"]["dicts"]["data"].tolist()


def test_classic_list_quantity_variables_accept_pint_arrays(classic):
    """A classic list quantity (type 'list') can only be met with an array magnitude: pint turns lists into arrays."""
    store, _ = classic("classic_fixed.nc")
    areas = store.areas.read()
    store.areas.write(areas.to("angstrom**2"))  # rewriting a fixed variable with what was read (converted)
    assert_quantity(store.areas.read(), np.array([1.0, 2.0]), "nanometer**2", np.ndarray, exact=False)
    with pytest.raises(ValueError, match=r"areas: written shape \(3,\) does not match stored shape \(2,\)"):
        store.areas.write(np.ones(3) * ureg.nanometer**2)


def test_append_to_classic_appendable_list_quantity(tmp_path, driver_kind, classic):
    # The classic layout of ``store.x.append([1.0, 2.0] * unit.nanometer)`` (checked against openmmtools 0.27)
    path = tmp_path / "classic_appended.nc"
    shutil.copyfile(DATA / "classic_appended.nc", path)
    with netCDF4.Dataset(path, "a") as ds:
        ds.createDimension("unlimited11", None)
        var = ds.createVariable("list_quantities", "f8", ("unlimited11", "iterable2"), chunksizes=(128, 2))
        var.setncatts({"IODriver_Type": "quantity", "type": "list", "IODriver_Unit": "nanometer",
                       "IODriver_Storage_Type": "variables", "IODriver_Appendable": np.int64(1)})
        var[0:2] = [[1.0, 2.0], [3.0, 4.0]]
    store, _ = classic("classic_appended.nc")
    assert_quantity(store.list_quantities.read(1), np.array([3.0, 4.0]), "nanometer", np.ndarray)
    assert store.list_quantities.append(np.array([50.0, 60.0]) * ureg.angstrom) == 2
    assert_quantity(store.list_quantities.read(), np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), "nanometer",
                    np.ndarray, exact=False)


def test_append_scalar_quantities_with_a_force_ndarray_like_registry(classic, monkeypatch):
    """pint-xarray switches the application registry to force_ndarray_like: scalar magnitudes become 0-d arrays.

    They must still go into the classic scalar-quantity variables (type 'float') as scalars.
    """
    monkeypatch.setattr(ureg, "force_ndarray_like", True)
    store, path = classic("classic_appended.nc")
    value = 330.0 * ureg.kelvin
    assert type(value.magnitude) is np.ndarray and value.magnitude.shape == ()
    assert store.temperatures.append(value) == 3
    assert store.group.sub.energies.append(-0.5 * ureg.kilocalorie / ureg.mole) == 3
    store.new_energy.write(-1.5 * KJ_MOL)
    store.new_energies.append(-2.5 * KJ_MOL)
    assert np.allclose(store.temperatures.read().magnitude, [300.0, 310.0, 320.0, 330.0])
    assert store.new_energy.read().magnitude == -1.5
    driver = store.storage_driver
    info = driver.variable_info("new_energy")
    assert (info["io_type"], info["type"], info["shape"], info["unit"]) == ("quantity", "float", [1], "kilojoule/mole")
    assert driver.variable_info("new_energies")["shape"] == [1]
    store.close()
    variables = structure(path)["/"]["variables"]
    assert variables["new_energy"]["dimensions"] == ("scalar",)
    assert variables["new_energies"]["dimensions"] == ("unlimited11", "scalar")
    assert dict(variables["new_energies"]["attrs"])["type"] == "float"


@pytest.mark.parametrize("spelling, pint_unit", [
    ("kelvin", "kelvin"),
    ("kilojoule/mole", "kilojoule/mole"),
    ("nanometer", "nanometer"),
    ("/nanosecond", "1/nanosecond"),
    ("/picosecond", "1/picosecond"),
    ("nanometer**2", "nanometer**2"),
    ("kilocalorie/(angstrom**2*mole)", "kilocalorie/mole/angstrom**2"),
    ("kilojoule/(nanometer**2*mole)", "kilojoule/mole/nanometer**2"),
    ("joule/kelvin", "joule/kelvin"),
    ("gram/(centimeter**3)", "gram/centimeter**3"),
    ("dimensionless", "dimensionless"),
    ("elementary charge", "elementary_charge"),  # openmm puts a space in this one
    ("atmosphere", "standard_atmosphere"),
    ("bar", "bar"),
    ("femtosecond", "femtosecond"),
])
def test_openmm_unit_spellings_parse_to_pint_units(spelling, pint_unit):
    assert parse_unit(spelling) == ureg.Unit(pint_unit)
    assert Q(1.0, parse_unit(spelling)).to(pint_unit).magnitude == 1.0


def test_classic_variable_with_openmm_charge_unit(tmp_path, classic):
    path = tmp_path / "classic_fixed.nc"
    shutil.copyfile(DATA / "classic_fixed.nc", path)
    with netCDF4.Dataset(path, "a") as ds:
        ds["energy"].setncattr("IODriver_Unit", "elementary charge")  # as openmm spells str(unit.elementary_charge)
    store, _ = classic("classic_fixed.nc")
    charge = store.energy.read()
    assert_quantity(charge, -1.5, "elementary_charge", float)
    assert charge.to("coulomb").magnitude == pytest.approx(-1.5 * 1.602176634e-19)


# --- files nstore writes follow the classic conventions -------------------------------------------


def _write_like_classic_fixed(store: StorageInterface) -> None:
    """The operations of make_classic_fixtures.write_fixed, with pint units."""
    store.add_metadata("title", "classic fixed fixture")
    store.add_metadata("fixture_version", 1)
    store.int_value.add_metadata("comment", "the answer")  # buffered until bound
    store.int_value.write(42)
    store.float_value.write(3.25)
    store.str_value.write("hello, classic storage")
    store.list_of_floats.write([0.5, 1.5, -2.25])
    store.tuple_of_ints.write((1, 2, 3))
    store.array_2d.write(ARRAY_2D)
    store.temperature.write(300.0 * ureg.kelvin)
    store.temperature_int.write(300 * ureg.kelvin)
    store.energy.write(-1.5 * KJ_MOL)
    store.positions.write(FIXED_POSITIONS * ureg.nanometer)
    store.rate.write(2.0 / ureg.nanosecond)
    store.areas.write([1.0, 2.0] * ureg.nanometer**2)
    store.settings.write({"n_steps": 500, "timestep_fs": 2.0, "name": "langevin", "flag": True,
                          "sizes": [1, 2, 3], "nested": {"a": 1, "b": "two"}, "temperature": 300.0 * ureg.kelvin})
    store.group.add_metadata("description", "a plain group")  # buffered until the group is bound
    store.group.label.write("inside group")
    store.group.sub.value.write(12.5)
    store.group.sub.energy.write(4.0 * KJ_MOL)


def _write_like_classic_appended(store: StorageInterface) -> None:
    """The operations of make_classic_fixtures.write_appended, with pint units."""
    store.add_metadata("title", "classic appended fixture")
    dicts = [{"step": 0, "label": "a"}, {"step": 1, "label": "b", "temperature": 310.0 * ureg.kelvin},
             {"step": 2, "label": "c", "nested": {"x": 1.5}}]
    for i in range(3):
        store.ints.append([1, 2, 3][i])
        store.floats.append([0.5, 1.5, 2.5][i])
        store.strs.append(["alpha", "beta", "gamma"][i])
        store.lists.append([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]][i])
        store.arrays.append(APPENDED_ARRAYS[i])
        store.temperatures.append([300.0, 310.0, 320.0][i] * ureg.kelvin)
        store.energies.append([-1.0, -2.0, -3.0][i] * KJ_MOL)
        store.positions.append(APPENDED_POSITIONS[i] * ureg.nanometer)
        store.dicts.append(dicts[i])
        store.group.counter.append([10, 11, 12][i])
        store.group.sub.energies.append([0.5, 1.0, 1.5][i] * KJ_MOL)
    store.ints.write(20, at_index=1)


def _all_dimensions(groups: dict) -> dict:
    """Every dimension of the file, wherever it is defined: name -> (size, unlimited)."""
    found: dict = {}
    for group in groups.values():
        for name, size in group["dimensions"].items():
            assert found.setdefault(name, size) == size, name
    return found


IODRIVER_ATTRIBUTES = ["IODriver_Type", "type", "IODriver_Unit", "IODriver_Storage_Type", "IODriver_Appendable"]

# Where nstore's attribute values differ from the classic ones, and why:
#  - areas:type  pint has no list quantities (a list magnitude becomes an ndarray)
#  - rate:IODriver_Unit  pint's spelling of 1/ns; the classic layer reads it back as 2.0 /ns
KNOWN_VALUE_DIFFERENCES = {
    ("/", "areas", "type"): ("list", "numpy.ndarray"),
    ("/", "rate", "IODriver_Unit"): ("/nanosecond", "1/nanosecond"),
}


@pytest.mark.parametrize("fixture, writer", [("classic_fixed.nc", _write_like_classic_fixed),
                                             ("classic_appended.nc", _write_like_classic_appended)])
def test_nstore_files_follow_classic_conventions(open_store, tmp_path, fixture, writer):
    store = open_store("mine.nc")
    writer(store)
    store.close()
    mine_path, classic_path = tmp_path / "mine.nc", DATA / fixture
    mine, theirs = structure(mine_path), structure(classic_path)
    mine_types, their_types = attribute_types(mine_path), attribute_types(classic_path)

    assert list(mine) == list(theirs)  # same groups
    # dimension names and sizes: the classic layer defines them all in the root group, nstore
    # beside the variables that use them (many-variable files stay fast and small); the
    # names and sizes across the file are the same
    assert _all_dimensions(mine) == _all_dimensions(theirs)
    differences = {}
    for group in theirs:
        # group / global attributes: same names, values and netCDF types (nstored adds its own
        # reserved nstore_* checkpoint attribute to the root group, which is not user metadata)
        assert [a for a in mine[group]["attrs"] if not a[0].startswith("nstore_")] == theirs[group]["attrs"]
        assert [a for a in mine_types[(group, "")] if not a[0].startswith("nstore_")] == their_types[(group, "")]
        assert sorted(mine[group]["variables"]) == sorted(theirs[group]["variables"])
        for name, their_var in theirs[group]["variables"].items():
            my_var = mine[group]["variables"][name]
            where = f"{group}{name}"
            assert my_var["dimensions"] == their_var["dimensions"], where
            assert my_var["dtype"] == their_var["dtype"], where
            if dict(their_var["attrs"])["IODriver_Type"] == "dict":
                # the YAML text differs (nstore keeps key order and indents by 2), what it says does not
                assert [textcodec.loads(t) for t in my_var["data"].reshape(-1)] == \
                    [textcodec.loads(t) for t in their_var["data"].reshape(-1)], where
            else:
                assert np.array_equal(my_var["data"], their_var["data"]), where
            # the same attributes in the same order with the same netCDF types, plus CF 'units' on quantities
            my_types = dict(mine_types[(group, name)])
            their_names = [a for a, _ in their_types[(group, name)]]
            assert their_names[:5] == IODRIVER_ATTRIBUTES
            assert [a for a, _ in mine_types[(group, name)] if a != "units"] == their_names, where
            for attr, nc_type in their_types[(group, name)]:
                assert my_types[attr] == nc_type, (where, attr)
            assert [t for a, t in their_types[(group, name)] if a in IODRIVER_ATTRIBUTES] == \
                ["NC_CHAR", "NC_CHAR", "NC_CHAR", "NC_CHAR", "NC_INT64"]
            my_attrs, their_attrs = dict(my_var["attrs"]), dict(their_var["attrs"])
            if their_attrs["IODriver_Type"] == "quantity":
                assert my_types["units"] == "NC_CHAR"
                assert my_attrs["units"] == my_attrs["IODriver_Unit"]
                assert parse_unit(my_attrs["IODriver_Unit"]) == parse_unit(their_attrs["IODriver_Unit"])
            else:
                assert "units" not in my_attrs
            for attr, value in their_attrs.items():
                if attr in IODRIVER_ATTRIBUTES and my_attrs[attr] != value:
                    differences[(group, name, attr)] = (value, my_attrs[attr])
                elif attr not in IODRIVER_ATTRIBUTES:
                    assert my_attrs[attr] == value
    assert differences == (KNOWN_VALUE_DIFFERENCES if fixture == "classic_fixed.nc" else {})


def test_nstore_file_reads_back_like_the_classic_one(open_store, tmp_path):
    """What nstore wrote in the classic layout reads back exactly as the classic fixture does."""
    store = open_store("mine.nc")
    _write_like_classic_appended(store)
    store.close()
    mine = NetCDFIODriver(str(tmp_path / "mine.nc"), access_mode="r")
    theirs = NetCDFIODriver(str(DATA / "classic_appended.nc"), access_mode="r")
    try:
        for name in ["ints", "floats", "strs", "lists", "arrays", "group/counter"]:
            a, b = mine.read_variable(name), theirs.read_variable(name)
            assert type(a) is type(b)
            assert (np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b), name
        for name in ["temperatures", "energies", "positions", "group/sub/energies"]:
            a, b = mine.read_variable(name), theirs.read_variable(name)
            assert a.units == b.units and np.array_equal(a.magnitude, b.magnitude), name
        assert mine.read_variable("dicts") == theirs.read_variable("dicts")
    finally:
        mine.close()
        theirs.close()
