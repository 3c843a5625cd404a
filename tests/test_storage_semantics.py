"""What the storage API does besides round trips: indices, kinds, type/shape/unit rules,
unsupported values, names and paths. Every test runs through ``open_store`` (both
drivers) and the public API, except the access-mode tests at the end, which are
about ``NetCDFIODriver``'s own ``access_mode`` argument.
"""

from __future__ import annotations

import datetime

import numpy as np
import pint
import pytest

from nstore import RESERVED_NAMES, NetCDFIODriver, StorageInterface, ureg

Q = ureg.Quantity


def message(excinfo) -> str:
    """The message of a caught exception (a KeyError's str() adds quotes)."""
    exc = excinfo.value
    return exc.args[0] if isinstance(exc, KeyError) else str(exc)


# --- append indices and at_index ------------------------------------------------------------


def test_append_indices_and_write_at_index(open_store, subtests):
    store = open_store()
    with subtests.test(msg="append returns 0, 1, 2, ... per variable"):
        assert [store.a.append(float(i)) for i in range(5)] == [0, 1, 2, 3, 4]
        assert [store.b.x.append("s") for _ in range(3)] == [0, 1, 2]
        assert store.a.append(5.0) == 5
        assert store.a.read().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    with subtests.test(msg="a failed append takes no index"):
        assert store.e.append(np.array([1.0, 1.5])) == 0
        with pytest.raises(TypeError):
            store.e.append("not an array")
        with pytest.raises(ValueError):
            store.e.append(np.zeros(3))
        assert store.e.append(np.array([2.0, 2.5])) == 1
        assert store.e.read().tolist() == [[1.0, 1.5], [2.0, 2.5]]
    with subtests.test(msg="write(at_index) overwrites one entry, negative counts from the end"):
        for v in (10, 20, 30):
            store.i.append(v)
        store.i.write(99, at_index=1)
        assert store.i.read().tolist() == [10, 99, 30]
        store.i.write(-1, at_index=-1)
        assert store.i.read().tolist() == [10, 99, -1]
        store.i.write(7, at_index=-3)
        assert store.i.read().tolist() == [7, 99, -1]
        store.i.write(8, at_index=0)
        assert store.i.read().tolist() == [8, 99, -1]
    for index in (3, 4, -4, 1000):
        with subtests.test(msg="at_index past the end raises ValueError", index=index):
            with pytest.raises(ValueError) as exc:
                store.i.write(0, at_index=index)
            assert message(exc) == f"i: index {index} is out of range for 3 stored entries"
            assert store.i.read().tolist() == [8, 99, -1]
    with subtests.test(msg="at_index where nothing is stored raises OSError and creates nothing"):
        with pytest.raises(OSError) as exc:
            store.grp.x.write(1.0, at_index=0)
        assert message(exc) == "grp/x: cannot write at index 0: nothing has been stored here yet"
        assert "grp" not in store
    assert list(store) == ["a", "b", "e", "i"]


def test_the_first_store_fixes_the_kind(open_store, subtests):
    store = open_store()
    store.e.append(1.0)
    store.x.write(1.0)
    with subtests.test(msg="write() to an appendable variable"):
        with pytest.raises(TypeError) as exc:
            store.e.write(2.0)
        assert message(exc) == "e: was stored with append(); use append() or write(..., at_index=i)"
    with subtests.test(msg="append() to a fixed variable"):
        with pytest.raises(TypeError) as exc:
            store.x.append(2.0)
        assert message(exc) == "x: was stored with write(); it cannot be appended to"
    with subtests.test(msg="write(at_index) to a fixed variable"):
        with pytest.raises(TypeError) as exc:
            store.x.write(3.0, at_index=0)
        assert message(exc) == "x: was stored with write(), so it has no entries to write at_index"
    assert store.x.read() == 1.0
    assert store.e.read().tolist() == [1.0]
    store.close()
    store = open_store()
    with subtests.test(msg="the kind is kept after reopening"):
        with pytest.raises(TypeError, match=r"^x: was stored with write\(\)"):
            store.x.append(2.0)
        with pytest.raises(TypeError, match=r"^e: was stored with append\(\)"):
            store.e.write(2.0)
    assert store.x.read() == 1.0
    assert store.e.read().tolist() == [1.0]


