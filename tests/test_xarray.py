"""Files nstore writes (through either driver) open with xarray; quantities carry CF units for pint-xarray.

Importing pint_xarray switches pint's application registry (``nstore.ureg``) to
``force_ndarray_like`` for the whole process, which turns every scalar
magnitude into a 0-d array. So it is imported inside the ``quantify`` fixture,
and the registry is put back after each test.
"""

from __future__ import annotations

import warnings

import numpy as np
import pint
import pytest
import xarray as xr

from nstore import ureg
from nstore.daemon import textcodec

KJ_MOL = ureg.kilojoule / ureg.mole


@pytest.fixture
def quantify(monkeypatch):
    """``quantify(ds)`` -> ``ds.pint.quantify()``, with the registry set up as pint-xarray wants for this test only."""

    def _quantify(ds: xr.Dataset) -> xr.Dataset:
        before = ureg.force_ndarray_like
        import pint_xarray  # noqa: F401 - registers the .pint accessor; switches force_ndarray_like on

        ureg.force_ndarray_like = before
        monkeypatch.setattr(ureg, "force_ndarray_like", True)
        return ds.pint.quantify()

    return _quantify


def _open(path, **kwargs) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no decoding surprises (e.g. time units turned into timedeltas)
        with xr.open_dataset(path, **kwargs) as ds:
            return ds.load()


def test_fixed_values_open_with_xarray(open_store, tmp_path):
    store = open_store()
    store.count.write(42)
    store.ratio.write(3.25)
    store.flag.write(True)
    store.label.write("héllo ✓")
    store.weights.write([0.5, 1.5, -2.25])
    store.ids.write((1, 2, 3))
    store.matrix.write(np.arange(6.0).reshape(2, 3))
    store.small.write(np.arange(4, dtype=np.int32))
    store.single.write(np.float32(2.5))
    store.settings.write({"n_steps": 500, "temperature": 300.0 * ureg.kelvin})
    store.close()

    ds = _open(tmp_path / "run.nc")
    assert sorted(ds.data_vars) == ["count", "flag", "ids", "label", "matrix", "ratio", "settings", "single",
                                    "small", "weights"]
    assert ds["count"].dims == ("scalar",) and ds["count"].dtype == np.int64 and ds["count"].values.tolist() == [42]
    assert ds["ratio"].dtype == np.float64 and ds["ratio"].values.tolist() == [3.25]
    assert ds["flag"].dtype == np.int8 and ds["flag"].values.tolist() == [1]  # NetCDF has no bool
    assert ds["label"].values.tolist() == ["héllo ✓"]
    assert ds["weights"].dims == ("iterable3",) and ds["weights"].values.tolist() == [0.5, 1.5, -2.25]
    assert ds["ids"].dtype == np.int64 and ds["ids"].values.tolist() == [1, 2, 3]
    assert ds["matrix"].dims == ("iterable2", "iterable3")
    assert np.array_equal(ds["matrix"].values, np.arange(6.0).reshape(2, 3))
    assert ds["small"].dims == ("iterable4",) and ds["small"].dtype == np.int32
    assert ds["single"].dtype == np.float32 and ds["single"].values.tolist() == [2.5]
    settings = textcodec.loads(str(ds["settings"].values[0]))  # dicts are YAML text
    assert settings["n_steps"] == 500 and settings["temperature"] == 300.0 * ureg.kelvin
    assert ds["matrix"].attrs["IODriver_Type"] == "numpy.ndarray"
    assert "units" not in ds["matrix"].attrs


def test_appended_values_and_groups_open_with_xarray(open_store, tmp_path):
    store = open_store()
    for step in range(5):
        store.step.append(step)
        store.replica.energy.append((-1.0 - step) * KJ_MOL)
        store.replica.sub.positions.append((np.arange(6.0).reshape(2, 3) + step) * ureg.nanometer)
        store.replica.sub.notes.append(f"step {step}")
    store.replica.add_metadata("description", "first replica")
    store.close()
    path = tmp_path / "run.nc"

    root = _open(path)
    assert root["step"].dims == ("unlimited0", "scalar")
    assert root["step"].values[:, 0].tolist() == [0, 1, 2, 3, 4]

    replica = _open(path, group="replica")
    assert replica.attrs == {"description": "first replica"}
    assert replica["energy"].values[:, 0].tolist() == [-1.0, -2.0, -3.0, -4.0, -5.0]

    sub = _open(path, group="/replica/sub")
    assert sub["positions"].shape == (5, 2, 3)
    assert sub["positions"].dims == ("unlimited2", "iterable2", "iterable3")
    assert np.array_equal(sub["positions"].values, np.array([np.arange(6.0).reshape(2, 3) + s for s in range(5)]))
    assert sub["notes"].values[:, 0].tolist() == [f"step {s}" for s in range(5)]

    with xr.open_datatree(path) as tree:  # the whole file at once
        assert sorted(tree.groups) == ["/", "/replica", "/replica/sub"]
        assert tree["replica/sub/positions"].shape == (5, 2, 3)


