"""The journal's own format: a versioned header, typed records, a pinned encoding, old journals."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from nstore import connect
from nstore.daemon import journal as journal_module
from nstore.daemon.journal import (FORMAT_VERSION, HEADER_BYTES, MAGIC, Commit, Entry, Journal, Snapshot,
                                   journal_path, read_records)
from nstore.protocol.values import pack

DIGEST = b"\x01" * 16
SAMPLE = Commit(7, [
    Entry("c1", 3, 0, ("append", "a/x", {"data": 1.5, "index": 4}), [True, 4], DIGEST),
    Entry("c1", 3, 1, ("write", "y", {"data": np.arange(3, dtype=np.int32), "at_index": None}), [True, None], DIGEST),
    Entry("c1", 3, 2, None, [False, {"type": "TypeError", "message": "no", "args": ["no"]}], DIGEST),
])
# The bytes of SAMPLE as journal format 3 writes them. If this changes (e.g. the value codec in
# protocol/values.py did), old journals would be misread: bump journal.FORMAT_VERSION and read the old one.
SAMPLE_HEX = (
    "de0000002f947b1201000000d20000000000000093a6636f6d6d6974079396a26331030093a6617070656e64a3612f78"
    "82a464617461cb3ff8000000000000a5696e6465780492c304c4100101010101010101010101010101010196a2633103"
    "0193a57772697465a17982a464617461c7150293a33c69349103c40c000000000100000002000000a861745f696e6465"
    "78c092c3c0c4100101010101010101010101010101010196a263310302c092c283a474797065a9547970654572726f72"
    "a76d657373616765a26e6fa46172677391a26e6fc41001010101010101010101010101010101"
)
# SAMPLE as format 2 wrote it (no request digests): still read.
SAMPLE_HEX_V2 = (
    "a80000002aa2c2e1010000009c0000000000000093a6636f6d6d6974079395a26331030093a6617070656e64a3612f78"
    "82a464617461cb3ff8000000000000a5696e6465780492c30495a26331030193a57772697465a17982a464617461c715"
    "0293a33c69349103c40c000000000100000002000000a861745f696e646578c092c3c095a263310302c092c283a47479"
    "7065a9547970654572726f72a76d657373616765a26e6fa46172677391a26e6f"
)


def _nstored(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nstore.daemon.cli", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)


def test_records_round_trip_typed(tmp_path):
    path = str(tmp_path / "j")
    journal = Journal(path, first_record=Snapshot(5, {"c1": [1.0, [[3, [[0, [True, 4]]]]]]}))
    journal.append(SAMPLE)
    journal.close()
    with open(path, "rb") as fh:
        assert fh.read(HEADER_BYTES) == MAGIC + struct.pack("<I", FORMAT_VERSION)
    snapshot, commit = read_records(path)
    assert snapshot == Snapshot(5, {"c1": [1.0, [[3, [[0, [True, 4]]]]]]})
    assert commit.seq == 7 and [e.op_index for e in commit.entries] == [0, 1, 2]
    assert commit.entries[0] == SAMPLE.entries[0]
    assert commit.entries[1].op[2]["data"].tolist() == [0, 1, 2]
    assert commit.entries[2].op is None and commit.entries[2].wire[0] is False


def test_record_encoding_is_pinned():
    parts, size = journal_module._record_parts(SAMPLE)
    data = b"".join(bytes(part) for part in parts)
    assert len(data) == size
    assert data.hex() == SAMPLE_HEX, data.hex()


def test_a_format_2_journal_is_read_without_digests(tmp_path):
    path = str(tmp_path / "j")
    with open(path, "wb") as fh:
        fh.write(MAGIC + struct.pack("<I", 2) + bytes.fromhex(SAMPLE_HEX_V2))
    (commit,) = read_records(path)
    assert commit.seq == 7 and [e.digest for e in commit.entries] == [b"", b"", b""]
    assert commit.entries[0] == SAMPLE.entries[0]._replace(digest=b"")
    assert commit.entries[1].op[2]["data"].tolist() == [0, 1, 2]


def test_a_journal_of_an_unknown_version_is_refused_and_left_untouched(tmp_path, daemon_factory):
    file_name = str(tmp_path / "run.nc")
    journal = journal_path(file_name)
    content = MAGIC + struct.pack("<I", FORMAT_VERSION + 97) + b"records of a future nstore"
    with open(journal, "wb") as fh:
        fh.write(content)
    result = _nstored("recover", file_name)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"journal format version {FORMAT_VERSION + 97}" in result.stderr and "left untouched" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    with pytest.raises(RuntimeError, match=f"journal format version {FORMAT_VERSION + 97}"):
        daemon_factory(file_name)
    with open(journal, "rb") as fh:
        assert fh.read() == content


def _old_record(record: dict) -> bytes:
    """One record as nstore wrote it before the journal had a header (format 1)."""
    views = [memoryview(f).cast("B") for f in pack(record)]
    index = struct.pack("<I", len(views)) + b"".join(struct.pack("<Q", v.nbytes) for v in views)
    payload = index + b"".join(bytes(v) for v in views)
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def test_an_old_headerless_journal_is_replayed(tmp_path, daemon_factory):
    file_name = str(tmp_path / "run.nc")
    with open(journal_path(file_name), "wb") as fh:
        fh.write(_old_record({"snapshot": 0, "clients": {}}))
        fh.write(_old_record({"seq": 1, "ops": [
            ["c1", 1, 0, ["put", "x", {"data": 1.0, "index": 0}], [True, 0]],
            ["c1", 2, 0, ["write", "y", {"data": np.eye(2), "at_index": None}], [True, None]],
            ["c1", 3, 0, ["add_metadata", "x", {"name": "note", "value": "hi"}], [True, None]],
            ["c1", 4, 0, ["get_directory", "g/h", {}], [True, "g/h"]],
            ["c1", 5, 0, None, [False, {"type": "TypeError", "message": "bad", "args": ["bad"]}]],
        ]}))
        fh.write(_old_record({"seq": 2, "ops": [["c2", 1, 0, ["put", "x", {"data": 2.0, "index": 1}], [True, 1]]]}))
    daemon = daemon_factory(file_name)
    driver = connect(daemon.endpoint, timeout=30)
    try:
        assert np.asarray(driver.read_variable("x")).tolist() == [1.0, 2.0]
        assert np.asarray(driver.read_variable("y")).tolist() == np.eye(2).tolist()
        assert driver.read_metadata("x") == {"note": "hi"}
        assert driver.list_directory("g") == ["h"]
    finally:
        driver.close()
    assert daemon.stop() == 0, daemon.log()
    with open(journal_path(file_name), "rb") as fh:
        assert fh.read(len(MAGIC)) == MAGIC  # the checkpoint rewrote it in the current format


def test_array_data_goes_from_the_received_frame_to_the_journal_without_a_copy():
    """The journal record's buffers for an appended array are the request frame's own memory."""
    from nstore.daemon.journal import _record_parts
    from nstore.protocol.messages import decode_request, encode_request

    frames = [bytearray(bytes(f)) for f in encode_request(1, "c", [("append", "x", {"data": np.arange(4096.0)})])]
    received = np.frombuffer(frames[1], dtype=np.uint8)  # the array's frame, as the daemon received it
    data = decode_request(frames).ops[0].args["data"]
    assert np.shares_memory(data, received)
    parts, _ = _record_parts(Commit(1, [Entry("c", 1, 0, ("append", "x", {"data": data, "index": 0}), [True, 0])]))
    assert any(np.shares_memory(np.frombuffer(part, dtype=np.uint8), received) for part in parts)
