"""``nstore``: look into an nstore file, directly or through the nstored serving it.

    nstore inspect FILE [--endpoint E] [--json]       the tree: groups, variables, kinds, types, units, metadata
    nstore read FILE PATH [--index I | --slice A:B]   print one variable (or entries of an appendable one)
    nstore snapshot FILE OUT.nc [--endpoint E]        copy a (live) file into a new, closed NetCDF file
    nstore tail FILE PATH [-n N] [-f]                 the last N entries of an appendable variable; -f follows

When a daemon serves FILE (its lock file names an endpoint that answers) or
``--endpoint`` is given, everything goes through that daemon, so a running
simulation can be looked at safely; otherwise FILE is opened read-only
in-process. A daemon on tcp needs its CurveZMQ keys (``--keys DIR`` or
``$NSTORE_KEYS``); a lock naming a daemon that serves another file is refused.

``snapshot`` takes one consistent cut of a live file: the lengths of
all appendable variables, every fixed value and all metadata are read in one
request, which the daemon answers between two other operations; the entries up
to those lengths are then copied. The result is a plain file that xarray can open.

This module does not import netCDF4 unless a file is opened in-process (or a
snapshot is written), so it works on machines that only talk to daemons.
"""

from __future__ import annotations

import argparse
import json
import os
import pprint
import shutil
import sys
from typing import Any

import numpy as np

from nstore.protocol import kinds
from nstore.protocol.api import StorageDriver
from nstore.protocol.endpoints import is_endpoint, read_lock, real_path

from . import inspect as _inspect

DEFAULT_TIMEOUT_S = 60.0
LOCK_PROBE_TIMEOUT_S = 3.0  # a daemon named in a lock file that does not answer this fast is taken as gone
BLOCK_BYTES = 32 * 1024 * 1024  # snapshot copies appendable variables in blocks of about this size
TEXT_ROW_BYTES = 1024  # assumed size of one str/dict entry when sizing blocks
MAX_COPY_RATIO = 64  # snapshot refuses a copy estimated (8 bytes a value) past this many times the source file


class CLIError(ValueError):
    """A user-facing error: printed without a traceback, exit status 1."""


class NoSuchFile(CLIError, FileNotFoundError):
    """The file to read is not there (a FileNotFoundError for the xarray backend's callers)."""


# --- opening a file -------------------------------------------------------------------------------


def open_source(file_name: str, endpoint: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                keys: str | None = None) -> tuple[StorageDriver, dict]:
    """A driver for ``file_name`` and a description of how it was reached.

    ``endpoint`` given: through that daemon (it must serve ``file_name``).
    Else, if the file's lock names a daemon that answers: through it, once it
    has said it serves that very file. Else: the file itself, read-only, in-process.
    ``keys``: CurveZMQ keys for a tcp daemon (default ``$NSTORE_KEYS``).
    """
    from nstore.protocol.transport import WrongDaemonError

    from .connecting import connect

    if endpoint or is_endpoint(file_name):
        driver = connect(endpoint or file_name, timeout=timeout, connect_timeout=timeout, keys=keys)
        if endpoint and file_name and real_path(file_name) != driver.file_name:
            driver.close()
            raise CLIError(f"{endpoint} serves {driver.file_name}, not {real_path(file_name)}")
        return driver, {"via": "nstored", "endpoint": driver.endpoint, "pid": driver.daemon_pid}
    if read_lock(file_name) is not None:
        try:
            driver = connect(file_name, timeout=timeout, connect_timeout=LOCK_PROBE_TIMEOUT_S, keys=keys)
        except WrongDaemonError as exc:
            raise CLIError(str(exc)) from None
        except ConnectionError:
            pass  # stale lock: that daemon is gone; read the file itself
        else:
            return driver, {"via": "nstored", "endpoint": driver.endpoint, "pid": driver.daemon_pid}
    if not os.path.isfile(file_name):
        raise NoSuchFile(f"{file_name}: no such file")
    from nstore.daemon.engine import NetCDFIODriver  # netCDF4 only here

    return NetCDFIODriver(file_name, access_mode="r"), {"via": "file"}


def _source_text(source: dict) -> str:
    if source["via"] == "file":
        return "read-only, in-process"
    return f"through nstored pid {source['pid']} at {source['endpoint']}"


# --- printing values --------------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A readable rendering: plain numbers (no ``np.float64(...)``), arrays summarized, units spelled out."""
    width = shutil.get_terminal_size((120, 24)).columns
    with np.printoptions(legacy="1.25", linewidth=max(width, 40), threshold=1000, edgeitems=3):
        return _format(value, width)


def _format(value: Any, width: int) -> str:
    from nstore.protocol.units import is_quantity, unit_string

    if is_quantity(value):
        return f"{_format(value.magnitude, width)} {unit_string(value.units)}"
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray):
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        return pprint.pformat(value, width=max(width, 40), sort_dicts=False)
    return str(value)


def _parse_slice(text: str) -> slice:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"{text!r} is not a slice like 10:20, :5, -3: or ::2")
    try:
        bounds = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a slice like 10:20, :5, -3: or ::2") from None
    return slice(*bounds)


