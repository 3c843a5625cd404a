"""Files with many variables: dimensions live beside their variables, small chunks, everything still reads.

Layout 2 (see README, "On-disk format"): each new variable's dimensions are
defined in its own group, so no dimension is shared by every variable of the
file (HDF5 rewrites a shared dimension's list of users at each creation).
Files of the earlier layout, with every dimension in the root group, keep
reading and growing (the classic fixtures in test_classic_compat are such files).
"""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest

N_DIRS, PER_DIR = 30, 10


def _path(i: int) -> str:
    return f"rep{i // PER_DIR}/v{i % PER_DIR}"


def test_many_variables_round_trip_reopen_and_grow(open_store, tmp_path):
    store = open_store()
    for i in range(N_DIRS * PER_DIR):
        store[_path(i)].append(float(i))
    store.close()
    store = open_store()  # reopened (through a fresh daemon for the remote driver)
    for i in range(N_DIRS * PER_DIR):
        assert store[_path(i)].append(-float(i)) == 1
    store.late.energy.append(1.0)
    values = [store[_path(i)].read().tolist() for i in range(N_DIRS * PER_DIR)]
    store.close()
    assert values == [[float(i), -float(i)] for i in range(N_DIRS * PER_DIR)]
    with netCDF4.Dataset(tmp_path / "run.nc") as ds:
        assert not [d for d in ds.dimensions if d.startswith("unlimited")], "no unlimited dimension at the root"
        group = ds["rep3"]
        assert sorted(group.dimensions) == ["scalar", *sorted(f"unlimited{30 + k}" for k in range(PER_DIR))]
        assert ds["rep3/v4"].dimensions == ("unlimited34", "scalar")
        numbers = sorted(int(name[len("unlimited"):]) for g in ds.groups.values() for name in g.dimensions
                         if name.startswith("unlimited"))
        assert numbers == list(range(N_DIRS * PER_DIR + 1)), "numbered across the file, in creation order"


def test_names_of_dimensions_below_the_top_level(open_store, tmp_path):
    """A variable or directory named like a dimension: the dimension moves to the root, never collides."""
    store = open_store()
    store.g.scalar.write(1.0)  # its own name: the 'scalar' dimension it needs is defined at the root
    store.g.other.write(2.0)  # 'scalar' is taken in g by a variable: the root's is used
    store.h.energy.append(3.0)  # h gets its own 'scalar' and 'unlimited0'
    with pytest.raises(ValueError, match=r"h/scalar: 'scalar' is a NetCDF dimension name there"):
        store.h.scalar.write(1.0)
    with pytest.raises(ValueError, match=r"h/unlimited0/x: 'h/unlimited0' is a NetCDF dimension name there"):
        store.h.unlimited0.x.write(1.0)
    store.h.unlimited1.append(4.0)  # a name the next dimension would take: numbering skips it
    values = store.g.scalar.read(), store.g.other.read(), store.h.energy.read().tolist(), store.h.unlimited1.read().tolist()
    store.close()
    assert values == (1.0, 2.0, [3.0], [4.0])
    with netCDF4.Dataset(tmp_path / "run.nc") as ds:
        assert "scalar" in ds.dimensions and "scalar" not in ds["g"].dimensions
        assert ds["g/scalar"].dimensions == ("scalar",) and ds["g/other"].dimensions == ("scalar",)
        assert ds["h/energy"].dimensions == ("unlimited0", "scalar")
        assert ds["h/unlimited1"].dimensions == ("unlimited2", "scalar")
        assert sorted(ds["h"].dimensions) == ["scalar", "unlimited0", "unlimited2"]


def test_a_nearly_empty_scalar_variable_is_one_small_chunk(open_store, tmp_path):
    store = open_store()
    store.x.append(1.0)
    store.t.append("text")
    store.a.append(np.zeros(3))
    store.close()
    with netCDF4.Dataset(tmp_path / "run.nc") as ds:
        assert ds["x"].chunking() == [256, 1]
        assert ds["t"].chunking() == [256, 1]
        assert ds["a"].chunking() == [256, 3]
