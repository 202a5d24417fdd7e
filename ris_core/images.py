"""Images stored (IHE RAD-8): studies matched to orders, the unmatched list, the study-stable timeout.

A ``dicom.stored`` event names its study; the study's ``ris_studies`` row counts its instances
(from the archive's index, so a re-delivered event does not count twice) and is matched to an
order by AccessionNumber, else by StudyInstanceUID; a study that matches nothing stays unmatched
(``order_ref`` None) for reconciliation, and is matched later if an order for it arrives. The
first image of a SCHEDULED or ARRIVED order starts it (START). Modalities without MPPS leave their
orders IN_PROGRESS; :func:`thd_stable` completes those whose studies got no new image for the
configured time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, column, func, insert, select, table, update

from ris_core import states
from ris_core.hl7in import Rejected
from ris_core.orders import Change, thd_apply, thd_find_order, thd_order_row
from ris_core.schema import ris_mpps, ris_orders, ris_studies

STABLE_SOURCE = "study-stable timeout"
dicom_instances = table("dicom_instances", column("study_uid"))


def _match(conn: Connection, accession: str, study_uid: str) -> int | None:
    if accession:
        found = thd_find_order(conn, accession=accession)
        if found is not None:
            return int(found["id"])
    found = thd_find_order(conn, study_uid=study_uid)
    return int(found["id"]) if found is not None else None


def thd_image_stored(conn: Connection, attrs: dict[str, str], *, message_id: int | None, now: float) -> list[Change]:
    """Record one stored instance; START its order if this is the order's first image. The changes."""
    study_uid = (attrs.get("StudyInstanceUID") or "").strip()
    if not study_uid:
        raise Rejected("dicom.stored event without a StudyInstanceUID", "AR")
    accession = (attrs.get("AccessionNumber") or "").strip()[:64]
    st = ris_studies.c
    row = conn.execute(select(ris_studies).where(st.study_uid == study_uid).with_for_update()).first()
    order_id = row.order_ref if row is not None and row.order_ref is not None else _match(conn, accession, study_uid)
    archived = conn.execute(
        select(func.count()).select_from(dicom_instances).where(dicom_instances.c.study_uid == study_uid)
    ).scalar_one()
    values: dict[str, Any] = {"order_ref": order_id, "last_seen": now, "stable": 0}
    if accession:
        values["accession"] = accession
    if attrs.get("PatientID"):
        values["patient_id"] = attrs["PatientID"][:64]
    if row is None:
        values.update(study_uid=study_uid, instances=archived or 1, first_seen=now)
        conn.execute(insert(ris_studies).values(**values))
    else:
        values["instances"] = archived or row.instances + 1
        conn.execute(update(ris_studies).where(st.id == row.id).values(**values))
    if order_id is None:
        return []
    order = thd_order_row(conn, order_id)
    if order.state not in (states.SCHEDULED, states.ARRIVED):
        return []
    old, new = thd_apply(
        conn, order_id, "START", source=study_uid, message_id=message_id, detail="first image", now=now
    )
    return [Change(order_id, "START", old, new)]


def thd_unmatched(conn: Connection) -> list[dict[str, Any]]:
    """Studies no order matched (oldest first): study UID, accession, patient id, instances, first/last seen."""
    st = ris_studies.c
    query = select(ris_studies).where(st.order_ref.is_(None)).order_by(st.first_seen, st.id)
    return [dict(r._mapping) for r in conn.execute(query)]


def thd_stable(conn: Connection, now: float, timeout: float) -> list[Change]:
    """Complete IN_PROGRESS orders without MPPS whose studies got no image for *timeout* seconds."""
    st = ris_studies.c
    due = conn.execute(select(st.id, st.order_ref).where(st.stable == 0, st.last_seen <= now - timeout)).all()
    if not due:
        return []
    conn.execute(update(ris_studies).where(st.id.in_([r.id for r in due])).values(stable=1))
    changes = []
    for order_id in sorted({int(r.order_ref) for r in due if r.order_ref is not None}):
        state = conn.execute(select(ris_orders.c.state).where(ris_orders.c.id == order_id)).scalar()
        if state != states.IN_PROGRESS:
            continue
        if conn.execute(select(ris_mpps.c.id).where(ris_mpps.c.order_ref == order_id).limit(1)).first() is not None:
            continue  # the modality reports its own completion
        if conn.execute(select(st.id).where(st.order_ref == order_id, st.stable == 0).limit(1)).first() is not None:
            continue  # another study of the order is still receiving images
        old, new = thd_apply(conn, order_id, "COMPLETE", source=STABLE_SOURCE, now=now)
        changes.append(Change(order_id, "COMPLETE", old, new))
    return changes
