"""Replicas of an OpenMM Lennard-Jones fluid write one NetCDF file through nstored.

Starts ``nstored serve FILE``, runs ``--workers`` processes (multiprocessing,
spawn); each simulates its own argon-like fluid (OpenMM's NonbondedForce in a
periodic box, Langevin dynamics at its own temperature) and appends the
potential energy, positions and box vectors every ``--every`` steps, as the
OpenMM quantities OpenMM returns. Then it stops the daemon (by PID, also on
error), reads the energy traces back with xarray, checks every entry is there
exactly once with the energy the worker computed, and prints a summary.

    python scripts/openmm_replicas.py [--workers 3] [--steps 1000] [--every 10] [--particles 64]
                                      [--platform Reference|CPU] [--file run.nc] [--json]

``--json`` ends the output with one JSON line: the file and what each worker reported.
The daemon's log is ``FILE.daemon.log``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from nstore import StorageInterface, connect

SIGMA_NM, EPSILON_KJ_MOL, MASS_DA = 0.3405, 0.9979, 39.948  # argon
REDUCED_DENSITY = 0.5  # particles per sigma**3: a dense liquid-like fluid
START_TIMEOUT_S = 30.0


def build_simulation(particles: int, temperature_k: float, seed: int, platform_name: str):
    """An OpenMM Context of ``particles`` argon atoms on a cubic lattice in a periodic box."""
    import openmm
    import openmm.unit as unit

    side = round(particles ** (1 / 3))
    if side**3 != particles:
        raise ValueError(f"--particles must be a cube (27, 64, 125, ...), not {particles}")
    box_nm = (particles / REDUCED_DENSITY) ** (1 / 3) * SIGMA_NM
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*(box_nm * np.eye(3)[i])) for i in range(3)))
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(min(2.5 * SIGMA_NM, 0.49 * box_nm) * unit.nanometer)
    for _ in range(particles):
        system.addParticle(MASS_DA * unit.dalton)
        force.addParticle(0.0, SIGMA_NM * unit.nanometer, EPSILON_KJ_MOL * unit.kilojoule_per_mole)
    system.addForce(force)
    integrator = openmm.LangevinMiddleIntegrator(temperature_k * unit.kelvin, 1.0 / unit.picosecond,
                                                 5.0 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform_name))
    grid = (np.arange(side) + 0.5) * box_nm / side
    lattice = np.array(np.meshgrid(grid, grid, grid, indexing="ij")).reshape(3, -1).T
    context.setPositions(lattice * unit.nanometer)
    context.setVelocitiesToTemperature(temperature_k * unit.kelvin, seed)
    return context, integrator


def worker(file_name: str, replica: int, steps: int, every: int, particles: int, platform: str) -> dict:
    """One replica: simulate, append through nstored, report ``{steps, energies}`` (kJ/mol) it computed."""
    import openmm.unit as unit

    temperature = 100.0 + 10.0 * replica
    context, integrator = build_simulation(particles, temperature, seed=1000 + replica, platform_name=platform)
    store = StorageInterface(connect(file_name))
    group = store[f"replica{replica}"]
    group.settings.write({"temperature": temperature * unit.kelvin, "timestep": integrator.getStepSize(),
                          "friction": integrator.getFriction(), "particles": particles, "platform": platform})
    reported: dict = {"steps": [], "energies": []}
    for step in range(every, steps + 1, every):
        integrator.step(every)
        state = context.getState(getEnergy=True, getPositions=True)
        energy = state.getPotentialEnergy()
        group.energy.append(energy)
        group.positions.append(state.getPositions())
        group.box.append(state.getPeriodicBoxVectors())
        group.step.append(step)
        store.frames.append(replica * 1_000_000 + step)  # one variable all workers append to
        reported["steps"].append(step)
        reported["energies"].append(energy.value_in_unit(unit.kilojoule_per_mole))
    store.close()
    return reported


def start_daemon(file_name: str, log_path: str) -> subprocess.Popen:
    """``nstored serve FILE`` as our child; returns once it answers."""
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "nstore.daemon.cli", "serve", file_name],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            connect(file_name, connect_timeout=1.0).close()
            return daemon
        except ConnectionError:
            if daemon.poll() is not None or time.monotonic() > deadline:
                stop_daemon(daemon)
                with open(log_path, encoding="utf-8", errors="replace") as log:
                    raise SystemExit(f"nstored did not start:\n{log.read()}") from None
            time.sleep(0.1)


def stop_daemon(daemon: subprocess.Popen) -> None:
    """SIGTERM by PID (it drains, checkpoints and closes the file); SIGKILL if it hangs."""
    if daemon.poll() is None:
        os.kill(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=10)


def check_and_summarize(file_name: str, reports: list[dict]) -> list[str]:
    """Read the closed file with xarray; the problems found (empty when every entry is right)."""
    import xarray as xr

    # A (3, 3) box is stored with the dimensions (unlimitedK, iterable3, iterable3); xarray warns about
    # the repeated name on every open, though nothing here indexes by that dimension.
    warnings.filterwarnings("ignore", message="Duplicate dimension names", category=UserWarning)
    problems = []
    with xr.open_dataset(file_name) as root:
        frames = np.sort(root.frames.squeeze("scalar").values)
    expected = sorted(r * 1_000_000 + s for r, report in enumerate(reports) for s in report["steps"])
    if frames.tolist() != expected:
        problems.append(f"frames: {len(frames)} entries, expected {len(expected)} (lost or doubled)")
    print(f"{'replica':>8} {'frames':>7} {'<E> kJ/mol':>11} {'min':>9} {'max':>9}  positions        box")
    for r, report in enumerate(reports):
        with xr.open_dataset(file_name, group=f"replica{r}") as ds:
            energy = ds.energy.squeeze("scalar")
            steps = ds.step.squeeze("scalar").values.tolist()
            if steps != report["steps"]:
                problems.append(f"replica{r}/step: {steps} != {report['steps']}")
            if energy.values.tolist() != report["energies"]:
                problems.append(f"replica{r}/energy: stored energies differ from those the worker computed")
            if energy.attrs.get("units") != "kilojoule/mole":
                problems.append(f"replica{r}/energy: units {energy.attrs.get('units')!r}")
            print(f"{r:>8} {energy.size:>7} {float(energy.mean()):>11.3f} {float(energy.min()):>9.3f} "
                  f"{float(energy.max()):>9.3f}  {'x'.join(map(str, ds.positions.shape))} "
                  f"{ds.positions.attrs.get('units')}  {'x'.join(map(str, ds.box.shape))} {ds.box.attrs.get('units')}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000, help="MD steps per replica")
    parser.add_argument("--every", type=int, default=10, help="store a frame every this many steps")
    parser.add_argument("--particles", type=int, default=64, help="a cube: 27, 64, 125, ...")
    parser.add_argument("--platform", default="Reference", help="OpenMM platform (Reference or CPU)")
    parser.add_argument("--file", help="output file, replaced if it exists (default: new file in a temp dir)")
    parser.add_argument("--json", action="store_true", help="end with a JSON line of what the workers reported")
    args = parser.parse_args()
    file_name = os.path.abspath(args.file or os.path.join(tempfile.mkdtemp(prefix="nstore-openmm-"), "replicas.nc"))
    os.makedirs(os.path.dirname(file_name), exist_ok=True)
    if os.path.exists(file_name):
        os.remove(file_name)

    daemon = start_daemon(file_name, file_name + ".daemon.log")
    print(f"nstored pid {daemon.pid} serves {file_name}")
    try:
        wall = time.perf_counter()
        jobs = [(file_name, r, args.steps, args.every, args.particles, args.platform) for r in range(args.workers)]
        with mp.get_context("spawn").Pool(args.workers) as pool:
            reports = pool.starmap(worker, jobs)
        wall = time.perf_counter() - wall
    finally:
        stop_daemon(daemon)
    frames = sum(len(report["steps"]) for report in reports)
    print(f"{args.workers} replicas x {args.steps} steps of {args.particles} particles: {frames} frames "
          f"({4 * frames} appends) in {wall:.1f} s; daemon stopped (exit {daemon.returncode})\n")
    problems = check_and_summarize(file_name, reports)
    print("\n" + ("\n".join(problems) if problems else
                  "read back with xarray: every frame exactly once, energies equal to those the workers computed"))
    if args.json:
        print(json.dumps({"file": file_name, "reports": reports}))
    return 1 if problems or daemon.returncode != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
