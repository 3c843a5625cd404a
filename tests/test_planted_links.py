"""Planted links (issue 13, item 1): nstore never writes through a link at the paths of its own files.

Each test plants a symlink to a victim file where nstore creates one of the
files it keeps next to the data file (lock, journal.new, rebuild copy, kept
journal copy, start log), runs the operation that writes that file, and checks
that the victim is unchanged and the error names the link.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from nstore import NetCDFIODriver, StorageInterface
from nstore.daemon.journal import Commit, Entry, Journal, journal_path
from nstore.daemon.safefiles import PlantedLinkError, copy_new, create_new, open_append, open_file
from nstore.protocol.endpoints import read_lock

VICTIM_TEXT = b"precious data that is not nstore's\n"


def nstored(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nstore.daemon.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), stdin=subprocess.DEVNULL, timeout=timeout)


@pytest.fixture
def victim(tmp_path):
    """A file someone else cares about, outside the data directory."""
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(VICTIM_TEXT)
    return path


@pytest.fixture
def data_file(tmp_path):
    """An nstore file with one appendable variable ``x`` holding one entry."""
    path = tmp_path / "data" / "run.nc"
    path.parent.mkdir()
    store = StorageInterface(NetCDFIODriver(str(path)))
    store.x.append(1.0)
    store.close()
    return str(path)


def plant(link: str, victim) -> str:
    os.symlink(str(victim), link)
    return link


def assert_untouched(victim) -> None:
    assert victim.read_bytes() == VICTIM_TEXT


def failing_journal(file_name: str) -> None:
    """A journal whose one op cannot be replayed (an entry far past the end): recovery keeps a copy
    of the journal and tries to rebuild the file."""
    journal = Journal(journal_path(file_name))
    journal.append(Commit(1, [Entry("", 0, 0, ("append", "x", {"data": 2.0, "index": 5}), [True, 5])]))
    journal.close()


@pytest.mark.parametrize("suffix", [".nstored", ".journal", ".journal.new"], ids=["lock", "journal", "journal-new"])
def test_daemon_start_refuses_a_link_at_its_lock_or_journal(data_file, victim, daemon_factory, suffix):
    link = plant(data_file + suffix, victim)
    with pytest.raises(RuntimeError) as failed:
        daemon_factory(data_file)
    assert f"{link} is a symbolic link" in str(failed.value)
    assert_untouched(victim)
    assert os.path.islink(link)  # left for its owner to look at


def test_rebuild_link_is_refused(data_file, victim):
    failing_journal(data_file)
    with open(journal_path(data_file), "rb") as fh:
        journal_bytes = fh.read()
    link = plant(data_file + ".rebuild", victim)
    result = nstored("recover", data_file)
    assert result.returncode != 0
    assert f"{link} is a symbolic link" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert_untouched(victim)
    with open(journal_path(data_file), "rb") as fh:
        assert fh.read() == journal_bytes  # nothing was truncated


def test_unreplayed_journal_copy_link_is_refused(data_file, victim):
    failing_journal(data_file)
    now = int(time.time())
    links = [plant(f"{journal_path(data_file)}.unreplayed-{t}", victim) for t in range(now - 2, now + 60)]
    result = nstored("recover", data_file)
    assert result.returncode != 0
    assert "is a symbolic link" in result.stderr and any(link in result.stderr for link in links), result.stderr
    assert_untouched(victim)


def test_start_log_link_is_refused(data_file, victim, runtime_dir):
    link = plant(data_file + ".nstored.log", victim)
    try:
        result = nstored("start", data_file)
    finally:
        info = read_lock(data_file)
        if info is not None:  # (today's behaviour: it started, writing its log into the victim)
            os.kill(info["pid"], signal.SIGTERM)
            time.sleep(1)
    assert result.returncode == 2, result.stderr
    assert f"{link} is a symbolic link" in result.stderr
    assert "Traceback" not in result.stderr
    assert_untouched(victim)
    assert read_lock(data_file) is None


def test_recovery_keeps_every_journal_copy(data_file, tmp_path):
    """Two kept copies in the same second get different names: an earlier copy is never overwritten."""
    failing_journal(data_file)
    first = copy_new(journal_path(data_file), journal_path(data_file) + ".unreplayed-1")
    second = copy_new(journal_path(data_file), journal_path(data_file) + ".unreplayed-1")
    assert first != second and os.path.isfile(first) and os.path.isfile(second)


# --- the helpers themselves -------------------------------------------------------------------------


def test_safe_open_refuses_symlinks_and_hard_links(tmp_path, victim):
    link = plant(str(tmp_path / "a"), victim)
    for opener in (lambda: open_file(link, os.O_RDWR | os.O_CREAT), lambda: create_new(link), lambda: open_append(link)):
        with pytest.raises(PlantedLinkError, match="is a symbolic link"):
            opener()
    hard = str(tmp_path / "b")
    os.link(victim, hard)
    with pytest.raises(PlantedLinkError, match="other hard link"):
        open_file(hard, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    with pytest.raises(FileExistsError):
        create_new(hard)
    assert_untouched(victim)


def test_safe_open_creates_private_regular_files(tmp_path):
    path = str(tmp_path / "new")
    os.close(create_new(path))
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    with open_append(path) as fh:
        fh.write(b"x")
    assert open(path, "rb").read() == b"x"
