"""Tests for the message store: migrations, the group-commit writer and the thd_* queries.

The main tests run on SQLite and on PostgreSQL (``@pytest.mark.postgres``, server named by
``RADBRIDGE_TEST_DATABASE_URL``; set ``RADBRIDGE_SKIP_POSTGRES=1`` to skip them).
"""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from sqlalchemy import func, inspect, select
from sqlalchemy.dialects import sqlite
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from engine.store.db import alembic_config, current_revision, make_engine, normalise_url, upgrade
from engine.store.queries import (
    QUEUED_ONLY,
    QueuedItem,
    channel_names,
    thd_counts,
    thd_get_message,
    thd_insert_message,
    thd_load_queue,
    thd_prune_batch,
    thd_queue_stats,
    thd_recent_keys,
    thd_requeue,
    thd_search,
)
from engine.store.schema import ERROR, FILTERED, QUEUED, SENT, TRANSFORMED, deliveries, messages
from engine.store.store import Store
from tests.engine.conftest import has_result, message_values, result_of

T0 = 1_700_000_000.0
HEAD = "0006"


def store_one(store: Store, clock: Clock, outputs: list[tuple[str, str]] | None = None, **values: Any):
    """Store one message (committing it) and return (message id, [delivery ids])."""
    d = store.writer.store_message(message_values(**values), outputs or [])
    clock.advance(0)
    return result_of(d)


def count(store: Store, table: Any, *where: Any) -> int:
    """Rows of *table* matching *where*, read on a fresh connection."""
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def delivery(store: Store, did: int) -> dict[str, Any]:
    """One deliveries row as a dict."""
    with store.engine.connect() as conn:
        return dict(conn.execute(select(deliveries).where(deliveries.c.id == did)).one()._mapping)


def test_migrations_create_tables(any_store: Store) -> None:
    """Opening a Store runs the migrations: the head revision with messages and deliveries tables."""
    assert current_revision(any_store.engine) == HEAD
    names = set(inspect(any_store.engine).get_table_names())
    assert {"messages", "deliveries", "alembic_version"} <= names


def test_upgrade_is_idempotent(store_url: str, clock: Clock) -> None:
    """Opening a second Store on a migrated database keeps the head revision and the data."""
    first = Store(store_url, clock, writer_mode="inline")
    first.start()
    store_one(first, clock)
    first.stop()
    clock.advance(0)
    second = Store(store_url, clock, writer_mode="inline")
    try:
        assert current_revision(second.engine) == HEAD
        assert count(second, messages) == 1
    finally:
        second.engine.dispose()


def test_store_message_fires_only_after_commit(any_store: Store, clock: Clock) -> None:
    """store_message's Deferred fires with ids only once the flush has committed; then another connection sees it."""
    other = make_engine(any_store.url)
    try:
        d = any_store.writer.store_message(message_values(), [("dest", "payload")])
        assert not has_result(d)
        with other.connect() as conn:
            assert conn.execute(select(func.count()).select_from(messages)).scalar_one() == 0
        clock.advance(0)
        mid, dids = result_of(d)
        assert isinstance(mid, int) and len(dids) == 1
        with other.connect() as conn:
            row = conn.execute(select(messages.c.id, messages.c.raw).where(messages.c.id == mid)).one()
            assert bytes(row.raw) == b"MSH|^~\\&|RIS|HOSP"
            drow = conn.execute(select(deliveries).where(deliveries.c.id == dids[0])).one()
            assert (drow.message_id, drow.status, drow.content, drow.attempts) == (mid, QUEUED, "payload", 0)
    finally:
        other.dispose()


def test_group_commit_one_batch(any_store: Store, clock: Clock) -> None:
    """Fifty store_message calls in one reactor turn are committed in a single batch."""
    ds = [any_store.writer.store_message(message_values(control_id=f"C{i}"), [("d", f"p{i}")]) for i in range(50)]
    assert not any(has_result(d) for d in ds)
    clock.advance(0)
    assert any_store.writer.batches == 1
    assert any_store.writer.ops == 50
    ids = [result_of(d)[0] for d in ds]
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert count(any_store, messages) == 50
    assert count(any_store, deliveries) == 50


