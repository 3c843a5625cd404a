"""The file itself, read with netCDF4 directly after the store is closed.

The stores are written through ``open_store`` (either driver): the daemon must
write exactly the format the in-process engine writes.
"""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest

from nstore import ureg

Q = ureg.Quantity


def classic_attrs(io_type, type_attr, appendable, unit=None):
    attrs = {
        "IODriver_Type": io_type,
        "type": type_attr,
        "IODriver_Unit": unit if unit else "NoneType",
        "IODriver_Storage_Type": "variables",
        "IODriver_Appendable": int(appendable),
    }
    if unit:
        attrs["units"] = unit
    return attrs


def attrs_of(var) -> dict:
    out = {}
    for name in var.ncattrs():
        value = var.getncattr(name)
        out[name] = int(value) if isinstance(value, np.integer) else value
    return out


def dims_of(var) -> list:
    """[(name, size, unlimited), ...] of a variable's dimensions (wherever they are defined)."""
    return [(d.name, d.size, d.isunlimited()) for d in var.get_dims()]


# path, value, IODriver_Type, type, dims (fixed), on-disk dtype, unit
FIXED = [
    ("a/b/f", 2.5, "float", "float", [("scalar", 1)], np.float64, None),
    ("a/i", 7, "int", "int", [("scalar", 1)], np.int64, None),
    ("flag", True, "bool", "bool", [("scalar", 1)], np.int8, None),
    ("text", "héllo", "str", "str", [("scalar", 1)], str, None),
    ("ints", [1, 2, 3], "iterable", "list", [("iterable3", 3)], np.int64, None),
    ("pair", (0.5, 1.5), "iterable", "tuple", [("iterable2", 2)], np.float64, None),
    ("mixed", [1, "a"], "yaml", "list", [("scalar", 1)], str, None),
    ("mixed_tuple", ("a", 1), "yaml", "tuple", [("scalar", 1)], str, None),
    ("d", {"k": 1}, "dict", "dict", [("scalar", 1)], str, None),
    ("m", np.zeros((2, 3), dtype=np.float32), "numpy.ndarray", "float32", [("iterable2", 2), ("iterable3", 3)], np.float32, None),
    ("u8", np.arange(4, dtype=np.uint8), "numpy.ndarray", "uint8", [("iterable4", 4)], np.uint8, None),
    ("mask", np.array([True, False, True]), "numpy.ndarray", "bool", [("iterable3", 3)], np.int8, None),
    ("zero_d", np.array(1.5), "numpy.ndarray", "float64", [], np.float64, None),
    ("one", np.array([1.5]), "numpy.ndarray", "float64", [("iterable1", 1)], np.float64, None),
    ("n32", np.int32(3), "numpy.scalar", "int32", [("scalar", 1)], np.int32, None),
    ("nf32", np.float32(3), "numpy.scalar", "float32", [("scalar", 1)], np.float32, None),
    ("nb", np.bool_(True), "numpy.scalar", "bool", [("scalar", 1)], np.int8, None),
    ("qf", Q(-1.5, "kJ/mol"), "quantity", "float", [("scalar", 1)], np.float64, "kilojoule/mole"),
    ("qi", Q(3, "meter"), "quantity", "int", [("scalar", 1)], np.int64, "meter"),
    ("qa", Q(np.arange(3.0), "nm"), "quantity", "numpy.ndarray", [("iterable3", 3)], np.float64, "nanometer"),
]


def test_fixed_variables(open_store, tmp_path, subtests):
    store = open_store()
    for path, value, *_ in FIXED:
        store[path].write(value)
    store.close()
    with netCDF4.Dataset(tmp_path / "run.nc") as ds:
        assert set(ds.groups) == {"a"}
        assert set(ds["a"].groups) == {"b"}
        assert set(ds["a"].variables) == {"i"}
        assert set(ds["a/b"].variables) == {"f"}
        for path, value, io_type, type_attr, dims, dtype, unit in FIXED:
            with subtests.test(path=path):
                var = ds[path]
                assert attrs_of(var) == classic_attrs(io_type, type_attr, False, unit)
                assert dims_of(var) == [(name, size, False) for name, size in dims]
                assert var.dtype == (str if dtype is str else np.dtype(dtype))
        with subtests.test(msg="stored values"):
            assert ds["a/b/f"][:].tolist() == [2.5]
            assert ds["flag"][:].tolist() == [1]
            assert ds["text"][0] == "héllo"
            assert ds["ints"][:].tolist() == [1, 2, 3]
            assert ds["mask"][:].tolist() == [1, 0, 1]
            assert ds["qf"][:].tolist() == [-1.5]
            assert ds["qa"][:].tolist() == [0.0, 1.0, 2.0]


