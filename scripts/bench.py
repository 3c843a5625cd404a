"""Benchmark nstore against its baselines, in one run, and check issue #12's targets as ratios.

    python scripts/bench.py [--quick] [--workers 1,2,4,8,16] [--only scalar,array3,mib,read]
                            [--classic | --no-classic] [--repeat N] [--json OUT]
                            [--fsync-policies never,batch,interval] [--profile-daemon OUT.prof]

Workloads (every nstore call goes through the driver API, ``append_variable`` /
``write_variable`` / ``read_variable``, the layer ``StorageInterface`` sits on):

    scalar   append a Python float               array3  append a (3, 3) float64 array
    mib      append a 1 MiB row (131072 float64)  read    read() of a fixed float (latency)

Baselines measured in the same run:

* nstore's in-process ``NetCDFIODriver`` in one process: the "x in-proc" column
  divides by it (for ``read`` rows the ratio is p50 latency, lower is better);
* the classic layer in-process: openmmtools' ``StorageInterface`` over its
  ``NetCDFIODriver``, scalar appends and read() of a fixed float, measured when
  ``openmmtools`` is importable (``--classic`` asks for it and says SKIPPED when
  it is not; ``--no-classic`` leaves it out);
* the bare transport: a pyzmq ROUTER echoing the request a scalar append sends,
  1 and 8 synchronous DEALER clients on ipc (nstore's socket types);
* raw netCDF4: one scalar per assignment, 1,024 scalars per assignment, 1 MiB
  rows with 1-row chunks (scalar variables get the engine's 256-entry chunks);
* hand-rolled: ``fcntl.flock`` + netCDF4 open/append/close per value, 8 processes;
* hand-rolled: ``multiprocessing.Queue`` from 8 producers into one netCDF4 writer
  process (no acknowledgement), scalars and 1 MiB rows.

Then nstored, sync and pipelined (``connect(..., pipeline=True)``, the final
``flush()`` is timed), at each ``--workers`` count (default 1,2,4,8,16; --quick
1,4,8) plus the counts the targets need, each worker appending to its own
variable ``w{i}/x``; plus all 8 workers appending to ONE variable (sync); daemon
peak RSS (VmHWM), client import time, and an fsync-policy table when ``nstored
serve`` has ``--fsync``. The report prints every daemon figure as ratios to its
baselines (in-process, classic, echo, raw netCDF4), then the targets.

Every measurement runs in fresh forked processes that set up (connect, create
the variable with one untimed append or write), wait on a
``multiprocessing.Barrier``, and report their CLOCK_MONOTONIC start/end:
aggregate = total ops / (last end - first start). Every daemon run gets a fresh
file and a fresh daemon, stopped by PID with SIGTERM (SIGKILL after a timeout),
also on Ctrl-C and errors. Closing or syncing files is not timed (the daemon does
not sync before acknowledging either), except for the flock baseline, where
open/close per value is the point.

Targets (issue #12; MET / NOT MET / SKIPPED, each a ratio from this run): sync
scalar x1 >= 0.6x the echo x1; sync scalar x8 >= 0.6x the echo x8 and >= 2x the
classic layer; pipelined scalar x8 >= 60x the classic layer; pipelined scalar
x16 >= 0.9x the best worker count (when 16 was measured); small read p50 <= the
classic read p50 and <= 1.5x the echo x1 round-trip p50; 1 MiB rows, 4 sync
workers >= 0.8x raw netCDF4 with 1-row chunks; ``import nstore`` <= 120 ms with
neither netCDF4 nor pint loaded; daemon RSS <= 256 MB while 16 workers append
1 MiB rows (not measured by --quick). The SIGKILL loops are the test suite's
(tests/test_durability.py), not the bench's. --quick measures everything the
targets need except the 16-worker runs, in under 2 minutes on 2 cores.
``--profile-daemon`` runs only pipelined scalar appends from 8 workers with the
daemon under cProfile. On a shared 2-core machine single runs swing by 2x:
decide on ``--repeat 3`` numbers from a quiet machine (the header prints the
load average).
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import multiprocessing as mp
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

MIB_ELEMS = 131072  # float64 elements in a 1 MiB row
ROW_BYTES = {"scalar": 8, "array3": 72, "mib": MIB_ELEMS * 8, "read": 8}
WORKLOADS = ("scalar", "array3", "mib", "read")
SCALAR_CHUNK = 256  # the engine's chunk length for scalar variables, used for raw netCDF4 too
HANDROLLED_PROCS = 8
RSS_FLOOD_WORKERS = 16

BARRIER_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 300.0
DAEMON_START_TIMEOUT_S = 30.0
DAEMON_STOP_TIMEOUT_S = 30.0

# Total operations per measurement (all workers together), full mode; sized for
# ~0.5-3 s on a 2-core machine. --quick divides them by QUICK_DIVISOR.
TOTAL_OPS = {
    ("scalar", "in-process"): 40_000,
    ("scalar", "sync"): 12_000,
    ("scalar", "pipelined"): 300_000,
    ("array3", "in-process"): 30_000,
    ("array3", "sync"): 10_000,
    ("array3", "pipelined"): 150_000,
    ("mib", "in-process"): 1_024,
    ("mib", "sync"): 768,
    ("mib", "pipelined"): 768,
    ("read", "in-process"): 20_000,
    ("read", "sync"): 5_000,
    ("read", "pipelined"): 5_000,
    ("scalar", "classic in-process"): 15_000,
    ("read", "classic in-process"): 10_000,
    ("scalar", "raw nc 1/assign"): 60_000,
    ("scalar", "raw nc 1024/assign"): 32_768_000,
    ("mib", "raw nc 1-row chunks"): 1_024,
    ("scalar", "flock+open/close x8"): 1_200,
    ("scalar", "mp.Queue x8 -> writer"): 80_000,
    ("mib", "mp.Queue x8 -> writer"): 384,
}
QUICK_DIVISOR = 3
CLASSIC_MODE = "classic in-process"  # openmmtools StorageInterface + NetCDFIODriver
CLASSIC_WORKLOADS = ("scalar", "read")
ECHO_MODE = "bare zmq echo"
RAW_BASELINE = {"scalar": "raw nc 1/assign", "mib": "raw nc 1-row chunks"}  # the raw netCDF4 figure each is held to
DAEMON_MODES = ("sync", "pipelined", "sync, 1 shared var")
RSS_BOUND_MB = 256
IMPORT_BOUND_MS = 120

now = time.monotonic  # CLOCK_MONOTONIC on Linux: one clock for all processes of the machine


def total_ops(workload: str, mode: str, quick: bool) -> int:
    n = TOTAL_OPS[(workload, mode)]
    if quick:
        n //= QUICK_DIVISOR
    if mode == "raw nc 1024/assign":
        n -= n % 1024
    return max(n, 1)


def split(total: int, parts: int) -> list[int]:
    """``total`` ops shared out over ``parts`` workers (equal, remainder to the first ones)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def value_for(workload: str, seed: int) -> Any:
    if workload in ("scalar", "read"):
        return 1.5 + seed
    if workload == "array3":
        return np.random.default_rng(seed).random((3, 3))
    return np.random.default_rng(seed).random(MIB_ELEMS)


