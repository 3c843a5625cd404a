"""Quantity appends through nstored: one client, synchronous and pipelined, rate and daemon CPU per append.

Starts ``nstored serve`` on a fresh file (stopped by PID at the end) and appends
``--n`` times ``Quantity(1.5, unit)`` to one variable per mode (the variable is
created in nanometer, so ``--unit angstrom`` measures the converting path).

    python scripts/bench_units.py [--n 20000] [--unit nanometer] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Daemon  # noqa: E402  (scripts/bench.py: a fresh nstored, stopped by PID)


def run(daemon: Daemon, path: str, n: int, unit: str, pipeline: bool) -> tuple[float, float]:
    """``(appends per second, daemon CPU microseconds per append)`` for ``n`` appends to ``path``."""
    from nstore import connect, ureg

    driver = connect(daemon.endpoint, pipeline=pipeline)
    driver.append_variable(path, ureg.Quantity(1.5, "nanometer"))  # creates the variable, untimed
    if pipeline:
        driver.flush()
    value = ureg.Quantity(1.5, unit)
    append = driver.append_variable
    cpu0, t0 = daemon.cpu_seconds(), time.perf_counter()
    for _ in range(n):
        append(path, value)
    if pipeline:
        driver.flush()
    t1, cpu1 = time.perf_counter(), daemon.cpu_seconds()
    driver.close()
    return n / (t1 - t0), (cpu1 - cpu0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--unit", default="nanometer")
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode; the median is printed")
    args = parser.parse_args()
    with Daemon() as daemon:
        for mode, pipeline in (("synchronous", False), ("pipelined", True)):
            runs = [run(daemon, f"{mode}/q{k}", args.n, args.unit, pipeline) for k in range(args.repeat)]
            rate = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(f"{mode:12s} {args.unit}: {rate:9.0f} appends/s   daemon CPU {cpu:6.1f} us/append   "
                  f"(runs: {', '.join(f'{r[0]:.0f}' for r in runs)})")


if __name__ == "__main__":
    main()
