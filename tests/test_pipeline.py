"""Pipelined clients and daemon-side coalescing: order, exactly-once, error attribution, backpressure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np
import pytest
import zmq

from nstore import NetCDFIODriver, StorageInterface, connect
from nstore import pipeline
from nstore.daemon import behind as write_behind
from nstore.daemon import format as disk_format
from nstore.daemon.server import Server
from nstore.protocol.messages import decode_reply, encode_request


@pytest.fixture
def daemon(tmp_path, daemon_factory):
    return daemon_factory(tmp_path / "run.nc")


def test_pipelined_appends_land_once_in_order(daemon):
    driver = connect(daemon.endpoint, pipeline=True, timeout=30)
    handles = [driver.append_variable("x", float(k)) for k in range(5000)]
    driver.flush()
    assert [h.result() for h in handles] == list(range(5000))
    assert driver.read_variable("x").tolist() == [float(k) for k in range(5000)]
    driver.close()


def test_two_pipelined_clients_share_a_variable(daemon):
    first = connect(daemon.endpoint, pipeline=True, timeout=30)
    second = connect(daemon.endpoint, pipeline=True, timeout=30)
    mine = [(first.append_variable("shared", 1000.0 + k), second.append_variable("shared", 2000.0 + k))
            for k in range(3000)]
    first.flush()
    second.flush()
    index_a = [a.result() for a, _ in mine]
    index_b = [b.result() for _, b in mine]
    assert sorted(index_a + index_b) == list(range(6000))  # every entry exactly once
    assert index_a == sorted(index_a) and index_b == sorted(index_b)  # each client's own order
    stored = first.read_variable("shared")
    assert [stored[i] for i in index_a] == [1000.0 + k for k in range(3000)]
    assert [stored[i] for i in index_b] == [2000.0 + k for k in range(3000)]
    first.close()
    second.close()


def test_pipelined_error_names_the_operation_and_the_rest_lands(daemon):
    driver = connect(daemon.endpoint, pipeline=True, timeout=30)
    store = StorageInterface(driver)
    store.vec.append(np.arange(3.0))
    bad = store.vec.append(np.arange(4.0))
    store.vec.append(np.arange(3.0) + 10)
    with pytest.raises(ValueError) as caught:
        driver.flush()
    assert str(caught.value) == ("pipelined append to 'vec' failed: "
                                 "vec: appended shape (4,) does not match stored shape (3,)")
    with pytest.raises(ValueError, match="appended shape"):
        bad.result()  # the handle tells the same story
    driver.flush()  # reported once: a clean flush now
    assert store.vec.read().tolist() == [[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]]
    # A failure the caller saw through its handle is not raised again by flush().
    handle = store.vec.append("text")
    with pytest.raises(TypeError, match="pipelined append to 'vec' failed: vec: cannot append str"):
        handle.result()
    driver.flush()
    driver.close()


def test_queued_arrays_are_copied(daemon):
    driver = connect(daemon.endpoint, pipeline=True, timeout=30)
    buffer = np.zeros(4)
    for k in range(3):
        buffer[:] = k
        driver.append_variable("frames", buffer)  # the caller reuses its buffer at once
    driver.flush()
    assert driver.read_variable("frames").tolist() == [[float(k)] * 4 for k in range(3)]
    driver.close()


def test_reads_see_own_pipelined_writes(daemon):
    driver = connect(daemon.endpoint, pipeline=True, timeout=30)
    for k in range(10):
        driver.append_variable("x", float(k))
        assert driver.read_variable("x", -1) == float(k)
    driver.close()


def test_backpressure_blocks_instead_of_queueing(daemon):
    """With the daemon frozen, a pipelined producer stops after its window is full."""
    driver = connect(daemon.endpoint, pipeline=True, timeout=60)
    driver.append_variable("x", 0.0)
    driver.flush()
    sent = []
    done = threading.Event()

    def produce() -> None:
        for k in range(1, 30_001):
            driver.append_variable("x", float(k))
            sent.append(k)
        driver.flush()
        done.set()

    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        worker = threading.Thread(target=produce, daemon=True)
        worker.start()
        time.sleep(2.0)
        blocked_at = len(sent)
        time.sleep(1.0)
        assert len(sent) == blocked_at, "the producer kept queueing while the daemon was frozen"
        # What a frozen daemon can have been handed: the window of batches plus one being built.
        assert blocked_at <= (pipeline.PIPELINE_WINDOW + 1) * pipeline.PIPELINE_MAX_OPS
        assert not done.is_set()
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    assert done.wait(60), "the producer did not finish after the daemon resumed"
    assert driver.read_variable("x").tolist() == [float(k) for k in range(30_001)]
    driver.close()


def test_pending_operations_are_flushed_at_exit(daemon):
    script = textwrap.dedent(f"""
        from nstore import connect
        driver = connect({daemon.endpoint!r}, pipeline=True, timeout=30)
        for k in range(2500):
            driver.append_variable("exit", float(k))
        # no flush, no close: the interpreter exits with operations still queued
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    reader = connect(daemon.endpoint, timeout=30)
    assert reader.read_variable("exit").tolist() == [float(k) for k in range(2500)]
    reader.close()


