"""Group commit: one INSERT and one commit for every row this process's requests are waiting to write.

A hit may be answered 202 only once it is committed (accepted data is never lost), and on a
busy endpoint that commit (a database round trip and a WAL flush) costs more than the rest of
the request. Under gunicorn's gevent workers (gunicorn.conf.py) many requests of one process
wait for their commit at the same moment. Each hands its row to the process's writer (a thread,
which gevent makes a greenlet) and waits; the writer writes every row waiting in one statement,
commits once, and wakes them all. While it writes, the next rows gather: batches grow with the
load (about 9 hits per commit at saturation in docs/performance.md), and a lone request waits for
no one (there is no timer). Threaded workers work the same way, with smaller batches.

Nothing is answered before its commit: a crash loses only requests that were never answered
(the browser's call failed), and a failed batch fails every request in it with the same error.
If one row breaks a constraint (its site was deleted meanwhile), the batch is written again row
by row, so only that row fails.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable

from django.db import DEFAULT_DB_ALIAS, IntegrityError, OperationalError, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import load_backend

MAX_BATCH = 500  # rows per statement
WAIT_SECONDS = 30.0  # a request stops waiting for its commit after this long (a stuck database)
IDLE_SECONDS = 60.0  # an idle writer closes its database connection after this long
_CLOSE = ("close the connection",)  # not a row: asks the writer to close its connection


class CommitTimeout(Exception):
    """The writer did not confirm the commit in time; the row may or may not be stored."""


class _Waiting:
    """One request's row; `done` is held until the writer has an outcome (a C-level lock: cheap to wait on)."""

    __slots__ = ("done", "error", "row")

    def __init__(self, row: tuple) -> None:
        self.row = row
        self.done = threading.Lock()
        self.done.acquire()
        self.error: BaseException | None = None


def own_connection() -> BaseDatabaseWrapper:
    """The writer's own connection to the default database, persistent and outside any pool
    (DATABASE_POOL_SIZE): the requests waiting for the writer may hold every pooled connection."""
    settings_dict = {**connections.settings[DEFAULT_DB_ALIAS], "CONN_MAX_AGE": None}
    settings_dict["OPTIONS"] = {k: v for k, v in settings_dict.get("OPTIONS", {}).items() if k != "pool"}
    return load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, DEFAULT_DB_ALIAS)


class GroupWriter:
    """Hands rows to one writer thread per process, which passes them to `write_rows` in batches."""

    def __init__(self, write_rows: Callable[[list[tuple], BaseDatabaseWrapper], None]) -> None:
        self.write_rows = write_rows  # writes a list of rows in one statement on a connection in autocommit
        self._starting = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._queue: queue.SimpleQueue[_Waiting] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.batches = self.rows = 0  # what the writer did: rows / batches is the mean batch size

    def write(self, row: tuple) -> None:
        """Return once `row` is committed; raise what writing it raised, or CommitTimeout."""
        if self._pid != os.getpid():  # a forked child: the parent's thread and queue are not ours
            self._reset()
        waiting = _Waiting(row)
        self._queue.put(waiting)
        # Checked after the put: a writer that stops clears _thread, then starts a new one if rows
        # wait, so either it sees this row or this sees it gone. (Cheaper than is_alive().)
        if self._thread is None:
            self._start()
        if not waiting.done.acquire(timeout=WAIT_SECONDS):
            raise CommitTimeout(f"no commit within {WAIT_SECONDS:g} s")
        if waiting.error is not None:
            raise waiting.error

    def _start(self) -> None:
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
                self._thread.start()

    def queued(self) -> int | None:
        """Rows handed over but not yet taken by the writer; None before its first row."""
        return None if self._thread is None else self._queue.qsize()

    def close_connection(self) -> None:
        """Have the writer close its database connection (it reopens on the next row); tests call
        this before their database is dropped."""
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            waiting = _Waiting(_CLOSE)
            self._queue.put(waiting)
            waiting.done.acquire(timeout=WAIT_SECONDS)

    def _run(self) -> None:
        try:
            self._serve()
        finally:  # stopped by an error outside a batch's outcome, or from outside (GreenletExit)
            with self._starting:
                self._thread = None
            if not self._queue.empty():  # rows handed over meanwhile get a new writer
                self._start()

    def _serve(self) -> None:
        self._db = own_connection()  # made in this thread, which alone uses it
        while True:
            try:
                batch = [self._queue.get(timeout=IDLE_SECONDS)]
            except queue.Empty:
                self._db.close()  # an idle process holds no connection for the writer
                continue
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [waiting for waiting in batch if waiting.row is not _CLOSE]
            if rows:
                self._write(rows)
            if len(rows) < len(batch):
                self._db.close()
                for waiting in batch:
                    if waiting.row is _CLOSE:
                        waiting.done.release()

    def _write(self, batch: list[_Waiting]) -> None:
        try:
            # This thread never sees a request's end, where Django drops broken connections.
            self._db.close_if_unusable_or_obsolete()
            try:
                self._write_rows_on_a_live_connection([waiting.row for waiting in batch])
            except IntegrityError:
                if len(batch) == 1:
                    raise
                for waiting in batch:  # find the row at fault; the others are stored
                    try:
                        self.write_rows([waiting.row], self._db)
                    except Exception as exc:  # noqa: BLE001 - handed to the request that sent the row
                        waiting.error = exc
        except BaseException as exc:  # every request of the batch answers with it
            for waiting in batch:
                waiting.error = waiting.error or exc
            if not isinstance(exc, Exception):  # the writer is being stopped (GreenletExit, SystemExit...)
                raise
        finally:
            self.batches += 1
            self.rows += len(batch)
            for waiting in batch:
                waiting.done.release()

    def _write_rows_on_a_live_connection(self, rows: list[tuple]) -> None:
        """Write; if the database dropped the writer's connection (a restart, a failover, an administrator
        ending it), write once more on a new one instead of failing every request of the batch.

        Should the dropped connection have committed the rows just before it went (the answer lost on
        the way), they are in the inbox twice: the snippet's idempotency key stores them once."""
        try:
            self.write_rows(rows, self._db)
        except OperationalError:
            if self._db.connection is None or self._db.is_usable():
                raise
            self._db.close()
            self.write_rows(rows, self._db)
