"""Metadata (user attributes) on the file, directories and variables, through both drivers."""

from __future__ import annotations

import numpy as np
import pytest

from nstore import StorageInterface, ureg

# value given -> value read back (attributes are netCDF attributes: sequences come back as lists)
VALUES = {
    "text": ("first run", "first run"),
    "unicode": ("héllo ✓ 𝄞", "héllo ✓ 𝄞"),
    "int": (3, 3),
    "negative": (-7, -7),
    "float": (2.5, 2.5),
    "floats": ([1.5, 2.5, -3.0], [1.5, 2.5, -3.0]),
    "ints_tuple": ((1, 2, 3), [1, 2, 3]),
    "strings": (["a", "bb", "ccc"], ["a", "bb", "ccc"]),
    "int32_array": (np.array([4, 5], dtype=np.int32), [4, 5]),
    "np_float32": (np.float32(1.5), 1.5),
    "np_int64": (np.int64(7), 7),
}
EXPECTED = {name: read for name, (_, read) in VALUES.items()}


def assert_metadata(actual: dict, expected: dict) -> None:
    """Same keys, values and plain Python types (int vs float, list elements too)."""
    assert actual == expected
    for name, value in expected.items():
        assert type(actual[name]) is type(value), name
        if isinstance(value, list):
            assert [type(x) for x in actual[name]] == [type(x) for x in value], name


def test_metadata_on_file_group_and_variable(open_store, subtests):
    store = open_store()
    store.replica.energy.append(ureg.Quantity(1.0, "kJ/mol"))
    store["replica/read"].write(1)  # a variable with a reserved SIDV name
    for name, (value, _) in VALUES.items():
        store.add_metadata(name, value)
        store.replica.add_metadata(name, value)
        store.replica.energy.add_metadata(name, value)
    store["replica/read"].add_metadata("note", "reserved name")
    store.add_metadata("text", "second run")  # overwriting keeps the latest value

    def check(store):
        with subtests.test(msg="file"):
            assert_metadata(store.metadata, {**EXPECTED, "text": "second run"})
        with subtests.test(msg="group"):
            assert_metadata(store.replica.metadata, EXPECTED)
        with subtests.test(msg="variable (no IODriver_* or units attributes)"):
            assert_metadata(store.replica.energy.metadata, EXPECTED)
        with subtests.test(msg="variable reached with store[...]"):
            assert_metadata(store["replica/read"].metadata, {"note": "reserved name"})

    check(store)
    store.close()
    store = open_store()
    check(store)
    assert store.replica.energy.read().magnitude.tolist() == [1.0]


def test_metadata_is_kept_until_the_proxy_is_written(open_store, subtests):
    store = open_store()
    store.newgrp.add_metadata("group_note", "g")
    store.newgrp.sub.add_metadata("sub_note", 1.5)
    store.newgrp.sub.var.add_metadata("var_note", [1, 2])
    store.lone.add_metadata("n", 1)
    with subtests.test(msg="nothing exists yet"):
        assert list(store) == []
        for proxy in (store.newgrp, store.newgrp.sub, store.newgrp.sub.var, store.lone):
            with pytest.raises(KeyError):
                proxy.metadata  # noqa: B018
    store.other.add_metadata("note", "kept")
    store.newgrp.sub.var.append(2.0)  # creates newgrp, newgrp/sub and the variable
    store.lone.write("x")
    store["other/child"].write(1)  # a child reached by path flushes its parent's metadata too
    store.newgrp.sub.var.add_metadata("after", "direct")  # now goes straight to the file

    def check(store):
        assert_metadata(store.newgrp.metadata, {"group_note": "g"})
        assert_metadata(store.newgrp.sub.metadata, {"sub_note": 1.5})
        assert_metadata(store.newgrp.sub.var.metadata, {"var_note": [1, 2], "after": "direct"})
        assert_metadata(store.lone.metadata, {"n": 1})
        assert_metadata(store.other.metadata, {"note": "kept"})

    with subtests.test(msg="flushed by the first write"):
        check(store)
    with subtests.test(msg="a second tree over the same driver reads it from the file"):
        check(StorageInterface(store.storage_driver))
    store.close()
    with subtests.test(msg="after reopening"):
        check(open_store())


RESERVED = ["IODriver_Type", "IODriver_Unit", "IODriver_anything", "type", "units", "_private", "_FillValue", "nstore_seq", ""]


BAD_VALUES = [{"a": 1}, None, [], [[1, 2], [3, 4]], np.zeros((2, 2)), {1, 2}, object(), b"bytes", 1j]


def test_reserved_names_and_invalid_values_are_rejected_at_once(open_store, subtests):
    store = open_store()
    store.grp.var.write(1.0)
    targets = {"/": store, "grp": store.grp, "grp/var": store.grp.var, "later/x": store.later.x}
    for path, target in targets.items():
        for name in RESERVED:
            with subtests.test(msg="reserved name", path=path, name=name):
                with pytest.raises(ValueError, match="reserved or empty"):
                    target.add_metadata(name, "x")
        for value in BAD_VALUES:
            with subtests.test(msg="invalid value", path=path, value=value):
                with pytest.raises(TypeError) as exc:
                    target.add_metadata("bad", value)
                assert str(exc.value).startswith(f"{path}: ")
        with subtests.test(msg="text with NUL would be cut", path=path):
            with pytest.raises(ValueError, match="NUL"):
                target.add_metadata("nul", "a\x00b")
    # nothing was kept for the unwritten proxies: writing works and brings no metadata
    store.later.x.append(2)
    for path in targets:
        assert store.storage_driver.read_metadata(path) == {}, path
    assert store.later.metadata == {}
