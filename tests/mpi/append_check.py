"""Every rank appends to shared and per-rank variables through nstore.mpi; rank 0 checks the file after close.

    mpiexec -n 4 python -m mpi4py tests/mpi/append_check.py FILE [--multi-node | --across-hosts] [--pipeline]
        [--steps N] [--context] [--expect-started 0|1] [--keys DIR] [--daemon-host HOST]

Checks: every entry of the shared variable exactly once, each rank's entries in
that rank's order; per-rank variables complete and in order; the transport
chosen (ipc, or tcp + CurveZMQ on loopback with --multi-node, or to rank 0's
host name -- or --daemon-host -- with --across-hosts); after the
collective close the daemon rank 0 started is gone and temp keys are removed
(or, with --expect-started 0, the daemon someone else started still runs).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from mpi4py import MPI

from nstore import NetCDFIODriver, StorageInterface, ureg
from nstore.mpi import close, open_store, session_info
from nstore.protocol.endpoints import pid_alive, read_lock

ATOMS = 5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--multi-node", action="store_true")
    parser.add_argument("--across-hosts", action="store_true",
                        help="ranks run on several hosts (tests/test_netns.py): expect tcp + keys to rank 0's host")
    parser.add_argument("--pipeline", action="store_true")
    parser.add_argument("--keys", help="an `nstored keygen` directory for open_store (default: generated)")
    parser.add_argument("--daemon-host", help="with --across-hosts: the host of a daemon someone else started")
    parser.add_argument("--context", action="store_true", help="use `with open_store(...)`")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--expect-started", type=int, default=1)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, size, steps = comm.Get_rank(), comm.Get_size(), args.steps

    store = open_store(args.file, multi_node=True if args.multi_node else None, pipeline=args.pipeline, timeout=60,
                       keys=args.keys)
    info = session_info(store)
    infos = comm.allgather((info["endpoint"], info["mode"]))
    assert len(set(infos)) == 1, f"ranks connected to different daemons: {infos}"
    hosts = comm.allgather(MPI.Get_processor_name())
    if args.across_hosts:
        assert len(set(hosts)) > 1, f"all ranks on one host: {hosts}"
        assert info["mode"] == "tcp" and info["endpoint"].startswith(f"tcp://{args.daemon_host or hosts[0]}:"), info
        assert info["keys"] and os.path.isfile(os.path.join(info["keys"], "client.key_secret")), info
        keys_dir = None if args.keys else info["keys"]  # generated keys are removed at close
    elif args.multi_node:
        assert info["mode"] == "tcp" and info["endpoint"].startswith("tcp://127.0.0.1:"), info
        assert info["keys"] and os.path.isfile(os.path.join(info["keys"], "client.key_secret")), info
        keys_dir = info["keys"]
    else:
        assert info["mode"] == "ipc" and info["endpoint"].startswith("ipc://"), info
        keys_dir = None
    if rank == 0:
        assert info["started"] == bool(args.expect_started), info
    daemon_pid = store.storage_driver.daemon_pid
    assert len(set(comm.allgather(daemon_pid))) == 1

    def work(store):
        mine = store[f"rank{rank}"]
        mine.parameters.write({"rank": rank, "temperature": (300.0 + 10 * rank) * ureg.kelvin})
        mine.add_metadata("rank", rank)
        rng = np.random.default_rng(rank)
        indices = []
        for i in range(steps):
            store.shared.append(float(rank * 1_000_000 + i))
            indices.append(mine.step.append(i))
            mine.energy.append((-100.0 - i) * ureg.kilojoule / ureg.mole)
            mine.positions.append(rng.random((ATOMS, 3)).astype(np.float32) * ureg.nanometer)
        # the per-rank variable has one writer, so its indices are exactly 0..steps-1
        assert [int(ix) for ix in indices] == list(range(steps)), indices[:10]

    if args.context:
        with store:
            work(store)
    else:
        work(store)
        close(store, comm)

    # After the collective close: the daemon we started is gone and the file complete.
    if keys_dir is not None and rank == 0:
        assert not os.path.exists(keys_dir), f"temp keys {keys_dir} left behind"
    if args.expect_started:
        assert not pid_alive(daemon_pid), f"nstored pid {daemon_pid} still runs after close"
        assert read_lock(args.file) is None, "lock file left behind"
    else:
        assert pid_alive(daemon_pid), "close() stopped a daemon it did not start"
    comm.Barrier()
    if rank != 0:
        return

    if args.expect_started:  # daemon gone: read the file in-process
        reader = StorageInterface(NetCDFIODriver(args.file))
    else:
        from nstore import connect
        reader = StorageInterface(connect(args.file, keys=args.keys))
    shared = np.asarray(reader.shared.read())
    assert shared.shape == (size * steps,), shared.shape
    assert len(set(shared.tolist())) == size * steps, "an entry landed twice"
    for r in range(size):
        theirs = (shared[(shared // 1_000_000) == r] - r * 1_000_000).astype(int).tolist()
        assert theirs == list(range(steps)), f"rank {r}: {theirs[:10]}..."
        group = reader[f"rank{r}"]
        assert np.asarray(group.step.read()).tolist() == list(range(steps))
        energy = group.energy.read()
        assert str(energy.units) == "kilojoule / mole", energy.units
        assert np.allclose(energy.magnitude, -100.0 - np.arange(steps))
        positions = group.positions.read()
        assert positions.magnitude.shape == (steps, ATOMS, 3), positions.magnitude.shape
        expected = np.random.default_rng(r).random((ATOMS, 3)).astype(np.float32)
        assert np.array_equal(positions.magnitude[0], expected)
        params = group.parameters.read()
        assert params["rank"] == r and params["temperature"] == (300.0 + 10 * r) * ureg.kelvin, params
        assert group.metadata["rank"] == r
    reader.close()
    print(f"OK {size} ranks x {steps} steps via {info['mode']} ({info['endpoint']}): "
          f"{size * steps} shared entries, each once, per-rank order kept; hosts {','.join(hosts)}", flush=True)


if __name__ == "__main__":
    main()
