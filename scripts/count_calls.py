"""Python calls the daemon makes per synchronous append (cProfile primitive calls).

Runs ``Server`` in this process under cProfile while a child process makes N
synchronous scalar appends over ipc; does this for two values of N and
reports (calls(N2) - calls(N1)) / (N2 - N1), so start-up and shutdown cancel.

    python scripts/count_calls.py [--n1 200] [--n2 2200] [--pipelined]
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import pstats
import tempfile


def _client(endpoint: str, n: int, pipeline: bool) -> None:
    from nstore import connect

    driver = connect(endpoint, timeout=30, pipeline=pipeline)
    for k in range(n):
        driver.append_variable("x", float(k))
    driver.close()
    from nstore.protocol.transport import call

    call(endpoint, "shutdown", timeout=30)


def daemon_calls(n: int, pipeline: bool = False) -> int:
    """Primitive Python calls of a daemon serving ``n`` synchronous appends (plus start-up/stop)."""
    from nstore.daemon.server import Server

    with tempfile.TemporaryDirectory(prefix="ncc") as workdir:
        endpoint = f"ipc://{workdir}/d.sock"
        server = Server(os.path.join(workdir, "run.nc"), endpoint)
        child = multiprocessing.get_context("spawn").Process(target=_client, args=(endpoint, n, pipeline))
        child.start()
        profile = cProfile.Profile()
        profile.enable()
        server.serve_forever()  # until the client's shutdown request
        profile.disable()
        child.join(60)
    return pstats.Stats(profile).prim_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n1", type=int, default=200)
    parser.add_argument("--n2", type=int, default=2200)
    parser.add_argument("--pipelined", action="store_true", help="pipelined appends (batching varies run to run)")
    args = parser.parse_args()
    low, high = daemon_calls(args.n1, args.pipelined), daemon_calls(args.n2, args.pipelined)
    mode = "pipelined" if args.pipelined else "synchronous"
    print(f"daemon calls: {low} for {args.n1} appends, {high} for {args.n2}; "
          f"per {mode} append: {(high - low) / (args.n2 - args.n1):.1f}")


if __name__ == "__main__":
    main()
