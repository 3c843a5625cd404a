"""``nstore tail -f`` and ``nstored status --watch`` on a live store, as real processes.

A daemon (``daemon_factory``) and a writer process (tests/live.py) run while the
commands follow them; every process is stopped by PID in a finalizer and every
wait has a timeout.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from daemons import stop_process
from live import Writer

WAIT_TIMEOUT_S = 60.0


class Command:
    """A command whose output lines are collected as they come."""

    def __init__(self, *args: str):
        self.process = subprocess.Popen([sys.executable, "-m", *args], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_lines(self, count: int, timeout: float = WAIT_TIMEOUT_S) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{len(self.lines)} of {count} lines; exit {self.process.poll()}: "
                                     f"{self.lines} {self.process.stderr.read() if self.process.poll() is not None else ''}")
            time.sleep(0.02)
        return list(self.lines)

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        """Exit status and stderr once the command has ended on its own."""
        code = self.process.wait(timeout=timeout)
        return code, self.process.stderr.read()


@pytest.fixture
def live(tmp_path, daemon_factory):
    """(path, daemon, writer, start): ``start(*args)`` runs a command; all are stopped by PID at teardown."""
    path = tmp_path / "run.nc"
    daemon = daemon_factory(path)
    writer = Writer(daemon.endpoint)
    commands: list[Command] = []

    def start(*args: str) -> Command:
        commands.append(Command(*args))
        return commands[-1]

    yield path, daemon, writer, start
    writer.stop()
    for command in commands:
        stop_process(command.process)


def _tail_lines_are_consecutive_energies(lines: list[str]) -> list[int]:
    indices = []
    for line in lines:
        index = int(line.split(":")[0])
        assert line == f"{index}: {-float(index)} kilojoule/mole"  # value and unit
        indices.append(index)
    assert indices == list(range(indices[0], indices[0] + len(indices)))
    return indices


def _follow_both(path, writer, start) -> tuple[Command, Command, int]:
    """``tail -f`` of the energies and ``status --watch`` running against the live store."""
    writer.wait_for(10)
    tail = start("nstore.cli", "tail", str(path), "replica0/energy", "-n", "3", "-f")
    watch = start("nstore.daemon.cli", "status", str(path), "--watch")
    first = _tail_lines_are_consecutive_energies(tail.wait_lines(3))
    started_with = first[2] + 1  # the length when tail started
    _tail_lines_are_consecutive_energies(tail.wait_lines(3 + 10))  # entries appended after it started
    rows = watch.wait_lines(2 + 3)[2:]  # header, column names, then a row a second
    for row in rows:
        assert re.fullmatch(r"\d\d:\d\d:\d\d +(-|[\d.]+) +\d+ +\d+ +\S+B +\S+B +\S+B", row.strip()), row
    assert all(float(row.split()[1]) > 0 for row in rows[1:])  # the writer keeps the daemon busy
    return tail, watch, started_with


def test_tail_and_watch_end_with_a_message_when_the_daemon_stops(live):
    path, daemon, writer, start = live
    tail, watch, started_with = _follow_both(path, writer, start)
    writer.stop()
    acknowledged = writer.acked
    daemon.stop()
    code, err = tail.finish()
    assert code == 0 and "nstored stopped serving" in err and "Traceback" not in err, err
    indices = _tail_lines_are_consecutive_energies(tail.lines)
    assert started_with + 10 <= indices[-1] + 1 <= acknowledged  # what landed after it started, nothing made up
    code, err = watch.finish()
    assert code == 0 and f"pid {daemon.pid} stopped" in err


def test_tail_and_watch_end_quietly_on_ctrl_c(live):
    path, daemon, writer, start = live
    tail, watch, _ = _follow_both(path, writer, start)
    for command in (tail, watch):
        command.process.send_signal(signal.SIGINT)
        code, err = command.finish()
        assert code == 0 and err == ""


def test_tail_without_follow_prints_the_last_entries(live):
    path, daemon, writer, start = live
    writer.wait_for(20)
    tail = start("nstore.cli", "tail", str(path), "replica0/positions", "-n", "2")
    code, err = tail.finish()
    assert code == 0, err
    assert len(tail.lines) == 2 * 4  # two (4, 3) frames, one line per row
    i = int(tail.lines[0].split(":")[0])
    assert tail.lines[0] == f"{i}: [[{i}. {i}. {i}.]" and tail.lines[4] == f"{i + 1}: [[{i + 1}. {i + 1}. {i + 1}.]"
    assert tail.lines[-1].endswith(f"[{i + 1}. {i + 1}. {i + 1}.]] nanometer")  # the unit after each entry
    refused = start("nstore.cli", "tail", str(path), "replica0/box")
    code, err = refused.finish()
    assert code == 1 and err == "nstore: TypeError: replica0/box: was stored with write(); tail shows entries of appendable variables\n"
