"""``nstored status FILE --watch``: one line a second, like vmstat, until Ctrl-C or the daemon stops.

Plain lines (no curses): they work in any terminal, in a pipe and in a log.
Ops/s is measured over the last interval from the daemon's op counters; clients are
those the daemon keeps resend state for (clients that wrote, until idle).
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

WATCH_INTERVAL_S = 1.0
COLUMNS = (("time", 8), ("ops/s", 10), ("clients", 8), ("queue", 6), ("journal", 10), ("written", 10),
           ("read", 10))
OPTIONAL_COLUMNS = (("pending_writes", "pending", 8),)  # shown when the daemon reports them


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}GB"


def _ops_per_s(status: dict, previous: dict | None) -> str:
    if previous is None:
        return "-"
    elapsed = status["uptime_s"] - previous["uptime_s"]
    done = sum(status["ops_applied"].values()) - sum(previous["ops_applied"].values())
    return f"{done / elapsed:.1f}" if elapsed > 0 else "-"


def _row(status: dict, previous: dict | None) -> list[str]:
    row = [time.strftime("%H:%M:%S"), _ops_per_s(status, previous), str(status["clients_remembered"]),
           str(status["queue_depth"]), _size(status["journal_bytes"]), _size(status["bytes_written"]),
           _size(status.get("bytes_read", 0))]
    return row + [str(status[key]) for key, _, _ in OPTIONAL_COLUMNS if key in status]


def watch(ask: Callable[[], dict | None], interval: float = WATCH_INTERVAL_S, out: TextIO = sys.stdout,
          err: TextIO = sys.stderr) -> int:
    """Print a status line every ``interval`` s; ``ask()`` gives the status or None once the daemon is gone."""
    previous = None
    try:
        while True:
            status = ask()
            if status is None:
                if previous is None:
                    return 1  # never reached (ask said why)
                print(f"nstored: pid {previous['pid']} stopped", file=err)
                return 0
            if previous is None:
                print(f"{status['file']} (pid {status['pid']}, {status['endpoint']})", file=out)
                widths = [w for _, w in COLUMNS] + [w for key, _, w in OPTIONAL_COLUMNS if key in status]
                names = [n for n, _ in COLUMNS] + [n for key, n, _ in OPTIONAL_COLUMNS if key in status]
                print(" ".join(n.rjust(w) for n, w in zip(names, widths)), file=out)
            print(" ".join(cell.rjust(w) for cell, w in zip(_row(status, previous), widths)), file=out, flush=True)
            previous = status
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
