"""Quantities in the daemon stay (magnitude, unit string): no pint object on the hot path.

The daemon decodes requests and journal records to WireQuantity, compares unit
strings, converts with a factor cached per (from, to) pair and replies to reads
with WireQuantity; clients still get pint Quantities. Errors and stored values
are those of the in-process driver.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter

import msgpack
import numpy as np
import pint
import pytest
import zmq
from pint.facets.plain.quantity import PlainQuantity
from pint.facets.plain.unit import PlainUnit

from nstore import NetCDFIODriver, ureg
from nstore.daemon.daemon_engine import DaemonEngine
from nstore.daemon.journal import Commit, journal_path, read_records
from nstore.daemon.ops import replay_op
from nstore.daemon.server import Server
from nstore.protocol import units
from nstore.protocol.errors import ProtocolError, error_from_wire
from nstore.protocol.kinds.quantity import EXT_QUANTITY, WireQuantity, quantity_parts
from nstore.protocol.messages import decode_reply, decode_request, encode_request
from nstore.protocol.values import pack, unpack

Q = ureg.Quantity


@pytest.fixture
def server():
    """An nstored Server in this process, bound to a fresh ipc socket, driven batch by batch."""
    workdir = tempfile.mkdtemp(prefix="nu", dir="/tmp")  # short: ipc paths max out near 100 chars
    server = Server(f"{workdir}/run.nc", f"ipc://{workdir}/d.sock")
    yield server
    server.close()
    shutil.rmtree(workdir, ignore_errors=True)


def _frames(request_id: int, *ops: tuple) -> list:
    """A request from client ``c1`` as the daemon's socket hands it over (routing id first)."""
    return [zmq.Frame(b"c1"), *(zmq.Frame(bytes(f)) for f in encode_request(request_id, "c1", list(ops)))]


def _results(server: Server, messages: list) -> list:
    """Apply ``messages`` (from _frames) as one batch; per message, its decoded ``[ok, value]`` results."""
    return [decode_reply(reply)[1] for _, reply in server.process(messages)]


@pytest.fixture
def pint_work(monkeypatch):
    """Counts pint Quantity and Unit constructions from now on (``pint_work["Quantity"]``, ``["Unit"]``)."""
    counts: Counter = Counter()
    new_quantity, init_unit = PlainQuantity.__new__, PlainUnit.__init__

    def counted_new(cls, *args, **kwargs):
        counts["Quantity"] += 1
        return new_quantity(cls, *args, **kwargs)

    def counted_init(self, *args, **kwargs):
        counts["Unit"] += 1
        return init_unit(self, *args, **kwargs)

    monkeypatch.setattr(PlainQuantity, "__new__", staticmethod(counted_new))
    monkeypatch.setattr(PlainUnit, "__init__", counted_init)
    Q(1.0, "meter").units  # the counters see pint's work
    assert counts["Quantity"] >= 1 and counts["Unit"] >= 1
    counts.clear()
    return counts


def _cold_unit_caches() -> None:
    for cached in (units.stored_unit, units.parse_unit, units._unit_string_cached, units.converter):
        cached.cache_clear()


# --- decoding ------------------------------------------------------------------------------------


def test_requests_decode_quantities_to_wire_quantities():
    request = decode_request(encode_request(1, "c", [("append", "x", {"data": Q(1.5, "nm")}),
                                                     ("append", "y", {"data": {"k": [Q(2, "kJ/mol")]}})]))
    first, nested = request.ops[0].args["data"], request.ops[1].args["data"]["k"][0]
    assert type(first) is WireQuantity and (first.magnitude, first.unit) == (1.5, "nanometer")
    assert type(first.magnitude) is float
    assert type(nested) is WireQuantity and (nested.magnitude, nested.unit) == (2, "kilojoule/mole")
    back = unpack(pack(first))  # a client gets a pint Quantity from the same extension type
    assert isinstance(back, PlainQuantity) and back == Q(1.5, "nanometer")


