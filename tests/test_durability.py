"""Durability: an acknowledged operation survives a crash (SIGKILL) of nstored.

Real processes only. Daemons come from the ``daemon_factory`` fixture (stopped
by PID at teardown, whether they were killed or not); workers are separate
Python processes (``WORKER`` below, run with ``python -c``) that append
through ``connect(endpoint, grace=...)`` and write every acknowledged
``index k [crc]`` to a side file, flushing after each line. The ``workers``
fixture kills any worker still running at teardown, by PID.

Kill loops restart the daemon on the SAME endpoint (a new ``Daemon(...,
endpoint=ep)``), so one worker rides through every restart: its unacknowledged
requests are resent with their client/request ids. A kill lands a random
0.05-0.3 s after the worker got at least one acknowledgement from the current
daemon, so every round kills a daemon that is busy appending.

The k-th append of a worker stores ``value(k)``; it must be acknowledged at
index k (no loss, no doubling), so the final checks are exact: the file holds
exactly the acknowledged entries, entry i is ``value(i)``.

Two tests look below the API with strace (required, present on the dev
machine): one attaches to a daemon and SIGKILLs it at each write of a
checkpoint's HDF5 flush (fault injection, deterministic), one checks that a
``--fsync batch`` checkpoint fsyncs the NetCDF file before it drops the journal.

Random timings come from one seed, printed with ``-s`` (set NSTORE_TEST_SEED
to replay a run).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib

import netCDF4
import numpy as np
import pytest

from nstore import NetCDFIODriver, connect
from nstore.daemon.journal import HEADER_BYTES, Commit, Entry, Journal, Snapshot, journal_path, read_records

from daemons import free_port

SEED = int(os.environ.get("NSTORE_TEST_SEED", random.SystemRandom().randrange(1 << 30)))
ROW = 128 * 1024  # float64 entries in a 1 MiB array row
PATH = "run/energy"
WAIT_S = 20.0  # bound on any single wait for a worker or a file to change
PAUSE_ENV = {"NSTORED_TEST_CHECKPOINT_PAUSE_S": "1"}

# --- the worker process ---------------------------------------------------------------------------

WORKER = r"""
import json, os, sys, time, traceback, zlib
import numpy as np
from nstore import connect

cfg = json.loads(sys.argv[1])
ROW = cfg["row"]

def value(k):
    if cfg["kind"] == "array":
        return np.random.default_rng(k).random(ROW)
    return k * 1.5 + 0.25

side = open(cfg["side"], "a", encoding="ascii")

def record(index, k, data):
    crc = f" {zlib.crc32(data.tobytes())}" if cfg["kind"] == "array" else ""
    side.write(f"{int(index)} {k}{crc}\n")
    side.flush()

try:
    drv = connect(cfg["endpoint"], grace=cfg["grace"], pipeline=cfg["pipeline"], timeout=30)
    pending = []  # pipelined: (k, data, PendingIndex) not recorded yet, in order
    k = 0
    while k < cfg["max"] and not os.path.exists(cfg["stop"]):
        data = value(k)
        result = drv.append_variable(cfg["path"], data)
        if cfg["pipeline"]:
            pending.append((k, data, result))
            while pending and pending[0][2].done():
                kk, dd, handle = pending.pop(0)
                record(handle.result(), kk, dd)
        else:
            record(result, k, data)
        k += 1
        if cfg["throttle"]:
            time.sleep(cfg["throttle"])
    drv.flush()
    for kk, dd, handle in pending:
        record(handle.result(), kk, dd)
    drv.close()
except ConnectionError as exc:
    if not cfg["exit_on_disconnect"]:
        raise
    print(f"disconnected after {k} appends: {exc}", file=sys.stderr)
    sys.exit(3)