# --- type and shape mismatches -------------------------------------------------------------

# first value, mismatching value, "cannot <verb> WHAT: the variable holds WHAT"
TYPE_MISMATCHES = [
    (1.5, 2, "int", "float"),
    (1, True, "bool", "int"),
    (1, 2.0, "float", "int"),
    (1, np.int64(2), "numpy.int64", "int"),
    (np.float32(1), np.float64(1), "numpy.float64", "numpy.float32"),
    ("text", {"a": 1}, "dict", "str"),
    ({"a": 1}, "text", "str", "dict"),
    ([1, 2], (1, 2), "tuple of int", "list of int"),
    ([1, 2], [1.0, 2.0], "list of float", "list of int"),
    ([1, 2], [1, "a"], "list", "list of int"),
    ([1, "a"], [1, 2], "list of int", "list"),
    ((1, "a"), [1, "a"], "list", "tuple"),
    (np.zeros(3, dtype=np.int64), np.zeros(3), "numpy.ndarray of float64", "numpy.ndarray of int64"),
    (np.zeros(2, dtype=bool), np.zeros(2, dtype=np.int8), "numpy.ndarray of int8", "numpy.ndarray of bool"),
    (np.zeros(3), "text", "str", "numpy.ndarray of float64"),
    (Q(1.5, "kJ/mol"), 1.5, "float", "pint.Quantity of float"),
    (1.5, Q(1.5, "kJ/mol"), "pint.Quantity of float", "float"),
    (Q(1.5, "m"), Q(1, "m"), "pint.Quantity of int", "pint.Quantity of float"),
    (Q(np.zeros(2), "m"), np.zeros(2), "numpy.ndarray of float64", "pint.Quantity of numpy.ndarray"),
]


def test_type_mismatch_raises_type_error_naming_the_path(open_store, subtests):
    store = open_store()
    for i, (first, bad, new, held) in enumerate(TYPE_MISMATCHES):
        with subtests.test(first=first, bad=bad):
            fixed, appended = store.fixed[f"v{i}"], store.appended[f"v{i}"]
            fixed.write(first)
            appended.append(first)
            with pytest.raises(TypeError) as exc:
                appended.append(bad)
            assert message(exc) == f"appended/v{i}: cannot append {new}: the variable holds {held}"
            with pytest.raises(TypeError) as exc:
                appended.write(bad, at_index=0)
            assert message(exc) == f"appended/v{i}: cannot write {new}: the variable holds {held}"
            with pytest.raises(TypeError) as exc:
                fixed.write(bad)
            assert message(exc) == f"fixed/v{i}: cannot write {new}: the variable holds {held}"
            # nothing changed
            assert len(appended.read()) == 1
            assert repr(fixed.read()) == repr(first)


SHAPE_MISMATCHES = [
    (np.zeros(3), np.zeros(4), "(4,)", "(3,)"),
    (np.zeros((2, 3)), np.zeros((3, 2)), "(3, 2)", "(2, 3)"),
    (np.zeros(3), np.zeros((1, 3)), "(1, 3)", "(3,)"),
    (np.array(1.0), np.zeros(1), "(1,)", "()"),
    ([1, 2], [1, 2, 3], "(3,)", "(2,)"),
    ((1.5,), (1.5, 2.5), "(2,)", "(1,)"),
    (Q(np.zeros(3), "nm"), Q(np.zeros(2), "nm"), "(2,)", "(3,)"),
]


