"""Real nstored processes for tests: started in temp dirs, always stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from nstore.protocol.endpoints import pid_alive
from nstore.protocol.transport import call

START_TIMEOUT_S = 30.0


def free_port(host: str) -> int:
    """A tcp port nothing listens on at ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def answers(endpoint: str, timeout: float = 0.5, keys: str | None = None) -> bool:
    """True when a daemon at ``endpoint`` replies to a status request in time (``keys``: for tcp)."""
    try:
        call(endpoint, "status", timeout=timeout, keys=keys)
        return True
    except ConnectionError:
        return False


def stop_process(process: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGTERM ``process`` and wait; SIGKILL if it does not exit in time. Returns its exit code."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return process.returncode


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """Stop a daemon that is not our child (``nstored start`` made it): SIGTERM, then SIGKILL if it lingers."""
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


class Daemon:
    """``nstored serve FILE --endpoint ipc://<short temp dir>/d.sock`` (or any endpoint) as a child process."""

    def __init__(self, file_name: str, *extra_args: str, endpoint: str | None = None,
                 env: dict[str, str] | None = None, prefix: list[str] | tuple = ()):
        """``env``: extra environment variables for the daemon (added to this process's environment);
        ``prefix``: a command that execs the daemon (e.g. into a network namespace; it must exec, not fork)."""
        self.file_name = str(file_name)
        self._sock_dir = tempfile.mkdtemp(prefix="nst")  # short: ipc paths max out near 100 chars
        self.endpoint = endpoint or f"ipc://{self._sock_dir}/d.sock"
        self.log_path = os.path.join(self._sock_dir, "daemon.log")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "nstore.daemon.cli", "serve", self.file_name, "--endpoint", self.endpoint,
             *extra_args],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=None if env is None else {**os.environ, **env},
        )
        self.pid = self.process.pid
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nstored did not start (exit {self.process.returncode}):\n{self.log()}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        if self.endpoint.startswith("ipc://"):
            return os.path.exists(self.endpoint[6:]) and answers(self.endpoint)
        return "serving " in self.log()  # tcp (maybe in another network namespace): logged once bound

    def log(self) -> str:
        """The daemon's output so far (still readable after stop() removed the temp dir)."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return getattr(self, "_saved_log", "")

    def kill(self) -> None:
        """SIGKILL, no cleanup: a crash."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        stop_process(self.process, timeout)
        self._log.close()
        self._saved_log = self.log()
        shutil.rmtree(self._sock_dir, ignore_errors=True)
        return self.process.returncode


def stop_daemon_on_close(driver, daemon: "Daemon") -> None:
    """Make ``driver.close()`` also stop ``daemon`` (so the file can be opened directly afterwards)."""
    close = driver.close

    def close_and_stop() -> None:
        close()
        daemon.stop()

    driver.close = close_and_stop
