"""Appends in columns (issue 12, point 3): consecutive alike pipelined appends to one variable travel,
are journaled and are written as one op, and land exactly as the same appends one by one would."""

from __future__ import annotations

import os
import shutil
import threading

import netCDF4
import numpy as np
import pytest
from pint.errors import DimensionalityError

from nstore import connect, ureg
from nstore import remote
from nstore.daemon.journal import Commit, journal_path, read_records
from nstore.protocol.messages import decode_reply, encode_request

from test_exactly_once import Peer

N = 40  # entries per column


def _arrays(dtype, shape):
    return [np.arange(np.prod(shape), dtype=dtype).reshape(shape) + k for k in range(N)]


# variable -> the values appended to it, in order (each list is alike: one column when pipelined)
CASES = {
    "floats": [0.5 * k - 3.0 for k in range(N)],
    "ints": [k * k - 7 for k in range(N)],
    "f32": _arrays(np.float32, (2, 3)),
    "i16": _arrays(np.int16, (4,)),
    "flags": [np.array([k % 2 == 0, True, k % 3 == 0]) for k in range(N)],
    "lengths": [ureg.Quantity(0.1 * k, "nanometer") for k in range(N)],
    "counts": [ureg.Quantity(k, "second") for k in range(N)],
    "positions": [ureg.Quantity(np.full((2, 3), 0.25 * k), "nanometer") for k in range(N)],
    "g/nested": [float(k) for k in range(N)],
}


def _recording(driver) -> list:
    """The names of the ops ``driver`` sends from now on."""
    sent: list = []
    send = driver._send

    def recording_send(ops, handles):
        sent.extend(op[0] for op in ops)
        return send(ops, handles)

    driver._send = recording_send
    return sent


def _same(a, b) -> bool:
    if hasattr(a, "units"):
        return str(a.units) == str(b.units) and np.array_equal(np.asarray(a.magnitude), np.asarray(b.magnitude))
    return type(a) is type(b) and np.array_equal(np.asarray(a), np.asarray(b)) and np.asarray(a).dtype == np.asarray(b).dtype


def _layout(file_name: str) -> dict:
    """Every variable of a file: dimensions (names, sizes), dtype, chunking, attributes and data."""
    out = {}
    with netCDF4.Dataset(file_name) as nc:
        def walk(group, prefix):
            for name, var in group.variables.items():
                out[prefix + name] = (var.dimensions, var.shape, var.dtype, var.chunking(),
                                      {a: var.getncattr(a) for a in var.ncattrs()}, np.asarray(var[...]).tolist())
            for name, child in group.groups.items():
                walk(child, f"{prefix}{name}/")
        walk(nc, "")
    return out


