"""Reaching the right daemon, with keys: ``nstore --keys``, ``nstored status/stop ENDPOINT``, stale locks.

Every daemon is a real ``nstored`` process stopped by PID at teardown (the
``daemon_factory`` fixture, or ``reap`` for daemons ``nstored start`` made);
every one-shot request has a timeout.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest

from nstore import connect
from nstore.protocol.endpoints import read_lock, real_path
from nstore.protocol.transport import WrongDaemonError, file_identity, verify_serves

from daemons import free_port, stop_pid

CLI_TIMEOUT_S = 60.0


def run(module: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` (nstore.cli or nstore.daemon.cli) with this environment plus ``env``."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL, timeout=CLI_TIMEOUT_S)


def nstore(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return run("nstore.cli", *args, env=env)


def nstored(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return run("nstore.daemon.cli", *args, env=env)


@pytest.fixture
def keys(tmp_path, monkeypatch):
    """A fresh ``nstored keygen`` directory; $NSTORE_KEYS unset so each test says which keys it uses."""
    monkeypatch.delenv("NSTORE_KEYS", raising=False)
    directory = tmp_path / "keys"
    result = nstored("keygen", directory)
    assert result.returncode == 0, result.stderr
    return str(directory)


@pytest.fixture
def reap():
    """``reap(pid)``: stop that daemon (one ``nstored start`` made) at teardown if it still runs."""
    pids: list[int] = []
    yield pids.append
    for pid in pids:
        stop_pid(pid)


# --- issue 11: one transport, keys for nstore, status/stop by endpoint ----------------------------------


def test_nstore_reaches_a_keyed_tcp_daemon_with_keys_or_nstore_keys(tmp_path, keys, daemon_factory):
    file_name = tmp_path / "run.nc"
    endpoint = f"tcp://127.0.0.1:{free_port('127.0.0.1')}"
    daemon = daemon_factory(file_name, "--keys", keys, endpoint=endpoint)
    driver = connect(str(file_name), keys=keys, timeout=30)  # by file name: lock -> tcp endpoint -> checked
    try:
        for value in (1.5, 2.5, 3.5):
            driver.append_variable("energy", value)
        driver.sync()
    finally:
        driver.close()

    inspected = nstore("inspect", file_name, "--keys", keys)
    assert inspected.returncode == 0, inspected.stderr
    assert f"(through nstored pid {daemon.pid} at {endpoint})" in inspected.stdout.splitlines()[0]
    assert "energy: appendable float x3" in inspected.stdout

    read = nstore("read", file_name, "energy", "--slice", "1:", env={"NSTORE_KEYS": keys})
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == "[2.5 3.5]"

    out = tmp_path / "copy.nc"
    copied = nstore("snapshot", file_name, out, env={"NSTORE_KEYS": keys})  # the one-shot cut uses the keys too
    assert copied.returncode == 0, copied.stderr
    assert f"through nstored pid {daemon.pid}" in copied.stdout and "3 appended entries" in copied.stdout
    assert nstore("read", out, "energy").stdout.strip() == "[1.5 2.5 3.5]"

    # Without keys the daemon never answers: nstore does not get through it.
    unkeyed = nstore("inspect", file_name, "--json")
    assert "through nstored" not in unkeyed.stdout and '"via": "nstored"' not in unkeyed.stdout


def test_nstored_status_and_stop_take_an_endpoint(tmp_path, keys, daemon_factory):
    tcp = f"tcp://127.0.0.1:{free_port('127.0.0.1')}"
    keyed = daemon_factory(tmp_path / "a.nc", "--keys", keys, endpoint=tcp)
    status = nstored("status", tcp, "--keys", keys, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["pid"] == keyed.pid
    assert json.loads(status.stdout)["file"] == real_path(str(tmp_path / "a.nc"))
    no_keys = nstored("status", tcp, "--timeout", "2")
    assert no_keys.returncode == 1 and f"no nstored answered at {tcp} within 2 s" in no_keys.stderr

    local = daemon_factory(tmp_path / "b.nc")  # ipc://<temp dir>/d.sock
    assert local.endpoint.startswith("ipc://")
    stopped = nstored("stop", local.endpoint, "--timeout", "20")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"nstored: stopped pid {local.pid}"
    assert local.process.wait(timeout=10) == 0

    stopped = nstored("stop", tcp, "--keys", keys, "--timeout", "20")
    assert stopped.returncode == 0, stopped.stderr
    assert keyed.process.wait(timeout=10) == 0
    gone = nstored("status", local.endpoint)
    assert gone.returncode == 1 and f"no nstored listens at {local.endpoint}" in gone.stderr


def test_endpoint_and_file_together_must_agree(tmp_path, daemon_factory):
    daemon = daemon_factory(tmp_path / "a.nc")
    open(tmp_path / "b.nc", "wb").close()
    refused = nstored("stop", tmp_path / "b.nc", "--endpoint", daemon.endpoint, "--timeout", "5")
    assert refused.returncode == 1
    assert f"{real_path(str(tmp_path / 'b.nc'))}: the nstored at {daemon.endpoint} (pid {daemon.pid}) serves " \
           f"{real_path(str(tmp_path / 'a.nc'))}, not this file" in refused.stderr
    assert daemon.process.poll() is None  # not stopped
    agreed = nstored("status", tmp_path / "a.nc", "--endpoint", daemon.endpoint, "--json")
    assert agreed.returncode == 0 and json.loads(agreed.stdout)["pid"] == daemon.pid


# --- issue 13 item 2: a stale lock must not lead to another file's daemon -------------------------------


def test_stale_lock_never_reaches_another_files_daemon(tmp_path, daemon_factory, reap):
    """Daemon A (a.nc) is SIGKILLed on a tcp port; B (b.nc) takes the port; a.nc's lock still names it."""
    a, b = tmp_path / "a.nc", tmp_path / "b.nc"
    endpoint = f"tcp://127.0.0.1:{free_port('127.0.0.1')}"
    daemon_a = daemon_factory(a, "--insecure", endpoint=endpoint)
    driver = connect(str(a), timeout=30)
    assert driver.append_variable("x", 1.0) == 0
    driver.close()
    daemon_a.kill()
    daemon_b = daemon_factory(b, "--insecure", endpoint=endpoint)
    driver = connect(str(b), timeout=30)
    assert driver.append_variable("x", 20.0) == 0
    driver.close()
    assert read_lock(str(a))["endpoint"] == endpoint and read_lock(str(a))["pid"] == daemon_a.pid  # stale
    found = f"the nstored at {endpoint} (pid {daemon_b.pid}) serves {real_path(str(b))}, not this file"

    with pytest.raises(WrongDaemonError, match="not this file") as refused:
        connect(str(a), timeout=30)
    assert f"{real_path(str(a))}: {found}" in str(refused.value)
    with pytest.raises(WrongDaemonError):
        connect(str(a), pipeline=True, timeout=30)

    read = nstore("read", a, "x")
    assert read.returncode == 1 and found in read.stderr and "20" not in read.stdout
    for command in ("stop", "status"):
        result = nstored(command, a, "--timeout", "10")
        assert result.returncode == 1 and found in result.stderr, result.stderr
    assert daemon_b.process.poll() is None  # still serving b.nc

    check = connect(daemon_b.endpoint, timeout=30)
    try:
        assert check.read_variable("x").tolist() == [20.0]  # b.nc untouched
        assert check.status()["ops_applied"].get("shutdown", 0) == 0
    finally:
        check.close()

    # What the message advises: start a.nc's own daemon; it replays what A had acknowledged.
    started = nstored("start", a)
    assert started.returncode == 0, started.stderr
    reap(read_lock(str(a))["pid"])
    assert nstore("read", a, "x").stdout.strip() == "[1.]"
    assert nstored("stop", a, "--timeout", "20").returncode == 0


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_client_riding_through_a_restart_never_resends_to_another_files_daemon(tmp_path, daemon_factory, transport):
    """A's endpoint is taken over by B after A dies: the client's resend must not land in b.nc.

    (A connected tcp socket must not reconnect by itself to whatever now listens on the port.)"""
    a, b = tmp_path / "a.nc", tmp_path / "b.nc"
    args, endpoint = ((), None) if transport == "ipc" else (("--insecure",), f"tcp://127.0.0.1:{free_port('127.0.0.1')}")
    daemon_a = daemon_factory(a, *args, endpoint=endpoint)
    driver = connect(daemon_a.endpoint, timeout=30, grace=20)
    assert driver.append_variable("x", 1.0) == 0
    daemon_a.kill()
    daemon_b = daemon_factory(b, *args, endpoint=daemon_a.endpoint)
    try:
        with pytest.raises(WrongDaemonError, match=f"serves {real_path(str(b))}, not this file"):
            driver.append_variable("x", 2.0)
    finally:
        driver._in_flight.clear()  # (the refused append was never acknowledged: nothing to flush)
        driver.close()
    check = connect(daemon_b.endpoint, timeout=30)
    try:
        assert check.list_directory("") == []  # nothing reached b.nc
    finally:
        check.close()


