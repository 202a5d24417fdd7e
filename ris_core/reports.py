"""Reports: ORU^R01 results applied to their orders, every version kept.

OBR-25 P, F and C are the events REPORT_P, REPORT_F and REPORT_C (a preliminary, the final, a
correction of the final); each report is a new ``ris_reports`` row numbered 1, 2, ... per order,
so a correction never overwrites what was signed before.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, insert, or_, select

from ris_core.hl7in import Rejected, ReportIn, ReportMessage
from ris_core.orders import Change, thd_already_applied, thd_apply
from ris_core.schema import ris_orders, ris_reports

EVENTS = {"P": "REPORT_P", "F": "REPORT_F", "C": "REPORT_C"}


def report_vars(row: Any) -> dict[str, Any]:
    """A report row as the plain dict templates see (``lines``: the text split into lines)."""
    m = row._mapping
    text = m["text"] or ""
    return {
        "id": m["id"], "version": m["version"], "status": m["status"], "text": text, "lines": text.split("\n"),
        "author": m["author"] or "", "observed_at": m["observed_at"] or "", "created_at": m["created_at"],
    }  # fmt: skip


def thd_report_order(conn: Connection, report: ReportIn) -> Any:
    """The order a report is for: by accession, else filler order number, else placer order number."""
    o = ris_orders.c
    if report.accession:
        return conn.execute(select(ris_orders).where(o.accession == report.accession)).first()
    for number, col in ((report.filler_number, o.filler_number), (report.placer_number, o.placer_number)):
        ident = number.split("^", 1)[0]
        if ident:
            conds = [col == number, col.startswith(f"{ident}^", autoescape=True), col == ident]
            if col is o.filler_number:
                conds.append(o.accession == ident)
            row = conn.execute(select(ris_orders).where(or_(*conds)).order_by(o.id.desc()).limit(1)).first()
            if row is not None:
                return row
    return None


def thd_reports(
    conn: Connection, msg: ReportMessage, *, patient_ref: int | None, message_id: int | None, now: float
) -> list[Change]:
    """Apply every report of an ORU^R01 (all or none); the changes (with the new report ids)."""
    found = []
    for report in msg.reports:
        row = thd_report_order(conn, report)
        if row is None:
            raise Rejected(f"report for an unknown order {report.label}")
        if patient_ref is not None and row.patient_ref != patient_ref:
            raise Rejected(f"order {row.accession} belongs to another patient")
        if report.status not in EVENTS:
            raise Rejected(
                f"OBR-25 result status {report.status or '(empty)'} of order {row.accession} is not P, F or C"
            )
        found.append((report, row))
    source = msg.header.source
    if thd_already_applied(conn, [int(row.id) for _, row in found], source, message_id):
        return []
    changes = []
    r = ris_reports.c
    for report, row in found:
        event = EVENTS[report.status]
        old, new = thd_apply(conn, row.id, event, source=source, message_id=message_id, now=now)
        version = conn.execute(select(func.coalesce(func.max(r.version), 0)).where(r.order_ref == row.id)).scalar_one()
        report_id = conn.execute(
            insert(ris_reports).values(
                order_ref=row.id, version=int(version) + 1, status=report.status, text=report.text,
                author=report.author[:320] or None, observed_at=report.observed_at or None, message_id=message_id,
                created_at=now,
            ).returning(r.id)
        ).scalar_one()  # fmt: skip
        changes.append(Change(int(row.id), event, old, new, report_id=int(report_id)))
    return changes