def test_shape_mismatch_raises_value_error_with_exact_message(open_store, subtests):
    store = open_store()
    store.replica.energy.append(np.zeros(3))
    with pytest.raises(ValueError) as exc:
        store.replica.energy.append(np.zeros(4))
    assert message(exc) == "replica/energy: appended shape (4,) does not match stored shape (3,)"
    assert store.replica.energy.read().shape == (1, 3)

    for i, (first, bad, new, held) in enumerate(SHAPE_MISMATCHES):
        with subtests.test(first=first, bad=bad):
            fixed, appended = store.fixed[f"v{i}"], store.appended[f"v{i}"]
            fixed.write(first)
            appended.append(first)
            with pytest.raises(ValueError) as exc:
                appended.append(bad)
            assert message(exc) == f"appended/v{i}: appended shape {new} does not match stored shape {held}"
            with pytest.raises(ValueError) as exc:
                appended.write(bad, at_index=-1)
            assert message(exc) == f"appended/v{i}: written shape {new} does not match stored shape {held}"
            with pytest.raises(ValueError) as exc:
                fixed.write(bad)
            assert message(exc) == f"fixed/v{i}: written shape {new} does not match stored shape {held}"
            assert len(appended.read()) == 1
    with subtests.test(msg="a float32 array appended to a float64 variable is widened"):
        store.wide.append(np.array([0.5, 1.5]))
        store.wide.append(np.array([2.5, 3.5], dtype=np.float32))
        got = store.wide.read()
        assert got.dtype == np.float64
        assert got.tolist() == [[0.5, 1.5], [2.5, 3.5]]


# --- units ----------------------------------------------------------------------------------


def test_compatible_units_are_converted_to_the_stored_unit(open_store, subtests):
    store = open_store()
    with subtests.test(msg="kcal/mol appended to a kJ/mol variable"):
        assert store.replica.energy.append(Q(1.0, "kJ/mol")) == 0
        assert store.replica.energy.append(Q(1.0, "kcal/mol")) == 1
        assert store.replica.energy.append(-2.5 * ureg.kilocalorie / ureg.mole) == 2
        got = store.replica.energy.read()
        assert got.units == ureg.kilojoule / ureg.mole
        assert got.magnitude.tolist() == pytest.approx([1.0, 4.184, -10.46], rel=1e-12)
    with subtests.test(msg="write(at_index) converts too"):
        store.replica.energy.write(Q(2.0, "kcal/mol"), at_index=0)
        first = store.replica.energy.read(0)
        assert first.units == ureg.kilojoule / ureg.mole
        assert first.magnitude == pytest.approx(8.368, rel=1e-12)
    with subtests.test(msg="arrays"):
        store.pos.append(Q(np.array([1.0, 2.0]), "nm"))
        store.pos.append(Q(np.array([5.0, 20.0]), "angstrom"))
        got = store.pos.read()
        assert got.units == ureg.nanometer
        assert got.magnitude.reshape(-1).tolist() == pytest.approx([1.0, 2.0, 0.5, 2.0], rel=1e-12)
    with subtests.test(msg="fixed variables"):
        store.fixed.write(Q(1.0, "kJ/mol"))
        store.fixed.write(Q(1.0, "kcal/mol"))
        got = store.fixed.read()
        assert got.units == ureg.kilojoule / ureg.mole
        assert got.magnitude == pytest.approx(4.184, rel=1e-12)
    with subtests.test(msg="offset units"):
        store.temp.append(Q(25.0, "degC"))
        store.temp.append(Q(300.0, "kelvin"))
        assert store.temp.read().magnitude.tolist() == pytest.approx([25.0, 26.85], rel=1e-12)
    with subtests.test(msg="integer variables take conversions that give whole numbers only"):
        store.steps.append(Q(3, "meter"))
        assert store.steps.append(Q(300, "centimeter")) == 1  # exactly 3 m
        with pytest.raises(ValueError, match=r"^steps: "):
            store.steps.append(Q(3, "centimeter"))  # 0.03 m: would be truncated to 0
        got = store.steps.read()
        assert got.magnitude.dtype == np.int64
        assert got.magnitude.tolist() == [3, 3]
        assert got.units == ureg.meter
    store.ratio.append(Q(0.5, ""))
    store.close()
    store = open_store()
    with subtests.test(msg="after reopening"):
        assert store.replica.energy.append(Q(1.0, "kcal/mol")) == 3
        assert store.replica.energy.read(-1).magnitude == pytest.approx(4.184, rel=1e-12)
        assert store.ratio.append(Q(1.5, "dimensionless")) == 1
        got = store.ratio.read()
        assert got.units == ureg.dimensionless
        assert got.magnitude.tolist() == [0.5, 1.5]


