"""Open one nstore file from every rank of an MPI job: ``nstore.mpi.open_store``.

    from nstore.mpi import open_store

    with open_store("run.nc") as store:          # collective: every rank calls it
        store[f"replica{rank}"].energy.append(e)  # any rank, any time
    # collective close: every rank flushed, then rank 0 stopped the daemon it started

Run the job with ``mpiexec -n N python -m mpi4py job.py``. Install with
``pip install nstore[mpi]``.

What ``open_store`` does, and why:

* **One daemon, started once.** Rank 0 looks for an ``nstored`` already serving
  the file and otherwise starts one (``nstored start``). Only one process may
  own a NetCDF file, and only one rank should try to create it, so every other
  rank just waits for rank 0's answer.
* **ipc or tcp, from the hostnames.** The ranks allgather
  ``MPI.Get_processor_name()``. All on one host: the daemon's private ipc
  socket (fastest, no network). Ranks on several hosts, or ``multi_node=True``:
  tcp with CurveZMQ keys, because a tcp port on a cluster network is reachable
  by other users. ``multi_node=True`` on one host binds ``tcp://127.0.0.1`` (still
  with keys, so the Curve path is exercised); across hosts the daemon binds every
  interface (or ``host``) and ranks connect to rank 0's host name (or ``host``).
* **Keys travel over MPI.** Unless ``keys`` names an ``nstored keygen``
  directory, rank 0 generates a key set in a private temporary directory and
  broadcasts the client key and the server's public key; a rank that cannot see
  the same files (another node, no shared /tmp) writes them into a private
  temporary directory of its own. MPI is the job's trusted channel.
* **Errors are collective.** If rank 0 cannot start the daemon, it broadcasts
  the error, and every rank raises the same :class:`MPIStoreError` (no rank is
  left waiting in a collective). If any rank then fails to connect, every rank
  closes, rank 0 stops the daemon it started, and every rank raises the same
  error listing the failed ranks.
* **Scrubbed environment.** The daemon is started with the launcher's
  ``PMI_*``/``PMIX_*``/``OMPI_*``/``PRTE_*``/``HYDRA_*``/``MPI_LOCAL*`` variables
  removed: a child that inherits them is taken for a rank by the MPI runtime
  (MPICH: ``PMI_Init`` fails; Open MPI: the parent rank crashes).

When a rank dies: launched with ``python -m mpi4py``, an uncaught exception
on any rank calls ``MPI_Abort`` and the whole job ends at once (without
``-m mpi4py`` the other ranks would wait forever in the next collective). The
daemon runs in its own session, so it outlives an aborted job: everything it
acknowledged is in the file or its journal, nothing is lost or corrupted. Stop
it with ``nstored stop FILE`` (tcp: ``nstored stop FILE --keys DIR``, or
``kill PID``; SIGTERM drains and checkpoints). A later ``open_store`` on the
same file finds and reuses a still-running ipc daemon (and leaves it running,
since it did not start it). Leaving a ``with open_store(...)`` block by an
exception closes only this rank's connection (no collective call, so it cannot
deadlock) and, on rank 0, stops the daemon it started.

mpi4py is imported only here: ``import nstore`` never loads MPI.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from nstore.protocol.transport import verify_serves

from .mpi_daemon import rank_keys, rank0_prepare, remove_dirs, stop_daemon, scrubbed_env
from .connecting import connect
from .remote import RemoteDriver
from .storage import StorageInterface

__all__ = ["open_store", "close", "MPIStore", "MPIStoreError", "scrubbed_env"]



class MPIStoreError(RuntimeError):
    """Opening (or closing) the store failed; raised identically on every rank."""


@dataclass
class _Session:
    """What a rank needs to close collectively."""

    comm: Any
    endpoint: str
    file_name: str
    mode: str  # "ipc" or "tcp"
    started: bool  # rank 0 started the daemon (so rank 0 stops it)
    keys: str | None = None  # keys dir this rank connects with
    keys_for_stop: str | None = None  # rank 0: keys to talk to the daemon
    owned_dirs: list[str] = field(default_factory=list)  # temp key dirs this rank removes
    closed: bool = False

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()


class MPIStore(StorageInterface):
    """A :class:`~nstore.StorageInterface` opened by :func:`open_store` on every rank.

    It behaves like any store, except that :meth:`close` (and leaving a
    ``with`` block normally) is collective. ``endpoint`` and ``mode`` are not
    attributes (they would hide stored groups of that name): see
    ``store.storage_driver.endpoint`` and :func:`session_info`.
    """

    _mpi: _Session

    def close(self) -> None:
        """Collective: every rank flushes and closes, then rank 0 stops the daemon it started.

        Returns on every rank only once the daemon has stopped (or was left to
        its owner), so the file is complete and closed when ``close`` returns.
        Raises this rank's own pipelined-write error, if any; raises
        :class:`MPIStoreError` on every rank if stopping the daemon failed.
        """
        session = self._mpi
        if session.closed:
            return
        session.closed = True
        local_error: BaseException | None = None
        try:
            self.storage_driver.close()  # flush: every pipelined op acknowledged
        except Exception as exc:
            local_error = exc
        session.comm.Barrier()  # nobody writes any more
        stop_error = stop_daemon(session) if session.rank == 0 else None
        stop_error = session.comm.bcast(stop_error, root=0)
        remove_dirs(session)
        if local_error is not None:
            raise local_error
        if stop_error:
            raise MPIStoreError(stop_error)

    def _abandon(self) -> None:
        """Non-collective close after an error: this rank's connection; on rank 0, the daemon it started.

        Used when a ``with`` block ends by an exception, where other ranks may
        not reach a collective call. Errors are reported on stderr, not raised.
        """
        session = self._mpi
        if session.closed:
            return
        session.closed = True
        try:
            self.storage_driver.close()
        except Exception as exc:
            print(f"nstore.mpi: rank {session.rank}: closing after an error: {exc}", file=sys.stderr)
        if session.rank == 0:
            message = stop_daemon(session)
            if message:
                print(f"nstore.mpi: {message}", file=sys.stderr)
        remove_dirs(session)

    def __enter__(self) -> "MPIStore":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abandon()

    def __repr__(self) -> str:
        s = self._mpi
        return f"<MPIStore {s.file_name!r} via {s.endpoint} (rank {s.rank}/{s.comm.Get_size()})>"


def session_info(store: MPIStore) -> dict:
    """``{endpoint, mode, started, keys, file_name}`` of a store from :func:`open_store` (for logs and tests)."""
    s = store._mpi
    return {"endpoint": s.endpoint, "mode": s.mode, "started": s.started, "keys": s.keys, "file_name": s.file_name}


def close(store: MPIStore, comm: Any = None) -> None:
    """Collective close of a store from :func:`open_store` (same as ``store.close()``).

    ``comm``, if given, must be the communicator the store was opened with:
    closing is collective over exactly those ranks.
    """
    if comm is not None and comm != store._mpi.comm:
        raise ValueError("close(store, comm): comm is not the communicator the store was opened with")
    store.close()


def open_store(file_name: str, comm: Any = None, *, multi_node: bool | None = None, keys: str | None = None,
               pipeline: bool = False, host: str | None = None, **connect_kwargs: Any) -> MPIStore:
    """Collective: a store on ``file_name`` for every rank of ``comm`` (default ``COMM_WORLD``).

    Rank 0 reuses the nstored serving the file or starts one; every rank
    connects to it. ``multi_node``: None decides from the ranks' host names
    (ipc on one host, tcp with CurveZMQ keys across hosts); True forces tcp
    (bound to loopback when all ranks share one host); False forces ipc and
    raises if the ranks span hosts. ``keys``: an ``nstored keygen`` directory
    to use for tcp (default: a fresh key set in a private temp dir, removed at
    close). ``host``: for tcp across hosts, the address to bind and to give the
    other ranks (default: bind every interface, connect to rank 0's host
    name). ``pipeline`` and ``connect_kwargs`` (``timeout``,
    ``connect_timeout``, ``grace``) go to :func:`nstore.connect`.

    Raises :class:`MPIStoreError` with the same message on every rank when the
    daemon cannot be started or a rank cannot connect.
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm
    rank = comm.Get_rank()
    hosts = comm.allgather(MPI.Get_processor_name())
    one_host = len(set(hosts)) == 1
    if multi_node is False and not one_host:
        raise MPIStoreError(f"multi_node=False, but the ranks run on {len(set(hosts))} hosts "
                            f"({', '.join(sorted(set(hosts)))}); ipc reaches one host only")
    mode = "tcp" if (multi_node or not one_host) else "ipc"

    # Phase 1, rank 0 alone: find or start the daemon; everyone learns the outcome.
    plan: dict | None = None
    if rank == 0:
        try:
            plan = rank0_prepare(file_name, mode, one_host, hosts[0], host, keys, connect_kwargs)
        except Exception as exc:  # any failure: tell the other ranks instead of leaving them in bcast
            plan = {"error": f"rank 0 could not start nstored for {file_name}: {exc}"}
            comm.bcast(plan, root=0)
            raise MPIStoreError(plan["error"]) from exc
    plan = comm.bcast(plan, root=0)
    if "error" in plan:
        raise MPIStoreError(plan["error"])

    return _connect_all(comm, plan, pipeline, connect_kwargs)