def test_quantities_carry_cf_units_that_pint_xarray_quantifies(open_store, tmp_path, quantify):
    store = open_store()
    store.temperature.write(300.0 * ureg.kelvin)
    store.rate.write(2.0 / ureg.nanosecond)
    store.areas.write(np.array([1.0, 2.0]) * ureg.nanometer**2)
    store.positions.write(np.arange(6.0).reshape(2, 3) * ureg.angstrom)
    store.replica.energy.append(-1.0 * KJ_MOL)
    store.replica.energy.append(-1.0 * ureg.kilocalorie / ureg.mole)  # converted to the stored kJ/mol
    store.plain.write(1.0)
    store.close()
    path = tmp_path / "run.nc"

    ds = _open(path)
    assert {name: ds[name].attrs["units"] for name in ds.data_vars if "units" in ds[name].attrs} == {
        "temperature": "kelvin", "rate": "1/nanosecond", "areas": "nanometer**2", "positions": "angstrom"}
    quantified = quantify(ds)
    expected = {"temperature": ureg.kelvin, "rate": 1 / ureg.nanosecond, "areas": ureg.nanometer**2,
                "positions": ureg.angstrom}
    for name, unit in expected.items():
        data = quantified[name].data
        assert isinstance(data, pint.Quantity), name
        assert data.units == unit, name
    assert not isinstance(quantified["plain"].data, pint.Quantity)
    assert quantified["rate"].pint.to("1/picosecond").pint.magnitude.tolist() == [pytest.approx(0.002)]
    assert np.allclose(quantified["positions"].pint.to("nanometer").pint.magnitude, np.arange(6.0).reshape(2, 3) / 10)

    replica = quantify(_open(path, group="replica"))
    energy = replica["energy"].data
    assert energy.units == KJ_MOL
    assert np.allclose(energy.magnitude[:, 0], [-1.0, -4.184])
    assert np.allclose(replica["energy"].pint.to("kilocalorie/mole").pint.magnitude[:, 0], [-1.0 / 4.184, -1.0])


@pytest.mark.parametrize("unit", ["second", "nanosecond", "picosecond", "day", "hour"])
def test_time_quantities_stay_numbers_in_xarray(open_store, tmp_path, unit, quantify):
    """pint's singular unit names are not CF time units, so xarray does not decode them to timedelta64."""
    store = open_store()
    store.duration.write(ureg.Quantity(2.5, unit))
    store.times.append(ureg.Quantity(1.0, unit))
    store.times.append(ureg.Quantity(2.0, unit))
    store.close()
    ds = _open(tmp_path / "run.nc")
    assert ds["duration"].dtype == np.float64 and ds["duration"].values.tolist() == [2.5]
    assert ds["times"].dtype == np.float64 and ds["times"].values[:, 0].tolist() == [1.0, 2.0]
    quantified = quantify(ds)
    assert quantified["duration"].data.units == ureg.Unit(unit)
    assert quantified["times"].data.units == ureg.Unit(unit)


def test_metadata_becomes_xarray_attributes(open_store, tmp_path):
    store = open_store()
    store.add_metadata("title", "a run")
    store.add_metadata("seed", 7)
    store.add_metadata("box", [1.0, 2.0, 3.0])
    store.energy.write(1.0 * KJ_MOL)
    store.energy.add_metadata("comment", "total")
    store.close()
    ds = _open(tmp_path / "run.nc")
    user_attrs = {k: v for k, v in ds.attrs.items() if not k.startswith("nstore_")}
    assert user_attrs["title"] == "a run" and user_attrs["seed"] == 7
    assert user_attrs["box"].tolist() == [1.0, 2.0, 3.0]
    assert set(user_attrs) == {"title", "seed", "box"}
    assert ds["energy"].attrs["comment"] == "total"
    assert ds["energy"].attrs["IODriver_Unit"] == "kilojoule/mole"


