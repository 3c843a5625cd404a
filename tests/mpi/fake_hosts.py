"""Ranks that report different host names: open_store must choose tcp + CurveZMQ, bound beyond loopback.

    mpiexec -n 4 python -m mpi4py tests/mpi/fake_hosts.py FILE

All ranks really run on this machine; ranks other than 0 pretend (through
``MPI.Get_processor_name``) to run on other nodes. Checks: multi_node=False
raises the same error on every rank; the default picks tcp, binds every
interface with generated keys, and gives the ranks rank 0's host name to
connect to; appends from every rank arrive; close stops the daemon.
"""

from __future__ import annotations

import argparse

from mpi4py import MPI

from nstore.mpi import MPIStoreError, open_store, session_info
from nstore.protocol.endpoints import pid_alive, read_lock


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    real_host = MPI.Get_processor_name()
    if rank != 0:
        MPI.Get_processor_name = lambda: f"othernode{rank}"  # open_store imports MPI and calls it

    try:
        open_store(args.file, multi_node=False)
    except MPIStoreError as exc:
        assert "ipc reaches one host only" in str(exc), exc
        assert len(set(comm.allgather(str(exc)))) == 1
    else:
        raise AssertionError("multi_node=False across hosts did not raise")

    store = open_store(args.file)
    info = session_info(store)
    assert info["mode"] == "tcp" and info["endpoint"].startswith(f"tcp://{real_host}:"), info
    assert info["keys"], info
    lock = read_lock(args.file)
    assert lock["endpoint"].startswith("tcp://0.0.0.0:"), lock  # bound beyond loopback: keys required
    pid = store.storage_driver.daemon_pid
    for i in range(20):
        store.shared.append(rank * 100 + i)
    store.close()
    assert not pid_alive(pid)
    if rank == 0:
        from nstore import NetCDFIODriver, StorageInterface

        reader = StorageInterface(NetCDFIODriver(args.file))
        values = sorted(int(v) for v in reader.shared.read())
        reader.close()
        assert values == sorted(r * 100 + i for r in range(size) for i in range(20)), values
        print(f"OK fake hosts: tcp via {info['endpoint']} (bound {lock['endpoint']}), {len(values)} entries", flush=True)


if __name__ == "__main__":
    main()