def test_appendable_variables(open_store, tmp_path, subtests):
    store = open_store()
    store.replica.energy.append(Q(1.0, "kJ/mol"))
    store.replica.energy.append(Q(1.0, "kcal/mol"))  # stored converted to kJ/mol
    store.replica.pos.append(Q(np.zeros((2, 3)), "nm"))
    store.steps.append(5)
    store.steps.append(6)
    store.steps.append(7)
    store.labels.append("x")
    store.flags.append(np.array([True, False]))
    store.close()
    with netCDF4.Dataset(tmp_path / "run.nc") as ds:
        with subtests.test(msg="dimensions: one unlimited dimension per variable, numbered in creation order"):
            assert dims_of(ds["replica/energy"]) == [("unlimited0", 2, True), ("scalar", 1, False)]
            assert dims_of(ds["replica/pos"]) == [("unlimited1", 1, True), ("iterable2", 2, False), ("iterable3", 3, False)]
            assert dims_of(ds["steps"]) == [("unlimited2", 3, True), ("scalar", 1, False)]
            assert dims_of(ds["labels"]) == [("unlimited3", 1, True), ("scalar", 1, False)]
            assert dims_of(ds["flags"]) == [("unlimited4", 1, True), ("iterable2", 2, False)]
        with subtests.test(msg="attributes"):
            assert attrs_of(ds["replica/energy"]) == classic_attrs("quantity", "float", True, "kilojoule/mole")
            assert attrs_of(ds["replica/pos"]) == classic_attrs("quantity", "numpy.ndarray", True, "nanometer")
            assert attrs_of(ds["steps"]) == classic_attrs("int", "int", True)
            assert attrs_of(ds["labels"]) == classic_attrs("str", "str", True)
            assert attrs_of(ds["flags"]) == classic_attrs("numpy.ndarray", "bool", True)
        with subtests.test(msg="values"):
            assert ds["replica/energy"][:, 0].tolist() == pytest.approx([1.0, 4.184], rel=1e-12)
            assert ds["steps"][:, 0].tolist() == [5, 6, 7]
            assert ds["steps"].dtype == np.int64
            assert ds["labels"][0, 0] == "x"
            assert ds["flags"].dtype == np.int8
            assert ds["flags"][:].tolist() == [[1, 0]]


def test_unlimited_dimensions_keep_counting_after_reopen(open_store, tmp_path):
    store = open_store()
    store.first.append(1.0)
    store.second.append(1.0)
    store.close()
    store = open_store()
    store.third.append(1.0)
    store.first.append(2.0)
    store.close()
    with netCDF4.Dataset(tmp_path / "run.nc") as ds:
        assert dims_of(ds["first"])[0] == ("unlimited0", 2, True)
        assert dims_of(ds["second"])[0] == ("unlimited1", 1, True)
        assert dims_of(ds["third"])[0] == ("unlimited2", 1, True)


# path, entry, expected chunk sizes: max(1, min(256, 256 KiB // row bytes)) rows per chunk, 256 for text
CHUNKS = [
    ("scalar_float", 1.5, [256, 1]),
    ("scalar_bool", True, [256, 1]),
    ("np_int8", np.int8(1), [256, 1]),
    ("quantity", Q(1.0, "kJ/mol"), [256, 1]),
    ("small_row", np.zeros(3), [256, 3]),
    ("row_400B", np.zeros(100, dtype=np.int32), [256, 100]),
    ("row_8000B", np.zeros(1000), [32, 1000]),
    ("row_16KiB_2d", np.zeros((64, 64), dtype=np.float32), [16, 64, 64]),
    ("row_256KiB", np.zeros(32768), [1, 32768]),
    ("row_1MiB", np.zeros(131072), [1, 131072]),
    ("text", "abc", [256, 1]),
    ("dict", {"a": 1}, [256, 1]),
]


def test_chunk_sizes_of_appendable_variables(open_store, tmp_path, subtests):
    store = open_store()
    for name, entry, _ in CHUNKS:
        store[name].append(entry)
    store.fixed.write(np.zeros(10))
    store.close()
    with netCDF4.Dataset(tmp_path / "run.nc") as ds:
        for name, _, chunks in CHUNKS:
            with subtests.test(name=name):
                assert ds[name].chunking() == chunks
        assert ds["fixed"].chunking() == "contiguous"


def test_dicts_are_tagged_yaml_text_never_pickle(open_store, tmp_path):
    value = {"energy": Q(-1.5, "kJ/mol"), "arr": np.array([1, 2], dtype=np.int32), "pair": (1, 2), "none": None}
    store = open_store()
    store.d.write(value)
    store.close()
    with netCDF4.Dataset(tmp_path / "run.nc") as ds:
        text = ds["d"][0]
    assert isinstance(text, str)
    assert "!Quantity" in text
    assert "QuantityUnit: kilojoule/mole" in text
    assert "QuantityValue: -1.5" in text
    assert "!ndarray" in text and "dtype: int32" in text
    assert "!tuple" in text
    assert "!!python" not in text

