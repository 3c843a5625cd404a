"""nstored's loop: a ZeroMQ ROUTER socket in front of one storage engine.

The shape of the ZeroMQ guide's ROUTER broker: wait for a message, drain what waits (up to
``max_batch`` messages or ``max_batch_bytes``), hand the batch over
(batch.py: apply in arrival order, journal, build replies), send the replies;
write the acknowledged appends to the file when idle or a bound is reached
(behind.py); checkpoint now and then (checkpoint.py). One thread, one writer: per-client
order and "a read sees every acknowledged op" follow from applying ops serially.
"""

from __future__ import annotations

import gc
import logging
import os
import time

from nstore.protocol.endpoints import default_endpoint, real_path

from .batch import Batch
from .checkpoint import check_writable, checkpoint
from .clients import IDLE_S, ClientTable
from .journal import journal_path
from .lock import DaemonLock
from .recovery import recover
from .security import check_endpoint, load_server_keys
from .status import Stats, status
from .router import Router

log = logging.getLogger("nstored")

DEFAULT_MAX_BATCH = 256  # messages taken per loop turn
DEFAULT_MAX_MESSAGE_BYTES = 512 * 1024 * 1024  # ZeroMQ drops the connection of a peer sending more
DEFAULT_MAX_ARRAY_BYTES = 256 * 1024 * 1024  # data one write/append/add_metadata may carry
DEFAULT_MAX_BATCH_BYTES = 16 * 1024 * 1024  # stop draining the socket past this much per turn
POLL_MS = 200  # how often the loop looks at its stop flag while idle
GC_THRESHOLD = 100_000  # allocations between young-generation collections (CPython's default: 700)
CHECKPOINT_INTERVAL_S = 30.0
CHECKPOINT_BYTES = 256 * 1024 * 1024
CHECKPOINT_RETRY_S = 5.0  # a failed checkpoint (full disk, read-only file) is tried again this much later
IDLE_WRITE_MS = 2  # with appends waiting for the file, this long without a message counts as idle
WRITE_RETRY_S = 1.0  # a failed write of waiting appends is tried again this much later


