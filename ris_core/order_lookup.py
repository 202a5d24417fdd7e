"""Finding orders and generating their ids.

The order row by id (:func:`thd_order_row`), an order by accession, Study Instance UID, SPS id or
requested procedure id (:func:`thd_find_order`), and the generated ids (:func:`generate_id`,
:func:`thd_new_accession`) described in :mod:`ris_core.orders`, which re-exports these names.
"""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import Connection, select

from ris_core.schema import ris_orders, ris_sps

B36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_counter = itertools.count()
OC, SP = ris_orders.c, ris_sps.c


def _b36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = B36[r] + out
        if not n:
            return out


def generate_id(prefix: str, now: float) -> str:
    """``prefix`` + 8 base-36 digits of epoch milliseconds + a 2-digit base-36 counter (≤ 16 with a 6-char prefix)."""
    return f"{prefix}{_b36(int(now * 1000)).rjust(8, '0')}{_b36(next(_counter) % 1296).rjust(2, '0')}"


def thd_new_accession(conn: Connection, prefix: str, now: float) -> str:
    """A generated accession no order uses yet."""
    while True:
        accession = generate_id(prefix, now)
        if conn.execute(select(OC.id).where(OC.accession == accession)).first() is None:
            return accession


def thd_order_row(conn: Connection, order_id: int, *, lock: bool = False) -> Any:
    """The order row *order_id* (locked for update on PostgreSQL with *lock*), or None."""
    query = select(ris_orders).where(OC.id == order_id)
    return conn.execute(query.with_for_update() if lock else query).first()


def thd_find_order(
    conn: Connection, *, accession: str | None = None, study_uid: str | None = None,
    requested_procedure_id: str | None = None, sps_id: str | None = None,
) -> dict | None:  # fmt: skip
    """The order (row as a dict, with ``patient_ref``) by accession, else Study UID, SPS id or requested procedure id."""
    newest = OC.id.desc()
    queries = []
    if accession:
        queries.append(select(ris_orders).where(OC.accession == accession))
    if study_uid:
        queries.append(select(ris_orders).where(OC.study_uid == study_uid).order_by(newest))
    if sps_id:
        queries.append(
            select(ris_orders).join(ris_sps, SP.order_ref == OC.id).where(SP.sps_id == sps_id).order_by(newest)
        )
    if requested_procedure_id:
        queries.append(select(ris_orders).where(OC.requested_procedure_id == requested_procedure_id).order_by(newest))
    for query in queries:
        row = conn.execute(query.limit(1)).first()
        if row is not None:
            return dict(row._mapping)
    return None
