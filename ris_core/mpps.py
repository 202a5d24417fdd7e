"""Modality Performed Procedure Step data (IHE RAD-6/7, PS3.4 F.7): N-CREATE and N-SET as ``thd_*`` functions.

Each function runs on a connection inside the RIS service's transaction and returns an
:class:`MppsResult`: the DICOM status, the order the step belongs to, the ``ris_core.states``
event the service applies to it (in the same transaction, with ``orders.thd_apply``) and, for an
acquisition without a known order, the values to create one from (flagged for reconciliation).

Attributes arrive as DICOM keyword → value (strings, lists of values, sequences as lists of such
mappings: ``channels/dicom/mpps.py`` converts pynetdicom's datasets) and are kept in
``ris_mpps.attrs`` as DICOM JSON (PS3.18 F.2) with every N-SET applied.

Statuses (PS3.4 F.7.2, PS3.7 10.1.3/10.1.5):

=========  =====================================================================================
0x0000     success
0x0106     invalid attribute value: N-CREATE with a PerformedProcedureStepStatus other than
           IN PROGRESS (F.7.2.1), N-SET to a status other than IN PROGRESS/COMPLETED/DISCONTINUED
0x0110     processing failure: N-SET of a step already COMPLETED or DISCONTINUED ("Performed
           Procedure Step Object may no longer be updated", F.7.2.2; some dcm4chee versions
           answer 0xA710, a code PS3.4 does not define for MPPS)
0x0111     duplicate SOP instance: a second N-CREATE of the same SOP Instance UID
0x0112     no such SOP instance: N-SET of an instance never created
0x0120     missing attribute: N-CREATE without PerformedProcedureStepStatus
0x0121     missing attribute value: N-SET with an empty PerformedProcedureStepStatus
=========  =====================================================================================

Attributes N-SET may not change (PS3.4 Table F.7.2-1 "Not allowed": the patient, the scheduled
step references, where and when the step started) keep their N-CREATE values; the N-SET is not
refused for carrying them (modalities often resend them) and the result names them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from archive.matching import TEXT_VRS, keyword_vr
from ris_core.schema import ris_mpps

IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
FINAL = (COMPLETED, DISCONTINUED)
EVENTS: dict[str, str | None] = {IN_PROGRESS: None, COMPLETED: "COMPLETE", DISCONTINUED: "DISCONTINUE"}
"""The order event of each PerformedProcedureStepStatus an N-SET leaves the step in."""

SUCCESS = 0x0000
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_SOP_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121

STATUS = "PerformedProcedureStepStatus"
SCHEDULED_STEPS = "ScheduledStepAttributesSequence"
NOT_SETTABLE = frozenset({
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", SCHEDULED_STEPS, "PatientName", "PatientID",
    "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "ReferencedPatientSequence", "PerformedProcedureStepID",
    "PerformedStationAETitle", "PerformedStationName", "PerformedLocation", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "Modality", "StudyID",
})  # fmt: skip
"""Keys PS3.4 Table F.7.2-1 does not allow in an N-SET: ignored there (the N-CREATE values stay)."""
REF_KEYS = {
    "accession": "AccessionNumber",
    "sps_id": "ScheduledProcedureStepID",
    "requested_procedure_id": "RequestedProcedureID",
    "study_uid": "StudyInstanceUID",
}
"""``ris_mpps.sps_refs`` fields and the ScheduledStepAttributesSequence keys they come from."""
LEFT_OUT_OF_ORDER = frozenset({SCHEDULED_STEPS, "PerformedSeriesSequence", "SpecificCharacterSet"})

FindOrder = Callable[..., "int | None"]


@dataclass(frozen=True)
class MppsResult:
    """The outcome of an N-CREATE or N-SET; the RIS service applies *event* to *order_id*.

    *event* with *order_id* None and *unscheduled* set: create the order from *unscheduled*
    (reconcile=1), link the step to it (:func:`thd_link_order`), then apply *event* to it.
    """

    status: int
    order_id: int | None = None
    event: str | None = None
    unscheduled: dict[str, Any] | None = None
    comment: str | None = None  # the Error Comment of a failure
    ignored: tuple[str, ...] = ()  # N-SET keys left unchanged (NOT_SETTABLE)


def thd_mpps_create(
    conn: Connection, sop_uid: str, attrs: Mapping[str, Any], *, now: float, find_order: FindOrder | None = None
) -> MppsResult:
    """N-CREATE (RAD-6): record the step IN PROGRESS and find its order (event START).

    *find_order(conn, accession=, study_uid=, sps_id=, requested_procedure_id=) -> order id | None``
    is asked once per scheduled step reference; it defaults to ``ris_core.orders.thd_find_order``.
    """
    status = _text(attrs.get(STATUS))
    if not status:
        return MppsResult(MISSING_ATTRIBUTE, comment=f"{STATUS} missing")
    if status != IN_PROGRESS:
        return MppsResult(INVALID_ATTRIBUTE_VALUE, comment=f"{STATUS} must be IN PROGRESS in N-CREATE")
    if conn.execute(select(ris_mpps.c.id).where(ris_mpps.c.sop_instance_uid == sop_uid)).first() is not None:
        return MppsResult(DUPLICATE_SOP_INSTANCE, comment="MPPS instance already exists")
    refs = scheduled_refs(attrs)
    order_id = _find_order(conn, refs, find_order)
    unscheduled = None if order_id is not None else unscheduled_values(attrs)
    conn.execute(
        ris_mpps.insert(),
        {
            "sop_instance_uid": sop_uid,
            "order_ref": order_id,
            "status": IN_PROGRESS,
            "station_ae": (_text(attrs.get("PerformedStationAETitle")) or None),
            "sps_refs": json.dumps(refs),
            "attrs": json.dumps(to_json(attrs)),
            "unscheduled": 0 if order_id is not None else 1,
            "created_at": now,
            "updated_at": now,
        },
    )
    return MppsResult(SUCCESS, order_id, "START", unscheduled)


def thd_mpps_set(conn: Connection, sop_uid: str, attrs: Mapping[str, Any], *, now: float) -> MppsResult:
    """N-SET (RAD-7): merge the modification list; COMPLETED → COMPLETE, DISCONTINUED → DISCONTINUE."""
    m = ris_mpps.c
    row = conn.execute(
        select(m.id, m.status, m.order_ref, m.attrs).where(m.sop_instance_uid == sop_uid).with_for_update()
    ).first()
    if row is None:
        return MppsResult(NO_SUCH_SOP_INSTANCE, comment="no such MPPS instance")
    if row.status in FINAL:
        return MppsResult(
            PROCESSING_FAILURE, row.order_ref, comment="Performed Procedure Step Object may no longer be updated"
        )
    status = _text(attrs[STATUS]) if STATUS in attrs else row.status
    if not status:
        return MppsResult(MISSING_ATTRIBUTE_VALUE, row.order_ref, comment=f"{STATUS} empty")
    if status not in EVENTS:
        return MppsResult(INVALID_ATTRIBUTE_VALUE, row.order_ref, comment=f"{STATUS} {status[:24]} not allowed")
    ignored = tuple(k for k in attrs if k in NOT_SETTABLE)
    stored = json.loads(row.attrs) if row.attrs else {}
    stored.update(to_json({k: v for k, v in attrs.items() if k not in NOT_SETTABLE}))
    conn.execute(
        ris_mpps.update()
        .where(m.id == row.id)
        .values(status=status, attrs=json.dumps(dict(sorted(stored.items()))), updated_at=now)
    )
    return MppsResult(SUCCESS, row.order_ref, EVENTS[status], ignored=ignored)


def thd_link_order(conn: Connection, sop_uid: str, order_id: int, *, now: float) -> None:
    """Point an unscheduled step at the order the RIS created for it (it stays flagged ``unscheduled``)."""
    conn.execute(
        ris_mpps.update().where(ris_mpps.c.sop_instance_uid == sop_uid).values(order_ref=order_id, updated_at=now)
    )


def scheduled_refs(attrs: Mapping[str, Any]) -> list[dict[str, str | None]]:
    """The ScheduledStepAttributesSequence references (``ris_mpps.sps_refs``), empty values as None."""
    refs = []
    for item in attrs.get(SCHEDULED_STEPS) or ():
        if isinstance(item, Mapping):
            refs.append({field: _text(item.get(keyword)) or None for field, keyword in REF_KEYS.items()})
    return refs


def unscheduled_values(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """What an order for an unscheduled step is made of: the non-empty attributes, first reference merged in."""
    out = {k: v for k, v in attrs.items() if k not in LEFT_OUT_OF_ORDER and _present(v)}
    items = [i for i in attrs.get(SCHEDULED_STEPS) or () if isinstance(i, Mapping)]
    if items:
        out.update({k: v for k, v in items[0].items() if _present(v) and not isinstance(v, list)})
    return out


def _find_order(conn: Connection, refs: Sequence[Mapping[str, str | None]], find_order: FindOrder | None) -> int | None:
    if find_order is None:
        find_order = _order_id
    for ref in refs:
        if any(ref.values()):
            order_id = find_order(conn, **ref)
            if order_id is not None:
                return order_id
    return None


def _order_id(conn: Connection, **ref: Any) -> int | None:
    """The id of ``ris_core.orders.thd_find_order``'s order (it returns the row as a dict)."""
    from ris_core.orders import thd_find_order

    found = thd_find_order(conn, **ref)
    return int(found["id"]) if found is not None else None