# ---------------------------------------------------------------------------------------------
# Child processes: each sets up, waits on the barrier, returns {"t0", "t1", "ops", "lat"}.
# ---------------------------------------------------------------------------------------------
def driver_worker(barrier, kind: str, target: str, pipeline: bool, workload: str, path: str, n: int, seed: int) -> dict:
    """Append (or read a fixed float) ``n`` times through a NetCDFIODriver (kind "local") or a RemoteDriver."""
    if kind == "local":
        from nstore import NetCDFIODriver

        driver = NetCDFIODriver(target)
    else:
        from nstore import connect

        driver = connect(target, pipeline=pipeline)
    value = value_for(workload, seed)
    if workload == "read":  # creates the variable, untimed
        driver.write_variable(path, value)
    else:
        driver.append_variable(path, value)
    if pipeline:
        driver.flush()
    barrier.wait(BARRIER_TIMEOUT_S)
    t0 = now()
    lat = None
    if workload == "read":
        lat = timed_reads(functools.partial(driver.read_variable, path), n)
    else:
        append = driver.append_variable
        for _ in range(n):
            append(path, value)
    if pipeline:
        driver.flush()
    t1 = now()
    driver.close()
    return {"t0": t0, "t1": t1, "ops": n, "lat": lat}


def timed_reads(read: Callable[[], Any], n: int) -> np.ndarray:
    """Call ``read()`` ``n`` times; each call's latency in seconds."""
    lat, clock = np.empty(n), time.perf_counter
    for k in range(n):
        start = clock()
        read()
        lat[k] = clock() - start
    return lat


def classic_worker(barrier, file_name: str, workload: str, n: int, seed: int) -> dict:
    """The classic layer in-process: openmmtools' ``StorageInterface(NetCDFIODriver(file))``.

    ``scalar``: ``si.w0.x.append(float)``; ``read``: ``si.w0.x.read()`` of a float
    stored with ``write()`` (a fixed variable), as nstore's read workload.
    """
    from openmmtools.storage import NetCDFIODriver, StorageInterface

    driver = NetCDFIODriver(file_name)
    variable = StorageInterface(driver).w0.x  # a directory "w0" holding the variable "x"
    value = value_for(workload, seed)  # a Python float: the classic codecs are keyed by type(data)
    if workload == "read":  # creates the variable, untimed
        variable.write(value)
    else:
        variable.append(value)
    barrier.wait(BARRIER_TIMEOUT_S)
    t0 = now()
    lat = None
    if workload == "read":
        lat = timed_reads(variable.read, n)
    else:
        append = variable.append
        for _ in range(n):
            append(value)
    t1 = now()
    driver.close()
    return {"t0": t0, "t1": t1, "ops": n, "lat": lat}


def echo_server(endpoint: str, ready, stop) -> None:
    """A ROUTER that sends every message straight back: the transport's own cost, no nstore."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    ready.set()
    while not stop.is_set():
        if sock.poll(100):
            sock.send_multipart(sock.recv_multipart(copy=False), copy=False)
    ctx.destroy(linger=0)


def echo_worker(barrier, endpoint: str, n: int, seed: int) -> dict:
    """``n`` synchronous round trips of the request a scalar append sends, through a DEALER, as nstore's client."""
    import zmq

    from nstore.protocol.messages import encode_request

    frames = encode_request(1, f"echo{seed}", [("append", f"w{seed}/x", {"data": value_for("scalar", seed)})])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)

    def round_trip() -> None:
        sock.send_multipart(frames)
        if not sock.poll(10_000):
            raise TimeoutError("the echo server did not answer within 10 s")
        sock.recv_multipart()

    round_trip()  # connected, untimed
    barrier.wait(BARRIER_TIMEOUT_S)
    lat, clock = np.empty(n), time.perf_counter
    t0 = now()
    for k in range(n):
        start = clock()
        round_trip()
        lat[k] = clock() - start
    t1 = now()
    ctx.destroy(linger=0)
    return {"t0": t0, "t1": t1, "ops": n, "lat": lat}


def raw_netcdf_worker(barrier, file_name: str, layout: str, n: int) -> dict:
    """netCDF4 directly: "scalar-1", "scalar-1024" (n elements, 1024 per assignment) or "mib-1row"."""
    import netCDF4

    ds = netCDF4.Dataset(file_name, "w", format="NETCDF4")
    ds.createDimension("t", None)
    if layout == "mib-1row":
        ds.createDimension("e", MIB_ELEMS)
        var = ds.createVariable("x", "f8", ("t", "e"), chunksizes=(1, MIB_ELEMS), fill_value=False)
        value, step = value_for("mib", 0)[None, :], 1
    else:
        var = ds.createVariable("x", "f8", ("t",), chunksizes=(SCALAR_CHUNK,), fill_value=False)
        step = 1024 if layout == "scalar-1024" else 1
        value = np.full(step, 1.5) if step > 1 else 1.5
    var[0:step] = value  # untimed first write
    barrier.wait(BARRIER_TIMEOUT_S)
    t0 = now()
    for i in range(step, step + n, step):
        var[i : i + step] = value
    t1 = now()
    ds.close()
    return {"t0": t0, "t1": t1, "ops": n, "lat": None}


