"""A second writer (issue 13, item 8): one daemon per data file, whatever path reaches it.

With HDF5's own file lock off (HDF5_USE_FILE_LOCKING=FALSE, common on cluster
file systems) nothing but nstore's lock keeps a second daemon (through a hard
link) or an in-process driver from writing a served file.
"""

from __future__ import annotations

import os

import pytest

from nstore import NetCDFIODriver, StorageInterface, connect
from nstore.daemon.lock import AlreadyServedError

NO_HDF5_LOCK = {"HDF5_USE_FILE_LOCKING": "FALSE"}


@pytest.fixture
def served(tmp_path, runtime_dir, daemon_factory):
    """A daemon (HDF5 locking off) serving ``data/run.nc``, which holds one entry; also a hard link to it."""
    (tmp_path / "data").mkdir()
    (tmp_path / "other").mkdir()
    file_name = str(tmp_path / "data" / "run.nc")
    store = StorageInterface(NetCDFIODriver(file_name))
    store.x.append(1.0)
    store.close()
    hard_link = str(tmp_path / "other" / "alias.nc")
    os.link(file_name, hard_link)
    daemon = daemon_factory(file_name, env=NO_HDF5_LOCK)
    return daemon, file_name, hard_link


def test_second_daemon_through_a_hard_link_is_refused(served, daemon_factory):
    daemon, file_name, hard_link = served
    with pytest.raises(RuntimeError) as failed:
        daemon_factory(hard_link, env=NO_HDF5_LOCK)
    message = str(failed.value)
    assert "already served by nstored" in message, message
    assert f"pid {daemon.pid}" in message and daemon.endpoint in message, message
    assert daemon.process.poll() is None
    driver = connect(daemon.endpoint, timeout=30)
    try:
        assert StorageInterface(driver).x.append(2.0) == 1
    finally:
        driver.close()


@pytest.mark.parametrize("hdf5_lock", [False, True], ids=["hdf5-lock-off", "hdf5-lock-on"])
@pytest.mark.parametrize("through_link", [False, True], ids=["same-path", "hard-link"])
def test_in_process_writer_of_a_served_file_is_refused(served, monkeypatch, hdf5_lock, through_link):
    daemon, file_name, hard_link = served
    if not hdf5_lock:
        monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "FALSE")
    with pytest.raises(AlreadyServedError) as failed:
        NetCDFIODriver(hard_link if through_link else file_name)
    message = str(failed.value)
    assert f"pid {daemon.pid}" in message and daemon.endpoint in message, message
    assert "nstore.connect(" in message, message
    for mode in ("a", "w"):
        with pytest.raises(AlreadyServedError):
            NetCDFIODriver(file_name, mode)
    driver = connect(daemon.endpoint, timeout=30)
    try:  # the daemon and its file are unharmed
        assert list(StorageInterface(driver).x.read()) == [1.0]
    finally:
        driver.close()


def test_file_is_writable_in_process_once_the_daemon_stopped(served):
    daemon, file_name, hard_link = served
    daemon.stop()
    store = StorageInterface(NetCDFIODriver(hard_link))
    assert store.x.append(2.0) == 1
    store.close()
