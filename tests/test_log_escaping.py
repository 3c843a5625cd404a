"""Log injection (issue 13, item 9): request data in nstored's log lines is escaped."""

from __future__ import annotations

import logging

import zmq

from nstore.protocol.messages import decode_reply, encode_request
from nstore.daemon.logsafe import EscapeControlCharacters, escape

FORGED = "2026-01-01 00:00:00,000 nstored[1] ERROR forged line"


def test_a_newline_in_a_request_path_cannot_forge_a_log_line(tmp_path, daemon_factory):
    daemon = daemon_factory(str(tmp_path / "run.nc"))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, b"log-test")  # its requests say client "log-test"
    sock.connect(daemon.endpoint)
    try:  # raw requests: the client library would refuse these paths before sending them
        requests = [("append", f"x\n{FORGED}", {"data": 1.0}), ("read", f"y\r\n{FORGED}", {}),
                    ("read", "missing", {})]
        for request_id, op in enumerate(requests, start=1):
            sock.send_multipart(encode_request(request_id, "log-test", [op]))
            assert sock.poll(10_000), "no reply"
            reply_id, results = decode_reply(sock.recv_multipart())
            assert reply_id == request_id and results[0][0] is False
    finally:
        sock.close()
    log = daemon.log()
    assert not [line for line in log.splitlines() if line.startswith(FORGED[:10])], log
    assert f"append x\\n{FORGED} failed" in log and f"read y\\r\\n{FORGED} failed" in log, log
    assert "read missing failed: KeyError: 'missing: no variable stored here'" in log, log


def test_escape_filter_rewrites_arguments_and_message():
    record = logging.LogRecord("nstored", logging.INFO, __file__, 1, "op %s on %s: %s (%d)",
                               ("a\nb", "p\x1b[31m", ValueError("v\rw"), 7), None)
    assert EscapeControlCharacters().filter(record)
    assert record.getMessage() == "op a\\nb on p\\x1b[31m: v\\rw (7)"
    assert escape("plain text, unicode é ok\t") == "plain text, unicode é ok\\t"
    assert escape("a\u2028b\x85c\x7f") == "a\\u2028b\\x85c\\x7f"
