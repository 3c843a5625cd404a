"""Replica exchange, MPI-shaped: every rank is one replica, all ranks write one NetCDF file through nstored.

    mpiexec -n 4 python -m mpi4py scripts/mpi_demo.py [--iterations 200] [--atoms 256] [--pipeline] [--file F]

Each rank simulates one replica (a random walk stands in for the dynamics) and,
every iteration, appends its reduced potential energy (kJ/mol), its positions
(an (atoms, 3) array in nm) and its thermodynamic state index. Rank 0 then
attempts Metropolis swaps between neighbouring temperatures, as a replica
exchange driver would, broadcasts the new state assignment, and appends an
acceptance dict for the iteration. ``nstore.mpi.open_store`` starts the
daemon (rank 0) and connects every rank; the collective close stops it.
At the end rank 0 prints ranks, operations, throughput and the file's tree.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import numpy as np
from mpi4py import MPI

from nstore import ureg
from nstore.inspect import tree
from nstore.mpi import open_store, session_info

KB = 0.0083144626  # kJ/(mol K)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--atoms", type=int, default=256)
    parser.add_argument("--pipeline", action="store_true", help="pipelined writes (no wait per op)")
    parser.add_argument("--multi-node", action="store_true", help="force tcp + CurveZMQ even on one host")
    parser.add_argument("--file", help="output file (default: a new file in a temp dir)")
    args = parser.parse_args()

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    file_name = args.file
    if rank == 0 and file_name is None:
        file_name = os.path.join(tempfile.mkdtemp(prefix="nstore-mpi-demo-"), "rex.nc")
    file_name = comm.bcast(file_name, root=0)

    temperatures = [300.0 * (1.1 ** k) for k in range(size)] * ureg.kelvin  # a geometric ladder
    store = open_store(file_name, multi_node=True if args.multi_node else None, pipeline=args.pipeline)
    info = session_info(store)
    hosts = set(comm.allgather(MPI.Get_processor_name()))
    if rank == 0:
        print(f"{size} ranks on {len(hosts)} host(s); "
              f"nstored pid {store.storage_driver.daemon_pid} via {info['mode']} {info['endpoint']}", flush=True)
        store.add_metadata("title", "nstore MPI demo: replica exchange")
        store.thermodynamic_states.temperatures.write(temperatures)

    me = store[f"replicas/replica{rank}"]
    rng = np.random.default_rng(rank)
    positions = rng.random((args.atoms, 3)).astype(np.float32)
    state = rank  # replica r starts in state r
    betas = [1.0 / (KB * t) for t in temperatures.magnitude]
    ops = 0
    attempted = accepted = 0
    comm.Barrier()
    start = time.perf_counter()
    for iteration in range(args.iterations):
        positions += rng.normal(scale=0.01, size=positions.shape).astype(np.float32)  # "dynamics"
        energy = float(-500.0 + 5.0 * rng.normal() + 0.05 * temperatures.magnitude[state])
        me.energy.append(energy * ureg.kilojoule / ureg.mole)
        me.positions.append(positions * ureg.nanometer)
        me.state.append(state)
        ops += 3
        # exchange: rank 0 swaps neighbouring states by the Metropolis criterion
        energies = comm.gather((state, energy), root=0)
        if rank == 0:
            by_state = {s: (r, e) for r, (s, e) in enumerate(energies)}
            assignment = [s for s, _ in energies]
            swaps, pairs = [], range(iteration % 2, size - 1, 2)  # alternate even/odd neighbour pairs
            for k in pairs:
                (ri, ei), (rj, ej) = by_state[k], by_state[k + 1]
                log_p = (betas[k] - betas[k + 1]) * (ei - ej)
                attempted += 1
                if log_p >= 0 or rng.random() < math.exp(log_p):
                    accepted += 1
                    assignment[ri], assignment[rj] = k + 1, k
                    swaps.append([k, k + 1])
            store.mixing.acceptance.append({"iteration": iteration, "attempted": len(pairs),
                                            "accepted": len(swaps), "swaps": swaps})
            ops += 1
        else:
            assignment = None
        state = comm.scatter(assignment, root=0)
    me.add_metadata("rank", rank)  # after the first append: the group exists (see the report on pipelining)
    store.storage_driver.flush()
    comm.Barrier()
    wall = time.perf_counter() - start
    total_ops = comm.reduce(ops, root=0)

    if rank == 0:
        status = store.storage_driver.status()
        mb = status["bytes_written"] / 1e6
        print(f"{size} replicas x {args.iterations} iterations ({args.atoms} atoms, "
              f"{'pipelined' if args.pipeline else 'synchronous'}): {total_ops} ops in {wall:.2f} s = "
              f"{total_ops / wall:,.0f} ops/s aggregate, {mb / wall:.1f} MB/s written")
        print(f"swap acceptance: {accepted}/{attempted} = {accepted / max(attempted, 1):.2f}")
        print(tree(store.storage_driver), flush=True)
    store.close()  # collective: everything flushed, then rank 0 stops the daemon
    if rank == 0:
        print(f"file {file_name}: {os.path.getsize(file_name) / 1e6:.2f} MB, daemon stopped")


if __name__ == "__main__":
    main()
