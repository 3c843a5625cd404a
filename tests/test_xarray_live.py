"""``engine="nstore"``: xarray on a store while nstored serves it and a writer process appends.

Each test starts a real daemon (``daemon_factory``, stopped by PID at teardown)
and a writer process (tests/live.py, stopped by PID in a finalizer). What the
backend fetches is checked on the daemon's own counters (read ops, bytes
read), never on time.
"""

from __future__ import annotations

import warnings

import numpy as np
import pint
import pytest
import xarray as xr

from live import Writer, expected_energy
from nstore import connect, ureg
from nstore.daemon import textcodec

KJ_MOL = ureg.kilojoule / ureg.mole
OBJECT_VARIABLES = {"replica0": ["settings"]}  # dicts: decoded objects with engine="nstore", YAML text otherwise


@pytest.fixture
def live(tmp_path, daemon_factory):
    """(path, daemon, writer): a daemon serving tmp_path/run.nc and a writer appending to it."""
    path = tmp_path / "run.nc"
    daemon = daemon_factory(path)
    writer = Writer(daemon.endpoint)
    yield path, daemon, writer
    writer.stop()


def _read_counters(endpoint: str) -> tuple[int, int]:
    driver = connect(endpoint, timeout=30)
    try:
        status = driver.status()
    finally:
        driver.close()
    return status["ops_applied"].get("read", 0), status["bytes_read"]


def _no_warnings_open(path, **kwargs) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return xr.open_dataset(path, **kwargs)


def test_open_sees_what_was_acknowledged_and_a_later_open_sees_more(live):
    path, daemon, writer = live
    acked = writer.wait_for(20)
    ds = _no_warnings_open(path, engine="nstore", group="replica0")
    n = ds["energy"].shape[0]
    assert n >= acked
    writer.wait_for(n + 20)
    # The first dataset is a cut: loaded only now, after more appends, it still has n entries.
    assert ds["energy"].values[:, 0].tolist() == expected_energy(n)
    p = ds["positions"].shape[0]  # the writer appends the energy of a step before its positions
    assert p in (n - 1, n)
    assert np.array_equal(ds["positions"].values, np.array([np.full((4, 3), float(i)) for i in range(p)]))
    assert ds["energy"].attrs["units"] == "kilojoule/mole"
    assert ds["settings"].values[0] == {"steps": 1000, "dt": 2.0 * ureg.femtosecond}
    assert ds["box"].dims == ("iterable3", "iterable3_1")
    assert ds.attrs == {"temperature_K": 300.0}
    ds.close()

    with _no_warnings_open(path, engine="nstore", group="replica0") as later:
        m = later["energy"].shape[0]
        assert m >= n + 20
        assert later["energy"].values[:, 0].tolist() == expected_energy(m)
    with xr.open_dataset(path, engine="nstore", group="replica0", endpoint=daemon.endpoint) as named:
        assert named["energy"].shape[0] >= m  # an explicit endpoint reaches the same daemon


def test_indexing_a_lazy_variable_reads_only_that_slice(live):
    path, daemon, writer = live
    writer.wait_for(50)
    reads, sent = _read_counters(daemon.endpoint)
    ds = xr.open_dataset(path, engine="nstore", group="replica0")
    assert _read_counters(daemon.endpoint) == (reads, sent)  # opening reads no data
    n = ds["energy"].shape[0]
    last = ds["energy"][-5:].values
    assert last[:, 0].tolist() == expected_energy(n)[-5:]
    one = ds["positions"].isel(unlimited1=10, iterable4=1).values
    assert one.tolist() == [10.0, 10.0, 10.0]
    strided = ds["energy"][40:4:-12, 0].values  # a reversed, strided selection: one read of those entries
    assert strided.tolist() == [-40.0, -28.0, -16.0]
    assert ds["energy"].isel(unlimited0=-1, scalar=0).values == -float(n - 1)
    after_reads, after_sent = _read_counters(daemon.endpoint)
    assert after_reads - reads == 4
    assert after_sent - sent == (5 + 4 * 3 + 3 + 1) * 8  # float64s: 5 energies, a 4x3 frame, 3 energies, 1 energy
    ds.close()