def test_mpi_helper_refuses_a_lock_naming_another_files_daemon(tmp_path, daemon_factory):
    """``open_store``'s rank 0 finds a live daemon through the lock: it must serve that file."""
    from nstore.mpi_daemon import rank0_prepare

    b = daemon_factory(tmp_path / "b.nc")
    a = tmp_path / "a.nc"
    with open(str(a) + ".nstored", "w", encoding="utf-8") as fh:  # as a stale lock would read after pid reuse
        json.dump({"pid": b.pid, "endpoint": b.endpoint, "file": real_path(str(a)), "host": socket.gethostname()}, fh)
    with pytest.raises(WrongDaemonError, match=f"serves {real_path(str(b.file_name))}, not this file"):
        rank0_prepare(str(a), "ipc", True, socket.gethostname(), None, None, {"connect_timeout": 5})
    assert b.process.poll() is None and not os.path.exists(a)


def test_verify_serves_compares_path_inode_and_same_host_device(tmp_path):
    path = tmp_path / "run.nc"
    path.write_bytes(b"x")
    here = file_identity(str(path))
    reply = {**here, "pid": 7}
    assert verify_serves(reply, str(path), "ipc://e") == here
    other_host = {**reply, "host": "elsewhere", "dev": here["dev"] + 1}  # a shared file system seen from another node
    assert verify_serves(other_host, str(path), "tcp://n:1")["host"] == "elsewhere"
    for label, changed in (("device", {"dev": here["dev"] + 1}), ("inode", {"ino": here["ino"] + 1})):
        with pytest.raises(WrongDaemonError, match="serves another file of this name") as refused:
            verify_serves({**reply, **changed}, str(path), "ipc://e")
        assert f"here: device {here['dev']}, inode {here['ino']}" in str(refused.value), label
    with pytest.raises(WrongDaemonError, match="serves a file of this name, but none exists here"):
        verify_serves({**reply, "file": real_path(str(tmp_path / "gone.nc"))}, str(tmp_path / "gone.nc"), "ipc://e")
    with pytest.raises(WrongDaemonError, match="pid 7 on elsewhere"):
        verify_serves({**other_host, "ino": here["ino"] + 1}, str(path), "tcp://n:1")


