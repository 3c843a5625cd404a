"""The ``nstored`` command line and the daemon's life cycle, with real processes.

Daemons started through ``nstored start`` or ``connect(..., spawn=True)`` are
not children of the test process, so every test registers their PIDs with the
``reaper`` fixture, which stops them by PID (SIGTERM, then SIGKILL) at
teardown. XDG_RUNTIME_DIR points at a short fresh directory so the default ipc
socket of each file lives there.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import stat
import subprocess
import sys
import time

import msgpack
import netCDF4
import numpy as np
import pytest
import zmq

from nstore import NetCDFIODriver, StorageInterface, connect
from nstore.protocol import PROTOCOL_VERSION
from nstore.protocol.endpoints import default_endpoint, lock_path, read_lock, real_path
from nstore.protocol.messages import decode_reply, encode_request
from nstore.protocol.values import pack

CLI_TIMEOUT_S = 60.0


# --- helpers ------------------------------------------------------------------------------------


def nstored(*args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run the nstored CLI with the test's environment (XDG_RUNTIME_DIR included)."""
    return subprocess.run([sys.executable, "-m", "nstore.daemon.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), stdin=subprocess.DEVNULL, timeout=timeout)


def pid_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaps counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pid_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def socket_path(endpoint: str) -> str:
    assert endpoint.startswith("ipc://"), endpoint
    return endpoint[len("ipc://"):]



@pytest.fixture
def reaper():
    """``reaper(pid)``: stop that daemon by PID at teardown if it still runs."""
    pids: list[int] = []
    yield pids.append
    for pid in pids:
        if pid_gone(pid):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        if not wait_gone(pid, 15):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_gone(pid, 10)


def start_daemon(file_name, reaper) -> tuple[int, str]:
    """``nstored start FILE``; (pid, endpoint printed)."""
    result = nstored("start", str(file_name))
    info = read_lock(str(file_name))
    if info is not None:
        reaper(info["pid"])
    assert result.returncode == 0, result.stderr
    assert info is not None, "no lock file after a successful start"
    return info["pid"], result.stdout.strip()


# --- start / status / connect / stop --------------------------------------------------------------


def test_start_status_connect_stop(tmp_path, runtime_dir, reaper):
    file_name = tmp_path / "run.nc"
    pid, printed = start_daemon(file_name, reaper)

    endpoint = default_endpoint(str(file_name))
    assert printed == endpoint
    assert endpoint.startswith(f"ipc://{runtime_dir}/nstore-{os.getuid()}/")
    sock = socket_path(endpoint)
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode) == 0o700
    assert not pid_gone(pid)
    assert read_lock(str(file_name))["endpoint"] == endpoint

    driver = connect(str(file_name), timeout=30)
    assert driver.daemon_pid == pid
    assert driver.file_name == real_path(str(file_name))
    assert driver.endpoint == endpoint
    store = StorageInterface(driver)
    for k in range(5):
        assert store.run.energy.append(float(k)) == k
    store.run.box.write(np.eye(2))

    result = nstored("status", str(file_name), "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert {"pid", "file", "endpoint", "uptime_s", "clients_seen", "ops_applied", "ops_per_s",
            "queue_depth", "bytes_written"} <= set(status)
    assert status["pid"] == pid
    assert status["file"] == real_path(str(file_name))
    assert status["endpoint"] == endpoint
    assert isinstance(status["uptime_s"], float) and 0 < status["uptime_s"] < CLI_TIMEOUT_S
    assert isinstance(status["clients_seen"], int) and status["clients_seen"] >= 2  # our driver + this status
    assert status["ops_applied"]["append"] == 5
    assert status["ops_applied"]["write"] == 1
    assert status["ops_applied"]["hello"] == 1
    assert isinstance(status["ops_per_s"], float) and status["ops_per_s"] > 0
    assert isinstance(status["queue_depth"], int) and status["queue_depth"] >= 0
    assert isinstance(status["bytes_written"], int) and status["bytes_written"] >= 5 * 8 + np.eye(2).nbytes

    text = nstored("status", str(file_name))
    assert text.returncode == 0, text.stderr
    lines = [line.strip() for line in text.stdout.splitlines()]
    assert f"pid: {pid}" in lines
    assert f"endpoint: {endpoint}" in lines

    store.close()
    t0 = time.monotonic()
    result = nstored("stop", str(file_name))
    elapsed = time.monotonic() - t0
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"nstored: stopped pid {pid}"
    assert elapsed < 15, f"stop took {elapsed:.1f} s"
    assert pid_gone(pid)
    assert not os.path.exists(sock)
    assert not os.path.exists(str(file_name) + ".nstored")
    assert nstored("status", str(file_name)).returncode == 1

    with netCDF4.Dataset(str(file_name), "r") as ds:
        energy = ds.groups["run"].variables["energy"]
        assert energy.dimensions[1:] == ("scalar",)  # the classic layout of appended scalars
        assert energy[:].reshape(-1).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert ds.groups["run"].variables["box"][:].tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_second_daemon_on_same_file_fails_at_once(tmp_path, runtime_dir, reaper):
    file_name = tmp_path / "run.nc"
    pid, endpoint = start_daemon(file_name, reaper)

    t0 = time.monotonic()
    second = nstored("serve", str(file_name), timeout=30)
    elapsed = time.monotonic() - t0
    assert second.returncode != 0
    assert elapsed < 10, f"the second serve took {elapsed:.1f} s to fail"
    assert f"pid {pid}" in second.stderr
    assert endpoint in second.stderr
    assert "already served" in second.stderr

    again = nstored("start", str(file_name))
    assert again.returncode != 0
    assert f"pid {pid}" in again.stderr

    # the failed attempts left the running daemon alone: lock, socket and service intact
    assert read_lock(str(file_name))["pid"] == pid
    assert os.path.exists(socket_path(endpoint))
    driver = connect(str(file_name), timeout=30)
    try:
        assert driver.daemon_pid == pid
        assert StorageInterface(driver).x.append(1.0) == 0
    finally:
        driver.close()


def test_restart_after_sigkill(tmp_path, runtime_dir, reaper):
    file_name = tmp_path / "run.nc"
    pid, endpoint = start_daemon(file_name, reaper)
    store = StorageInterface(connect(str(file_name), timeout=30))
    for k in range(3):
        assert store.x.append(float(k)) == k
    store.sync()
    for k in range(3, 5):  # acknowledged but never synced: the journal must carry these over
        assert store.x.append(float(k)) == k
    store.close()

    os.kill(pid, signal.SIGKILL)
    assert wait_gone(pid, 10)
    # what a crash leaves behind: the lock file (naming the dead pid) and the socket file
    assert read_lock(str(file_name))["pid"] == pid
    assert os.path.exists(socket_path(endpoint))

    t0 = time.monotonic()
    with pytest.raises(ConnectionError) as excinfo:
        connect(str(file_name))
    assert time.monotonic() - t0 < 10
    assert real_path(str(file_name)) in str(excinfo.value)

    new_pid, new_endpoint = start_daemon(file_name, reaper)
    assert new_pid != pid
    assert new_endpoint == endpoint
    assert read_lock(str(file_name))["pid"] == new_pid
    store = StorageInterface(connect(str(file_name), timeout=30))
    try:
        assert store.storage_driver.daemon_pid == new_pid
        assert store.x.read().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert store.x.append(5.0) == 5
    finally:
        store.close()
    assert nstored("stop", str(file_name)).returncode == 0
    assert pid_gone(new_pid)


def test_connect_without_daemon_fails_fast_and_spawn_starts_one(tmp_path, runtime_dir, reaper):
    file_name = tmp_path / "run.nc"
    t0 = time.monotonic()
    with pytest.raises(ConnectionError) as excinfo:
        connect(str(file_name))
    assert time.monotonic() - t0 < 10
    assert real_path(str(file_name)) in str(excinfo.value)
    assert not os.path.exists(str(file_name)) and not os.path.exists(str(file_name) + ".nstored")

    driver = connect(str(file_name), spawn=True, timeout=30)
    reaper(driver.daemon_pid)
    try:
        assert not pid_gone(driver.daemon_pid)
        assert driver.daemon_pid != os.getpid()
        assert read_lock(str(file_name))["pid"] == driver.daemon_pid
        assert driver.endpoint == default_endpoint(str(file_name))
        store = StorageInterface(driver)
        assert store.a.b.append(np.arange(3)) == 0
        assert store.a.b.read(-1).tolist() == [0, 1, 2]
        # a second spawn finds the running daemon instead of starting another
        other = connect(str(file_name), spawn=True, timeout=30)
        try:
            assert other.daemon_pid == driver.daemon_pid
        finally:
            other.close()
    finally:
        driver.close()


# --- bad input ------------------------------------------------------------------------------------


def _ext_array(inner: list) -> msgpack.ExtType:
    return msgpack.ExtType(2, msgpack.packb(inner, use_bin_type=True))  # values.EXT_ARRAY


def _request(body: dict) -> list:
    return [msgpack.packb(body, use_bin_type=True)]


def _bad_requests() -> list:
    """(label, frames, substring of the error message) for requests the daemon cannot parse."""
    v = PROTOCOL_VERSION
    big = pack({"v": v, "id": 3, "client": "t", "ops": [["write", "big", {"data": np.zeros(1024)}]]})
    assert len(big) == 2  # body + one out-of-band array frame
    cases = [
        ("reserved msgpack byte", [b"\xc1"], "malformed message"),
        ("empty frame", [b""], "malformed message"),
        ("not a map", [msgpack.packb([1, 2, 3])], "request must be a map"),
        ("no version", _request({"id": 1, "ops": [["status", "", {}]]}), "protocol version mismatch"),
        ("wrong version", _request({"v": v + 1, "id": 1, "ops": [["status", "", {}]]}), "protocol version mismatch"),
        ("id not int", _request({"v": v, "id": "seven", "ops": [["status", "", {}]]}), "request id must be a non-negative integer"),
        ("client not str", _request({"v": v, "id": 1, "client": 5, "ops": [["status", "", {}]]}), "client id"),
        ("no ops", _request({"v": v, "id": 1, "client": "t", "ops": []}), "non-empty list of ops"),
        ("ops not list", _request({"v": v, "id": 1, "client": "t", "ops": "status"}), "non-empty list of ops"),
        ("unknown op", _request({"v": v, "id": 1, "client": "t", "ops": [["frobnicate", "a", {}]]}),
         "unknown op 'frobnicate'"),
        ("op not a triple", _request({"v": v, "id": 1, "client": "t", "ops": [["read", "a"]]}),
         "each op must be [name, path, args]"),
        ("path not str", _request({"v": v, "id": 1, "client": "t", "ops": [["read", 5, {}]]}),
         "read: path must be a string"),
        ("args not map", _request({"v": v, "id": 1, "client": "t", "ops": [["read", "a", [1]]]}),
         "read: args must be a map"),
        ("create of wrong type", _request({"v": v, "id": 1, "client": "t",
                                           "ops": [["get_directory", "a", {"create": "yes"}]]}),
         "get_directory: argument 'create' has type str"),
        ("unexpected argument", _request({"v": v, "id": 1, "client": "t", "ops": [["append", "a", {"bogus": 1}]]}),
         "append: unexpected argument 'bogus'"),
        ("missing array frame", big[:1], "array refers to frame 0, message has 0"),
        ("truncated", [big[0][: len(big[0]) // 2]], "malformed message"),
        ("array too short", _request({"v": v, "id": 1, "client": "t", "ops": [["write", "a", {"data": _ext_array(
            ["<f8", [3], b"12"])}]]}), "array of shape (3,) and dtype float64 needs 24 bytes, got 2"),
        ("negative shape", _request({"v": v, "id": 1, "client": "t", "ops": [["write", "a", {"data": _ext_array(
            ["<f8", [-1], b""])}]]}), "is not a list of non-negative integers"),
        ("object dtype", _request({"v": v, "id": 1, "client": "t", "ops": [["write", "a", {"data": _ext_array(
            ["|O", [1], b"12345678"])}]]}), "not storable"),
        ("garbage extension", _request({"v": v, "id": 1, "client": "t", "ops": [["write", "a", {
            "data": msgpack.ExtType(2, b"abc")}]]}), "malformed message"),
        ("unknown extension", _request({"v": v, "id": 1, "client": "t", "ops": [["write", "a", {
            "data": msgpack.ExtType(99, msgpack.packb(1))}]]}), "unknown extension type 99"),
    ]
    rng = random.Random(1234)
    for k in range(40):
        cases.append((f"random bytes #{k}", [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))], ""))
    cases.append(("random multipart", [bytes(rng.randrange(256) for _ in range(30)) for _ in range(3)], ""))
    return cases


def _error_of(func, *args) -> tuple[str, str]:
    try:
        func(*args)
    except Exception as exc:  # noqa: BLE001 - what we compare
        return type(exc).__name__, str(exc)
    return "no error", ""


def _exchange(sock: zmq.Socket, frames: list) -> tuple[int, list]:
    sock.send_multipart(frames)
    assert sock.poll(5000), "the daemon did not answer within 5 s"
    return decode_reply(sock.recv_multipart())


def test_daemon_survives_bad_requests(tmp_path, daemon_factory):
    file_name = tmp_path / "run.nc"
    daemon = daemon_factory(file_name)
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, b"t")  # its requests carry client id "t"
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.setsockopt(zmq.SNDTIMEO, 5000)
    try:
        sock.connect(daemon.endpoint)
        for label, frames, fragment in _bad_requests():
            reply_id, results = _exchange(sock, frames)
            assert reply_id == -1, label
            assert len(results) == 1, label
            ok, error = results[0]
            assert ok is False, label
            assert error["type"] == "ProtocolError", (label, error)
            assert fragment in error["message"], (label, error)
            assert daemon.process.poll() is None, f"daemon died after {label!r}:\n{daemon.log()}"

        # well-formed requests whose ops fail: an error per op, under the request's own id.
        # Index types are the engine's to check, so they fail as they do in-process.
        reference = NetCDFIODriver(str(tmp_path / "reference.nc"))
        try:
            reference.append_variable("series", 1.0)
            expected_index_errors = [_error_of(reference.read_variable, "series", "zero"),
                                     _error_of(reference.write_variable, "series", 2.0, True)]
        finally:
            reference.close()
        assert [t for t, _ in expected_index_errors] == ["TypeError", "TypeError"]
        reply_id, results = _exchange(sock, encode_request(7, "t", [
            ("write", "ok", {"data": 1.5}),
            ("append", "series", {"data": 1.0}),
            ("read", "series", {"index": "zero"}),
            ("write", "series", {"data": 2.0, "at_index": True}),
            ("read", "missing/x", {}),
            ("write", "", {"data": 1.0}),
            ("hello", "", {"version": PROTOCOL_VERSION + 1}),
            ("add_metadata", "", {"name": "type", "value": 1}),
            ("append", "ok", {"data": 2.0}),
            ("append", "none", {}),
            ("read", "ok", {}),
            ("read", "series", {}),
        ]))
        assert reply_id == 7
        assert [ok for ok, _ in results] == [True, True] + [False] * 8 + [True, True]
        assert results[0][1] is None and results[1][1] == 0
        assert [(e["type"], e["message"]) for _, e in results[2:4]] == expected_index_errors
        errors = [e for _, e in results[4:10]]
        assert errors[0]["type"] == "KeyError" and "missing/x" in errors[0]["message"]
        assert errors[1]["type"] == "ValueError"
        assert errors[2]["type"] == "ProtocolError" and "protocol version mismatch" in errors[2]["message"]
        assert errors[3]["type"] == "ValueError" and "reserved" in errors[3]["message"]
        assert errors[4]["type"] == "TypeError" and "ok: was stored with write()" in errors[4]["message"]
        assert errors[5]["type"] in ("UnsupportedTypeError", "TypeError") and "none" in errors[5]["message"]
        assert results[10][1] == 1.5
        assert np.asarray(results[11][1]).tolist() == [1.0]
    finally:
        sock.close()
        context.term()

    assert daemon.process.poll() is None
    store = StorageInterface(connect(daemon.endpoint, timeout=30))
    try:
        assert store.good.append(np.arange(4.0)) == 0
        assert store.good.read(-1).tolist() == [0.0, 1.0, 2.0, 3.0]
        assert sorted(store) == ["good", "ok", "series"]  # nothing else was created by the bad requests
        assert store.ok.read() == 1.5
        status = store.storage_driver.status()
        assert status["pid"] == daemon.pid
    finally:
        store.close()
    assert daemon.stop() == 0
    with netCDF4.Dataset(str(file_name), "r") as ds:
        assert sorted(ds.variables) == ["good", "ok", "series"]
        assert ds.variables["series"][:].reshape(-1).tolist() == [1.0]  # the failed write at_index changed nothing


# --- SIGTERM under load ------------------------------------------------------------------------------


def _append_until_gone(endpoint: str, counter, results) -> None:
    """Append 0.0, 1.0, ... until the daemon stops answering; report the acknowledged (index, value)."""
    acked = []
    error = None
    try:
        store = StorageInterface(connect(endpoint, timeout=5, grace=1.0))  # no waiting for a restart
        deadline = time.monotonic() + 60
        k = 0
        while time.monotonic() < deadline:
            value = float(k)
            acked.append((store.load.x.append(value), value))
            k += 1
            counter.value = k
    except Exception as exc:  # noqa: BLE001 - the expected end: the daemon went away
        error = f"{type(exc).__name__}: {exc}"
    results.put((acked, error))


def test_sigterm_while_a_client_appends(tmp_path, daemon_factory):
    file_name = tmp_path / "run.nc"
    daemon = daemon_factory(file_name)
    ctx = mp.get_context("fork")
    counter = ctx.Value("i", 0)
    results = ctx.Queue()
    client = ctx.Process(target=_append_until_gone, args=(daemon.endpoint, counter, results), daemon=True)
    client.start()
    try:
        deadline = time.monotonic() + 30
        while counter.value < 200:
            assert time.monotonic() < deadline, "the client did not get going"
            assert client.exitcode is None, "the client died early"
            time.sleep(0.01)
        os.kill(daemon.pid, signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 0, daemon.log()
        acked, error = results.get(timeout=30)
    finally:
        client.join(timeout=10)
        if client.is_alive():
            client.kill()
            client.join(timeout=5)

    assert error is not None and error.startswith("ConnectionError"), error
    assert len(acked) >= 200
    assert [index for index, _ in acked] == list(range(len(acked)))
    assert not os.path.exists(socket_path(daemon.endpoint))
    assert not os.path.exists(str(file_name) + ".nstored")
    with netCDF4.Dataset(str(file_name), "r") as ds:
        stored = ds.groups["load"].variables["x"][:].reshape(-1).tolist()
    # every acknowledged entry is there; at most the one in flight landed unacknowledged
    assert stored[: len(acked)] == [value for _, value in acked]
    assert len(stored) - len(acked) in (0, 1)
    if len(stored) > len(acked):
        assert stored[-1] == float(len(acked))


# --- robustness of stop and of the one-daemon-per-file lock ------------------------------------------


def test_stop_by_endpoint_does_not_wait_for_an_unreaped_daemon(tmp_path, daemon_factory):
    """``nstored stop`` returns once the daemon has exited, even before its parent reaps it.

    The daemon here is a child of this test process, which does not wait() for
    it until after ``stop`` returns -- as under a container init or supervisor
    that reaps late: the exited daemon lingers as a zombie meanwhile.
    """
    daemon = daemon_factory(tmp_path / "run.nc")
    status = nstored("status", "--endpoint", daemon.endpoint, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["pid"] == daemon.pid

    t0 = time.monotonic()
    result = nstored("stop", "--endpoint", daemon.endpoint, "--timeout", "10")
    elapsed = time.monotonic() - t0
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"nstored: stopped pid {daemon.pid}"
    assert elapsed < 8, f"stop took {elapsed:.1f} s"
    assert daemon.process.wait(timeout=10) == 0


def test_lock_taken_while_the_holder_releases_it_is_the_real_one(tmp_path, daemon_factory, monkeypatch):
    """A daemon that opens the lock file just before the running one unlinks it must not end up
    holding a lock on the deleted file (a third daemon would then lock the new file and serve too)."""
    from nstore.daemon import lock as lock_module

    file_name = str(tmp_path / "run.nc")
    first = daemon_factory(file_name)
    real_flock = lock_module.fcntl.flock
    calls = []

    def flock_after_the_holder_exits(fd, operation):
        if not calls:  # between our open() and flock(): the running daemon stops, unlinking its lock file
            assert first.stop() == 0
        calls.append(operation)
        return real_flock(fd, operation)

    monkeypatch.setattr(lock_module.fcntl, "flock", flock_after_the_holder_exits)
    second = lock_module.DaemonLock(file_name)
    second.acquire()
    try:
        monkeypatch.setattr(lock_module.fcntl, "flock", real_flock)
        assert os.path.exists(second.path)
        assert os.stat(second.path).st_ino == os.fstat(second._fd).st_ino
        third = lock_module.DaemonLock(file_name)
        with pytest.raises(lock_module.AlreadyServedError):
            third.acquire()
    finally:
        second.release()
    assert not os.path.exists(lock_path(file_name))


def test_daemon_for_another_file_does_not_take_over_a_live_endpoint(tmp_path, daemon_factory):
    """``serve OTHER --endpoint E`` while a live daemon listens at ipc endpoint E must fail, not unlink
    E's socket file and bind there: clients connecting to E would then reach the wrong file."""
    first = daemon_factory(tmp_path / "a.nc")
    intruder = subprocess.Popen(
        [sys.executable, "-m", "nstore.daemon.cli", "serve", str(tmp_path / "b.nc"), "--endpoint", first.endpoint],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        try:
            code = intruder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        driver = connect(first.endpoint, timeout=10, connect_timeout=5)
        try:
            served = driver.file_name
        finally:
            driver.close()
        assert served == real_path(str(tmp_path / "a.nc")), f"{first.endpoint} now serves {served}"
        assert code not in (None, 0), "the second daemon took over the live endpoint"
        assert first.endpoint in intruder.stderr.read()
    finally:
        if intruder.poll() is None:
            os.kill(intruder.pid, signal.SIGKILL)
            intruder.wait(timeout=10)
        intruder.stderr.close()
    assert first.process.poll() is None