# --- snapshot -----------------------------------------------------------------------------------------


def _atomic(driver: StorageDriver, ops: list[tuple[str, str, dict]], timeout: float) -> list:
    """Results of ``ops`` observed at one instant.

    Through a daemon, the ops travel in one request, which the daemon applies
    without interleaving other clients' operations. In-process there is no
    concurrent writer, so plain calls do.
    """
    from nstore.protocol.messages import MAX_OPS_PER_MESSAGE

    endpoint = getattr(driver, "endpoint", None)
    if endpoint is None:
        calls = {"info": lambda p: driver.variable_info(p), "read": lambda p: driver.read_variable(p),
                 "metadata": lambda p: driver.read_metadata(p or "/")}
        return [calls[name](path) for name, path, _ in ops]
    results: list = []
    for start in range(0, len(ops), MAX_OPS_PER_MESSAGE):  # beyond 10,000 ops the cut is per message
        results += _request(driver, ops[start : start + MAX_OPS_PER_MESSAGE], timeout)
    return results


def _request(driver: StorageDriver, ops: list, timeout: float) -> list:
    """The values of ``ops``, sent in one request to the daemon behind ``driver``."""
    from nstore.protocol.errors import error_from_wire
    from nstore.protocol.transport import exchange

    values = []
    for (name, path, _), (ok, value) in zip(ops, exchange(driver.endpoint, ops, timeout=timeout, keys=driver.keys)):
        if not ok:
            error = error_from_wire(value)
            raise CLIError(f"{name} {path or '/'}: {type(error).__name__}: {_message(error)}")
        values.append(value)
    return values


def _entries_of(value: Any, info: dict) -> list:
    """The stacked form ``read(slice)`` returns, split back into the entries that were appended."""
    return kinds.KINDS[info["io_type"]].entries_of(value, info["type"])