def test_incompatible_unit_raises_dimensionality_error_and_writes_nothing(open_store):
    store = open_store()
    store.replica.energy.append(Q(1.0, "kJ/mol"))
    store.fixed.write(Q(1.0, "kJ/mol"))
    with pytest.raises(pint.DimensionalityError) as exc:
        store.replica.energy.append(Q(1.0, "nanometer"))
    assert "replica/energy" in str(exc.value)
    with pytest.raises(pint.DimensionalityError):
        store.replica.energy.write(Q(1.0, "nanometer"), at_index=0)
    with pytest.raises(pint.DimensionalityError):
        store.fixed.write(Q(2.0, "kelvin"))
    got = store.replica.energy.read()
    assert got.magnitude.tolist() == [1.0]  # length unchanged, entry unchanged
    assert store.fixed.read().magnitude == 1.0
    assert store.replica.energy.append(Q(2.0, "kJ/mol")) == 1


# --- unsupported values ------------------------------------------------------------------------

# value, the type name the TypeError must give
UNSUPPORTED = [
    ({1, 2}, "set"),
    (frozenset({1}), "frozenset"),
    (object(), "object"),
    (b"bytes", "bytes"),
    (bytearray(b"x"), "bytearray"),
    (1j, "complex"),
    (None, "NoneType"),
    (datetime.date(2020, 1, 1), "datetime.date"),
    (np.zeros(2, dtype=complex), "numpy.ndarray of complex128"),
    (np.zeros(2, dtype=np.float16), "numpy.ndarray of float16"),
    (np.array([1, "a"], dtype=object), "numpy.ndarray of object"),
    (np.array(["a", "b"]), "numpy.ndarray of <U1"),
    (np.float16(1.0), "numpy.float16"),
    (np.complex128(1.0), "numpy.complex128"),
    ({"a": {1, 2}}, "set"),
    ({"a": [1, b"x"]}, "bytes"),
    ({"when": datetime.date(2020, 1, 1)}, "datetime.date"),
    ({"z": 1j}, "complex"),
    ({"arr": np.zeros(2, dtype=complex)}, "numpy.ndarray of complex128"),
    ([1, object()], "object"),
    (["a", b"x"], "bytes"),
    ((1, {2}), "set"),
]


def test_unsupported_values_raise_type_error_and_create_nothing(open_store, subtests):
    store = open_store()
    store.keep.write(1)  # something that exists, so the listing is not trivially empty
    for i, (value, type_name) in enumerate(UNSUPPORTED):
        for verb in ("write", "append"):
            with subtests.test(value=value, verb=verb):
                proxy = store[f"bad{i}_{verb}/x"]
                with pytest.raises(TypeError) as exc:
                    getattr(proxy, verb)(value)
                assert message(exc) == f"bad{i}_{verb}/x: cannot store a value of type {type_name!r}"
                assert f"bad{i}_{verb}" not in store
    with subtests.test(msg="quantity of a complex number or array"):
        with pytest.raises(TypeError) as exc:
            store.q.x.write(Q(1j, "meter"))
        assert message(exc) == "q/x: cannot store a value of type 'pint.Quantity of complex'"
        with pytest.raises(TypeError) as exc:
            store.q.y.append(Q(np.ones(2, dtype=complex), "meter"))
        assert message(exc) == "q/y: cannot store a value of type 'pint.Quantity of numpy.ndarray of complex128'"
    with subtests.test(msg="unsupported content for an existing variable changes nothing"):
        store.d.append({"a": 1})
        store.l.write([1, "a"])
        with pytest.raises(TypeError) as exc:
            store.d.append({"a": {1}})
        assert message(exc) == "d: cannot store a value of type 'set'"
        with pytest.raises(TypeError) as exc:
            store.l.write([1, b"x"])
        assert message(exc) == "l: cannot store a value of type 'bytes'"
        assert store.d.read() == [{"a": 1}]
        assert store.l.read() == [1, "a"]
    assert list(store) == ["d", "keep", "l"]


