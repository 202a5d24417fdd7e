"""The single store writer: group commit of everything that arrived in the same reactor turn.

One writer per process (several threads writing SQLite gave 80–107 ms p99 stalls,
DESIGN.md §6). Writes queue up as *ops*; a flush runs them in one transaction and
fires their callbacks only after COMMIT, which is what lets a listener ACK after
commit. *Lazy* ops (the "sent" updates) never start a transaction of their own: they
ride along with the next batch, or are flushed ``lazy_delay`` seconds later when idle
(DESIGN.md §6, "batching the sent updates"). A batch is flushed when the current reactor
round's I/O is done (``engine.reactor.callAfterIO``), so every frame that arrived in one
poll, from every connection, shares one COMMIT. ``inline`` runs the flush in the reactor
thread (fastest on SQLite); ``thread`` runs it on one dedicated thread (PostgreSQL,
where a commit is a network round trip).
If a batch fails, each op is retried alone so one bad row fails only its own message.

On a SQLite file, WAL checkpoints run on a background thread with its own connection
(PASSIVE, every ``CHECKPOINT_INTERVAL``): SQLite's automatic checkpoint would otherwise
copy ~1,000 pages inside a commit every ~100 messages, a 3–5 ms stall of the reactor
that set the p99 ACK latency. The writer keeps a high automatic threshold as a backstop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from engine.reactor import soon_caller
from engine.store.hot import HotStatements
from engine.store.schema import ERROR, QUEUED, SENT

log = logging.getLogger("radbridge.store")

Op = Callable[[Any, HotStatements], Any]

CHECKPOINT_INTERVAL = 0.2  # seconds between background PASSIVE checkpoints
BACKSTOP_PAGES = 10_000  # the writer checkpoints itself only if the WAL grows past this (~40 MB)


class Checkpointer:
    """A daemon thread running ``PRAGMA wal_checkpoint(PASSIVE)`` on its own SQLite connection."""

    def __init__(self, engine: Engine, interval: float = CHECKPOINT_INTERVAL) -> None:
        self.engine = engine
        self.interval = interval
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="radbridge-checkpoint", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (a checkpoint in progress finishes first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        conn = None
        try:
            conn = self.engine.raw_connection()
            while not self._stop.wait(self.interval):
                cur = conn.cursor()
                try:
                    cur.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    cur.fetchall()
                    self.runs += 1
                finally:
                    cur.close()
        except Exception as exc:  # noqa: BLE001 - the writer's backstop checkpoint still runs
            log.warning("background WAL checkpoint stopped: %s", exc)
        finally:
            if conn is not None:
                conn.close()


Done = Callable[[bool, Any], None]


def _to_deferred(d: defer.Deferred) -> Done:
    """A ``done(ok, value)`` callback firing *d*."""

    def done(ok: bool, value: Any) -> None:
        if ok:
            d.callback(value)
        else:
            d.errback(value)

    return done


class Writer:
    """Batches writes into transactions; results arrive after COMMIT.

    Each op's outcome goes to a ``done(ok, value)`` callback (``submit_cb``); the
    Deferred-returning methods wrap that. The hot path uses the callbacks: a Deferred
    per write was a measurable share of the per-message cost.
    """

    def __init__(
        self, engine: Engine, reactor: Any, *, mode: str = "auto", max_batch: int = 512, lazy_delay: float = 0.1
    ) -> None:
        if mode == "auto":
            mode = "inline" if engine.dialect.name == "sqlite" else "thread"
        self.engine = engine
        self.reactor = reactor
        self.mode = mode
        self.max_batch = max_batch
        self.lazy_delay = lazy_delay
        self.stmts = HotStatements(engine)
        self._pending: list[tuple[Op, Done]] = []
        self._scheduled = False
        self._busy = False
        self._lazy_call: Any = None
        self._soon = soon_caller(reactor)
        self._conn: Any = None
        self._dbapi: Any = None
        self._cursor: Any = None
        self._pool: ThreadPool | None = None
        self._checkpointer: Checkpointer | None = None
        self.batches = 0
        self.ops = 0

    # -- lifecycle -------------------------------------------------------
    def start(self) -> None:
        """Open the writer's connection (and thread)."""
        self._conn = self.engine.raw_connection()
        self._dbapi = self._conn.driver_connection  # the driver's own connection: no pool proxy per call
        if self.engine.dialect.name == "sqlite" and self.engine.url.database not in (None, "", ":memory:"):
            cur = self._dbapi.cursor()
            cur.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            cur.close()
            self._checkpointer = Checkpointer(self.engine)
            self._checkpointer.start()
        if self.mode == "thread":
            self._pool = ThreadPool(1, 1, name="radbridge-writer")
            self._pool.start()

    def stop(self) -> defer.Deferred:
        """Flush what is pending, then close."""
        d = self.drain()

        def _close(result: Any) -> Any:
            if self._lazy_call is not None and self._lazy_call.active():
                self._lazy_call.cancel()
            self._lazy_call = None
            if self._checkpointer is not None:
                self._checkpointer.stop()
                self._checkpointer = None
            if self._pool is not None:
                self._pool.stop()
                self._pool = None
            if self._cursor is not None:
                self._cursor.close()
                self._cursor = None
            if self._conn is not None:
                self._conn.close()
                self._conn = self._dbapi = None
            return result

        return d.addBoth(_close)

    def drain(self) -> defer.Deferred:
        """A Deferred that fires when every op submitted so far is committed."""
        if not self._pending and not self._busy:
            return defer.succeed(None)
        return self.submit(lambda cur, stmts: None)

    # -- submitting ------------------------------------------------------
    def submit(self, op: Op, *, lazy: bool = False) -> defer.Deferred:
        """Run ``op(cursor, stmts)`` in the next batch; fires with its result after COMMIT.

        A *lazy* op waits for the next batch (or ``lazy_delay``) instead of starting one.
        """
        d: defer.Deferred = defer.Deferred()
        self.submit_cb(op, _to_deferred(d), lazy=lazy)
        return d

    def submit_cb(self, op: Op, done: Done, *, lazy: bool = False) -> None:
        """Like :meth:`submit`, calling ``done(ok, result_or_exception)`` after COMMIT (or failure)."""
        self._pending.append((op, done))
        if self._scheduled or self._busy:
            return
        if not lazy:
            self._scheduled = True
            self._soon(self._flush)
        elif self._lazy_call is None:
            # Not cancelled when a batch takes the lazy ops along: it fires at most every lazy_delay.
            self._lazy_call = self.reactor.callLater(self.lazy_delay, self._flush_lazy)

    def store_message(self, values: dict[str, Any], outputs: list[tuple[str, str]]) -> defer.Deferred:
        """Insert a message and its queued deliveries; fires with ``(message_id, [delivery_ids])``."""
        d: defer.Deferred = defer.Deferred()
        self.store_message_cb(values, outputs, _to_deferred(d))
        return d

    def store_message_cb(self, values: dict[str, Any], outputs: list[tuple[str, str]], done: Done) -> None:
        """:meth:`store_message` with a ``done(ok, (message_id, [delivery_ids]) or exception)`` callback.

        A delivery whose content is the message's ``transformed`` text stores NULL content
        (the queue reads it from the message): one copy of the outbound text instead of two.
        """
        self.submit_cb(self.message_op(values, outputs), done)

    def message_op(self, values: dict[str, Any], outputs: list[tuple[str, str]]) -> Op:
        """The op inserting a message and its QUEUED deliveries (for callers adding to the same transaction)."""
        channel, now, transformed = values["channel"], values["received_at"], values.get("transformed")

        def op(cur: Any, stmts: HotStatements) -> tuple[int, list[int]]:
            mid = stmts.execute_insert(cur, stmts.insert_message, values)
            ids = []
            for dest, content in outputs:
                row = {
                    "message_id": mid,
                    "channel": channel,
                    "destination": dest,
                    "status": QUEUED,
                    "content": None if content == transformed else content,
                    "attempts": 0,
                    "created_at": now,
                }
                ids.append(stmts.execute_insert(cur, stmts.insert_delivery, row))
            return mid, ids

        return op

    def _outcome_values(
        self, delivery_id: int, ok: bool, response: str | None, attempts: int, error: str | None
    ) -> dict[str, Any]:
        now = time.time()
        return {
            "did": delivery_id,
            "status": SENT if ok else ERROR,
            "response": response,
            "attempts": attempts,
            "last_error": error,
            "now": now,
            "sent_at": now if ok else None,
        }

    def mark_done(
        self,
        delivery_id: int,
        *,
        ok: bool,
        response: str | None,
        attempts: int,
        error: str | None = None,
        lazy: bool = False,
    ) -> defer.Deferred:
        """Record a delivery's final outcome: SENT, or ERROR after its last attempt (*lazy*: see :meth:`submit`)."""
        d: defer.Deferred = defer.Deferred()
        self.mark_done_cb(
            delivery_id, _to_deferred(d), ok=ok, response=response, attempts=attempts, error=error, lazy=lazy
        )
        return d

    def mark_done_cb(
        self,
        delivery_id: int,
        done: Done,
        *,
        ok: bool,
        response: str | None,
        attempts: int,
        error: str | None = None,
        lazy: bool = False,
    ) -> None:
        """:meth:`mark_done` with a ``done(ok, result_or_exception)`` callback."""
        params = self.stmts.mark_done.params(self._outcome_values(delivery_id, ok, response, attempts, error))
        sql = self.stmts.mark_done.sql
        self.submit_cb(lambda cur, stmts: cur.execute(sql, params), done, lazy=lazy)

    def mark_attempt(self, delivery_id: int, attempts: int, error: str) -> defer.Deferred:
        """Record a failed attempt that will be retried."""
        values = {"did": delivery_id, "attempts": attempts, "last_error": error, "now": time.time()}
        return self.submit(lambda cur, stmts: cur.execute(stmts.mark_attempt.sql, stmts.mark_attempt.params(values)))

    # -- flushing --------------------------------------------------------
    def _flush_lazy(self) -> None:
        self._lazy_call = None
        if not self._scheduled:
            self._flush()

    def _flush(self) -> None:
        self._scheduled = False
        if self._busy or not self._pending:
            return
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        self._busy = True
        if self.mode == "inline":
            try:
                outcome = self._run_batch(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                outcome = [(False, exc)] * len(batch)
            self._finish(batch, outcome)
        else:
            d = threads.deferToThreadPool(self.reactor, self._pool, self._run_batch, batch)
            d.addCallbacks(
                lambda outcome: self._finish(batch, outcome),
                lambda f: self._finish(batch, [(False, f.value)] * len(batch)),
            )

    def _finish(self, batch: list[tuple[Op, Done]], outcome: list[tuple[bool, Any]]) -> None:
        self._busy = False
        self.batches += 1
        self.ops += len(batch)
        if self._pending and not self._scheduled:
            self._scheduled = True
            self._soon(self._flush)
        for (_, done), (ok, value) in zip(batch, outcome):
            try:
                done(ok, value)
            except Exception:  # noqa: BLE001 - one waiter's bug must not starve the others
                log.exception("store write callback failed")

    def _run_batch(self, batch: list[tuple[Op, Done]]) -> list[tuple[bool, Any]]:
        """Run *batch* in one transaction; on failure, each op alone."""
        conn = self._dbapi
        cur = self._cursor
        if cur is None:
            cur = self._cursor = conn.cursor()
        stmts = self.stmts
        try:
            results = [(True, op(cur, stmts)) for op, _ in batch]
            conn.commit()
            return results
        except Exception as exc:
            conn.rollback()
            if len(batch) == 1:
                log.error("store write failed: %s", type(exc).__name__)
                return [(False, exc)]
        return [self._run_batch([item])[0] for item in batch]
