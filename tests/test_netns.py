"""Many hosts for real: nstored on one network namespace, clients and MPI ranks on others.

The ``hosts`` fixture (tests/netns.py) builds three "machines" -- head, node1,
node2 -- each a network namespace with its own host name and one veth link to
a bridge in a namespace of its own, on 10.213.7.0/24, which exists only
inside them. Programs run on a host through ``hosts.prefix(name)``. The
daemon serves ``tcp://<head address>:5555`` from the head; clients on the
nodes reach it over the bridge, never over loopback. Files live in tmp_path
(one file system, as on a cluster with a shared one).

Creating namespaces needs root. CI runs as root, so there these tests must run:
they fail (not skip) when the namespaces cannot be made; only a non-root run
outside CI (``CI`` unset) skips them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from nstore import NetCDFIODriver
from nstore.linkwatch import HEARTBEAT_IVL_S, HEARTBEAT_TIMEOUT_S
from nstore.protocol.endpoints import read_lock

from netns import NetnsHosts
from test_durability import WAIT_S, check_against_file, workers  # noqa: F401 (fixture)
from test_mpi import HERE, run_mpi, workdir  # noqa: F401 (fixture)

HOSTS = ["head", "node1", "node2"]
PORT = 5555  # free by construction: the head namespace is new
CLIENT_TIMEOUT_S = 60


@pytest.fixture
def hosts():
    """Three namespace hosts on one bridge; all removed afterwards, also when the test fails."""
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("network namespaces need root (CI runs these tests as root)")
    try:
        made = NetnsHosts(HOSTS)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"cannot create the network namespaces the multi-host tests need: {exc}", pytrace=False)
    yield made
    problems = made.remove()
    assert not problems, problems


@pytest.fixture
def keys(tmp_path) -> str:
    directory = str(tmp_path / "keys")
    made = nstored("keygen", directory)
    assert made.returncode == 0, made.stderr
    return directory


def nstored(*args: str, prefix: list[str] | tuple = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "nstore.daemon.cli", *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def head_endpoint(hosts: NetnsHosts) -> str:
    return f"tcp://{hosts.addresses['head']}:{PORT}"


# --- clients on two nodes, daemon on the head ---------------------------------------------------

CLIENT = r"""
import json, socket, sys
from nstore import connect

cfg = json.loads(sys.argv[1])
cid, n = cfg["cid"], cfg["n"]
try:
    drv = connect(cfg["endpoint"], keys=cfg["keys"], pipeline=cfg["pipeline"], timeout=30, connect_timeout=5,
                  grace=0)
except ConnectionError as exc:
    print(json.dumps({"host": socket.gethostname(), "refused": str(exc)}))
    sys.exit(0)
indices = []
for k in range(n):
    indices.append(drv.append_variable("shared/log", float(cid * 1_000_000 + k)))
    drv.append_variable(f"c{cid}/series", k)
    drv.write_variable(f"c{cid}/latest", k)