TOO_BIG = [2**63, 2**64, -(2**63) - 1, 2**70, [1, 2**64], (2**63,), Q(2**64, "meter")]


def test_values_the_file_cannot_hold_raise_value_error_and_create_nothing(open_store, subtests):
    store = open_store()
    for value in TOO_BIG:
        with subtests.test(msg="integers beyond 64 bits", value=value):
            with pytest.raises(ValueError, match="does not fit in 64 bits"):
                store.big.x.write(value)
            with pytest.raises(ValueError, match="does not fit in 64 bits"):
                store.big.y.append(value)
    with subtests.test(msg="zero-length axes"):
        with pytest.raises(ValueError) as exc:
            store.g.empty.write(np.zeros(0))
        assert message(exc) == "g/empty: cannot store shape (0,): NetCDF has no fixed zero-length axes"
        with pytest.raises(ValueError) as exc:
            store.g.empty2.append(np.zeros((2, 0)))
        assert message(exc) == "g/empty2: cannot store shape (2, 0): NetCDF has no fixed zero-length axes"
    with subtests.test(msg="str with NUL (netCDF would cut it there)"):
        with pytest.raises(ValueError, match=r"^g/nul: .*NUL"):
            store.g.nul.write("a\x00b")
        with pytest.raises(ValueError, match=r"^g/nul2: .*NUL"):
            store.g.nul2.append("a\x00b")
    assert list(store) == []
    with subtests.test(msg="inside a dict or list, NUL is fine: it is YAML-escaped"):
        store.ok.write({"a": "x\x00y"})
        store.ok2.write(["x\x00y", 1])
        assert store.ok.read() == {"a": "x\x00y"}
        assert store.ok2.read() == ["x\x00y", 1]


# --- missing variables, directories vs variables -------------------------------------------------


def test_reading_a_missing_variable_raises_key_error(open_store):
    store = open_store()
    store.grp.present.write(1)
    with pytest.raises(KeyError) as exc:
        store.nothing.read()
    assert message(exc) == "nothing: no variable stored here"
    with pytest.raises(KeyError) as exc:
        store.grp.missing.read()
    assert message(exc) == "grp/missing: no variable stored here"
    with pytest.raises(KeyError) as exc:
        store["a/b/c"].read()
    assert message(exc) == "a/b/c: no variable stored here"
    with pytest.raises(KeyError):
        store.grp.missing2.read(0)
    assert list(store) == ["grp"]
    assert list(store.grp) == ["present"]


def test_directory_and_variable_misuse_raises_attribute_error(open_store, subtests):
    store = open_store()
    store.fixed.write(1.0)
    store.replica.energy.append(1.0)
    with subtests.test(msg="a variable used as a directory"):
        with pytest.raises(AttributeError) as exc:
            store.fixed.sub.write(2.0)
        assert str(exc.value) == "fixed: is a variable; it cannot hold 'sub'"
        with pytest.raises(AttributeError):
            store["fixed/sub"]
        with pytest.raises(AttributeError, match=r"^fixed: is a variable, not a directory$"):
            list(store.fixed)
        with pytest.raises(AttributeError, match=r"^fixed: is a variable, not a directory$"):
            "x" in store.fixed  # noqa: B015
    for verb, args in (("write", (1.0,)), ("append", (1.0,)), ("read", ())):
        with subtests.test(msg="a directory used as a variable", verb=verb):
            with pytest.raises(AttributeError) as exc:
                getattr(store.replica, verb)(*args)
            assert str(exc.value) == f"replica: is a directory; cannot {verb}() on it"
    assert store.fixed.read() == 1.0
    assert list(store.replica) == ["energy"]
    assert list(store) == ["fixed", "replica"]


