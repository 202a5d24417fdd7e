"""Tests for the durable per-destination queue (engine/queue.py) on a temp SQLite store and a Clock."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from twisted.internet import defer
from twisted.internet.task import Clock

from engine.components import DeliveryError, DeliveryInfo
from engine.config.models import RetryConfig
from engine.metrics import Metrics
from engine.queue import DestinationQueue
from engine.store.queries import QueuedItem
from engine.store.schema import ERROR, QUEUED, SENT, deliveries
from engine.store.store import Store
from tests.engine.conftest import flush, message_values, result_of

T0 = 1_700_000_000.0


class FakeDestination:
    """A destination whose sends return Deferreds the test fires."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, DeliveryInfo, defer.Deferred]] = []

    def start(self) -> None:
        """Nothing to open."""

    def stop(self) -> None:
        """Nothing to close."""

    def send(self, content: str, info: DeliveryInfo) -> defer.Deferred:
        """Record the send and return a Deferred the test controls."""
        d: defer.Deferred = defer.Deferred()
        self.calls.append((content, info, d))
        return d

    @property
    def sent(self) -> list[str]:
        """Contents sent so far, in order."""
        return [c for c, _, _ in self.calls]

    def succeed(self, index: int = -1, response: str | None = "ACK") -> None:
        """Fire send number *index* with *response*."""
        self.calls[index][2].callback(response)

    def fail(self, index: int = -1, reason: str = "refused") -> None:
        """Fail send number *index* with a DeliveryError."""
        self.calls[index][2].errback(DeliveryError(reason, "MSA|AE", "AE"))


def put(store: Store, clock: Clock, content: str, dest: str = "d", created: float = T0) -> QueuedItem:
    """Commit one message with one delivery to *dest* and return it as a QueuedItem."""
    d = store.writer.store_message(message_values(received_at=created), [(dest, content)])
    flush(store, clock)
    mid, (did,) = result_of(d)
    return QueuedItem(did, mid, content, 0, created)


def row(store: Store, did: int) -> dict[str, Any]:
    """One deliveries row as a dict."""
    with store.engine.connect() as conn:
        return dict(conn.execute(select(deliveries).where(deliveries.c.id == did)).one()._mapping)


RETRY = RetryConfig(max_attempts=3, initial_delay=5, multiplier=2, max_delay=60)


@pytest.fixture
def dest() -> FakeDestination:
    """A fake destination."""
    return FakeDestination()


