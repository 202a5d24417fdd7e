"""Worklist rows: an order's scheduled procedure steps rendered into ``ris_sps``.

The plain dicts the templates see (:func:`order_vars`, :func:`sps_vars`), writing a scheduled
order's steps through the worklist template (:func:`thd_write_sps`, :func:`thd_refresh_items`),
the matching columns read back from each item (:func:`item_columns`) and the orders still on the
worklist (:func:`thd_open_orders`). :mod:`ris_core.orders` re-exports these names.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from mappings.ris import WorklistTemplateError, render_worklist_item
from ris_core import states
from ris_core.hl7in import Rejected
from ris_core.order_lookup import thd_order_row
from ris_core.patients import patient_vars, thd_get_patient
from ris_core.schema import ris_orders, ris_sps

OC, SP = ris_orders.c, ris_sps.c


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