def test_live_cut_equals_the_closed_file_and_the_tree(live):
    path, daemon, writer = live
    writer.wait_for(30)
    writer.stop()
    live_groups = {group: xr.open_dataset(path, engine="nstore", group=group).load()
                   for group in (None, "replica0", "replica0/sub")}
    with xr.open_datatree(path, engine="nstore") as tree:
        assert sorted(tree.groups) == ["/", "/replica0", "/replica0/sub"]
        live_tree = tree.load()
    daemon.stop()

    for group, live_ds in live_groups.items():
        closed = xr.open_dataset(path, group=group).load()  # the default engine
        closed_nstore = xr.open_dataset(path, engine="nstore", group=group).load()  # no daemon: the file itself
        _assert_same(live_ds, closed, group)
        _assert_same(closed_nstore, closed, group)
        _assert_same(live_tree[group or "/"].to_dataset(inherit=False), closed, group)
    assert live_groups["replica0/sub"]["notes"].values[:, 0].tolist()[:3] == ["step 0", "step 1", "step 2"]


def _assert_same(ours: xr.Dataset, default: xr.Dataset, group: str | None) -> None:
    """Identical to the default engine's dataset, but dicts decoded (and the daemon's checkpoint counter)."""
    objects = OBJECT_VARIABLES.get(group, [])
    for name in objects:
        assert ours[name].dtype == object
        assert [textcodec.loads(str(text)) for text in default[name].values] == list(ours[name].values)
    ours, default = ours.drop_vars(objects), default.drop_vars(objects)
    for ds in (ours, default):
        ds.attrs = {k: v for k, v in ds.attrs.items() if k != "nstore_checkpoint_seq"}  # differs live/closed
    xr.testing.assert_identical(ours, default)
    assert list(ours.data_vars) == list(default.data_vars)
    if group is None:
        assert ours.attrs == {"title": "live run"}


@pytest.fixture
def pint_registry(monkeypatch):
    """pint-xarray switches nstore.ureg to force_ndarray_like; undo that after the test."""
    before = ureg.force_ndarray_like
    import pint_xarray  # noqa: F401 - registers the .pint accessor

    ureg.force_ndarray_like = before
    monkeypatch.setattr(ureg, "force_ndarray_like", True)


def test_live_dataset_quantifies_with_pint_xarray_and_plots(live, pint_registry):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path, daemon, writer = live
    writer.wait_for(10)
    with xr.open_dataset(path, engine="nstore", group="replica0") as ds:
        q = ds.pint.quantify()
        energy = q["energy"].data
        assert isinstance(energy, pint.Quantity) and energy.units == KJ_MOL
        n = ds["energy"].shape[0]
        kcal = q["energy"].pint.to("kilocalorie/mole").pint.magnitude[:, 0]
        assert np.allclose(kcal, np.array(expected_energy(n)) / 4.184)
        assert q["positions"].pint.to("angstrom").pint.magnitude[3].tolist() == [[30.0] * 3] * 4
        lines = ds["energy"].isel(scalar=0).plot()
        assert lines[0].get_ydata().tolist() == expected_energy(n)
        plt.close("all")


def test_open_fails_clearly_for_a_missing_group_or_file(live, tmp_path):
    path, daemon, writer = live
    writer.wait_for(1)
    with pytest.raises(KeyError, match="no directory 'nowhere'"):
        xr.open_dataset(path, engine="nstore", group="nowhere")
    with pytest.raises(FileNotFoundError, match="absent.nc: no such file"):
        xr.open_dataset(tmp_path / "absent.nc", engine="nstore")
    other = tmp_path / "other.nc"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match="serves .*run.nc, not .*other.nc"):
        xr.open_dataset(other, engine="nstore", endpoint=daemon.endpoint)