def test_columns_land_as_appends_one_by_one(tmp_path, daemon_factory):
    by_column = daemon_factory(tmp_path / "columns.nc")
    one_by_one = daemon_factory(tmp_path / "single.nc")
    piped = connect(by_column.endpoint, pipeline=True, timeout=30)
    sync = connect(one_by_one.endpoint, timeout=30)
    sent = _recording(piped)
    handles = {path: [piped.append_variable(path, value) for value in values] for path, values in CASES.items()}
    piped.flush()
    assert sent.count("append_column") == len(CASES) and "append" not in sent, sent
    for path, values in CASES.items():
        assert [h.result() for h in handles[path]] == list(range(N)), path
        assert [sync.append_variable(path, value) for value in values] == list(range(N)), path
        stored, expected = piped.read_variable(path), sync.read_variable(path)
        assert _same(stored, expected), path
        for k in (0, N // 2, N - 1):
            assert _same(piped.read_variable(path, k), sync.read_variable(path, k)), (path, k)
        assert piped.variable_info(path) == sync.variable_info(path), path
    # a second column to existing variables continues their indices
    assert [int(piped.append_variable("floats", 100.0 + k)) for k in range(5)] == list(range(N, N + 5))
    assert [sync.append_variable("floats", 100.0 + k) for k in range(5)] == list(range(N, N + 5))
    piped.close()
    sync.close()
    assert by_column.stop() == 0, by_column.log()
    assert one_by_one.stop() == 0, one_by_one.log()
    assert _layout(str(tmp_path / "columns.nc")) == _layout(str(tmp_path / "single.nc"))


def test_unlike_values_travel_as_single_appends_with_their_own_errors(tmp_path, daemon_factory):
    daemon = daemon_factory(tmp_path / "run.nc")
    driver = connect(daemon.endpoint, pipeline=True, timeout=30)
    sent = _recording(driver)
    handles = [driver.append_variable("x", 1.0), driver.append_variable("y", 2.0), driver.append_variable("x", 3.0),
               driver.append_variable("x", "text"), driver.append_variable("x", True), driver.append_variable("x", 4.0),
               driver.append_variable("v", np.zeros(3)), driver.append_variable("v", np.zeros(4))]
    with pytest.raises(TypeError):
        driver.flush()
    assert sent == ["append"] * 8  # no two alike values in a row for one variable
    assert [h.result() for h in handles[:3]] == [0, 0, 1]
    with pytest.raises(TypeError, match="pipelined append to 'x' failed: x: cannot append str"):
        handles[3].result()
    with pytest.raises(TypeError, match="pipelined append to 'x' failed: x: cannot append bool"):
        handles[4].result()
    assert handles[5].result() == 2 and handles[6].result() == 0
    with pytest.raises(ValueError, match=r"pipelined append to 'v' failed: v: appended shape \(4,\)"):
        handles[7].result()
    assert driver.read_variable("x").tolist() == [1.0, 3.0, 4.0]
    # an int beyond int64 leaves the column of ints and fails alone
    sent.clear()
    handles = [driver.append_variable("n", k) for k in (1, 2, 2**63, 3, 4)]
    with pytest.raises(ValueError, match="pipelined append to 'n' failed: .*does not fit in 64 bits"):
        handles[2].result()
    driver.flush()
    assert sent == ["append_column", "append", "append_column"]
    assert [handles[k].result() for k in (0, 1, 3, 4)] == [0, 1, 2, 3]
    assert driver.read_variable("n").tolist() == [1, 2, 3, 4]
    driver.close()


def test_a_forked_child_never_appends_to_its_parents_column(tmp_path, daemon_factory, monkeypatch):
    monkeypatch.setattr(remote, "PIPELINE_MAX_DELAY_S", 600.0)  # the open column stays open across the fork
    daemon = daemon_factory(tmp_path / "run.nc")
    driver = connect(daemon.endpoint, pipeline=True, timeout=30)
    driver.append_variable("x", 0.0)
    driver.flush()
    parent = [driver.append_variable("x", 1.0 + k) for k in range(3)]  # an open column, not sent
    pid = os.fork()
    if pid == 0:  # the child: its own queue; the parent's column stays the parent's to send
        code = 1
        try:
            child = [driver.append_variable("x", 10.0 + k) for k in range(2)]
            driver.flush()
            code = 0 if sorted(h.result() for h in child) == [h.result() for h in child] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    driver.flush()
    stored = driver.read_variable("x").tolist()
    assert sorted(stored) == [0.0, 1.0, 2.0, 3.0, 10.0, 11.0]  # each once: the child sent only its own
    assert [stored[h.result()] for h in parent] == [1.0, 2.0, 3.0]
    driver.close()


def _fails_as_a_whole(driver, path, values, error, message):
    before = driver.variable_info(path)["length"]
    sent = _recording(driver)
    handles = [driver.append_variable(path, value) for value in values]
    with pytest.raises(error) as caught:
        driver.flush()
    assert sent == ["append_column"]
    assert message in str(caught.value)
    assert str(caught.value).count(f"pipelined append_column ({len(values)} appends) to {path!r} failed") == 1
    for handle in handles:
        with pytest.raises(error) as each:
            handle.result()
        assert str(each.value) == str(caught.value)
    assert driver.variable_info(path)["length"] == before
    driver.flush()  # reported once


def test_a_column_that_does_not_fit_fails_as_a_whole(tmp_path, daemon_factory):
    daemon = daemon_factory(tmp_path / "run.nc")
    sync = connect(daemon.endpoint, timeout=30)
    sync.append_variable("vec", np.arange(3.0))
    sync.append_variable("ivec", np.arange(3, dtype=np.int16))
    sync.append_variable("energy", ureg.Quantity(1.5, "kilojoule/mole"))
    sync.append_variable("x", 0.5)
    sync.append_variable("meters", ureg.Quantity(2, "meter"))
    sync.write_variable("fixed", 1.0)
    driver = connect(daemon.endpoint, pipeline=True, timeout=30)
    _fails_as_a_whole(driver, "vec", [np.arange(4.0) + k for k in range(5)], ValueError,
                      "vec: appended shape (4,) does not match stored shape (3,)")
    _fails_as_a_whole(driver, "ivec", [np.arange(3.0) + k for k in range(5)], TypeError,
                      "ivec: cannot append numpy.ndarray of float64: the variable holds numpy.ndarray of int16")
    _fails_as_a_whole(driver, "vec", [np.zeros((1, 3)) for k in range(3)], ValueError,
                      "vec: appended shape (1, 3) does not match stored shape (3,)")
    _fails_as_a_whole(driver, "x", list(range(6)), TypeError, "x: cannot append int: the variable holds float")
    _fails_as_a_whole(driver, "energy", [ureg.Quantity(1.0 * k, "second") for k in range(4)], DimensionalityError,
                      "(storing at energy)")
    _fails_as_a_whole(driver, "meters", [ureg.Quantity(k, "centimeter") for k in (100, 200, 250, 300, 400, 500)],
                      ValueError, "meters: the variable stores whole numbers of meter; 2.5 (among 6 values) meter is not")
    _fails_as_a_whole(driver, "fixed", [1.0, 2.0], TypeError, "fixed: was stored with write(); it cannot be appended to")
    assert sync.read_variable("vec").tolist() == [[0.0, 1.0, 2.0]]
    assert sync.read_variable("x").tolist() == [0.5]
    # a column that fits still lands after all that
    assert [int(driver.append_variable("vec", np.ones(3) * k)) for k in range(3)] == [1, 2, 3]
    driver.close()
    sync.close()


def test_a_column_in_a_compatible_unit_is_converted(tmp_path, daemon_factory):
    daemon = daemon_factory(tmp_path / "run.nc")
    sync = connect(daemon.endpoint, timeout=30)
    driver = connect(daemon.endpoint, pipeline=True, timeout=30)
    values = [ureg.Quantity(0.1 * k + 0.03, "nanometer") for k in range(N)]
    arrays = [ureg.Quantity(np.linspace(0, 1, 3) * k, "nanometer") for k in range(N)]
    for path in ("col", "one", "acol", "aone"):
        sync.append_variable(path, ureg.Quantity(1.0 if path in ("col", "one") else np.ones(3), "angstrom"))
    sent = _recording(driver)
    handles = [driver.append_variable("col", q) for q in values] + [driver.append_variable("acol", q) for q in arrays]
    driver.flush()
    assert sent == ["append_column", "append_column"]
    assert [h.result() for h in handles] == list(range(1, N + 1)) * 2
    for q in values:
        sync.append_variable("one", q)
    for q in arrays:
        sync.append_variable("aone", q)
    column, single = sync.read_variable("col"), sync.read_variable("one")
    assert str(column.units) == "angstrom" and column.magnitude.tolist() == single.magnitude.tolist()
    assert np.allclose(column.magnitude[1:], [10 * q.magnitude for q in values])
    acolumn, asingle = sync.read_variable("acol"), sync.read_variable("aone")
    assert str(acolumn.units) == "angstrom" and acolumn.magnitude.tolist() == asingle.magnitude.tolist()
    driver.close()
    sync.close()


def test_pipelined_columns_beside_a_sync_client_keep_order_and_land_once(tmp_path, daemon_factory):
    daemon = daemon_factory(tmp_path / "run.nc")
    writers = [connect(daemon.endpoint, pipeline=True, timeout=60) for _ in range(3)]
    sync = connect(daemon.endpoint, timeout=60)
    count, sync_count = 4000, 150
    handles: dict[int, list] = {}
    sent: dict[int, list] = {c: _recording(w) for c, w in enumerate(writers)}

    def write(c: int) -> None:
        driver = writers[c]
        handles[c] = [driver.append_variable("shared", 1000.0 * (c + 1) + k) for k in range(count)]
        driver.flush()

    threads = [threading.Thread(target=write, args=(c,)) for c in range(3)]
    for thread in threads:
        thread.start()
    mine = [sync.append_variable("shared", -1.0 - k) for k in range(sync_count)]
    for thread in threads:
        thread.join(120)
    indices = {c: [h.result() for h in handles[c]] for c in range(3)}
    assert all("append_column" in sent[c] for c in range(3))
    everything = sorted(i for c in range(3) for i in indices[c]) + mine
    assert sorted(everything) == list(range(3 * count + sync_count))  # each append exactly once
    for c in range(3):
        assert indices[c] == sorted(indices[c])  # each client's own order
    assert mine == sorted(mine)
    stored = sync.read_variable("shared")
    for c in range(3):
        assert stored[indices[c]].tolist() == [1000.0 * (c + 1) + k for k in range(count)]
    assert stored[mine].tolist() == [-1.0 - k for k in range(sync_count)]
    for writer in writers:
        writer.close()
    sync.close()


def _column_op(path: str, data: np.ndarray) -> tuple:
    return ("append_column", path, {"data": data, "kind": "float"})


def test_a_resent_column_gets_its_start_again_and_is_not_doubled(tmp_path, daemon_factory):
    file_name = tmp_path / "run.nc"
    daemon = daemon_factory(file_name)
    peer = Peer(daemon.endpoint, b"me")
    try:
        ops = [("append", "x", {"data": -1.0}), _column_op("x", np.arange(5.0)), _column_op("x", np.arange(3.0) + 10)]
        assert peer.ask(1, "me", ops) == (1, [[True, 0], [True, 1], [True, 6]])
        assert peer.ask(1, "me", ops) == (1, [[True, 0], [True, 1], [True, 6]])  # resent: answered, not applied
        peer.close()
        daemon.kill()
        daemon = daemon_factory(file_name)
        peer = Peer(daemon.endpoint, b"me")  # riding through the restart: a fresh socket, same client id
        assert peer.ask(1, "me", ops) == (1, [[True, 0], [True, 1], [True, 6]])
        assert peer.ask(2, "me", [_column_op("x", np.arange(2.0) + 20)]) == (2, [[True, 9]])
        reply_id, results = peer.ask(3, "", [("read", "x", {})])
        assert results[0][1].tolist() == [-1.0, 0, 1, 2, 3, 4, 10, 11, 12, 20, 21]
    finally:
        peer.close()


def test_malformed_columns_are_refused_naming_the_path(tmp_path, daemon_factory):
    daemon = daemon_factory(tmp_path / "run.nc", "--max-array-mb", "1")
    peer = Peer(daemon.endpoint, None)
    try:
        cases = [
            (_column_op("x", np.arange(4, dtype=np.int64)), "x: append_column of 'float' entries needs 1-D float64"),
            (_column_op("x", np.zeros((2, 2))), "x: append_column of 'float' entries needs 1-D float64"),
            (("append_column", "x", {"data": np.zeros(3), "kind": "str"}), "x: append_column cannot carry entries of kind 'str'"),
            (("append_column", "x", {"data": np.zeros(3), "kind": "quantity"}), "x: append_column of 'quantity' entries needs unit"),
            (("append_column", "x", {"data": np.zeros(3), "kind": "float", "unit": "m"}), "takes no unit"),
            (("append_column", "x", {"data": np.zeros(3), "kind": "numpy.ndarray"}), "at least 2 dimensions"),
            (("append_column", "x", {"data": [1.0, 2.0], "kind": "float"}), "x: append_column needs an array of 1 to"),
            (_column_op("x", np.zeros(0)), "x: append_column needs an array of 1 to"),
            (_column_op("x", np.zeros(10_001)), "x: append_column needs an array of 1 to 10000 entries"),
            (_column_op("x", np.zeros(200_000)), "x: append_column carries at least 1600000 bytes"),
        ]
        for request_id, (op, message) in enumerate(cases, 1):
            reply_id, results = peer.ask(request_id, "", [op])
            assert results[0][0] is False and message in results[0][1]["message"], (op[2].get("kind"), results)
        reply_id, results = peer.ask(99, "", [("info", "x", {})])
        assert results[0][0] is False and "no variable stored here" in results[0][1]["message"]
    finally:
        peer.close()


def test_journal_replay_after_sigkill_restores_columns(tmp_path, daemon_factory):
    file_name = str(tmp_path / "run.nc")
    daemon = daemon_factory(file_name)
    sync = connect(daemon.endpoint, timeout=30)
    sync.append_variable("floats", -1.0)
    sync.close()
    assert daemon.stop() == 0
    before = str(tmp_path / "before.nc")
    shutil.copyfile(file_name, before)  # one entry, checkpointed
    daemon = daemon_factory(file_name)
    driver = connect(daemon.endpoint, pipeline=True, timeout=30)
    handles = {path: [driver.append_variable(path, value) for value in values] for path, values in CASES.items()}
    driver.flush()
    driver.close()
    daemon.kill()
    logged = [entry.op[0] for record in read_records(journal_path(file_name)) if isinstance(record, Commit)
              for entry in record.entries if entry.op]
    assert logged.count("append_column") == len(CASES), logged
    shutil.copyfile(before, file_name)  # the crash "lost" every column: only the journal has them
    daemon = daemon_factory(file_name)
    reader = connect(daemon.endpoint, timeout=30)
    try:
        for path, values in CASES.items():
            first = 1 if path == "floats" else 0
            assert [h.result() for h in handles[path]] == list(range(first, first + N)), path
            for k in (0, N - 1):
                assert _same(reader.read_variable(path, first + k), values[k]), (path, k)
            assert reader.variable_info(path)["length"] == first + N, path
    finally:
        reader.close()
    assert daemon.stop() == 0, daemon.log()


def test_a_column_reservation_commits_or_gives_its_indices_back_and_replays_idempotently(tmp_path):
    from nstore.daemon.columns import reserve_column
    from nstore.daemon.daemon_engine import DaemonEngine
    from nstore.daemon.ops import OPS, replay_op

    engine = DaemonEngine(str(tmp_path / "run.nc"))
    try:
        args = {"data": np.arange(4.0), "kind": "float"}
        aborted = reserve_column(engine, "x", args)
        assert aborted.results == [0] and engine.variable_info("x")["length"] == 4
        aborted.abort()  # (a journal write that failed: nothing reaches the file)
        assert engine.variable_info("x")["length"] == 0
        kept = reserve_column(engine, "x", args)
        assert kept.commit() == [0]
        single = engine.reserve_appends("x", [9.0])
        assert single.commit() == [4]
        assert engine.read_variable("x").tolist() == [0.0, 1.0, 2.0, 3.0, 9.0]
        journaled = OPS["append_column"].journal({"data": np.arange(3.0) + 10, "kind": "float"}, 3)
        replay_op(engine, "append_column", "x", journaled)  # overlaps the end: overwrites, then appends
        replay_op(engine, "append_column", "x", journaled)  # idempotent
        assert engine.read_variable("x").tolist() == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]
        with pytest.raises(ValueError, match="x: journal entry 7 but only 6 entries are stored"):
            replay_op(engine, "append_column", "x", {**journaled, "index": 7})
        replay_op(engine, "append_column", "new", {"data": np.ones((2, 3), np.float32), "kind": "numpy.ndarray",
                                                   "index": 0})
        assert engine.variable_info("new")["type"] == "float32" and engine.variable_info("new")["length"] == 2
    finally:
        engine.close()