def _rows_per_block(info: dict) -> int:
    if kinds.KINDS[info["io_type"]].storage == "text":
        return max(1, BLOCK_BYTES // TEXT_ROW_BYTES)
    return max(1, BLOCK_BYTES // (8 * int(np.prod(info["shape"] or [1]))))


def _copyable_tree(driver: StorageDriver) -> tuple[list, list]:
    """``(group paths, [(variable path, info)])`` of the store; CLIError if a variable cannot be read, or
    the copy would be absurdly larger than the source file (a crafted file declaring huge dimensions; the
    source size is known only when the file is local)."""
    tree, file_name = list(_inspect.walk(driver)), driver.file_name
    variables = [(path, info) for path, info in tree if info is not None]
    unreadable = [info["error"] for _, info in variables if "error" in info]
    if unreadable:
        raise CLIError(f"{file_name}: cannot snapshot a file holding unreadable variables: {'; '.join(unreadable)}")
    sizes = {path: 8 * int(np.prod(info["shape"] or [1], dtype=np.float64)) * (info["length"] if info["appendable"]
                                                                                  else 1) for path, info in variables}
    total = sum(sizes.values())
    source = os.path.getsize(file_name) if os.path.isfile(file_name) else None
    if source is not None and total > MAX_COPY_RATIO * source + BLOCK_BYTES:
        biggest = max(sizes, key=sizes.get)
        raise CLIError(f"{file_name}: a copy would hold about {total} bytes, more than {MAX_COPY_RATIO} times the "
                       f"{source}-byte file ({biggest} declares {sizes[biggest]} bytes); refusing to write it")
    return [path for path, info in tree if info is None], variables


def snapshot(driver: StorageDriver, out_path: str, timeout: float = DEFAULT_TIMEOUT_S) -> dict:
    """Copy everything ``driver`` serves into a new file ``out_path``; returns counts.

    Same kinds, types, shapes, units and metadata; appendable variables get the
    entries they had at the moment of the cut. The file appears under
    ``out_path`` only once complete (written next to it, then renamed).
    """
    from nstore.daemon.engine import NetCDFIODriver  # netCDF4 only here

    groups, variables = _copyable_tree(driver)
    ops: list[tuple[str, str, dict]] = [("metadata", "", {})]
    ops += [("metadata", path, {}) for path in groups]
    for path, info in variables:
        ops += [("info", path, {}), ("metadata", path, {})]
        if not info["appendable"]:
            ops.append(("read", path, {}))
    results = iter(_atomic(driver, ops, timeout))
    root_metadata = next(results)
    group_metadata = {path: next(results) for path in groups}
    cut = []
    for path, _ in variables:
        info, metadata = next(results), next(results)
        value = None if info["appendable"] else next(results)
        cut.append((path, info, metadata, value))

    partial = f"{out_path}.partial-{os.getpid()}"
    out = NetCDFIODriver(partial, access_mode="w")
    entries = 0
    try:
        for name, value in root_metadata.items():
            out.add_metadata(name, value, path="/")
        for path in groups:
            out.get_directory(path)
            for name, value in group_metadata[path].items():
                out.add_metadata(name, value, path=path)
        for path, info, metadata, value in cut:
            if not info["appendable"]:
                out.write_variable(path, value)
            else:
                step = _rows_per_block(info)
                for start in range(0, info["length"], step):
                    block = driver.read_variable(path, slice(start, min(start + step, info["length"])))
                    for outcome in out.append_many(path, _entries_of(block, info)):
                        if isinstance(outcome, BaseException):
                            raise outcome
                entries += info["length"]
                if info["length"] == 0:
                    continue  # nothing to create the variable with
            for name, meta in metadata.items():
                out.add_metadata(name, meta, path=path)
        out.close()
        os.replace(partial, out_path)
    except BaseException:
        out.close()
        if os.path.exists(partial):
            os.remove(partial)
        raise
    return {"groups": len(groups), "variables": len(variables), "entries": entries}


# --- commands -------------------------------------------------------------------------------------------


def _cmd_inspect(args: argparse.Namespace) -> int:
    driver, source = open_source(args.file, args.endpoint, args.timeout, args.keys)
    try:
        if args.json:
            document = {"file": driver.file_name, "source": source, "metadata": driver.read_metadata("/"),
                        "entries": _inspect.entries(driver)}
            print(json.dumps(document, indent=2, default=_json_default, ensure_ascii=False))
        else:
            lines = _inspect.tree_lines(driver)
            lines[0] += f"  ({_source_text(source)})"
            print("\n".join(lines))
    finally:
        driver.close()
    return 0


def _cmd_read(args: argparse.Namespace) -> int:
    driver, _ = open_source(args.file, args.endpoint, args.timeout, args.keys)
    try:
        index = args.index if args.index is not None else args.slice
        value = driver.read_variable(args.path, index)
        print(format_value(value))
    finally:
        driver.close()
    return 0


def _cmd_snapshot(args: argparse.Namespace) -> int:
    if os.path.exists(args.out) and real_path(args.out) == real_path(args.file):
        raise CLIError(f"{args.out}: the snapshot must go to another file than the one it copies")
    if read_lock(args.out) is not None:
        raise CLIError(f"{args.out}: an nstored serves that file; snapshot into a new file")
    driver, source = open_source(args.file, args.endpoint, args.timeout, args.keys)
    try:
        if real_path(args.out) == driver.file_name:
            raise CLIError(f"{args.out}: the snapshot must go to another file than the one it copies")
        counts = snapshot(driver, args.out, timeout=args.timeout)
    finally:
        driver.close()
    print(f"{args.out}: snapshot of {driver.file_name} ({_source_text(source)}): {counts['variables']} variables, "
          f"{counts['groups']} groups, {counts['entries']} appended entries")
    return 0


def _cmd_tail(args: argparse.Namespace) -> int:
    from .tail import Printer, tail

    driver, source = open_source(args.file, args.endpoint, args.timeout, args.keys)
    try:
        return tail(Printer(driver, args.path, format_value, _entries_of), args.lines, args.follow,
                    live=source["via"] == "nstored")
    except KeyboardInterrupt:  # Ctrl-C ends a follow: not an error
        return 0
    finally:
        try:
            driver.close()
        except ConnectionError:
            pass  # the daemon is gone, and tail only reads: nothing is lost


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return str(exc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nstore", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--endpoint", help="talk to the nstored at this endpoint (default: the one serving FILE, if any)")
        p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for the daemon")
        p.add_argument("--keys", metavar="DIR", help="CurveZMQ keys for a daemon on tcp (default: $NSTORE_KEYS)")

    p = sub.add_parser("inspect", help="print the tree of groups and variables")
    p.add_argument("file", help="the NetCDF file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    common(p)
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("read", help="print one variable")
    p.add_argument("file", help="the NetCDF file")
    p.add_argument("path", help="the variable, e.g. replica0/energy")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, help="one entry of an appendable variable (negative counts from the end)")
    which.add_argument("--slice", type=_parse_slice, help="entries A:B[:STEP] of an appendable variable "
                                                          "(write --slice=-3: for negative starts)")
    common(p)
    p.set_defaults(func=_cmd_read)

    p = sub.add_parser("snapshot", help="copy a (live) file into a new closed file, e.g. for xarray")
    p.add_argument("file", help="the NetCDF file")
    p.add_argument("out", help="the new file (replaced if it exists)")
    common(p)
    p.set_defaults(func=_cmd_snapshot)

    p = sub.add_parser("tail", help="the last entries of an appendable variable; -f follows new ones")
    p.add_argument("file", help="the NetCDF file")
    p.add_argument("path", help="an appendable variable, e.g. replica0/energy")
    p.add_argument("-n", "--lines", type=int, default=10, help="how many of the last entries (default 10)")
    p.add_argument("-f", "--follow", action="store_true", help="then print entries as they are appended, "
                                                               "until Ctrl-C or the daemon stops")
    common(p)
    p.set_defaults(func=_cmd_tail)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"nstore: {exc}", file=sys.stderr)
    except (KeyError, TypeError, ValueError, OSError, ConnectionError) as exc:
        print(f"nstore: {type(exc).__name__}: {_message(exc)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