def test_directory_variable_conflicts_found_on_disk_after_reopen(open_store):
    """A fresh store does not know yet what a name is: the driver refuses (TypeError), nothing changes."""
    store = open_store()
    store.fixed.write(1.0)
    store.replica.energy.append(1.0)
    store.close()
    store = open_store()
    with pytest.raises(TypeError) as exc:
        store.fixed.sub.write(2.0)
    assert message(exc) == "fixed/sub: 'fixed' is a variable, not a directory"
    with pytest.raises(TypeError) as exc:
        store.replica.write(2.0)
    assert message(exc) == "replica: is a directory, not a variable"
    with pytest.raises(TypeError) as exc:
        store["replica"].read()
    assert message(exc) == "replica: is a directory, not a variable"
    # the proxies above took roles from how they were used; a fresh tree over the same driver checks the file
    fresh = StorageInterface(store.storage_driver)
    assert fresh.fixed.read() == 1.0
    assert fresh.replica.energy.read().tolist() == [1.0]
    assert list(fresh) == ["fixed", "replica"]


# --- reserved names, listing, nesting, paths ------------------------------------------------------


def test_reserved_names_are_reachable_by_item_access(open_store):
    store = open_store()
    assert callable(store.grp.read)  # the proxy's own method, not a stored variable
    for i, name in enumerate(sorted(RESERVED_NAMES)):
        store[f"grp/{name}"].write(i)
    store["grp/_private"].append(1.5)
    store["write"].write("root level")
    assert list(store.grp) == sorted([*RESERVED_NAMES, "_private"])
    with pytest.raises(AttributeError, match="reserved"):
        store.write  # noqa: B018
    with pytest.raises(AttributeError):
        store._private  # noqa: B018
    store.close()
    store = open_store()
    for i, name in enumerate(sorted(RESERVED_NAMES)):
        assert store[f"grp/{name}"].read() == i
        assert store.grp[name].read() == i
        assert name in store.grp
    assert store["grp/_private"].read().tolist() == [1.5]
    assert store["write"].read() == "root level"
    assert list(store) == ["grp", "write"]


def test_contains_iteration_and_nesting_reflect_the_file(open_store, subtests):
    store = open_store()
    store.z.write(1)
    store.a.x.append(1.0)
    store.a.y.b.write("s")
    store.a.b.c.d.e.write(5)
    store["a/b/other"].append(1)
    store["énergie/état"].write(1.0)
    store["with space/x y"].append(2)
    deep = "/".join(f"l{i}" for i in range(32))
    store[deep].write(1.5)
    store.ghost  # a proxy that is never written  # noqa: B018
    store.a.ghost.child  # noqa: B018
    with subtests.test(msg="too deep"):
        with pytest.raises(ValueError, match="deeper than 32 levels"):
            store[deep + "/l32"].write(1)

    def check(store):
        assert list(store) == ["a", "l0", "with space", "z", "énergie"]
        assert list(store.a) == ["b", "x", "y"]
        assert list(store.a.y) == ["b"]
        assert list(store["a/b"]) == ["c", "other"]
        assert list(store.a.b.c) == ["d"]
        assert "a" in store and "z" in store and "énergie" in store
        assert "ghost" not in store and "x" not in store
        assert "x" in store.a and "ghost" not in store.a and "b" in store.a.y
        assert list(store.ghost) == []
        assert "anything" not in store.ghost
        assert store["a/b/c/d/e"].read() == 5
        assert store.a.b.c.d.e.read() == 5
        assert store["/a/b/c/d/e/"].read() == 5  # leading and trailing slashes are fine
        assert store["énergie/état"].read() == 1.0
        assert store["with space"]["x y"].read().tolist() == [2]
        assert store[deep].read() == 1.5

    with subtests.test(msg="in the session"):
        check(store)
    store.close()
    with subtests.test(msg="after reopening"):
        check(open_store())


