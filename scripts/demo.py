"""The main job: 8 worker processes write one NetCDF file through nstored.

Starts a daemon for a new file (``connect(..., spawn=True)``), runs 8
multiprocessing workers that each append unit-carrying energies and (N, 3)
position arrays every step, write a parameter dict and metadata once; then
reads everything back, checks it, prints a summary and the file's tree, and
stops the daemon.

    python scripts/demo.py [--workers 8] [--steps 500] [--atoms 64] [--file demo.nc]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from nstore import StorageInterface, connect, ureg
from nstore.inspect import tree


def worker(file_name: str, replica: int, steps: int, atoms: int) -> float:
    """One replica: returns the seconds its writes took."""
    store = StorageInterface(connect(file_name))
    group = store[f"replica{replica}"]
    rng = np.random.default_rng(replica)
    group.parameters.write({"temperature": (300 + 10 * replica) * ureg.kelvin, "timestep": 2.0 * ureg.fs,
                            "seed": replica, "integrator": "langevin", "collision_rate": 1.0 / ureg.ps})
    group.add_metadata("replica_index", replica)
    start = time.perf_counter()
    for step in range(steps):
        group.energy.append(float(-1000.0 + rng.normal()) * ureg.kilojoule / ureg.mole)
        group.positions.append(rng.random((atoms, 3)).astype(np.float32) * ureg.nanometer)
        store.all_energies.append(float(replica * 1_000_000 + step))  # one shared variable for all workers
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--atoms", type=int, default=64)
    parser.add_argument("--file", help="output file (default: a new file in a temp dir)")
    args = parser.parse_args()
    file_name = args.file or os.path.join(tempfile.mkdtemp(prefix="nstore-demo-"), "demo.nc")
    if os.path.exists(file_name):
        os.remove(file_name)

    driver = connect(file_name, spawn=True)
    print(f"nstored pid {driver.daemon_pid} serves {driver.file_name} at {driver.endpoint}")
    store = StorageInterface(driver)
    store.add_metadata("title", "nstore demo: replicas writing one file")

    wall = time.perf_counter()
    with mp.get_context("fork").Pool(args.workers) as pool:
        busy = pool.starmap(worker, [(file_name, r, args.steps, args.atoms) for r in range(args.workers)])
    wall = time.perf_counter() - wall

    ops = args.workers * args.steps * 3
    status = driver.status()
    print(f"\n{args.workers} workers x {args.steps} steps: {ops} appends in {wall:.2f} s "
          f"= {ops / wall:,.0f} appends/s aggregate ({status['bytes_written'] / wall / 1e6:.1f} MB/s)")

    # Read back and check: every entry exactly once, in each worker's order.
    shared = store.all_energies.read()
    assert len(shared) == args.workers * args.steps, "shared variable lost or doubled entries"
    for r in range(args.workers):
        mine = shared[(shared // 1_000_000) == r] - r * 1_000_000
        assert mine.tolist() == list(range(args.steps)), f"replica {r}: entries out of order or missing"
        group = store[f"replica{r}"]
        assert group.energy.read().magnitude.shape == (args.steps,)
        assert group.positions.read(-1).shape == (args.atoms, 3)
        assert group.parameters.read()["seed"] == r
    print("read back: every entry present exactly once, each worker's entries in order")

    print("\nentries per variable:")
    for name in ("all_energies", "replica0/energy", "replica0/positions"):
        print(f"  {name:<20} {len(store[name].read()):>8}")
    store.sync()
    print(f"\nfile size: {os.path.getsize(file_name) / 1e6:.2f} MB")
    print("\n" + tree(driver))
    driver.close()

    stopped = subprocess.run([sys.executable, "-m", "nstore.daemon.cli", "stop", file_name], capture_output=True, text=True)
    print("\n" + (stopped.stdout or stopped.stderr).strip())
    return stopped.returncode


if __name__ == "__main__":
    sys.exit(main())
