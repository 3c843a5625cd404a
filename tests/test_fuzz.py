"""Fuzzing: random and mutated frames against one live nstored, and the decoder in-process.

The live fuzz sends each example as one message on one DEALER socket and
takes the reply with a poll timeout; every message must get a well-formed
reply (an error reply for anything malformed), and afterwards the daemon must
still serve a normal client and leave a file netCDF4 opens cleanly. The
in-process fuzz feeds the same kinds of garbage to ``unpack`` and
``decode_request``, which may raise ProtocolError and nothing else.

Default: 5,000 live and 20,000 in-process examples; ``--slow`` adds runs of
50,000 and 100,000. The number of examples run is printed (``-s`` shows it).
"""

from __future__ import annotations

import time

import msgpack
import netCDF4
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nstore import connect
from nstore.protocol import PROTOCOL_VERSION
from nstore.protocol.errors import ProtocolError
from nstore.protocol.messages import OPS, decode_reply, decode_request, encode_request
from nstore.protocol.values import EXT_ARRAY, EXT_NUMPY_SCALAR, EXT_QUANTITY, EXT_SLICE, EXT_TUPLE, pack, unpack

from daemons import Daemon

LIVE_EXAMPLES, LIVE_EXAMPLES_SLOW = 5_000, 50_000
DECODER_EXAMPLES, DECODER_EXAMPLES_SLOW = 20_000, 100_000
REPLY_TIMEOUT_S = 10.0


def _settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, derandomize=False,
                    suppress_health_check=list(HealthCheck))


# --- strategies ------------------------------------------------------------------------------------

FUZZ_OPS = sorted(set(OPS) - {"shutdown"})  # (a shutdown would end the fuzzing, not test it)
VALID_PATHS = ["f/a", "f/b", "g/c", "x", "f"]
HOSTILE_PATHS = ["a//b", "../x", "a/./b", "a\x00b", "\n", " a", "a ", "-x", "#", "scalar", "unlimited0",
                 "iterable3/x", "/".join("a" * 1000), "n" * 10_000, "é" * 200, "/", "", "f/a/b", "x/y"]
UNITS = ["meter", "kJ/mol", "kilojoule/mole", "1/second", "/picosecond", "degC", "m**1000000", "eval(1)",
         '__import__("os")', "9**9**9", "m^9^9^9", "((m**64)**64)**64", "m" * 10_000, "meter*" * 50 + "m",
         "1000*meter", "m**nan", "elementary charge", "", "dimensionless", "NoneType", "%"]
DTYPES = ["<f8", "<f4", "<i8", "<i4", "|u1", "|b1", ">f8", "<u8", "|O", "<c16", "V8", "|V8", "<U3", "<f16", "<f2",
          "<M8[s]", "S3", "[('a','<f8')]", "f8" * 10, "", "xyz"]

big_int = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can carry
path = st.one_of(st.sampled_from(VALID_PATHS), st.sampled_from(HOSTILE_PATHS),
                 st.text(alphabet="ab/._ -#é\x00\n\x7f", max_size=24), big_int, st.none())
unit = st.one_of(st.sampled_from(UNITS), st.text(alphabet="mskgJol*^/()0123456789.-+ e_", max_size=40))
shape = st.one_of(
    st.lists(st.integers(0, 5), max_size=4),
    st.lists(st.sampled_from([0, 1, 2, 2**31, 2**40, 2**62, 2**63 - 1, -1]), max_size=6),
    st.lists(st.integers(0, 1), min_size=30, max_size=40),  # around the dimension limit
    st.lists(st.one_of(st.text(max_size=2), st.floats(), st.none()), max_size=3),
)


@st.composite
def raw_array(draw) -> msgpack.ExtType:
    """An array extension with a declared dtype/shape and a buffer that may not match them."""
    payload = draw(st.one_of(st.binary(max_size=64), st.integers(-2, 3), st.none(), st.text(max_size=4)))
    inner = [draw(st.one_of(st.sampled_from(DTYPES), big_int)), draw(shape), payload]
    if draw(st.integers(0, 9)) == 0:
        inner = draw(st.lists(st.sampled_from(inner), max_size=4))  # wrong arity
    return msgpack.ExtType(EXT_ARRAY, msgpack.packb(inner, use_bin_type=True))


