"""``nstore tail FILE PATH [-n N] [-f]``: the last entries of an appendable variable, then new ones as they land.

Following polls the variable's length (``info``) and reads only the new slice,
through the daemon. It ends quietly on Ctrl-C, and with a message (status 0)
when the daemon stops: a stopped daemon is not waited for.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

from nstore.protocol.api import StorageDriver

FOLLOW_INTERVAL_S = 0.5
BLOCK_ENTRIES = 4096  # entries read per request when catching up


class Printer:
    """Prints entries of one variable as ``index: value unit`` lines."""

    def __init__(self, driver: StorageDriver, path: str, render: Callable[[Any], str],
                 entries_of: Callable[[Any, dict], list], out: TextIO = sys.stdout):
        self.driver, self.path, self.render, self.entries_of, self.out = driver, path, render, entries_of, out

    def show(self, info: dict, start: int, end: int) -> int:
        """Print entries ``start``..``end - 1``; returns ``end``."""
        for lo in range(start, end, BLOCK_ENTRIES):
            hi = min(end, lo + BLOCK_ENTRIES)
            block = self.driver.read_variable(self.path, slice(lo, hi))
            for index, entry in enumerate(self.entries_of(block, info), start=lo):
                print(f"{index}: {self.render(entry)}", file=self.out)
        self.out.flush()
        return end


def tail(printer: Printer, lines: int, follow: bool, live: bool, interval: float = FOLLOW_INTERVAL_S,
         err: TextIO = sys.stderr) -> int:
    """Print the last ``lines`` entries; with ``follow``, then everything appended until the daemon stops."""
    if lines < 0:
        raise ValueError(f"-n takes a number of entries, 0 or more, not {lines}")
    driver, path = printer.driver, printer.path
    info = driver.variable_info(path)
    if not info["appendable"]:
        raise TypeError(f"{path}: was stored with write(); tail shows entries of appendable variables")
    end = printer.show(info, max(0, info["length"] - lines), info["length"])
    if not follow:
        return 0
    if not live:
        print(f"nstore: no nstored serves {driver.file_name}: nothing will be appended to follow", file=err)
        return 0
    if hasattr(driver, "grace"):
        driver.grace = 0.0  # a stopped daemon ends the follow; no waiting for a restart
    while True:
        time.sleep(interval)
        try:
            info = driver.variable_info(path)
            if info["length"] > end:
                end = printer.show(info, end, info["length"])
        except ConnectionError:
            print(f"nstore: nstored stopped serving {driver.file_name}; {path} had {end} entries", file=err)
            return 0
