"""Orders: lookups, state transitions with history, placer order messages, generated ids, worklist items.

One order is one requested procedure (accession, requested procedure id, Study Instance UID) with
its scheduled procedure steps (``ris_sps``, the worklist). Every change goes through
:func:`thd_apply`, which checks ``ris_core.states``, sets the order state and the steps' DICOM
status, and writes ``ris_history`` (with the triggering source and store message id, which is
also how a message already applied is recognised: :func:`thd_already_applied`).

Steps get worklist rows once the order is scheduled (an ORDERED order is not on the worklist);
each row's item is rendered by the worklist template and the matching columns are read back from
that item, so what a C-FIND matches is what it returns.

Generated ids: accession ``accession_prefix`` + base-36 milliseconds (8) + a base-36 counter (2),
at most 16 characters and checked unique; SPS ids ``SPS`` + the same 10 characters; the requested
procedure id defaults to the accession; Study UIDs come from ``pydicom.uid.generate_uid()``; the
filler order number is ORC-3 when the placer sent one, else ``accession^application``.

Lookups and generated ids are in :mod:`ris_core.order_lookup`, worklist rows in
:mod:`ris_core.steps`; their names are re-exported here.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy import Connection, func, insert, or_, select, update

from ris_core import states
from ris_core.hl7in import OrderIn, OrderMessage, Rejected, SpsIn
from ris_core.order_lookup import B36 as B36
from ris_core.order_lookup import generate_id as generate_id
from ris_core.order_lookup import thd_find_order as thd_find_order
from ris_core.order_lookup import thd_new_accession as thd_new_accession
from ris_core.order_lookup import thd_order_row as thd_order_row
from ris_core.patients import attr_text, thd_patient_from_attrs
from ris_core.schema import ris_history, ris_orders, ris_sps, ris_studies
from ris_core.states import InvalidTransition, transition
from ris_core.steps import item_columns as item_columns
from ris_core.steps import order_vars as order_vars
from ris_core.steps import sps_vars as sps_vars
from ris_core.steps import thd_open_orders as thd_open_orders
from ris_core.steps import thd_refresh_items as thd_refresh_items
from ris_core.steps import thd_write_sps as thd_write_sps

__all__ = ["Change", "InvalidTransition", "thd_apply", "thd_create_unscheduled", "thd_find_order"]

OC, SP, HI = ris_orders.c, ris_sps.c, ris_history.c


@dataclass
class Change:
    """One applied event: what the outputs are planned from."""

    order_id: int
    event: str
    from_state: str | None
    to_state: str
    report_id: int | None = None


def _patch_status(item: str | None, status: str) -> str | None:
    if not item:
        return item
    data = json.loads(item)
    for step in (data.get("00400100") or {}).get("Value") or []:
        step["00400020"] = {"vr": "CS", "Value": [status]}
    return json.dumps(data)


def thd_apply(
    conn: Connection, order_id: int, event: str, *, source: str, message_id: int | None = None, detail: str = "",
    now: float,
) -> tuple[str | None, str]:  # fmt: skip
    """Apply *event* to the order: state, its steps' status, a history row; (old, new). Raises InvalidTransition."""
    row = thd_order_row(conn, order_id, lock=True)
    if row is None:
        raise InvalidTransition(None, event, f"#{order_id}")
    new = transition(row.state, event, row.accession)
    if new != row.state:
        conn.execute(update(ris_orders).where(OC.id == order_id).values(state=new, updated_at=now))
        status = states.SPS_STATUS[new]
        for sid, item, old in conn.execute(select(SP.id, SP.item, SP.status).where(SP.order_ref == order_id)).all():
            if old != status:
                values = {"status": status, "item": _patch_status(item, status), "updated_at": now}
                conn.execute(update(ris_sps).where(SP.id == sid).values(**values))
    _history(conn, order_id, row.state, new, event, source, message_id, detail, now)
    return row.state, new


def _history(
    conn: Connection, order_id: int, old: str | None, new: str, event: str, source: str, message_id: int | None,
    detail: str, now: float,
) -> None:  # fmt: skip
    conn.execute(
        insert(ris_history).values(
            order_ref=order_id, from_state=old, to_state=new, event=event, source=(source or "")[:80] or None,
            message_id=message_id, detail=detail or None, at=now,
        )
    )  # fmt: skip


