"""Many variables in one file: creation cost, daemon memory, file size, append rate, start time.

    python scripts/bench_manyvars.py [--vars 10000] [--seconds 3] [--json OUT]

One float is appended to each new variable ``rep{i//10}/v{i%10}`` (1,000
directories of 10 for 10,000 variables), through one pipelined client (flushed
every 1,000 variables, so each thousand is timed on its own) and, for the first
1,000 and for 1,000 more after all of them, through a synchronous one.
Measured in the same run, as ratios:

* creation per variable through the daemon, first 1,000 against last 1,000;
* the same creation with the in-process ``NetCDFIODriver`` (the baseline);
* daemon RSS (VmRSS) after creating them and after appending once more to each;
* file bytes per variable holding one float (file size less an empty store's);
* synchronous appends to one variable with all of them in the file, against
  the same appends to a file holding one variable (both on a daemon just
  started, so that no periodic checkpoint falls inside either);
* a ``sync`` after appending to every variable: what each checkpoint costs;
* ``nstored`` start time on the many-variable file (to its first answer).

Fresh files and daemons for every measurement, stopped by PID (bench.Daemon).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench import Daemon  # noqa: E402 - the benchmark's daemon runner, stopped by PID

from nstore import NetCDFIODriver, connect  # noqa: E402

STEP = 1000  # variables per timed step


def var_path(i: int) -> str:
    return f"rep{i // 10}/v{i % 10}"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for pid {pid}")


def create_through(driver, n: int, flush, first: int = 0) -> list[float]:
    """Seconds per STEP variables (numbered from ``first``), each created by appending one float."""
    steps, start = [], time.perf_counter()
    for i in range(first, first + n):
        driver.append_variable(var_path(i), float(i))
        if (i + 1 - first) % STEP == 0:
            flush()
            now = time.perf_counter()
            steps.append(now - start)
            start = now
    return steps


def sync_append_rate(endpoint: str, path: str, seconds: float) -> float:
    """Synchronous appends per second to ``path`` over ``seconds`` (the first, creating one untimed)."""
    driver = connect(endpoint)
    try:
        driver.append_variable(path, 0.0)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            driver.append_variable(path, float(count))
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        driver.close()


def measure_daemon(n: int, seconds: float) -> dict:
    """Every rate is taken on a daemon just started, so no periodic checkpoint falls inside one."""
    out: dict = {}
    with Daemon() as empty:
        out["append_rate_one_var"] = sync_append_rate(empty.endpoint, "solo/x", seconds)
        empty_bytes = _stopped_size(empty) - _solo_bytes(out["append_rate_one_var"] * seconds)
    with Daemon() as daemon:
        sync = connect(daemon.endpoint)
        out["sync_first_step_s"] = create_through(sync, STEP, lambda: None)[0]
        sync.close()
    kept = tempfile.mkdtemp(prefix="nsm", dir="/tmp")
    try:
        copy = os.path.join(kept, "many.nc")
        with Daemon() as daemon:
            driver = connect(daemon.endpoint, pipeline=True)
            out["steps_s"] = create_through(driver, n, driver.flush)
            out["rss_after_create_mb"] = rss_mb(daemon.pid)
            for i in range(n):
                driver.append_variable(var_path(i), -1.0)
            driver.flush()
            out["rss_after_second_append_mb"] = rss_mb(daemon.pid)
            start = time.perf_counter()
            driver.sync()  # what a checkpoint costs: netCDF's sync flushes every open variable
            out["sync_s"] = time.perf_counter() - start
            driver.close()
            daemon.stop(keep_as=copy)
        out["bytes_per_var"] = (os.path.getsize(copy) - empty_bytes) / n
        start = time.perf_counter()
        with Daemon(source=copy) as restarted:
            out["start_s"] = time.perf_counter() - start
            out["append_rate_many_vars"] = sync_append_rate(restarted.endpoint, "solo/x", seconds)
            sync = connect(restarted.endpoint)
            out["sync_last_step_s"] = create_through(sync, STEP, lambda: None, first=n)[0]
            sync.close()
    finally:
        shutil.rmtree(kept, ignore_errors=True)
    return out


def _stopped_size(daemon: Daemon) -> int:
    """Stop ``daemon`` and return the size of the file it served."""
    kept = tempfile.mkdtemp(prefix="nsz", dir="/tmp")
    try:
        daemon.stop(keep_as=os.path.join(kept, "f.nc"))
        return os.path.getsize(os.path.join(kept, "f.nc"))
    finally:
        shutil.rmtree(kept, ignore_errors=True)


def _solo_bytes(appends: float) -> int:
    """Bytes the ``solo/x`` variable of the append-rate runs adds (not counted per variable)."""
    directory = tempfile.mkdtemp(prefix="nss", dir="/tmp")
    try:
        base = os.path.join(directory, "a.nc")
        NetCDFIODriver(base).close()
        empty = os.path.getsize(base)
        driver = NetCDFIODriver(base)
        driver.append_many("solo/x", [0.0] * (int(appends) + 1))
        driver.close()
        return os.path.getsize(base) - empty
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def measure_inprocess(n: int) -> list[float]:
    directory = tempfile.mkdtemp(prefix="nsi", dir="/tmp")
    try:
        driver = NetCDFIODriver(os.path.join(directory, "in.nc"))
        steps = create_through(driver, n, lambda: None)
        driver.close()
        return steps
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def report(n: int, daemon: dict, inproc: list[float]) -> str:
    steps = daemon["steps_s"]
    per_ms = 1000 * sum(steps) / n
    lines = [
        f"variables: {n} (rep{{i//10}}/v{{i%10}}, one float each)",
        f"creation through nstored (pipelined): {per_ms:.2f} ms/variable on average; "
        f"last {STEP} / first {STEP}: {steps[-1] / steps[0]:.2f}x",
        f"creation through nstored (synchronous): {daemon['sync_first_step_s'] * 1000 / STEP:.2f} ms/variable for the "
        f"first {STEP}, {daemon['sync_last_step_s'] * 1000 / STEP:.2f} ms/variable for {STEP} more after {n}",
        f"in-process driver: {1000 * sum(inproc) / n:.2f} ms/variable; last/first {inproc[-1] / inproc[0]:.2f}x; "
        f"daemon/in-process {per_ms / (1000 * sum(inproc) / n):.2f}x",
        f"per-{STEP} seconds (daemon): {' '.join(f'{s:.2f}' for s in steps)}",
        f"daemon RSS: {daemon['rss_after_create_mb']:.0f} MB after creating, "
        f"{daemon['rss_after_second_append_mb']:.0f} MB after appending to each again",
        f"file bytes per variable holding one float: {daemon['bytes_per_var'] / 1024:.1f} KiB",
        f"sync (what a checkpoint costs) after appending to each: {daemon['sync_s']:.2f} s",
        f"sync appends to one variable: {daemon['append_rate_many_vars']:.0f}/s with {n} variables in the file, "
        f"{daemon['append_rate_one_var']:.0f}/s with one: {daemon['append_rate_many_vars'] / daemon['append_rate_one_var']:.2f}x",
        f"nstored start on the {n}-variable file: {daemon['start_s']:.2f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vars", type=int, default=10000, help="variables to create (a multiple of 1000)")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each append rate is timed")
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    n = max(STEP, args.vars // STEP * STEP)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    daemon = measure_daemon(n, args.seconds)
    inproc = measure_inprocess(n)
    print(report(n, daemon, inproc))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"vars": n, "daemon": daemon, "inprocess_steps_s": inproc}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