def flock_worker(barrier, file_name: str, index: int, n: int) -> dict:
    """What users hand-roll: lock, open, append one value, close, unlock -- per value."""
    import netCDF4

    group = f"w{index}"

    def append_one(value: float, create: bool = False) -> None:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            ds = netCDF4.Dataset(file_name, "a" if os.path.exists(file_name) else "w", format="NETCDF4")
            try:
                if create:
                    g = ds.createGroup(group)
                    g.createDimension("t", None)
                    g.createVariable("x", "f8", ("t",))
                var = ds.groups[group].variables["x"]
                var[var.shape[0]] = value
            finally:
                ds.close()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    with open(file_name + ".lock", "a") as lock:
        append_one(1.5, create=True)
        barrier.wait(BARRIER_TIMEOUT_S)
        t0 = now()
        for _ in range(n):
            append_one(1.5)
        t1 = now()
    return {"t0": t0, "t1": t1, "ops": n, "lat": None}


def queue_producer(barrier, q, index: int, workload: str, n: int) -> dict:
    value = value_for(workload, index)
    barrier.wait(BARRIER_TIMEOUT_S)
    t0 = now()
    for _ in range(n):
        q.put((index, value))
    q.put(None)
    return {"t0": t0, "t1": now(), "ops": 0, "lat": None}


def queue_writer(barrier, q, file_name: str, workload: str, producers: int) -> dict:
    """One netCDF4 writer draining the queue, one assignment per item; no acknowledgement."""
    import netCDF4

    ds = netCDF4.Dataset(file_name, "w", format="NETCDF4")
    variables = []
    for i in range(producers):
        g = ds.createGroup(f"w{i}")
        g.createDimension("t", None)
        if workload == "mib":
            g.createDimension("e", MIB_ELEMS)
            variables.append(g.createVariable("x", "f8", ("t", "e"), chunksizes=(1, MIB_ELEMS), fill_value=False))
        else:
            variables.append(g.createVariable("x", "f8", ("t",), chunksizes=(SCALAR_CHUNK,), fill_value=False))
    lengths = [0] * producers
    barrier.wait(BARRIER_TIMEOUT_S)
    t0 = now()
    done = ops = 0
    while done < producers:
        item = q.get()
        if item is None:
            done += 1
            continue
        i, value = item
        variables[i][lengths[i]] = value
        lengths[i] += 1
        ops += 1
    t1 = now()
    ds.close()
    return {"t0": t0, "t1": t1, "ops": ops, "lat": None}


def _child(func: Callable, args: tuple, barrier, results, index: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it terminates us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        payload = func(barrier, *args)
    except KeyboardInterrupt:
        return
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        payload = traceback.format_exc()
        try:
            barrier.abort()  # let the others fail fast instead of waiting out the barrier
        except Exception:
            pass
    results.put((index, payload))


def run_processes(jobs: list[tuple[Callable, tuple]], daemon: "Daemon | None" = None) -> list[dict]:
    """Run each (func, args) in a forked process sharing one barrier; their reports, in order.

    Fails fast when a worker fails or dies, or when ``daemon`` exits mid-run.
    """
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(len(jobs))
    results = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(func, args, barrier, results, i), daemon=True)
             for i, (func, args) in enumerate(jobs)]
    got: dict[int, Any] = {}
    try:
        for p in procs:
            p.start()
        deadline = now() + RUN_TIMEOUT_S
        dead_since: dict[int, float] = {}
        while len(got) < len(procs):
            try:
                index, payload = results.get(timeout=0.5)
            except queue.Empty:
                t = now()
                if t > deadline:
                    raise TimeoutError(f"measurement did not finish within {RUN_TIMEOUT_S:.0f} s")
                if daemon is not None and daemon.process.poll() is not None:
                    raise RuntimeError(f"nstored exited with code {daemon.process.returncode} during the run:\n"
                                       f"{daemon.log()[-2000:]}")
                for i, p in enumerate(procs):
                    if i not in got and p.exitcode is not None and t - dead_since.setdefault(i, t) > 5:
                        raise RuntimeError(f"worker {i} exited with code {p.exitcode} without reporting")
                continue
            if isinstance(payload, str):
                raise RuntimeError(f"worker {index} failed:\n{payload}")
            got[index] = payload
        for p in procs:
            p.join(30)
        return [got[i] for i in range(len(procs))]
    finally:
        for p in procs:  # only our own children, by handle
            if p.is_alive():
                p.terminate()
                p.join(5)
        results.close()


# ---------------------------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------------------------
_LIVE_DAEMONS: set["Daemon"] = set()


