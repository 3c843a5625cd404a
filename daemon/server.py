"""nstored's loop: a ZeroMQ ROUTER socket in front of one storage engine.

The shape of the ZeroMQ guide's ROUTER broker: poll, drain what waits (up to
``max_batch`` messages or ``max_batch_bytes``), hand the batch over
(batch.py: apply in arrival order, journal, build replies), send the replies;
checkpoint now and then (checkpoint.py). One thread, one writer: per-client
order and "a read sees every acknowledged op" follow from applying ops serially.
"""

from __future__ import annotations

import gc
import logging
import os
import time

import zmq

from nstore.protocol.endpoints import default_endpoint, real_path

from .batch import Batch
from .checkpoint import checkpoint
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
            self.checkpoint(fsync)
            self._lock.record(self.endpoint, self.file_name)
        except BaseException:
            if self._router is not None:
                self._router.close()
            self._lock.release()
            raise
        self._stopping = False
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
        poller = zmq.Poller()
        poller.register(self._router.socket, zmq.POLLIN)
        try:
            while not self._stopping:
                if poller.poll(POLL_MS):
                    self._turn()
                if time.monotonic() - self._last_checkpoint >= self.checkpoint_interval_s:
                    self.checkpoint()
            if poller.poll(0):
                self._turn()  # acknowledge what already arrived before closing
        finally:
            self.close()

    def _turn(self) -> None:
        """Drain what waits (the socket polled readable), apply it, reply; checkpoint past the byte limit."""
        raw = self._router.drain(self.max_batch, self.max_batch_bytes)
        self.stats.last_batch = len(raw)
        if not raw:
            return
        self._router.send(self.process(raw))
        if self.journal.size >= self.checkpoint_bytes:
            self.checkpoint()

    def process(self, raw: list) -> list:
        """Apply a batch of raw messages (see batch.py); the reply frames for each sender, in order."""
        return Batch(self, raw).run()

    def checkpoint(self, fsync: str | None = None) -> None:
        """Sync the file with the batch number it now holds, then start a fresh journal (checkpoint.py)."""
        old = self.journal
        self.journal = checkpoint(self.engine, journal_path(self.file_name), self.seq, self.clients,
                                  fsync or old.fsync)
        if old is not None:
            old.close()
        self._last_checkpoint = time.monotonic()

    def status(self) -> dict:
        return status(self)

    def close(self) -> None:
        """Checkpoint and close the file, unbind, remove socket and lock."""
        try:
            self.checkpoint()
            self.journal.close()
            self.engine.close()
        finally:
            self._router.close()
            self._lock.release()
            log.info("stopped; %s closed", self.file_name)
