"""A writer process that appends to a live store for as long as a test needs it (stopped by PID)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from daemons import stop_process

WAIT_TIMEOUT_S = 60.0

# Each step appends an energy, a (4, 3) position array (both with units) and a note, then prints
# the step number: every printed step is acknowledged by the daemon. Values are functions of the
# step, so a test knows every entry without asking the writer.
WRITER = """
import sys, time
import numpy as np
from nstore import StorageInterface, connect, ureg

store = StorageInterface(connect(sys.argv[1], timeout=30))
store.add_metadata("title", "live run")
store.replica0.settings.write({"steps": 1000, "dt": 2.0 * ureg.femtosecond})
store.replica0.box.write(np.eye(3) * ureg.nanometer)
store.replica0.add_metadata("temperature_K", 300.0)
step = 0
while True:
    store.replica0.energy.append(-float(step) * ureg.kilojoule / ureg.mole)
    store.replica0.positions.append(np.full((4, 3), float(step)) * ureg.nanometer)
    store.replica0.sub.notes.append(f"step {step}")
    print(step, flush=True)
    step += 1
    time.sleep(float(sys.argv[2]))
"""


class Writer:
    """The writer process and the number of steps it has seen acknowledged."""

    def __init__(self, endpoint: str, pause_s: float = 0.002):
        self.process = subprocess.Popen([sys.executable, "-c", WRITER, endpoint, str(pause_s)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.acked = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.acked = int(line) + 1

    def wait_for(self, steps: int, timeout: float = WAIT_TIMEOUT_S) -> int:
        """Wait until at least ``steps`` steps are acknowledged; returns how many are."""
        deadline = time.monotonic() + timeout
        while self.acked < steps:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"writer acknowledged {self.acked} of {steps} steps "
                                   f"(exit {self.process.poll()}): {self.process.stderr.read() if self.process.poll() is not None else ''}")
            time.sleep(0.01)
        return self.acked

    def stop(self) -> None:
        stop_process(self.process)


def expected_energy(n: int) -> list[float]:
    return [-float(step) for step in range(n)]
