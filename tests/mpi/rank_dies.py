"""One rank dies mid-run: with ``python -m mpi4py`` the job aborts at once; the daemon keeps what it acknowledged.

    mpiexec -n 4 python -m mpi4py tests/mpi/rank_dies.py FILE [--steps N] [--rank0-in-with]

Every rank appends N entries (synchronously: each is acknowledged), then the
last rank raises while the others are already in the collective close. The
test driving this script checks the job ended quickly with a non-zero code,
then stops the surviving daemon and counts the entries.

With --rank0-in-with, rank 0 raises inside ``with open_store(...)``: leaving
the block by an exception closes only rank 0's connection and stops the daemon
it started (no collective call), then the exception aborts the job.
"""

from __future__ import annotations

import argparse

from mpi4py import MPI

from nstore.mpi import open_store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rank0-in-with", action="store_true")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if args.rank0_in_with:
        with open_store(args.file) as store:
            for i in range(args.steps):
                store.shared.append(rank * 1000 + i)
            comm.Barrier()
            if rank == 0:
                raise RuntimeError("rank 0 dies on purpose inside the with block")
        raise AssertionError("the collective close returned although rank 0 died")
    store = open_store(args.file)
    for i in range(args.steps):
        store.shared.append(rank * 1000 + i)
    comm.Barrier()
    if rank == size - 1:
        raise RuntimeError(f"rank {rank} dies on purpose")
    store.close()  # collective: the dead rank never arrives; MPI_Abort ends the wait
    raise AssertionError("the collective close returned although a rank died")


if __name__ == "__main__":
    main()
