"""Throughput across hosts: scalar appends over tcp + CurveZMQ between network namespaces, next to ipc.

    sudo python scripts/bench_hosts.py [--clients 1,4] [--ops-sync 6000] [--ops-pipelined 200000] [--repeat 3]

Root only: it builds the namespace hosts of the tests (tests/netns.py: head,
node1, node2 on a bridge, 10.213.7.0/24 only inside them). In the same run it
measures, for synchronous and pipelined clients (``connect(...,
pipeline=True)``, the final ``flush()`` timed), with 1 and 4 client processes:

* ``ipc``: daemon and clients on this host, the default ipc socket;
* ``tcp+curve loopback``: daemon and clients on this host, ``tcp://127.0.0.1``;
* ``tcp+curve hosts``: daemon on head, clients on node1 and node2 (alternately).

Each client appends floats to its own variable ``w{i}/x``; it connects and
creates its variable untimed, then waits for a start signal. Aggregate =
total ops / (last end - first start), CLOCK_MONOTONIC (one clock: the
namespaces share the kernel). Every daemon gets a fresh file and is stopped by
pid; the namespaces are removed at the end, also on errors. With ``--repeat N``
the median of N runs is shown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from daemons import Daemon, free_port  # noqa: E402 (the tests' helpers: real daemons, namespace hosts)
from netns import NetnsHosts  # noqa: E402

CLIENT_TIMEOUT_S = 300

CLIENT = r"""
import json, os, sys, time
from nstore import connect

cfg = json.loads(sys.argv[1])
drv = connect(cfg["endpoint"], keys=cfg["keys"], pipeline=cfg["pipeline"], timeout=60)
path = f"w{cfg['index']}/x"
drv.append_variable(path, 0.0)
drv.flush()
print("ready", flush=True)
while not os.path.exists(cfg["go"]):
    time.sleep(0.001)
start = time.monotonic()
for i in range(cfg["n"]):
    drv.append_variable(path, float(i))
drv.flush()
end = time.monotonic()
drv.close()
print(json.dumps({"start": start, "end": end}), flush=True)
"""


def run_clients(prefixes: list[list[str]], endpoint: str, keys: str | None, pipeline: bool, ops: int,
                workdir: str) -> float:
    """Aggregate ops/s of one client per prefix, ``ops`` appends in all, started together."""
    go = os.path.join(workdir, f"go-{time.monotonic_ns()}")
    per_client = ops // len(prefixes)
    processes = []
    try:
        for index, prefix in enumerate(prefixes):
            cfg = {"endpoint": endpoint, "keys": keys, "pipeline": pipeline, "index": index, "n": per_client,
                   "go": go}
            processes.append(subprocess.Popen([*prefix, sys.executable, "-c", CLIENT, json.dumps(cfg)],
                                              stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL))
        for process in processes:
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError(f"client {process.pid} failed to connect (exit {process.wait(timeout=10)})")
        open(go, "w").close()
        reports = []
        for process in processes:
            out, _ = process.communicate(timeout=CLIENT_TIMEOUT_S)
            if process.returncode != 0:
                raise RuntimeError(f"client {process.pid} failed (exit {process.returncode})")
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    span = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    return per_client * len(prefixes) / span


def measure(setup: dict, pipeline: bool, clients: int, ops: int, workdir: str) -> float:
    """One measurement on a fresh file and a fresh daemon (stopped by pid afterwards)."""
    file_name = os.path.join(workdir, f"run-{time.monotonic_ns()}.nc")
    daemon = Daemon(file_name, *setup["args"], endpoint=setup["endpoint"], prefix=setup["daemon_prefix"])
    try:
        prefixes = [setup["client_prefixes"][i % len(setup["client_prefixes"])] for i in range(clients)]
        return run_clients(prefixes, daemon.endpoint, setup["keys"], pipeline, ops, workdir)
    finally:
        daemon.stop()


def setups(hosts: NetnsHosts, keys: str) -> dict[str, dict]:
    loopback = f"tcp://127.0.0.1:{free_port('127.0.0.1')}"
    return {
        "ipc": {"endpoint": None, "args": (), "keys": None, "daemon_prefix": (), "client_prefixes": [[]]},
        "tcp+curve loopback": {"endpoint": loopback, "args": ("--keys", keys), "keys": keys, "daemon_prefix": (),
                               "client_prefixes": [[]]},
        "tcp+curve hosts": {"endpoint": f"tcp://{hosts.addresses['head']}:5555", "args": ("--keys", keys),
                            "keys": keys, "daemon_prefix": hosts.prefix("head"),
                            "client_prefixes": [hosts.prefix("node1"), hosts.prefix("node2")]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4")
    parser.add_argument("--ops-sync", type=int, default=6000)
    parser.add_argument("--ops-pipelined", type=int, default=200000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_hosts.py needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    clients = [int(c) for c in args.clients.split(",")]
    workdir = tempfile.mkdtemp(prefix="nstore-bench-hosts-")
    keys = os.path.join(workdir, "keys")
    subprocess.run([sys.executable, "-m", "nstore.daemon.cli", "keygen", keys], check=True, capture_output=True,
                   timeout=60)
    hosts = NetnsHosts(["head", "node1", "node2"], tag=f"nstore-bench-{os.getpid()}")
    try:
        print(f"load average {os.getloadavg()[0]:.2f}; median of {args.repeat} interleaved rounds; "
              f"scalar appends, aggregate ops/s")
        transports = setups(hosts, keys)
        cases = [(name, setup, pipeline, c) for name, setup in transports.items()
                 for pipeline in (False, True) for c in clients]
        rates: dict[tuple, list[float]] = {}
        for _ in range(args.repeat):  # round-robin, so load changes hit every case alike
            for name, setup, pipeline, c in cases:
                ops = args.ops_pipelined if pipeline else args.ops_sync
                rates.setdefault((name, pipeline, c), []).append(measure(setup, pipeline, c, ops, workdir))
        print(f"{'transport':<20} {'mode':<10} " + " ".join(f"{f'x{c}':>10}" for c in clients))
        for name in transports:
            for pipeline in (False, True):
                row = [statistics.median(rates[(name, pipeline, c)]) for c in clients]
                mode = "pipelined" if pipeline else "sync"
                print(f"{name:<20} {mode:<10} " + " ".join(f"{v:>10,.0f}" for v in row), flush=True)
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
    finally:
        problems = hosts.remove()
        subprocess.run(["rm", "-rf", workdir], timeout=60)
        for problem in problems:
            print(f"cleanup: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
