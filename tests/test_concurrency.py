"""Many real processes, one daemon, one file: the concurrency contract.

Every worker is a separate OS process (multiprocessing, "fork" context) that
calls ``connect(endpoint)`` itself and sends its results back to the parent.
All waits are bounded; daemons are real ``nstored`` processes from the
``daemon_factory`` fixture, stopped by PID at teardown.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import time
import traceback

import netCDF4
import numpy as np
import pytest
from pint.errors import DimensionalityError

from nstore import NetCDFIODriver, StorageInterface, connect, ureg

CTX = mp.get_context("fork")
WORKER_TIMEOUT_S = 60.0  # whole-run bound for a group of workers
CALL_TIMEOUT_S = 30.0  # per-request bound inside workers


# --- process plumbing ---------------------------------------------------------------------------


def _run_and_report(target, results, wid: int, args: tuple) -> None:
    try:
        value = target(*args)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put((wid, False, f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}\n{traceback.format_exc()}"))
    else:
        results.put((wid, True, value))


def run_workers(jobs: list, timeout: float = WORKER_TIMEOUT_S, started=None) -> list:
    """Run ``[(target, args), ...]`` each in its own process; their return values, in job order.

    Fails the test if a worker raised, died without a result, or the group did
    not finish within ``timeout`` seconds. ``started(procs)`` runs once all are
    started (while they work).
    """
    results = CTX.Queue()
    procs = [CTX.Process(target=_run_and_report, args=(target, results, wid, tuple(args)), daemon=True)
             for wid, (target, args) in enumerate(jobs)]
    for proc in procs:
        proc.start()
    collected: dict[int, tuple] = {}
    deadline = time.monotonic() + timeout
    try:
        if started is not None:
            started(procs)
        while len(collected) < len(procs):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"workers {sorted(set(range(len(procs))) - set(collected))} did not finish within {timeout:g} s")
            try:
                wid, ok, value = results.get(timeout=min(remaining, 0.5))
            except queue_module.Empty:
                crashed = [(i, p.exitcode) for i, p in enumerate(procs)
                           if i not in collected and p.exitcode not in (None, 0)]
                if crashed:
                    pytest.fail(f"workers died without a result (id, exit code): {crashed}")
                continue
            collected[wid] = (ok, value)
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
    failures = {wid: value for wid, (ok, value) in collected.items() if not ok}
    assert not failures, "worker(s) raised:\n" + "\n".join(f"[{w}] {v}" for w, v in sorted(failures.items()))
    return [collected[wid][1] for wid in range(len(procs))]


# --- workers (module level: run in child processes) ------------------------------------------------


def _append_worker(endpoint: str, path: str, values: list) -> list:
    store = StorageInterface(connect(endpoint, timeout=CALL_TIMEOUT_S))
    try:
        return [(store[path].append(v), v) for v in values]
    finally:
        store.close()


def _race_worker(endpoint: str, barrier, path: str, values: list) -> list:
    store = StorageInterface(connect(endpoint, timeout=CALL_TIMEOUT_S))
    try:
        barrier.wait(timeout=30)
        return [(store[path].append(np.array([v, -v])), v) for v in values]
    finally:
        store.close()


def _length_poller(endpoint: str, path: str, target: int, ready, deadline_s: float) -> list:
    """(info length, len(read())) observations until the variable holds ``target`` entries."""
    driver = connect(endpoint, timeout=CALL_TIMEOUT_S)
    store = StorageInterface(driver)
    observations = []
    deadline = time.monotonic() + deadline_s
    try:
        while time.monotonic() < deadline:
            length = driver.variable_info(path)["length"]
            whole = len(store[path].read())
            observations.append((length, whole))
            ready.set()
            if length >= target and whole >= target:
                break
        return observations
    finally:
        store.close()


def _read_your_writes_worker(endpoint: str, wid: int, count: int) -> list:
    """Append, then read back at once, on an own variable and on a shared one."""
    store = StorageInterface(connect(endpoint, timeout=CALL_TIMEOUT_S))
    mismatches = []
    try:
        own = store.ryw[f"w{wid}"]
        for k in range(count):
            value = float(wid * 1000 + k)
            index = own.append(value)
            if index != k or own.read(-1) != value or own.read(index) != value:
                mismatches.append(("own", k, index, own.read(-1)))
            shared_index = store.ryw.shared.append(value)
            if store.ryw.shared.read(shared_index) != value:
                mismatches.append(("shared", k, shared_index, store.ryw.shared.read(shared_index)))
        return mismatches
    finally:
        store.close()


def _first_ops(store: StorageInterface) -> None:
    """Worker A's ops: they fix kind, type, shape and unit of four variables."""
    store.fix.arr.append(np.arange(3.0))
    store.fix.arr.append(np.arange(3.0) + 10)
    store.fix.energy.append(1.5)
    store.fix.eq.append(1.5 * ureg.kilojoule / ureg.mole)
    store.fix.fixed.write(np.eye(2))