def _ext(magnitude, unit) -> list:
    return [msgpack.packb(msgpack.ExtType(EXT_QUANTITY, msgpack.packb([magnitude, unit])))]


@pytest.mark.parametrize("magnitude, unit", [
    (1.5, "nm"), (3, "kJ/mol"), ([1, 2, 3], "angstrom"), ((1.0, 2.5), "/picosecond"), (2.0, ""),
    (2.0, "dimensionless"), (1.0, "elementary charge"), (25.0, "degC"),
    (1.0, "not_a_unit"), (1.0, "3 * meter"), (1.0, "meter ** 1000"), ("1.0", "meter"), ([[1], [2, 3]], "m"),
    (True, "meter"), ([1.0, None], "m"),
])
def test_the_daemon_decodes_as_clients_do(magnitude, unit):
    """Same magnitude and stored unit string as the pint Quantity a client decodes, or the same ProtocolError."""
    frames = _ext(magnitude, unit)
    try:
        expected = quantity_parts(unpack(frames))
    except ProtocolError as exc:
        with pytest.raises(ProtocolError) as got:
            unpack(frames, light=True)
        assert str(got.value) == str(exc)
        return
    light = unpack(frames, light=True)
    assert type(light) is WireQuantity
    assert light.unit == expected[1]
    assert type(light.magnitude) is type(expected[0])
    assert np.array_equal(light.magnitude, expected[0])
    assert np.asarray(light.magnitude).dtype == np.asarray(expected[0]).dtype


# --- the hot path -------------------------------------------------------------------------------


def test_same_unit_appends_do_no_pint_work_in_the_daemon(server, pint_work):
    _cold_unit_caches()
    values = {"e": Q(1.5, "kJ/mol"), "n": Q(3, "nanometer"), "v": Q(np.arange(3.0), "angstrom")}
    first = [_frames(1, *[("append", path, {"data": value}) for path, value in values.items()])]
    pint_work.clear()
    assert _results(server, first) == [[[True, 0], [True, 0], [True, 0]]]
    assert pint_work["Unit"] > 0  # a unit seen for the first time is parsed (validated) once

    synchronous = [_frames(2 + k, ("append", "e", {"data": Q(2.5 + k, "kJ/mol")})) for k in range(3)]
    pipelined = [_frames(9, *[("append", path, {"data": value}) for path, value in values.items() for _ in range(4)])]
    pint_work.clear()
    assert _results(server, synchronous) == [[[True, 1]], [[True, 2]], [[True, 3]]]
    assert _results(server, pipelined) == [[[True, i] for i in (4, 5, 6, 7)] + [[True, i] for _ in "nv" for i in
                                                                               (1, 2, 3, 4)]]
    assert pint_work == {}, "the daemon built pint objects for appends in the variables' own units"

    energy = server.engine.read_variable("e")
    assert type(energy) is WireQuantity and energy.unit == "kilojoule/mole"
    assert energy.magnitude.tolist() == [1.5, 2.5, 3.5, 4.5, 1.5, 1.5, 1.5, 1.5]
    assert server.engine.variable_info("n")["unit"] == "nanometer"


def test_converting_appends_use_a_factor_cached_per_unit_pair(server, pint_work):
    _cold_unit_caches()
    _results(server, [_frames(1, ("append", "x", {"data": Q(1.0, "nanometer")}))])
    first = [_frames(2, ("append", "x", {"data": Q(5.0, "angstrom")}))]
    batch = [_frames(3 + k, ("append", "x", {"data": Q(20.0 * k, "angstrom")})) for k in range(3)]
    pint_work.clear()
    assert _results(server, first) == [[[True, 1]]]
    assert pint_work["Quantity"] > 0  # the factor, found once
    pint_work.clear()
    assert _results(server, batch) == [[[True, 2]], [[True, 3]], [[True, 4]]]
    assert pint_work == {}
    assert server.engine.read_variable("x").magnitude.tolist() == pytest.approx([1.0, 0.5, 0.0, 2.0, 4.0])


