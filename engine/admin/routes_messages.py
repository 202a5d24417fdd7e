"""Messages: search, one message stage by stage (PHI), reprocess and resend (the CLI's logic, in the engine)."""

from __future__ import annotations

from typing import Any

from engine.admin.http import ApiError, int_arg, iso, when_arg
from engine.admin.schema import OPERATOR, VIEWER
from engine.admin.server import Call, Route
from engine.cli_messages import ReprocessError, message_json, reprocess_values, resend_ids
from engine.store.queries import QueuedItem, thd_get_message, thd_insert_message_ids, thd_requeue, thd_search
from engine.store.schema import STATUSES

#: Search result fields a viewer does not see (patient and order ids; error texts may quote field values).
PHI_FIELDS = ("patient_id", "accession", "error")
FILTERS = ("channel", "status", "control_id", "patient_id", "accession", "type")


async def search(call: Call) -> list[dict[str, Any]]:
    """GET /api/messages?channel=&status=&since=&until=&control_id=&patient_id=&accession=&type=&limit=."""
    a = call.args
    unknown = sorted(set(a) - {*FILTERS, "since", "until", "limit"})
    if unknown:
        raise ApiError(400, f"unknown parameter(s): {', '.join(unknown)}")
    if a.get("status") and a["status"] not in STATUSES:
        raise ApiError(400, f"status must be one of {', '.join(STATUSES)}")
    if not call.phi and (a.get("patient_id") or a.get("accession")):
        raise ApiError(403, "searching by patient id or accession needs the operator role")
    rows = await call.api.store.read(
        thd_search, channel=a.get("channel"), status=a.get("status"), since=when_arg(a, "since"),
        until=when_arg(a, "until"), control_id=a.get("control_id"), patient_id=a.get("patient_id"),
        accession=a.get("accession"), message_type=a.get("type"), limit=int_arg(a, "limit", 100),
    )  # fmt: skip
    out = []
    for r in rows:
        r["received_at"] = iso(r["received_at"])
        if not call.phi:
            for key in PHI_FIELDS:
                r.pop(key, None)
        out.append(r)
    if call.phi:
        await call.audit("message.search", detail={k: v for k, v in a.items() if k in FILTERS} or None)
    return out


def _message_id(call: Call) -> int:
    raw = call.params["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(400, "a message id is a positive integer")
    return int(raw)


async def _load(call: Call) -> dict[str, Any]:
    mid = _message_id(call)
    m = await call.api.store.read(thd_get_message, mid)
    if m is None:
        raise ApiError(404, f"no message {mid}")
    return m


def _stages(m: dict[str, Any]) -> list[dict[str, Any]]:
    stages = [{"stage": "received", "content": m["raw"], "charset": m["charset"]}]
    if m["filter_info"]:
        stages.append({"stage": "filtered", "info": m["filter_info"]})
    if m["transformed"]:
        stages.append({"stage": "transformed", "content": m["transformed"]})
    if m["error"]:
        stages.append({"stage": "error", "info": m["error"]})
    return stages


async def show(call: Call) -> dict[str, Any]:
    """GET /api/messages/{id}: raw content, per-stage content and every delivery (PHI: audited)."""
    m = message_json(await _load(call))
    deliveries = [{**d, "created_at": iso(d["created_at"]), "updated_at": iso(d["updated_at"]),
                   "sent_at": iso(d["sent_at"])} for d in m.pop("deliveries")]  # fmt: skip
    await call.audit("message.view", target=f"message/{m['id']}")
    return {**m, "received_at": iso(m["received_at"]), "stages": _stages(m), "deliveries": deliveries}


async def reprocess(call: Call) -> dict[str, Any]:
    """POST /api/messages/{id}/reprocess {channel?}: run it again through the current config as a new message."""
    m = await _load(call)
    body = call.body()
    target = body.get("channel") or m["channel"]
    if not isinstance(target, str):
        raise ApiError(400, "channel must be a string")
    spec = next((c for c in call.api.app.vc.channels if c.config.name == target), None)
    if spec is None:
        raise ApiError(409 if target == m["channel"] else 404, f"no channel {target!r} in the running config")
    now = call.api.now()
    try:
        values, outputs, status = reprocess_values(m, spec, now)
    except ReprocessError as exc:
        raise ApiError(422, f"message {m['id']} {exc}") from None
    new_id, dids = await call.api.store.transact(thd_insert_message_ids, values, outputs)
    service = call.api.app.services.get(target)
    if service is not None and service.running:  # hand over at once instead of waiting for the queue's poll
        for (dest, content), did in zip(outputs, dids):
            service.queues[dest].handoff(QueuedItem(did, new_id, content, 0, now))
    await call.audit("message.reprocess", target=f"message/{m['id']}", detail={"new_id": new_id, "channel": target})
    call.status = 201
    return {"id": new_id, "parent_id": m["id"], "channel": target, "status": status, "deliveries": dids}


async def resend(call: Call) -> dict[str, Any]:
    """POST /api/messages/{id}/resend {all?}: queue its ERROR deliveries (all of them with all=true) again."""
    m = await _load(call)
    include_sent = call.body().get("all", False)
    if not isinstance(include_sent, bool):
        raise ApiError(400, "all must be true or false")
    ids = resend_ids(m, include_sent)
    n = await call.api.store.transact(thd_requeue, ids, call.api.now()) if ids else 0
    await call.audit("message.resend", target=f"message/{m['id']}", detail={"deliveries": ids})
    return {"id": m["id"], "requeued": n, "deliveries": ids}


def routes() -> list[Route]:
    """The routes of this module."""
    return [
        Route("GET", "/api/messages", search, VIEWER),
        Route("GET", "/api/messages/{id}", show, OPERATOR),
        Route("POST", "/api/messages/{id}/reprocess", reprocess, OPERATOR),
        Route("POST", "/api/messages/{id}/resend", resend, OPERATOR),
    ]
