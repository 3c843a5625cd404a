"""Issue 13 item 6: crafted files give one clear error naming the variable; tools list the rest.

Each file is built with netCDF4 directly: a good variable nstore wrote, plus one
crafted entry. Storage behaviour runs through both drivers (open_store).
"""

from __future__ import annotations

import os
import subprocess
import sys

import netCDF4
import numpy as np
import pytest

from nstore.daemon.daemon_engine import MAX_CHECKPOINT_SEQ
from nstore.inspect import entries

NSTORE_ATTRS = {"IODriver_Type": "float", "type": "float", "IODriver_Unit": "NoneType",
                "IODriver_Storage_Type": "variables", "IODriver_Appendable": 0}


def _good_file(path, data_model: str = "NETCDF4") -> netCDF4.Dataset:
    """A file holding ``good`` = 1.5 as nstore stores a float; left open for the crafting."""
    ds = netCDF4.Dataset(str(path), "w", format=data_model)
    ds.createDimension("scalar", 1)
    var = ds.createVariable("good", "f8", ("scalar",))
    var.setncatts(NSTORE_ATTRS)
    var[...] = 1.5
    return ds


def _zero_d_appendable(ds):
    ds.createVariable("bad", "f8", ()).setncatts({**NSTORE_ATTRS, "IODriver_Appendable": 1})


def _appendable_yes(ds):
    ds.createDimension("unlimited0", None)
    ds.createVariable("bad", "f8", ("unlimited0",)).setncatts({**NSTORE_ATTRS, "IODriver_Appendable": "yes"})


def _unknown_type(ds):
    ds.createVariable("bad", "f8", ("scalar",)).setncatts({**NSTORE_ATTRS, "IODriver_Type": "martian"})


def _huge_dimension(ds):
    ds.createDimension("big", 10**12)
    ds.createVariable("bad", "f8", ("big",)).setncatts(
        {**NSTORE_ATTRS, "IODriver_Type": "numpy.ndarray", "type": "numpy.ndarray"})


def _root_variable_named_scalar(ds):
    ds.createVariable("scalar", "f8", ("scalar",)).setncatts(NSTORE_ATTRS)


CRAFTED = {  # name: (craft, the variable, what the error says)
    "0-d appendable": (_zero_d_appendable, "bad", "bad: IODriver_Appendable is 1 but the variable has no dimension"),
    "appendable 'yes'": (_appendable_yes, "bad", "bad: IODriver_Appendable is 'yes', not 0 or 1"),
    "unknown IODriver_Type": (_unknown_type, "bad", "bad: IODriver_Type 'martian' is not a kind nstore knows"),
    "dimension 10^12": (_huge_dimension, "bad", "bad: declares entries of shape (1000000000000,)"),
    "root variable 'scalar'": (_root_variable_named_scalar, "scalar", "scalar: 'scalar' is reserved at the top level"),
}


def _crafted(path, case: str) -> None:
    ds = _good_file(path)
    CRAFTED[case][0](ds)
    ds.close()


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_variable_gets_one_clear_error_and_the_rest_serves(tmp_path, open_store, case):
    _crafted(tmp_path / "run.nc", case)
    _, bad, message = CRAFTED[case]
    store = open_store("run.nc")
    driver = store.storage_driver
    with pytest.raises(ValueError) as failure:
        driver.read_variable(bad)
    assert message in str(failure.value)
    with pytest.raises(ValueError, match="^" + message.split(":")[0] + ":"):
        driver.variable_info(bad)
    assert driver.read_variable("good") == 1.5
    assert driver.append_variable("more", 2.0) == 0  # the file keeps serving
    listed = {entry["path"]: entry for entry in entries(driver)}
    assert listed[bad]["kind"] == "unreadable" and message in listed[bad]["error"]
    assert listed["good"]["kind"] == "fixed" and listed["more"]["kind"] == "appendable"


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_nstore_inspect_marks_the_bad_entry_and_lists_the_rest(tmp_path, case):
    _crafted(tmp_path / "run.nc", case)
    result = _nstore("inspect", str(tmp_path / "run.nc"))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert "  good: fixed float" in lines
    bad, message = CRAFTED[case][1:]
    assert any(line.startswith(f"  {bad}: UNREADABLE: ") and message in line for line in lines), result.stdout


