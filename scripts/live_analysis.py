"""Analyse a live run: a pool of workers appends energies and positions while another process looks.

    pip install "nstore[plot]"        # xarray, pint-xarray, matplotlib
    python scripts/live_analysis.py [FILE]

Starts nstored for FILE (default ``live-run.nc`` in the current directory),
runs 4 workers that each append an energy (kJ/mol) and 64 positions (nm) per
step to their own ``replica<k>`` directory, and meanwhile reopens the store
with ``engine="nstore"`` every 2 seconds: each open is a consistent cut that
sees more steps. Energies are converted with pint-xarray and plotted with
``ds.energy.plot()`` into ``energy-<round>.png``. The daemon is stopped at the end.
"""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import time

import numpy as np
import xarray as xr

from nstore import StorageInterface, connect, ureg

WORKERS = 4
STEPS = 400
ROUNDS = 3
EVERY_S = 2.0


def simulate(file_name: str, replica: int) -> int:
    """One worker: append an energy and a position frame per step, with units."""
    store = StorageInterface(connect(file_name))
    rng = np.random.default_rng(replica)
    group = store[f"replica{replica}"]
    for _ in range(STEPS):
        group.energy.append((-100.0 + rng.normal()) * ureg.kilojoule / ureg.mole)
        group.positions.append(rng.random((64, 3)) * ureg.nanometer)
        time.sleep(0.01)  # the "simulation"
    store.close()
    return STEPS


def analyse(file_name: str) -> None:
    """Reopen the live store every few seconds; convert units and plot the energy trace."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pint_xarray  # noqa: F401 - the .pint accessor

    for round_ in range(ROUNDS):
        time.sleep(EVERY_S)
        with xr.open_dataset(file_name, engine="nstore", group="replica0") as ds:
            energy = ds.energy.isel(scalar=0)  # appended scalars keep a trailing axis of length 1
            kcal = energy.pint.quantify().pint.to("kilocalorie/mole")
            last = float(kcal[-100:].mean().pint.magnitude)  # only the last 100 energies are read
            print(f"round {round_}: {energy.shape[0]} steps; mean of the last 100: {last:.2f} kcal/mol")
            energy.plot()
            plt.savefig(f"energy-{round_}.png")
            plt.close()


def main() -> None:
    file_name = sys.argv[1] if len(sys.argv) > 1 else "live-run.nc"
    connect(file_name, spawn=True).close()  # start nstored for the file
    try:
        with mp.Pool(WORKERS) as pool:
            running = pool.starmap_async(simulate, [(file_name, k) for k in range(WORKERS)])
            analyse(file_name)
            print(f"workers appended {sum(running.get(timeout=300))} steps")
    finally:
        subprocess.run([sys.executable, "-m", "nstore.daemon.cli", "stop", file_name], check=True)


if __name__ == "__main__":
    main()
