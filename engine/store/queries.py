"""Synchronous ``thd_*`` queries (Buildbot style): each takes a SQLAlchemy connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, exists, func, or_, select, text, update

from engine.store.schema import ERROR, QUEUED, deliveries, messages


@dataclass(slots=True)
class QueuedItem:
    """A delivery waiting in a destination queue."""

    id: int
    message_id: int
    content: str
    attempts: int
    created_at: float


#: ``status = 'QUEUED'`` as a literal: only then can SQLite (and PostgreSQL's generic plans) use
#: the partial index ``ix_deliveries_queued``.
QUEUED_ONLY = text("deliveries.status = 'QUEUED'")


def delivery_content():
    """A delivery's outbound text: its own, or the message's ``transformed`` text when shared (NULL)."""
    shared = select(messages.c.transformed).where(messages.c.id == deliveries.c.message_id).scalar_subquery()
    return func.coalesce(deliveries.c.content, shared)


def thd_load_queue(conn: Connection, channel: str, destination: str, after_id: int = 0, limit: int = 1000):
    """QUEUED deliveries of one destination in FIFO order, after *after_id*."""
    d = deliveries.c
    rows = conn.execute(
        select(d.id, d.message_id, delivery_content(), d.attempts, d.created_at)
        .where(d.channel == channel, d.destination == destination, QUEUED_ONLY, d.id > after_id)
        .order_by(d.id)
        .limit(limit)
    )
    return [QueuedItem(*row) for row in rows]


def thd_queue_stats(conn: Connection, channel: str, destination: str) -> tuple[int, float | None]:
    """(depth, oldest created_at) of one destination queue."""
    d = deliveries.c
    row = conn.execute(
        select(func.count(), func.min(d.created_at)).where(
            d.channel == channel, d.destination == destination, QUEUED_ONLY
        )
    ).one()
    return int(row[0]), row[1]


def _originals(channel: str, since: float) -> list:
    """Conditions of messages that count for duplicate detection."""
    m = messages.c
    return [
        m.channel == channel,
        m.received_at >= since,
        m.status != ERROR,
        m.duplicate_of.is_(None),
        m.control_id.is_not(None),
    ]


def thd_recent_keys(
    conn: Connection, channel: str, since: float, limit: int | None = None
) -> list[tuple[str, str, str, int, float]]:
    """(sending app, facility, MSH-10, id, received_at) of the newest *limit* originals since *since*, oldest first."""
    m = messages.c
    query = select(m.sending_app, m.sending_facility, m.control_id, m.id, m.received_at)
    query = query.where(*_originals(channel, since)).order_by(m.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [tuple(r) for r in reversed(conn.execute(query).all())]


def thd_find_key(conn: Connection, channel: str, key: tuple[str, str, str], since: float) -> tuple[int, float] | None:
    """(id, received_at) of the first original with MSH-3/4/10 *key* since *since* (MSH-10 index)."""
    m = messages.c
    app, facility, control_id = key
    row = conn.execute(
        select(m.id, m.received_at)
        .where(m.control_id == control_id, *_originals(channel, since))
        .where(func.coalesce(m.sending_app, "") == app, func.coalesce(m.sending_facility, "") == facility)
        .order_by(m.id)
        .limit(1)
    ).first()
    return (int(row[0]), float(row[1])) if row else None


def channel_names():
    """SELECT of the distinct channel names, read as a loose index scan of ix_messages_channel_time.

    A recursive CTE jumps from each name to the next larger one (one index seek per channel),
    where ``SELECT DISTINCT channel`` would read every index entry. Works on SQLite and PostgreSQL.
    """
    inner = messages.alias("next_channel")
    names = select(func.min(messages.c.channel).label("name")).cte("channel_names", recursive=True)
    following = select(func.min(inner.c.channel)).where(inner.c.channel > names.c.name).scalar_subquery()
    names = names.union_all(select(following).where(names.c.name.is_not(None)))
    return select(names.c.name).where(names.c.name.is_not(None))


def thd_search(
    conn: Connection,
    *,
    channel: str | None = None,
    status: str | None = None,
    since: float | None = None,
    until: float | None = None,
    control_id: str | None = None,
    patient_id: str | None = None,
    accession: str | None = None,
    message_type: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Messages matching every given criterion, newest first (status matches source or any destination)."""
    m = messages.c
    conds = []
    for col, value in (
        (m.channel, channel),
        (m.control_id, control_id),
        (m.patient_id, patient_id),
        (m.accession, accession),
    ):
        if value is not None:
            conds.append(col == value)
    if message_type is not None:
        pattern = message_type.replace("*", "%")
        if "%" not in pattern and "^" not in pattern:
            pattern += "%"  # "ADT" finds every ADT event
        conds.append(m.message_type.like(pattern))
    if since is not None:
        conds.append(m.received_at >= since)
    if until is not None:
        conds.append(m.received_at < until)
    if channel is None and (since is not None or until is not None):
        # Time is indexed only behind the channel (ix_messages_channel_time): name every channel so
        # the time range is an index range per channel instead of a scan of the whole table.
        conds.append(m.channel.in_(channel_names()))
    if status is not None:
        in_dest = exists().where(deliveries.c.message_id == m.id, deliveries.c.status == status)
        conds.append(or_(m.status == status, in_dest))
    query = (
        select(
            m.id,
            m.channel,
            m.received_at,
            m.status,
            m.control_id,
            m.message_type,
            m.origin,
            m.error,
            m.duplicate_of,
            m.patient_id,
            m.accession,
            m.parent_id,
        )
        .where(*conds)
        .order_by(m.id.desc())
        .limit(limit)
    )
    return [dict(r._mapping) for r in conn.execute(query)]