def test_a_netcdf3_file_is_refused_by_name(tmp_path, driver_kind, daemon_factory):
    path = tmp_path / "run.nc"
    _good_file(path, "NETCDF3_64BIT_OFFSET").close()
    expected = "is a NETCDF3_64BIT_OFFSET file; nstore reads and writes NETCDF4 files only"
    if driver_kind == "inprocess":
        from nstore import NetCDFIODriver

        for mode in (None, "r"):
            with pytest.raises(OSError, match=expected):
                NetCDFIODriver(str(path), mode)
    else:
        with pytest.raises(RuntimeError, match=expected):
            daemon_factory(path)
    result = _nstore("inspect", str(path))
    assert result.returncode == 1 and expected in result.stderr and "Traceback" not in result.stderr


def _seq_file(path, seq) -> None:
    ds = _good_file(path)
    ds.setncattr("nstore_checkpoint_seq", seq)
    ds.close()


def _seq_of(path) -> int:
    with netCDF4.Dataset(str(path)) as ds:
        return int(ds.getncattr("nstore_checkpoint_seq"))


@pytest.mark.parametrize("seq", [np.int64(2**63 - 1), np.int64(-5), "many"])
def test_the_daemon_serves_a_file_whose_checkpoint_attribute_is_out_of_range(tmp_path, daemon_factory, seq):
    from nstore import connect

    path = tmp_path / "run.nc"
    _seq_file(path, seq)
    logs = []
    for value in (2.0, 3.0):  # twice: the first daemon's checkpoints must leave a file the next one opens
        daemon = daemon_factory(path)
        driver = connect(daemon.endpoint, timeout=30)
        try:
            driver.append_variable("x", value)
        finally:
            driver.close()
        assert daemon.stop() == 0, daemon.log()
        logs.append(daemon.log())
    assert "nstore_checkpoint_seq is" in logs[0] and "read as 0" in logs[0], logs[0]
    assert "nstore_checkpoint_seq is" not in logs[1], logs[1]
    assert 0 <= _seq_of(path) <= MAX_CHECKPOINT_SEQ
    with netCDF4.Dataset(str(path)) as ds:
        assert np.asarray(ds["x"][:]).ravel().tolist() == [2.0, 3.0] and float(ds["good"][0]) == 1.5


def test_nstored_recover_repairs_an_out_of_range_checkpoint_attribute(tmp_path):
    path = tmp_path / "run.nc"
    _seq_file(path, np.int64(2**63 - 1))
    result = subprocess.run([sys.executable, "-m", "nstore.daemon.cli", "recover", str(path)],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert "nstore_checkpoint_seq is 9223372036854775807, not a batch number" in result.stderr
    assert _seq_of(path) == 0


def test_snapshot_refuses_an_absurdly_large_copy(tmp_path):
    path = tmp_path / "run.nc"
    ds = _good_file(path)
    ds.createDimension("big", 10**9)  # 8 GB declared, nothing written: the file stays a few KB
    ds.createVariable("bad", "f8", ("big",)).setncatts(
        {**NSTORE_ATTRS, "IODriver_Type": "numpy.ndarray", "type": "numpy.ndarray"})
    ds.close()
    out = tmp_path / "copy.nc"
    result = _nstore("snapshot", str(path), str(out))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "a copy would hold about 8000000008 bytes" in result.stderr and "bad declares" in result.stderr
    assert not [name for name in os.listdir(tmp_path) if name.startswith("copy.nc")]


def test_snapshot_refuses_unreadable_variables_by_name(tmp_path):
    _crafted(tmp_path / "run.nc", "unknown IODriver_Type")
    result = _nstore("snapshot", str(tmp_path / "run.nc"), str(tmp_path / "copy.nc"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "unreadable variables: bad: IODriver_Type 'martian'" in result.stderr
    assert not os.path.exists(tmp_path / "copy.nc")


def _nstore(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nstore.cli", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
