"""scripts/openmm_replicas.py: real OpenMM replicas writing one file through nstored (a tiny run)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np

from nstore import NetCDFIODriver, StorageInterface

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "openmm_replicas.py")


def run_script(file_name: str, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run the script; returns its result and the pid of the daemon it started."""
    result = subprocess.run([sys.executable, SCRIPT, "--file", file_name, *args],
                            capture_output=True, text=True, timeout=100)
    started = re.search(r"^nstored pid (\d+) serves", result.stdout, re.MULTILINE)
    assert started, f"no daemon started:\n{result.stdout}\n{result.stderr}"
    return result, int(started.group(1))


def assert_gone(pid: int) -> None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    raise AssertionError(f"the script left nstored pid {pid} running")


def test_replicas_store_every_frame_once_with_the_energies_computed(tmp_path, runtime_dir):
    file_name = str(tmp_path / "replicas.nc")
    result, pid = run_script(file_name, "--workers", "2", "--steps", "20", "--every", "5", "--particles", "27",
                             "--json")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert_gone(pid)
    reports = json.loads(result.stdout.strip().splitlines()[-1])["reports"]
    assert [report["steps"] for report in reports] == [[5, 10, 15, 20]] * 2

    # Independently of the script's own xarray check: read the closed file in-process.
    store = StorageInterface(NetCDFIODriver(file_name, access_mode="r"))
    try:
        frames = sorted(store.frames.read().tolist())
        assert frames == sorted(r * 1_000_000 + s for r in range(2) for s in (5, 10, 15, 20))
        for r, report in enumerate(reports):
            group = store[f"replica{r}"]
            assert group.step.read().tolist() == report["steps"]
            energy = group.energy.read()
            assert str(energy.units) == "kilojoule / mole"
            assert energy.magnitude.tolist() == report["energies"]  # exactly: stored as computed
            positions, box = group.positions.read(), group.box.read()
            assert positions.magnitude.shape == (4, 27, 3) and str(positions.units) == "nanometer"
            assert np.all(box.magnitude == box.magnitude[0]) and np.count_nonzero(box.magnitude[0]) == 3
            settings = group.settings.read()
            assert settings["particles"] == 27 and str(settings["temperature"].units) == "kelvin"
    finally:
        store.close()


def test_the_script_stops_its_daemon_when_a_worker_fails(tmp_path, runtime_dir):
    result, pid = run_script(str(tmp_path / "bad.nc"), "--workers", "1", "--steps", "5", "--particles", "30")
    assert result.returncode != 0
    assert "--particles must be a cube" in result.stderr
    assert_gone(pid)