def _connect_all(comm: Any, plan: dict, pipeline: bool, connect_kwargs: dict) -> MPIStore:
    """Phase 2, every rank: connect; any failure anywhere fails every rank the same way."""
    rank = comm.Get_rank()
    session = _Session(comm=comm, endpoint=plan["endpoint"], file_name=plan["file_name"], mode=plan["mode"],
                       started=plan["started"] and rank == 0, keys_for_stop=plan.get("keys_dir") if rank == 0 else None)
    if rank == 0 and plan.get("generated_keys"):
        session.owned_dirs.append(plan["keys_dir"])
    driver: RemoteDriver | None = None
    error = None
    try:
        session.keys = rank_keys(plan, session)
        driver = connect(plan["endpoint"], keys=session.keys, pipeline=pipeline, **connect_kwargs)
        verify_serves(driver.identity, plan["identity"], plan["endpoint"])  # the daemon rank 0 found
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    errors = comm.allgather(error)
    failed = [(r, e) for r, e in enumerate(errors) if e]
    if failed:
        if driver is not None:
            try:
                driver.close()
            except Exception:
                pass
        if rank == 0:
            stop_daemon(session)
        remove_dirs(session)
        shown = "; ".join(f"rank {r}: {e}" for r, e in failed[:4]) + (" ..." if len(failed) > 4 else "")
        raise MPIStoreError(f"{len(failed)} of {comm.Get_size()} ranks could not connect to nstored at "
                            f"{plan['endpoint']} for {plan['file_name']}: {shown}")
    store = MPIStore(driver)
    store._mpi = session
    return store
