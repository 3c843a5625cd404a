"""Hostile stored text (issue 13, item 5): alias bombs, deep nesting and huge replies are bounded.

Stored YAML text is written into a file directly with netCDF4 (as a hostile
user could), then read in-process, with ``nstore read`` and through a daemon:
each gives a clear ValueError naming the variable, and the daemon carries on.
A daemon also refuses a read whose reply would exceed its per-op data limit,
suggesting a slice.
"""

from __future__ import annotations

import os
import subprocess
import sys

import netCDF4
import numpy as np
import pytest

from nstore import NetCDFIODriver, StorageInterface, connect
from nstore.daemon import textcodec


def alias_bomb(levels: int = 6, width: int = 12) -> str:
    """``width ** levels`` strings from a few hundred bytes of YAML ("billion laughs")."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


DEEP = "[" * 300 + "]" * 300
DEEP_MAPPING = "{a: " * 300 + "1" + "}" * 300
SELF_REFERENCE = "&a [1, *a]"


def store_text(file_name: str, path: str, text: str, appendable: bool = False) -> None:
    """Create dict variable ``path`` with nstore, then overwrite its stored text with ``text``."""
    store = StorageInterface(NetCDFIODriver(file_name))
    if appendable:
        store[path].append({"a": 1})
        store[path].append({"a": 2})
    else:
        store[path].write({"a": 1})
    store.close()
    with netCDF4.Dataset(file_name, "a") as ds:
        var = ds[path]
        cell = np.empty(var.shape, dtype=object)
        cell[...] = text
        var[...] = cell


HOSTILE = [(alias_bomb(), "aliases"), (DEEP, "deeper than"), (DEEP_MAPPING, "deeper than"),
           (SELF_REFERENCE, "refers to itself")]


@pytest.mark.parametrize("text, reason", HOSTILE, ids=["alias-bomb", "deep-list", "deep-mapping", "self-reference"])
@pytest.mark.parametrize("appendable", [False, True], ids=["fixed", "appendable"])
def test_hostile_text_gives_a_value_error_naming_the_variable(tmp_path, text, reason, appendable):
    file_name = str(tmp_path / "run.nc")
    store_text(file_name, "group/settings", text, appendable)
    driver = NetCDFIODriver(file_name, "r")
    try:
        with pytest.raises(ValueError, match=f"^group/settings: stored text .*{reason}"):
            driver.read_variable("group/settings")
    finally:
        driver.close()


@pytest.mark.parametrize("text", [alias_bomb(), DEEP], ids=["alias-bomb", "deep-list"])
def test_nstore_read_reports_hostile_text_without_a_traceback(tmp_path, text):
    file_name = str(tmp_path / "run.nc")
    store_text(file_name, "settings", text)
    result = subprocess.run([sys.executable, "-m", "nstore.cli", "read", file_name, "settings"],
                            capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert result.returncode != 0
    assert "settings: stored text" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_daemon_refuses_hostile_text_and_keeps_serving(tmp_path, daemon_factory):
    file_name = str(tmp_path / "run.nc")
    store_text(file_name, "settings", alias_bomb())
    daemon = daemon_factory(file_name)
    driver = connect(daemon.endpoint, timeout=30)
    try:
        store = StorageInterface(driver)
        with pytest.raises(ValueError, match="settings: stored text expands, through aliases"):
            store.settings.read()
        assert store.energy.append(1.5) == 0
        assert list(store.energy.read()) == [1.5]
    finally:
        driver.close()


def test_aliases_that_nstore_itself_writes_still_read_back(tmp_path):
    """The dumper writes anchors/aliases for an object stored twice: those stay readable."""
    shared = {"coefficients": [0.5, 1.5, 2.5], "label": "run"}
    value = {f"k{i}": shared for i in range(50)}
    text = textcodec.dumps(value)
    assert "*id" in text  # (it does use aliases)
    assert textcodec.loads(text) == value
    store = StorageInterface(NetCDFIODriver(str(tmp_path / "run.nc")))
    store.settings.write(value)
    assert store.settings.read() == value
    store.close()


def test_loader_limits(monkeypatch):
    nested = "[" * textcodec.MAX_DEPTH + "]" * textcodec.MAX_DEPTH
    assert textcodec.loads(nested) is not None  # exactly at the limit: fine
    with pytest.raises(ValueError, match="malformed tag"):
        textcodec.loads("!ndarray {shape: [1]}")
    monkeypatch.setattr(textcodec, "MAX_TEXT_CHARS", 100)
    with pytest.raises(ValueError, match="characters long"):
        textcodec.loads("a: " + "x" * 200)


# --- reply size ---------------------------------------------------------------------------------------


def test_daemon_refuses_a_read_bigger_than_its_limit_and_suggests_a_slice(tmp_path, daemon_factory):
    file_name = str(tmp_path / "run.nc")
    daemon = daemon_factory(file_name, "--max-array-mb", "1")
    driver = connect(daemon.endpoint, timeout=30)
    try:
        store = StorageInterface(driver)
        row = np.arange(100_000, dtype=np.float64)  # 800 kB per entry
        store.rows.append(row)
        store.rows.append(row)
        with pytest.raises(ValueError, match=r"^rows: reading 2 entries would reply .* read a slice instead, e\.g\. "
                                             r"read\(slice\(0, 1\)\)"):
            store.rows.read()
        assert np.array_equal(store.rows.read(slice(0, 1))[0], row)
        assert np.array_equal(store.rows.read(-1), row)
        for i in range(60):
            store.notes.append({"i": i, "text": "n" * 20_000})
        with pytest.raises(ValueError, match=r"^notes: reading 60 entries would reply .* read a slice instead"):
            store.notes.read()
        assert [entry["i"] for entry in store.notes.read(slice(10, 20))] == list(range(10, 20))
        assert store.small.append(1) == 0 and list(store.small.read()) == [1]
    finally:
        driver.close()
