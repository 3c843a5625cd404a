"""The kind registry (``nstore.protocol.kinds``): each entry matches, encodes, decodes, sizes and describes
its values; unknown types raise the same TypeError as before; ``payload_bytes`` counts as the daemon did."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nstore import ureg
from nstore.protocol import kinds
from nstore.protocol.errors import UnsupportedTypeError
from nstore.protocol.units import is_quantity
from nstore.protocol.values import pack, unpack

Q = ureg.Quantity
FEW = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# One example per kind: value, IODriver_Type, classic ``type`` attribute, entry shape, Python type as inspect names it.
EXAMPLES = [
    (7, "int", "int", (1,), "int"),
    (2.5, "float", "float", (1,), "float"),
    (True, "bool", "bool", (1,), "bool"),
    (np.float32(1.5), "numpy.scalar", "float32", (1,), "numpy.float32"),
    ("héllo", "str", "str", (1,), "str"),
    ({"a": [1, "x"], "q": Q(2.0, "nm")}, "dict", "dict", (1,), "dict"),
    ([1, 2, 3], "iterable", "list", (3,), "list"),
    ((1.5, 2.5), "iterable", "tuple", (2,), "tuple"),
    ([1, "a", None], "yaml", "list", (1,), "list"),
    ((), "yaml", "tuple", (1,), "tuple"),
    (np.arange(6, dtype=np.int16).reshape(2, 3), "numpy.ndarray", "int16", (2, 3), "numpy.ndarray[int16]"),
    (np.array([True, False]), "numpy.ndarray", "bool", (2,), "numpy.ndarray[bool]"),
    (Q(-1.5, "kJ/mol"), "quantity", "float", (1,), "pint.Quantity[float]"),
    (Q(3, "m"), "quantity", "int", (1,), "pint.Quantity[int]"),
    (Q(np.ones(4, dtype=np.float32), "nm"), "quantity", "numpy.ndarray", (4,), "pint.Quantity[numpy.ndarray]"),
]


def _same(actual, expected) -> bool:
    if is_quantity(expected):
        return actual.units == expected.units and _same(actual.magnitude, expected.magnitude)
    if isinstance(expected, np.ndarray):
        return actual.dtype == expected.dtype and np.array_equal(actual, expected)
    if isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(_same(actual[k], v) for k, v in expected.items())
    return type(actual) is type(expected) and actual == expected


@pytest.mark.parametrize("value, io_type, type_attr, shape, python_type", EXAMPLES)
def test_each_kind_matches_encodes_and_decodes_its_values(value, io_type, type_attr, shape, python_type):
    sig = kinds.signature(value)
    assert (sig.io_type, sig.type_attr, tuple(sig.row_shape)) == (io_type, type_attr, shape)
    kind = kinds.KINDS[io_type]
    entry = kinds.encode(value, sig)
    if kind.storage == "text":
        assert isinstance(entry, str)
        raw = np.array([entry], dtype=object)
    else:
        raw = np.asarray(entry, dtype=sig.dtype).reshape(shape)
    assert _same(kind.decode_one(raw, sig), value)
    stacked = kind.decode_many(np.stack([raw, raw]), sig)
    assert [_same(e, value) for e in kinds.KINDS[io_type].entries_of(stacked, type_attr)] == [True, True]
    assert kinds.python_type(io_type, type_attr) == python_type
    assert _same(unpack(pack(value)), value)  # the wire keeps the kind's Python type


def test_stacked_forms():
    """decode_many gives the stacked form the README's table names for appendable variables."""
    sig = kinds.signature(1.5)
    assert kinds.KINDS["float"].decode_many(np.array([[1.0], [2.0]]), sig).tolist() == [1.0, 2.0]
    sig = kinds.signature(Q(1.0, "m"))
    many = kinds.KINDS["quantity"].decode_many(np.array([[1.0], [2.0]]), sig)
    assert str(many.units) == "meter" and many.magnitude.tolist() == [1.0, 2.0]
    sig = kinds.signature([1, 2])
    assert kinds.KINDS["iterable"].decode_many(np.array([[1, 2], [3, 4]]), sig) == [[1, 2], [3, 4]]


@pytest.mark.parametrize("value, name", [
    ({1, 2}, "set"), (b"x", "bytes"), (1j, "complex"), (fractions.Fraction(1, 3), "fractions.Fraction"),
    (np.complex64(1), "numpy.complex64"), (np.zeros(2, dtype=np.complex128), "numpy.ndarray of complex128"),
    (np.zeros(2, dtype=np.float16), "numpy.ndarray of float16"), (Q(1j, "m"), "pint.Quantity of complex"),
])
def test_unknown_types_raise_the_same_type_error(value, name):
    with pytest.raises(UnsupportedTypeError) as info:
        kinds.signature(value)
    assert isinstance(info.value, TypeError)
    assert str(info.value) == f"cannot store a value of type {name!r}"