BAD_PATHS = ["a//b", "a/../b", "./a", "a/.", "..", "a\x00b", "a/b\nc", "a\x7fb", "tab\tname", " a", "a/b "]


def test_bad_paths_raise_value_error(open_store, subtests):
    store = open_store()
    for path in BAD_PATHS:
        with subtests.test(path=path):
            with pytest.raises(ValueError):
                store[path]
    for name in ("bad\x01name", "..", "new\nline", " padded"):
        with subtests.test(attribute=name):
            with pytest.raises(ValueError):
                getattr(store.grp, name).write(1)
            with pytest.raises(ValueError):
                getattr(store.grp2, name).append(1)
    with subtests.test(path="too long"):
        with pytest.raises(ValueError, match="longer than 1024"):
            store["x" * 1025].write(1)
    with pytest.raises(KeyError):
        store[""]
    with pytest.raises(KeyError):
        store["/"]
    assert list(store) == []


# --- access modes (NetCDFIODriver's own argument) ---------------------------------------------------


def _make_file(path):
    store = StorageInterface(NetCDFIODriver(str(path)))
    store.grp.e.append(1.0)
    store.grp.x.write("text")
    store.add_metadata("title", "t")
    store.close()


def test_read_only_mode_reads_and_rejects_every_write(tmp_path):
    path = tmp_path / "run.nc"
    _make_file(path)
    before = path.read_bytes()
    store = StorageInterface(NetCDFIODriver(str(path), access_mode="r"))
    assert store.grp.e.read().tolist() == [1.0]
    assert store.grp.x.read() == "text"
    assert list(store) == ["grp"]
    assert store.metadata == {"title": "t"}
    attempts = [
        lambda: store.grp.e.append(2.0),
        lambda: store.grp.e.write(2.0, at_index=0),
        lambda: store.grp.x.write("other"),
        lambda: store.grp.new.write(1),
        lambda: store.other.new.append(1),
        lambda: store.add_metadata("k", 1),
        lambda: store.grp.add_metadata("k", 1),
        lambda: store.grp.e.add_metadata("k", 1),
        lambda: store.storage_driver.get_directory("newdir"),
    ]
    for attempt in attempts:
        with pytest.raises(PermissionError, match="read-only"):
            attempt()
    store.sync()
    store.close()
    assert path.read_bytes() == before


def test_write_mode_clobbers_an_existing_file(tmp_path):
    path = tmp_path / "run.nc"
    _make_file(path)
    store = StorageInterface(NetCDFIODriver(str(path), access_mode="w"))
    assert list(store) == []
    assert store.metadata == {}
    store.fresh.write(1)
    store.close()
    store = StorageInterface(NetCDFIODriver(str(path)))
    assert list(store) == ["fresh"]
    store.close()


def test_append_mode_needs_an_existing_file(tmp_path):
    missing = tmp_path / "missing.nc"
    with pytest.raises(FileNotFoundError, match="missing.nc"):
        NetCDFIODriver(str(missing), access_mode="a")
    assert not missing.exists()
    path = tmp_path / "run.nc"
    _make_file(path)
    store = StorageInterface(NetCDFIODriver(str(path), access_mode="a"))
    assert store.grp.e.append(2.0) == 1
    assert store.grp.e.read().tolist() == [1.0, 2.0]
    store.close()


def test_default_mode_creates_then_appends(tmp_path):
    path = tmp_path / "run.nc"
    store = StorageInterface(NetCDFIODriver(str(path)))
    store.e.append(1)
    store.close()
    store = StorageInterface(NetCDFIODriver(str(path)))
    assert store.e.append(2) == 1
    store.close()


def test_read_only_mode_on_a_missing_file_raises_os_error(tmp_path):
    with pytest.raises(OSError):
        NetCDFIODriver(str(tmp_path / "missing.nc"), access_mode="r")
    with pytest.raises(ValueError, match="access_mode"):
        NetCDFIODriver(str(tmp_path / "x.nc"), access_mode="rw")