# --- issue 13 item 7: other local users ---------------------------------------------------------------


def test_tcp_on_loopback_without_keys_needs_insecure(tmp_path, daemon_factory, monkeypatch):
    monkeypatch.delenv("NSTORE_KEYS", raising=False)
    file_name = tmp_path / "run.nc"
    endpoint = f"tcp://127.0.0.1:{free_port('127.0.0.1')}"
    for command in ("serve", "start"):
        refused = nstored(command, file_name, "--endpoint", endpoint)
        assert refused.returncode == 2, refused.stderr
        assert f"{endpoint}: without keys, every user of this machine could read, write and stop the daemon" \
               in refused.stderr
        assert "--keys DIR" in refused.stderr and "--insecure" in refused.stderr
        assert not os.path.exists(file_name) and read_lock(str(file_name)) is None
    daemon = daemon_factory(file_name, "--insecure", endpoint=endpoint)
    assert f"WARNING INSECURE: {endpoint} accepts unauthenticated clients from every user of this machine" \
           in daemon.log()


def test_keygen_tightens_an_existing_world_writable_directory(tmp_path):
    directory = tmp_path / "shared"
    (directory / "authorized").mkdir(parents=True)
    os.chmod(directory, 0o777)
    os.chmod(directory / "authorized", 0o777)
    result = nstored("keygen", directory)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(directory / "authorized").st_mode) == 0o700
    for name in ("server.key", "server.key_secret", "client.key", "client.key_secret", "authorized/client.key"):
        assert stat.S_IMODE(os.stat(directory / name).st_mode) == 0o600, name


def test_keygen_refuses_planted_entries(tmp_path):
    directory = tmp_path / "shared"
    (directory / "authorized").mkdir(parents=True)
    target = tmp_path / "victim"
    target.write_text("precious")
    os.symlink(target, directory / "server.key_secret")
    result = nstored("keygen", directory)
    assert result.returncode != 0
    assert f"{directory / 'server.key_secret'}: is a symbolic link" in result.stderr
    assert target.read_text() == "precious"


@pytest.mark.skipif(os.geteuid() != 0, reason="planting a file owned by another user needs root (CI runs as root)")
def test_keygen_and_daemon_refuse_a_key_another_user_planted(tmp_path, keys):
    planted = os.path.join(keys, "authorized", "intruder.key")
    with open(planted, "w", encoding="ascii") as fh:
        fh.write("planted\n")
    os.chown(planted, 65534, 65534)
    result = nstored("keygen", keys)
    assert result.returncode != 0 and f"{planted}: belongs to another user (uid 65534)" in result.stderr
    served = nstored("serve", tmp_path / "run.nc", "--endpoint", f"tcp://127.0.0.1:{free_port('127.0.0.1')}", "--keys", keys)
    assert served.returncode == 2 and f"{planted}: belongs to another user (uid 65534)" in served.stderr
    assert not os.path.exists(tmp_path / "run.nc")


@pytest.mark.parametrize("loosened", ["", "authorized", "authorized/client.key"])
def test_daemon_refuses_keys_others_may_write(tmp_path, keys, loosened):
    path = os.path.join(keys, loosened) if loosened else keys
    mode = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, mode)
    file_name = tmp_path / "run.nc"
    result = nstored("serve", file_name, "--endpoint", f"tcp://127.0.0.1:{free_port('127.0.0.1')}", "--keys", keys)
    assert result.returncode == 2
    assert f"{os.path.normpath(path)}: others may write to it (mode {oct(mode)})" in result.stderr
    assert not os.path.exists(file_name)
