"""nstore.mpi under a real MPI job: 4 ranks launched by mpiexec from a normal pytest test.

The checks themselves are plain scripts in tests/mpi/ that assert; each test
runs one as ``mpiexec -n 4 python -m mpi4py SCRIPT ARGS`` in a subprocess with
a timeout, and kills the whole process group (mpiexec and every rank) if it
hangs. ``-m mpi4py`` makes an uncaught exception on any rank abort the job,
so a failing rank cannot leave the others waiting in a collective.

mpi4py and mpich (which ships mpiexec) are test requirements: nothing here is
skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nstore.protocol.endpoints import pid_alive, read_lock

HERE = Path(__file__).resolve().parent / "mpi"
MPIEXEC = Path(sys.executable).parent / "mpiexec"
RANKS = 4
TIMEOUT_S = 120
QUICK_S = 30  # a failing job must end well before this (a hang would run to TIMEOUT_S)
MPI_ENV = {
    "MPIR_CVAR_ENABLE_HEAVY_YIELD": "1",  # MPICH: waiting ranks yield instead of spinning (4 ranks, 2 cores)
    # harmless to MPICH; let the same commands run under Open MPI as root on few cores
    "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
}


def run_mpi(script: str, *args: str, n: int = RANKS, timeout: float = TIMEOUT_S, prefix: list[str] | tuple = (),
            mpiexec_args: list[str] | tuple = ()) -> tuple[int, str, float]:
    """``(returncode, output, seconds)`` of ``mpiexec -n N python -m mpi4py tests/mpi/SCRIPT ARGS``.

    ``prefix`` runs mpiexec through another command (which must exec it); ``mpiexec_args`` go before ``-n``."""
    assert MPIEXEC.exists(), (f"{MPIEXEC} not found: install the test extra (`pip install -e .[test]`, "
                              f"which brings mpi4py and mpich)")
    command = [*prefix, str(MPIEXEC), *mpiexec_args, "-n", str(n), sys.executable, "-m", "mpi4py", str(HERE / script),
               *args]
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               stdin=subprocess.DEVNULL, env={**os.environ, **MPI_ENV}, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # mpiexec and every rank
        output, _ = process.communicate()
        pytest.fail(f"mpiexec timed out after {timeout} s (hang):\n{output[-4000:]}")
    return process.returncode, output, time.monotonic() - start


@pytest.fixture
def workdir(tmp_path):
    """tmp_path; afterwards any daemon still serving a file in it is stopped (by the pid in its lock file)."""
    yield tmp_path
    for lock in tmp_path.glob("*.nstored"):
        info = read_lock(str(lock)[: -len(".nstored")]) or {}
        pid = info.get("pid")
        if isinstance(pid, int) and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def nstored(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nstore.daemon.cli", *args], capture_output=True, text=True,
                          timeout=60)


def test_import_does_not_load_mpi():
    code = "import sys, nstore, nstore.mpi; print('mpi4py.MPI' in sys.modules, 'netCDF4' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out


def test_ipc_four_ranks_append(workdir):
    """One host: ipc; `with open_store(...)`; every entry exactly once, each rank's in order."""
    rc, out, _ = run_mpi("append_check.py", str(workdir / "run.nc"), "--context", "--steps", "50")
    assert rc == 0, out
    assert f"OK {RANKS} ranks x 50 steps via ipc" in out, out
    assert not (workdir / "run.nc.nstored").exists()


def test_multi_node_forced_tcp_curve(workdir):
    """multi_node=True on one host: tcp on loopback with generated CurveZMQ keys; pipelined; close(store)."""
    rc, out, _ = run_mpi("append_check.py", str(workdir / "run.nc"), "--multi-node", "--pipeline", "--steps", "50")
    assert rc == 0, out
    assert f"OK {RANKS} ranks x 50 steps via tcp (tcp://127.0.0.1:" in out, out
    log = (workdir / "run.nc.nstored.log").read_text()
    assert "tcp://127.0.0.1:" in log and "stopped" in log, log


def test_reuses_running_daemon_and_leaves_it_running(workdir):
    """A daemon someone else started is used by every rank and not stopped by the collective close."""
    file_name = str(workdir / "run.nc")
    started = nstored("start", file_name)
    assert started.returncode == 0, started.stderr
    pid = read_lock(file_name)["pid"]
    rc, out, _ = run_mpi("append_check.py", file_name, "--expect-started", "0", "--steps", "20")
    assert rc == 0, out
    assert pid_alive(pid) and read_lock(file_name)["pid"] == pid
    stopped = nstored("stop", file_name)
    assert stopped.returncode == 0, stopped.stderr


def _bad_keys(directory: Path) -> str:
    directory.mkdir()
    for name in ("server.key_secret", "client.key_secret", "server.key"):
        (directory / name).write_text("not a key\n")
    return str(directory)