def _bad_ops() -> list:
    """Worker B's ops, each conflicting with what A fixed: (label, op)."""
    return [
        ("shape", lambda s: s.fix.arr.append(np.zeros(4))),
        ("shape-at-index", lambda s: s.fix.arr.write(np.zeros(4), at_index=0)),
        ("type", lambda s: s.fix.energy.append("abc")),
        ("unit", lambda s: s.fix.eq.append(2.0 * ureg.meter)),
        ("kind-append-to-fixed", lambda s: s.fix.fixed.append(np.eye(2))),
        ("kind-write-to-appendable", lambda s: s.fix.energy.write(2.5)),
    ]


def _outcomes(store: StorageInterface) -> list:
    outcomes = []
    for label, op in _bad_ops():
        try:
            op(store)
        except Exception as exc:  # noqa: BLE001 - what we compare
            outcomes.append((label, type(exc).__module__, type(exc).__qualname__, str(exc)))
        else:
            outcomes.append((label, None, None, "no error"))
    return outcomes


def _first_ops_worker(endpoint: str) -> None:
    store = StorageInterface(connect(endpoint, timeout=CALL_TIMEOUT_S))
    try:
        _first_ops(store)
    finally:
        store.close()


def _bad_ops_worker(endpoint: str) -> list:
    store = StorageInterface(connect(endpoint, timeout=CALL_TIMEOUT_S))
    try:
        return _outcomes(store)
    finally:
        store.close()


def _use_inherited_store(store: StorageInterface) -> tuple:
    index = store.fork.v.append(2.0)
    return index, store.fork.v.read().tolist(), store.storage_driver.daemon_pid


# --- tests --------------------------------------------------------------------------------------


def test_many_workers_append_to_one_variable(tmp_path, daemon_factory):
    n_workers, per_worker = 6, 200
    daemon = daemon_factory(tmp_path / "run.nc")
    jobs = [(_append_worker, (daemon.endpoint, "shared/values", [float(w * per_worker + k) for k in range(per_worker)]))
            for w in range(n_workers)]
    per_worker_results = run_workers(jobs)

    all_indices = [index for result in per_worker_results for index, _ in result]
    assert sorted(all_indices) == list(range(n_workers * per_worker))  # unique and exactly range(N*K)
    for w, result in enumerate(per_worker_results):
        assert [v for _, v in result] == [float(w * per_worker + k) for k in range(per_worker)]
        own_indices = [index for index, _ in result]
        assert own_indices == sorted(own_indices), f"worker {w}: its entries are out of its order"

    store = StorageInterface(connect(daemon.endpoint, timeout=CALL_TIMEOUT_S))
    try:
        stored = store.shared["values"].read()
        assert store.storage_driver.variable_info("shared/values")["length"] == n_workers * per_worker
    finally:
        store.close()
    assert isinstance(stored, np.ndarray) and stored.shape == (n_workers * per_worker,)
    # every entry exactly once ...
    assert sorted(stored.tolist()) == [float(v) for v in range(n_workers * per_worker)]
    # ... at the index its append returned
    for result in per_worker_results:
        for index, value in result:
            assert stored[index] == value


