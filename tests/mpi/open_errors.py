"""open_store failures must raise the same MPIStoreError on every rank, quickly, never hang.

    mpiexec -n 4 python -m mpi4py tests/mpi/open_errors.py CASE FILE [KEYS] [--catch] [--expect TEXT]

CASE: ``nodir`` (FILE's directory does not exist), ``keys`` (multi_node=True
with the keys directory KEYS: missing, or holding bad keys the daemon rejects).
With --catch every rank catches the error, the ranks compare their messages,
and rank 0 prints it; without, the error is left uncaught, so ``-m mpi4py``
aborts the job with a non-zero exit code.
"""

from __future__ import annotations

import argparse

from mpi4py import MPI

from nstore.mpi import MPIStoreError, open_store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["nodir", "keys"])
    parser.add_argument("file")
    parser.add_argument("keys", nargs="?")
    parser.add_argument("--catch", action="store_true")
    parser.add_argument("--expect", default="")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    kwargs = {"multi_node": True, "keys": args.keys} if args.case == "keys" else {}

    if not args.catch:
        open_store(args.file, **kwargs)
        raise AssertionError("open_store did not raise")

    try:
        open_store(args.file, **kwargs)
    except MPIStoreError as exc:
        message = str(exc)
    else:
        raise AssertionError("open_store did not raise")
    messages = comm.allgather(message)
    assert len(set(messages)) == 1, f"ranks raised different errors: {messages}"
    assert args.expect in message, f"{args.expect!r} not in {message!r}"
    if comm.Get_rank() == 0:
        print(f"ALL {comm.Get_size()} RANKS RAISED: {message}", flush=True)


if __name__ == "__main__":
    main()
