"""The wire encoding: ``unpack(pack(v))`` gives back ``v`` exactly, and garbage gives ProtocolError.

Property tests with hypothesis; example counts are kept modest so the suite stays fast.
"""

from __future__ import annotations

import math
import struct

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nstore import ureg
from nstore.protocol.errors import ProtocolError, UnsupportedTypeError
from nstore.protocol.values import (
    EXT_ARRAY,
    EXT_NUMPY_SCALAR,
    EXT_QUANTITY,
    EXT_SLICE,
    EXT_TUPLE,
    INLINE_ARRAY_BYTES,
    MAX_EXT_DEPTH,
    pack,
    unpack,
)

Q = ureg.Quantity
SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
MALFORMED_SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# --- exact comparison --------------------------------------------------------------------------


def assert_identical(actual, expected, where="value"):
    """Same type all the way down, same dtype and shape, bit-identical numbers (NaN and -0.0 too)."""
    assert type(actual) is type(expected), f"{where}: {type(actual)!r} is not {type(expected)!r}"
    if isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
        assert actual.shape == expected.shape, f"{where}: shape {actual.shape} != {expected.shape}"
        assert actual.tobytes() == expected.tobytes(), f"{where}: data differs"
    elif isinstance(expected, np.generic):
        assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
        assert actual.tobytes() == expected.tobytes(), f"{where}: {actual!r} != {expected!r}"
    elif isinstance(expected, Q):
        assert actual.units == expected.units, f"{where}: unit {actual.units} != {expected.units}"
        assert_identical(actual.magnitude, expected.magnitude, f"{where}.magnitude")
    elif isinstance(expected, float):
        assert struct.pack("<d", actual) == struct.pack("<d", expected), f"{where}: {actual!r} != {expected!r}"
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{where}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_identical(a, e, f"{where}[{i}]")
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{where}: keys {list(actual)!r} != {list(expected)!r}"
        for (ka, va), (ke, ve) in zip(actual.items(), expected.items()):
            assert_identical(ka, ke, f"{where} key {ke!r}")
            assert_identical(va, ve, f"{where}[{ke!r}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def test_assert_identical_is_strict():
    for a, b in [
        ((1, 2), [1, 2]),
        (1, 1.0),
        (True, 1),
        (0.0, -0.0),
        (np.float32(1), np.float64(1)),
        (np.zeros(2, dtype="<f8"), np.zeros(2, dtype=">f8")),
        (np.zeros((1, 2)), np.zeros(2)),
        (Q(1.0, "m"), Q(1.0, "km")),
        (Q(1, "m"), Q(1.0, "m")),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        (b"x", "x"),
    ]:
        with pytest.raises(AssertionError):
            assert_identical(a, b)


def round_trip(value):
    frames = pack(value)
    assert isinstance(frames[0], bytes)
    # what ZeroMQ hands the receiver: every frame as its own bytes object
    return unpack([bytes(f) for f in frames])


# --- strategies -------------------------------------------------------------------------------

DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64"]
ENDIAN_DTYPES = [">i4", ">f8", "<u2", ">u8"]
UNITS = ["meter", "kJ/mol", "kilocalorie/mole", "nanometer", "kelvin", "degC", "dimensionless", "1/picosecond", "angstrom**2", "bar"]

ints64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
floats = st.floats(allow_nan=True, allow_infinity=True)
texts = st.text(max_size=40)
array_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES + ENDIAN_DTYPES)))
    shape = draw(array_shapes)
    arr = draw(hnp.arrays(dtype, shape))
    if draw(st.booleans()) and arr.ndim >= 1 and arr.shape[0] > 1:
        arr = arr[::2]  # a strided view
    return arr