def test_max_batch_splits_batches(store_url: str, clock: Clock) -> None:
    """More ops than max_batch are committed in several consecutive batches."""
    store = Store(store_url, clock, writer_mode="inline", max_batch=4)
    store.start()
    try:
        ds = [store.writer.store_message(message_values(), []) for _ in range(10)]
        clock.advance(0)
        clock.advance(0)
        clock.advance(0)
        assert store.writer.batches == 3
        assert all(has_result(d) for d in ds)
        assert count(store, messages) == 10
    finally:
        store.stop()
        clock.advance(0)


def _python_error(cur: Any, stmts: Any) -> None:
    raise ValueError("bad op")


def _sql_error(cur: Any, stmts: Any) -> None:
    cur.execute("INSERT INTO no_such_table VALUES (1)")


@pytest.mark.parametrize("bad_op", [_python_error, _sql_error], ids=["python", "sql"])
def test_bad_op_fails_only_its_own_deferred(any_store: Store, clock: Clock, bad_op: Any) -> None:
    """One failing op in a batch errbacks alone; the others in the batch still commit."""
    before = any_store.writer.store_message(message_values(control_id="A"), [("d", "a")])
    bad = any_store.writer.submit(bad_op)
    after = any_store.writer.store_message(message_values(control_id="B"), [("d", "b")])
    clock.advance(0)
    failure = result_of(bad)
    assert isinstance(failure, Failure)
    assert not isinstance(result_of(before), Failure)
    assert not isinstance(result_of(after), Failure)
    with any_store.engine.connect() as conn:
        assert sorted(conn.execute(select(messages.c.control_id)).scalars()) == ["A", "B"]
    assert count(any_store, deliveries) == 2


def test_not_null_violation_fails_only_that_message(any_store: Store, clock: Clock) -> None:
    """A message row the database refuses (raw NULL) fails its own store_message only."""
    good = any_store.writer.store_message(message_values(control_id="ok"), [])
    bad = any_store.writer.store_message(message_values(control_id="bad", raw=None), [])
    clock.advance(0)
    assert isinstance(result_of(bad), Failure)
    assert not isinstance(result_of(good), Failure)
    assert count(any_store, messages) == 1


def test_mark_done_and_attempt_update_rows(any_store: Store, clock: Clock) -> None:
    """mark_attempt records attempts and last error; mark_done sets SENT or ERROR with the response."""
    _, (d1, d2) = store_one(any_store, clock, [("a", "x"), ("b", "y")])
    any_store.writer.mark_attempt(d1, 1, "refused")
    clock.advance(0)
    row = delivery(any_store, d1)
    assert (row["status"], row["attempts"], row["last_error"]) == (QUEUED, 1, "refused")
    assert row["updated_at"] is not None
    any_store.writer.mark_done(d1, ok=True, response="MSA|AA|1", attempts=2)
    any_store.writer.mark_done(d2, ok=False, response="MSA|AE|1", attempts=3, error="AE from peer")
    clock.advance(0)
    ok, bad = delivery(any_store, d1), delivery(any_store, d2)
    assert (ok["status"], ok["response"], ok["attempts"], ok["last_error"]) == (SENT, "MSA|AA|1", 2, None)
    assert ok["sent_at"] is not None
    assert (bad["status"], bad["response"], bad["attempts"], bad["last_error"]) == (
        ERROR,
        "MSA|AE|1",
        3,
        "AE from peer",
    )
    assert bad["sent_at"] is None


def test_drain_waits_for_pending_ops(any_store: Store, clock: Clock) -> None:
    """drain fires once every op submitted so far is committed (at once when idle)."""
    assert has_result(any_store.writer.drain())
    d = any_store.writer.store_message(message_values(), [])
    drained = any_store.writer.drain()
    assert not has_result(drained)
    clock.advance(0)
    assert has_result(drained) and has_result(d)


