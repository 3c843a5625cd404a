"""Round trips of every contract type through the public API, for every driver.

Fixed variables (``write``) and appendable ones (``append``) are read back in the
same session and after close + reopen. The checks are strict: the Python type,
numpy dtype and shape of what comes back must be exactly the expected ones.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from nstore import ureg

Q = ureg.Quantity


# --- strict comparison -------------------------------------------------------------------


def assert_same(actual, expected, where="value"):
    """Equal value AND same type (tuple vs list, numpy dtype, quantity unit) all the way down."""
    assert type(actual) is type(expected), f"{where}: {type(actual)!r} is not {type(expected)!r} ({actual!r})"
    if isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
        assert actual.shape == expected.shape, f"{where}: shape {actual.shape} != {expected.shape}"
        assert np.array_equal(actual, expected, equal_nan=expected.dtype.kind == "f"), f"{where}: {actual!r} != {expected!r}"
    elif isinstance(expected, np.generic):
        assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
    elif isinstance(expected, Q):
        assert actual.units == expected.units, f"{where}: unit {actual.units} != {expected.units}"
        assert_same(actual.magnitude, expected.magnitude, f"{where}.magnitude")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{where}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual)
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def test_assert_same_is_strict():
    """The helper itself must tell apart what the suite relies on it to tell apart."""
    for a, b in [
        ((1, 2), [1, 2]),
        (np.arange(3, dtype=np.int32), np.arange(3, dtype=np.int64)),
        (np.float32(1.5), np.float64(1.5)),
        (1, 1.0),
        (True, 1),
        (Q(1.0, "m"), Q(1.0, "cm")),
        (Q(1, "m"), Q(1.0, "m")),
        ({"a": (1,)}, {"a": [1]}),
        (np.zeros((2, 3)), np.zeros((3, 2))),
        ([np.int64(1)], [1]),
    ]:
        with pytest.raises(AssertionError):
            assert_same(a, b)


# --- the cases ------------------------------------------------------------------------------

NESTED_DICT = {
    "energy": Q(-1.5, "kilojoule/mole"),
    "count": Q(3, "meter"),
    "positions": Q(np.arange(6.0).reshape(2, 3), "nanometer"),
    "ids": np.array([1, 2, 3], dtype=np.int32),
    "mask": np.array([True, False]),
    "matrix": np.eye(2),
    "items": [1, "two", 3.0, None, [4, (5, 6)]],
    "pair": (1, "b", (2.5,)),
    "missing": None,
    "name": "replica 1",
    "flag": True,
    7: "int key",
    "nested": {"deeper": {"temperature": Q(300.0, "kelvin"), "empty": {}, "empty_list": []}},
}
NESTED_DICT_2 = {"energy": Q(2.0, "kilojoule/mole"), "items": ["x"], "nested": {"n": None}}

# id, first value, second value, stacked read of [first, second] after two appends
CASES = [
    ("int", 5, -7, np.array([5, -7], dtype=np.int64)),
    ("int_extremes", 2**63 - 1, -(2**63), np.array([2**63 - 1, -(2**63)], dtype=np.int64)),
    ("float", 2.5, -0.125, np.array([2.5, -0.125])),
    ("bool", True, False, np.array([True, False])),
    ("str", "héllo wörld ✓", "", ["héllo wörld ✓", ""]),
    ("list_int", [1, 2, 3], [4, 5, 6], [[1, 2, 3], [4, 5, 6]]),
    ("list_float", [0.5, 1.5], [-2.25, 3.0], [[0.5, 1.5], [-2.25, 3.0]]),
    ("list_mixed", [1, "a", 2.5, None], [True, "b"], [[1, "a", 2.5, None], [True, "b"]]),
    ("list_str", ["alpha", "beta"], ["yes", "null", "1e3", "~"], [["alpha", "beta"], ["yes", "null", "1e3", "~"]]),
    ("list_nested", [[1, 2], (3, 4)], [], [[[1, 2], (3, 4)], []]),
    ("tuple_int", (1, 2), (3, 4), [(1, 2), (3, 4)]),
    ("tuple_float", (1.5,), (2.5,), [(1.5,), (2.5,)]),
    ("tuple_mixed", (1, "x", [2, 3]), ("y",), [(1, "x", [2, 3]), ("y",)]),
    ("dict", NESTED_DICT, NESTED_DICT_2, [NESTED_DICT, NESTED_DICT_2]),
    ("ndarray_float64", np.array([0.5, 1.5, np.nan]), np.array([2.0, np.inf, -0.0]), np.array([[0.5, 1.5, np.nan], [2.0, np.inf, -0.0]])),
    ("ndarray_float32", np.arange(3, dtype=np.float32), np.ones(3, dtype=np.float32), np.array([[0, 1, 2], [1, 1, 1]], dtype=np.float32)),
    ("ndarray_int32", np.array([-1, 0, 2**31 - 1], dtype=np.int32), np.zeros(3, dtype=np.int32), np.array([[-1, 0, 2**31 - 1], [0, 0, 0]], dtype=np.int32)),
    ("ndarray_uint8", np.array([0, 128, 255], dtype=np.uint8), np.array([1, 2, 3], dtype=np.uint8), np.array([[0, 128, 255], [1, 2, 3]], dtype=np.uint8)),
    ("ndarray_bool", np.array([True, False, True]), np.array([False, False, True]), np.array([[True, False, True], [False, False, True]])),
    ("ndarray_0d", np.array(3.5), np.array(-1.0), np.array([3.5, -1.0])),
    ("ndarray_2d", np.arange(6.0).reshape(2, 3), np.full((2, 3), 7.0), np.stack([np.arange(6.0).reshape(2, 3), np.full((2, 3), 7.0)])),
    ("ndarray_1elem", np.array([4], dtype=np.int64), np.array([5], dtype=np.int64), np.array([[4], [5]], dtype=np.int64)),
    ("np_float64", np.float64(1.25), np.float64(-2.5), np.array([1.25, -2.5], dtype=np.float64)),
    ("np_int32", np.int32(7), np.int32(-(2**31)), np.array([7, -(2**31)], dtype=np.int32)),
    ("np_float32", np.float32(2.5), np.float32(0.1), np.array([2.5, 0.1], dtype=np.float32)),
    ("np_bool", np.bool_(True), np.bool_(False), np.array([True, False])),
    ("np_uint64", np.uint64(2**64 - 1), np.uint64(0), np.array([2**64 - 1, 0], dtype=np.uint64)),
    ("quantity_int", Q(3, "meter"), Q(-4, "meter"), Q(np.array([3, -4], dtype=np.int64), "meter")),
    ("quantity_float", Q(-1.5, "kilojoule/mole"), Q(2.0, "kilojoule/mole"), Q(np.array([-1.5, 2.0]), "kilojoule/mole")),
    # pint itself turns list and tuple magnitudes into ndarrays
    ("quantity_list", Q([1.0, 2.0], "nanometer"), Q([3.0, 4.0], "nanometer"), Q(np.array([[1.0, 2.0], [3.0, 4.0]]), "nanometer")),
    ("quantity_tuple", Q((1, 2), "nanometer"), Q((3, 4), "nanometer"), Q(np.array([[1, 2], [3, 4]]), "nanometer")),
    ("quantity_ndarray", Q(np.arange(3.0), "kelvin"), Q(np.ones(3), "kelvin"), Q(np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]), "kelvin")),
    ("quantity_ndarray_f32", Q(np.arange(2, dtype=np.float32), "bar"), Q(np.ones(2, dtype=np.float32), "bar"), Q(np.array([[0, 1], [1, 1]], dtype=np.float32), "bar")),
    ("quantity_2d", Q(np.eye(2), "angstrom"), Q(np.zeros((2, 2)), "angstrom"), Q(np.stack([np.eye(2), np.zeros((2, 2))]), "angstrom")),
    ("quantity_offset_unit", Q(25.0, "degC"), Q(-10.0, "degC"), Q(np.array([25.0, -10.0]), "degC")),
    ("quantity_dimensionless", Q(0.5, ""), Q(1.5, ""), Q(np.array([0.5, 1.5]), "")),
]
IDS = [case[0] for case in CASES]


def check_appendable(var, first, second, stacked):
    assert_same(var.read(), stacked, "read()")
    assert_same(var.read(0), first, "read(0)")
    assert_same(var.read(1), second, "read(1)")
    assert_same(var.read(-1), second, "read(-1)")
    assert_same(var.read(-2), first, "read(-2)")


def test_round_trip_of_every_type(open_store, subtests):
    """Every case: fixed and appendable, in the session and after two reopenings.

    One store for all cases (a daemon start per store is what costs time); each
    case is its own subtest, so one failure does not hide the others.

    session 1: fixed <- first;  appendable <- first, second
    session 2: reads; fixed <- second (overwrite); appendable[0] <- second, [-1] <- first; append first
    session 3: reads of the final state
    """
    store = open_store()
    for name, first, second, stacked in CASES:
        with subtests.test(msg="session 1", case=name):
            store.fixed[name].write(first)
            assert_same(store.fixed[name].read(), first, "fixed")
            assert store.appended[name].append(first) == 0
            assert store.appended[name].append(second) == 1
            check_appendable(store.appended[name], first, second, stacked)
    store.close()

    store = open_store()
    for name, first, second, stacked in CASES:
        with subtests.test(msg="session 2", case=name):
            assert_same(store.fixed[name].read(), first, "fixed after reopen")
            assert_same(store["fixed/" + name].read(), first, "fixed via store[path]")
            check_appendable(store.appended[name], first, second, stacked)
            store.fixed[name].write(second)
            assert_same(store.fixed[name].read(), second, "fixed overwritten")
            store.appended[name].write(second, at_index=0)
            store.appended[name].write(first, at_index=-1)
            assert store.appended[name].append(first) == 2  # numbering continues after reopening
            assert_same(store.appended[name].read(slice(0, 2)), stacked_like(stacked, second, first), "entries after at_index")
    store.close()

    store = open_store()
    for name, first, second, stacked in CASES:
        with subtests.test(msg="session 3", case=name):
            assert_same(store.fixed[name].read(), second, "fixed overwritten, after reopen")
            var = store.appended[name]
            assert_same(var.read(0), second, "read(0)")
            assert_same(var.read(1), first, "read(1)")
            assert_same(var.read(2), first, "read(2)")
            assert_same(var.read(-3), second, "read(-3)")
            assert_same(var.read(slice(None, None, -1)), stacked_like(stacked, first, first, second), "read(::-1)")


def stacked_like(like, *entries):
    """The stacked read form of ``entries``, for a variable whose stacked form looks like ``like``."""
    if isinstance(like, Q):
        return Q(np.stack([np.asarray(e.magnitude) for e in entries]).astype(like.magnitude.dtype), like.units)
    if isinstance(like, np.ndarray):
        return np.stack([np.asarray(e) for e in entries]).astype(like.dtype)
    return list(entries)


def test_quantity_of_list_is_an_ndarray_quantity():
    """Why the quantity_list/tuple expectations hold ndarrays: pint converts them, not nstore."""
    assert type(Q([1.0, 2.0], "nm").magnitude) is np.ndarray
    assert type(Q((1, 2), "nm").magnitude) is np.ndarray


# --- edge values ------------------------------------------------------------------------------

SPECIAL_TEXTS = ["null", "true", "1e3", "~", "- item", "a: b", "!tuple", " padded ", "line\nbreak", "tab\there", "\u2028", "ünïcødé ✓ 𝄞"]
FLOAT_EDGES = [0.0, -0.0, 5e-324, 1.7976931348623157e308, float("inf"), float("-inf"), 0.1 + 0.2]
_RNG = np.random.default_rng(0)
BIG_1, BIG_2 = _RNG.normal(size=(64, 300)), _RNG.normal(size=(64, 300))  # 150 kB entries
_BASE = np.arange(24.0).reshape(4, 6)
NON_CONTIGUOUS = _BASE[::2, ::3].T  # shape (2, 2), a strided view


def _store_edge_values(store):
    for name, value in {"el": [], "et": (), "ed": {}, "es": ""}.items():
        store.empty[name].write(value)
        store.empty["app_" + name].append(value)
        store.empty["app_" + name].append(value)
    for i, text in enumerate(SPECIAL_TEXTS):
        store.texts[f"s{i}"].write(text)
        store.texts.appended.append(text)
    store.texts.as_list.write(SPECIAL_TEXTS)
    for v in FLOAT_EDGES:
        store.floats.appended.append(v)
    store.floats.as_list.write(FLOAT_EDGES)
    store.floats.in_dict.write({"values": FLOAT_EDGES, "nan": float("nan")})
    store.big.appended.append(BIG_1)
    store.big.appended.append(BIG_2)
    store.big.fixed.write(BIG_1.astype(np.float32))
    store.strided.fixed.write(NON_CONTIGUOUS)
    store.strided.appended.append(NON_CONTIGUOUS)
    store.big_endian.write(np.array([1.5, -2.0, 3.25], dtype=">f8"))
    store.q_np.f.write(Q(np.float64(1.5), "meter"))
    store.q_np.i.write(Q(np.int32(3), "meter"))


def _check_edge_values(store, subtests):
    with subtests.test(msg="empty containers"):
        for name, value in {"el": [], "et": (), "ed": {}, "es": ""}.items():
            assert_same(store.empty[name].read(), value, name)
            assert_same(store.empty["app_" + name].read(), [value, value], "app_" + name)
    with subtests.test(msg="strings YAML or netCDF could misread"):
        for i, text in enumerate(SPECIAL_TEXTS):
            assert_same(store.texts[f"s{i}"].read(), text, f"s{i}")
        assert_same(store.texts.appended.read(), SPECIAL_TEXTS, "appended")
        assert_same(store.texts.as_list.read(), SPECIAL_TEXTS, "as_list")
    with subtests.test(msg="float edge values, bit-exact"):
        got = store.floats.appended.read()
        assert got.dtype == np.float64
        assert [x.hex() for x in got.tolist()] == [v.hex() for v in FLOAT_EDGES]
        assert [x.hex() for x in store.floats.as_list.read()] == [v.hex() for v in FLOAT_EDGES]
        in_dict = store.floats.in_dict.read()
        assert [x.hex() for x in in_dict["values"]] == [v.hex() for v in FLOAT_EDGES]
        assert math.isnan(in_dict["nan"])
    with subtests.test(msg="large arrays"):
        assert_same(store.big.appended.read(), np.stack([BIG_1, BIG_2]))
        assert_same(store.big.appended.read(1), BIG_2)
        assert_same(store.big.fixed.read(), BIG_1.astype(np.float32))
    with subtests.test(msg="strided views are stored by value"):
        assert_same(store.strided.fixed.read(), np.ascontiguousarray(NON_CONTIGUOUS))
        assert_same(store.strided.appended.read(0), np.ascontiguousarray(NON_CONTIGUOUS))
    with subtests.test(msg="big-endian array"):
        got = store.big_endian.read()
        assert got.dtype.kind == "f" and got.dtype.itemsize == 8
        assert got.tolist() == [1.5, -2.0, 3.25]
    with subtests.test(msg="numpy scalar magnitudes come back as Python numbers"):
        assert_same(store.q_np.f.read(), Q(1.5, "meter"))
        assert_same(store.q_np.i.read(), Q(3, "meter"))


def test_edge_values_round_trip(open_store, subtests):
    store = open_store()
    _store_edge_values(store)
    _check_edge_values(store, subtests)
    store.close()
    _check_edge_values(open_store(), subtests)


# --- reading entries and slices ---------------------------------------------------------------

INTS = [0, 10, 20, 30, 40, 50]
SLICES = [
    slice(None),
    slice(1, 4),
    slice(None, None, 2),
    slice(1, None, 3),
    slice(None, None, -1),
    slice(None, None, -2),
    slice(4, 1, -1),
    slice(-1, -6, -2),
    slice(-2, None),
    slice(-100, 2),
    slice(2, 100),
    slice(5, 6),
    slice(3, 3),
    slice(10, 20),
    slice(4, 1),
    slice(1, 4, -1),
    slice(-1, -1),
]


def _check_slices_and_entries(store, subtests):
    for index in SLICES:
        with subtests.test(msg="slice", index=index):
            expected = INTS[index]
            assert_same(store.ints.read(index), np.array(expected, dtype=np.int64), "ints")
            assert_same(store.texts.read(index), [f"t{v}" for v in expected], "texts")
            rows = np.array([[v, v + 1] for v in expected], dtype=np.int32).reshape(len(expected), 2)
            assert_same(store.rows.read(index), rows, "rows")
            assert_same(store.q.read(index), Q(np.array(expected, dtype=np.float64), "kelvin"), "q")
            assert_same(store.pairs.read(index), [(v, v + 1) for v in expected], "pairs")
    for index in [0, 1, 5, -1, -2, -6]:
        with subtests.test(msg="entry", index=index):
            v = INTS[index]
            assert_same(store.ints.read(index), v, "ints")
            assert_same(store.texts.read(index), f"t{v}", "texts")
            assert_same(store.rows.read(index), np.array([v, v + 1], dtype=np.int32), "rows")
            assert_same(store.q.read(index), Q(float(v), "kelvin"), "q")
            assert_same(store.pairs.read(index), (v, v + 1), "pairs")
    for index in [6, 7, -7, 100, -100]:
        with subtests.test(msg="out of range", index=index):
            with pytest.raises(ValueError) as exc:
                store.ints.read(index)
            assert str(exc.value) == f"ints: index {index} is out of range for 6 stored entries"


def test_read_entries_and_slices(open_store, subtests):
    store = open_store()
    for v in INTS:
        store.ints.append(v)
        store.texts.append(f"t{v}")
        store.rows.append(np.array([v, v + 1], dtype=np.int32))
        store.q.append(Q(float(v), "kelvin"))
        store.pairs.append((v, v + 1))
    store.m.append(np.zeros((2, 3), dtype=np.float32))
    _check_slices_and_entries(store, subtests)
    with subtests.test(msg="empty slice of 2-D entries keeps the entry shape"):
        assert_same(store.m.read(slice(1, 1)), np.zeros((0, 2, 3), dtype=np.float32))
    store.close()
    _check_slices_and_entries(open_store(), subtests)


def test_index_types(open_store, subtests):
    store = open_store()
    for v in INTS:
        store.ints.append(v)
    store.x.write(np.arange(3))
    with subtests.test(msg="numpy integers work like ints (they often come from argmax, arange, ...)"):
        assert_same(store.ints.read(np.int64(3)), 30)
        assert_same(store.ints.read(np.int32(-1)), 50)
        store.ints.write(7, at_index=np.int64(0))
        store.ints.write(8, at_index=np.int32(-1))
        assert_same(store.ints.read(), np.array([7, 10, 20, 30, 40, 8], dtype=np.int64))
    for index in [1.0, "1", True, [1]]:
        with subtests.test(msg="other index types raise TypeError", index=index):
            with pytest.raises(TypeError, match=r"^ints: index must be an int"):
                store.ints.read(index)
    with subtests.test(msg="a fixed variable takes no index"):
        with pytest.raises(TypeError) as exc:
            store.x.read(0)
        assert str(exc.value) == "x: was stored with write(); read() takes no index for it"
        with pytest.raises(TypeError, match=r"^x: was stored with write\(\)"):
            store.x.read(slice(0, 1))
    assert_same(store.ints.read(), np.array([7, 10, 20, 30, 40, 8], dtype=np.int64))