class Server:
    """Serve ``file_name`` on ``endpoint`` (default: the file's ipc socket)."""

    def __init__(self, file_name: str, endpoint: str | None = None, *,
                 max_batch: int = DEFAULT_MAX_BATCH, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 fsync: str = "never", checkpoint_interval_s: float = CHECKPOINT_INTERVAL_S,
                 checkpoint_bytes: int = CHECKPOINT_BYTES, keys: str | None = None, insecure: bool = False,
                 max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES, max_array_bytes: int = DEFAULT_MAX_ARRAY_BYTES,
                 client_idle_s: float = IDLE_S):
        """Limits: ``max_message_bytes`` (ZeroMQ MAXMSGSIZE: a bigger message drops its sender's
        connection), ``max_array_bytes`` (data per mutating op, refused with a ValueError before
        anything is written), ``client_idle_s`` (per-client resend state of clients silent that
        long is dropped at the next checkpoint)."""
        self.file_name = real_path(file_name)
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.max_array_bytes = max_array_bytes
        endpoint = endpoint or default_endpoint(self.file_name)
        check_endpoint(endpoint, keys, insecure)
        if keys:
            load_server_keys(keys)  # bad keys fail before the file is touched
        self.checkpoint_interval_s = checkpoint_interval_s
        self.checkpoint_bytes = checkpoint_bytes
        self.clients = ClientTable(idle_s=client_idle_s)
        self._lock = DaemonLock(self.file_name)
        self._lock.acquire()
        self._router = None
        try:
            # Bind first: a busy port or a bad endpoint fails before the file is touched.
            # Clients that connect meanwhile simply wait until recovery is done.
            self._router = Router(endpoint, keys, max_message_bytes)
            self.endpoint = self._router.endpoint
            # If the file cannot be opened, or the journal has an unknown format, the journal is left untouched.
            self.engine, self.seq, replayed = recover(self.file_name, journal_path(self.file_name), self.clients)
            if replayed:
                log.info("recovered %d journaled ops (through batch %d)", replayed, self.seq)
            self.journal = None
            self.checkpoint_error: str | None = None  # why the last checkpoint failed, until one succeeds
            self.last_checkpoint_ok = 0.0
            self.exit_error: str | None = None  # why closing failed (the daemon then exits non-zero)
            self._checkpoint(fsync)
            self._lock.record(self.endpoint, self.file_name)
        except BaseException:
            if self._router is not None:
                self._router.close()
            self._lock.release()
            raise
        self._stopping = False
        self._next_write = 0.0  # no file write before this (set after a failed one)
        self._logged_write_error: str | None = None
        self.stats = Stats()
        log.info("serving %s on %s (pid %d)", self.file_name, self.endpoint, os.getpid())

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler)."""
        self._stopping = True

    def serve_forever(self) -> None:
        """Poll, drain, apply, reply; until stop(), then acknowledge what arrived and close."""
        # Every op leaves a few small containers behind (results, the client
        # table); with CPython's default thresholds the cyclic collector then
        # took about half the daemon's CPU. Collect rarely, and never rescan
        # what exists at start-up.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 50, 100)
        try:
            while not self._stopping:
                behind = self.engine.behind.rows and time.monotonic() >= self._next_write
                raw = self._router.drain(IDLE_WRITE_MS if behind else POLL_MS, self.max_batch, self.max_batch_bytes)
                if raw:
                    self._turn(raw)
                elif behind:
                    self.write_behind()  # idle: the file catches up
                if time.monotonic() >= self._next_checkpoint:
                    self.checkpoint()
            raw = self._router.drain(0, self.max_batch, self.max_batch_bytes)
            if raw:
                self._turn(raw)  # acknowledge what already arrived before closing
        except Exception as exc:
            self.exit_error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.close()

    def _turn(self, raw: list) -> None:
        """Apply what was drained, reply; write behind and checkpoint past their bounds."""
        self.stats.last_batch = len(raw)
        self._router.send(self.process(raw))
        if self.engine.behind.due() and time.monotonic() >= self._next_write:
            self.write_behind()
        if self.journal.size >= self.checkpoint_bytes and (self.checkpoint_error is None
                                                           or time.monotonic() >= self._next_checkpoint):
            self.checkpoint()

    def process(self, raw: list) -> list:
        """Apply a batch of raw messages (see batch.py); the reply frames for each sender, in order."""
        return Batch(self, raw).run()

    def write_behind(self) -> bool:
        """Write the acknowledged appends that wait for the file (behind.py). A failure (full disk,
        read-only file) is logged once and shown by ``status``; the rows stay queued, safe in the
        journal, and are tried again later. True if the file now holds them."""
        try:
            self.engine.flush()
        except Exception as exc:  # noqa: BLE001 - the journal holds every queued row
            self._next_write = time.monotonic() + WRITE_RETRY_S
            if str(exc) != self._logged_write_error:
                log.error("%s; retrying every %.1f s", exc, WRITE_RETRY_S)
                self._logged_write_error = str(exc)
            return False
        if self._logged_write_error is not None:
            log.info("writing acknowledged appends to the file succeeded again")
            self._logged_write_error = None
        return True

    def checkpoint(self) -> bool:
        """Checkpoint while serving; a failure (full disk, read-only or immutable file, a planted
        link) is logged, shown by ``status`` and retried later, never fatal. True if it succeeded."""
        try:
            check_writable(self.file_name, self.journal.size)
            self._checkpoint()
        except Exception as exc:  # noqa: BLE001 - the journal still holds every acknowledged op
            error, retry_s = f"{type(exc).__name__}: {exc}", min(CHECKPOINT_RETRY_S, self.checkpoint_interval_s)
            self._next_checkpoint = time.monotonic() + retry_s
            if error != self.checkpoint_error:  # (not once per retry)
                log.error("checkpoint failed (the journal keeps every op; retrying every %.1f s): %s", retry_s, error)
            self.checkpoint_error = error
            return False
        if self.checkpoint_error is not None:
            log.info("checkpoint succeeded again")
        self.checkpoint_error = None
        return True

    def _checkpoint(self, fsync: str | None = None) -> None:
        """Sync the file with the batch number it now holds, then start a fresh journal (checkpoint.py).

        If either step fails the old journal stays in place and in use: it still
        holds every op the file may lack."""
        old = self.journal
        if self.engine.unsynced:
            self._reopen()
        self.journal = checkpoint(self.engine, journal_path(self.file_name), self.seq, self.clients,
                                  fsync or old.fsync)
        if old is not None:
            old.close()
        self.last_checkpoint_ok = time.time()
        self._next_checkpoint = time.monotonic() + self.checkpoint_interval_s

    def _reopen(self) -> None:
        """Close the file whose sync failed and open it again, replaying the journal (which still
        holds every op since the last checkpoint) over whatever that sync left in it."""
        log.warning("reopening %s and replaying the journal after a failed sync", self.file_name)
        try:
            self.engine.close()
        except Exception as exc:  # noqa: BLE001 - replay repairs what this close left
            log.warning("closing %s after a failed sync: %s: %s", self.file_name, type(exc).__name__, exc)
        self.engine, seq, _ = recover(self.file_name, journal_path(self.file_name), self.clients)
        self.seq = max(self.seq, seq)

    def status(self) -> dict:
        return status(self)

    def close(self) -> None:
        """Checkpoint and close the file, unbind, remove socket and lock.

        If the last checkpoint or closing the file fails, the journal (left in
        place) still holds every acknowledged op for the next start to replay;
        :attr:`exit_error` says why, and the daemon exits non-zero."""
        try:
            if not self.checkpoint():
                self.exit_error = f"last checkpoint failed: {self.checkpoint_error}"
            self.journal.close()
            try:
                self.engine.close()
            except Exception as exc:  # noqa: BLE001 - still unbind and unlock below
                reason = f"closing {self.file_name} failed: {type(exc).__name__}: {exc}"
                self.exit_error = f"{self.exit_error}; {reason}" if self.exit_error else reason
        finally:
            self._router.close()
            self._lock.release(self.exit_error)
            if self.exit_error:
                log.error("stopped uncleanly: %s; the journal %s keeps every acknowledged op",
                          self.exit_error, journal_path(self.file_name))
            else:
                log.info("stopped; %s closed", self.file_name)