@pytest.fixture
def searchable(any_store: Store, clock: Clock) -> dict[str, int]:
    """Four messages over two channels with various statuses, ids and times; returns their ids by label."""
    ids = {}
    ids["orm"], (d_orm,) = store_one(
        any_store, clock, [("out", "x")], channel="ch", received_at=T0, control_id="C1", patient_id="P1",
        accession="ACC1", message_type="ORM^O01",
    )  # fmt: skip
    ids["adt"], _ = store_one(
        any_store, clock, [], channel="ch", received_at=T0 + 10, status=FILTERED, control_id="C2", patient_id="P2",
        accession=None, message_type="ADT^A01",
    )  # fmt: skip
    ids["err"], _ = store_one(
        any_store, clock, [], channel="ch", received_at=T0 + 20, status=ERROR, control_id="C3", patient_id=None,
        accession=None, message_type=None, error="parse: broken",
    )  # fmt: skip
    ids["other"], (d_other,) = store_one(
        any_store, clock, [("out", "y")], channel="other", received_at=T0 + 30, control_id="C1", patient_id="P1",
        accession="ACC9", message_type="ORM^O01",
    )  # fmt: skip
    any_store.writer.mark_done(d_other, ok=True, response="AA", attempts=1)
    clock.advance(0)
    ids["d_orm"], ids["d_other"] = d_orm, d_other
    return ids


def search(store: Store, **kw: Any) -> list[int]:
    """Ids returned by thd_search with *kw*."""
    return [r["id"] for r in store.read_sync(thd_search, **kw)]


def test_search_by_channel_and_order(any_store: Store, searchable: dict[str, int]) -> None:
    """thd_search filters by channel and returns newest first, honouring limit."""
    s = searchable
    assert search(any_store, channel="ch") == [s["err"], s["adt"], s["orm"]]
    assert search(any_store) == [s["other"], s["err"], s["adt"], s["orm"]]
    assert search(any_store, limit=2) == [s["other"], s["err"]]


def test_search_by_status_includes_destination_status(any_store: Store, searchable: dict[str, int]) -> None:
    """thd_search's status matches the message status or any of its deliveries' statuses."""
    s = searchable
    assert search(any_store, status=ERROR) == [s["err"]]
    assert search(any_store, status=FILTERED) == [s["adt"]]
    assert search(any_store, status=TRANSFORMED) == [s["other"], s["orm"]]
    assert search(any_store, status=QUEUED) == [s["orm"]]
    assert search(any_store, status=SENT) == [s["other"]]
    assert search(any_store, status=SENT, channel="ch") == []


def test_search_by_ids_and_type(any_store: Store, searchable: dict[str, int]) -> None:
    """thd_search finds by control id, patient id, accession and message type (with * wildcard)."""
    s = searchable
    assert search(any_store, control_id="C1") == [s["other"], s["orm"]]
    assert search(any_store, control_id="C1", channel="ch") == [s["orm"]]
    assert search(any_store, patient_id="P2") == [s["adt"]]
    assert search(any_store, accession="ACC9") == [s["other"]]
    assert search(any_store, message_type="ORM*") == [s["other"], s["orm"]]
    assert search(any_store, message_type="ADT^A01") == [s["adt"]]
    assert search(any_store, control_id="nope") == []


def test_search_by_time(any_store: Store, searchable: dict[str, int]) -> None:
    """thd_search's since is inclusive and until exclusive."""
    s = searchable
    assert search(any_store, since=T0 + 10) == [s["other"], s["err"], s["adt"]]
    assert search(any_store, until=T0 + 10) == [s["orm"]]
    assert search(any_store, since=T0 + 10, until=T0 + 30) == [s["err"], s["adt"]]


def test_time_search_across_channels_uses_the_channel_time_index(tmp_path: Any, clock: Clock) -> None:
    """Without a channel, a time range is answered per channel from ix_messages_channel_time, with the right rows."""
    store = Store(f"sqlite:///{tmp_path}/t.db", clock, writer_mode="inline")
    store.start()
    try:
        expected = []
        for i in range(60):
            channel = f"c{i % 4}"
            mid, _ = store_one(store, clock, channel=channel, received_at=T0 + i)
            if 20 <= i < 30:
                expected.append(mid)
        assert search(store, since=T0 + 20, until=T0 + 30) == sorted(expected, reverse=True)
        assert [r[0] for r in store.read_sync(lambda c: c.execute(select(channel_names().subquery())).all())] == [
            "c0",
            "c1",
            "c2",
            "c3",
        ]
        with store.engine.connect() as conn:
            query = select(messages.c.id).where(
                messages.c.channel.in_(channel_names()), messages.c.received_at >= T0 + 20
            )
            compiled = query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
            plan = " ".join(
                str(r[-1]) for r in conn.connection.dbapi_connection.execute(f"EXPLAIN QUERY PLAN {compiled}")
            )
        assert "ix_messages_channel_time (channel=? AND received_at>?)" in plan
        assert "SCAN messages" not in plan.replace("SCAN channel_names", "")
    finally:
        d = store.stop()
        clock.advance(0)
        d.addErrback(lambda _: None)


