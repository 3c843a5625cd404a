"""Write-behind and the read cache (issue 12): acknowledged appends wait for the file, reads never miss them."""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import threading

import numpy as np
import pytest
import zmq

from nstore import NetCDFIODriver, connect, ureg
from nstore.daemon import behind
from nstore.daemon.columns import reserve_column
from nstore.daemon.daemon_engine import DaemonEngine
from nstore.daemon.server import Server
from nstore.protocol.kinds.quantity import quantity_parts
from nstore.protocol.messages import decode_reply, encode_request

VALUES = {
    "float": [1.5, -2.25, 3.0],
    "int": [1, -2, 3],
    "bool": [True, False, True],
    "float32": [np.float32(1.5), np.float32(2.5), np.float32(-1)],
    "str": ["a", "", "ünï"],
    "dict": [{"a": 1}, {"b": [1, 2]}, {}],
    "list": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
    "tuple": [(1, 2), (3, 4), (5, 6)],
    "mixed": [[1, "a"], [2, "b"], [3, "c"]],
    "array": [np.arange(6.0).reshape(2, 3), np.ones((2, 3)), np.zeros((2, 3))],
    "quantity": [ureg.Quantity(1.5, "nanometer"), ureg.Quantity(2.0, "nanometer"), ureg.Quantity(3.0, "angstrom")],
    "quantity_array": [ureg.Quantity(np.arange(3.0), "kelvin")] * 3,
}


def _same(a, b) -> bool:
    qa, qb = quantity_parts(a), quantity_parts(b)  # (the daemon's engine reads WireQuantity, a driver pint)
    if qa or qb:
        return qa is not None and qb is not None and qa[1] == qb[1] and _same(qa[0], qb[0])
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return type(a) is type(b) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _stage(engine: DaemonEngine, path: str, values: list) -> list:
    """What the daemon does with a run of appends: reserve, (journal,) queue for the file."""
    return engine.stage(engine.reserve_appends(path, values))


def _reads(driver, path: str) -> list:
    return [driver.read_variable(path), driver.read_variable(path, 0), driver.read_variable(path, -1),
            driver.read_variable(path, slice(1, None)), driver.read_variable(path, slice(None, None, -2)),
            driver.variable_info(path)]


@pytest.mark.parametrize("kind", sorted(VALUES))
def test_reads_before_the_file_write_equal_reads_of_the_file(tmp_path, kind):
    """Waiting rows and recent rows are served as the file would serve them, for every kind."""
    file_name = str(tmp_path / "run.nc")
    engine = DaemonEngine(file_name)
    assert _stage(engine, "v", VALUES[kind][:1]) == [0]
    engine.flush()
    _stage(engine, "v", VALUES[kind][1:])  # entry 0 in the file, 1 and 2 waiting
    assert engine.behind.rows == 2
    waiting = _reads(engine, "v")
    engine.flush()
    written = _reads(engine, "v")
    engine.close()
    with NetCDFIODriver(file_name, "r") as fresh:
        from_file = _reads(fresh, "v")
    for got, want in zip(waiting + written, from_file + from_file):
        assert _same(got, want), (kind, got, want)


def test_columns_and_single_appends_wait_together_in_order(tmp_path):
    engine = DaemonEngine(str(tmp_path / "run.nc"))
    try:
        assert _stage(engine, "x", [0.0, 1.0]) == [0, 1]
        assert engine.stage(reserve_column(engine, "x", {"data": np.array([2.0, 3.0, 4.0]), "kind": "float"})) == [2]
        assert _stage(engine, "x", [5.0]) == [5]
        assert engine.behind.rows == 6
        assert [engine.read_variable("x", k) for k in range(6)] == [float(k) for k in range(6)]
        assert engine.read_variable("x", slice(1, 5)).tolist() == [1.0, 2.0, 3.0, 4.0]
        engine.flush()
        assert engine.read_variable("x").tolist() == [float(k) for k in range(6)]
    finally:
        engine.close()


def test_state_ops_see_every_acknowledged_append(tmp_path):
    """Listings, info, metadata and layout see appends that have not reached the file."""
    sockets = tempfile.mkdtemp(prefix="nwb")
    server = Server(str(tmp_path / "run.nc"), f"ipc://{sockets}/s.sock")
    try:
        replies = server.process([_message(b"c1", 1, [("append", "g/x", {"data": float(k)}) for k in range(5)])])
        assert [value for _, value in _results(replies)] == [0, 1, 2, 3, 4]
        assert server.status()["pending_rows"] == 5
        asked = server.process([_message(b"c2", 1, [("list", "g", {}), ("info", "g/x", {}), ("metadata", "g/x", {}),
                                                     ("layout", "", {}), ("read", "g/x", {})])])
        listing, info, metadata, layout, values = [value for _, value in _results(asked)]
        assert listing == ["x"] and info["length"] == 5 and metadata == {}
        assert server.status()["pending_rows"] == 0  # layout reads dimensions: the file caught up first
        assert layout["g"]["variables"]["x"]["shape"] == [5, 1]
        assert values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    finally:
        server.close()
        os.rmdir(sockets)


