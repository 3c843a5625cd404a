"""Sharding by file: a sub-communicator per replica group, each group with its own file and daemon.

    mpiexec -n 4 python -m mpi4py tests/mpi/split_groups.py DIR

Ranks split into two groups (even/odd world rank); each group calls
``open_store(DIR/groupG.nc, comm=group_comm)``, so two daemons run at once.
Each group's rank 0 checks its own file after the collective close.
"""

from __future__ import annotations

import argparse
import os

from mpi4py import MPI

from nstore.mpi import open_store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    args = parser.parse_args()
    world = MPI.COMM_WORLD
    color = world.Get_rank() % 2
    group = world.Split(color=color, key=world.Get_rank())
    file_name = os.path.join(args.directory, f"group{color}.nc")
    with open_store(file_name, comm=group) as store:
        pids = world.allgather(store.storage_driver.daemon_pid)
        assert len(set(pids)) == 2, f"expected one daemon per group: {pids}"
        for i in range(10):
            store.walkers.append(world.Get_rank() * 100 + i)
    if group.Get_rank() == 0:
        from nstore import NetCDFIODriver, StorageInterface

        reader = StorageInterface(NetCDFIODriver(file_name))
        values = sorted(int(v) for v in reader.walkers.read())
        reader.close()
        members = [r for r in range(world.Get_size()) if r % 2 == color]
        assert values == sorted(r * 100 + i for r in members for i in range(10)), values
        print(f"OK group{color}: {len(values)} entries from world ranks {members}", flush=True)
    group.Free()


if __name__ == "__main__":
    main()
