"""The ``nstore`` command line (inspect, read, snapshot), run as ``python -m nstore.cli`` in subprocesses.

Daemons come from ``daemon_factory`` (stopped by PID at teardown); the writer
process of the live-snapshot test is killed by PID in a finalizer. Every
subprocess call and every wait has a timeout.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from nstore import NetCDFIODriver, StorageInterface, connect, ureg
from nstore.inspect import walk
from nstore.protocol.endpoints import lock_path

CLI_TIMEOUT_S = 60.0
KJ_MOL = ureg.kilojoule / ureg.mole


def run_cli(*args, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nstore.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def make_sample(path: Path) -> None:
    """A small closed file with groups, both kinds, units and metadata."""
    store = StorageInterface(NetCDFIODriver(str(path)))
    store.add_metadata("title", "sample run")
    store.settings.write({"steps": 10, "integrator": "langevin"})
    store.box.write(np.eye(3) * ureg.nanometer)
    store.flag.write(True)
    for i in range(4):
        store.replica.energy.append(-(i + 1.5) * KJ_MOL)
        store.replica.positions.append(np.full((2, 3), float(i), dtype=np.float32))
        store.log.append(f"step {i}")
    store.replica.add_metadata("index", 0)
    store.replica.energy.add_metadata("comment", "potential")
    store.close()


SAMPLE_TREE = [
    "  @title = 'sample run'",
    "  box: fixed pint.Quantity[numpy.ndarray] shape 3x3 [nanometer]",
    "  flag: fixed bool",
    "  log: appendable str x4",
    "  replica/",
    "    @index = 0",
    "    energy: appendable pint.Quantity[float] x4 [kilojoule/mole]",
    "      @comment = 'potential'",
    "    positions: appendable numpy.ndarray[float32] x4 of shape 2x3",
    "  settings: fixed dict",
]

SAMPLE_ENTRIES = [
    {"path": "box", "kind": "fixed", "python_type": "pint.Quantity[numpy.ndarray]", "io_type": "quantity",
     "type": "numpy.ndarray", "shape": [3, 3], "unit": "nanometer", "metadata": {}},
    {"path": "flag", "kind": "fixed", "python_type": "bool", "io_type": "bool", "type": "bool", "shape": [1],
     "unit": None, "metadata": {}},
    {"path": "log", "kind": "appendable", "python_type": "str", "io_type": "str", "type": "str", "shape": [1],
     "unit": None, "length": 4, "metadata": {}},
    {"path": "replica", "kind": "group", "metadata": {"index": 0}},
    {"path": "replica/energy", "kind": "appendable", "python_type": "pint.Quantity[float]", "io_type": "quantity",
     "type": "float", "shape": [1], "unit": "kilojoule/mole", "length": 4, "metadata": {"comment": "potential"}},
    {"path": "replica/positions", "kind": "appendable", "python_type": "numpy.ndarray[float32]",
     "io_type": "numpy.ndarray", "type": "float32", "shape": [2, 3], "unit": None, "length": 4, "metadata": {}},
    {"path": "settings", "kind": "fixed", "python_type": "dict", "io_type": "dict", "type": "dict", "shape": [1],
     "unit": None, "metadata": {}},
]


# --- inspect -------------------------------------------------------------------------------------


def test_inspect_reads_a_file_directly(tmp_path):
    path = tmp_path / "run.nc"
    make_sample(path)
    result = run_cli("inspect", path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}  (read-only, in-process)"
    assert lines[1:] == SAMPLE_TREE

    result = run_cli("inspect", path, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"file": str(path), "source": {"via": "file"},
                                         "metadata": {"title": "sample run"}, "entries": SAMPLE_ENTRIES}


def test_inspect_goes_through_the_daemon_that_serves_the_file(tmp_path, daemon_factory):
    path = tmp_path / "run.nc"
    make_sample(path)
    daemon = daemon_factory(path)
    driver = connect(daemon.endpoint, timeout=30)
    try:
        store = StorageInterface(driver)
        store.log.append("step 4")  # acknowledged, not necessarily in the file yet
        store.replica.energy.add_metadata("comment", "potential energy")
        for args in ([], ["--endpoint", daemon.endpoint]):  # found through the lock file, or named
            result = run_cli("inspect", path, "--json", *args)
            assert result.returncode == 0, result.stderr
            document = json.loads(result.stdout)
            assert document["source"] == {"via": "nstored", "endpoint": daemon.endpoint, "pid": daemon.pid}
            assert document["file"] == str(path.resolve())
            entries = {e["path"]: e for e in document["entries"]}
            assert entries["log"]["length"] == 5
            assert entries["replica/energy"]["metadata"] == {"comment": "potential energy"}
        result = run_cli("inspect", path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == f"{path.resolve()}  (through nstored pid {daemon.pid} at {daemon.endpoint})"
        assert "  log: appendable str x5" in result.stdout.splitlines()
    finally:
        driver.close()


def test_inspect_refuses_an_endpoint_serving_another_file(tmp_path, daemon_factory):
    make_sample(tmp_path / "a.nc")
    make_sample(tmp_path / "b.nc")
    daemon = daemon_factory(tmp_path / "a.nc")
    result = run_cli("inspect", tmp_path / "b.nc", "--endpoint", daemon.endpoint)
    assert result.returncode == 1
    assert result.stderr == f"nstore: {daemon.endpoint} serves {(tmp_path / 'a.nc').resolve()}, not {(tmp_path / 'b.nc').resolve()}\n"


def test_inspect_ignores_a_stale_lock(tmp_path):
    path = tmp_path / "run.nc"
    make_sample(path)
    gone = f"ipc://{tmp_path}/gone.sock"
    Path(lock_path(str(path))).write_text(json.dumps({"pid": 999999999, "endpoint": gone, "file": str(path)}))
    started = time.monotonic()
    result = run_cli("inspect", path, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["source"] == {"via": "file"}
    assert time.monotonic() - started < 30


def test_daemon_paths_work_without_netcdf4(tmp_path, daemon_factory):
    """``nstore inspect``/``read`` through a daemon never import netCDF4 (a worker node may not have it)."""
    path = tmp_path / "run.nc"
    make_sample(path)
    daemon = daemon_factory(path)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["netCDF4"] = None  # any import of netCDF4 now fails
        from nstore.cli import main
        assert main(["inspect", {str(path)!r}]) == 0
        assert main(["read", {str(path)!r}, "replica/energy", "--index", "0"]) == 0
        assert "netCDF4" not in [m for m, mod in sys.modules.items() if mod is not None]
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert f"through nstored pid {daemon.pid}" in result.stdout
    assert result.stdout.splitlines()[-1] == "-1.5 kilojoule/mole"


# --- read ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, expected", [
    (["settings"], "{'steps': 10, 'integrator': 'langevin'}"),
    (["flag"], "True"),
    (["box"], "[[1. 0. 0.]\n [0. 1. 0.]\n [0. 0. 1.]] nanometer"),
    (["log"], "['step 0', 'step 1', 'step 2', 'step 3']"),
    (["log", "--index", "-1"], "step 3"),
    (["replica/energy"], "[-1.5 -2.5 -3.5 -4.5] kilojoule/mole"),
    (["replica/energy", "--index", "1"], "-2.5 kilojoule/mole"),
    (["replica/energy", "--slice", "1:3"], "[-2.5 -3.5] kilojoule/mole"),
    (["replica/energy", "--slice=-2:"], "[-3.5 -4.5] kilojoule/mole"),
    (["replica/energy", "--slice", "::2"], "[-1.5 -3.5] kilojoule/mole"),
    (["replica/positions", "--index", "2"], "[[2. 2. 2.]\n [2. 2. 2.]]"),
])
def test_read_prints_values(tmp_path, args, expected):
    path = tmp_path / "run.nc"
    make_sample(path)
    result = run_cli("read", path, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"


def test_read_through_the_daemon_prints_the_same(tmp_path, daemon_factory):
    path = tmp_path / "run.nc"
    make_sample(path)
    direct = [run_cli("read", path, *args).stdout for args in (["settings"], ["replica/positions"], ["log"])]
    daemon_factory(path)
    served = [run_cli("read", path, *args).stdout for args in (["settings"], ["replica/positions"], ["log"])]
    assert served == direct
    assert direct[1].startswith("[[[0. 0. 0.]\n  [0. 0. 0.]]")


@pytest.mark.parametrize("args, message", [
    (["nothing/here"], "nstore: KeyError: nothing/here: no variable stored here\n"),
    (["box", "--index", "0"], "nstore: TypeError: box: was stored with write(); read() takes no index for it\n"),
    (["log", "--index", "9"], "nstore: ValueError: log: index 9 is out of range for 4 stored entries\n"),
])
def test_read_errors_are_one_line(tmp_path, args, message):
    path = tmp_path / "run.nc"
    make_sample(path)
    result = run_cli("read", path, *args)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", message)


def test_read_rejects_bad_slices_and_missing_files(tmp_path):
    result = run_cli("read", tmp_path / "run.nc", "x", "--slice", "1-3")
    assert result.returncode == 2 and "is not a slice like 10:20" in result.stderr
    result = run_cli("read", tmp_path / "missing.nc", "x")
    assert (result.returncode, result.stderr) == (1, f"nstore: {tmp_path / 'missing.nc'}: no such file\n")


# --- snapshot --------------------------------------------------------------------------------------------


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if hasattr(a, "units"):
        return a.units == b.units and _same(a.magnitude, b.magnitude)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _contents(path: Path) -> dict:
    driver = NetCDFIODriver(str(path), access_mode="r")
    try:
        out = {"/": driver.read_metadata("/")}
        for name, info in walk(driver):
            out[name] = (info, driver.read_metadata(name), None if info is None else driver.read_variable(name))
        return out
    finally:
        driver.close()


def test_snapshot_copies_everything(tmp_path, daemon_factory):
    path, out = tmp_path / "run.nc", tmp_path / "snap.nc"
    make_sample(path)
    store = StorageInterface(NetCDFIODriver(str(path)))
    store.numbers.append(np.int32(7))  # the other kinds too
    store.numbers.append(np.int32(8))
    store.mixed.append([1, "a", None])
    store.pairs.append((1, 2))
    store.masks.append(np.array([True, False]))
    store.single.write(np.float32(0.5))
    store.storage_driver.get_directory("empty")  # a group without variables
    store.storage_driver.add_metadata("note", "no variables here", path="empty")
    store.close()
    daemon = daemon_factory(path)
    result = run_cli("snapshot", path, out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"{out}: snapshot of {path.resolve()} (through nstored pid {daemon.pid} at "
                             f"{daemon.endpoint}): 11 variables, 2 groups, 17 appended entries\n")
    assert not [p.name for p in tmp_path.iterdir() if ".partial" in p.name]
    daemon.stop()
    source, copy = _contents(path), _contents(out)
    assert list(copy) == list(source)
    for name in source:
        assert _same(copy[name], source[name]), name
    with xr.open_dataset(out, group="replica") as ds:
        assert ds["positions"].shape == (4, 2, 3)
        assert ds["energy"].attrs["units"] == "kilojoule/mole"


def test_snapshot_of_a_file_no_daemon_serves(tmp_path):
    path, out = tmp_path / "run.nc", tmp_path / "snap.nc"
    make_sample(path)
    out.write_bytes(b"an older snapshot")  # replaced
    result = run_cli("snapshot", path, out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"{out}: snapshot of {path} (read-only, in-process): 6 variables, 1 groups, "
                             f"12 appended entries\n")
    source, copy = _contents(path), _contents(out)
    assert list(copy) == list(source) and all(_same(copy[name], source[name]) for name in source)


def test_snapshot_of_a_classic_file(tmp_path, daemon_factory):
    path, out = tmp_path / "classic.nc", tmp_path / "snap.nc"
    path.write_bytes((Path(__file__).parent / "data" / "classic_appended.nc").read_bytes())
    daemon_factory(path)
    result = run_cli("snapshot", path, out)
    assert result.returncode == 0, result.stderr
    copy = _contents(out)
    assert copy["/"] == {"title": "classic appended fixture"}
    assert copy["ints"][2].tolist() == [1, 20, 3]
    assert copy["strs"][2] == ["alpha", "beta", "gamma"]
    assert copy["dicts"][2][1]["temperature"] == 310.0 * ureg.kelvin
    assert copy["group/sub/energies"][2].units == KJ_MOL
    with xr.open_dataset(out) as ds:
        assert ds["temperatures"].attrs["units"] == "kelvin"  # the copy carries CF units; the classic file does not


def test_snapshot_refuses_to_overwrite_its_source(tmp_path, daemon_factory):
    path = tmp_path / "run.nc"
    make_sample(path)
    daemon_factory(path)
    result = run_cli("snapshot", path, path)
    assert (result.returncode, result.stderr) == (
        1, f"nstore: {path}: the snapshot must go to another file than the one it copies\n")


WRITER = """
import os, sys, time
import numpy as np
from nstore import StorageInterface, connect, ureg
endpoint, stop_file = sys.argv[1], sys.argv[2]
store = StorageInterface(connect(endpoint, timeout=30))
store.add_metadata("title", "live run")
step = 0
while not os.path.exists(stop_file) and step < 100_000:
    store.step.append(step)
    store.replica.energy.append(-float(step) * ureg.kilojoule / ureg.mole)
    store.replica.positions.append(np.full((4, 3), float(step)) * ureg.nanometer)
    store.log.append(f"step {step}")
    store.progress.write(step)
    step += 1