def test_a_live_daemon_serves_waiting_appends_to_reads_listings_and_snapshots(tmp_path, monkeypatch):
    """Through the socket, with the file write held back: every state-reading op sees the appends."""
    from nstore.cli import snapshot
    from nstore.daemon import server as server_module

    monkeypatch.setattr(server_module, "IDLE_WRITE_MS", 60_000)  # never idle enough to write
    monkeypatch.setattr(behind, "MAX_PENDING_S", 3600.0)
    sockets = tempfile.mkdtemp(prefix="nwb")
    server = Server(str(tmp_path / "run.nc"), f"ipc://{sockets}/s.sock")
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    driver = connect(server.endpoint, timeout=30)
    try:
        for k in range(5):
            assert driver.append_variable("g/x", float(k)) == k
        driver.add_metadata("note", "hi", path="g/x")
        assert driver.status()["pending_rows"] == 5
        assert driver.read_variable("g/x").tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert driver.read_variable("g/x", -1) == 4.0 and driver.variable_info("g/x")["length"] == 5
        assert driver.list_directory("g") == ["x"] and driver.read_metadata("g/x") == {"note": "hi"}
        snapshot(driver, str(tmp_path / "copy.nc"))
        assert driver.status()["pending_rows"] == 5  # none of that needed the file write
        with NetCDFIODriver(str(tmp_path / "copy.nc"), "r") as copy:
            assert copy.read_variable("g/x").tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
        driver.sync()
        assert driver.status()["pending_rows"] == 0
    finally:
        driver.close()
        server.stop()
        loop.join(60)
        os.rmdir(sockets)
    assert not loop.is_alive()


def test_the_cache_never_serves_an_overwritten_entry(tmp_path):
    engine = DaemonEngine(str(tmp_path / "run.nc"))
    try:
        _stage(engine, "x", [1.0, 2.0, 3.0])
        assert engine.read_variable("x", -1) == 3.0  # waiting
        engine.write_variable("x", 30.0, at_index=2)
        assert engine.read_variable("x", -1) == 30.0 and engine.read_variable("x", 2) == 30.0
        _stage(engine, "x", [4.0])
        engine.flush()
        assert engine.read_variable("x", 3) == 4.0  # recent, from memory
        engine.write_entries("x", 2, [31.0, 40.0])
        assert engine.read_variable("x").tolist() == [1.0, 2.0, 31.0, 40.0]
        assert engine.read_variable("x", -1) == 40.0
        engine.write_variable("fixed", 1.0)
        assert engine.read_variable("fixed") == 1.0  # now remembered
        engine.write_variable("fixed", 2.0)
        assert engine.read_variable("fixed") == 2.0
    finally:
        engine.close()


def test_the_cache_never_serves_an_overwritten_entry_through_the_daemon(daemon_factory, tmp_path):
    daemon = daemon_factory(str(tmp_path / "run.nc"))
    driver = connect(daemon.endpoint, timeout=30)
    try:
        for k in range(10):
            assert driver.append_variable("x", float(k)) == k
            assert driver.read_variable("x", -1) == float(k)
        driver.write_variable("x", 99.0, at_index=9)
        assert driver.read_variable("x", -1) == 99.0 and driver.read_variable("x", 9) == 99.0
        driver.write_variable("c", np.arange(3.0))
        assert driver.read_variable("c").tolist() == [0.0, 1.0, 2.0]
        driver.write_variable("c", np.arange(3.0) + 1)
        assert driver.read_variable("c").tolist() == [1.0, 2.0, 3.0]
    finally:
        driver.close()


def test_a_failed_file_write_keeps_its_rows_and_is_retried(tmp_path, monkeypatch):
    engine = DaemonEngine(str(tmp_path / "run.nc"))
    real = behind.write_rows
    try:
        _stage(engine, "x", [1.0, 2.0])
        _stage(engine, "y", [3.0])

        def failing_for_x(ncvar, start, data):  # only x's file writes fail
            if ncvar.name == "x":
                raise RuntimeError("NetCDF: HDF error")
            real(ncvar, start, data)

        monkeypatch.setattr(behind, "write_rows", failing_for_x)
        with pytest.raises(OSError, match=r"x: writing 2 acknowledged entries to .*run.nc failed .*safe in the journal"):
            engine.flush()
        assert engine.behind.rows == 2 and engine.behind.error is not None  # x failed; y, after it, was written
        assert engine.behind.waits("x") and not engine.behind.waits("y")
        assert engine.read_variable("x").tolist() == [1.0, 2.0]  # reads do not need the file write
        engine.write_variable("other", 5.0)  # nor do writes to a variable with nothing waiting
        _stage(engine, "y", [3.5])
        engine.write_variable("y", 4.0, at_index=0)  # nor to another variable whose rows wait: only its own go first
        assert engine.behind.rows == 2 and engine.behind.waits("x") and not engine.behind.waits("y")
        assert engine.behind.error is not None  # x still fails: still reported
        with pytest.raises(OSError, match="x: writing 2 acknowledged entries"):
            engine.write_variable("x", 9.0, at_index=0)  # one that overwrites a waiting entry of x does
        monkeypatch.setattr(behind, "write_rows", real)
        engine.flush()
        assert engine.behind.rows == 0 and engine.behind.error is None
    finally:
        engine.close()
    with NetCDFIODriver(str(tmp_path / "run.nc"), "r") as fresh:
        assert fresh.read_variable("x").tolist() == [1.0, 2.0] and fresh.read_variable("y").tolist() == [4.0, 3.5]


