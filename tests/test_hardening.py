"""Hardening: bad input at the door, limits, bounded memory, access control, many clients.

Every daemon here is a real ``nstored`` process, stopped by PID at teardown;
every receive on a raw socket has a poll timeout. Figures the issue asks for
(peak RSS under a flood, fds and RSS after connection churn) are printed: run
with ``-s`` to see them.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue as queue_module
import random
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib

import msgpack
import netCDF4
import numpy as np
import pytest
import zmq
import zmq.auth

from nstore import StorageInterface, connect
from nstore.daemon.clients import ClientTable
from nstore.protocol import PROTOCOL_VERSION
from nstore.protocol.endpoints import default_endpoint, read_lock
from nstore.protocol.messages import MAX_OPS_PER_MESSAGE, decode_reply, encode_request
from nstore.protocol.values import EXT_ARRAY, EXT_NUMPY_SCALAR, EXT_QUANTITY, MAX_ARRAY_NDIM

from daemons import free_port, stop_process

REPLY_TIMEOUT_S = 10.0
START_TIMEOUT_S = 30.0
MiB = 1024 * 1024


# --- helpers ------------------------------------------------------------------------------------


class RawClient:
    """A bare DEALER socket: send any frames, take the reply with a timeout."""

    def __init__(self, endpoint: str, routing_id: bytes | None = None):
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:  # the daemon keeps exactly-once results only for a client id that is this
            self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        self.sock.connect(endpoint)

    def exchange(self, frames: list, timeout: float = REPLY_TIMEOUT_S) -> tuple[int, list]:
        self.sock.send_multipart(frames)
        assert self.sock.poll(int(timeout * 1000)), f"no reply within {timeout:g} s"
        return decode_reply(self.sock.recv_multipart())

    def close(self) -> None:
        self.sock.close()
        self.context.term()


def body(header: dict) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def request(ops: list, request_id: int = 5) -> dict:
    return {"v": PROTOCOL_VERSION, "id": request_id, "client": "hostile", "ops": ops}


def ext(code: int, payload) -> msgpack.ExtType:
    return msgpack.ExtType(code, msgpack.packb(payload, use_bin_type=True))


def write_of(data) -> list:
    """A one-op write request body carrying ``data`` (may hold raw ExtTypes)."""
    return [body(request([["write", "evil", {"data": data}]]))]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def nstored(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nstore.daemon.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), stdin=subprocess.DEVNULL, timeout=timeout)


class Served:
    """``nstored serve FILE [args]`` for any endpoint (tcp, the default ipc one); stopped by PID."""

    def __init__(self, file_name, *args: str, keys: str | None = None):
        from nstore.protocol.transport import call

        self.file_name = str(file_name)
        self.log_path = self.file_name + ".test.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nstore.daemon.cli", "serve", self.file_name, *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        self.pid = self.process.pid
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            info = read_lock(self.file_name)
            if info and info.get("pid") == self.pid:
                try:
                    call(info["endpoint"], "status", timeout=0.5, keys=keys)
                    self.endpoint = info["endpoint"]
                    return
                except (ConnectionError, TimeoutError):
                    pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nstored did not start (exit {self.process.returncode}):\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self, timeout: float = 15.0) -> int:
        return stop_process(self.process, timeout)


@pytest.fixture
def serve():
    """``serve(file, *args, keys=None)`` -> a running :class:`Served`; all stopped by PID at teardown."""
    started: list[Served] = []

    def _serve(file_name, *args: str, keys: str | None = None) -> Served:
        daemon = Served(file_name, *args, keys=keys)
        started.append(daemon)
        return daemon

    yield _serve
    for daemon in started:
        daemon.stop()



# --- 1. validation at the door ----------------------------------------------------------------------

# (label, frames, fragment of the ProtocolError message). All of them reply with id -1.
_ARRAY = ["<f8", [2], b"\x00" * 16]


def _garbage() -> list:
    rng = random.Random(1234)
    good = encode_request(1, "hostile", [("write", "evil", {"data": np.arange(1000.0)})])  # body + 1 array frame
    cases = [
        ("empty frame", [b""], "malformed message"),
        ("truncated msgpack", [good[0][: len(good[0]) // 2], good[1]], "malformed message"),
        ("missing array frame", [good[0]], "array refers to frame 0, message has 0"),
        ("not a map", [body([1, 2, 3])], "request must be a map"),
        ("wrong version", [body({"v": PROTOCOL_VERSION + 7, "id": 1, "ops": []})], "protocol version mismatch"),
        ("id not int", [body(request([["list", "", {}]], request_id="1"))], "request id must be a non-negative integer"),
        ("id float", [body(request([["list", "", {}]], request_id=1.0))], "request id must be a non-negative integer"),
        ("id negative", [body(request([["list", "", {}]], request_id=-1))], "request id must be a non-negative integer"),
        ("client not str", [body({**request([["list", "", {}]]), "client": 7})], "client id must be a short string"),
        ("client too long", [body({**request([["list", "", {}]]), "client": "c" * 1000})], "client id must be a short"),
        ("ops not a list", [body(request("write"))], "non-empty list of ops"),
        ("ops empty", [body(request([]))], "non-empty list of ops"),
        ("op not a triple", [body(request([["write", "evil"]]))], "each op must be [name, path, args]"),
        ("op a map", [body(request([{"name": "write"}]))], "each op must be [name, path, args]"),
        ("op name int", [body(request([[5, "evil", {}]]))], "unknown op 5"),
        ("unknown op", [body(request([["drop_table", "evil", {}]]))], "unknown op 'drop_table'"),
        ("dunder op", [body(request([["__init__", "", {}]]))], "unknown op '__init__'"),
        ("path not str", [body(request([["write", 7, {"data": 1}]]))], "write: path must be a string"),
        ("args not map", [body(request([["write", "evil", [1]]]))], "write: args must be a map"),
        ("unexpected arg", [body(request([["write", "evil", {"data": 1, "mode": "w"}]]))], "unexpected argument 'mode'"),
        ("arg of wrong type", [body(request([["get_directory", "d", {"create": "yes"}]]))], "argument 'create' has type str"),
        ("too many ops", [body(request([["list", "", {}]] * (MAX_OPS_PER_MESSAGE + 1)))],
         f"more than the limit of {MAX_OPS_PER_MESSAGE}"),
        # arrays: declared shape x itemsize must match the buffer
        ("huge shape, tiny buffer", write_of(ext(EXT_ARRAY, ["<f8", [2**40, 2**40], b"\x00" * 8])),
         "needs 9671406556917033397649408 bytes, got 8"),
        ("huge shape, out-of-band frame", [write_of(ext(EXT_ARRAY, ["<f8", [2**31, 2**31], 0]))[0], b"\x00" * 64],
         "got 64"),
        ("shape short of buffer", write_of(ext(EXT_ARRAY, ["<f8", [1], b"\x00" * 16])), "needs 8 bytes, got 16"),
        ("negative dimension", write_of(ext(EXT_ARRAY, ["<f8", [-2, -1], b"\x00" * 16])), "non-negative integers"),
        ("shape not ints", write_of(ext(EXT_ARRAY, ["<f8", ["2"], b"\x00" * 16])), "non-negative integers"),
        ("too many dims", write_of(ext(EXT_ARRAY, ["<f8", [1] * (MAX_ARRAY_NDIM + 1), b"\x00" * 8])),
         f"more than the limit of {MAX_ARRAY_NDIM}"),
        ("frame index out of range", write_of(ext(EXT_ARRAY, ["<f8", [2], 3])), "array refers to frame 3"),
        ("object dtype", write_of(ext(EXT_ARRAY, ["|O", [2], b"\x00" * 16])), "dtype object is not storable"),
        ("complex dtype", write_of(ext(EXT_ARRAY, ["<c16", [1], b"\x00" * 16])), "dtype complex128 is not storable"),
        ("void dtype", write_of(ext(EXT_ARRAY, ["V8", [2], b"\x00" * 16])), "dtype |V8 is not storable"),
        ("unicode dtype", write_of(ext(EXT_ARRAY, ["<U3", [1], b"\x00" * 12])), "dtype <U3 is not storable"),
        ("structured dtype text", write_of(ext(EXT_ARRAY, ["[('a', '<f8')]", [1], b"\x00" * 8])), "dtype"),
        ("long dtype text", write_of(ext(EXT_ARRAY, ["<f8" + " " * 100, [1], b"\x00" * 8])), "dtype must be a short string"),
        ("object numpy scalar", write_of(ext(EXT_NUMPY_SCALAR, ["|O", b"\x00" * 8])), "dtype object is not storable"),
        ("numpy scalar size", write_of(ext(EXT_NUMPY_SCALAR, ["<f8", b"\x00" * 3])), "needs 8 bytes, got 3"),
        ("unknown extension", write_of(ext(42, [1])), "unknown extension type 42"),
        ("quantity of text", write_of(ext(EXT_QUANTITY, ["3", "meter"])), "quantity magnitude of type str"),
        # hostile unit strings
        ("unit exponent", write_of(ext(EXT_QUANTITY, [1.0, "m**1000000"])), "exponent 1e+06 out of range"),
        ("unit tower", write_of(ext(EXT_QUANTITY, [1.0, "9**9**9"])), "carries a number (9)"),
        ("unit nested power", write_of(ext(EXT_QUANTITY, [1.0, "((m**64)**64)**64"])), "out of range"),
        ("unit eval", write_of(ext(EXT_QUANTITY, [1.0, "eval(1)"])), "is not a unit pint understands"),
        ("unit import", write_of(ext(EXT_QUANTITY, [1.0, '__import__("os")'])), "unexpected character '\"'"),
        ("unit 10 kB", write_of(ext(EXT_QUANTITY, [1.0, "meter*" * 1700 + "meter"])), "longer than 256 characters"),
        ("unit with scale", write_of(ext(EXT_QUANTITY, [1.0, "1000*meter"])), "carries a number (1000)"),
    ]
    for n in range(8):
        cases.append((f"random bytes #{n}", [rng.randbytes(rng.randint(1, 300))], ""))
    cases.append(("random frames", [rng.randbytes(40) for _ in range(4)], ""))
    return cases


# Hostile paths in well-formed requests: an error per op, under the request's id.
_HOSTILE_PATHS = [
    ("a//b", "empty path component"),
    ("../x", "'..' is not allowed"),
    ("a/./b", "'.' is not allowed"),
    ("a\x00b", "control characters"),
    ("a\nb", "control characters"),
    ("/".join(["a"] * 1000), "path longer than 1024 characters"),
    ("/".join(["a"] * 40), "path deeper than 32 levels"),
    ("n" * 10_000, "path longer than 1024 characters"),
    ("g/" + "n" * 300, "name longer than 255 bytes"),
    ("g/" + "é" * 128, "name longer than 255 bytes"),
    (" lead", "whitespace"),
    ("g/trail ", "whitespace"),
    ("-x", "must start with a letter"),
    ("g/#x", "must start with a letter"),
    ("a\udcffb", "valid unicode"),  # a lone surrogate cannot even be sent: see below
    ("scalar", "reserved at the top level"),
    ("unlimited0", "reserved at the top level"),
    ("iterable3/x", "reserved at the top level"),
    ("iterable3_1", "reserved at the top level"),  # the second axis of a square array
]


def test_bad_requests_get_clear_errors_and_change_nothing(tmp_path, daemon_factory):
    file_name = tmp_path / "run.nc"
    daemon = daemon_factory(file_name)
    store = StorageInterface(connect(daemon.endpoint, timeout=30))
    for k in range(3):
        store.keep.append(float(k))
    store.fixed.write(np.arange(4.0))
    before = sorted(store.storage_driver.list_directory(""))
    raw = RawClient(daemon.endpoint, routing_id=b"hostile")  # its requests say client "hostile"
    try:
        for label, frames, fragment in _garbage():
            reply_id, results = raw.exchange(frames)
            assert reply_id == -1, label
            assert len(results) == 1, label
            ok, error = results[0]
            assert ok is False, label
            assert error["type"] == "ProtocolError", (label, error)
            assert error["message"], label
            assert fragment in error["message"], (label, error["message"])
            assert daemon.process.poll() is None, f"daemon died after {label!r}:\n{daemon.log()}"

        for n, (path, fragment) in enumerate(_HOSTILE_PATHS):
            try:
                ops = [["write", path, {"data": 1.0}], ["append", path, {"data": 1.0}],
                       ["get_directory", path, {"create": True}], ["add_metadata", path, {"name": "x", "value": 1}]]
                frames = [body(request(ops, request_id=100 + n))]
            except UnicodeEncodeError:  # msgpack refuses a lone surrogate; send its bytes raw instead
                frames = [body(request([["write", "PLACEHOLDER", {"data": 1.0}]], request_id=100 + n))
                          .replace(b"\xabPLACEHOLDER", b"\xa5a\xed\xb3\xbfb")]
                reply_id, results = raw.exchange(frames)
                assert reply_id == -1 and results[0][1]["type"] == "ProtocolError", results
                assert "malformed message" in results[0][1]["message"]
                continue
            reply_id, results = raw.exchange(frames)
            assert reply_id == 100 + n, path[:40]
            assert len(results) == 4
            for ok, error in results:
                assert ok is False, path[:40]
                assert error["type"] == "ValueError", (path[:40], error)
                assert fragment in error["message"], (path[:40], error["message"])
                assert len(error["message"]) < 400, "error messages quote hostile paths shortened"

        # the file is untouched, the variables keep their length, the daemon logged it
        assert sorted(store.storage_driver.list_directory("")) == before == ["fixed", "keep"]
        assert store.storage_driver.variable_info("keep")["length"] == 3
        reply_id, results = raw.exchange(encode_request(999, "hostile", [("list", "", {})]))
        assert (reply_id, results) == (999, [[True, before]])
    finally:
        raw.close()
    # a normal client still round-trips
    assert store.keep.append(3.0) == 3
    assert store.keep.read().tolist() == [0.0, 1.0, 2.0, 3.0]
    store.other.write(np.eye(2))
    assert store.other.read().tolist() == [[1.0, 0.0], [0.0, 1.0]]
    store.close()
    log = daemon.log()
    assert "bad request from" in log and "request id must be a non-negative integer" in log
    assert "unknown op 'drop_table'" in log
    assert "write a//b failed: ValueError" in log
    assert daemon.stop() == 0
    with netCDF4.Dataset(str(file_name)) as ds:
        assert sorted(ds.variables) == ["fixed", "keep", "other"] and not ds.groups


def test_hostile_paths_fail_the_same_in_process(tmp_path):
    """The same names are refused by the in-process driver (paths are checked in one place)."""
    from nstore import NetCDFIODriver

    driver = NetCDFIODriver(str(tmp_path / "local.nc"))
    try:
        for path, fragment in _HOSTILE_PATHS:
            with pytest.raises(ValueError, match=None) as info:
                driver.write_variable(path, 1.0)
            assert fragment in str(info.value), (path[:40], str(info.value))
        driver.write_variable("g/scalar", 1.0)  # dimension names are fine below the top level
        driver.write_variable("_private", 2.0)  # so are SIDV-reserved names and leading underscores
        driver.write_variable("g/write", 3.0)
        assert driver.read_variable("g/scalar") == 1.0 and driver.list_directory("") == ["_private", "g"]
    finally:
        driver.close()
    with netCDF4.Dataset(str(tmp_path / "local.nc")) as ds:
        assert sorted(ds.groups["g"].variables) == ["scalar", "write"]


# --- 2. limits ------------------------------------------------------------------------------------------


def test_max_array_mb_refuses_big_ops_before_writing(tmp_path, daemon_factory):
    daemon = daemon_factory(tmp_path / "run.nc", "--max-array-mb", "1")
    driver = connect(daemon.endpoint, timeout=30)
    try:
        limit = MiB
        driver.write_variable("exact", np.zeros(limit // 8))  # exactly the limit is allowed
        with pytest.raises(ValueError) as info:
            driver.write_variable("big", np.zeros(limit // 8 + 1))
        message = str(info.value)
        assert message.startswith("big: write carries at least 1048584 bytes of data")
        assert f"limit is {limit} bytes (1 MiB) per operation (nstored --max-array-mb)" in message
        driver.append_variable("series", np.ones(1024))
        with pytest.raises(ValueError, match=r"^series: append carries at least 2097152 bytes"):
            driver.append_variable("series", np.ones(2 * limit // 8))  # refused for size, not for its shape
        with pytest.raises(ValueError, match=r"^lst: write carries at least \d+ bytes"):
            driver.write_variable("lst", [0.5] * (limit // 8 + 1))  # lists count as 8 bytes per number
        with pytest.raises(ValueError, match=r"^q: write carries at least 1048584 bytes"):
            from nstore import ureg
            driver.write_variable("q", np.zeros(limit // 8 + 1) * ureg.meter)
        with pytest.raises(ValueError, match=r"^/: add_metadata carries at least 1048577 bytes"):
            driver.add_metadata("blob", "x" * (limit + 1))
        assert driver.list_directory("") == ["exact", "series"]
        assert driver.variable_info("series")["length"] == 1
        assert "blob" not in driver.read_metadata("/")
    finally:
        driver.close()

    # pipelined: the big op fails (named at flush), its neighbours land
    piped = connect(daemon.endpoint, timeout=30, pipeline=True)
    try:
        first = piped.append_variable("series", np.ones(1024))
        piped.append_variable("series", np.ones(limit))
        last = piped.append_variable("series", np.ones(1024))
        with pytest.raises(ValueError, match=r"pipelined append to 'series' failed: series: append carries at least"):
            piped.flush()
        assert (int(first), int(last)) == (1, 2)
        assert piped.variable_info("series")["length"] == 3
    finally:
        piped.close()
    assert "write big failed: ValueError: big: write carries at least" in daemon.log()


def test_max_message_mb_disconnects_only_the_offender(tmp_path, daemon_factory):
    daemon = daemon_factory(tmp_path / "run.nc", "--max-message-mb", "1")
    bystander = connect(daemon.endpoint, timeout=30)
    bystander.append_variable("ok", 1.0)
    offender = connect(daemon.endpoint, timeout=3, grace=0)
    try:
        offender.write_variable("small", np.zeros(1000))  # under the limit: fine
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="did not answer within 3 s"):
            offender.write_variable("huge", np.zeros(2 * MiB // 8))  # 2 MiB message: zmq drops the connection
        elapsed = time.monotonic() - started
        assert elapsed < 3 + 2, f"the offender waited {elapsed:.1f} s"
        assert bystander.append_variable("ok", 2.0) == 1  # another client is unaffected
        assert daemon.process.poll() is None
        assert sorted(bystander.list_directory("")) == ["ok", "small"]  # "huge" never reached the file
        # the offender can carry on with messages under the limit (its socket is rebuilt)
        offender.write_variable("after", 1.5)
        assert bystander.read_variable("after") == 1.5
    finally:
        offender.close()
        bystander.close()


def test_max_ops_per_message(tmp_path, daemon_factory):
    daemon = daemon_factory(tmp_path / "run.nc")
    raw = RawClient(daemon.endpoint, routing_id=b"bulk")
    try:
        ops = [("append", "many", {"data": float(k)}) for k in range(MAX_OPS_PER_MESSAGE)]
        reply_id, results = raw.exchange(encode_request(11, "bulk", ops), timeout=60)
        assert reply_id == 11
        assert results == [[True, k] for k in range(MAX_OPS_PER_MESSAGE)]
        reply_id, results = raw.exchange(encode_request(12, "bulk", ops + [("append", "many", {"data": -1.0})]))
        assert reply_id == -1 and results[0][0] is False
        assert results[0][1]["message"] == (f"request carries {MAX_OPS_PER_MESSAGE + 1} ops, "
                                            f"more than the limit of {MAX_OPS_PER_MESSAGE}")
    finally:
        raw.close()
    driver = connect(daemon.endpoint, timeout=30)
    try:
        assert driver.read_variable("many").tolist() == [float(k) for k in range(MAX_OPS_PER_MESSAGE)]
    finally:
        driver.close()


def test_client_table_is_bounded():
    table = ClientTable(idle_s=3600, max_clients=3)
    for n in range(5):
        table.remember(f"c{n}", 1, 0, [True, n])
    table.remember("c2", 2, 0, [True, 9])  # c2 is now the most recently seen
    table.remember("c5", 1, 0, [True, 5])
    assert len(table) == 3
    assert table.lookup("c0", 1) is None and table.lookup("c3", 1) is None
    assert table.lookup("c2", 2) == {0: [True, 9]} and table.lookup("c4", 1) == {0: [True, 4]}
    restored = ClientTable(max_clients=2)
    restored.restore(table.snapshot())
    assert len(restored) == 2 and restored.lookup("c5", 1) == {0: [True, 5]} and restored.lookup("c4", 1) is None


def test_unpacked_buffers_are_freed_without_the_cyclic_gc():
    """The daemon runs the cyclic GC rarely: a decoded message must free its frames by refcount alone."""
    import gc
    import weakref

    from nstore.protocol.values import pack, unpack

    frame = np.zeros(MiB // 8)  # stands for a received 1 MiB frame
    alive = weakref.ref(frame)
    body_frame = pack(frame)[0]
    gc.disable()
    try:
        value = unpack([body_frame, frame])
        del frame
        assert np.shares_memory(value, alive()) and value.nbytes == MiB
        del value
        assert alive() is None, "a reference cycle kept the message's buffer alive"
    finally:
        gc.enable()


# --- 3. backpressure: a flood of 1 MiB appends, bounded daemon memory ---------------------------------

FLOOD_WORKERS = 16
FLOOD_ROWS = 40  # per worker and mode
ROW = MiB // 8  # float64 values per 1 MiB row


def _row(worker: int, mode: int, k: int) -> np.ndarray:
    return np.random.default_rng((worker, mode, k)).random(ROW)


def _flood_worker(endpoint: str, worker: int, barrier, results) -> None:
    try:
        sync = connect(endpoint, timeout=60)
        landed = []
        for k in range(FLOOD_ROWS):
            row = _row(worker, 0, k)
            landed.append(("flood/sync", sync.append_variable("flood/sync", row), zlib.crc32(row.tobytes())))
        sync.close()
        barrier.wait(timeout=100)  # every worker switches to pipelined mode at the same time
        piped = connect(endpoint, timeout=60, pipeline=True)
        pending = []
        for k in range(FLOOD_ROWS):
            row = _row(worker, 1, k)
            pending.append((piped.append_variable("flood/pipe", row), zlib.crc32(row.tobytes())))
        piped.flush()
        landed += [("flood/pipe", int(handle), crc) for handle, crc in pending]
        piped.close()
        results.put((worker, True, landed))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        results.put((worker, False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def test_flood_of_big_appends_keeps_daemon_memory_bounded(tmp_path, daemon_factory):
    daemon = daemon_factory(tmp_path / "flood.nc")
    baseline = rss_mb(daemon.pid)
    samples: list[tuple[float, float]] = []  # (time, RSS MB)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                samples.append((time.monotonic(), rss_mb(daemon.pid)))
            except (OSError, AssertionError):
                return
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    switched = ctx.Value("d", 0.0)  # when the workers went from sync to pipelined mode

    def mark_switch() -> None:
        switched.value = time.monotonic()

    barrier = ctx.Barrier(FLOOD_WORKERS, action=mark_switch)
    procs = [ctx.Process(target=_flood_worker, args=(daemon.endpoint, w, barrier, results), daemon=True)
             for w in range(FLOOD_WORKERS)]
    started = time.monotonic()
    sampler.start()
    for proc in procs:
        proc.start()
    collected = {}
    try:
        deadline = time.monotonic() + 100
        while len(collected) < len(procs):
            try:
                worker, ok, value = results.get(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            except queue_module.Empty:
                assert time.monotonic() < deadline, f"flood workers not done: {sorted(set(range(16)) - set(collected))}"
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not dead, f"flood workers died: {dead}"
                continue
            assert ok, f"worker {worker}: {value}"
            collected[worker] = value
    finally:
        stop.set()
        sampler.join(timeout=5)
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    elapsed = time.monotonic() - started
    peak = max(rss for _, rss in samples)
    peak_sync = max((rss for t, rss in samples if t < switched.value), default=float("nan"))
    peak_pipe = max((rss for t, rss in samples if t >= switched.value), default=float("nan"))
    total_mib = 2 * FLOOD_WORKERS * FLOOD_ROWS
    print(f"\n[flood] {FLOOD_WORKERS} processes x {FLOOD_ROWS} x 1 MiB appends, sync then pipelined "
          f"({total_mib} MiB) in {elapsed:.1f} s; daemon RSS baseline {baseline:.0f} MB, peak {peak:.0f} MB "
          f"(sync phase {peak_sync:.0f} MB, pipelined phase {peak_pipe:.0f} MB; {len(samples)} samples; "
          f"target 256 MB, limit 512 MB)")
    assert peak < 512, f"daemon peak RSS {peak:.0f} MB"

    # every entry landed exactly once, where its appender was told, with its content
    driver = connect(daemon.endpoint, timeout=60)
    try:
        for path in ("flood/sync", "flood/pipe"):
            expected = {index: crc for landed in collected.values() for p, index, crc in landed if p == path}
            assert sorted(expected) == list(range(FLOOD_WORKERS * FLOOD_ROWS)), path
            assert driver.variable_info(path)["length"] == FLOOD_WORKERS * FLOOD_ROWS
            for start in range(0, FLOOD_WORKERS * FLOOD_ROWS, 32):
                block = driver.read_variable(path, slice(start, start + 32))
                for offset, row in enumerate(block):
                    assert zlib.crc32(np.ascontiguousarray(row).tobytes()) == expected[start + offset], (path, start + offset)
    finally:
        driver.close()


# --- 4. access control -------------------------------------------------------------------------------


def test_default_ipc_socket_is_private(tmp_path, runtime_dir, serve):
    file_name = tmp_path / "run.nc"
    daemon = serve(file_name)
    endpoint = default_endpoint(str(file_name))
    assert daemon.endpoint == endpoint and endpoint.startswith(f"ipc://{runtime_dir}/")
    sock_path = endpoint[len("ipc://"):]
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(sock_path)).st_mode) == 0o700
    assert os.stat(sock_path).st_uid == os.getuid()
    driver = connect(str(file_name), timeout=30)  # found from the file name alone
    try:
        assert driver.append_variable("x", 1.0) == 0
    finally:
        driver.close()
    assert daemon.stop() == 0
    assert not os.path.exists(sock_path)


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775])
def test_ipc_socket_in_shared_directory_is_refused(tmp_path, mode):
    shared = tempfile.mkdtemp(prefix="nw", dir="/tmp")
    try:
        os.chmod(shared, mode)
        file_name = tmp_path / "run.nc"
        result = nstored("serve", str(file_name), "--endpoint", f"ipc://{shared}/d.sock", timeout=30)
        assert result.returncode == 2, result.stderr
        assert f"{shared}: others may write to this directory (mode {oct(mode & 0o777)})" in result.stderr
        assert not os.path.exists(file_name) and not os.path.exists(f"{shared}/d.sock")
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_tcp_beyond_loopback_needs_keys_or_insecure(tmp_path, serve, monkeypatch):
    monkeypatch.delenv("NSTORE_KEYS", raising=False)
    port = free_port("0.0.0.0")
    file_name = tmp_path / "run.nc"
    result = nstored("serve", str(file_name), "--endpoint", f"tcp://0.0.0.0:{port}", timeout=30)
    assert result.returncode == 2
    assert f"tcp://0.0.0.0:{port} is reachable beyond this machine: give --keys DIR" in result.stderr
    assert "--insecure" in result.stderr
    assert not os.path.exists(file_name)

    daemon = serve(file_name, "--endpoint", f"tcp://0.0.0.0:{port}", "--insecure")
    assert "WARNING INSECURE: tcp://0.0.0.0:" in daemon.log()
    driver = connect(f"tcp://127.0.0.1:{port}", timeout=30)
    try:
        assert driver.append_variable("x", 1.0) == 0
    finally:
        driver.close()
    assert daemon.stop() == 0


def test_curve_keys_admit_only_authorized_clients(tmp_path, serve, monkeypatch):
    monkeypatch.delenv("NSTORE_KEYS", raising=False)
    keys = str(tmp_path / "keys")
    result = nstored("keygen", keys)
    assert result.returncode == 0, result.stderr
    for name in ("server.key_secret", "client.key_secret"):
        assert stat.S_IMODE(os.stat(os.path.join(keys, name)).st_mode) == 0o600
    assert os.listdir(os.path.join(keys, "authorized")) == ["client.key"]
    # a client key pair the daemon does not know, with the right server key
    stranger = str(tmp_path / "stranger")
    os.makedirs(stranger)
    shutil.copy(os.path.join(keys, "server.key"), stranger)
    zmq.auth.create_certificates(stranger, "client")
    # a complete other key set (wrong server key as well)
    other = str(tmp_path / "other")
    assert nstored("keygen", other).returncode == 0

    port = free_port("127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    daemon = serve(tmp_path / "run.nc", "--endpoint", endpoint, "--keys", keys, keys=keys)
    for label, client_keys in (("no keys", None), ("unknown client key", stranger), ("other key set", other)):
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            connect(endpoint, keys=client_keys, connect_timeout=2, grace=0)
        elapsed = time.monotonic() - started
        assert elapsed < 2 + 1.5, f"{label}: refused only after {elapsed:.1f} s"
    driver = connect(endpoint, keys=keys, timeout=30)
    try:
        assert driver.append_variable("x", 1.0) == 0
        assert driver.read_variable("x").tolist() == [1.0]
    finally:
        driver.close()

    refused = nstored("status", "--endpoint", endpoint, "--timeout", "2", "--json")
    assert refused.returncode == 1 and "no nstored answered" in refused.stderr
    status = nstored("status", "--endpoint", endpoint, "--keys", keys, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["pid"] == daemon.pid
    stopped = nstored("stop", "--endpoint", endpoint, "--keys", keys, "--timeout", "20")
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped pid {daemon.pid}" in stopped.stdout
    assert daemon.process.wait(timeout=10) == 0


# --- 5. many clients and churn ---------------------------------------------------------------------------


def _mixed_client(endpoint: str, tid: int, n_ops: int) -> dict:
    """Mixed ops on a shared log and on this client's own directory; returns what it must find.

    Per 5 ops: an append to the shared log, an append to its own series, a
    write at_index into that series, a read of its last entry, a metadata
    write and read back.
    """
    driver = connect(endpoint, timeout=60)
    own = f"c{tid}"
    series: list[float] = []
    shared: dict[int, float] = {}
    last = None
    try:
        for i in range(n_ops):
            step = i % 5
            if step == 0:
                value = float(tid * 1_000_000 + i)
                shared[driver.append_variable("shared/log", value)] = value
            elif step == 1:
                assert driver.append_variable(f"{own}/series", float(i)) == len(series)
                series.append(float(i))
            elif step == 2:
                j = (i * 7) % len(series)
                driver.write_variable(f"{own}/series", -float(i), at_index=j)
                series[j] = -float(i)
            elif step == 3:
                assert float(driver.read_variable(f"{own}/series", -1)) == series[-1]
            else:
                driver.add_metadata("last", i, path=own)
                last = i
                assert driver.read_metadata(own)["last"] == i
        return {"series": series, "shared": shared, "last": last}
    finally:
        driver.close()


def _run_clients(endpoint: str, tids: list, n_ops: int) -> tuple[dict, list]:
    """One thread (and RemoteDriver) per client id; (outcomes by id, error reports)."""
    outcomes: dict[int, dict] = {}
    errors: list[str] = []

    def run(tid: int) -> None:
        try:
            outcomes[tid] = _mixed_client(endpoint, tid, n_ops)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"client {tid}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")

    threads = [threading.Thread(target=run, args=(tid,), daemon=True) for tid in tids]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 100
    for thread in threads:
        thread.join(timeout=max(0.1, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        errors.append(f"clients {[t for t, th in zip(tids, threads) if th.is_alive()]} did not finish within 100 s")
    return outcomes, errors


def _client_process(endpoint: str, tids: list, n_ops: int, results) -> None:
    results.put(_run_clients(endpoint, tids, n_ops))


def _many_clients(tmp_path, daemon_factory, processes: int, threads: int, n_ops: int) -> None:
    """``processes`` x ``threads`` clients (processes=0: threads of this process) doing ``n_ops`` mixed ops."""
    daemon = daemon_factory(tmp_path / "many.nc")
    started = time.monotonic()
    if processes == 0:
        outcomes, errors = _run_clients(daemon.endpoint, list(range(threads)), n_ops)
    else:
        ctx = mp.get_context("fork")
        results = ctx.Queue()
        procs = [ctx.Process(target=_client_process, daemon=True,
                             args=(daemon.endpoint, list(range(p * threads, (p + 1) * threads)), n_ops, results))
                 for p in range(processes)]
        for proc in procs:
            proc.start()
        outcomes, errors = {}, []
        try:
            for _ in procs:
                part, part_errors = results.get(timeout=110)
                outcomes.update(part)
                errors += part_errors
        finally:
            for proc in procs:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
    assert not errors, "\n".join(errors[:3])
    n_clients = max(processes, 1) * threads
    assert len(outcomes) == n_clients
    elapsed = time.monotonic() - started
    print(f"\n[many clients] {n_clients} clients ({processes or 1} process(es) x {threads} threads) x {n_ops} "
          f"mixed ops in {elapsed:.1f} s ({n_clients * n_ops / elapsed:.0f} ops/s)")
    driver = connect(daemon.endpoint, timeout=60)
    try:
        log = driver.read_variable("shared/log").tolist()
        shared = {index: value for outcome in outcomes.values() for index, value in outcome["shared"].items()}
        assert len(log) == len(shared) == n_clients * len(range(0, n_ops, 5))
        assert all(log[index] == value for index, value in shared.items())
        for tid, outcome in outcomes.items():
            assert driver.read_variable(f"c{tid}/series").tolist() == outcome["series"]
            assert driver.read_metadata(f"c{tid}")["last"] == outcome["last"]
    finally:
        driver.close()
    assert daemon.stop() == 0


def test_many_concurrent_clients(tmp_path, daemon_factory):
    """64 clients x 2,000 mixed ops, threads of one process (about 20 s on 2 cores)."""
    _many_clients(tmp_path, daemon_factory, 0, 64, 2000)


@pytest.mark.slow
def test_many_concurrent_clients_in_processes(tmp_path, daemon_factory):
    """The same load from 8 processes x 8 threads."""
    _many_clients(tmp_path, daemon_factory, 8, 8, 2000)


def _churn(tmp_path, daemon_factory, cycles: int) -> None:
    """``cycles`` connect/append/close cycles; the daemon's fds and RSS after them vs after the first 100."""
    daemon = daemon_factory(tmp_path / "churn.nc")

    def cycle(k: int) -> None:
        driver = connect(daemon.endpoint, timeout=30)
        try:
            assert driver.append_variable("churn", float(k)) == k
        finally:
            driver.close()

    def settled_fds(limit: int) -> int:
        """The daemon's fd count once disconnects are processed (waits up to 5 s for it to reach ``limit``)."""
        deadline = time.monotonic() + 5
        while fd_count(daemon.pid) > limit and time.monotonic() < deadline:
            time.sleep(0.05)
        return fd_count(daemon.pid)

    started = time.monotonic()
    for k in range(100):
        cycle(k)
    time.sleep(0.5)
    fds_100, rss_100 = settled_fds(0), rss_mb(daemon.pid)
    for k in range(100, cycles):
        cycle(k)
    fds_end, rss_end = settled_fds(fds_100 + 5), rss_mb(daemon.pid)
    elapsed = time.monotonic() - started
    print(f"\n[churn] {cycles} connect/append/close cycles in {elapsed:.1f} s: daemon fds {fds_100} -> {fds_end}, "
          f"RSS {rss_100:.1f} -> {rss_end:.1f} MB (after 100 -> after {cycles} cycles)")
    assert fds_end <= fds_100 + 5
    assert rss_end <= rss_100 + 30
    driver = connect(daemon.endpoint, timeout=30)
    try:
        assert driver.read_variable("churn").tolist() == [float(k) for k in range(cycles)]
    finally:
        driver.close()


def test_connect_churn_does_not_leak(tmp_path, daemon_factory):
    _churn(tmp_path, daemon_factory, 1000)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_connect_churn_long(tmp_path, daemon_factory):
    _churn(tmp_path, daemon_factory, 10_000)


def test_idle_clients_are_forgotten(tmp_path, daemon_factory):
    daemon = daemon_factory(tmp_path / "idle.nc", "--client-idle-s", "1", "--checkpoint-interval", "0.2")
    idle = [connect(daemon.endpoint, timeout=30) for _ in range(5)]
    active = connect(daemon.endpoint, timeout=30)
    for n, driver in enumerate(idle):
        assert driver.append_variable("x", float(n)) == n
    active.append_variable("y", 0.0)
    assert active.status()["clients_remembered"] == 6
    for driver in idle:
        driver.close()
    deadline = time.monotonic() + 10
    remembered = []
    while time.monotonic() < deadline:
        active.append_variable("y", 1.0)  # keeps this one fresh
        remembered.append(active.status()["clients_remembered"])
        if remembered[-1] == 1 and time.monotonic() > deadline - 8:  # (at least 2 s: past idle_s + a checkpoint)
            break
        time.sleep(0.2)
    assert remembered[-1] == 1, remembered
    active.close()
