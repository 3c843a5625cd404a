"""Full disk, read-only file system, immutable file, failing checkpoint: nstored keeps serving (issue 13, item 3).

The full disk is a small tmpfs each test mounts (and unmounts, whatever
happens) itself, filled by a filler file that is deleted to bring space back.
Mounting needs root: the tests skip only where the machine cannot (not root
and not in CI); in CI, which runs as root, they must run.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from nstore import NetCDFIODriver, connect
from nstore.protocol.transport import call

from daemons import Daemon

WAIT_S = 30.0  # every wait below gives up (and fails) after this long

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"),
    reason="mounting a small tmpfs (a disk that fills up) needs root; CI runs these as root")


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


@pytest.fixture
def small_disk():
    """A fresh 2 MB tmpfs (short path: ipc sockets), unmounted at teardown even if the test failed."""
    path = tempfile.mkdtemp(prefix="ndf", dir="/tmp")
    _run("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", path)
    try:
        yield path
    finally:
        if subprocess.run(["umount", path], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)  # a straggler holds it
        os.rmdir(path)


@pytest.fixture
def daemons():
    """``daemons(file, *args)`` -> a running Daemon, stopped by PID at teardown (before ``small_disk``
    is unmounted: request this fixture after it)."""
    started: list[Daemon] = []

    def start(file_name: str, *args: str) -> Daemon:
        started.append(Daemon(file_name, *args))
        return started[-1]

    yield start
    for daemon in started:
        daemon.stop()


def fill(directory: str) -> str:
    """Fill the file system of ``directory`` with a filler file; its path (delete it to free the space)."""
    filler = os.path.join(directory, "filler")
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as fh:
        while True:
            try:
                fh.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    for size in (4096, 512, 1):  # the last partial page too
        with open(filler, "ab", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError:
                pass
    return filler


def wait_for(condition, what: str):
    """Poll ``condition()`` until it returns something true; fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {WAIT_S:.0f} s waiting for {what}")


def status(daemon: Daemon) -> dict:
    return call(daemon.endpoint, "status", timeout=10)


def serving(daemons, file_name: str, checkpoint_interval: str, count: int):
    """A daemon for ``file_name`` and a driver that has appended 0.0, 1.0, ... (``count`` values) to ``x``."""
    daemon = daemons(file_name, "--checkpoint-interval", checkpoint_interval)
    driver = connect(daemon.endpoint, timeout=10)
    for i in range(count):
        driver.append_variable("x", float(i))
    return daemon, driver


def stored(file_name: str, path: str) -> list:
    driver = NetCDFIODriver(file_name)
    try:
        return [float(v) for v in driver.read_variable(path)]
    finally:
        driver.close()


@needs_root
def test_full_disk_refuses_unjournaled_appends_and_keeps_serving(small_disk, daemons):
    file_name = os.path.join(small_disk, "run.nc")
    daemon, driver = serving(daemons, file_name, "3600", 10)
    acknowledged = [float(i) for i in range(10)]
    filler = fill(small_disk)
    refused = None
    for attempt in range(5000):  # the journal's last page may take a few more records
        try:
            index = driver.append_variable("x", 1000.0 + attempt)
        except OSError as exc:
            refused = exc
            break
        assert index == len(acknowledged)
        acknowledged.append(1000.0 + attempt)
    assert refused is not None, "the disk never filled up"
    assert "No space left on device" in str(refused) and "run.nc.journal" in str(refused), refused
    with pytest.raises(OSError, match="No space left on device"):  # refused again, not half-taken
        driver.append_variable("x", -1.0)
    assert daemon.process.poll() is None, daemon.log()
    assert [float(v) for v in driver.read_variable("x")] == acknowledged  # reads work; nothing refused landed
    os.remove(filler)
    after = [float(i) for i in range(2000, 2010)]
    for value in after:
        assert driver.append_variable("x", value) == len(acknowledged)
        acknowledged.append(value)
    driver.close()
    assert daemon.stop() == 0, daemon.log()
    assert stored(file_name, "x") == acknowledged


@needs_root
def test_failing_checkpoint_on_full_disk_is_reported_and_retried(small_disk, daemons):
    file_name = os.path.join(small_disk, "run.nc")
    daemon, driver = serving(daemons, file_name, "0.3", 20)
    filler = fill(small_disk)
    error = wait_for(lambda: status(daemon)["checkpoint_error"], "the checkpoint to fail")
    assert "No space left on device" in error and "run.nc" in error, error
    failed_since = status(daemon)["last_checkpoint_ok"]
    assert daemon.process.poll() is None, daemon.log()
    assert [float(v) for v in driver.read_variable("x")] == [float(i) for i in range(20)]
    os.remove(filler)
    wait_for(lambda: (lambda s: s["checkpoint_error"] is None and s["last_checkpoint_ok"] > failed_since)(status(daemon)),
             "a retried checkpoint to succeed")
    driver.append_variable("x", 20.0)
    driver.close()
    assert daemon.stop() == 0, daemon.log()
    assert stored(file_name, "x") == [float(i) for i in range(21)]


