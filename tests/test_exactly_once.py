"""Issue 13 item 4: exactly-once answers only the identical request, from the connection holding the client id.

Raw DEALER sockets play a careless or hostile peer; a real daemon serves each test.
"""

from __future__ import annotations

import pytest
import zmq

from nstore import connect
from nstore.daemon.clients import ClientTable
from nstore.protocol.messages import decode_reply, encode_request

REPLY_TIMEOUT_MS = 10_000


class Peer:
    """A bare DEALER socket with a chosen routing id (None: ZeroMQ picks one)."""

    def __init__(self, endpoint: str, routing_id: bytes | None):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        self.sock.connect(endpoint)

    def ask(self, request_id: int, client: str, ops: list, timeout_ms: int = REPLY_TIMEOUT_MS):
        """Send one request; ``(reply id, results)``, or None when no reply comes in time."""
        self.sock.send_multipart(encode_request(request_id, client, ops))
        if not self.sock.poll(timeout_ms):
            return None
        return decode_reply(self.sock.recv_multipart())

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def peers():
    opened: list[Peer] = []

    def _open(endpoint: str, routing_id: bytes | None = None) -> Peer:
        opened.append(Peer(endpoint, routing_id))
        return opened[-1]

    yield _open
    for peer in opened:
        peer.close()


def _read(endpoint: str, path: str) -> list:
    peer = Peer(endpoint, None)
    try:
        reply_id, results = peer.ask(1, "", [("read", path, {})])
    finally:
        peer.close()
    assert results[0][0] is True, results
    return results[0][1].tolist()


def test_reused_id_with_another_append_is_refused_not_dropped(tmp_path, daemon_factory, peers):
    daemon = daemon_factory(tmp_path / "run.nc")
    peer = peers(daemon.endpoint, b"me")
    assert peer.ask(1, "me", [("append", "x", {"data": 1.0})]) == (1, [[True, 0]])
    assert peer.ask(1, "me", [("append", "x", {"data": 1.0})]) == (1, [[True, 0]])  # a resend: answered, not doubled
    reply_id, results = peer.ask(1, "me", [("append", "x", {"data": 2.0})])
    assert reply_id == 1 and results[0][0] is False
    assert results[0][1]["type"] == "ProtocolError"
    assert "client 'me': request id 1 was already used for a different request" in results[0][1]["message"]
    assert _read(daemon.endpoint, "x") == [1.0]  # neither doubled nor silently replaced
    assert daemon.process.poll() is None


def test_a_read_under_a_reused_id_is_read(tmp_path, daemon_factory, peers):
    daemon = daemon_factory(tmp_path / "run.nc")
    peer = peers(daemon.endpoint, b"me")
    assert peer.ask(5, "me", [("append", "x", {"data": 7.0})]) == (5, [[True, 0]])
    reply_id, results = peer.ask(5, "me", [("read", "x", {"index": 0})])
    assert reply_id == 5 and results[0][0] is True and results[0][1] == 7.0  # the value, not the append's index 0


def test_a_peer_cannot_claim_another_clients_id(tmp_path, daemon_factory, peers):
    daemon = daemon_factory(tmp_path / "run.nc")
    victim = peers(daemon.endpoint, b"victim")
    assert victim.ask(1, "victim", [("append", "x", {"data": 1.0})]) == (1, [[True, 0]])
    # over its own connection: refused, nothing applied, nothing remembered
    thief = peers(daemon.endpoint)
    reply_id, results = thief.ask(2, "victim", [("append", "x", {"data": 99.0})])
    assert reply_id == 2 and results[0][0] is False and "routing id" in results[0][1]["message"]
    # with the victim's routing id while the victim is connected: ZeroMQ refuses the connection
    twin = peers(daemon.endpoint, b"victim")
    assert twin.ask(2, "victim", [("append", "x", {"data": 98.0})], timeout_ms=1500) is None
    assert victim.ask(2, "victim", [("append", "x", {"data": 2.0})]) == (2, [[True, 1]])
    assert _read(daemon.endpoint, "x") == [1.0, 2.0]


def test_remembered_digest_survives_a_crash(tmp_path, daemon_factory, peers):
    file_name = tmp_path / "run.nc"
    daemon = daemon_factory(file_name)
    peer = peers(daemon.endpoint, b"me")
    assert peer.ask(1, "me", [("append", "x", {"data": 1.0})]) == (1, [[True, 0]])
    peer.close()
    daemon.kill()
    daemon = daemon_factory(file_name)
    peer = peers(daemon.endpoint, b"me")  # a fresh socket, as a client riding through the restart has
    assert peer.ask(1, "me", [("append", "x", {"data": 1.0})]) == (1, [[True, 0]])
    reply_id, results = peer.ask(1, "me", [("append", "x", {"data": 3.0})])
    assert results[0][0] is False and "already used for a different request" in results[0][1]["message"]
    assert _read(daemon.endpoint, "x") == [1.0]


def test_the_client_library_still_rides_through_a_restart(tmp_path, daemon_factory):
    file_name = tmp_path / "run.nc"
    daemon = daemon_factory(file_name)
    driver = connect(daemon.endpoint, grace=30)
    try:
        assert driver.append_variable("x", 1.0) == 0
        daemon.kill()
        daemon = daemon_factory(file_name, endpoint=daemon.endpoint)
        assert driver.append_variable("x", 2.0) == 1
        assert driver.read_variable("x").tolist() == [1.0, 2.0]
    finally:
        driver.close()


def test_table_snapshots_keep_digests_and_read_old_ones():
    table = ClientTable()
    table.remember("c", 1, 0, [True, 0], b"d" * 16)
    restored = ClientTable()
    restored.restore(table.snapshot())
    assert restored.lookup("c", 1, b"d" * 16) == {0: [True, 0]}
    with pytest.raises(ValueError, match="request id 1 was already used"):
        restored.lookup("c", 1, b"e" * 16)
    old = ClientTable()
    old.restore({"c": [1.0, [[1, [[0, [True, 0]]]]]]})  # journal format 2: no digest, matches any request
    assert old.lookup("c", 1, b"e" * 16) == {0: [True, 0]}