drv.flush()
indices = [int(i) for i in indices]
drv.close()
print(json.dumps({"host": socket.gethostname(), "indices": indices}))
"""


def run_clients(hosts: NetnsHosts, plan: list[tuple[str, dict]]) -> list[dict]:
    """Run one CLIENT per ``(host, cfg)`` at once; their JSON reports, in plan order."""
    processes = [subprocess.Popen([*hosts.prefix(host), sys.executable, "-c", CLIENT, json.dumps(cfg)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL, env={k: v for k, v in os.environ.items()
                                                                 if k != "NSTORE_KEYS"})
                 for host, cfg in plan]
    reports = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=CLIENT_TIMEOUT_S)
            assert process.returncode == 0, err
            reports.append(json.loads(out))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    return reports


def test_clients_on_two_nodes_write_exactly_once(hosts, keys, tmp_path, daemon_factory):
    """Sync and pipelined clients on node1 and node2, over tcp + CurveZMQ to the head: every entry once, in order.

    The daemon binds every interface of the head, as the README's head-node recipe does; node1's clients
    connect to ``tcp://<head's name>:5555``, node2's find the daemon from the file's lock (shared file system)."""
    file_name = str(tmp_path / "run.nc")
    daemon = daemon_factory(file_name, "--keys", keys, endpoint=f"tcp://0.0.0.0:{PORT}", prefix=hosts.prefix("head"))
    n = 200
    targets = {"node1": f"tcp://{hosts.hostname('head')}:{PORT}", "node2": file_name}
    plan = [(host, {"endpoint": targets[host], "keys": keys, "pipeline": pipeline, "cid": cid, "n": n})
            for cid, (host, pipeline) in enumerate([("node1", False), ("node1", True), ("node2", False),
                                                    ("node2", True)])]
    reports = run_clients(hosts, plan)
    assert [r["host"] for r in reports] == [hosts.hostname(host) for host, _ in plan]
    assert daemon.stop() == 0, daemon.log()

    store = NetCDFIODriver(file_name, "r")
    try:
        log = np.asarray(store.read_variable("shared/log")).astype(int)
        assert len(log) == len(plan) * n and len(set(log.tolist())) == len(log), "an entry is missing or doubled"
        for (_, cfg), report in zip(plan, reports):
            cid = cfg["cid"]
            mine = log[log // 1_000_000 == cid] - cid * 1_000_000
            assert mine.tolist() == list(range(n)), f"client {cid}: order not kept"
            assert log[report["indices"]].tolist() == [cid * 1_000_000 + k for k in range(n)], \
                f"client {cid}: acknowledged indices do not hold its entries"
            assert np.asarray(store.read_variable(f"c{cid}/series")).tolist() == list(range(n))
            assert store.read_variable(f"c{cid}/latest") == n - 1
    finally:
        store.close()


def test_beyond_loopback_keys_are_required(hosts, keys, tmp_path, daemon_factory):
    """Binding the head's address without keys is refused; a keyless client gets no access to a keyed daemon."""
    file_name = str(tmp_path / "run.nc")
    endpoint = head_endpoint(hosts)
    refused = nstored("serve", file_name, "--endpoint", endpoint, prefix=hosts.prefix("head"))
    assert refused.returncode == 2, refused.stderr
    assert f"{endpoint} is reachable beyond this machine: give --keys DIR" in refused.stderr
    assert not os.path.exists(file_name)

    daemon = daemon_factory(file_name, "--keys", keys, endpoint=endpoint, prefix=hosts.prefix("head"))
    started = time.monotonic()
    keyless, keyed = run_clients(hosts, [("node1", {"endpoint": endpoint, "keys": None, "pipeline": False,
                                                    "cid": 0, "n": 5}),
                                         ("node2", {"endpoint": endpoint, "keys": keys, "pipeline": False,
                                                    "cid": 1, "n": 5})])
    assert "refused" in keyless and f"no nstored answered at {endpoint}" in keyless["refused"], keyless
    assert time.monotonic() - started < 5 + 5, "the refusal took longer than the connect timeout"
    assert keyed.get("indices") == list(range(5)), keyed
    assert daemon.stop() == 0, daemon.log()
    store = NetCDFIODriver(file_name, "r")
    try:
        assert np.asarray(store.read_variable("shared/log")).tolist() == [1_000_000.0 + k for k in range(5)]
    finally:
        store.close()


# --- a worker on node1 rides through restarts of the head's daemon ---------------------------------


def established(pid: int, address: str, port: int) -> int:
    """How many ESTABLISHED tcp connections to ``address:port`` process ``pid``'s network namespace holds."""
    a, b, c, d = (int(x) for x in address.split("."))
    remote = f"{d:02X}{c:02X}{b:02X}{a:02X}:{port:04X}"
    with open(f"/proc/{pid}/net/tcp", encoding="ascii") as fh:
        rows = [line.split() for line in fh.readlines()[1:]]
    return sum(1 for row in rows if row[2] == remote and row[3] == "01")


@pytest.mark.parametrize("pipeline", [False, True], ids=["sync", "pipelined"])
def test_worker_rides_through_restart_and_lost_link(hosts, keys, tmp_path, daemon_factory, workers, monkeypatch,
                                                    pipeline):
    """A worker on node1 carries on through (1) SIGKILL + restart of the head's daemon and (2) the same while
    the head's cable is pulled, where no reset reaches the worker and only the heartbeat tells it the
    connection is dead. Nothing acknowledged lost or applied twice; order kept."""
    monkeypatch.setenv("NSTORE_KEYS", keys)  # the worker's connect() finds its keys here
    file_name = str(tmp_path / "run.nc")
    endpoint = head_endpoint(hosts)
    serve = ("--keys", keys)
    head = hosts.prefix("head")
    daemon = daemon_factory(file_name, *serve, endpoint=endpoint, prefix=head)
    worker = workers(tmp_path, "w", endpoint, pipeline=pipeline, grace=30, prefix=hosts.prefix("node1"))
    worker.wait_acked(200, daemon)

    daemon.kill()  # (1) the worker's connection closes at once
    daemon = daemon_factory(file_name, *serve, endpoint=endpoint, prefix=head)
    worker.wait_acked(len(worker.acked()) + 200, daemon)

    assert established(worker.pid, hosts.addresses["head"], PORT) == 1
    hosts.unplug("head")  # (2) silence: the kill's FIN/RST cannot reach node1
    try:
        daemon.kill()
        daemon = daemon_factory(file_name, *serve, endpoint=endpoint, prefix=head)
        deadline = time.monotonic() + HEARTBEAT_TIMEOUT_S + HEARTBEAT_IVL_S + 5
        while established(worker.pid, hosts.addresses["head"], PORT) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert established(worker.pid, hosts.addresses["head"], PORT) == 0, \
            "the worker kept its connection to a silent head beyond the heartbeat timeout"
        at_plug = len(worker.acked())
    finally:
        hosts.plug("head")
    worker.wait_acked(at_plug + 200, daemon)

    assert worker.finish(timeout=WAIT_S) == 0, worker.stderr()
    n = int(worker.process.stdout.read().split()[-1])
    acked = worker.acked()
    assert len(acked) == n and [a[0] for a in acked] == list(range(n))
    assert daemon.stop() == 0, daemon.log()
    assert check_against_file(file_name, acked) == 0


# --- MPI ranks on three hosts ---------------------------------------------------------------------


def test_mpi_ranks_on_three_hosts(hosts, workdir):
    """mpiexec on the head launches ranks on head, node1 and node2 (Hydra's ssh launcher replaced by
    tests/mpi/netns_launcher.sh, which enters the namespace named as the host). open_store sees three
    host names, picks tcp with generated CurveZMQ keys to the head on its own; the collective close
    leaves a complete file."""
    file_name = str(workdir / "run.nc")
    names = ",".join(hosts.hostname(h) for h in HOSTS)
    rc, out, _ = run_mpi("append_check.py", file_name, "--across-hosts", "--pipeline", "--steps", "50",
                         prefix=hosts.prefix("head"),
                         mpiexec_args=["-launcher", "ssh", "-launcher-exec", str(HERE / "netns_launcher.sh"),
                                       "-hosts", names])
    assert rc == 0, out
    assert f"via tcp (tcp://{hosts.hostname('head')}:" in out, out
    assert f"hosts {hosts.hostname('head')},{hosts.hostname('node1')},{hosts.hostname('node2')}" in out, out
    assert read_lock(file_name) is None, "the daemon rank 0 started is still running"


def test_mpi_job_on_compute_nodes_uses_the_head_nodes_daemon(hosts, keys, workdir):
    """The README's head-node recipe under MPI: `nstored start` on the head, bound to every interface with
    keys; a job whose ranks run on node1 and node2 only calls open_store(keys=...), which finds the daemon
    from the file's lock, connects every rank to the head by name, and leaves the daemon running."""
    file_name = str(workdir / "run.nc")
    head = hosts.prefix("head")
    started = nstored("start", file_name, "--endpoint", f"tcp://0.0.0.0:{PORT}", "--keys", keys, prefix=head)
    assert started.returncode == 0, started.stderr
    pid = read_lock(file_name)["pid"]
    names = ",".join(hosts.hostname(h) for h in ("node1", "node2"))
    rc, out, _ = run_mpi("append_check.py", file_name, "--across-hosts", "--keys", keys, "--expect-started", "0",
                         "--daemon-host", hosts.hostname("head"), "--steps", "30", prefix=hosts.prefix("node1"),
                         mpiexec_args=["-launcher", "ssh", "-launcher-exec", str(HERE / "netns_launcher.sh"),
                                       "-hosts", names])
    assert rc == 0, out
    assert f"via tcp (tcp://{hosts.hostname('head')}:{PORT})" in out, out
    assert read_lock(file_name)["pid"] == pid, "the head's daemon should still serve the file"
    stopped = nstored("stop", "--endpoint", f"tcp://127.0.0.1:{PORT}", "--keys", keys, prefix=head)
    assert stopped.returncode == 0, stopped.stderr
    assert read_lock(file_name) is None