def thd_already_applied(conn: Connection, order_ids: list[int], source: str, message_id: int | None) -> bool:
    """Whether a message (same store message id, or same ``app^facility:MSH-10``) already changed these orders."""
    conds = ([HI.message_id == message_id] if message_id is not None else []) + (
        [HI.source == source] if source else []
    )
    if not order_ids or not conds:
        return False
    query = select(HI.id).where(HI.order_ref.in_(order_ids), or_(*conds)).limit(1)
    return conn.execute(query).first() is not None


# -- placer order messages ------------------------------------------------------------------------
def _specs(o: OrderIn, rt: Any, now: float, scheduled: bool, previous: list[dict] | None = None) -> list[dict]:
    """The steps of *o* with ids, start times, modalities and station AEs filled in."""
    cfg = rt.config
    local = time.localtime(now)
    steps = o.sps or [SpsIn()]
    previous = previous or []
    specs, seen = [], set()
    for i, step in enumerate(steps):
        sps_id = step.sps_id or (previous[i]["sps_id"] if i < len(previous) else generate_id("SPS", now))
        if sps_id in seen:
            raise Rejected(f"order {o.label}: scheduled procedure step id {sps_id} is used twice")
        seen.add(sps_id)
        modality = step.modality or o.modality or cfg.defaults.modality or ""
        start_date, start_time = step.start_date or o.start_date, step.start_time or o.start_time
        if scheduled and not start_date:
            start_date, start_time = time.strftime("%Y%m%d", local), time.strftime("%H%M%S", local)
        specs.append({
            "sps_id": sps_id, "modality": modality, "station_ae": step.station_ae or cfg.station_aes.get(modality, []),
            "station_name": step.station_name or cfg.defaults.station_name or "", "location": step.location,
            "start_date": start_date, "start_time": start_time, "description": step.description,
            "protocol_codes": step.protocol_codes, "performing_physician": step.performing_physician,
        })  # fmt: skip
    return specs


def _columns(o: OrderIn, rt: Any) -> dict[str, Any]:
    """Order columns from *o* (only what it carries)."""
    values = {
        "placer_number": o.placer_number, "procedure_code": o.procedure.get("code", "")[:64],
        "procedure_text": o.procedure.get("text", "")[:128],
        "procedure_scheme": (o.procedure.get("scheme") or (rt.config.defaults.coding_scheme if o.procedure.get("code")
                                                           else ""))[:32],
        "modality": o.modality, "reason": o.reason, "ordering_provider": o.ordering_provider[:320],
        "referring_physician": o.referring_physician[:320], "priority": o.priority,
        "requested_procedure_id": o.requested_procedure_id, "study_uid": o.study_uid,
    }  # fmt: skip
    return {k: v for k, v in values.items() if v}


def _attrs(o: OrderIn, msg: OrderMessage, old: dict | None) -> dict[str, Any]:
    attrs = dict(old or {})
    attrs.update(o.attrs)
    attrs["message"] = msg.version
    if o.requested_procedure.get("code") or o.requested_procedure.get("text"):
        attrs["requested_procedure"] = o.requested_procedure
    return attrs


def thd_order_for(conn: Connection, o: OrderIn) -> Any:
    """The existing order *o* names: by accession if it has one, else filler, else placer number."""
    if o.accession:
        return conn.execute(select(ris_orders).where(OC.accession == o.accession)).first()
    for number, col in ((o.filler_number, OC.filler_number), (o.placer_number, OC.placer_number)):
        if not number:
            continue
        ident = number.split("^", 1)[0]
        conds = [col == number] if "^" in number else [col == ident, col.startswith(f"{ident}^", autoescape=True)]
        if col is OC.filler_number:
            conds.append(OC.accession == ident)
        row = conn.execute(select(ris_orders).where(or_(*conds)).order_by(OC.id.desc()).limit(1)).first()
        if row is not None:
            return row
    return None