ERROR_CASES = {
    # case id: (script args builder, text every rank's error must contain)
    "missing-directory": (lambda d: ["nodir", str(d / "missing" / "run.nc")], "does not exist"),
    "missing-keys": (lambda d: ["keys", str(d / "run.nc"), str(d / "no-keys")], "lacks server.key_secret"),
    "daemon-rejects-keys": (lambda d: ["keys", str(d / "run.nc"), _bad_keys(d / "bad-keys")],
                            "`nstored start` failed"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_open_error_raises_on_every_rank(workdir, case):
    """Rank 0 cannot start the daemon: all ranks raise the same MPIStoreError (caught here)."""
    build, expected = ERROR_CASES[case]
    rc, out, seconds = run_mpi("open_errors.py", *build(workdir), "--catch", "--expect", expected)
    assert rc == 0, out
    assert f"ALL {RANKS} RANKS RAISED: rank 0 could not start nstored" in out, out
    assert seconds < QUICK_S, seconds
    assert not list(workdir.glob("*.nstored")), "a daemon was left running"


@pytest.mark.parametrize("case", ["missing-directory", "daemon-rejects-keys"])
def test_open_error_uncaught_aborts_job_quickly(workdir, case):
    """Left uncaught, the error ends the whole job at once with a non-zero exit code: no hang."""
    build, expected = ERROR_CASES[case]
    rc, out, seconds = run_mpi("open_errors.py", *build(workdir))
    assert rc != 0, out
    assert "MPIStoreError" in out and expected in out, out
    assert seconds < QUICK_S, f"took {seconds:.1f} s:\n{out}"


def test_rank_dies_job_aborts_daemon_keeps_data(workdir):
    """A rank raising mid-run aborts the job (python -m mpi4py); the daemon survives with every acknowledged entry."""
    from nstore import NetCDFIODriver, StorageInterface

    file_name = str(workdir / "run.nc")
    rc, out, seconds = run_mpi("rank_dies.py", file_name, "--steps", "10")
    assert rc != 0, out
    assert "dies on purpose" in out, out
    assert seconds < QUICK_S, f"took {seconds:.1f} s:\n{out}"
    info = read_lock(file_name)
    assert info and pid_alive(info["pid"]), "the daemon should outlive the aborted job"
    stopped = nstored("stop", file_name)
    assert stopped.returncode == 0, stopped.stderr
    store = StorageInterface(NetCDFIODriver(file_name))
    try:
        shared = sorted(int(x) for x in store.shared.read())
    finally:
        store.close()
    assert shared == sorted(r * 1000 + i for r in range(RANKS) for i in range(10))


def test_rank0_raising_inside_with_stops_its_daemon(workdir):
    """An exception leaving `with open_store(...)` on rank 0: no collective, daemon stopped, job aborted."""
    from nstore import NetCDFIODriver, StorageInterface

    file_name = str(workdir / "run.nc")
    rc, out, seconds = run_mpi("rank_dies.py", file_name, "--steps", "10", "--rank0-in-with")
    assert rc != 0, out
    assert "rank 0 dies on purpose" in out, out
    assert seconds < QUICK_S, f"took {seconds:.1f} s:\n{out}"
    assert read_lock(file_name) is None, "rank 0 should have stopped the daemon it started"
    store = StorageInterface(NetCDFIODriver(file_name))
    try:
        assert len(store.shared.read()) == RANKS * 10
    finally:
        store.close()


def test_singleton_without_mpiexec(workdir):
    """`python -m mpi4py script` without mpiexec runs as one rank (size 1)."""
    command = [sys.executable, "-m", "mpi4py", str(HERE / "append_check.py"), str(workdir / "run.nc"), "--steps", "5"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL,
                         env={**os.environ, **MPI_ENV})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK 1 ranks x 5 steps via ipc" in out.stdout, out.stdout


def test_ranks_on_several_hosts_use_tcp_with_keys(workdir):
    """Ranks reporting other host names: tcp bound beyond loopback with keys; multi_node=False refuses."""
    rc, out, _ = run_mpi("fake_hosts.py", str(workdir / "run.nc"))
    assert rc == 0, out
    assert "OK fake hosts: tcp via tcp://" in out, out


def test_one_file_per_group_with_sub_communicators(workdir):
    """Sharding by file: comm.Split into two groups, two files, two daemons at once."""
    rc, out, _ = run_mpi("split_groups.py", str(workdir))
    assert rc == 0, out
    assert "OK group0: 20 entries" in out and "OK group1: 20 entries" in out, out


# --- in-process pieces (no mpiexec) -----------------------------------------------------------
def test_scrubbed_env_drops_launcher_variables():
    from nstore.mpi import scrubbed_env

    env = {"PMI_RANK": "1", "PMI_FD": "5", "PMIX_RANK": "1", "OMPI_COMM_WORLD_RANK": "1", "PRTE_X": "1",
           "HYDRA_HOST": "h", "MPI_LOCALRANKID": "1", "PATH": "/bin", "MPIR_CVAR_ENABLE_HEAVY_YIELD": "1"}
    assert scrubbed_env(env) == {"PATH": "/bin", "MPIR_CVAR_ENABLE_HEAVY_YIELD": "1"}


def test_rank_without_the_key_files_gets_a_private_copy(tmp_path):
    """A rank on another node (no shared /tmp) writes the broadcast keys into a private 0600 copy."""
    from nstore.mpi import _Session
    from nstore.mpi_daemon import rank_keys, read_keys, remove_dirs

    assert nstored("keygen", str(tmp_path / "keys")).returncode == 0
    plan = {"keys_dir": str(tmp_path / "keys"), "key_files": read_keys(str(tmp_path / "keys"))}
    session = _Session(comm=None, endpoint="tcp://h:1", file_name="f", mode="tcp", started=False)
    assert rank_keys(plan, session) == str(tmp_path / "keys")  # same files visible: used as is
    plan["keys_dir"] = str(tmp_path / "not-on-this-node")
    copy = rank_keys(plan, session)
    assert copy != plan["keys_dir"] and session.owned_dirs == [copy]
    assert os.stat(copy).st_mode & 0o077 == 0
    for name, data in plan["key_files"].items():
        path = os.path.join(copy, name)
        assert open(path, "rb").read() == data and os.stat(path).st_mode & 0o077 == 0
    remove_dirs(session)
    assert not os.path.exists(copy)