def test_search_row_shape(any_store: Store, searchable: dict[str, int]) -> None:
    """thd_search rows carry the summary columns, not the raw message."""
    (row,) = any_store.read_sync(thd_search, status=ERROR)
    assert row["error"] == "parse: broken"
    assert row["received_at"] == T0 + 20
    assert "raw" not in row


def test_get_message_with_deliveries(any_store: Store, searchable: dict[str, int]) -> None:
    """thd_get_message returns the whole row with its deliveries; None for an unknown id."""
    msg = any_store.read_sync(thd_get_message, searchable["other"])
    assert msg["control_id"] == "C1" and msg["channel"] == "other"
    assert bytes(msg["raw"]) == b"MSH|^~\\&|RIS|HOSP"
    assert [(d["destination"], d["status"], d["response"]) for d in msg["deliveries"]] == [("out", SENT, "AA")]
    assert any_store.read_sync(thd_get_message, 999_999) is None


def test_prune_deletes_in_batches_and_keeps_queued_and_errors(any_store: Store, clock: Clock) -> None:
    """thd_prune_batch deletes old finished messages batch by batch, keeping QUEUED and (with keep_errors) ERROR."""
    old = [store_one(any_store, clock, [("d", "x")], received_at=T0 + i) for i in range(5)]
    for _, (did,) in old:
        any_store.writer.mark_done(did, ok=True, response=None, attempts=1)
    queued_mid, _ = store_one(any_store, clock, [("d", "q")], received_at=T0)
    error_mid, _ = store_one(any_store, clock, [], received_at=T0, status=ERROR)
    failed_mid, (failed_did,) = store_one(any_store, clock, [("d", "f")], received_at=T0)
    any_store.writer.mark_done(failed_did, ok=False, response=None, attempts=3, error="gave up")
    new_mid, _ = store_one(any_store, clock, [], received_at=T0 + 1000)
    other_mid, _ = store_one(any_store, clock, [], received_at=T0, channel="other")
    clock.advance(0)

    batches = []
    while True:
        n = any_store.transact_sync(thd_prune_batch, "ch", T0 + 500, True, 2)
        batches.append(n)
        if n < 2:
            break
    assert batches == [2, 2, 1]
    with any_store.engine.connect() as conn:
        left = set(conn.execute(select(messages.c.id)).scalars())
    assert left == {queued_mid, error_mid, failed_mid, new_mid, other_mid}
    assert count(any_store, deliveries, deliveries.c.message_id.in_([mid for mid, _ in old])) == 0

    assert any_store.transact_sync(thd_prune_batch, "ch", T0 + 500, False, 100) == 2
    with any_store.engine.connect() as conn:
        left = set(conn.execute(select(messages.c.id)).scalars())
    assert left == {queued_mid, new_mid, other_mid}
    assert count(any_store, deliveries, deliveries.c.message_id == failed_mid) == 0


def test_requeue_resets_deliveries(any_store: Store, clock: Clock) -> None:
    """thd_requeue puts ERROR/SENT deliveries back to QUEUED with attempts reset."""
    _, (d1, d2) = store_one(any_store, clock, [("a", "x"), ("b", "y")])
    any_store.writer.mark_done(d1, ok=False, response=None, attempts=5, error="down")
    any_store.writer.mark_done(d2, ok=True, response="AA", attempts=1)
    clock.advance(0)
    assert any_store.transact_sync(thd_requeue, [d1, d2, 424242], T0) == 2
    for did in (d1, d2):
        row = delivery(any_store, did)
        assert (row["status"], row["attempts"], row["last_error"], row["updated_at"]) == (QUEUED, 0, None, T0)


