"""RIS (orders with history, worklist, unmatched studies) and archive (studies, verify) views.

The engine never imports those packages by name: their query functions arrive through the
``radbridge.admin`` entry points (``ris.orders = "ris_core.cli:thd_list_orders"``, ...), and a
view answers 404 when the running App has no RIS or archive.
"""

from __future__ import annotations

import time
from importlib.metadata import entry_points
from typing import Any

from engine.admin.http import ApiError, int_arg, iso
from engine.admin.schema import OPERATOR, VIEWER
from engine.admin.server import Call, Route

GROUP = "radbridge.admin"
#: Fields a viewer does not see in RIS and archive lists.
PHI_FIELDS = ("patient_id", "issuer", "PatientID", "PatientName", "PatientBirthDate")
STUDY_KEYS = ("StudyInstanceUID", "AccessionNumber", "StudyDate", "StudyTime", "ModalitiesInStudy",
              "StudyDescription", "NumberOfStudyRelatedInstances", "PatientID", "PatientName")  # fmt: skip


def query(name: str) -> Any:
    """The function registered as *name* in the ``radbridge.admin`` entry points; 404 when none is."""
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            return ep.load()
    raise ApiError(404, f"{name.split('.')[0]} views are not installed")


def _needs(call: Call, what: str) -> Any:
    service = getattr(call.api.app, what)
    if service is None:
        raise ApiError(404, f"this engine runs no {what}")
    return service


def _redact(call: Call, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if call.phi:
        return rows
    return [{k: v for k, v in r.items() if k not in PHI_FIELDS} for r in rows]


def _times(row: dict[str, Any]) -> dict[str, Any]:
    return {k: iso(v) if k.endswith("_at") or k in ("at", "first_seen", "last_seen") else v for k, v in row.items()}


async def orders(call: Call) -> list[dict[str, Any]]:
    """GET /api/ris/orders?state=&patient_id=&limit=: orders newest first (no names)."""
    _needs(call, "ris")
    a = call.args
    if a.get("patient_id") and not call.phi:
        raise ApiError(403, "searching by patient id needs the operator role")
    rows = await call.api.store.read(query("ris.orders"), state=a.get("state"), patient_id=a.get("patient_id"),
                                     limit=int_arg(a, "limit", 200))  # fmt: skip
    if call.phi:
        await call.audit("ris.orders", detail={k: v for k, v in a.items() if k != "limit"} or None)
    return [_times(r) for r in _redact(call, rows)]


async def order(call: Call) -> dict[str, Any]:
    """GET /api/ris/orders/{accession}: one order, its patient, steps, MPPS, reports and state history (PHI)."""
    _needs(call, "ris")
    accession = call.params["accession"]
    detail = await call.api.store.read(query("ris.order"), accession)
    if detail is None:
        raise ApiError(404, f"no order with accession {accession!r}")
    await call.audit("ris.order.view", target=f"order/{accession}")
    out = _times(detail)
    for key in ("sps", "mpps", "reports", "history"):
        out[key] = [_times(r) for r in detail[key]]
    out["patient"] = _times(detail["patient"])
    return out


async def worklist(call: Call) -> list[dict[str, Any]]:
    """GET /api/ris/worklist?modality=&date=: the open worklist (patient ids only for operators)."""
    _needs(call, "ris")
    a = call.args
    date = time.strftime("%Y%m%d") if a.get("date") == "today" else a.get("date")
    if date is not None and not (len(date) == 8 and date.isdigit()):
        raise ApiError(400, "date is YYYYMMDD or 'today'")
    rows = await call.api.store.read(query("ris.worklist"), modality=a.get("modality"), date=date)
    if call.phi:
        await call.audit("ris.worklist", detail={k: v for k, v in a.items()} or None)
    return _redact(call, rows)


async def unmatched(call: Call) -> list[dict[str, Any]]:
    """GET /api/ris/unmatched: archived studies no order matched."""
    _needs(call, "ris")
    rows = await call.api.store.read(query("ris.unmatched"))
    if call.phi:
        await call.audit("ris.unmatched")
    return [_times(r) for r in _redact(call, rows)]


async def studies(call: Call) -> list[dict[str, Any]]:
    """GET /api/archive/studies?patient_id=&accession=&date=&limit=: studies in the archive index."""
    _needs(call, "archive")
    a = call.args
    if a.get("patient_id") and not call.phi:
        raise ApiError(403, "searching by patient id needs the operator role")
    ident = {k: "" for k in STUDY_KEYS}
    ident.update({k: v for k, v in (("PatientID", a.get("patient_id")), ("AccessionNumber", a.get("accession")),
                                    ("StudyDate", a.get("date"))) if v})  # fmt: skip
    find, limit = query("archive.find"), int_arg(a, "limit", 100)
    rows = await call.api.store.read(lambda conn: list(find(conn, "STUDY", ident, limit=limit)))
    if call.phi:
        await call.audit("archive.studies", detail={k: v for k, v in a.items() if k != "limit"} or None)
    return _redact(call, rows)


async def verify(call: Call) -> dict[str, Any]:
    """POST /api/archive/verify {orphans?}: recheck every archived file (exists, size, SHA-256)."""
    archive = _needs(call, "archive")
    orphans = call.body().get("orphans", False)
    if not isinstance(orphans, bool):
        raise ApiError(400, "orphans must be true or false")
    run = query("archive.verify")
    report = await call.api.blocking(
        lambda: run(call.api.store, archive.root, hl7_layout=archive.config.hl7_layout, orphans=orphans)
    )
    await call.audit("archive.verify", detail={"ok": report.ok, "problems": len(report.problems)})
    return {"ok": report.ok, **report.as_dict()}


def routes() -> list[Route]:
    """The routes of this module."""
    return [
        Route("GET", "/api/ris/orders", orders, VIEWER),
        Route("GET", "/api/ris/orders/{accession}", order, OPERATOR),
        Route("GET", "/api/ris/worklist", worklist, VIEWER),
        Route("GET", "/api/ris/unmatched", unmatched, VIEWER),
        Route("GET", "/api/archive/studies", studies, VIEWER),
        Route("POST", "/api/archive/verify", verify, OPERATOR),
    ]