@st.composite
def good_array(draw) -> msgpack.ExtType:
    """A well-formed array extension (data inline), as a client would send a small array."""
    dtype = draw(st.sampled_from(["<f8", "<i4", "|b1", "<u2"]))
    n = draw(st.integers(1, 6))
    data = np.arange(n).astype(dtype)
    return msgpack.ExtType(EXT_ARRAY, msgpack.packb([data.dtype.str, [n], data.tobytes()], use_bin_type=True))


def _ext(code: int, inner) -> msgpack.ExtType:
    return msgpack.ExtType(code, msgpack.packb(inner, use_bin_type=True))


scalar = st.one_of(st.none(), st.booleans(), big_int, st.floats(), st.text(max_size=12), st.binary(max_size=12))
ext_value = st.one_of(
    raw_array(), good_array(),
    st.builds(lambda m, u: _ext(EXT_QUANTITY, [m, u]), st.one_of(st.floats(), big_int, st.text(max_size=3),
                                                                   st.lists(st.floats(), max_size=3)), unit),
    st.builds(lambda d, b: _ext(EXT_NUMPY_SCALAR, [d, b]), st.sampled_from(DTYPES), st.binary(max_size=17)),
    st.builds(lambda x: _ext(EXT_SLICE, x), st.lists(st.one_of(st.none(), big_int, st.floats()), max_size=4)),
    st.builds(lambda x: _ext(EXT_TUPLE, x), st.lists(scalar, max_size=3)),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=16)),
)
value = st.recursive(
    st.one_of(scalar, ext_value),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-9, 9)),
                                                                inner, max_size=3),
    max_leaves=8,
)


@st.composite
def op(draw) -> list:
    name = draw(st.one_of(st.sampled_from(FUZZ_OPS), st.text(max_size=12), big_int, st.none()))
    keys = list(OPS.get(name, {})) if isinstance(name, str) else []
    args = {key: draw(value) for key in keys if draw(st.booleans())}
    if draw(st.integers(0, 7)) == 0:
        args[draw(st.text(max_size=8))] = draw(value)
    triple = [name, draw(path), args]
    if draw(st.integers(0, 15)) == 0:
        return draw(st.one_of(st.lists(st.sampled_from(triple), max_size=4), scalar, st.dictionaries(
            st.text(max_size=3), scalar, max_size=2)))
    return triple


@st.composite
def header(draw) -> dict:
    fields = {"v": PROTOCOL_VERSION, "id": draw(st.integers(1, 2**40)), "client": draw(
        st.one_of(st.sampled_from(["fuzz-a", "fuzz-b", ""]), st.text(max_size=8))),
        "ops": draw(st.lists(op(), min_size=1, max_size=4))}
    for key in ("v", "id", "client", "ops"):
        mutation = draw(st.integers(0, 24))
        if mutation == 0:
            del fields[key]
        elif mutation == 1:
            fields[key] = draw(value)
    return fields


def _corpus() -> list:
    """Valid requests of every value kind (arrays inline and out of band, quantities, tuples, slices,
    numpy scalars, dicts), to be mutated byte by byte."""
    from nstore import ureg

    values = [1.5, -3, True, "héllo", None, [1, 2.5, "x"], (1, (2, 3)), {"k": [1, {"n": None}], "q": 2 * ureg.meter},
              np.arange(6.0).reshape(2, 3), np.arange(600, dtype=np.int32), np.float32(2.5), np.uint8(7),
              np.array([True, False]), 3.0 * ureg.kilojoule / ureg.mole, np.arange(1000.0) * ureg.nanometer,
              slice(1, None, 2), [np.int64(4), (5.0 * ureg.second,)]]
    corpus = [encode_request(k, "fuzz", [("write", "f/a", {"data": v}), ("read", "f/a", {"index": slice(0, 2)})])
              for k, v in enumerate(values)]
    corpus += [encode_request(99, "fuzz", [(name, "g/c", {}) for name in FUZZ_OPS])]
    return [[bytes(f) for f in frames] for frames in corpus]


CORPUS = _corpus()