def test_recent_keys(any_store: Store, clock: Clock) -> None:
    """thd_recent_keys lists recent non-error, non-duplicate messages with a control id, oldest first."""
    keep1, _ = store_one(any_store, clock, received_at=T0 + 10, control_id="K1")
    keep2, _ = store_one(any_store, clock, received_at=T0 + 20, control_id="K2", sending_app=None, status=FILTERED)
    store_one(any_store, clock, received_at=T0 - 1, control_id="OLD")
    store_one(any_store, clock, received_at=T0 + 30, control_id="ERR", status=ERROR)
    store_one(any_store, clock, received_at=T0 + 40, control_id="K1", status=FILTERED, duplicate_of=keep1)
    store_one(any_store, clock, received_at=T0 + 50, control_id=None)
    store_one(any_store, clock, received_at=T0 + 60, control_id="X", channel="other")
    keys = any_store.read_sync(thd_recent_keys, "ch", T0)
    assert [tuple(k) for k in keys] == [("RIS", "HOSP", "K1", keep1, T0 + 10), (None, "HOSP", "K2", keep2, T0 + 20)]


def test_load_queue_and_stats(any_store: Store, clock: Clock) -> None:
    """thd_load_queue returns one destination's QUEUED rows in id order after an id; thd_queue_stats counts them."""
    _, (a1, b1) = store_one(any_store, clock, [("a", "1"), ("b", "1")], received_at=T0)
    _, (a2,) = store_one(any_store, clock, [("a", "2")], received_at=T0 + 5)
    _, (a3,) = store_one(any_store, clock, [("a", "3")], received_at=T0 + 9)
    any_store.writer.mark_done(a1, ok=True, response=None, attempts=1)
    clock.advance(0)
    items = any_store.read_sync(thd_load_queue, "ch", "a")
    assert [i.id for i in items] == [a2, a3]
    assert isinstance(items[0], QueuedItem) and items[0].content == "2" and items[0].created_at == T0 + 5
    assert [i.id for i in any_store.read_sync(thd_load_queue, "ch", "a", a2)] == [a3]
    assert [i.id for i in any_store.read_sync(thd_load_queue, "ch", "a", 0, 1)] == [a2]
    assert any_store.read_sync(thd_queue_stats, "ch", "a") == (2, T0 + 5)
    assert any_store.read_sync(thd_queue_stats, "ch", "b") == (1, T0)
    assert any_store.read_sync(thd_queue_stats, "ch", "none") == (0, None)


def test_counts_and_insert_message(any_store: Store, clock: Clock) -> None:
    """thd_insert_message (the reprocess path) stores a message with queued deliveries; thd_counts sees it."""
    store_one(any_store, clock, status=FILTERED)
    mid = any_store.transact_sync(thd_insert_message, message_values(parent_id=7), [("d", "again")])
    msg = any_store.read_sync(thd_get_message, mid)
    assert msg["parent_id"] == 7
    assert [(d["status"], d["content"]) for d in msg["deliveries"]] == [(QUEUED, "again")]
    assert any_store.read_sync(thd_counts) == {FILTERED: 1, TRANSFORMED: 1}
    assert any_store.read_sync(thd_counts, "other") == {}


def test_read_and_transact_return_deferreds(any_store: Store) -> None:
    """Store.read and Store.transact run thd_* functions and fire with their result."""
    assert result_of(any_store.read(thd_counts)) == {}
    assert result_of(any_store.transact(thd_requeue, [1], T0)) == 0


def test_sqlite_pragmas(tmp_path: Any) -> None:
    """SQLite engines use WAL, the configured synchronous level and a busy timeout."""
    engine = make_engine(f"sqlite:///{tmp_path}/sub/p.db", sqlite_synchronous="FULL")
    try:
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert raw.execute("PRAGMA synchronous").fetchone()[0] == 2
            assert raw.execute("PRAGMA busy_timeout").fetchone()[0] == 10000
    finally:
        engine.dispose()


def test_normalise_url() -> None:
    """Plain postgresql:// and postgres:// URLs use psycopg 3; others are unchanged."""
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_delivery_sharing_the_transformed_text_stores_it_once(any_store: Store, clock: Clock) -> None:
    """A delivery whose content is the message's transformed text stores NULL; queue and show read it back."""
    mid, (same, own) = store_one(any_store, clock, [("a", "OUT"), ("b", "OTHER")], transformed="OUT")
    assert delivery(any_store, same)["content"] is None
    assert delivery(any_store, own)["content"] == "OTHER"
    assert [i.content for i in any_store.read_sync(thd_load_queue, "ch", "a")] == ["OUT"]
    assert [i.content for i in any_store.read_sync(thd_load_queue, "ch", "b")] == ["OTHER"]
    shown = any_store.read_sync(thd_get_message, mid)
    assert [d["content"] for d in shown["deliveries"]] == ["OUT", "OTHER"]