class Daemon:
    """A fresh ``nstored serve`` on a fresh file in a short temp dir; ``stop()`` by PID."""

    def __init__(self, extra_args: tuple = (), python_args: tuple = (), source: str | None = None):
        """``source``: serve a copy of this file instead of a new one."""
        self.dir = tempfile.mkdtemp(prefix="nsb", dir="/tmp")  # short: ipc paths max out near 100 chars
        self.file_name = os.path.join(self.dir, "bench.nc")
        if source is not None:
            shutil.copy(source, self.file_name)
        self.endpoint = f"ipc://{self.dir}/d.sock"
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.peak_rss_mb: float | None = None
        self.returncode: int | None = None
        command = [sys.executable, *python_args, "-m", "nstore.daemon.cli", "serve", self.file_name,
                   "--endpoint", self.endpoint, *extra_args]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.pid = self.process.pid
        _LIVE_DAEMONS.add(self)
        try:
            self._wait_until_connectable()
        except BaseException:
            self.stop()
            raise

    def _wait_until_connectable(self) -> None:
        deadline = now() + DAEMON_START_TIMEOUT_S
        while not (os.path.exists(self.endpoint[len("ipc://"):]) and _answers(self.endpoint)):
            if self.process.poll() is not None or now() > deadline:
                raise RuntimeError(f"nstored did not start (exit {self.process.poll()}):\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def read_peak_rss(self) -> float | None:
        """VmHWM of the daemon process, in MB (1e6 bytes)."""
        try:
            with open(f"/proc/{self.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        self.peak_rss_mb = int(line.split()[1]) * 1024 / 1e6
        except OSError:
            pass
        return self.peak_rss_mb

    def cpu_seconds(self) -> float:
        """User + system CPU time the daemon has used so far."""
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, keep_as: str | None = None) -> int | None:
        """SIGTERM by PID and wait; SIGKILL on timeout; remove the temp dir (``keep_as``: copy the file there first)."""
        if self.process.poll() is None:
            self.read_peak_rss()
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=DAEMON_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print(f"  ! nstored pid {self.pid} ignored SIGTERM for {DAEMON_STOP_TIMEOUT_S:.0f} s: SIGKILL",
                      file=sys.stderr)
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.returncode = self.process.returncode
        if self.returncode not in (0, None):
            print(f"  ! nstored pid {self.pid} exited with code {self.returncode}:\n{self.log()[-2000:]}",
                  file=sys.stderr)
        _LIVE_DAEMONS.discard(self)
        if keep_as is not None and os.path.exists(self.file_name):
            shutil.copy(self.file_name, keep_as)
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.returncode

    def __enter__(self) -> "Daemon":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _answers(endpoint: str, timeout: float = 0.5) -> bool:
    """A status request answered in time. Own context, destroyed after: no zmq threads survive to fork."""
    import zmq

    from nstore.protocol.messages import decode_reply, encode_request

    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.connect(endpoint)
        sock.send_multipart(encode_request(1, "bench-probe", [("status", "", {})]))
        if not sock.poll(int(timeout * 1000)):
            return False
        decode_reply(sock.recv_multipart())
        return True
    finally:
        ctx.destroy(linger=0)


def stop_all_daemons() -> None:
    for daemon in list(_LIVE_DAEMONS):
        daemon.stop()


def fsync_available() -> bool:
    """Feature probe: does ``nstored serve --help`` list ``--fsync``?"""
    out = subprocess.run([sys.executable, "-m", "nstore.daemon.cli", "serve", "--help"],
                         capture_output=True, text=True, timeout=60)
    return "--fsync" in out.stdout


# ---------------------------------------------------------------------------------------------
# Measurements: each returns a Result
# ---------------------------------------------------------------------------------------------
@dataclass
class Result:
    workload: str
    mode: str
    workers: int
    ops: int
    seconds: float
    ops_s: float
    mb_s: float
    p50_us: float | None = None
    p99_us: float | None = None
    ratio: float | None = None  # vs in-process: throughput, or p50 latency for reads
    daemon_peak_rss_mb: float | None = None
    daemon_cpu: float | None = None  # daemon CPU seconds / wall seconds (setup included: approximate)
    extra: dict = field(default_factory=dict)


def summarize(workload: str, mode: str, workers: int, reports: list[dict], **extra: Any) -> Result:
    seconds = max(r["t1"] for r in reports) - min(r["t0"] for r in reports)
    ops = sum(r["ops"] for r in reports)
    lats = [r["lat"] for r in reports if r["lat"] is not None]
    result = Result(workload, mode, workers, ops, seconds, ops / seconds, ops * ROW_BYTES[workload] / seconds / 1e6)
    if lats:
        lat = np.concatenate(lats)
        result.p50_us, result.p99_us = (float(np.percentile(lat, q)) * 1e6 for q in (50, 99))
    result.daemon_peak_rss_mb = extra.pop("daemon_peak_rss_mb", None)
    cpu = extra.pop("daemon_cpu_s", None)
    result.daemon_cpu = cpu / seconds if cpu is not None else None
    result.extra.update(extra)
    _progress(result)
    return result


def _progress(r: Result) -> None:
    latency = f", p50 {r.p50_us:.0f} us, p99 {r.p99_us:.0f} us" if r.p50_us is not None else ""
    print(f"  {r.workload:<7} {r.mode:<28} x{r.workers:<3} {r.ops_s:>12,.0f} ops/s {r.mb_s:>9.1f} MB/s"
          f"{latency}  ({r.ops} ops in {r.seconds:.2f} s)", file=sys.stderr, flush=True)


def measure_inprocess(workload: str, quick: bool, workdir: str) -> Result:
    file_name = os.path.join(workdir, f"inproc-{workload}.nc")
    n = total_ops(workload, "in-process", quick)
    reports = run_processes([(driver_worker, ("local", file_name, False, workload, "w0/x", n, 0))])
    os.remove(file_name)
    return summarize(workload, "in-process", 1, reports)


def measure_classic(workload: str, quick: bool, workdir: str) -> Result:
    """The classic layer (openmmtools) in one process: scalar appends, or read() p50 of a fixed float."""
    file_name = os.path.join(workdir, f"classic-{workload}.nc")
    n = total_ops(workload, CLASSIC_MODE, quick)
    reports = run_processes([(classic_worker, (file_name, workload, n, 0))])
    os.remove(file_name)
    return summarize(workload, CLASSIC_MODE, 1, reports)


def classic_unavailable() -> str | None:
    """Why the classic layer cannot be measured (None: it can). Probed in a fresh interpreter:
    importing openmmtools pulls in OpenMM, which the bench's forked workers should not inherit."""
    probe = subprocess.run([sys.executable, "-c", "from openmmtools.storage import NetCDFIODriver, StorageInterface"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode == 0:
        return None
    lines = probe.stderr.strip().splitlines()
    return f"openmmtools is not importable ({lines[-1] if lines else f'exit {probe.returncode}'})"


def measure_raw(workload: str, layout: str, mode: str, quick: bool, workdir: str) -> Result:
    file_name = os.path.join(workdir, f"raw-{layout}.nc")
    reports = run_processes([(raw_netcdf_worker, (file_name, layout, total_ops(workload, mode, quick)))])
    os.remove(file_name)
    return summarize(workload, mode, 1, reports)


def measure_echo(workers: int, quick: bool) -> Result:
    """The bare transport: ``workers`` synchronous pyzmq clients against a ROUTER echo on ipc (nstore's socket types)."""
    directory = tempfile.mkdtemp(prefix="nse", dir="/tmp")  # short: ipc paths max out near 100 chars
    endpoint = f"ipc://{directory}/echo.sock"
    ctx = mp.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    server = ctx.Process(target=echo_server, args=(endpoint, ready, stop), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the echo server did not start within 30 s")
        counts = split(total_ops("scalar", "sync", quick), workers)
        reports = run_processes([(echo_worker, (endpoint, counts[i], i)) for i in range(workers)])
    finally:
        stop.set()
        server.join(5)
        if server.is_alive():
            server.terminate()
            server.join(5)
        shutil.rmtree(directory, ignore_errors=True)
    return summarize("scalar", ECHO_MODE, workers, reports)


def measure_flock(quick: bool, workdir: str) -> Result:
    file_name = os.path.join(workdir, "flock.nc")
    mode = "flock+open/close x8"
    counts = split(total_ops("scalar", mode, quick), HANDROLLED_PROCS)
    reports = run_processes([(flock_worker, (file_name, i, counts[i])) for i in range(HANDROLLED_PROCS)])
    for path in (file_name, file_name + ".lock"):
        os.remove(path)
    return summarize("scalar", mode, HANDROLLED_PROCS, reports)


def measure_queue(workload: str, quick: bool, workdir: str) -> Result:
    file_name = os.path.join(workdir, f"queue-{workload}.nc")
    mode = "mp.Queue x8 -> writer"
    q = mp.get_context("fork").Queue(maxsize=32 if workload == "mib" else 1000)
    counts = split(total_ops(workload, mode, quick), HANDROLLED_PROCS)
    jobs = [(queue_producer, (q, i, workload, counts[i])) for i in range(HANDROLLED_PROCS)]
    jobs.append((queue_writer, (q, file_name, workload, HANDROLLED_PROCS)))
    reports = run_processes(jobs)
    q.close()
    os.remove(file_name)
    return summarize(workload, mode, HANDROLLED_PROCS, reports)


def measure_daemon(workload: str, mode: str, workers: int, quick: bool, *, shared: bool = False,
                   extra_args: tuple = (), python_args: tuple = (), label: str | None = None) -> Result:
    """``workers`` processes against a fresh daemon on a fresh file."""
    label = label or ("sync, 1 shared var" if shared else mode)
    counts = split(total_ops(workload, mode, quick), workers)
    pipeline = mode == "pipelined"
    with Daemon(extra_args, python_args) as daemon:
        jobs = [(driver_worker, ("remote", daemon.endpoint, pipeline, workload,
                                 "shared/x" if shared else f"w{i}/x", counts[i], i)) for i in range(workers)]
        cpu_before = daemon.cpu_seconds()
        reports = run_processes(jobs, daemon)
        cpu = daemon.cpu_seconds() - cpu_before
        rss = daemon.read_peak_rss()
    return summarize(workload, label, workers, reports, daemon_peak_rss_mb=rss, daemon_cpu_s=cpu,
                     daemon_exit=daemon.returncode)


def import_time_ms(repeats: int = 5) -> dict:
    """Median wall time of ``python -c "import nstore"`` minus that of ``python -c "pass"``, fresh interpreters."""

    def median_ms(code: str) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    subprocess.run([sys.executable, "-c", "import nstore"], check=True)  # warm the file cache
    bare, with_nstore = median_ms("pass"), median_ms("import nstore")
    code = "import json, nstore, sys; print(json.dumps(sorted({'netCDF4', 'pint', 'zmq'} & set(sys.modules))))"
    leaks = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    return {"import_ms": with_nstore - bare, "python_import_nstore_ms": with_nstore, "python_pass_ms": bare,
            "heavy_modules_after_import": leaks}


# ---------------------------------------------------------------------------------------------
# The run plan and the report
# ---------------------------------------------------------------------------------------------
def run_all(args: argparse.Namespace, workdir: str) -> dict:
    only, counts, quick = args.only, args.workers, args.quick
    run = functools.partial(median_of, args.repeat)
    load_before = os.getloadavg()[0]  # other processes on the machine make every number noisier
    results: list[Result] = []
    print("baselines", file=sys.stderr)
    for workload in only:
        results.append(run(measure_inprocess, workload, quick, workdir))
    classic_skipped = "--no-classic" if args.classic is False else classic_unavailable()
    if classic_skipped is None:
        for workload in (w for w in CLASSIC_WORKLOADS if w in only):
            results.append(run(measure_classic, workload, quick, workdir))
    elif args.classic:
        print(f"SKIPPED: {classic_skipped}", file=sys.stderr)
    if "scalar" in only or "read" in only:
        for workers in (1, 8):
            results.append(run(measure_echo, workers, quick))
    if "scalar" in only:
        results.append(run(measure_raw, "scalar", "scalar-1", "raw nc 1/assign", quick, workdir))
        results.append(run(measure_raw, "scalar", "scalar-1024", "raw nc 1024/assign", quick, workdir))
        results.append(run(measure_flock, quick, workdir))
        results.append(run(measure_queue, "scalar", quick, workdir))
    if "mib" in only:
        results.append(run(measure_raw, "mib", "mib-1row", "raw nc 1-row chunks", quick, workdir))
        results.append(run(measure_queue, "mib", quick, workdir))

    print("nstored", file=sys.stderr)
    for workload in only:
        for mode in ("sync", "pipelined"):
            for n in sorted(set(counts) | target_worker_counts(workload, mode, quick)):
                results.append(run(measure_daemon, workload, mode, n, quick))
        if workload != "read":
            results.append(run(measure_daemon, workload, "sync", 8, quick, shared=True))

    fsync = run_fsync_table(args, quick, run)
    apply_ratios(results)
    if fsync.get("results"):
        apply_ratios(results + fsync["results"])
    return {"results": results, "fsync": fsync, "import": import_time_ms(), "load_before": load_before,
            "classic_skipped": classic_skipped, "ratios": baseline_ratios(results)}


def median_of(repeat: int, measure: Callable[..., Result], *args: Any, **kwargs: Any) -> Result:
    """Run a measurement ``repeat`` times: the run with the median ops/s (its RSS: the max of all runs)."""
    runs = sorted((measure(*args, **kwargs) for _ in range(repeat)), key=lambda r: r.ops_s)
    chosen = runs[len(runs) // 2]
    if repeat > 1:
        chosen.extra["runs_ops_s"] = [round(r.ops_s, 1) for r in runs]
        rss = [r.daemon_peak_rss_mb for r in runs if r.daemon_peak_rss_mb is not None]
        chosen.daemon_peak_rss_mb = max(rss, default=None)
    return chosen


def target_worker_counts(workload: str, mode: str, quick: bool) -> set[int]:
    """Worker counts the targets need, measured even when --workers leaves them out (--quick: no 16-worker flood)."""
    needed = {("scalar", "sync"): {1, 8}, ("scalar", "pipelined"): {8}, ("mib", "sync"): {4},
              ("read", "sync"): {1}}.get((workload, mode), set())
    if (workload, mode) == ("mib", "pipelined") and not quick:
        needed = {RSS_FLOOD_WORKERS}  # the daemon-RSS target: 16 workers flooding 1 MiB appends
    return needed


def run_fsync_table(args: argparse.Namespace, quick: bool, run: Callable[..., Result]) -> dict:
    configs = [c for c in (("scalar", "sync", 8), ("scalar", "pipelined", 8), ("mib", "sync", 4)) if c[0] in args.only]
    if not args.fsync_policies or not configs:
        return {"available": None, "results": []}
    if not fsync_available():
        return {"available": False, "results": []}
    print("fsync policies", file=sys.stderr)
    results = []
    for workload, mode, workers in configs:
        base = run(measure_daemon, workload, mode, workers, quick, label=f"{mode}, no --fsync")
        results.append(base)
        for policy in args.fsync_policies:
            r = run(measure_daemon, workload, mode, workers, quick, extra_args=("--fsync", policy),
                    label=f"{mode}, --fsync {policy}")
            r.extra["vs_no_flag"] = r.ops_s / base.ops_s
            results.append(r)
    return {"available": True, "results": results}


def apply_ratios(results: list[Result]) -> None:
    ref = {r.workload: r for r in results if r.mode == "in-process"}
    for r in results:
        base = ref.get(r.workload)
        if base is None:
            continue
        if r.workload == "read" and r.p50_us is not None:
            r.ratio = r.p50_us / base.p50_us
        else:
            r.ratio = r.ops_s / base.ops_s


def format_table(results: list[Result], title: str, extra_column: str | None = None) -> str:
    head = f"{'workload':<8} {'mode':<28} {'workers':>7} {'ops/s':>12} {'MB/s':>9} {'p50 us':>8} {'p99 us':>8} {'x in-proc':>9} {'RSS MB':>7} {'dmn CPU':>7}"
    if extra_column:
        head += f" {extra_column:>10}"
    lines = [title, head, "-" * len(head)]
    previous = None
    for r in sorted(results, key=lambda r: WORKLOADS.index(r.workload)):  # stable: run order within a workload
        if previous is not None and r.workload != previous:
            lines.append("")
        previous = r.workload
        p50 = f"{r.p50_us:.0f}" if r.p50_us is not None else "-"
        p99 = f"{r.p99_us:.0f}" if r.p99_us is not None else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        rss = f"{r.daemon_peak_rss_mb:.0f}" if r.daemon_peak_rss_mb is not None else "-"
        cpu = f"{r.daemon_cpu:.0%}" if r.daemon_cpu is not None else "-"
        line = (f"{r.workload:<8} {r.mode:<28} {r.workers:>7} {r.ops_s:>12,.0f} {r.mb_s:>9.1f} "
                f"{p50:>8} {p99:>8} {ratio:>9} {rss:>7} {cpu:>7}")
        if extra_column:
            value = r.extra.get("vs_no_flag")
            line += f" {value:>10.2f}" if value is not None else f" {'-':>10}"
        lines.append(line)
    lines.append("x in-proc: throughput / in-process NetCDFIODriver throughput (same run); "
                 "for read rows: p50 latency / in-process p50 (lower is better).\n"
                 "RSS MB: daemon VmHWM at the end of the run; dmn CPU: daemon CPU time / wall time "
                 "(100% = one core busy; includes worker setup, so approximate).")
    return "\n".join(lines)


def find(results: list[Result], workload: str, mode: str, workers: int) -> Result | None:
    return next((r for r in results if (r.workload, r.mode, r.workers) == (workload, mode, workers)), None)


def _figure(r: Result, metric: str) -> str:
    unit = {"ops_s": "ops/s", "mb_s": "MB/s", "p50_us": "us p50"}[metric]
    return f"{r.mode} x{r.workers} {getattr(r, metric):,.0f} {unit}"


def check_targets(results: list[Result], imp: dict, classic_skipped: str | None, quick: bool) -> list[dict]:
    """Issue #12's targets, each a ratio of two figures from this run: MET (True), NOT MET (False), SKIPPED (None)."""
    checks = []

    def check(name: str, ok: bool | None, detail: str) -> None:
        checks.append({"target": name, "met": ok, "detail": detail})

    def compare(name: str, r: Result | None, base: Result | None, bound: float, metric: str = "ops_s",
                missing: str = "not measured", note: str = "") -> None:
        """ratio = r / base of ``metric``; throughput must be >= bound, latency (p50_us) <= bound."""
        if r is None or base is None or getattr(r, metric) is None or getattr(base, metric) is None:
            check(name, None, missing)
            return
        ratio = getattr(r, metric) / getattr(base, metric)
        ok = ratio <= bound if metric == "p50_us" else ratio >= bound
        check(name, ok, f"{ratio:.2f}x ({_figure(r, metric)} vs {_figure(base, metric)}){note}")

    classic_missing = classic_skipped or "not measured"
    echo = {n: find(results, "scalar", ECHO_MODE, n) for n in (1, 8)}
    classic = {w: find(results, w, CLASSIC_MODE, 1) for w in CLASSIC_WORKLOADS}
    sync1, sync8 = find(results, "scalar", "sync", 1), find(results, "scalar", "sync", 8)
    compare("sync scalar appends x1 >= 0.6x the bare echo x1", sync1, echo[1], 0.6)
    compare("sync scalar appends x8 >= 0.6x the bare echo x8", sync8, echo[8], 0.6)
    compare("sync scalar appends x8 >= 2x the classic layer in-process", sync8, classic["scalar"], 2.0,
            missing=classic_missing)

    piped8, local = find(results, "scalar", "pipelined", 8), find(results, "scalar", "in-process", 1)
    note = f"; {piped8.ops_s / local.ops_s:.2f}x nstore's in-process driver (issue: ~10x)" if piped8 and local else ""
    compare("pipelined scalar appends x8 >= 60x the classic layer in-process", piped8, classic["scalar"], 60.0,
            missing=classic_missing + note, note=note)
    check(*pipelined_16_check(results, quick))

    read = find(results, "read", "sync", 1)
    compare("small read p50 (sync x1) <= the classic in-process read p50", read, classic["read"], 1.0,
            metric="p50_us", missing=classic_missing)
    compare("small read p50 (sync x1) <= 1.5x the bare echo x1 round-trip p50", read, echo[1], 1.5, metric="p50_us")

    compare("1 MiB rows, sync x4 >= 0.8x raw netCDF4 with 1-row chunks", find(results, "mib", "sync", 4),
            find(results, "mib", RAW_BASELINE["mib"], 1), 0.8, metric="mb_s")

    heavy = sorted({"netCDF4", "pint"} & set(imp["heavy_modules_after_import"]))
    check(f"import nstore <= {IMPORT_BOUND_MS} ms without netCDF4 or pint", imp["import_ms"] <= IMPORT_BOUND_MS and not heavy,
          f"{imp['import_ms']:.0f} ms = {imp['import_ms'] / IMPORT_BOUND_MS:.2f}x the bound (median of 5 "
          f"`python -c \"import nstore\"` {imp['python_import_nstore_ms']:.0f} ms minus median of 5 `python -c pass` "
          f"{imp['python_pass_ms']:.0f} ms); loaded by the import: {', '.join(heavy) or 'neither'}")
    check(*rss_check(results, quick))
    check("SIGKILL loops lose nothing acknowledged", None, "checked by the test suite (tests/test_durability.py), "
          "not by the bench")
    return checks


def pipelined_16_check(results: list[Result], quick: bool) -> tuple[str, bool | None, str]:
    """Pipelined scalar appends from 16 workers keep >= 0.9x the best aggregate of any worker count."""
    name = "pipelined scalar appends x16 >= 0.9x the best worker count"
    r16 = find(results, "scalar", "pipelined", 16)
    if r16 is None:
        return name, None, "not measured in --quick" if quick else "16 workers not measured (add 16 to --workers)"
    best = max((r for r in results if (r.workload, r.mode) == ("scalar", "pipelined")), key=lambda r: r.ops_s)
    ratio = r16.ops_s / best.ops_s
    return name, ratio >= 0.9, f"{ratio:.2f}x ({_figure(r16, 'ops_s')} vs the best, {_figure(best, 'ops_s')})"


def rss_check(results: list[Result], quick: bool) -> tuple[str, bool | None, str]:
    """Daemon peak RSS (VmHWM) while 16 workers flood 1 MiB appends, sync or pipelined."""
    name = f"daemon RSS <= {RSS_BOUND_MB} MB while {RSS_FLOOD_WORKERS} workers flood 1 MiB appends"
    flood = [r for r in results if r.workload == "mib" and r.mode in ("sync", "pipelined")
             and r.workers == RSS_FLOOD_WORKERS and r.daemon_peak_rss_mb is not None]
    if not flood:
        return name, None, ("not measured in --quick" if quick
                            else f"not measured (needs mib sync or pipelined with {RSS_FLOOD_WORKERS} workers)")
    worst = max(flood, key=lambda r: r.daemon_peak_rss_mb)
    return name, worst.daemon_peak_rss_mb <= RSS_BOUND_MB, (
        f"{worst.daemon_peak_rss_mb / RSS_BOUND_MB:.2f}x the bound (VmHWM {worst.daemon_peak_rss_mb:.0f} MB, "
        f"mib {worst.mode} x{worst.workers})")


def baseline_ratios(results: list[Result]) -> list[dict]:
    """Every daemon figure against each of its baselines from the same run (read rows: p50 ratios, lower is better)."""
    rows = []
    for r in results:
        if r.mode not in DAEMON_MODES:
            continue
        latency = r.workload == "read"
        echo_ok = r.mode != "pipelined" and r.workload in ("scalar", "read")  # the echo is a synchronous round trip
        bases = {"in-proc": find(results, r.workload, "in-process", 1),
                 "classic": find(results, r.workload, CLASSIC_MODE, 1),
                 "echo": find(results, "scalar", ECHO_MODE, r.workers) if echo_ok else None,
                 "raw nc": find(results, r.workload, RAW_BASELINE.get(r.workload, ""), 1)}
        ratios = {}
        for name, base in bases.items():
            if base is None:
                continue
            if latency and r.p50_us is not None and base.p50_us is not None:
                ratios[name] = r.p50_us / base.p50_us
            elif not latency:
                ratios[name] = r.ops_s / base.ops_s
        rows.append({"workload": r.workload, "mode": r.mode, "workers": r.workers,
                     "figure": f"{r.p50_us:,.0f} us p50" if latency and r.p50_us is not None else f"{r.ops_s:,.0f} ops/s",
                     "ratios": ratios})
    return rows


def format_ratios(rows: list[dict], results: list[Result], classic_skipped: str | None) -> str:
    columns = ("in-proc", "classic", "echo", "raw nc")
    head = f"{'workload':<8} {'mode':<20} {'workers':>7} {'figure':>16}" + "".join(f" {'x ' + c:>10}" for c in columns)
    lines = ["ratios: every daemon figure / its baseline in this run (throughput: higher is better; "
             "read rows: p50 latency, lower is better)", head, "-" * len(head)]
    for row in sorted(rows, key=lambda row: WORKLOADS.index(row["workload"])):
        cells = "".join(f" {row['ratios'][c]:>10.2f}" if c in row["ratios"] else f" {'-':>10}" for c in columns)
        lines.append(f"{row['workload']:<8} {row['mode']:<20} {row['workers']:>7} {row['figure']:>16}{cells}")
    lines.append("baselines: in-proc = nstore's NetCDFIODriver in one process; classic = openmmtools "
                 "StorageInterface + NetCDFIODriver in one process; echo = bare pyzmq ROUTER echo with as many "
                 "sync clients (x1, x8 only); raw nc = netCDF4 one scalar per assignment / 1 MiB rows in 1-row chunks.")
    if classic_skipped:
        lines.append(f"classic layer: SKIPPED: {classic_skipped}")
    else:
        local = {w: find(results, w, "in-process", 1) for w in CLASSIC_WORKLOADS}
        classic = {w: find(results, w, CLASSIC_MODE, 1) for w in CLASSIC_WORKLOADS}
        parts = []
        if local["scalar"] and classic["scalar"]:
            parts.append(f"scalar appends {local['scalar'].ops_s / classic['scalar'].ops_s:.2f}x")
        if local["read"] and classic["read"]:
            parts.append(f"read p50 {local['read'].p50_us / classic['read'].p50_us:.2f}x")
        if parts:
            lines.append("nstore in-process / classic in-process: " + ", ".join(parts))
    return "\n".join(lines)


def print_report(run: dict, args: argparse.Namespace, checks: list[dict]) -> None:
    results = run["results"]
    print()
    print(format_table(results, f"nstore bench ({'quick' if args.quick else 'full'}; workers {args.workers}; "
                                f"median of {args.repeat}; {os.cpu_count()} CPUs; load avg {run['load_before']:.1f} before, {os.getloadavg()[0]:.1f} after; "
                                f"python {sys.version.split()[0]})"))
    imp = run["import"]
    print(f"\nclient import: {imp['import_ms']:.0f} ms = median of 5 `python -c \"import nstore\"` "
          f"({imp['python_import_nstore_ms']:.0f} ms) minus median of 5 `python -c pass` ({imp['python_pass_ms']:.0f} ms); "
          f"heavy modules after import: {imp['heavy_modules_after_import']}")
    rss = [r.daemon_peak_rss_mb for r in results if r.daemon_peak_rss_mb is not None]
    if rss:
        print(f"daemon peak RSS: max VmHWM over {len(rss)} daemon runs = {max(rss):.0f} MB")
    bad_exits = [f"{r.workload} {r.mode} x{r.workers}: {r.extra['daemon_exit']}" for r in results
                 if r.extra.get("daemon_exit") not in (None, 0)]
    if bad_exits:
        print("daemon exit codes != 0: " + "; ".join(bad_exits))

    fsync = run["fsync"]
    if fsync["available"] is False:
        print("\nfsync policies: not available in this build")
    elif fsync["available"]:
        print()
        print(format_table(fsync["results"], "fsync policies (fresh daemon each; vs no flag = ops/s / same workload without --fsync)",
                           extra_column="vs no flag"))

    print()
    print(format_ratios(run["ratios"], results, run["classic_skipped"]))

    print("\ntargets")
    for c in checks:
        status = {True: "MET", False: "NOT MET", None: "SKIPPED"}[c["met"]]
        print(f"  {status:<8} {c['target']}: {c['detail']}")


def write_json(path: str, args: argparse.Namespace, run: dict, checks: list[dict]) -> None:
    with open(path, "w") as fh:
        json.dump({"quick": args.quick, "workers": args.workers, "repeat": args.repeat, "cpus": os.cpu_count(),
                   "results": [asdict(r) for r in run["results"]],
                   "fsync": {"available": run["fsync"]["available"],
                             "results": [asdict(r) for r in run["fsync"]["results"]]},
                   "classic_skipped": run["classic_skipped"], "ratios": run["ratios"],
                   "import": run["import"], "targets": checks}, fh, indent=2)


def profile_daemon(out: str, quick: bool) -> None:
    """Pipelined scalar appends from 8 workers with the daemon under cProfile; top functions by self time."""
    import pstats

    out = os.path.abspath(out)
    r = measure_daemon("scalar", "pipelined", 8, quick, python_args=("-m", "cProfile", "-o", out),
                       label="pipelined (cProfile)")
    print(f"\nunder cProfile: {r.ops_s:,.0f} ops/s; profile in {out}\n")
    pstats.Stats(out).sort_stats("tottime").print_stats(25)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer ops and worker counts (< 2 min)")
    parser.add_argument("--workers", help="daemon worker counts (default 1,2,4,8,16; quick: 1,4,8)")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads: " + ",".join(WORKLOADS))
    parser.add_argument("--classic", action=argparse.BooleanOptionalAction, default=None,
                        help="the classic layer (openmmtools StorageInterface + NetCDFIODriver) in-process as a "
                             "baseline (default: when openmmtools is importable; --classic says SKIPPED when not)")
    parser.add_argument("--repeat", type=int, default=1, help="run each measurement N times, report the median")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    parser.add_argument("--fsync-policies", default="never,batch,interval",
                        help="policies for `nstored serve --fsync P` (empty: skip the table)")
    parser.add_argument("--profile-daemon", metavar="OUT",
                        help="only profile the daemon (cProfile) under pipelined scalar appends from 8 workers")
    args = parser.parse_args(argv)
    args.workers = [int(n) for n in (args.workers or ("1,4,8" if args.quick else "1,2,4,8,16")).split(",")]
    args.only = [w for w in args.only.split(",") if w]
    unknown = set(args.only) - set(WORKLOADS)
    if unknown or any(n < 1 for n in args.workers) or args.repeat < 1:
        parser.error(f"bad --only {sorted(unknown)}, --workers {args.workers} or --repeat {args.repeat}")
    args.fsync_policies = [p for p in args.fsync_policies.split(",") if p]
    return args


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    workdir = tempfile.mkdtemp(prefix="nstore-bench-")
    started = now()
    try:
        if args.profile_daemon:
            profile_daemon(args.profile_daemon, args.quick)
            return 0
        run = run_all(args, workdir)
        checks = check_targets(run["results"], run["import"], run["classic_skipped"], args.quick)
        if args.json:
            write_json(args.json, args, run, checks)
        print_report(run, args, checks)
        print(f"\ntotal bench time {now() - started:.0f} s")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping daemons", file=sys.stderr)
        return 130
    finally:
        stop_all_daemons()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