def test_writing_after_importing_pint_xarray_keeps_scalar_quantities_scalar(open_store, tmp_path, quantify):
    """With force_ndarray_like on (pint-xarray imported), 300 K has a 0-d array magnitude; it is still a scalar."""
    quantify(xr.Dataset())  # imports pint-xarray: the registry now makes 0-d arrays
    value = 300.0 * ureg.kelvin
    assert type(value.magnitude) is np.ndarray and value.magnitude.shape == ()
    store = open_store()
    store.temperature.write(value)
    store.energies.append(-1.0 * KJ_MOL)
    store.energies.append(np.float64(-2.0) * KJ_MOL)
    read = store.temperature.read()
    assert read.units == ureg.kelvin and float(read.magnitude) == 300.0
    store.close()
    ds = _open(tmp_path / "run.nc")
    assert ds["temperature"].dims == ("scalar",) and ds["temperature"].attrs["type"] == "float"
    assert ds["energies"].dims == ("unlimited0", "scalar") and ds["energies"].values[:, 0].tolist() == [-1.0, -2.0]
    assert quantify(ds)["energies"].data.units == KJ_MOL


def test_square_arrays_get_one_dimension_name_per_axis(open_store, tmp_path):
    """xarray warns that most of its functions fail on duplicate dimension names; new variables have none."""
    store = open_store()
    store.matrix.write(np.eye(3))
    store.box.write(np.eye(3) * ureg.nanometer)
    store.cube.write(np.zeros((2, 2, 2), dtype=np.int32))
    store.frames.append(np.eye(3))
    store.frames.append(2 * np.eye(3))
    store.close()
    path = tmp_path / "run.nc"
    for engine in (None, "nstore"):  # the default engine, and nstore's reading the closed file
        ds = _open(path, engine=engine)  # (fails on any warning, the duplicate-dimension one included)
        assert ds["matrix"].dims == ("iterable3", "iterable3_1")
        assert ds["box"].dims == ("iterable3", "iterable3_1")
        assert ds["cube"].dims == ("iterable2", "iterable2_1", "iterable2_2")
        assert ds["frames"].dims == ("unlimited0", "iterable3", "iterable3_1")
        assert ds["frames"].sum("iterable3_1").values.tolist() == [[1.0] * 3, [2.0] * 3]  # reductions work
    reopened = open_store()
    assert np.array_equal(reopened.matrix.read(), np.eye(3))
    assert np.array_equal(reopened.frames.read(), np.array([np.eye(3), 2 * np.eye(3)]))
    reopened.frames.append(3 * np.eye(3))  # the existing variable keeps its dimensions


def test_files_with_shared_dimension_names_still_read(tmp_path, driver_kind, daemon_factory):
    """Files written before (and by the classic layer) use (iterable3, iterable3): they keep reading and growing."""
    import netCDF4

    from nstore import NetCDFIODriver, StorageInterface, connect

    path = tmp_path / "old.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("iterable3", 3)
        nc.createDimension("unlimited0", None)
        for name, dims, value in (("matrix", ("iterable3", "iterable3"), np.eye(3)),
                                  ("frames", ("unlimited0", "iterable3", "iterable3"), np.array([np.eye(3)]))):
            var = nc.createVariable(name, np.float64, dims)
            var[...] = value
            var.setncatts({"IODriver_Type": "numpy.ndarray", "type": "float64", "IODriver_Unit": "NoneType",
                           "IODriver_Storage_Type": "variables", "IODriver_Appendable": int(len(dims) == 3)})
    if driver_kind == "inprocess":
        driver = NetCDFIODriver(str(path))
    else:
        daemon = daemon_factory(path)
        driver = connect(daemon.endpoint, timeout=30)
    store = StorageInterface(driver)
    try:
        assert np.array_equal(store.matrix.read(), np.eye(3))
        store.frames.append(2 * np.eye(3))
        assert np.array_equal(store.frames.read(-1), 2 * np.eye(3))
        if driver_kind == "remote":
            with pytest.warns(UserWarning, match="Duplicate dimension names"):  # what xarray says of such files
                with xr.open_dataset(path, engine="nstore") as ds:
                    assert ds["frames"].dims == ("unlimited0", "iterable3", "iterable3")
                    assert np.array_equal(ds["frames"].values[-1], 2 * np.eye(3))
    finally:
        store.close()
    with pytest.warns(UserWarning, match="Duplicate dimension names"):
        with xr.open_dataset(path, engine="nstore") as ds:
            assert np.array_equal(ds["matrix"].values, np.eye(3))