def test_racing_creators_make_one_variable(tmp_path, daemon_factory):
    n_workers, per_worker = 6, 20
    file_name = tmp_path / "race.nc"
    daemon = daemon_factory(file_name)
    barrier = CTX.Barrier(n_workers)
    jobs = [(_race_worker, (daemon.endpoint, barrier, "race/var", [float(w * 100 + k) for k in range(per_worker)]))
            for w in range(n_workers)]
    results = run_workers(jobs)

    indices = sorted(index for result in results for index, _ in result)
    assert indices == list(range(n_workers * per_worker))
    store = StorageInterface(connect(daemon.endpoint, timeout=CALL_TIMEOUT_S))
    try:
        assert list(store) == ["race"]
        assert list(store.race) == ["var"]
        info = store.storage_driver.variable_info("race/var")
        stored = store["race/var"].read()
    finally:
        store.close()
    assert info["appendable"] is True and info["length"] == n_workers * per_worker and info["shape"] == [2]
    expected = sorted(float(w * 100 + k) for w in range(n_workers) for k in range(per_worker))
    assert sorted(stored[:, 0].tolist()) == expected
    assert (stored[:, 1] == -stored[:, 0]).all()
    for result in results:
        for index, value in result:
            assert stored[index].tolist() == [value, -value]

    assert daemon.stop() == 0
    with netCDF4.Dataset(str(file_name), "r") as ds:
        assert list(ds.variables) == [] and list(ds.groups) == ["race"]
        assert list(ds.groups["race"].variables) == ["var"]
        # a duplicate creation would have made a second unlimited dimension
        assert [d for g in (ds, ds.groups["race"]) for d in g.dimensions if d.startswith("unlimited")] == ["unlimited0"]
        assert ds.groups["race"].variables["var"].shape == (n_workers * per_worker, 2)


def test_reader_sees_lengths_never_decrease(tmp_path, daemon_factory):
    n_writers, per_writer = 3, 150
    daemon = daemon_factory(tmp_path / "poll.nc")
    seed = StorageInterface(connect(daemon.endpoint, timeout=CALL_TIMEOUT_S))
    try:
        assert seed.poll.x.append(-1.0) == 0  # the variable exists before the reader starts
    finally:
        seed.close()
    total = 1 + n_writers * per_writer
    ready = CTX.Event()
    reader_queue = CTX.Queue()
    reader = CTX.Process(target=_run_and_report, daemon=True,
                         args=(_length_poller, reader_queue, 0, (daemon.endpoint, "poll/x", total, ready, 50.0)))
    reader.start()
    try:
        assert ready.wait(timeout=30), "the reader never observed the variable"
        run_workers([(_append_worker, (daemon.endpoint, "poll/x", [float(w * 1000 + k) for k in range(per_writer)]))
                     for w in range(n_writers)])
        wid, ok, observations = reader_queue.get(timeout=55)
    finally:
        reader.join(timeout=10)
        if reader.is_alive():
            reader.kill()
            reader.join(timeout=5)
    assert ok, observations
    info_lengths = [length for length, _ in observations]
    read_lengths = [whole for _, whole in observations]
    assert info_lengths[0] == 1  # observed before any writer started
    assert info_lengths[-1] == total and read_lengths[-1] == total
    assert all(a <= b for a, b in zip(info_lengths, info_lengths[1:])), info_lengths
    assert all(a <= b for a, b in zip(read_lengths, read_lengths[1:])), read_lengths
    # each read was sent after the info request it follows, so sees at least as much
    assert all(length <= whole for length, whole in observations)
    assert all(whole <= later for (_, whole), (later, _) in zip(observations, observations[1:]))