store.close()
"""


@pytest.fixture
def writer_process(tmp_path):
    """``writer_process(endpoint)`` -> a process appending to the store until tmp_path/stop exists; killed by PID."""
    processes: list[subprocess.Popen] = []
    stop_file = tmp_path / "stop"

    def _start(endpoint: str) -> subprocess.Popen:
        script = tmp_path / "writer.py"
        script.write_text(WRITER)
        log = open(tmp_path / "writer.log", "wb")
        process = subprocess.Popen([sys.executable, str(script), endpoint, str(stop_file)],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        processes.append(process)
        return process

    yield _start
    stop_file.touch()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, 9)
            process.wait(timeout=10)


def _wait_for_length(store: StorageInterface, name: str, at_least: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            length = store.storage_driver.variable_info(name)["length"]
        except KeyError:
            length = 0
        if length >= at_least:
            return length
        assert time.monotonic() < deadline, f"{name} did not reach {at_least} entries in {timeout} s"
        time.sleep(0.05)


def test_snapshot_of_a_live_run_is_a_consistent_cut(tmp_path, daemon_factory, writer_process):
    path, out = tmp_path / "run.nc", tmp_path / "snap.nc"
    daemon = daemon_factory(path)
    writer = writer_process(daemon.endpoint)
    watcher = StorageInterface(connect(daemon.endpoint, timeout=30))
    try:
        before = _wait_for_length(watcher, "step", 50)
        result = run_cli("snapshot", path, out)
        assert result.returncode == 0, result.stderr
        after = _wait_for_length(watcher, "step", 0)
        assert writer.poll() is None, (tmp_path / "writer.log").read_text()
        assert after > before  # the writer kept appending while the snapshot was taken
    finally:
        watcher.close()

    with xr.open_dataset(out) as root, xr.open_dataset(out, group="replica") as replica:
        assert root.attrs["title"] == "live run"
        steps = root["step"].values[:, 0]
        logs = root["log"].values[:, 0]
        energies = replica["energy"].values[:, 0]
        positions = replica["positions"].values
        progress = int(root["progress"].values[0])
        assert replica["energy"].attrs["units"] == "kilojoule/mole"
    a, b, c, d = len(steps), len(energies), len(positions), len(logs)
    assert before <= a <= after
    # one instant: the writer appends step, energy, positions, log, then writes progress, step after step
    assert a >= b >= c >= d >= a - 1, (a, b, c, d)
    assert progress == d - 1 or (d == a and progress == d - 2), (a, d, progress)
    assert steps.tolist() == list(range(a))
    assert energies.tolist() == [-float(i) for i in range(b)]
    assert np.array_equal(positions, np.array([np.full((4, 3), float(i)) for i in range(c)]).reshape(c, 4, 3))
    assert logs.tolist() == [f"step {i}" for i in range(d)]


# --- packaging -------------------------------------------------------------------------------------------


def test_console_script_entry_point():
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    target = pyproject["project"]["scripts"]["nstore"]
    assert target == "nstore.cli:main"
    module, _, name = target.partition(":")
    assert callable(getattr(importlib.import_module(module), name))
    result = run_cli("--help")
    assert result.returncode == 0 and "inspect" in result.stdout and "snapshot" in result.stdout


# --- engine bug met by `inspect` ---------------------------------------------------------------------------


def test_variable_info_of_a_fixed_variable_counts_one_entry_from_the_start(open_store):
    """variable_info() says length 1 for a fixed variable read from disk, but 0 in the session that wrote it.

    (NetCDFIODriver._create sets ``var.length = 0`` for fixed variables too; through a daemon that
    session lasts as long as the daemon.)
    """
    store = open_store()
    store.box.write(np.eye(3))
    assert store.storage_driver.variable_info("box")["length"] == 1