@st.composite
def mutated(draw) -> list:
    """A corpus request with 1-4 byte-level mutations (replace, insert, delete, truncate, drop a frame)."""
    frames = list(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        which = draw(st.integers(0, len(frames) - 1))
        what, where, byte = draw(st.tuples(st.integers(0, 5), st.integers(0, 2**16), st.integers(0, 255)))
        frame = bytearray(frames[which])
        at = where % (len(frame) + 1)
        if what <= 1 and frame:
            frame[at % len(frame)] = byte
        elif what == 2:
            frame[at:at] = bytes([byte])
        elif what == 3:
            del frame[at : at + 1 + byte % 8]
        elif what == 4:
            del frame[at:]
        elif len(frames) > 1:  # (a message has at least one frame)
            del frames[which]
            continue
        frames[which] = bytes(frame)
    return frames


@st.composite
def message(draw) -> tuple[str, list, dict | None]:
    """(kind, frames, header or None): what to send and, for structured requests, what was meant."""
    kind = draw(st.sampled_from(["bytes", "request", "request", "request", "truncated", "flipped", "extra",
                                 "mutated", "mutated"]))
    if kind == "bytes":
        return kind, draw(st.lists(st.binary(max_size=200), min_size=1, max_size=3)), None
    if kind == "mutated":
        return kind, draw(mutated()), None
    fields = draw(header())
    frames = [msgpack.packb(fields, use_bin_type=True)]
    frames += draw(st.lists(st.binary(max_size=64), max_size=2))  # out-of-band buffers for frame-index payloads
    if kind == "truncated":
        cut = draw(st.integers(0, max(0, len(frames[0]) - 1)))
        return kind, [frames[0][:cut], *frames[1:]], None
    if kind == "flipped":
        body = bytearray(frames[0])
        for _ in range(draw(st.integers(1, 4))):
            body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
        return kind, [bytes(body), *frames[1:]], None
    if kind == "extra":  # a valid request whose array rides in a frame, plus or minus frames
        data = np.full(1024, draw(st.floats(allow_nan=False)), dtype=np.float64)
        good = encode_request(draw(st.integers(1, 2**30)), "fuzz-c", [("append", "f/big", {"data": data})])
        frames = draw(st.sampled_from([good[:1], good, good + [b"junk"], [good[0], good[1][:-8]]]))
        return kind, list(frames), None
    return kind, frames, fields


# --- live fuzz ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory):
    """One nstored for the whole module; stopped by PID at the end."""
    file_name = tmp_path_factory.mktemp("fuzz") / "fuzz.nc"
    daemon = Daemon(str(file_name))
    yield daemon
    daemon.stop()


def _check_reply(kind: str, frames: list, fields: dict | None, reply_id: int, results: list) -> None:
    assert isinstance(results, list) and results, (kind, reply_id, results)
    for result in results:
        assert isinstance(result, list) and len(result) == 2 and isinstance(result[0], bool), result
        if not result[0]:
            error = result[1]
            assert isinstance(error, dict) and isinstance(error.get("type"), str), error
            assert isinstance(error.get("message"), str) and error["message"], error
    if reply_id == -1:  # the request could not be parsed: one ProtocolError says why
        assert len(results) == 1 and results[0][0] is False and results[0][1]["type"] == "ProtocolError", results
    if fields is not None:  # a structured request: its id or -1, one result per op
        well_formed = True
        try:
            decode_request(frames)
        except ProtocolError:
            well_formed = False
        if well_formed:
            assert reply_id == fields["id"] and len(results) == len(fields["ops"]), (reply_id, fields, results)
        else:
            assert reply_id == -1, (fields, results)


def test_live_fuzz(fuzz_daemon):
    _live_fuzz(fuzz_daemon, LIVE_EXAMPLES)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_live_fuzz_long(fuzz_daemon):
    _live_fuzz(fuzz_daemon, LIVE_EXAMPLES_SLOW)


def _live_fuzz(fuzz_daemon, n: int) -> None:
    """``n`` hypothesis examples, one message each, on one socket; every reply checked."""
    context = zmq.Context()
    sockets: list = []

    def fresh_socket() -> zmq.Socket:
        for old in sockets:
            old.close()
        sockets[:] = [context.socket(zmq.DEALER)]
        sockets[0].setsockopt(zmq.LINGER, 0)
        sockets[0].connect(fuzz_daemon.endpoint)
        return sockets[0]

    fresh_socket()
    counts: dict[str, int] = {}
    started = time.monotonic()

    @_settings(n)
    @given(message())
    def one(msg) -> None:
        kind, frames, fields = msg
        counts[kind] = counts.get(kind, 0) + 1
        sock = sockets[0]
        sock.send_multipart(frames)
        if not sock.poll(int(REPLY_TIMEOUT_S * 1000)):
            fresh_socket()  # a late reply must not be taken for the next example's
            raise AssertionError(f"no reply within {REPLY_TIMEOUT_S:g} s to {kind} {frames!r:.300}; daemon alive: "
                                 f"{fuzz_daemon.process.poll() is None}\n{fuzz_daemon.log()[-3000:]}")
        reply_id, results = decode_reply(sock.recv_multipart())
        assert not sock.poll(0), "one reply per request"
        try:
            _check_reply(kind, frames, fields, reply_id, results)
        except AssertionError as exc:
            raise AssertionError(f"{kind} {frames!r:.600} -> {reply_id} {results!r:.600}: {exc}") from None

    try:
        one()
    finally:
        for sock in sockets:
            sock.close()
        context.term()
    total = sum(counts.values())
    print(f"\n[fuzz] live: {total} examples in {time.monotonic() - started:.1f} s ({counts})")
    assert total >= n
    assert fuzz_daemon.process.poll() is None, fuzz_daemon.log()[-3000:]


def test_daemon_healthy_after_fuzz(fuzz_daemon):
    """After the fuzzing: alive, a normal client round-trips, the file opens cleanly after stop."""
    assert fuzz_daemon.process.poll() is None
    driver = connect(fuzz_daemon.endpoint, timeout=30)
    try:
        assert driver.append_variable("after/series", np.arange(3.0)) == 0
        assert driver.append_variable("after/series", np.arange(3.0) + 1) == 1
        driver.write_variable("after/fixed", {"k": [1, 2.5, "z"]})
        assert driver.read_variable("after/series").tolist() == [[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]]
        assert driver.read_variable("after/fixed") == {"k": [1, 2.5, "z"]}
        names = driver.list_directory("")
    finally:
        driver.close()
    log = fuzz_daemon.log()
    assert fuzz_daemon.stop() == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    with netCDF4.Dataset(fuzz_daemon.file_name, "r") as ds:
        assert sorted([*ds.groups, *ds.variables]) == sorted(names)
        stack, read = [ds], 0
        while stack:  # every variable of every group reads
            group = stack.pop()
            stack.extend(group.groups.values())
            for var in group.variables.values():
                var[...]
                read += 1
        assert read >= 2
    print(f"\n[fuzz] file after fuzzing: top level {sorted(names)}, {read} variables, all readable")


# --- in-process decoder fuzz -------------------------------------------------------------------------


@st.composite
def decoder_input(draw) -> list:
    kind = draw(st.integers(0, 9))
    if kind <= 3:
        return draw(mutated())
    if kind <= 5:
        return draw(st.lists(st.binary(max_size=300), min_size=1, max_size=3))
    if kind <= 7:
        obj = draw(value)
        try:
            frames = pack(obj) if kind == 6 else [msgpack.packb(obj, use_bin_type=True)]
        except Exception:  # noqa: BLE001 - raw ExtTypes cannot always be packed by pack(); send them raw
            frames = [msgpack.packb(obj, use_bin_type=True)]
        return [bytes(f) for f in frames] + draw(st.lists(st.binary(max_size=32), max_size=2))
    return draw(message())[1]


def test_decoder_fuzz():
    _decoder_fuzz(DECODER_EXAMPLES)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_decoder_fuzz_long():
    _decoder_fuzz(DECODER_EXAMPLES_SLOW)


def _decoder_fuzz(n: int) -> None:
    """``n`` hypothesis examples through ``unpack`` and ``decode_request``: ProtocolError or a value."""
    seen = {"examples": 0, "decoded": 0, "requests": 0}
    started = time.monotonic()

    @_settings(n)
    @given(decoder_input())
    def one(frames) -> None:
        seen["examples"] += 1
        for decode, key in ((unpack, "decoded"), (decode_request, "requests")):
            try:
                decode(frames)
            except ProtocolError as exc:
                assert str(exc), "a ProtocolError says what is wrong"
            else:
                seen[key] += 1

    one()
    print(f"\n[fuzz] decoder: {seen['examples']} examples in {time.monotonic() - started:.1f} s "
          f"({seen['decoded']} unpacked, {seen['requests']} valid requests; every other one raised ProtocolError)")
    assert seen["examples"] >= n
