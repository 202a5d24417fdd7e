"""A durable per-destination FIFO queue: rows in the store, a bounded window in memory.

Committed deliveries are handed over in memory (no re-read on the hot path); at
start, after an overflow, and when idle (rows written by the CLI or another node)
the queue reads QUEUED rows from the store. One delivery is in flight at a time, so
order is kept: a failing head is retried with exponential backoff until its last
attempt, then set to ERROR and the queue moves on. Delivery is at-least-once.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from engine.components import DeliveryError, DeliveryInfo, Destination, Done
from engine.config.models import RetryConfig
from engine.store.queries import QueuedItem, thd_load_queue, thd_queue_stats

log = logging.getLogger("radbridge.queue")

Listener = Callable[[int, bool, str], None]


class SkipRefused(ValueError):
    """The head delivery cannot be skipped now (see :meth:`DestinationQueue.skip_head`)."""


class DestinationQueue:
    """Feeds one destination connector from its durable queue."""

    def __init__(
        self,
        channel: str,
        name: str,
        connector: Destination,
        store: Any,
        reactor: Any,
        retry: RetryConfig,
        *,
        metrics: Any = None,
        window: int = 10_000,
        poll_interval: float = 2.0,
        send_timeout: float = 0.0,
    ) -> None:
        self.channel, self.name = channel, name
        self.connector = connector
        self._send_cb = getattr(connector, "send_cb", None)  # the connector's Deferred-free send, if any
        self.store, self.reactor, self.retry = store, reactor, retry
        self.metrics = metrics
        self.window = window
        self.poll_interval = poll_interval
        self.items: deque[QueuedItem] = deque()
        self.depth = 0
        self.overflow = False
        self.last_id = 0
        self.busy = False
        self.running = False
        self.retry_call: Any = None
        self.poll_call: Any = None
        self.listeners: list[Listener] = []
        self.paused = False
        self.finished: set[int] = set()

    # -- lifecycle -------------------------------------------------------
    def start(self) -> defer.Deferred:
        """Load what is queued in the store, then start sending."""
        self.running = True
        if self.metrics:
            self.metrics.watch_queue(self.channel, self.name, self.stats)
        d = self.store.read(thd_queue_stats, self.channel, self.name)

        def loaded(stats: tuple[int, float | None]) -> defer.Deferred:
            self.depth = stats[0]
            return self._reload()

        return d.addCallback(loaded).addCallback(lambda _: self._schedule_poll())

    def stop(self) -> None:
        """Stop sending (what is in flight finishes or is retried after restart)."""
        self.running = False
        for call in (self.retry_call, self.poll_call):
            if call is not None and call.active():
                call.cancel()
        self.retry_call = self.poll_call = None  # a stale retry_call would block _pump after a restart

    def stats(self) -> tuple[int, float | None]:
        """(depth, created_at of the oldest queued item)."""
        return self.depth, self.items[0].created_at if self.items else None

    # -- feeding ---------------------------------------------------------
    def handoff(self, item: QueuedItem) -> None:
        """A delivery was committed by this process: queue it without reading it back."""
        if item.id <= self.last_id:
            return  # already read from the store by a poll
        self.depth += 1
        if self.overflow or len(self.items) >= self.window:
            self.overflow = True
            return
        self.items.append(item)
        self.last_id = item.id
        self._pump()

    def _recording(self, delivery_id: int) -> Done:
        """Until its outcome is committed, a finished delivery still reads QUEUED: never reload it."""
        self.finished.add(delivery_id)

        def committed(ok: bool, value: Any) -> None:
            self.finished.discard(delivery_id)
            if not ok:
                log.error("delivery %s outcome not recorded: %s", delivery_id, type(value).__name__)

        return committed

    def _reload(self) -> defer.Deferred:
        d = self.store.read(thd_load_queue, self.channel, self.name, self.last_id, min(self.window, 1000))

        def got(rows: list[QueuedItem]) -> None:
            for row in rows:
                if row.id > self.last_id and row.id not in self.finished:
                    self.items.append(row)
                    self.last_id = row.id
            if len(rows) < min(self.window, 1000):
                self.overflow = False
            self.depth = max(self.depth, len(self.items))
            self._pump()

        return d.addCallback(got)

    def _schedule_poll(self) -> None:
        if self.running and self.poll_interval > 0:
            self.poll_call = self.reactor.callLater(self.poll_interval, self._poll)

    def _poll(self) -> None:
        if not self.running:
            return
        if not self.items and not self.busy:
            d = self.store.read(thd_queue_stats, self.channel, self.name)

            def stats(st: tuple[int, float | None]) -> Any:
                self.depth = st[0]
                if not st[0] or self.items or self.busy:
                    return None
                # Idle with rows QUEUED in the store: rows another process wrote or put back
                # (``messages resend``), possibly older than what we have seen. Read from the start.
                self.last_id = 0
                return self._reload()

            d.addCallback(stats).addErrback(lambda f: log.warning("queue poll failed: %s", f.getErrorMessage()))
        self._schedule_poll()

    # -- sending ----------------------------------------------------------
    def _pump(self) -> None:
        if self.busy or not self.running or self.paused or self.retry_call is not None:
            return
        if not self.items:
            if self.overflow:
                self._reload()
            return
        item = self.items[0]
        self.busy = True
        attempt = item.attempts + 1
        started = time.perf_counter()
        info = DeliveryInfo(item.id, item.message_id, attempt)

        def done(ok: bool, value: Any) -> None:
            try:
                if ok:
                    self._sent(item, attempt, value, started)
                else:
                    self._failed(item, attempt, value, started)
            except Exception:  # noqa: BLE001 - keep the queue's own bugs visible, not silent
                log.exception("queue %s/%s internal error", self.channel, self.name)

        send_cb = self._send_cb
        if send_cb is not None:
            try:
                send_cb(item.content, info, done)
            except Exception as exc:  # noqa: BLE001 - a connector bug counts as a failed attempt
                done(False, exc)
            return
        d = defer.maybeDeferred(self.connector.send, item.content, info)
        d.addCallbacks(lambda resp: done(True, resp), lambda f: done(False, f.value))

    def _sent(self, item: QueuedItem, attempt: int, response: str | None, started: float) -> None:
        self.busy = False
        if self.metrics:
            self.metrics.delivery_time(self.channel, self.name, time.perf_counter() - started)
            self.metrics.sent(self.channel, self.name)
        self.store.writer.mark_done_cb(
            item.id, self._recording(item.id), ok=True, response=response, attempts=attempt, lazy=True
        )
        self._complete(item, True, "")

    def _failed(self, item: QueuedItem, attempt: int, exc: BaseException, started: float) -> None:
        self.busy = False
        reason = exc.reason if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
        response = exc.response if isinstance(exc, DeliveryError) else None
        final = attempt >= self.retry.max_attempts or bool(getattr(exc, "final", False))
        # A peer's own reason text may quote PHI: logs get the code, the store gets the reason.
        if isinstance(exc, DeliveryError):
            summary = f"peer answered {exc.code}" if exc.code else reason
        else:
            summary = type(exc).__name__
        if self.metrics:
            self.metrics.delivery_failed(self.channel, self.name, final)
        if final:
            log.warning(
                "delivery %s (message %s) to %s/%s failed for good after %d attempts: %s",
                item.id, item.message_id, self.channel, self.name, attempt, summary,
            )  # fmt: skip
            if self.metrics:
                self.metrics.errored(self.channel, "delivery")
            self.store.writer.mark_done_cb(
                item.id, self._recording(item.id), ok=False, response=response, attempts=attempt, error=reason
            )
            self._complete(item, False, reason)
            return
        delay = self.retry.delay(attempt)
        log.info(
            "delivery %s to %s/%s failed (attempt %d), retry in %.1fs: %s",
            item.id, self.channel, self.name, attempt, delay, summary,
        )  # fmt: skip
        self.items[0] = QueuedItem(item.id, item.message_id, item.content, attempt, item.created_at)
        self.store.writer.mark_attempt(item.id, attempt, reason)
        self.retry_call = self.reactor.callLater(delay, self._retry_now)

    def retry_now(self) -> bool:
        """Send the head delivery now if it waits for its backoff; True when it was waiting."""
        if self.retry_call is None or not self.retry_call.active():
            return False
        self.retry_call.cancel()
        self._retry_now()
        return True

    def skip_head(self, reason: str, delivery_id: int | None = None) -> defer.Deferred:
        """Set the waiting head delivery to ERROR with *reason* and go on with the next; fires with its id.

        Raises ``SkipRefused`` when nothing waits in memory, the head is being sent, or it is not *delivery_id*.
        """
        if not self.items:
            raise SkipRefused("the queue has no delivery waiting in memory")
        if self.busy:
            raise SkipRefused("the head delivery is being sent; try again when it waits for a retry")
        item = self.items[0]
        if delivery_id is not None and delivery_id != item.id:
            raise SkipRefused(f"the head delivery is {item.id}, not {delivery_id}")
        if self.retry_call is not None and self.retry_call.active():
            self.retry_call.cancel()
        self.retry_call = None
        self.busy = True  # nothing may send the head while its ERROR is being committed
        done: defer.Deferred = defer.Deferred()

        def committed(ok: bool, value: Any) -> None:
            self.busy = False
            if not ok:
                self._pump()  # the head stays; carry on as before
                done.errback(value)
                return
            self._complete(item, False, reason)
            done.callback(item.id)

        self.store.writer.mark_done_cb(
            item.id, committed, ok=False, response=None, attempts=item.attempts, error=reason
        )
        return done

    def _retry_now(self) -> None:
        self.retry_call = None
        self._pump()

    def _complete(self, item: QueuedItem, ok: bool, reason: str) -> None:
        self.items.popleft()
        self.depth = max(0, self.depth - 1)
        for listener in self.listeners:
            listener(item.id, ok, reason)
        self._pump()