def test_queue_index_is_partial_and_used(tmp_path: Any, clock: Clock) -> None:
    """Only QUEUED deliveries are in the queue index, and SQLite plans the queue queries with it."""
    store = Store(f"sqlite:///{tmp_path}/q.db", clock, writer_mode="inline")
    store.start()
    try:
        _, (d1,) = store_one(store, clock, [("a", "1")])
        store_one(store, clock, [("a", "2")])
        store.writer.mark_done(d1, ok=True, response=None, attempts=1)
        clock.advance(0)
        with store.engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            sql = raw.execute("SELECT sql FROM sqlite_master WHERE name = 'ix_deliveries_queued'").fetchone()[0]
            assert "WHERE status = 'QUEUED'" in sql
            n = raw.execute("SELECT count(*) FROM deliveries INDEXED BY ix_deliveries_queued WHERE status = 'QUEUED'")
            assert n.fetchone()[0] == 1
            query = select(func.count()).where(
                deliveries.c.channel == "ch", deliveries.c.destination == "a", QUEUED_ONLY
            )
            compiled = query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
            plan = " ".join(str(r[-1]) for r in raw.execute(f"EXPLAIN QUERY PLAN {compiled}"))
            assert "ix_deliveries_queued" in plan
    finally:
        d = store.stop()
        clock.advance(0)
        d.addErrback(lambda _: None)


def test_migration_0002_keeps_queued_rows(tmp_path: Any) -> None:
    """A store at revision 0001 with queued deliveries upgrades to 0002 and back without losing content."""
    engine = make_engine(f"sqlite:///{tmp_path}/old.db")
    try:
        upgrade(engine, "0001")
        with engine.begin() as conn:
            mid = conn.execute(messages.insert().values(**message_values(transformed="T"))).inserted_primary_key[0]
            row = {"message_id": mid, "channel": "ch", "status": QUEUED, "attempts": 0, "created_at": T0}
            conn.execute(deliveries.insert().values(destination="a", content="T", **row))
            conn.execute(deliveries.insert().values(destination="b", content="own", **row))
        upgrade(engine)
        assert current_revision(engine) == HEAD
        with engine.connect() as conn:
            assert [i.content for i in thd_load_queue(conn, "ch", "a")] == ["T"]
            assert [i.content for i in thd_load_queue(conn, "ch", "b")] == ["own"]
            conn.execute(deliveries.update().where(deliveries.c.destination == "a").values(content=None))
            conn.commit()
        command.downgrade(alembic_config(engine), "0001")
        with engine.connect() as conn:
            contents = conn.execute(select(deliveries.c.destination, deliveries.c.content).order_by(deliveries.c.id))
            assert [tuple(r) for r in contents] == [("a", "T"), ("b", "own")]
    finally:
        engine.dispose()


def test_migrations_match_the_table_definitions(any_store: Store) -> None:
    """Every table, column and index of the SQLAlchemy metadata (engine and archive) is what the migrations made."""
    import archive.schema  # noqa: F401 - registers the archive tables on the shared metadata
    import ris_core.schema  # noqa: F401 - and the RIS tables
    from engine.store.schema import metadata

    insp = inspect(any_store.engine)
    for table in metadata.sorted_tables:
        columns = {c["name"]: c for c in insp.get_columns(table.name)}
        assert set(columns) == {c.name for c in table.columns}, table.name
        for column in table.columns:
            assert columns[column.name]["nullable"] == column.nullable, (table.name, column.name)
        db_indexes = insp.get_indexes(table.name)
        indexes = {ix["name"]: tuple(ix["column_names"]) for ix in db_indexes}
        for index in table.indexes:
            assert indexes.get(index.name) == tuple(c.name for c in index.columns), (table.name, index.name)
        uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints(table.name)}
        uniques |= {tuple(ix["column_names"]) for ix in db_indexes if ix["unique"]}
        for column in table.columns:
            if column.unique:
                assert (column.name,) in uniques, (table.name, column.name)
