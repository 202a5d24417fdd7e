"""``thd_*`` reads of the admin API that the CLI does not have: counters per channel."""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from engine.store.schema import deliveries, messages


def thd_channel_counters(conn: Connection, channel: str) -> dict[str, dict[str, int]]:
    """Messages by source status and deliveries by status of one channel."""
    m, d = messages.c, deliveries.c
    msgs = conn.execute(select(m.status, func.count()).where(m.channel == channel).group_by(m.status))
    dels = conn.execute(select(d.status, func.count()).where(d.channel == channel).group_by(d.status))
    return {"messages": {s: int(n) for s, n in msgs}, "deliveries": {s: int(n) for s, n in dels}}
