"""Shared fixtures: a store factory parametrized over both drivers, and real daemons."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from nstore import NetCDFIODriver, StorageInterface, connect

from daemons import Daemon, stop_daemon_on_close

DRIVERS = ["inprocess", "remote"]


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run tests marked slow (long fuzzing, churn and load runs)")


def pytest_collection_modifyitems(config, items):
    """Without --slow, tests marked ``slow`` are deselected (not reported as skipped)."""
    if config.getoption("--slow"):
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]


@pytest.fixture
def daemon_factory():
    """``daemon_factory(file, *args)`` -> a running :class:`Daemon`; all are stopped by PID at teardown."""
    started: list[Daemon] = []

    def _start(file_name, *args: str, **kwargs) -> Daemon:
        daemon = Daemon(str(file_name), *args, **kwargs)
        started.append(daemon)
        return daemon

    yield _start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def runtime_dir(monkeypatch):
    """A short, fresh XDG_RUNTIME_DIR (where default ipc sockets live) for this test and its daemons."""
    path = tempfile.mkdtemp(prefix="nx", dir="/tmp")
    monkeypatch.setenv("XDG_RUNTIME_DIR", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=DRIVERS)
def driver_kind(request) -> str:
    return request.param


@pytest.fixture
def open_store(tmp_path, driver_kind, daemon_factory):
    """``open_store(name="run.nc")`` -> StorageInterface on a file in tmp_path, through either driver.

    For the remote driver a daemon is started for the file; closing the store
    also stops that daemon, so after ``store.close()`` the file can be opened
    with netCDF4 directly, and calling ``open_store(name)`` again reopens it
    (through a fresh daemon). Every store is closed at teardown.
    """
    opened: list[StorageInterface] = []

    def _open(name: str = "run.nc") -> StorageInterface:
        path = str(tmp_path / name)
        if driver_kind == "inprocess":
            driver = NetCDFIODriver(path)
        else:
            daemon = daemon_factory(path)
            driver = connect(daemon.endpoint, timeout=30)
            stop_daemon_on_close(driver, daemon)
        store = StorageInterface(driver)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        try:
            store.close()
        except Exception:
            pass
