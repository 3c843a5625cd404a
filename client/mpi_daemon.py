"""Rank 0's side of ``nstore.mpi.open_store``: find or start the daemon, make and share keys, stop it at close.

Also what every rank does with the keys it receives. See nstore.mpi for the whole picture.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from nstore.protocol.endpoints import pid_alive, read_lock, real_path
from nstore.protocol.transport import file_identity, hello, verify_serves

if TYPE_CHECKING:
    from .mpi import _Session

#: Environment variables by which an MPI launcher recognises its ranks.
MPI_ENV_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "PRTE_", "HYDRA_", "MPI_LOCAL")
START_TIMEOUT_S = 90.0  # `nstored start` itself gives up after 30 s
STOP_TIMEOUT_S = 60.0
PORT_ATTEMPTS = 3  # a free port can be taken between picking and binding it
_KEY_FILES = ("client.key_secret", "server.key")  # what a client needs (see transport.secure_client)
_WILDCARD_HOSTS = ("0.0.0.0", "*", "::", "")


def scrubbed_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ``os.environ``) without the MPI launcher's per-rank variables."""
    env = dict(os.environ if env is None else env)
    return {k: v for k, v in env.items() if not k.startswith(MPI_ENV_PREFIXES)}


# --- rank 0 ---------------------------------------------------------------------------------
def rank0_prepare(file_name: str, mode: str, one_host: bool, rank0_host: str, host: str | None,
                   keys: str | None, connect_kwargs: dict) -> dict:
    """Find or start the daemon; returns the plan every rank connects by."""
    path = real_path(file_name)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(f"directory {directory} is not writable (the daemon writes the file, its journal, "
                              f"lock and log there)")
    if keys is not None:
        keys = os.path.abspath(os.path.expanduser(keys))
        missing = [name for name in ("server.key_secret", *_KEY_FILES) if not os.path.isfile(os.path.join(keys, name))]
        if missing:
            raise FileNotFoundError(f"keys directory {keys} lacks {', '.join(missing)} (create it with "
                                    f"`nstored keygen {keys}`)")

    existing = _existing_endpoint(path, keys, connect_kwargs)
    if existing is not None:
        endpoint, identity = existing
        daemon_host = (read_lock(path) or {}).get("host") or rank0_host
        return {**_reuse_plan(path, endpoint, mode, one_host, rank0_host, host, keys, daemon_host),
                "identity": identity}

    if mode == "ipc":
        _start_daemon(path, [])
        info = read_lock(path)
        if info is None:
            raise ConnectionError(f"nstored started but left no lock file {path}.nstored")
        return {"file_name": path, "mode": "ipc", "endpoint": info["endpoint"], "started": True,
                "identity": file_identity(path)}

    generated = keys is None
    keys_dir = tempfile.mkdtemp(prefix="nstore-keys-") if generated else keys
    try:
        if generated:
            _run_cli(["keygen", keys_dir], "nstored keygen")
        bind_host = "127.0.0.1" if one_host else (host or "0.0.0.0")
        connect_host = "127.0.0.1" if one_host else (host or rank0_host)
        for attempt in range(PORT_ATTEMPTS):
            port = _free_port(bind_host)
            try:
                _start_daemon(path, ["--endpoint", f"tcp://{_bracket(bind_host)}:{port}", "--keys", keys_dir])
                break
            except ConnectionError as exc:
                if "Address already in use" not in str(exc) or attempt == PORT_ATTEMPTS - 1:
                    raise
    except BaseException:
        if generated:
            shutil.rmtree(keys_dir, ignore_errors=True)
        raise
    return {"file_name": path, "mode": "tcp", "endpoint": f"tcp://{_bracket(connect_host)}:{port}", "started": True,
            "keys_dir": keys_dir, "generated_keys": generated, "key_files": read_keys(keys_dir),
            "identity": file_identity(path)}


def _existing_endpoint(path: str, keys: str | None, connect_kwargs: dict) -> tuple[str, dict] | None:
    """``(endpoint, identity)`` of a live daemon already serving ``path`` (checked by a hello), or None.

    A daemon that answers but serves another file (the lock is stale, its port
    was taken) is refused with a WrongDaemonError naming what it serves.
    """
    info = read_lock(path)
    if info is None:
        return None
    if info.get("host") in (None, socket.gethostname()) and isinstance(info.get("pid"), int) \
            and not pid_alive(info["pid"]):
        return None  # stale lock file of a killed daemon
    endpoint = info["endpoint"]
    # a wildcard bind is reached on loopback from the daemon's own host, by its host name from any other
    probe_endpoint = _replace_wildcard(endpoint, "127.0.0.1" if info.get("host") in (None, socket.gethostname())
                                       else info["host"])
    try:
        reply = hello(probe_endpoint, timeout=connect_kwargs.get("connect_timeout", 5.0),
                      keys=keys if endpoint.startswith("tcp://") else None)
    except ConnectionError as exc:
        raise ConnectionError(f"{path} is already served by nstored pid {info.get('pid')} at {endpoint}, "
                              f"which does not answer us ({exc}); for a tcp daemon pass its keys=, "
                              f"or stop it with `nstored stop {path}`") from None
    return endpoint, verify_serves(reply, path, probe_endpoint)


