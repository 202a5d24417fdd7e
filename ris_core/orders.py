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
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy import Connection, delete, func, insert, or_, select, update

from mappings.ris import WorklistTemplateError, render_worklist_item
from ris_core import states
from ris_core.hl7in import OrderIn, OrderMessage, Rejected, SpsIn
from ris_core.patients import attr_text, patient_vars, thd_get_patient, thd_patient_from_attrs
from ris_core.schema import ris_history, ris_orders, ris_sps, ris_studies
from ris_core.states import InvalidTransition, transition

__all__ = ["Change", "InvalidTransition", "thd_apply", "thd_create_unscheduled", "thd_find_order"]

B36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_counter = itertools.count()
OC, SP, HI = ris_orders.c, ris_sps.c, ris_history.c


@dataclass
class Change:
    """One applied event: what the outputs are planned from."""

    order_id: int
    event: str
    from_state: str | None
    to_state: str
    report_id: int | None = None


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


def _norm_time(value: str | None) -> str | None:
    """DICOM TM ``HHMMSS.ffffff`` padded (the schema's normalisation)."""
    if not value:
        return None
    main, _, frac = value.partition(".")
    if not main.isdigit() or len(main) not in (2, 4, 6):
        return None
    return main.ljust(6, "0") + "." + frac[:6].ljust(6, "0")


def _split_ei(value: str | None) -> dict[str, str]:
    ident, _, ns = (value or "").partition("^")
    return {"id": ident, "namespace": ns}


def order_vars(row: Any) -> dict[str, Any]:
    """An order row as the plain dict templates see."""
    m = row._mapping
    attrs = json.loads(m["attrs"] or "{}")
    procedure = {"code": m["procedure_code"] or "", "text": m["procedure_text"] or "",
                 "scheme": m["procedure_scheme"] or ""}  # fmt: skip
    values = {k: ("" if m[k] is None else m[k]) for k in m if k != "attrs"}
    values.update(
        procedure=procedure, requested_procedure=attrs.get("requested_procedure") or procedure,
        placer=_split_ei(m["placer_number"]), filler=_split_ei(m["filler_number"]),
        message=attrs.get("message") or "ORM_O01", attrs=attrs,
    )  # fmt: skip
    return values


def sps_vars(spec: dict[str, Any], status: str) -> dict[str, Any]:
    """One step (its spec kept in the order's attrs) as the plain dict templates see."""
    return {**spec, "status": status}


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


# -- worklist rows ---------------------------------------------------------------------------------
def _first(data: dict, tag: str) -> str | None:
    values = (data.get(tag) or {}).get("Value") or []
    value = values[0] if values else None
    if isinstance(value, dict):
        value = value.get("Alphabetic")
    return None if value in (None, "") else str(value)


def item_columns(item: dict[str, Any]) -> dict[str, Any]:
    """The ``ris_sps`` matching columns, read from a rendered item (DICOM JSON)."""
    step = ((item.get("00400100") or {}).get("Value") or [{}])[0]
    name = _first(item, "00100010")
    aes = "\\".join(str(v) for v in (step.get("00400001") or {}).get("Value") or [])
    while len(aes) > 160:
        aes = aes.rsplit("\\", 1)[0]
    return {
        "patient_id": _first(item, "00100020"), "issuer": _first(item, "00100021"),
        "patient_name": name, "patient_name_upper": name.upper() if name else None,
        "accession": _first(item, "00080050"), "requested_procedure_id": _first(item, "00401001"),
        "study_uid": _first(item, "0020000D"), "modality": _first(step, "00080060"), "station_ae": aes or None,
        "station_name": _first(step, "00400010"), "start_date": _first(step, "00400002"),
        "start_time": _norm_time(_first(step, "00400003")), "description": _first(step, "00400007"),
        "performing_physician": _first(step, "00400006"),
    }  # fmt: skip


def thd_write_sps(conn: Connection, rt: Any, order_id: int, *, now: float) -> None:
    """Render the order's steps (specs in its attrs) into ``ris_sps``: the set is replaced."""
    order = thd_order_row(conn, order_id)
    attrs = json.loads(order.attrs or "{}")
    ovars = order_vars(order)
    pvars = patient_vars(thd_get_patient(conn, order.patient_ref))
    status = states.SPS_STATUS[order.state]
    existing = {r.sps_id: r.id for r in conn.execute(select(SP.id, SP.sps_id).where(SP.order_ref == order_id))}
    keep = set()
    for spec in attrs.get("sps") or []:
        svars = sps_vars(spec, status)
        try:
            item = render_worklist_item(rt.worklist, patient=pvars, order=ovars, sps=svars,
                                        defaults=rt.config.defaults.model_dump())  # fmt: skip
        except WorklistTemplateError as exc:
            where = f" ({exc.template}:{exc.line})" if exc.line else f" ({exc.template})"
            raise Rejected(
                f"worklist item of order {order.accession}: {exc.keyword or 'item'} is invalid{where}"
            ) from exc
        values = {**item_columns(item), "status": status, "item": json.dumps(item), "updated_at": now}
        keep.add(spec["sps_id"])
        if spec["sps_id"] in existing:
            conn.execute(update(ris_sps).where(SP.id == existing[spec["sps_id"]]).values(**values))
        else:
            conn.execute(insert(ris_sps).values(order_ref=order_id, sps_id=spec["sps_id"], created_at=now, **values))
    gone = [sid for key, sid in existing.items() if key not in keep]
    if gone:
        conn.execute(delete(ris_sps).where(SP.id.in_(gone)))


def thd_refresh_items(conn: Connection, rt: Any, order_ids: list[int], *, now: float) -> None:
    """Re-render the worklist rows of *order_ids* (after a patient update or merge)."""
    for oid in order_ids:
        if conn.execute(select(SP.id).where(SP.order_ref == oid).limit(1)).first() is not None:
            thd_write_sps(conn, rt, oid, now=now)


def thd_open_orders(conn: Connection, patient_ref: int) -> list[int]:
    """Ids of the patient's orders that are still on (or may return to) the worklist."""
    open_states = (*states.OPEN_ON_WORKLIST, states.HELD)
    query = select(OC.id).where(OC.patient_ref == patient_ref, OC.state.in_(open_states)).order_by(OC.id)
    return [int(r[0]) for r in conn.execute(query)]


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