@pytest.fixture
def queue(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> DestinationQueue:
    """A started queue 'ch/d' without polling."""
    q = DestinationQueue("ch", "d", dest, sqlite_store, clock, RETRY, poll_interval=0)
    assert result_of(q.start()) is None
    return q


def test_fifo_one_in_flight(queue: DestinationQueue, dest: FakeDestination, sqlite_store: Store, clock: Clock) -> None:
    """Handed-over items are sent in order, one at a time, each after the previous one succeeded."""
    items = [put(sqlite_store, clock, f"m{i}") for i in range(3)]
    for item in items:
        queue.handoff(item)
    assert dest.sent == ["m0"]
    assert queue.busy
    assert dest.calls[0][1] == DeliveryInfo(items[0].id, items[0].message_id, 1)
    dest.succeed()
    assert dest.sent == ["m0", "m1"]
    dest.succeed()
    dest.succeed()
    assert dest.sent == ["m0", "m1", "m2"]
    assert not queue.busy and queue.depth == 0 and not queue.items
    flush(sqlite_store, clock)
    assert [row(sqlite_store, i.id)["status"] for i in items] == [SENT] * 3
    assert row(sqlite_store, items[0].id)["response"] == "ACK"


def test_handoff_ignores_items_already_loaded(queue: DestinationQueue, dest: FakeDestination, sqlite_store: Store, clock: Clock) -> None:  # fmt: skip
    """An item handed over twice (or already read from the store) is queued once."""
    item = put(sqlite_store, clock, "once")
    queue.handoff(item)
    queue.handoff(item)
    assert queue.depth == 1 and len(queue.items) == 1


def test_failure_retries_after_backoff_keeping_order(queue: DestinationQueue, dest: FakeDestination, sqlite_store: Store, clock: Clock) -> None:  # fmt: skip
    """A failed head is retried after RetryConfig.delay(attempt); later items wait until it succeeds."""
    first, second = put(sqlite_store, clock, "first"), put(sqlite_store, clock, "second")
    queue.handoff(first)
    queue.handoff(second)
    dest.fail(reason="down")
    flush(sqlite_store, clock)
    r = row(sqlite_store, first.id)
    assert (r["status"], r["attempts"], r["last_error"]) == (QUEUED, 1, "down")
    assert dest.sent == ["first"]
    clock.advance(RETRY.delay(1) - 0.1)
    assert dest.sent == ["first"]
    clock.advance(0.1)
    assert dest.sent == ["first", "first"]
    assert dest.calls[1][1].attempt == 2
    dest.fail()
    clock.advance(RETRY.delay(2) - 0.1)
    assert dest.sent == ["first", "first"]
    clock.advance(0.1)
    assert dest.sent == ["first"] * 3
    dest.succeed()
    assert dest.sent == ["first"] * 3 + ["second"]
    flush(sqlite_store, clock)
    assert (row(sqlite_store, first.id)["status"], row(sqlite_store, first.id)["attempts"]) == (SENT, 3)


def test_new_items_wait_during_backoff(queue: DestinationQueue, dest: FakeDestination, sqlite_store: Store, clock: Clock) -> None:  # fmt: skip
    """An item handed over while the head waits for its retry is not sent before the head."""
    first = put(sqlite_store, clock, "first")
    queue.handoff(first)
    dest.fail()
    queue.handoff(put(sqlite_store, clock, "late"))
    assert dest.sent == ["first"]
    clock.advance(RETRY.delay(1))
    assert dest.sent == ["first", "first"]


def test_max_attempts_sets_error_and_moves_on(queue: DestinationQueue, dest: FakeDestination, sqlite_store: Store, clock: Clock) -> None:  # fmt: skip
    """After max_attempts the delivery is ERROR (with response and reason) and the next item is sent."""
    done: list[tuple[int, bool, str]] = []
    queue.listeners.append(lambda did, ok, reason: done.append((did, ok, reason)))
    bad, good = put(sqlite_store, clock, "bad"), put(sqlite_store, clock, "good")
    queue.handoff(bad)
    queue.handoff(good)
    for attempt in range(1, RETRY.max_attempts):
        dest.fail(reason=f"nope {attempt}")
        clock.advance(RETRY.delay(attempt))
    assert done == []
    dest.fail(reason="final")
    assert done == [(bad.id, False, "final")]
    assert dest.sent == ["bad"] * 3 + ["good"]
    dest.succeed()
    assert done[-1] == (good.id, True, "")
    flush(sqlite_store, clock)
    r = row(sqlite_store, bad.id)
    assert (r["status"], r["attempts"], r["last_error"], r["response"]) == (ERROR, 3, "final", "MSA|AE")
    assert row(sqlite_store, good.id)["status"] == SENT


def test_final_delivery_error_is_not_retried(queue: DestinationQueue, dest: FakeDestination, sqlite_store: Store, clock: Clock) -> None:  # fmt: skip
    """A DeliveryError marked final (the content itself was refused) sets ERROR at the first attempt."""
    done: list[tuple[int, bool, str]] = []
    queue.listeners.append(lambda did, ok, reason: done.append((did, ok, reason)))
    bad, good = put(sqlite_store, clock, "bad"), put(sqlite_store, clock, "good")
    queue.handoff(bad)
    queue.handoff(good)
    dest.calls[-1][2].errback(DeliveryError("order ACC1 is COMPLETED: unable to cancel", code="AE", final=True))
    assert done == [(bad.id, False, "order ACC1 is COMPLETED: unable to cancel")]
    assert dest.sent == ["bad", "good"]
    flush(sqlite_store, clock)
    assert (row(sqlite_store, bad.id)["status"], row(sqlite_store, bad.id)["attempts"]) == (ERROR, 1)


def test_non_delivery_error_counts_as_failure(queue: DestinationQueue, dest: FakeDestination, sqlite_store: Store, clock: Clock) -> None:  # fmt: skip
    """Any exception from send is a failed attempt, recorded with its type name."""
    item = put(sqlite_store, clock, "x")
    queue.handoff(item)
    dest.calls[0][2].errback(ConnectionResetError("reset"))
    flush(sqlite_store, clock)
    assert row(sqlite_store, item.id)["last_error"] == "ConnectionResetError: reset"


def test_start_loads_queued_rows(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """On start a queue reads its QUEUED rows from the store (a restart) and sends them in order."""
    items = [put(sqlite_store, clock, f"m{i}", created=T0 + i) for i in range(3)]
    put(sqlite_store, clock, "other destination", dest="e")
    sqlite_store.writer.mark_done(items[0].id, ok=True, response=None, attempts=1)
    flush(sqlite_store, clock)
    q = DestinationQueue("ch", "d", dest, sqlite_store, clock, RETRY, poll_interval=0)
    q.start()
    assert q.depth == 2
    assert q.stats() == (2, T0 + 1)
    assert dest.sent == ["m1"]
    dest.succeed()
    dest.succeed()
    assert dest.sent == ["m1", "m2"]
    assert q.stats() == (0, None)


def test_start_resumes_attempt_count(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """A reloaded delivery continues from its stored attempt count."""
    item = put(sqlite_store, clock, "x")
    sqlite_store.writer.mark_attempt(item.id, 2, "earlier")
    flush(sqlite_store, clock)
    q = DestinationQueue("ch", "d", dest, sqlite_store, clock, RETRY, poll_interval=0)
    q.start()
    assert dest.calls[0][1].attempt == 3
    dest.fail()
    flush(sqlite_store, clock)
    assert row(sqlite_store, item.id)["status"] == ERROR


def test_stop_then_start_resumes_after_pending_retry(queue: DestinationQueue, dest: FakeDestination, sqlite_store: Store, clock: Clock) -> None:  # fmt: skip
    """Stopping a queue that waits for a retry and starting it again resumes sending."""
    queue.handoff(put(sqlite_store, clock, "x"))
    dest.fail()
    flush(sqlite_store, clock)
    queue.stop()
    clock.advance(RETRY.delay(1))
    assert dest.sent == ["x"]
    queue.start()
    assert dest.sent == ["x", "x"]


def test_listeners_called_per_outcome(queue: DestinationQueue, dest: FakeDestination, sqlite_store: Store, clock: Clock) -> None:  # fmt: skip
    """Every listener is called with (delivery id, ok, reason) when a delivery completes."""
    a: list[Any] = []
    b: list[Any] = []
    queue.listeners += [lambda *args: a.append(args), lambda *args: b.append(args)]
    item = put(sqlite_store, clock, "x")
    queue.handoff(item)
    assert a == []
    dest.succeed()
    assert a == b == [(item.id, True, "")]


def test_depth_and_oldest_stats(queue: DestinationQueue, dest: FakeDestination, sqlite_store: Store, clock: Clock) -> None:  # fmt: skip
    """stats() reports depth and the oldest queued item's creation time, also through Metrics."""
    metrics = Metrics()
    q = DestinationQueue("ch", "m", dest, sqlite_store, clock, RETRY, poll_interval=0, metrics=metrics)
    q.start()
    assert q.stats() == (0, None)
    q.handoff(put(sqlite_store, clock, "a", dest="m", created=T0))
    q.handoff(put(sqlite_store, clock, "b", dest="m", created=T0 + 7))
    assert q.stats() == (2, T0)
    assert metrics.registry.get_sample_value("radbridge_queue_depth", {"channel": "ch", "destination": "m"}) == 2
    dest.succeed()
    assert q.stats() == (1, T0 + 7)
    assert (
        metrics.registry.get_sample_value("radbridge_messages_sent_total", {"channel": "ch", "destination": "m"}) == 1
    )


def test_window_overflow_reloads_from_store(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """Past the in-memory window items stay in the store; they are read back in order once the window drains."""
    q = DestinationQueue("ch", "d", dest, sqlite_store, clock, RETRY, poll_interval=0, window=2)
    q.start()
    items = [put(sqlite_store, clock, f"m{i}") for i in range(5)]
    for item in items:
        q.handoff(item)
    assert len(q.items) == 2 and q.overflow and q.depth == 5
    for _ in range(5):
        dest.succeed()
        flush(sqlite_store, clock)
    assert dest.sent == [f"m{i}" for i in range(5)]
    assert not q.overflow and q.depth == 0 and not q.items
    assert [row(sqlite_store, i.id)["status"] for i in items] == [SENT] * 5


def test_poll_picks_up_rows_written_elsewhere(sqlite_store: Store, clock: Clock, dest: FakeDestination) -> None:
    """An idle queue polls the store and sends rows it was not handed (written by the CLI or another node)."""
    q = DestinationQueue("ch", "d", dest, sqlite_store, clock, RETRY, poll_interval=2.0)
    q.start()
    put(sqlite_store, clock, "from elsewhere")
    assert dest.sent == []
    clock.advance(2.0)
    assert dest.sent == ["from elsewhere"]
    q.stop()
    put(sqlite_store, clock, "after stop")
    clock.advance(10)
    assert dest.sent == ["from elsewhere"]


def test_paused_queue_does_not_send(queue: DestinationQueue, dest: FakeDestination, sqlite_store: Store, clock: Clock) -> None:  # fmt: skip
    """A paused queue keeps items without sending them."""
    queue.paused = True
    queue.handoff(put(sqlite_store, clock, "x"))
    assert dest.sent == []
    assert queue.depth == 1