def test_read_your_writes(tmp_path, daemon_factory):
    n_workers, count = 4, 60
    daemon = daemon_factory(tmp_path / "ryw.nc")
    mismatches = run_workers([(_read_your_writes_worker, (daemon.endpoint, w, count)) for w in range(n_workers)])
    assert mismatches == [[] for _ in range(n_workers)]

    # and in this process, with one client
    store = StorageInterface(connect(daemon.endpoint, timeout=CALL_TIMEOUT_S))
    try:
        assert len(store.ryw.shared.read()) == n_workers * count
        for k in range(20):
            value = np.array([k, k + 0.5])
            index = store.solo.arr.append(value)
            assert index == k
            assert store.solo.arr.read(-1).tolist() == value.tolist()
            store.solo.arr.write(value * 2, at_index=index)
            assert store.solo.arr.read(index).tolist() == (value * 2).tolist()
    finally:
        store.close()


def test_first_op_fixes_kind_type_shape_unit(tmp_path, daemon_factory):
    daemon = daemon_factory(tmp_path / "fix.nc")
    run_workers([(_first_ops_worker, (daemon.endpoint,))])
    [remote_outcomes] = run_workers([(_bad_ops_worker, (daemon.endpoint,))])

    # the same sequence through the in-process driver, on another file
    expected_store = StorageInterface(NetCDFIODriver(str(tmp_path / "expected.nc")))
    try:
        _first_ops(expected_store)
        expected_outcomes = _outcomes(expected_store)
        expected_arr = expected_store.fix.arr.read().tolist()
        expected_energy = expected_store.fix.energy.read().tolist()
    finally:
        expected_store.close()

    labels = [label for label, _ in _bad_ops()]
    assert [o[0] for o in expected_outcomes] == labels
    expected_types = {
        "shape": ValueError, "shape-at-index": ValueError, "type": TypeError, "unit": DimensionalityError,
        "kind-append-to-fixed": TypeError, "kind-write-to-appendable": TypeError,
    }
    for label, module, qualname, message in expected_outcomes:
        cls = expected_types[label]
        assert (module, qualname) == (cls.__module__, cls.__qualname__), (label, module, qualname, message)
    assert remote_outcomes == expected_outcomes
    shape_message = dict((o[0], o[3]) for o in expected_outcomes)["shape"]
    assert shape_message == "fix/arr: appended shape (4,) does not match stored shape (3,)"

    # nothing was written by the failing ops
    store = StorageInterface(connect(daemon.endpoint, timeout=CALL_TIMEOUT_S))
    try:
        driver = store.storage_driver
        assert store.fix.arr.read().tolist() == expected_arr == [[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]]
        assert driver.variable_info("fix/arr")["length"] == 2 and driver.variable_info("fix/arr")["shape"] == [3]
        assert store.fix.energy.read().tolist() == expected_energy == [1.5]
        eq = store.fix.eq.read()
        assert driver.variable_info("fix/eq")["length"] == 1
        assert eq.magnitude.tolist() == [1.5] and eq.units == ureg.kilojoule / ureg.mole
        assert store.fix.fixed.read().tolist() == np.eye(2).tolist()
        assert sorted(store.fix) == ["arr", "energy", "eq", "fixed"]
    finally:
        store.close()


def test_driver_survives_fork(tmp_path, daemon_factory):
    daemon = daemon_factory(tmp_path / "fork.nc")
    driver = connect(daemon.endpoint, timeout=CALL_TIMEOUT_S)
    store = StorageInterface(driver)
    try:
        assert store.fork.v.append(1.0) == 0
        clients_before = driver.status()["clients_seen"]
        # the child uses the parent's driver object (inherited through fork, not pickled)
        [(child_index, child_view, child_daemon_pid)] = run_workers([(_use_inherited_store, (store,))])
        assert child_index == 1
        assert child_view == [1.0, 2.0]
        assert child_daemon_pid == daemon.pid
        # the child opened exactly one socket of its own; the parent's socket keeps working
        assert driver.status()["clients_seen"] == clients_before + 1
        assert store.fork.v.append(3.0) == 2
        assert store.fork.v.read().tolist() == [1.0, 2.0, 3.0]
        assert store.fork.v.read(-1) == 3.0
    finally:
        store.close()