def thd_get_message(conn: Connection, message_id: int) -> dict[str, Any] | None:
    """One message with its deliveries (``None`` when unknown)."""
    row = conn.execute(select(messages).where(messages.c.id == message_id)).first()
    if row is None:
        return None
    out = dict(row._mapping)
    out["deliveries"] = []
    query = select(deliveries).where(deliveries.c.message_id == message_id).order_by(deliveries.c.id)
    for r in conn.execute(query):
        delivery = dict(r._mapping)
        if delivery["content"] is None:  # shared with the message (see Writer.store_message_cb)
            delivery["content"] = out["transformed"]
        out["deliveries"].append(delivery)
    return out


def thd_requeue(conn: Connection, delivery_ids: list[int], now: float) -> int:
    """Put deliveries back in their queue (resend); returns how many rows changed."""
    res = conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(delivery_ids))
        .values(status=QUEUED, attempts=0, last_error=None, updated_at=now)
    )
    return res.rowcount


def thd_prune_batch(conn: Connection, channel: str, before: float, keep_errors: bool, batch_size: int) -> int:
    """Delete one batch of old messages (and their deliveries) with nothing left in a queue."""
    m, d = messages.c, deliveries.c
    conds = [m.channel == channel, m.received_at < before]
    conds.append(~exists().where(d.message_id == m.id, d.status == QUEUED))
    if keep_errors:
        conds.append(m.status != ERROR)
        conds.append(~exists().where(d.message_id == m.id, d.status == ERROR))
    ids = [r[0] for r in conn.execute(select(m.id).where(*conds).order_by(m.id).limit(batch_size))]
    if not ids:
        return 0
    conn.execute(delete(deliveries).where(d.message_id.in_(ids)))
    conn.execute(delete(messages).where(m.id.in_(ids)))
    return len(ids)


def thd_counts(conn: Connection, channel: str | None = None) -> dict[str, int]:
    """Message counts by source status (for tests and the CLI)."""
    q = select(messages.c.status, func.count()).group_by(messages.c.status)
    if channel:
        q = q.where(messages.c.channel == channel)
    return {s: int(n) for s, n in conn.execute(q)}


def thd_insert_message(conn: Connection, values: dict[str, Any], outputs: list[tuple[str, str]]) -> int:
    """Insert a message and its QUEUED deliveries outside the hot path (reprocess); returns its id."""
    return thd_insert_message_ids(conn, values, outputs)[0]


def thd_insert_message_ids(
    conn: Connection, values: dict[str, Any], outputs: list[tuple[str, str]]
) -> tuple[int, list[int]]:
    """:func:`thd_insert_message` returning (message id, delivery ids in the order of *outputs*)."""
    mid = conn.execute(messages.insert().values(**values)).inserted_primary_key[0]
    dids = []
    for dest, content in outputs:
        res = conn.execute(
            deliveries.insert().values(
                message_id=mid,
                channel=values["channel"],
                destination=dest,
                status=QUEUED,
                content=content,
                attempts=0,
                created_at=values["received_at"],
            )
        )
        dids.append(int(res.inserted_primary_key[0]))
    return int(mid), dids