def test_waiting_rows_and_the_cache_stay_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(behind, "CACHE_BYTES", 64 * 1024)
    engine = DaemonEngine(str(tmp_path / "run.nc"))
    try:
        for k in range(200):  # 200 variables of 64 recent 64-byte rows = 800 KiB, more than the cache
            _stage(engine, f"v{k}", [np.full(8, float(k))] * 70)
            assert engine.behind._tail_bytes <= 64 * 1024
        assert engine.behind.rows == 200 * 70
        assert engine.behind.due()  # past MAX_PENDING_ROWS: the loop writes now
        assert engine.read_variable("v0", -1).tolist() == [0.0] * 8  # evicted from the cache, still waiting
        engine.flush()
        assert engine.read_variable("v199", 3).tolist() == [199.0] * 8
        message = np.zeros(1_000_000)  # (as a small array decoded from a big message views it)
        _stage(engine, "small", [message[:3]])
        engine.stage(reserve_column(engine, "small", {"data": message[3:9].reshape(2, 3), "kind": "numpy.ndarray"}))
        waiting = engine.behind._pending["small"]
        assert not any(np.shares_memory(part, message) for part in [*waiting.loose, *waiting.blocks])
        _stage(engine, "text", ["x" * 100_000] * 3)  # text counts its length
        assert engine.behind.nbytes >= 300_000 and engine.read_variable("text", 1) == "x" * 100_000
        engine.flush()
        assert engine.behind.nbytes == 0 and engine.read_variable("text") == ["x" * 100_000] * 3
        big = np.zeros(behind.TAIL_BYTES // 8 + 1)
        _stage(engine, "big", [big])  # a row bigger than a tail is never kept in memory after the write
        engine.flush()
        assert engine.behind.recent("big", 0) is None
    finally:
        engine.close()


def test_big_rows_are_written_one_by_one_without_a_common_copy(tmp_path, monkeypatch):
    writes = []
    real = behind.write_rows

    def counting(ncvar, start, data):
        writes.append((start, len(data), data.base is not None or not data.flags.owndata))
        real(ncvar, start, data)

    monkeypatch.setattr(behind, "write_rows", counting)
    rows = [np.full(behind.BIG_ROW_BYTES // 8, float(k)) for k in range(3)]
    engine = DaemonEngine(str(tmp_path / "run.nc"))
    try:
        _stage(engine, "big", rows)
        _stage(engine, "small", [1.0, 2.0, 3.0])
        engine.flush()
        assert [(start, count) for start, count, _ in writes] == [(0, 1), (1, 1), (2, 1), (0, 3)]
        assert all(view for _, _, view in writes[:3])  # each big row written from its own buffer
    finally:
        engine.close()
    with NetCDFIODriver(str(tmp_path / "run.nc"), "r") as fresh:
        assert [row[0] for row in fresh.read_variable("big")] == [0.0, 1.0, 2.0]


def _acknowledge_then_die(file_name: str, endpoint: str, conn) -> None:
    """A daemon that acknowledges appends (replies built), then is SIGKILLed before any file write."""
    server = Server(file_name, endpoint)
    replies = server.process([_message(b"c1", 1, [("append", "x", {"data": float(k)}) for k in range(100)])])
    conn.send(([value for _, value in _results(replies)], server.status()["pending_rows"]))
    os.kill(os.getpid(), signal.SIGKILL)


def test_sigkill_after_the_acknowledgement_before_the_file_write_loses_nothing(tmp_path):
    file_name = str(tmp_path / "run.nc")
    sockets = tempfile.mkdtemp(prefix="nwb")
    try:
        parent, child = multiprocessing.Pipe()
        process = multiprocessing.get_context("fork").Process(
            target=_acknowledge_then_die, args=(file_name, f"ipc://{sockets}/s.sock", child))
        process.start()
        assert parent.poll(60)
        indices, pending = parent.recv()
        process.join(60)
        assert process.exitcode == -signal.SIGKILL
        assert indices == list(range(100)) and pending == 100
        server = Server(file_name, f"ipc://{sockets}/s.sock")  # replays the journal
        server.close()
    finally:
        for name in os.listdir(sockets):
            os.remove(os.path.join(sockets, name))
        os.rmdir(sockets)
    with NetCDFIODriver(file_name, "r") as fresh:
        assert fresh.read_variable("x").tolist() == [float(k) for k in range(100)]


def _message(identity: bytes, request_id: int, ops: list) -> list:
    return [zmq.Frame(identity), *map(zmq.Frame, encode_request(request_id, identity.decode(), ops))]


def _results(replies: list) -> list:
    (_, frames), = replies
    return decode_reply(frames)[1]