def thd_orders(conn: Connection, rt: Any, msg: OrderMessage, patient_ref: int, *, message_id: int | None,
               now: float) -> list[Change]:  # fmt: skip
    """Apply an ORM^O01 / OMI^O23 (all its orders, or none: one transaction); the changes."""
    found = [(o, thd_order_for(conn, o)) for o in msg.orders]
    known = [int(row.id) for _, row in found if row is not None]
    source = msg.header.source
    if known and thd_already_applied(conn, known, source, message_id):
        return []
    changes: list[Change] = []
    for o, row in found:
        if row is not None and row.patient_ref != patient_ref:
            raise Rejected(f"order {row.accession} belongs to another patient")
        ctx = (rt, msg, source, message_id, now)
        if o.control == "NW" and row is None:
            changes.append(_create(conn, ctx, o, patient_ref))
        elif row is None:
            raise Rejected(f"order {o.label} is unknown (ORC-1 {o.control} needs an existing order)")
        elif o.control in ("NW", "XO", "SC"):
            if o.control == "NW" and row.state not in states.BEFORE_EXAM:
                raise Rejected(f"order {row.accession} already exists (state {row.state})")
            changes.extend(_change(conn, ctx, o, row))
        else:
            event = {"CA": "CANCEL", "DC": "DISCONTINUE", "HD": "HOLD", "RL": "RELEASE"}[o.control]
            old, new = thd_apply(conn, row.id, event, source=source, message_id=message_id, now=now)
            if new == states.SCHEDULED:
                _scheduled(conn, rt, row.id, now)
            changes.append(Change(int(row.id), event, old, new))
    return changes


def _create(conn: Connection, ctx: tuple, o: OrderIn, patient_ref: int) -> Change:
    rt, msg, source, message_id, now = ctx
    cfg = rt.config
    accession = o.accession or thd_new_accession(conn, cfg.accession_prefix, now)
    scheduled = o.has_schedule or cfg.auto_schedule
    event = "NW_SCHEDULED" if scheduled else "NW"
    state = transition(None, event, accession)
    attrs = _attrs(o, msg, None)
    attrs["sps"] = _specs(o, rt, now, scheduled)
    attrs["generated"] = [k for k, v in (("accession", o.accession), ("study_uid", o.study_uid)) if not v]
    values = {
        "requested_procedure_id": accession, "study_uid": str(generate_uid()), **_columns(o, rt),
        "accession": accession, "filler_number": o.filler_number or f"{accession}^{cfg.application}"[:64],
        "patient_ref": patient_ref, "state": state, "reconcile": 0, "placer_app": msg.header.placer_app[:180],
        "attrs": json.dumps(attrs), "created_at": now, "updated_at": now,
    }  # fmt: skip
    oid = int(conn.execute(insert(ris_orders).values(**values).returning(OC.id)).scalar_one())
    _history(conn, oid, None, state, event, source, message_id, "", now)
    if state == states.SCHEDULED:
        _scheduled(conn, rt, oid, now)
    _link_studies(conn, oid, accession, values["study_uid"])
    return Change(oid, event, None, state)


def _change(conn: Connection, ctx: tuple, o: OrderIn, row: Any) -> list[Change]:
    """XO (replace the steps, update the order), SC (a new schedule), NW again for an order not started."""
    rt, msg, source, message_id, now = ctx
    attrs = json.loads(row.attrs or "{}")
    old_specs = attrs.get("sps") or []
    if o.control == "SC":
        if not o.has_schedule:
            return []
        event = "SCHEDULE" if states.legal(row.state, "SCHEDULE") else "XO"
        specs = [dict(s) for s in old_specs]
        for spec, step in itertools.zip_longest(specs, o.sps[: len(specs)]):
            spec["start_date"] = (step and step.start_date) or o.start_date
            spec["start_time"] = (step and step.start_time) or o.start_time
    else:
        event = "SCHEDULE" if row.state == states.ORDERED and o.has_schedule else "XO"
        specs = _specs(o, rt, now, row.state != states.ORDERED or event == "SCHEDULE", old_specs)
    transition(row.state, event, row.accession)  # refuse before writing anything
    attrs = _attrs(o, msg, attrs) if o.control != "SC" else attrs
    attrs["sps"] = specs
    values = {**(_columns(o, rt) if o.control != "SC" else {}), "attrs": json.dumps(attrs), "updated_at": now}
    conn.execute(update(ris_orders).where(OC.id == row.id).values(**values))
    old, new = thd_apply(conn, row.id, event, source=source, message_id=message_id, now=now)
    if new == states.SCHEDULED or attrs.get("scheduled"):
        _scheduled(conn, rt, row.id, now)
    return [Change(int(row.id), event, old, new)]


