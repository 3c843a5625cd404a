"""Shared fixtures: a store factory parametrized over both drivers."""

from __future__ import annotations

import pytest

from nstore import NetCDFIODriver, StorageInterface

DRIVERS = ["inprocess"]


@pytest.fixture(params=DRIVERS)
def driver_kind(request) -> str:
    return request.param


@pytest.fixture
def open_store(tmp_path, driver_kind):
    """``open_store(name="run.nc", **driver_kwargs)`` -> StorageInterface on a file in tmp_path.

    Call it again with the same name to reopen (close the previous store first).
    Every store it made is closed at teardown.
    """
    opened: list[StorageInterface] = []

    def _open(name: str = "run.nc", **kwargs) -> StorageInterface:
        path = str(tmp_path / name)
        driver = NetCDFIODriver(path, **kwargs)
        store = StorageInterface(driver)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        try:
            store.close()
        except Exception:
            pass