@st.composite
def big_arrays(draw):
    """Bigger than the inline limit: travels as its own frame."""
    dtype = np.dtype(draw(st.sampled_from(["float64", "int32", "uint8", "bool"])))
    n = draw(st.integers(INLINE_ARRAY_BYTES // dtype.itemsize, 3 * INLINE_ARRAY_BYTES // dtype.itemsize))
    seed = draw(st.integers(0, 2**32 - 1))
    arr = np.random.default_rng(seed).integers(0, 200, size=n).astype(dtype)
    return arr.reshape(-1, 2) if n % 2 == 0 and draw(st.booleans()) else arr


numpy_scalars = st.builds(lambda arr: arr.reshape(-1)[0], hnp.arrays(st.sampled_from(DTYPES + ENDIAN_DTYPES), 1))


@st.composite
def quantities(draw):
    unit = draw(st.sampled_from(UNITS))
    magnitude = draw(
        st.one_of(
            st.integers(-(2**63), 2**63 - 1),
            st.floats(allow_nan=False),
            hnp.arrays(st.sampled_from(["float64", "float32", "int64"]), array_shapes),
            st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=5),
        )
    )
    return Q(magnitude, unit)


slices = st.builds(slice, st.none() | st.integers(-(2**63), 2**63 - 1), st.none() | st.integers(-100, 100), st.none() | st.integers(-5, 5))

leaves = st.one_of(
    st.none(),
    st.booleans(),
    ints64,
    floats,
    texts,
    st.binary(max_size=20),
    arrays(),
    numpy_scalars,
    quantities(),
    slices,
)
dict_keys = st.one_of(texts, st.integers(-(2**63), 2**63 - 1), st.booleans(), st.none())

values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(dict_keys, children, max_size=4),
    ),
    max_leaves=12,
)


# --- round trips ------------------------------------------------------------------------------


@SETTINGS
@given(values)
def test_round_trip_of_generated_values(value):
    assert_identical(round_trip(value), value)


@FEW
@given(big_arrays())
def test_large_arrays_travel_as_frames(arr):
    frames = pack(arr)
    assert len(frames) == 2
    assert bytes(frames[1]) == arr.tobytes()
    assert_identical(round_trip(arr), arr)
    assert_identical(round_trip({"a": arr, "b": [arr, Q(arr.astype(np.float64), "nm")]}), {"a": arr, "b": [arr, Q(arr.astype(np.float64), "nm")]})


@FEW
@given(st.lists(big_arrays(), min_size=2, max_size=4))
def test_several_large_arrays_keep_their_order(arrs):
    frames = pack(arrs)
    assert len(frames) == 1 + len(arrs)
    assert_identical(round_trip(arrs), arrs)