def test_reads_reply_quantities_without_pint_and_clients_get_pint(server, pint_work):
    _results(server, [_frames(1, ("append", "x", {"data": Q(np.array([1.0, 2.0]), "nm")}),
                              ("append", "x", {"data": Q(np.array([3.0, 4.0]), "nm")}),
                              ("write", "k", {"data": Q(7, "kelvin")}))])
    reads = [_frames(2, ("read", "x", {}), ("read", "x", {"index": -1}), ("read", "k", {}))]
    pint_work.clear()
    replies = [reply for _, reply in server.process(reads)]
    assert pint_work == {}
    (whole, last, fixed), = [decode_reply(reply)[1] for reply in replies]
    assert whole[0] and isinstance(whole[1], PlainQuantity) and whole[1].units == ureg.nanometer
    assert whole[1].magnitude.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert last[1].magnitude.tolist() == [3.0, 4.0]
    assert fixed[1] == Q(7, "kelvin") and type(fixed[1].magnitude) is int


def test_an_incompatible_unit_gives_the_in_process_error(server, tmp_path):
    _results(server, [_frames(1, ("append", "replica/energy", {"data": Q(1.0, "kJ/mol")}))])
    (result,), = _results(server, [_frames(2, ("append", "replica/energy", {"data": Q(1.0, "nm")}))])
    local = NetCDFIODriver(str(tmp_path / "local.nc"))
    local.append_variable("replica/energy", Q(1.0, "kJ/mol"))
    with pytest.raises(pint.DimensionalityError) as expected:
        local.append_variable("replica/energy", Q(1.0, "nm"))
    local.close()
    assert result[0] is False and result[1]["type"] == "DimensionalityError"
    assert result[1]["message"] == str(expected.value)
    assert str(error_from_wire(result[1])) == str(expected.value)
    assert "(storing at replica/energy)" in str(expected.value)


# --- the journal -----------------------------------------------------------------------------------


def test_journaled_quantities_replay_as_wire_quantities(server, tmp_path):
    _results(server, [_frames(1, ("append", "x", {"data": Q(1.5, "nm")}), ("append", "x", {"data": Q(5.0, "angstrom")}),
                              ("write", "d", {"data": {"q": Q([1, 2], "second")}}))])
    commits = [r for r in read_records(journal_path(server.file_name)) if isinstance(r, Commit)]
    ops = [entry.op for commit in commits for entry in commit.entries if entry.op is not None]
    assert [type(op[2]["data"]) for op in ops[:2]] == [WireQuantity, WireQuantity]
    assert (ops[1][2]["data"].magnitude, ops[1][2]["data"].unit) == (5.0, "angstrom")
    replayed = str(tmp_path / "replayed.nc")
    engine = DaemonEngine(replayed)
    for op in ops:
        replay_op(engine, *op)
    engine.close()
    local = NetCDFIODriver(replayed, "r")
    try:
        got = local.read_variable("x")
        assert got.units == ureg.nanometer and got.magnitude.tolist() == pytest.approx([1.5, 0.5])
        dictionary = local.read_variable("d")
        assert dictionary["q"].units == ureg.second and dictionary["q"].magnitude.tolist() == [1, 2]
    finally:
        local.close()


# --- errors name the type the client sent ------------------------------------------------------------


def test_a_quantity_where_none_belongs_is_named_alike_by_both_drivers(open_store):
    store = open_store()
    driver = store.storage_driver
    driver.append_variable("x", 1.0)
    with pytest.raises(TypeError) as exc:
        driver.add_metadata("note", Q(1.0, "m"), path="x")
    assert str(exc.value) == "x: metadata 'note' must be a str, number or 1-D list of numbers, not pint.Quantity"
    with pytest.raises(TypeError) as exc:
        driver.read_variable("x", Q(0, "m"))
    assert str(exc.value) == "x: index must be an int, not pint.Quantity"
