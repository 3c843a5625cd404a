"""``nstored``: serve, start, stop and inspect the daemon that owns a NetCDF file.

    nstored serve FILE [--endpoint E]     foreground, logs to stderr
    nstored start FILE [--endpoint E]     background; returns once it accepts connections
    nstored stop FILE | ENDPOINT          drain, checkpoint, close, wait for exit
    nstored status FILE | ENDPOINT [--json | --watch]
    nstored recover FILE                  replay the journal into the file, then exit
    nstored keygen DIR                    CurveZMQ key pairs for tcp
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time

from nstore.protocol.endpoints import is_endpoint, lock_path, pid_alive, read_lock, real_path

START_TIMEOUT_S = 30.0


def _serve(args: argparse.Namespace) -> int:
    import zmq

    from .lock import AlreadyServedError
    from .server import Server

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s nstored[%(process)d] %(levelname)s %(message)s")
    try:
        server = Server(args.file, args.endpoint, fsync=args.fsync,
                        checkpoint_interval_s=args.checkpoint_interval,
                        checkpoint_bytes=int(args.checkpoint_mb * 1024 * 1024),
                        keys=args.keys, insecure=args.insecure,
                        max_array_bytes=int(args.max_array_mb * 1024 * 1024),
                        max_message_bytes=int(args.max_message_mb * 1024 * 1024),
                        client_idle_s=args.client_idle_s)
    except AlreadyServedError as exc:
        print(f"nstored: {exc}", file=sys.stderr)
        return 3
    except (OSError, ValueError, zmq.ZMQError) as exc:  # (PermissionError is an OSError)
        print(f"nstored: cannot serve {args.file}: {exc}", file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.stop())
    print(f"nstored: serving {server.file_name} on {server.endpoint}", file=sys.stderr, flush=True)
    server.serve_forever()
    if server.exit_error:
        print(f"nstored: {server.file_name}: did not exit cleanly: {server.exit_error}", file=sys.stderr)
        return 1
    return 0


def _start(args: argparse.Namespace) -> int:
    file_name = real_path(args.file)
    log_path = args.log or file_name + ".nstored.log"
    command = [sys.executable, "-m", "nstore.daemon.cli", "serve", file_name, "--log-level", args.log_level,
               "--fsync", args.fsync, "--checkpoint-interval", str(args.checkpoint_interval),
               "--checkpoint-mb", str(args.checkpoint_mb), "--max-array-mb", str(args.max_array_mb),
               "--max-message-mb", str(args.max_message_mb), "--client-idle-s", str(args.client_idle_s)]
    if args.keys:
        command += ["--keys", args.keys]
    if args.insecure:
        command += ["--insecure"]
    if args.endpoint:
        command += ["--endpoint", args.endpoint]
    if not os.path.isdir(os.path.dirname(file_name)):
        print(f"nstored: cannot serve {file_name}: directory {os.path.dirname(file_name)} does not exist",
              file=sys.stderr)
        return 2
    from .safefiles import open_append

    try:
        log_file = open_append(log_path)  # never through a planted link
    except OSError as exc:
        print(f"nstored: cannot serve {file_name}: log {log_path}: {exc}", file=sys.stderr)
        return 2
    with log_file:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                 start_new_session=True, close_fds=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            print(f"nstored: daemon for {file_name} exited with code {code}; log {log_path}:", file=sys.stderr)
            print(_tail(log_path), file=sys.stderr)
            return code or 1
        info = read_lock(file_name)
        if info and info.get("pid") == child.pid and _answers(info["endpoint"], args.keys):
            print(info["endpoint"])
            return 0
        time.sleep(0.05)
    child.terminate()
    print(f"nstored: daemon for {file_name} did not accept connections within {START_TIMEOUT_S:.0f} s; log {log_path}",
          file=sys.stderr)
    return 1


def _answers(endpoint: str, keys: str | None = None) -> bool:
    from nstore.protocol.transport import call

    try:
        call(endpoint, "status", timeout=1.0, keys=keys)
        return True
    except (ConnectionError, TimeoutError):
        return False


def _ask(args: argparse.Namespace, op: str) -> dict | None:
    """Send ``op`` to the daemon FILE, ENDPOINT or --endpoint names; None (after saying why) if that fails."""
    from nstore.protocol.errors import ProtocolError
    from nstore.protocol.transport import endpoint_for

    target = args.endpoint or args.file
    serves = args.file if args.file and not is_endpoint(args.file) else None
    if not is_endpoint(target) and read_lock(target) is None:
        print(f"nstored: no daemon serves {real_path(target)} (no lock file {lock_path(target)})", file=sys.stderr)
        return None
    try:
        return _checked_call(target if is_endpoint(target) else endpoint_for(target), op, serves, args)
    except (ConnectionError, TimeoutError, ProtocolError) as exc:
        print(f"nstored: {exc}", file=sys.stderr)
        return None


def _checked_call(endpoint: str, op: str, serves: str | None, args: argparse.Namespace) -> dict:
    """The result of ``op``, from a daemon that serves the file ``serves`` (when given).

    A stale lock may name another file's daemon: ``op`` is sent only once its
    hello has been checked -- except ``status``, which travels in one request
    with the hello after it (so the status does not count this hello) and is
    used only once that hello has been checked.
    """
    from nstore.protocol.errors import error_from_wire
    from nstore.protocol.transport import HELLO, call, exchange, hello, verify_serves

    options = {"timeout": args.timeout, "keys": args.keys}
    if serves is None:
        return call(endpoint, op, **options)
    if op != "status":
        verify_serves(hello(endpoint, **options), serves, endpoint)
        return call(endpoint, op, **options)
    (ok, value), (hello_ok, reply) = exchange(endpoint, [(op, "", {}), HELLO], **options)
    if not hello_ok:
        raise error_from_wire(reply)
    verify_serves(reply, serves, endpoint)
    if not ok:
        raise error_from_wire(value)
    return value


def _stop(args: argparse.Namespace) -> int:
    reply = _ask(args, "shutdown")
    if reply is None:
        return 1
    pid = reply["pid"]
    deadline = time.monotonic() + args.timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        print(f"nstored: pid {pid} still running after {args.timeout:.0f} s", file=sys.stderr)
        return 1
    from .lock import unclean_exit

    reason = unclean_exit(reply["file"], pid) if isinstance(reply.get("file"), str) else None
    if reason:
        print(f"nstored: pid {pid} did not exit cleanly: {reason}", file=sys.stderr)
        return 1
    print(f"nstored: stopped pid {pid}")
    return 0


def _status(args: argparse.Namespace) -> int:
    if args.watch:
        from .watch import watch

        return watch(lambda: _ask(args, "status"))
    status = _ask(args, "status")
    if status is None:
        return 1
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        for key in ("pid", "file", "endpoint", "uptime_s", "clients_seen", "ops_per_s", "queue_depth", "bytes_written",
                    "pending_rows"):
            print(f"{key:>14}: {status[key]}")
        ops = ", ".join(f"{k}={v}" for k, v in sorted(status["ops_applied"].items())) or "none"
        print(f"{'ops_applied':>14}: {ops}")
        if status.get("write_error"):
            print(f"{'file writes':>14}: FAILING, retried (the journal keeps the rows): {status['write_error']}")
        if status.get("checkpoint_error"):
            print(f"{'checkpoint':>14}: FAILING, retried: {status['checkpoint_error']}")
    return 0


def _recover(args: argparse.Namespace) -> int:
    from .clients import ClientTable
    from .checkpoint import checkpoint
    from .journal import JournalVersionError, journal_path
    from .lock import AlreadyServedError, DaemonLock
    from .recovery import progress_bar, recover

    file_name = real_path(args.file)
    lock = DaemonLock(file_name)
    try:
        lock.acquire()
    except AlreadyServedError as exc:
        print(f"nstored: {exc}; a running daemon has already recovered it", file=sys.stderr)
        return 3
    try:
        try:
            clients = ClientTable()
            engine, seq, replayed = recover(file_name, journal_path(file_name), clients,
                                            progress=progress_bar() if sys.stderr.isatty() or args.progress else None)
        except OSError as exc:
            print(f"nstored: cannot open {file_name}: {exc}. The journal {journal_path(file_name)} "
                  f"is left untouched.", file=sys.stderr)
            return 2
        except JournalVersionError as exc:
            print(f"nstored: {exc}", file=sys.stderr)
            return 2
        checkpoint(engine, journal_path(file_name), seq, clients, fsync="batch").close()  # clients may still resend
        engine.close()
        print(f"nstored: replayed {replayed} ops into {file_name} (through batch {seq})")
        return 0
    finally:
        lock.release()


def _keygen(args: argparse.Namespace) -> int:
    from .security import keygen

    paths = keygen(args.directory)
    print(f"server keys: {paths['server_secret']} (keep on the daemon's host)")
    print(f"client keys: {paths['client_secret']} (copy to worker hosts; connect(..., keys=DIR))")
    print(f"authorized client keys: {paths['authorized']}/ (add more *.key files to admit more clients)")
    return 0


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""


def _positive(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nstored", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, needs_file in (("serve", _serve, True), ("start", _start, True),
                                   ("stop", _stop, False), ("status", _status, False), ("recover", _recover, True)):
        p = sub.add_parser(name)
        p.add_argument("file", nargs=None if needs_file else "?",
                       help="the NetCDF file" if needs_file else "the NetCDF file, or the daemon's endpoint")
        p.set_defaults(func=func)
        if name == "recover":
            p.add_argument("--progress", action="store_true", help="show a progress bar even when not on a terminal")
            continue
        if name in ("serve", "start"):
            p.add_argument("--keys", metavar="DIR", help="CurveZMQ keys from `nstored keygen DIR` (tcp)")
            p.add_argument("--insecure", action="store_true",
                           help="allow tcp without keys: any local user (and, beyond loopback, anyone on the "
                                "network) may then read, write and stop the daemon")
        p.add_argument("--endpoint", help="ZeroMQ endpoint (default: the file's ipc socket)" if name in ("serve", "start")
                       else "the daemon's endpoint (given with FILE: it must serve FILE)")
        if name in ("serve", "start"):
            p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
            p.add_argument("--fsync", default="never", choices=["never", "interval", "batch"],
                           help="journal durability: never (survives SIGKILL; default), interval (fsync "
                                "each second), batch (fsync before every acknowledgement: survives power loss)")
            p.add_argument("--checkpoint-interval", type=float, default=30.0, metavar="S",
                           help="seconds between checkpoints (default 30)")
            p.add_argument("--checkpoint-mb", type=float, default=256.0, metavar="MB",
                           help="journal size that triggers a checkpoint (default 256)")
            p.add_argument("--max-array-mb", type=_positive, default=256.0, metavar="MB",
                           help="data one write/append/metadata op may carry; bigger ones are refused "
                                "with a ValueError before anything is written (default 256)")
            p.add_argument("--max-message-mb", type=_positive, default=512.0, metavar="MB",
                           help="largest message accepted (ZeroMQ MAXMSGSIZE): a client sending more is "
                                "disconnected (default 512)")
            p.add_argument("--client-idle-s", type=_positive, default=3600.0, metavar="S",
                           help="forget the resend state of clients silent this long (default 3600)")
        if name == "start":
            p.add_argument("--log", help="log file (default: FILE.nstored.log)")
        if name in ("stop", "status"):
            p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait")
            p.add_argument("--keys", metavar="DIR", default=os.environ.get("NSTORE_KEYS"),
                           help="CurveZMQ keys for a daemon that requires them (default $NSTORE_KEYS)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="machine-readable output")
            p.add_argument("--watch", action="store_true", help="a line each second (ops/s, clients, queue depth, "
                                                                "journal bytes) until Ctrl-C or the daemon stops")
    keygen = sub.add_parser("keygen", help="create CurveZMQ server and client key pairs")
    keygen.add_argument("directory")
    keygen.set_defaults(func=_keygen)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("stop", "status") and not (args.file or args.endpoint):
        build_parser().error(f"{args.command} needs FILE or --endpoint")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