def test_link_planted_at_the_new_journal_is_reported_and_retried(tmp_path, daemons):
    file_name = str(tmp_path / "run.nc")
    target = tmp_path / "victim"
    target.write_text("keep me\n")
    daemon, driver = serving(daemons, file_name, "0.3", 1)
    planted = file_name + ".journal.new"
    os.symlink(target, planted)
    error = wait_for(lambda: status(daemon)["checkpoint_error"], "the checkpoint to refuse the link")
    assert planted in error and "symbolic link" in error, error
    assert daemon.process.poll() is None, daemon.log()
    assert driver.append_variable("x", 2.0) == 1  # the old journal still takes records
    os.remove(planted)
    wait_for(lambda: status(daemon)["checkpoint_error"] is None, "a retried checkpoint to succeed")
    driver.close()
    assert daemon.stop() == 0, daemon.log()
    assert target.read_text() == "keep me\n"
    assert stored(file_name, "x") == [0.0, 2.0]


@pytest.mark.skipif(shutil.which("chattr") is None, reason="chattr (e2fsprogs) is not installed")
def test_immutable_file_fails_checkpoints_until_writable_again(tmp_path, daemons):
    file_name = str(tmp_path / "run.nc")
    daemon, driver = serving(daemons, file_name, "0.3", 5)
    if subprocess.run(["chattr", "+i", file_name], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("this file system (or user) cannot make a file immutable")
    try:
        error = wait_for(lambda: status(daemon)["checkpoint_error"], "the checkpoint to fail")
        assert file_name in error, error
        for i in range(5, 8):  # the journal, a separate file, still takes them
            driver.append_variable("x", float(i))
        assert [float(v) for v in driver.read_variable("x")] == [float(i) for i in range(8)]  # from memory
        error = wait_for(lambda: status(daemon)["write_error"], "writing the acknowledged appends to fail")
        assert file_name in error and status(daemon)["pending_rows"] >= 3, error  # (and 0-4 if not written yet)
        assert daemon.process.poll() is None, daemon.log()
    finally:
        _run("chattr", "-i", file_name)
    wait_for(lambda: status(daemon)["checkpoint_error"] is None, "a retried checkpoint to succeed")
    wait_for(lambda: (lambda s: s["write_error"] is None and s["pending_rows"] == 0)(status(daemon)),
             "the waiting appends to reach the file")
    driver.close()
    assert daemon.stop() == 0, daemon.log()
    assert stored(file_name, "x") == [float(i) for i in range(8)]


@needs_root
def test_stop_reports_a_daemon_that_did_not_exit_cleanly(small_disk, daemons):
    file_name = os.path.join(small_disk, "run.nc")
    daemon, driver = serving(daemons, file_name, "3600", 5)
    driver.close()
    filler = fill(small_disk)  # the shutdown checkpoint cannot be written
    stop = subprocess.run([sys.executable, "-m", "nstore.daemon.cli", "stop", "--endpoint", daemon.endpoint,
                           "--timeout", "20"], capture_output=True, text=True, timeout=60)
    assert stop.returncode != 0, stop
    assert f"pid {daemon.pid} did not exit cleanly" in stop.stderr and "No space left on device" in stop.stderr, stop
    assert "stopped pid" not in stop.stdout
    assert daemon.process.wait(timeout=WAIT_S) != 0
    os.remove(filler)
    again = daemons(file_name)  # the journal kept what the last checkpoint could not write
    assert again.process.poll() is None
    again.stop()
    assert stored(file_name, "x") == [float(i) for i in range(5)]


@needs_root
def test_start_in_a_read_only_directory_fails_with_one_clear_line(small_disk, runtime_dir):
    _run("mount", "-o", "remount,ro", small_disk)
    file_name = os.path.join(small_disk, "run.nc")
    start = subprocess.run([sys.executable, "-m", "nstore.daemon.cli", "start", file_name],
                           capture_output=True, text=True, timeout=60)
    assert start.returncode != 0
    assert "Traceback" not in start.stderr + start.stdout
    lines = start.stderr.strip().splitlines()
    assert len(lines) == 1 and "Read-only file system" in lines[0] and small_disk in lines[0], start.stderr
    with pytest.raises(ConnectionError, match="Read-only file system") as caught:
        connect(file_name, spawn=True, connect_timeout=2)
    assert "Traceback" not in str(caught.value)


@needs_root
def test_a_record_cut_short_by_a_full_disk_does_not_hide_later_ones(small_disk):
    from nstore.daemon.journal import Commit, Entry, Journal, read_records

    path = os.path.join(small_disk, "run.nc.journal")
    journal = Journal(path)
    journal.append(Commit(1, [Entry("c", 1, 0, ("append", "x", {"data": 1.0, "index": 0}), [True, 0])]))
    filler = fill(small_disk)
    big = Entry("c", 2, 0, ("append", "x", {"data": "y" * 200_000, "index": 1}), [True, 1])
    with pytest.raises(OSError, match="No space left on device") as caught:
        journal.append(Commit(2, [big]))
    assert caught.value.filename == path
    os.remove(filler)
    journal.append(Commit(3, [Entry("c", 3, 0, ("append", "x", {"data": 3.0, "index": 1}), [True, 1])]))
    journal.close()
    assert [record.seq for record in read_records(path)] == [1, 3]
