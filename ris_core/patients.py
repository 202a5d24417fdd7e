"""Patients: create/update from a PID, the merged-patient check, and ADT^A40 merges.

A patient is keyed by ``patient_id^issuer`` (PID-3.1 and its assigning authority), like the
archive's ``dicom_patients``. An update changes only what the message sent (an empty field is
"not sent", the HL7 null ``""`` clears). A merge (IHE RAD-12) moves the merged patient's orders
(with their steps, MPPS and studies) and the archive's studies to the surviving patient, and sets
``merged_into``; every later message naming the merged id is refused.

The archive's tables are reached through light ``table()`` constructs (ris_core does not import
the archive package; the tables exist in every store, migration 0004).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, column, insert, or_, select, table, update

from ris_core.hl7in import PatientIn, Rejected
from ris_core.schema import ris_mpps, ris_orders, ris_patients, ris_studies

dicom_patients = table(
    "dicom_patients", column("id"), column("patient_key"), column("patient_id"), column("issuer"),
    column("patient_name"), column("patient_name_upper"), column("birth_date"), column("sex"), column("attrs"),
    column("created_at"), column("updated_at"),
)  # fmt: skip
dicom_studies = table("dicom_studies", column("id"), column("patient_ref"), column("updated_at"))


class PatientMerged(Rejected):
    """A message names a patient that was merged into another one."""


def attr_text(attrs: dict[str, Any], keyword: str) -> str:
    """A DICOM attribute of a keyword mapping as stripped text (first value of a list; ``""`` if absent)."""
    value = attrs.get(keyword)
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    if isinstance(value, dict):  # a PN in its DICOM JSON form
        value = value.get("Alphabetic", "")
    return "" if value is None else str(value).strip()


def patient_key(patient_id: str, issuer: str | None) -> str:
    """``patient_id^issuer`` (an empty issuer keeps the ``^``), as the archive keys patients."""
    return f"{patient_id}^{issuer or ''}"


def patient_vars(row: Any) -> dict[str, Any]:
    """A patient row as the plain dict templates see (``""`` for what is unknown)."""
    m = row._mapping
    return {
        "id": m["id"], "patient_id": m["patient_id"], "issuer": m["issuer"] or "", "name": m["name"] or "",
        "birth_date": m["birth_date"] or "", "sex": m["sex"] or "",
        "other_ids": json.loads(m["other_ids"] or "[]"), "attrs": json.loads(m["attrs"] or "{}"),
    }  # fmt: skip


def thd_get_patient(conn: Connection, ref: int) -> Any:
    """The patient row *ref*."""
    return conn.execute(select(ris_patients).where(ris_patients.c.id == ref)).one()


def thd_find_patient(conn: Connection, patient_id: str, issuer: str | None) -> Any:
    """The patient row for *patient_id* and *issuer*, or None.

    Without an issuer, a single patient with that id under any issuer is taken (modalities often
    drop IssuerOfPatientID).
    """
    p = ris_patients.c
    row = conn.execute(select(ris_patients).where(p.patient_key == patient_key(patient_id, issuer))).first()
    if row is None and not issuer:
        rows = conn.execute(select(ris_patients).where(p.patient_id == patient_id).limit(2)).all()
        row = rows[0] if len(rows) == 1 else None
    return row


def _refuse_merged(conn: Connection, row: Any) -> None:
    if row.merged_into is not None:
        survivor = thd_get_patient(conn, row.merged_into)
        raise PatientMerged(f"patient {row.patient_id} was merged into {survivor.patient_id}")


def thd_check_patient(conn: Connection, who: PatientIn) -> int | None:
    """The id of the patient *who* names (None if unknown); :class:`PatientMerged` if merged."""
    row = thd_find_patient(conn, who.patient_id, who.issuer)
    if row is not None:
        _refuse_merged(conn, row)
    return row.id if row is not None else None


def _values(who: PatientIn, row: Any) -> dict[str, Any]:
    """Columns to set from *who* (only what it sent; ``""`` clears)."""
    values: dict[str, Any] = {}
    if who.name is not None:
        values["name"] = who.name[:320] or None
        values["name_upper"] = who.name.upper()[:320] or None
    for key in ("birth_date", "sex"):
        value = getattr(who, key)
        if value is not None:
            values[key] = value or None
    if who.other_ids:
        values["other_ids"] = json.dumps(who.other_ids)
    if who.attrs:
        attrs = json.loads(row.attrs or "{}") if row is not None else {}
        attrs.update(who.attrs)
        values["attrs"] = json.dumps(attrs, sort_keys=True)
    if row is not None:
        values = {k: v for k, v in values.items() if getattr(row, k) != v}
    return values


def thd_upsert_patient(conn: Connection, who: PatientIn, *, now: float) -> tuple[int, bool]:
    """Create or update the patient *who* names; (id, whether anything changed). Refuses merged ids."""
    row = thd_find_patient(conn, who.patient_id, who.issuer)
    if row is not None:
        _refuse_merged(conn, row)
    values = _values(who, row)
    if row is None:
        values.update(
            patient_key=patient_key(who.patient_id, who.issuer), patient_id=who.patient_id, issuer=who.issuer or None,
            created_at=now, updated_at=now,
        )  # fmt: skip
        return int(conn.execute(insert(ris_patients).values(**values).returning(ris_patients.c.id)).scalar_one()), True
    if values:
        conn.execute(update(ris_patients).where(ris_patients.c.id == row.id).values(**values, updated_at=now))
    return int(row.id), bool(values)


def thd_patient_from_attrs(conn: Connection, attrs: dict[str, str], *, now: float, issuer: str | None = None) -> int:
    """The patient of a DICOM acquisition (PatientID, IssuerOfPatientID, PatientName, ...), created if new.

    A merged id resolves to its survivor (images and MPPS cannot be refused). Without a PatientID
    the patient is keyed by the Study Instance UID, for reconciliation later.
    """
    pid = attr_text(attrs, "PatientID")[:64] or f"UNKNOWN-{attr_text(attrs, 'StudyInstanceUID')}"[:64]
    issuer = attr_text(attrs, "IssuerOfPatientID")[:64] or issuer or ""
    row = thd_find_patient(conn, pid, issuer)
    while row is not None and row.merged_into is not None:
        row = thd_get_patient(conn, row.merged_into)
    if row is not None:
        return int(row.id)
    who = PatientIn(
        pid, issuer, [{"id": pid, "issuer": issuer, "type": ""}], name=attr_text(attrs, "PatientName") or None,
        birth_date=attr_text(attrs, "PatientBirthDate")[:8] or None, sex=attr_text(attrs, "PatientSex")[:16] or None,
    )  # fmt: skip
    return thd_upsert_patient(conn, who, now=now)[0]


def thd_merge(conn: Connection, survivor_ref: int, merged: PatientIn, *, now: float) -> list[int]:
    """Merge the patient *merged* names into *survivor_ref*; the ids of the orders that moved.

    Repeating a merge already done changes nothing; a merged id merged into someone else is refused.
    """
    survivor = thd_get_patient(conn, survivor_ref)
    row = thd_find_patient(conn, merged.patient_id, merged.issuer)
    p, o = ris_patients.c, ris_orders.c
    if row is None:
        conn.execute(
            insert(ris_patients).values(
                patient_key=patient_key(merged.patient_id, merged.issuer), patient_id=merged.patient_id,
                issuer=merged.issuer or None, other_ids=json.dumps(merged.other_ids), merged_into=survivor.id,
                created_at=now, updated_at=now,
            )
        )  # fmt: skip
        moved: list[int] = []
    else:
        if row.id == survivor.id:
            raise Rejected("ADT^A40: MRG-1 names the surviving patient itself")
        if row.merged_into == survivor.id:
            return []
        _refuse_merged(conn, row)
        moved = [int(r[0]) for r in conn.execute(select(o.id).where(o.patient_ref == row.id).order_by(o.id))]
        conn.execute(update(ris_orders).where(o.patient_ref == row.id).values(patient_ref=survivor.id, updated_at=now))
        conn.execute(update(ris_patients).where(p.merged_into == row.id).values(merged_into=survivor.id))
        conn.execute(update(ris_patients).where(p.id == row.id).values(merged_into=survivor.id, updated_at=now))
        conn.execute(
            update(ris_studies).where(ris_studies.c.patient_id == row.patient_id).values(patient_id=survivor.patient_id)
        )
        _patch_mpps(conn, moved, survivor)
    thd_move_archive_studies(conn, merged.patient_id, merged.issuer, survivor, now=now)
    return moved


def _patch_mpps(conn: Connection, order_ids: list[int], survivor: Any) -> None:
    """The MPPS of moved orders name the survivor (their DICOM JSON patient attributes)."""
    if not order_ids:
        return
    rows = conn.execute(select(ris_mpps.c.id, ris_mpps.c.attrs).where(ris_mpps.c.order_ref.in_(order_ids))).all()
    for mid, attrs in rows:
        data = json.loads(attrs or "{}")
        data["00100020"] = {"vr": "LO", "Value": [survivor.patient_id]}
        data["00100021"] = {"vr": "LO", "Value": [survivor.issuer]} if survivor.issuer else {"vr": "LO"}
        data["00100010"] = {"vr": "PN", "Value": [{"Alphabetic": survivor.name}]} if survivor.name else {"vr": "PN"}
        conn.execute(update(ris_mpps).where(ris_mpps.c.id == mid).values(attrs=json.dumps(data)))


def thd_move_archive_studies(
    conn: Connection, patient_id: str, issuer: str | None, survivor: Any, *, now: float
) -> int:
    """Move the archive's studies of *patient_id* (that issuer, or none) to the survivor's row; how many moved."""
    dp = dicom_patients.c
    same_issuer = or_(dp.issuer == issuer, dp.issuer.is_(None)) if issuer else dp.issuer.is_(None)
    refs = [r[0] for r in conn.execute(select(dp.id).where(dp.patient_id == patient_id, same_issuer))]
    if not refs:
        return 0
    key = patient_key(survivor.patient_id, survivor.issuer)
    target = conn.execute(select(dp.id).where(dp.patient_key == key)).scalar()
    if target is None:
        target = conn.execute(
            insert(dicom_patients).values(
                patient_key=key, patient_id=survivor.patient_id, issuer=survivor.issuer, patient_name=survivor.name,
                patient_name_upper=survivor.name_upper, birth_date=survivor.birth_date, sex=survivor.sex,
                created_at=now, updated_at=now,
            ).returning(dp.id)
        ).scalar_one()  # fmt: skip
    refs = [r for r in refs if r != target]
    if not refs:
        return 0
    result = conn.execute(
        update(dicom_studies).where(dicom_studies.c.patient_ref.in_(refs)).values(patient_ref=target, updated_at=now)
    )
    return int(result.rowcount or 0)