def _scheduled(conn: Connection, rt: Any, order_id: int, now: float) -> None:
    """The order is (or was) scheduled: its steps get start times and worklist rows."""
    row = thd_order_row(conn, order_id)
    attrs = json.loads(row.attrs or "{}")
    local = time.localtime(now)
    for spec in attrs.get("sps") or []:
        if not spec.get("start_date"):
            spec["start_date"], spec["start_time"] = time.strftime("%Y%m%d", local), time.strftime("%H%M%S", local)
    attrs["scheduled"] = True
    conn.execute(update(ris_orders).where(OC.id == order_id).values(attrs=json.dumps(attrs)))
    thd_write_sps(conn, rt, order_id, now=now)


def _link_studies(conn: Connection, order_id: int, accession: str, study_uid: str) -> None:
    """Studies seen before their order arrived are matched to it now."""
    st = ris_studies.c
    where = (st.order_ref.is_(None), or_(st.study_uid == study_uid, st.accession == accession))
    conn.execute(update(ris_studies).where(*where).values(order_ref=order_id))


def thd_arrival(conn: Connection, patient_ref: int, *, now: float) -> list[int]:
    """Orders an ADT^A10 arrival applies to: ORDERED/SCHEDULED ones due today or earlier (or unscheduled)."""
    today = time.strftime("%Y%m%d", time.localtime(now))
    first_start = select(func.min(SP.start_date)).where(SP.order_ref == OC.id).scalar_subquery()
    query = select(OC.id, first_start).where(
        OC.patient_ref == patient_ref, OC.state.in_((states.ORDERED, states.SCHEDULED))
    )
    return [int(oid) for oid, start in conn.execute(query.order_by(OC.id)) if not start or start <= today]


UNSCHEDULED_EVENTS = (("NW_SCHEDULED", None, states.SCHEDULED), ("START", states.SCHEDULED, states.IN_PROGRESS))


def thd_create_unscheduled(conn: Connection, attrs: dict[str, str], *, source: str, now: float,
                           accession_prefix: str = "RB", message_id: int | None = None) -> int:  # fmt: skip
    """An IN_PROGRESS order (``reconcile=1``) for an acquisition nobody ordered; its id."""
    patient_ref = thd_patient_from_attrs(conn, attrs, now=now)
    accession = attr_text(attrs, "AccessionNumber")
    if not accession or len(accession) > 16 or thd_find_order(conn, accession=accession) is not None:
        accession = thd_new_accession(conn, accession_prefix, now)
    study_uid = attr_text(attrs, "StudyInstanceUID") or str(generate_uid())
    text = attr_text(attrs, "PerformedProcedureStepDescription") or attr_text(attrs, "StudyDescription")
    values = {
        "patient_ref": patient_ref, "accession": accession, "requested_procedure_id": accession,
        "study_uid": study_uid[:64], "procedure_text": text[:128] or None, "modality": attr_text(attrs, "Modality")[:16] or None,
        "referring_physician": attr_text(attrs, "ReferringPhysicianName")[:320] or None, "state": states.IN_PROGRESS,
        "reconcile": 1, "attrs": json.dumps({"message": "ORM_O01", "unscheduled": True, "sps": []}),
        "created_at": now, "updated_at": now,
    }  # fmt: skip
    oid = int(conn.execute(insert(ris_orders).values(**values).returning(OC.id)).scalar_one())
    for event, old, new in UNSCHEDULED_EVENTS:
        _history(conn, oid, old, new, event, source, message_id, "unscheduled acquisition", now)
    _link_studies(conn, oid, accession, study_uid)
    return oid