def test_appends_reach_the_file_behind_as_one_write_per_variable(tmp_path, monkeypatch):
    """Messages from several clients appending to x, y, x, y, in two turns: acknowledged at once,
    written behind as two slice writes, not eight; reads see them before and after the write."""
    writes = []
    real = write_behind.write_rows

    def counting(ncvar, start, block):
        writes.append((ncvar.name, start, len(block)))
        real(ncvar, start, block)

    def turn(request_id: int) -> list:
        batch = [[zmq.Frame(f"c{k}".encode()),
                  *map(zmq.Frame, encode_request(request_id, f"c{k}", [("append", path, {"data": float(k)})]))]
                 for k, path in enumerate(["x", "y", "x", "y"])]
        return [decode_reply(frames)[1][0][1] for _, frames in server.process(batch)]

    sockets = tempfile.mkdtemp(prefix="nsp")  # short: ipc paths max out near 100 characters
    server = Server(str(tmp_path / "run.nc"), f"ipc://{sockets}/s.sock")
    try:
        server.engine.append_variable("x", 0.0)  # create both first
        server.engine.append_variable("y", 0.0)
        monkeypatch.setattr(write_behind, "write_rows", counting)
        assert turn(1) == [1, 1, 2, 2]
        assert turn(2) == [3, 3, 4, 4]
        assert writes == []  # acknowledged (journaled), not written yet
        assert server.status()["pending_rows"] == 8
        assert server.engine.read_variable("x", -1) == 2.0 and server.engine.read_variable("y").tolist() == \
            [0.0, 1.0, 3.0, 1.0, 3.0]
        assert server.write_behind()
        assert sorted(writes) == [("x", 1, 4), ("y", 1, 4)]
        assert server.status()["pending_rows"] == 0
    finally:
        server.close()
        os.rmdir(sockets)
    with NetCDFIODriver(str(tmp_path / "run.nc"), "r") as check:
        assert check.read_variable("x").tolist() == [0.0, 0.0, 2.0, 0.0, 2.0]


def test_writes_at_consecutive_indices_become_one_write(tmp_path, monkeypatch):
    """A pipelined client rewriting entries 2, 3, 4, 5 of a variable: one slice write; a bad one
    among them falls back to one write each, with its own error and the others applied."""
    writes = []
    real = disk_format.write_rows

    def counting(ncvar, start, block):
        writes.append((ncvar.name, start, len(block)))
        real(ncvar, start, block)

    sockets = tempfile.mkdtemp(prefix="nsp")
    server = Server(str(tmp_path / "run.nc"), f"ipc://{sockets}/s.sock")
    try:
        for k in range(8):
            server.engine.append_variable("x", float(k))
        monkeypatch.setattr(disk_format, "write_rows", counting)
        good = [("write", "x", {"data": 10.0 + k, "at_index": k}) for k in range(2, 6)]
        replies = server.process([[zmq.Frame(b"a"), *map(zmq.Frame, encode_request(1, "a", good))]])
        assert [ok for ok, _ in decode_reply(replies[0][1])[1]] == [True] * 4
        assert writes == [("x", 2, 4)]
        mixed = [("write", "x", {"data": 20.0, "at_index": 6}), ("write", "x", {"data": "no", "at_index": 7})]
        replies = server.process([[zmq.Frame(b"a"), *map(zmq.Frame, encode_request(2, "a", mixed))]])
        results = decode_reply(replies[0][1])[1]
        assert results[0] == [True, None]
        assert results[1][0] is False and results[1][1]["type"] == "TypeError"
        assert server.engine.read_variable("x").tolist() == [0.0, 1.0, 12.0, 13.0, 14.0, 15.0, 20.0, 7.0]
    finally:
        server.close()
        os.rmdir(sockets)