def test_small_arrays_travel_inline():
    assert len(pack(np.zeros(INLINE_ARRAY_BYTES // 8 - 1))) == 1
    assert len(pack(np.zeros(INLINE_ARRAY_BYTES // 8))) == 2


@pytest.mark.parametrize(
    "value",
    [
        (1, 2),
        [1, (2, [3, (4,)])],
        (),
        np.float32(1.5),
        np.int32(-3),
        np.uint64(2**64 - 1),
        np.bool_(False),
        np.float16(0.5),
        np.array(2.5),
        np.zeros((0, 3), dtype=np.int16),
        np.arange(6, dtype=">i4").reshape(2, 3),
        Q(1.5, "kJ/mol"),
        Q(3, "meter"),
        Q(np.float32(2.5), "kelvin"),
        Q(np.arange(3.0), "nm"),
        Q(25.0, "degC"),
        Q([1.0, 2.0], "bar"),
        slice(None),
        slice(1, -1, 2),
        {"a": (1, 2), 3: [np.int8(4)], None: {"q": Q(1.0, "m")}, (1, 2): "tuple key"},
        2**64 - 1,
        -(2**63),
        float("nan"),
        -0.0,
        "ünïcødé ✓ 𝄞",
        b"\x00\xff",
    ],
    ids=repr,
)
def test_round_trip_of_chosen_values(value):
    assert_identical(round_trip(value), value)


def test_unpack_accepts_memoryview_frames():
    arr = np.arange(1000.0)
    frames = [memoryview(bytes(f)) for f in pack({"x": arr})]
    assert_identical(unpack(frames), {"x": arr})


@pytest.mark.parametrize(
    "value, error, text",
    [
        ({1, 2}, UnsupportedTypeError, "'set'"),
        (object(), UnsupportedTypeError, "'object'"),
        (1j, UnsupportedTypeError, "'complex'"),
        ([1, {2}], UnsupportedTypeError, "'set'"),
        (np.zeros(2, dtype=complex), UnsupportedTypeError, "'numpy.ndarray of complex128'"),
        (np.array(["a"]), UnsupportedTypeError, "'numpy.ndarray of <U1'"),
        (np.complex64(1), UnsupportedTypeError, "'numpy.complex64'"),
        (Q(1j, "m"), UnsupportedTypeError, "'pint.Quantity of complex'"),
        (Q(np.ones(2, dtype=complex), "m"), UnsupportedTypeError, "'pint.Quantity of numpy.ndarray of complex128'"),
        (2**64, ValueError, "64 bits"),
        (-(2**63) - 1, ValueError, "64 bits"),
    ],
    ids=repr,
)
def test_pack_refuses_what_it_cannot_encode(value, error, text):
    with pytest.raises(error) as exc:
        pack(value)
    assert text in str(exc.value)
    assert isinstance(exc.value, (TypeError, ValueError))


# --- malformed input --------------------------------------------------------------------------


def unpack_or_protocol_error(frames):
    """unpack's only allowed failure is ProtocolError."""
    try:
        return unpack(frames)
    except ProtocolError:
        return None


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_give_a_value_or_protocol_error(data):
    unpack_or_protocol_error([data])


@SETTINGS
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=4))
def test_random_frames_give_a_value_or_protocol_error(frames):
    unpack_or_protocol_error(frames)


@MALFORMED_SETTINGS
@given(values, st.data())
def test_truncated_bodies_raise_protocol_error(value, data):
    frames = [bytes(f) for f in pack(value)]
    cut = data.draw(st.integers(0, len(frames[0]) - 1))
    with pytest.raises(ProtocolError):
        unpack([frames[0][:cut], *frames[1:]])


@MALFORMED_SETTINGS
@given(values, st.data())
def test_corrupted_bodies_give_a_value_or_protocol_error(value, data):
    frames = [bytes(f) for f in pack(value)]
    body = bytearray(frames[0])
    for _ in range(data.draw(st.integers(1, 3))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    unpack_or_protocol_error([bytes(body), *frames[1:]])


plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=10) | st.binary(max_size=24),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@SETTINGS
@given(st.sampled_from([EXT_TUPLE, EXT_ARRAY, EXT_NUMPY_SCALAR, EXT_QUANTITY, EXT_SLICE, 0, 6, 42, 127]), plain, st.lists(st.binary(max_size=32), max_size=2))
def test_extension_types_with_arbitrary_payloads_give_a_value_or_protocol_error(code, payload, extra_frames):
    body = msgpack.packb(msgpack.ExtType(code, msgpack.packb(payload, use_bin_type=True)), use_bin_type=True)
    result = unpack_or_protocol_error([body, *extra_frames])
    if result is not None:
        # whatever was accepted is a well-formed value of the extension's type
        expected_type = {EXT_TUPLE: tuple, EXT_ARRAY: np.ndarray, EXT_NUMPY_SCALAR: np.generic, EXT_QUANTITY: Q, EXT_SLICE: slice}[code]
        assert isinstance(result, expected_type)
        if code == EXT_QUANTITY:
            assert np.asarray(result.magnitude).dtype.kind in "iuf"


def ext(code, payload):
    return msgpack.packb(msgpack.ExtType(code, msgpack.packb(payload, use_bin_type=True)), use_bin_type=True)


MALFORMED = {
    "empty message": [],
    "empty body": [b""],
    "truncated array header": [b"\x93\x01"],
    "huge declared shape, tiny buffer": [ext(EXT_ARRAY, ["<f8", [2**40, 2**40], b"1234"])],
    "huge declared shape, frame": [ext(EXT_ARRAY, ["<f8", [2**62, 2**62, 2**62], 0]), b"12345678"],
    "shape does not match buffer": [ext(EXT_ARRAY, ["<f8", [3], b"12345678"])],
    "negative shape": [ext(EXT_ARRAY, ["<f8", [-1], b""])],
    "shape of floats": [ext(EXT_ARRAY, ["<f8", [1.0], b"12345678"])],
    "too many dimensions": [ext(EXT_ARRAY, ["<f8", [1] * 33, b"12345678"])],
    "frame index out of range": [ext(EXT_ARRAY, ["<f8", [1], 1]), b"12345678"],
    "negative frame index": [ext(EXT_ARRAY, ["<f8", [1], -1]), b"12345678"],
    "frame index but no frame": [ext(EXT_ARRAY, ["<f8", [1], 0])],
    "bool as frame index": [ext(EXT_ARRAY, ["<f8", [1], True]), b"12345678"],
    "object dtype": [ext(EXT_ARRAY, ["O", [1], b"12345678"])],
    "complex dtype": [ext(EXT_ARRAY, ["<c16", [1], b"1234567812345678"])],
    "structured dtype": [ext(EXT_ARRAY, ["f8,i4", [1], b"123456781234"])],
    "sub-array dtype": [ext(EXT_ARRAY, ["(2,)f8", [1], b"1234567812345678"])],
    "unicode dtype": [ext(EXT_ARRAY, ["<U1", [1], b"1234"])],
    "datetime dtype": [ext(EXT_ARRAY, ["<M8[s]", [1], b"12345678"])],
    "dtype not a string": [ext(EXT_ARRAY, [8, [1], b"12345678"])],
    "long dtype string": [ext(EXT_ARRAY, ["f" * 100, [1], b"12345678"])],
    "array payload not a list": [ext(EXT_ARRAY, {"dtype": "<f8"})],
    "scalar with wrong byte count": [ext(EXT_NUMPY_SCALAR, ["<f8", b"1234"])],
    "scalar of object dtype": [ext(EXT_NUMPY_SCALAR, ["O", b"12345678"])],
    "scalar data not bytes": [ext(EXT_NUMPY_SCALAR, ["<f8", 1.5])],
    "tuple payload not a list": [ext(EXT_TUPLE, 5)],
    "tuple payload garbage": [msgpack.packb(msgpack.ExtType(EXT_TUPLE, b"\xc1"))],
    "quantity with unknown unit": [ext(EXT_QUANTITY, [1.0, "not_a_unit_at_all"])],
    "quantity with code in the unit": [ext(EXT_QUANTITY, [1.0, "__import__('os')"])],
    "quantity with scaled unit": [ext(EXT_QUANTITY, [1.0, "3 * meter"])],
    "quantity with huge exponent": [ext(EXT_QUANTITY, [1.0, "meter ** 1000000"])],
    "quantity with long unit": [ext(EXT_QUANTITY, [1.0, "m*" * 200 + "m"])],
    "quantity of a string": [ext(EXT_QUANTITY, ["1.0", "meter"])],
    "quantity of strings": [ext(EXT_QUANTITY, [["a", "b"], "meter"])],
    "quantity of None": [ext(EXT_QUANTITY, [[None], "meter"])],
    "quantity of a dict in a list": [ext(EXT_QUANTITY, [[1.0, {}], "meter"])],
    "quantity of a ragged list": [ext(EXT_QUANTITY, [[[1], [2, 3]], "meter"])],
    "quantity of a bool": [ext(EXT_QUANTITY, [True, "meter"])],
    "quantity without unit": [ext(EXT_QUANTITY, [1.0])],
    "quantity unit not a string": [ext(EXT_QUANTITY, [1.0, 5])],
    "slice of floats": [ext(EXT_SLICE, [1.5, 2, None])],
    "slice of bools": [ext(EXT_SLICE, [True, 2, None])],
    "slice too short": [ext(EXT_SLICE, [1, 2])],
    "unknown extension": [ext(99, 1)],
    "array as a dict key": [msgpack.packb({msgpack.ExtType(EXT_ARRAY, msgpack.packb(["<f8", [1], b"12345678"])): 1})],
    "list as a dict key": [b"\x81\x91\x01\x02"],
    "frame that is not bytes": [msgpack.packb(1), "text"],
    "frame that is an int": [msgpack.packb(1), 5],
    "body that is an int": [5],
    "body that is None": [None],
    "trailing bytes": [msgpack.packb(1) + b"\x01"],
}


@pytest.mark.parametrize("frames", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_input_raises_protocol_error(frames):
    with pytest.raises(ProtocolError):
        unpack(frames)


def nested_tuples(depth, leaf=1):
    value = leaf
    for _ in range(depth):
        value = (value,)
    return value


def test_nesting_depth_is_bounded_on_both_sides():
    """Each nested extension level costs tens of kB of C stack in msgpack: a few hundred used to segfault."""
    assert_identical(round_trip(nested_tuples(MAX_EXT_DEPTH)), nested_tuples(MAX_EXT_DEPTH))
    with pytest.raises(ValueError, match="deeper than"):
        pack(nested_tuples(MAX_EXT_DEPTH + 1))
    for depth in (MAX_EXT_DEPTH + 1, 200, 5000):
        body = msgpack.packb(1)
        for _ in range(depth):
            body = msgpack.packb(msgpack.ExtType(EXT_TUPLE, b"\x91" + body))
        with pytest.raises(ProtocolError, match="deeper than"):
            unpack([body])
    deep_lists = msgpack.packb(1)
    for _ in range(5000):
        deep_lists = b"\x91" + deep_lists  # plain arrays: msgpack's own stack limit applies
    with pytest.raises(ProtocolError):
        unpack([deep_lists])


def test_unpacked_large_arrays_are_views_of_the_frames():
    arr = np.arange(2000.0)
    frames = [bytearray(f) for f in pack(arr)]
    out = unpack(frames)
    assert out.tolist() == arr.tolist()
    frames[1][:8] = struct.pack("<d", 42.0)  # the receiver's buffer IS the array: no copy was made
    assert out[0] == 42.0
    assert math.isclose(out[1], 1.0)