def test_check_storable_type_names_type_and_path():
    for py_type in (int, float, bool, str, list, tuple, dict, np.ndarray, np.float32, np.uint8, type(Q(1, "m"))):
        kinds.check_storable_type(py_type, "a/b")  # no error
    for py_type, name in ((set, "set"), (np.complex128, "numpy.complex128"), (fractions.Fraction, "fractions.Fraction")):
        with pytest.raises(UnsupportedTypeError, match=f"^a/b: cannot store a value of type '{name}'$"):
            kinds.check_storable_type(py_type, "a/b")
    with pytest.raises(UnsupportedTypeError, match="^a/b: cannot store a value of type \"'int'\"$"):
        kinds.check_storable_type("int", "a/b")


def test_compatibility_rules():
    stored = kinds.signature(np.zeros(3, dtype=np.float64))
    kinds.check_compatible(stored, kinds.signature(np.zeros(3, dtype=np.float32)), "v", "append")  # widens
    with pytest.raises(TypeError, match="^v: cannot append numpy.ndarray of bool: the variable holds numpy.ndarray of float64$"):
        kinds.check_compatible(stored, kinds.signature(np.zeros(3, dtype=bool)), "v", "append")
    with pytest.raises(ValueError, match=r"^v: appended shape \(4,\) does not match stored shape \(3,\)$"):
        kinds.check_compatible(stored, kinds.signature(np.zeros(4)), "v", "append")
    classic = kinds.Signature("quantity", "list", (3,), np.dtype("float64"), "meter")  # a classic list quantity
    kinds.check_compatible(classic, kinds.signature(Q(np.zeros(3), "m")), "q", "write")
    with pytest.raises(TypeError, match="^q: cannot write list of int: the variable holds pint.Quantity of list$"):
        kinds.check_compatible(classic, kinds.signature([1, 2, 3]), "q", "write")


# --- sizes ----------------------------------------------------------------------------------------


def reference_payload_bytes(value, limit=1 << 62):
    """The daemon's count before the registry (daemon/server.py ``_payload_bytes``), kept as the oracle."""
    if type(value) in (float, int, bool, type(None)):
        return 8
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, np.ndarray):
            total += item.nbytes
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (str, bytes)):
            total += len(item)
        elif is_quantity(item):
            stack.append(item.magnitude)
        elif item is not None:
            total += 8
    return total


def test_payload_bytes_of_each_kind():
    assert kinds.payload_bytes(3) == kinds.payload_bytes(None) == kinds.payload_bytes(np.float32(1)) == 8
    assert kinds.payload_bytes("abcd") == 4 and kinds.payload_bytes(b"abc") == 3
    assert kinds.payload_bytes(np.zeros((2, 3))) == 48
    assert kinds.payload_bytes(Q(np.zeros(5, dtype=np.float32), "m")) == 20
    assert kinds.payload_bytes([1, None, "xy"]) == 10
    assert kinds.payload_bytes({"ab": np.zeros(2), "c": (1.0, {2})}) == 2 + 16 + 1 + 8 + 8
    arrays = [np.zeros(10), np.zeros(10), np.zeros(10)]  # 80 bytes each: counting stops past the limit
    assert kinds.payload_bytes(arrays, 100) == 160 and kinds.payload_bytes(arrays) == 240


leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.binary(max_size=8),
    hnp.arrays(st.sampled_from([np.int8, np.float32, np.float64]), hnp.array_shapes(max_dims=2, max_side=4)),
    st.floats(allow_nan=False).map(lambda x: Q(x, "m")), st.frozensets(st.integers(), max_size=2),
)
nested = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=3).map(tuple)
                      | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=12)


@FEW
@given(nested, st.integers(0, 200))
def test_payload_bytes_counts_exactly_as_the_daemon_did(value, limit):
    assert kinds.payload_bytes(value, limit) == reference_payload_bytes(value, limit)
    assert kinds.payload_bytes(value) == reference_payload_bytes(value)


def test_owned_copies_array_data_only():
    arr = np.arange(3.0)
    copy = kinds.owned(arr)
    arr[0] = 9.0
    assert copy[0] == 0.0
    q = Q(np.arange(3.0), "m")
    q_copy = kinds.owned(q)
    q.magnitude[0] = 9.0
    assert q_copy.magnitude[0] == 0.0 and q_copy.units == q.units
    for value in (1.5, "text", [np.zeros(1)], {"a": 1}, Q(1.0, "m")):
        assert kinds.owned(value) is value


def test_description_of_entry_shapes():
    assert kinds.has_shape("numpy.ndarray", "float32") and kinds.has_shape("iterable", "list")
    assert kinds.has_shape("quantity", "list") and kinds.has_shape("quantity", "numpy.ndarray")
    assert not kinds.has_shape("quantity", "float") and not kinds.has_shape("str", "str")
    assert kinds.python_type("quantity", "tuple") == "pint.Quantity[numpy.ndarray]"  # pint has no list magnitudes


def test_every_stored_extension_type_belongs_to_one_kind_code():
    codes = [wire.code for wire in kinds.WIRES]
    assert codes == sorted(set(codes)) and len(codes) == 4  # tuple, array, numpy scalar, quantity