# --- keyword → DICOM JSON (PS3.18 F.2) ---------------------------------------------------------

_NUMBERS = {"IS": int, "DS": float, "US": int, "UL": int, "SS": int, "SL": int, "SV": int, "UV": int, "FL": float,
            "FD": float}  # fmt: skip


def to_json(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """DICOM JSON of a keyword mapping (keywords unknown to the dictionary are left out)."""
    out = {}
    for keyword, value in attrs.items():
        found = keyword_vr(keyword)
        if found is None:
            continue
        tag, vr = found
        element: dict[str, Any] = {"vr": vr}
        if vr == "SQ":
            element["Value"] = [to_json(item) for item in value or () if isinstance(item, Mapping)]
        else:
            values = [_json_value(vr, v) for v in _split(vr, value)]
            if values:
                element["Value"] = values
        out[f"{tag:08X}"] = element
    return out


def _split(vr: str, value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value] if vr in TEXT_VRS else value.split("\\")
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _json_value(vr: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    if vr == "PN":
        groups = str(value).split("=")
        return {g: v for g, v in zip(("Alphabetic", "Ideographic", "Phonetic"), groups) if v}
    number = _NUMBERS.get(vr)
    if number is not None:
        try:
            return number(float(value)) if number is int else number(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value) if not isinstance(value, (int, float)) else value


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return str(value).strip() if value is not None else ""


def _present(value: Any) -> bool:
    return value not in (None, "", [], ())


__all__ = ["EVENTS", "MppsResult", "thd_link_order", "thd_mpps_create", "thd_mpps_set", "to_json"]