print(f"done {k}")
"""


def value(k: int, kind: str = "scalar"):
    if kind == "array":
        return np.random.default_rng(k).random(ROW)
    return k * 1.5 + 0.25


class Worker:
    """One WORKER process appending to ``PATH`` through ``endpoint``."""

    def __init__(self, tmp_path, name: str, endpoint: str, *, kind: str = "scalar", pipeline: bool = False,
                 grace: float = 10.0, throttle: float = 0.0, max_ops: int = 10**9, exit_on_disconnect: bool = False,
                 prefix: list[str] | tuple = ()):
        self.side = str(tmp_path / f"{name}.acked")
        self.stop_file = str(tmp_path / f"{name}.stop")
        self.err_path = str(tmp_path / f"{name}.err")
        self.kind = kind
        cfg = {"endpoint": endpoint, "kind": kind, "pipeline": pipeline, "grace": grace, "throttle": throttle,
               "max": max_ops, "side": self.side, "stop": self.stop_file, "path": PATH, "row": ROW,
               "exit_on_disconnect": exit_on_disconnect}
        self._err = open(self.err_path, "wb")
        self.process = subprocess.Popen([*prefix, sys.executable, "-c", WORKER, json.dumps(cfg)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._err)
        self.pid = self.process.pid

    def acked(self) -> list[tuple[int, ...]]:
        """The acknowledged ``(index, k[, crc])`` so far (complete lines only)."""
        try:
            with open(self.side, encoding="ascii") as fh:
                text = fh.read()
        except FileNotFoundError:
            return []
        return [tuple(map(int, line.split())) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def stderr(self) -> str:
        with open(self.err_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def wait_acked(self, more_than: int, daemon=None) -> int:
        """Wait until more than ``more_than`` ops are acknowledged; returns the count."""
        deadline = time.monotonic() + WAIT_S
        while True:
            count = len(self.acked())
            if count > more_than:
                return count
            if self.process.poll() is not None:
                pytest.fail(f"worker exited ({self.process.returncode}) at {count} acked ops:\n{self.stderr()}")
            if time.monotonic() > deadline:
                log = daemon.log() if daemon is not None else ""
                pytest.fail(f"worker stuck at {count} acked ops for {WAIT_S:g} s\nworker:\n{self.stderr()}\n"
                            f"daemon:\n{log}")
            time.sleep(0.01)

    def finish(self, timeout: float = 30.0) -> int:
        """Ask the worker to stop, wait for it; returns its exit code."""
        with open(self.stop_file, "w"):
            pass
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker did not finish within {timeout:g} s:\n{self.stderr()}")
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process.stdout.close()
        self._err.close()


@pytest.fixture
def workers():
    """``workers(tmp_path, name, endpoint, **options)`` -> a running Worker; all killed by PID at teardown."""
    started: list[Worker] = []

    def _start(*args, **kwargs) -> Worker:
        worker = Worker(*args, **kwargs)
        started.append(worker)
        return worker

    yield _start
    for worker in started:
        worker.kill()


@pytest.fixture
def endpoint():
    """A short ipc endpoint that outlives any one daemon (restarts bind it again)."""
    directory = tempfile.mkdtemp(prefix="nsd")
    yield f"ipc://{directory}/d.sock"
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def rng(request):
    seed = SEED + sum(map(ord, request.node.name))
    print(f"\n[{request.node.name}] seed {seed}")
    return random.Random(seed)


# --- checks ---------------------------------------------------------------------------------------


def stored_rows(file_name: str) -> int:
    """The file opens with netCDF4 itself; the entry count of PATH (read through the in-process driver)."""
    with netCDF4.Dataset(file_name, "r"):
        pass
    driver = NetCDFIODriver(file_name, "r")
    try:
        return driver.variable_info(PATH)["length"]
    finally:
        driver.close()


def check_against_file(file_name: str, acked: list[tuple[int, ...]], kind: str = "scalar") -> int:
    """Every acknowledged entry at its index with its value; returns how many are lost (wrong or missing).

    Also asserts there is no doubling: the k-th append got index k, and the
    file holds exactly the acknowledged entries.
    """
    assert [a[0] for a in acked] == [a[1] for a in acked] == list(range(len(acked))), \
        "acknowledged indices are not exactly 0..N-1 in append order (an append was doubled or skipped)"
    length = stored_rows(file_name)
    driver = NetCDFIODriver(file_name, "r")
    lost = 0
    try:
        if kind == "scalar":
            data = np.asarray(driver.read_variable(PATH)) if length else np.zeros(0)
            for index, k in acked:
                if index >= len(data) or data[index] != value(k):
                    lost += 1
        else:
            for index, k, crc in acked:
                if index >= length:
                    lost += 1
                    continue
                row = np.ascontiguousarray(driver.read_variable(PATH, index), dtype=np.float64)
                if row.shape != (ROW,) or zlib.crc32(row.tobytes()) != crc:
                    lost += 1
    finally:
        driver.close()
    assert length == len(acked), f"file holds {length} entries, {len(acked)} were acknowledged"
    return lost


def journal_leftovers(file_name: str) -> list:
    """Journal records that hold operations (not client-table snapshots)."""
    return [r for r in read_records(journal_path(file_name)) if not isinstance(r, Snapshot)]


def kill_loop(daemon, start, worker, rng, rounds):
    """SIGKILL ``daemon`` and ``start()`` a new one (same file, same endpoint) ``rounds`` times
    while ``worker`` appends; returns the last daemon."""
    count = 0
    for _ in range(rounds):
        count = worker.wait_acked(count, daemon)  # the current daemon acknowledged something
        time.sleep(rng.uniform(0.05, 0.3))
        daemon.kill()
        daemon = start()
    worker.wait_acked(len(worker.acked()), daemon)  # and the worker carries on after the last restart
    return daemon


def finish_and_check(worker, daemon, file_name, label, rounds, kind="scalar") -> None:
    assert worker.finish() == 0, worker.stderr()
    assert daemon.stop() == 0, daemon.log()
    acked = worker.acked()
    lost = check_against_file(file_name, acked, kind)
    print(f"\n{label}: rounds={rounds} acknowledged_ops_checked={len(acked)} lost={lost}")
    assert lost == 0


# --- (a) (b) kill loops ---------------------------------------------------------------------------


def test_kill_loop_scalar_appends(tmp_path, endpoint, daemon_factory, workers, rng):
    file_name = str(tmp_path / "run.nc")
    rounds = 20

    def start():
        return daemon_factory(file_name, endpoint=endpoint)

    daemon = start()
    worker = workers(tmp_path, "w", endpoint, grace=10)
    daemon = kill_loop(daemon, start, worker, rng, rounds)
    finish_and_check(worker, daemon, file_name, "kill loop (scalars)", rounds)


def test_kill_loop_1mib_array_appends(tmp_path, endpoint, daemon_factory, workers, rng):
    file_name = str(tmp_path / "run.nc")
    # Throttled to keep the file small; --checkpoint-mb 8 makes size-triggered checkpoints happen between kills.
    rounds = 5

    def start():
        return daemon_factory(file_name, "--checkpoint-mb", "8", endpoint=endpoint)

    daemon = start()
    worker = workers(tmp_path, "w", endpoint, kind="array", grace=10, throttle=0.02)
    daemon = kill_loop(daemon, start, worker, rng, rounds)
    finish_and_check(worker, daemon, file_name, "kill loop (1 MiB arrays)", rounds, kind="array")


# --- (c) SIGKILL inside a checkpoint ----------------------------------------------------------------


def test_kill_inside_checkpoint_pause(tmp_path, endpoint, daemon_factory, workers, rng):
    """NSTORED_TEST_CHECKPOINT_PAUSE_S=1 holds each checkpoint 1 s between the file sync and the
    journal truncation; checkpoints run every 0.5 s. A checkpoint ends when the journal shrinks;
    the next one starts ~0.5 s later, so a kill 0.7-1.2 s after a shrink lands inside its pause.
    Whether it did is checked after the kill: the file's checkpoint number already covers every
    batch left in the journal."""
    file_name = str(tmp_path / "run.nc")
    journal = journal_path(file_name)
    args = ("--checkpoint-interval", "0.5")
    daemon = daemon_factory(file_name, *args, endpoint=endpoint, env=PAUSE_ENV)
    worker = workers(tmp_path, "w", endpoint, grace=15)
    rounds, inside = 3, 0
    count = 0
    for _ in range(rounds):
        count = worker.wait_acked(count, daemon)
        # a checkpoint ends: the journal shrinks
        deadline = time.monotonic() + WAIT_S
        size = os.path.getsize(journal)
        while True:
            time.sleep(0.002)
            now = os.path.getsize(journal)
            if now < size:
                break
            size = now
            assert time.monotonic() < deadline, "no checkpoint truncated the journal"
        shrunk = time.monotonic()
        time.sleep(max(0.0, shrunk + rng.uniform(0.7, 1.2) - time.monotonic()))
        daemon.kill()
        seqs = [r.seq for r in journal_leftovers(file_name)]
        with netCDF4.Dataset(file_name, "r") as ds:
            file_seq = int(ds.getncattr("nstore_checkpoint_seq"))
        if seqs and max(seqs) <= file_seq:
            inside += 1  # killed after the file sync, before the truncation
        daemon = daemon_factory(file_name, *args, endpoint=endpoint, env=PAUSE_ENV)
    worker.wait_acked(len(worker.acked()), daemon)
    print(f"\ncheckpoint kills: {inside}/{rounds} landed between file sync and journal truncation")
    assert inside >= 1, "no kill landed inside a checkpoint's pause"
    finish_and_check(worker, daemon, file_name, "kill inside checkpoint", rounds)


# --- (d) SIGTERM mid-stream ---------------------------------------------------------------------------


def test_sigterm_mid_stream_leaves_a_clean_file(tmp_path, endpoint, daemon_factory, workers, rng):
    file_name = str(tmp_path / "run.nc")
    daemon = daemon_factory(file_name, endpoint=endpoint)
    worker = workers(tmp_path, "w", endpoint, grace=1, exit_on_disconnect=True)
    worker.wait_acked(200, daemon)
    time.sleep(rng.uniform(0.05, 0.3))
    assert daemon.stop() == 0, daemon.log()
    assert worker.process.wait(timeout=WAIT_S) == 3, worker.stderr()  # it saw the daemon go away
    # Nothing left to replay: the journal is absent, empty, or holds only the client-table snapshot.
    assert journal_leftovers(file_name) == []
    assert not os.path.exists(file_name + ".nstored"), "lock file left behind"
    assert not os.path.exists(endpoint[len("ipc://"):]), "socket left behind"
    acked = worker.acked()
    assert len(acked) > 200
    assert check_against_file(file_name, acked) == 0
    with netCDF4.Dataset(file_name, "r") as ds:  # the checkpoint number covers everything
        assert int(ds.getncattr("nstore_checkpoint_seq")) >= 1


# --- (e) one worker across a SIGKILL, sync and pipelined, ipc and tcp -------------------------------------


@pytest.fixture(params=["ipc", "tcp-curve", "tcp-insecure"])
def transport(request, endpoint, tmp_path, monkeypatch):
    """``(endpoint, daemon args, client keys)`` that outlive any one daemon: ipc, or loopback tcp with
    CurveZMQ keys or ``--insecure``. Workers find the keys in ``$NSTORE_KEYS``."""
    if request.param == "ipc":
        return endpoint, (), None
    tcp = f"tcp://127.0.0.1:{free_port('127.0.0.1')}"
    if request.param == "tcp-insecure":
        return tcp, ("--insecure",), None
    keys = str(tmp_path / "keys")
    assert nstored("keygen", keys).returncode == 0
    monkeypatch.setenv("NSTORE_KEYS", keys)
    return tcp, ("--keys", keys), keys


@pytest.mark.parametrize("pipeline", [False, True], ids=["sync", "pipelined"])
def test_worker_rides_through_kill_and_restart(tmp_path, transport, daemon_factory, workers, rng, pipeline):
    """SIGKILL and restart on the same endpoint: the worker carries on, nothing lost or doubled, order kept.

    (tcp: the client sees its connection drop on the socket monitor and resends on a fresh socket.)"""
    endpoint, args, keys = transport
    file_name = str(tmp_path / "run.nc")
    daemon = daemon_factory(file_name, *args, endpoint=endpoint)
    worker = workers(tmp_path, "w", endpoint, pipeline=pipeline, grace=20)
    before = worker.wait_acked(300, daemon)
    time.sleep(rng.uniform(0.05, 0.3))
    daemon.kill()
    at_kill = len(worker.acked())
    daemon = daemon_factory(file_name, *args, endpoint=endpoint)
    worker.wait_acked(at_kill + 300, daemon)
    assert worker.finish() == 0, worker.stderr()
    n = int(worker.process.stdout.read().split()[-1])  # "done N": appends the worker made
    acked = worker.acked()
    assert len(acked) == n > before
    # exactly its entries: indices 0..N-1, in order, no gaps, no duplicates
    assert [a[0] for a in acked] == list(range(n))
    # the daemon that rode it through reads them back, then the file after a clean stop
    reader = connect(endpoint, timeout=30, keys=keys)
    try:
        assert np.asarray(reader.read_variable(PATH)).tolist() == [value(k) for k in range(n)]
    finally:
        reader.close()
    assert daemon.stop() == 0, daemon.log()
    assert check_against_file(file_name, acked) == 0


def test_tcp_client_notices_a_frozen_daemon_by_heartbeat(tmp_path, daemon_factory, workers):
    """A daemon that stops answering without closing its connection (SIGSTOP: a hung or unreachable host).

    Only ZeroMQ's heartbeat can tell: the worker drops the connection after the
    heartbeat timeout, rides through for ``grace`` (1 s), then exits with the
    clear ConnectionError -- long before its 30 s request timeout would fire.
    """
    from nstore.linkwatch import HEARTBEAT_IVL_S, HEARTBEAT_TIMEOUT_S

    endpoint = f"tcp://127.0.0.1:{free_port('127.0.0.1')}"
    daemon = daemon_factory(str(tmp_path / "run.nc"), "--insecure", endpoint=endpoint)
    worker = workers(tmp_path, "w", endpoint, grace=1, exit_on_disconnect=True)
    worker.wait_acked(100, daemon)
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        assert worker.process.wait(timeout=WAIT_S) == 3, worker.stderr()
        took = time.monotonic() - stopped
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    assert "went away and did not come back within 1 s" in worker.stderr(), worker.stderr()
    assert HEARTBEAT_TIMEOUT_S <= took < HEARTBEAT_TIMEOUT_S + HEARTBEAT_IVL_S + 1 + 5, took


# --- (f) torn journal tails, `nstored recover` -----------------------------------------------------------


def _record_bytes(tmp_path, record) -> bytes:
    """One journal record exactly as the daemon writes it (without the journal's header)."""
    scratch = str(tmp_path / "scratch.journal")
    journal = Journal(scratch)
    journal.append(record)
    journal.close()
    with open(scratch, "rb") as fh:
        data = fh.read()
    os.unlink(scratch)
    return data[HEADER_BYTES:]


def _append_sync(driver, ks) -> None:
    for k in ks:
        assert driver.append_variable(PATH, value(k)) == k


def nstored(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nstore.daemon.cli", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


@pytest.mark.parametrize("tear", ["truncated", "bad_crc", "garbage", "half_header"])
def test_torn_journal_tail_is_ignored(tmp_path, endpoint, daemon_factory, tear):
    file_name = str(tmp_path / "run.nc")
    daemon = daemon_factory(file_name, endpoint=endpoint)
    driver = connect(endpoint, timeout=30)
    _append_sync(driver, range(10))
    driver.close()
    daemon.kill()
    journal = journal_path(file_name)
    seqs = [r.seq for r in journal_leftovers(file_name)]
    assert seqs, "the appends should be in the journal (no checkpoint since the start)"
    # A well-formed record that would put a bogus value at index 10 (and 0), then torn.
    bogus = _record_bytes(tmp_path, Commit(max(seqs) + 1, [
        Entry("torn-client", 1, 0, ("append", PATH, {"data": -999.0, "index": 10}), [True, 10]),
        Entry("torn-client", 1, 1, ("append", PATH, {"data": -999.0, "index": 0}), [True, 0])]))
    tail = {"truncated": bogus[:-5],
            "bad_crc": bogus[:-1] + bytes([bogus[-1] ^ 0xFF]),
            "garbage": b"\xde\xad\xbe\xef" * 16,
            "half_header": bogus[:5]}[tear]
    with open(journal, "ab") as fh:
        fh.write(tail)
    daemon = daemon_factory(file_name, endpoint=endpoint)  # starts despite the tear
    driver = connect(endpoint, timeout=30)
    assert np.asarray(driver.read_variable(PATH)).tolist() == [value(k) for k in range(10)]
    # The tear is gone for good: what is journaled after it survives the next crash.
    _append_sync(driver, range(10, 13))
    driver.close()
    daemon.kill()
    daemon = daemon_factory(file_name, endpoint=endpoint)
    assert daemon.stop() == 0, daemon.log()
    assert check_against_file(file_name, [(k, k) for k in range(13)]) == 0


def test_recover_replays_the_journal_into_the_file(tmp_path, endpoint, daemon_factory):
    file_name = str(tmp_path / "run.nc")
    daemon = daemon_factory(file_name, endpoint=endpoint)
    driver = connect(endpoint, timeout=30)
    _append_sync(driver, range(5))
    driver.close()
    assert daemon.stop() == 0
    before = str(tmp_path / "before.nc")
    shutil.copyfile(file_name, before)  # 5 entries, checkpointed
    daemon = daemon_factory(file_name, endpoint=endpoint)
    driver = connect(endpoint, timeout=30)
    _append_sync(driver, range(5, 25))
    driver.close()
    daemon.kill()
    # The crash "lost" the file's tail: only the journal has entries 5..24.
    shutil.copyfile(before, file_name)
    with open(journal_path(file_name), "ab") as fh:
        fh.write(b"\x00\x01torn")
    result = nstored("recover", file_name)
    assert result.returncode == 0, result.stderr
    assert "replayed 20 ops" in result.stdout, result.stdout
    remaining = list(read_records(journal_path(file_name)))  # only the clients' table is kept
    assert [type(record) for record in remaining] == [Snapshot], remaining
    assert check_against_file(file_name, [(k, k) for k in range(25)]) == 0
    # Nothing left to do the second time.
    result = nstored("recover", file_name)
    assert result.returncode == 0 and "replayed 0 ops" in result.stdout, (result.stdout, result.stderr)
    assert check_against_file(file_name, [(k, k) for k in range(25)]) == 0


def test_recover_refuses_a_corrupt_file_and_keeps_the_journal(tmp_path, endpoint, daemon_factory):
    file_name = str(tmp_path / "run.nc")
    daemon = daemon_factory(file_name, endpoint=endpoint)
    driver = connect(endpoint, timeout=30)
    _append_sync(driver, range(8))
    driver.close()
    daemon.kill()
    journal = journal_path(file_name)
    with open(journal, "rb") as fh:
        journal_bytes = fh.read()
    assert len(journal_leftovers(file_name)) >= 1
    with open(file_name, "r+b") as fh:
        fh.write(b"CORRUPT!" * 4)
    result = nstored("recover", file_name)
    assert result.returncode not in (0, None)
    assert f"cannot open {os.path.realpath(file_name)}" in result.stderr, result.stderr
    assert "left untouched" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    with open(journal, "rb") as fh:
        assert fh.read() == journal_bytes
    # A daemon refuses the file the same way, also leaving the journal alone.
    with pytest.raises(RuntimeError, match="cannot serve"):
        daemon_factory(file_name, endpoint=endpoint)
    with open(journal, "rb") as fh:
        assert fh.read() == journal_bytes
    assert [p for p in os.listdir(tmp_path) if ".unreplayed-" in p] == []


# --- fsync policies -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["batch", "interval"])
def test_fsync_policy_survives_sigkill(tmp_path, endpoint, daemon_factory, policy):
    file_name = str(tmp_path / "run.nc")
    daemon = daemon_factory(file_name, "--fsync", policy, endpoint=endpoint)
    driver = connect(endpoint, timeout=30)
    assert driver.status()["fsync"] == policy
    _append_sync(driver, range(40))
    driver.close()
    daemon.kill()
    daemon = daemon_factory(file_name, "--fsync", policy, endpoint=endpoint)
    driver = connect(endpoint, timeout=30)
    assert np.asarray(driver.read_variable(PATH)).tolist() == [value(k) for k in range(40)]
    driver.close()
    assert daemon.stop() == 0, daemon.log()
    assert check_against_file(file_name, [(k, k) for k in range(40)]) == 0


# --- --fsync batch: the file must be on disk before the journal that covers it is dropped -------------------


def _fsync_violations(trace: str, nc_path: str, journal: str) -> tuple[int, int]:
    """From an ``strace -y`` log of the daemon's main thread: ``(checkpoints that dropped journaled
    ops, of which with NetCDF-file writes not yet fsynced)``."""
    nc_dirty, journal_records, dropped, violations = False, 0, 0, 0
    for line in trace.splitlines():
        match = re.match(r"(\w+)\((?:(\d+)<([^>]*)>)?", line)
        if not match:
            continue
        name, path = match.group(1), match.group(3)
        if name.startswith("rename") and f'"{journal}"' in line.split(",", 1)[-1]:
            name, path = "ftruncate", journal  # a checkpoint replaced the journal by a fresh one
        if name in ("sync", "syncfs"):
            nc_dirty = False
        elif path == nc_path:
            if name in ("write", "pwrite64", "writev", "pwritev", "pwritev2"):
                nc_dirty = True
            elif name in ("fsync", "fdatasync", "sync_file_range"):
                nc_dirty = False
        elif path == journal:
            if name in ("write", "writev"):
                journal_records += 1
            elif name == "ftruncate":
                if journal_records >= 2:  # more than the client-table snapshot: acknowledged ops
                    dropped += 1
                    violations += nc_dirty
                journal_records = 0
    return dropped, violations


def test_fsync_batch_checkpoint_syncs_the_file_to_disk_before_dropping_the_journal(tmp_path, daemon_factory):
    """--fsync batch promises acknowledged ops survive a power loss. A checkpoint replaces the journal
    by a fresh one (renamed over it), so the NetCDF file must be fsynced first: otherwise the acknowledged
    ops live only in the page cache of the file and nowhere durable. Checked on the system calls of a
    real daemon (strace attached to its main thread, which does all file I/O)."""
    assert shutil.which("strace"), "this test needs strace"
    file_name = os.path.realpath(str(tmp_path / "run.nc"))
    trace_path = str(tmp_path / "trace")
    daemon = daemon_factory(file_name, "--fsync", "batch", "--checkpoint-interval", "0.3")
    strace = subprocess.Popen(
        ["strace", "-p", str(daemon.pid), "-y", "-o", trace_path,
         "-e", "trace=write,pwrite64,writev,pwritev,fsync,fdatasync,sync_file_range,sync,syncfs,ftruncate,"
               "rename,renameat,renameat2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = strace.stderr.readline()
        assert "attached" in line, f"strace could not attach to the daemon: {line}{strace.stderr.read()}"
        driver = connect(daemon.endpoint, timeout=30)
        _append_sync(driver, range(5))
        time.sleep(0.8)  # checkpoints run
        _append_sync(driver, range(5, 10))
        driver.close()
        assert daemon.stop() == 0, daemon.log()  # a final checkpoint
        strace.wait(timeout=10)
    finally:
        if strace.poll() is None:  # detaches; the daemon itself is stopped by daemon_factory
            strace.kill()
            strace.wait(timeout=10)
        strace.stderr.close()
    with open(trace_path, encoding="utf-8", errors="replace") as fh:
        trace = fh.read()
    dropped, violations = _fsync_violations(trace, file_name, journal_path(file_name))
    assert check_against_file(file_name, [(k, k) for k in range(10)]) == 0
    assert dropped >= 2, f"expected checkpoints that dropped journaled ops, saw {dropped}"
    assert violations == 0, (
        f"{violations} of {dropped} checkpoints truncated the journal while the NetCDF file had writes that "
        f"were never fsynced: with --fsync batch, a power loss right after such a checkpoint loses "
        f"acknowledged ops (the file is only sync()ed by netCDF4, i.e. flushed to the page cache)")


# --- SIGKILL at each file write of a checkpoint's flush (strace fault injection) ------------------------------


def _kill_at_file_write(daemon, file_name: str, k: int, trace_path: str) -> int:
    """SIGTERM ``daemon`` (its closing checkpoint flushes the file) with strace attached to its main
    thread SIGKILLing it on entry to its ``k``-th pwrite64 to ``file_name`` (that write never happens).
    Returns the daemon's exit code: -9 if the kill landed, 0 if the flush made fewer writes."""
    strace = subprocess.Popen(["strace", "-p", str(daemon.pid), "-P", file_name, "-e", "trace=pwrite64",
                               "-e", f"inject=pwrite64:signal=KILL:when={k}", "-o", trace_path],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = strace.stderr.readline()  # "strace: Process N attached", or why it could not attach
        assert "attached" in line, f"strace could not attach to the daemon: {line}{strace.stderr.read()}"
        os.kill(daemon.pid, signal.SIGTERM)
        code = daemon.process.wait(timeout=15)
        strace.wait(timeout=10)
        return code
    finally:
        if strace.poll() is None:  # detaches; the daemon itself is stopped by daemon_factory
            strace.kill()
            strace.wait(timeout=10)
        strace.stderr.close()


def test_sigkill_at_every_write_of_a_checkpoint_flush(tmp_path, daemon_factory):
    """The closing checkpoint flushes 30 acknowledged appends to each of two variables created since
    the daemon started. For K = 1, 2, ... the daemon is SIGKILLed at the K-th write of that flush
    (until the flush needs fewer than K writes), restarted, stopped, and the file checked: every
    acknowledged entry readable, at its index, with its value. Deterministic (same ops, same writes)."""
    assert shutil.which("strace"), "this test needs strace"
    n, width = 30, 1000
    failures, kills = [], 0
    for k in range(1, 25):
        case = tmp_path / f"k{k}"
        case.mkdir()
        file_name = os.path.realpath(str(case / "run.nc"))
        daemon = daemon_factory(file_name)
        driver = connect(daemon.endpoint, timeout=30)
        for i in range(n):
            assert driver.append_variable("g/e", np.full(width, i * 1.5)) == i
            assert driver.append_variable("s", float(i)) == i
        driver.close()
        code = _kill_at_file_write(daemon, file_name, k, str(case / "trace"))
        if code == 0:
            break  # the whole flush took fewer than k writes
        assert code == -9, daemon.log()
        kills += 1
        try:
            daemon = daemon_factory(file_name)
        except RuntimeError as exc:
            failures.append(f"K={k}: the daemon does not start again: {str(exc)[-300:]}")
            continue
        replay_errors = [line.split(" ERROR ", 1)[1] for line in daemon.log().splitlines() if " ERROR " in line]
        assert daemon.stop() == 0, daemon.log()
        problems = []
        try:
            driver = NetCDFIODriver(file_name, "r")
            try:
                for path, expected in (("g/e", lambda i: np.full(width, i * 1.5)), ("s", float)):
                    try:
                        data = driver.read_variable(path)
                    except Exception as exc:  # noqa: BLE001 - reported below
                        problems.append(f"{path} unreadable ({exc})")
                        continue
                    wrong = [i for i in range(n) if i >= len(data) or not np.array_equal(data[i], expected(i))]
                    if wrong or len(data) != n:
                        problems.append(f"{path}: {len(data)} entries, {len(wrong)} acknowledged entries "
                                        f"missing or wrong (first {wrong[:1]})")
            finally:
                driver.close()
        except OSError as exc:
            problems.append(f"file does not open ({exc})")
        if problems:
            failures.append(f"K={k}: " + "; ".join(problems) + (f" [replay: {replay_errors[0]} ...]"
                                                                  if replay_errors else ""))
    print(f"\ncheckpoint flush kills: {kills} (one per write), failures at "
          f"{[f.split(':')[0] for f in failures] or 'none'}")
    assert kills >= 3, "the closing checkpoint should take several writes"
    assert failures == [], ("acknowledged appends lost after a SIGKILL inside the checkpoint's HDF5 flush:\n"
                            + "\n".join(failures))
