"""The daemon's op table: one entry per wire op, and replay goes through it."""

from __future__ import annotations

import numpy as np
import pytest

from nstore.daemon.daemon_engine import DaemonEngine
from nstore.daemon.ops import OPS, replay_op
from nstore.protocol import messages


def test_every_wire_op_has_one_table_entry():
    assert set(OPS) == set(messages.OPS)
    for name, spec in OPS.items():
        assert (spec.journal is not None) == spec.mutates == (spec.replay is not None), name
        assert spec.apply is not None or name in ("append", "append_column"), name  # applied in runs by batch.py


def test_replay_applies_each_journaled_op(tmp_path):
    engine = DaemonEngine(str(tmp_path / "run.nc"))
    try:
        replay_op(engine, "get_directory", "g/h", {})
        replay_op(engine, "append", "g/x", OPS["append"].journal({"data": 1.5}, 0))
        replay_op(engine, "append", "g/x", OPS["append"].journal({"data": 2.5}, 1))
        replay_op(engine, "append", "g/x", OPS["append"].journal({"data": 9.5}, 0))  # idempotent: overwrites
        replay_op(engine, "write", "y", OPS["write"].journal({"data": np.eye(2)}, None))
        replay_op(engine, "add_metadata", "y", {"name": "note", "value": "hi"})
        assert engine.read_variable("g/x").tolist() == [9.5, 2.5]
        assert engine.read_variable("y").tolist() == np.eye(2).tolist()
        assert engine.read_metadata("y") == {"note": "hi"}
        assert engine.list_directory("g") == ["h", "x"]
        with pytest.raises(ValueError, match="journal entry 5 but only 2 entries"):
            replay_op(engine, "append", "g/x", {"data": 1.0, "index": 5})
        for name in ("read", "put", "nonsense"):
            with pytest.raises(ValueError, match=f"unknown journaled op {name!r}"):
                replay_op(engine, name, "g/x", {})
    finally:
        engine.close()


def test_a_reservation_commits_or_gives_its_indices_back(tmp_path):
    engine = DaemonEngine(str(tmp_path / "run.nc"))
    try:
        engine.append_variable("x", 0.0)
        aborted = engine.reserve_appends("x", [1.0, "text", 2.0])
        assert aborted.results[0] == 1 and isinstance(aborted.results[1], TypeError) and aborted.results[2] == 2
        aborted.abort()
        assert engine.variable_info("x")["length"] == 1
        kept = engine.reserve_appends("x", [3.0, 4.0])
        assert kept.results == [1, 2]
        assert kept.commit() == [1, 2]
        assert engine.read_variable("x").tolist() == [0.0, 3.0, 4.0]
    finally:
        engine.close()