def _reuse_plan(path: str, endpoint: str, mode: str, one_host: bool, rank0_host: str, host: str | None,
                keys: str | None, daemon_host: str) -> dict:
    """Connect every rank to a daemon someone else started (and leave it running at close).

    ``daemon_host``: where it runs (its lock file says), e.g. a head node none of the ranks runs on."""
    if endpoint.startswith("tcp://"):
        hostname = urlsplit(endpoint).hostname or ""
        if not one_host and (hostname in ("127.0.0.1", "localhost", "::1")):
            raise ConnectionError(f"{path} is already served by nstored at {endpoint}, bound to loopback: ranks "
                                  f"on other hosts cannot reach it; stop it (`nstored stop {path}`) first")
        local = one_host and daemon_host == rank0_host
        target = _replace_wildcard(endpoint, host or ("127.0.0.1" if local else daemon_host))
        plan = {"file_name": path, "mode": "tcp", "endpoint": target, "started": False}
        if keys is not None:
            plan.update(keys_dir=keys, key_files=read_keys(keys))
        return plan
    if not one_host or mode == "tcp":
        raise ConnectionError(f"{path} is already served by nstored at {endpoint} (ipc: this host only); "
                              f"stop it (`nstored stop {path}`) to let open_store start a tcp daemon")
    return {"file_name": path, "mode": "ipc", "endpoint": endpoint, "started": False}


def _start_daemon(path: str, extra: list[str]) -> None:
    _run_cli(["start", path, *extra], "nstored start")


def _run_cli(args: list[str], what: str, timeout: float = START_TIMEOUT_S) -> str:
    """Run ``nstored ARGS`` with the MPI variables scrubbed; ConnectionError with its stderr on failure."""
    try:
        result = subprocess.run([sys.executable, "-m", "nstore.daemon.cli", *args], capture_output=True,
                                text=True, timeout=timeout, env=scrubbed_env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ConnectionError(f"`{what}` did not finish within {timeout:g} s") from None
    if result.returncode != 0:
        raise ConnectionError(f"`{what}` failed (exit {result.returncode}): {_last_lines(result.stderr)}")
    return result.stdout


def stop_daemon(session: _Session) -> str | None:
    """Rank 0: stop the daemon if we started it; an error message or None."""
    if not session.started:
        return None
    session.started = False
    args = ["stop", session.file_name, "--endpoint", session.endpoint, "--timeout", str(STOP_TIMEOUT_S)]
    if session.keys_for_stop:
        args += ["--keys", session.keys_for_stop]
    try:
        _run_cli(args, "nstored stop", timeout=STOP_TIMEOUT_S + 30)
    except ConnectionError as exc:
        return f"could not stop nstored for {session.file_name}: {exc}"
    return None


def _free_port(bind_host: str) -> int:
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind(("" if bind_host in _WILDCARD_HOSTS else bind_host, 0))
        return sock.getsockname()[1]


# --- keys on every rank -------------------------------------------------------------------
def read_keys(keys_dir: str) -> dict[str, bytes]:
    contents = {}
    for name in _KEY_FILES:
        with open(os.path.join(keys_dir, name), "rb") as fh:
            contents[name] = fh.read()
    return contents


def rank_keys(plan: dict, session: _Session) -> str | None:
    """The keys dir this rank connects with: rank 0's, if it holds the same keys here; else a private copy."""
    key_files = plan.get("key_files")
    if not key_files:
        return None
    keys_dir = plan["keys_dir"]
    try:
        if read_keys(keys_dir) == key_files:
            return keys_dir
    except OSError:
        pass
    copy = tempfile.mkdtemp(prefix="nstore-keys-")  # 0700
    session.owned_dirs.append(copy)
    for name, data in key_files.items():
        fd = os.open(os.path.join(copy, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    return copy


def remove_dirs(session: _Session) -> None:
    for directory in session.owned_dirs:
        shutil.rmtree(directory, ignore_errors=True)
    session.owned_dirs.clear()


# --- small helpers --------------------------------------------------------------------------
def _replace_wildcard(endpoint: str, host: str) -> str:
    """``tcp://0.0.0.0:5555`` -> ``tcp://HOST:5555`` (a bind address is not one to connect to)."""
    if not endpoint.startswith("tcp://"):
        return endpoint
    netloc = endpoint[len("tcp://"):]
    bind_host, _, port = netloc.rpartition(":")
    if bind_host.strip("[]") in _WILDCARD_HOSTS:
        return f"tcp://{_bracket(host)}:{port}"
    return endpoint


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _last_lines(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "(no output)"
