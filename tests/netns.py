"""Test hosts as Linux network namespaces: several "machines" with their own network stack and host name.

``NetnsHosts(["head", "node1", "node2"])`` creates, for this test run only:

* one namespace per host, named ``nstore-test-<pid>-<host>``, holding ``lo``
  and an ``eth0`` with the host's address in ``10.213.7.0/24``;
* one more namespace, ``nstore-test-<pid>-br``, holding a bridge that every
  host's veth link is plugged into (the "switch").

The addresses exist only inside those namespaces: no default route, no NAT,
nothing in the machine's own namespace, so test traffic never leaves them.
Every host's name is its namespace's name, and ``/etc/netns/<ns>/hosts``
(which ``ip netns exec`` bind-mounts over ``/etc/hosts``) resolves all of
them. ``prefix(host)`` is the command prefix that runs a program on a host:
``ip netns exec NS unshare --uts sh -c 'hostname NS && exec "$@"'`` -- every
step execs, so the pid of the Popen is the program's own. ``remove()`` kills
what still runs in the namespaces (by pid) and deletes them and their files.
Creating namespaces needs root.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

SUBNET = "10.213.7"  # a private /24 that exists only inside the test's namespaces
BRIDGE = "br0"
COMMAND_TIMEOUT_S = 20


def ip(*args: str) -> str:
    """Run ``ip ARGS``; RuntimeError with its stderr if it fails."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


class NetnsHosts:
    """Hosts as network namespaces on one bridge (see the module docstring)."""

    def __init__(self, names: list[str], tag: str | None = None):
        self.tag = tag or f"nstore-test-{os.getpid()}"
        self.bridge_ns = f"{self.tag}-br"
        self.namespaces = {name: f"{self.tag}-{name}" for name in names}
        self.addresses = {name: f"{SUBNET}.{i + 1}" for i, name in enumerate(names)}
        self._ports = {name: f"p{i + 1}" for i, name in enumerate(names)}  # the host's veth end on the bridge
        self._created: list[str] = []
        try:
            self._create()
        except BaseException:
            self.remove()
            raise

    def hostname(self, name: str) -> str:
        return self.namespaces[name]

    def prefix(self, name: str) -> list[str]:
        """Command prefix that runs a program in host ``name`` (its network stack and host name)."""
        ns = self.namespaces[name]
        return ["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', ns]

    def unplug(self, name: str) -> None:
        """Pull host ``name``'s cable: its bridge port goes down, packets to and from it are dropped silently."""
        ip("-n", self.bridge_ns, "link", "set", self._ports[name], "down")

    def plug(self, name: str) -> None:
        ip("-n", self.bridge_ns, "link", "set", self._ports[name], "up")

    def _create(self) -> None:
        self._add_namespace(self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "add", BRIDGE, "type", "bridge")
        ip("-n", self.bridge_ns, "link", "set", BRIDGE, "up")
        hosts_file = "127.0.0.1 localhost\n::1 localhost\n" + "".join(
            f"{self.addresses[name]} {ns}\n" for name, ns in self.namespaces.items())
        for name, ns in self.namespaces.items():
            self._add_namespace(ns)
            port = self._ports[name]
            ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", self.bridge_ns)
            ip("-n", self.bridge_ns, "link", "set", port, "master", BRIDGE, "up")
            ip("-n", ns, "addr", "add", f"{self.addresses[name]}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
            with open(f"/etc/netns/{ns}/hosts", "w", encoding="ascii") as fh:
                fh.write(hosts_file)

    def _add_namespace(self, ns: str) -> None:
        ip("netns", "add", ns)
        self._created.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")

    def remove(self) -> list[str]:
        """Kill leftover processes (by pid), delete every namespace and its /etc/netns files; returns problems."""
        problems = []
        for ns in reversed(self._created):
            try:
                pids = [int(p) for p in ip("netns", "pids", ns).split()]
            except RuntimeError as exc:
                pids, problems = [], problems + [str(exc)]
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if pids:
                problems.append(f"{ns}: killed leftover processes {pids}")
            try:
                ip("netns", "delete", ns)
            except RuntimeError as exc:
                problems.append(str(exc))
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        self._created.clear()
        return problems
