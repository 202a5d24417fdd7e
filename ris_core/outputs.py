"""Messages the RIS generates after a committed change, ingested into the configured channels.

What goes out (planned inside the change's transaction by :func:`thd_plan`, so the values are the
committed ones; rendered and ingested after COMMIT by :class:`Outputs`):

* order status to the placer (``status_channel``, ``status_template``): when an order is created
  (it carries the accession, Study UID and filler number the RIS may have generated) and when it
  enters SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED, DISCONTINUED or HELD; not for orders nobody
  placed (unscheduled acquisitions have no placer number);
* the report to the EHR (``report_channel``, ``report_template``): each final (F) and corrected (C)
  ORU^R01;
* a charge (``charge_channel``, ``charge_template``): once per exam, when the order first reaches
  COMPLETED (or a report state straight from IN_PROGRESS).

A failure to render or ingest is logged (ids only) and counted as ``radbridge_messages_errored_total
{channel=<target>, stage="ris_output"}``; the RIS change stays (delivery is at-least-once).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select
from twisted.internet import defer

from engine.hl7.ack import new_control_id
from mappings.ris import render_hl7
from ris_core import states
from ris_core.orders import Change, order_vars, sps_vars, thd_order_row
from ris_core.patients import patient_vars, thd_get_patient
from ris_core.reports import report_vars
from ris_core.schema import ris_reports, ris_sps

log = logging.getLogger("radbridge.ris")

STATUS_STATES = frozenset(
    {states.SCHEDULED, states.IN_PROGRESS, states.COMPLETED, states.CANCELED, states.DISCONTINUED, states.HELD}
)
VERSIONS = {"ORM_O01": "2.3.1", "OMI_O23": "2.5.1"}


@dataclass
class Planned:
    """One message to generate: its kind, target channel, template and variables."""

    kind: str  # status | report | charge
    channel: str
    template: Any
    variables: dict[str, Any]
    order_id: int


def wants_status(change: Change) -> bool:
    """Whether the placer gets an order status message for *change*."""
    if change.from_state is None:
        return True
    return change.from_state != change.to_state and change.to_state in STATUS_STATES


def exam_done(change: Change) -> bool:
    """Whether *change* ends the exam (the moment a charge is posted)."""
    return (
        change.from_state is not None
        and change.from_state not in states.EXAM_DONE
        and (change.to_state in states.EXAM_DONE)
    )


def _base(conn: Connection, order_id: int) -> dict[str, Any]:
    order = thd_order_row(conn, order_id)
    ovars = order_vars(order)
    rows = conn.execute(select(ris_sps.c.sps_id, ris_sps.c.status).where(ris_sps.c.order_ref == order_id)).all()
    status = {sps_id: st for sps_id, st in rows}
    default = states.SPS_STATUS[order.state]
    steps = [sps_vars(spec, status.get(spec["sps_id"], default)) for spec in ovars["attrs"].get("sps") or []]
    return {"patient": patient_vars(thd_get_patient(conn, order.patient_ref)), "order": ovars, "sps": steps}


def thd_plan(conn: Connection, rt: Any, changes: list[Change], *, now: float | None = None) -> list[Planned]:
    """The messages *changes* call for, with their variables read in this transaction."""
    cfg = rt.config
    now = time.time() if now is None else now
    planned: list[Planned] = []
    for change in changes:
        kinds = []
        if cfg.status_channel and wants_status(change):
            kinds.append(("status", cfg.status_channel, rt.status))
        if cfg.report_channel and change.report_id and change.event in ("REPORT_F", "REPORT_C"):
            kinds.append(("report", cfg.report_channel, rt.report))
        if cfg.charge_channel and exam_done(change):
            kinds.append(("charge", cfg.charge_channel, rt.charge))
        if not kinds:
            continue
        base = _base(conn, change.order_id)
        order = base["order"]
        base["status"] = {
            "control": "SC", "order_status": states.ORC5[change.to_state], "event": change.event,
            "from_state": change.from_state or "", "to_state": change.to_state,
            "message": cfg.status_message or order["message"],
        }  # fmt: skip
        base["changed_at"] = time.strftime("%Y%m%d%H%M%S", time.localtime(now))
        for kind, channel, template in kinds:
            if kind == "status" and not order["placer_number"]:
                continue  # nobody placed it (an unscheduled acquisition): no placer to tell
            variables = dict(base)
            if kind == "report":
                row = conn.execute(select(ris_reports).where(ris_reports.c.id == change.report_id)).one()
                variables["report"] = report_vars(row)
            if kind == "charge":
                code = order["requested_procedure"] if order["requested_procedure"].get("code") else order["procedure"]
                variables["charge"] = {"code": code, "quantity": 1, "transaction_date": base["changed_at"],
                                       "transaction_id": order["accession"]}  # fmt: skip
            planned.append(Planned(kind, channel, template, variables, change.order_id))
    return planned


def render(planned: Planned, cfg: Any) -> str:
    """The HL7 text of *planned* (MSH values added: our application, the placer's, a fresh MSH-10)."""
    receiving_app, _, receiving_facility = (planned.variables["order"]["placer_app"] or "").partition("^")
    message = planned.variables["status"]["message"]
    msh = {
        "sending_application": cfg.application, "sending_facility": cfg.facility,
        "receiving_application": receiving_app, "receiving_facility": receiving_facility,
        "control_id": new_control_id(), "version": VERSIONS.get(message, "2.5.1") if planned.kind == "status" else "2.5.1",
    }  # fmt: skip
    return render_hl7(planned.template, msh=msh, **planned.variables)


class Outputs:
    """Renders planned messages and ingests them into their channels, in order."""

    def __init__(self, services: dict[str, Any], config: Any, metrics: Any = None) -> None:
        self.services = services
        self.config = config
        self.metrics = metrics
        self.sent = 0
        self.failed = 0

    def _fail(self, planned: Planned, what: str) -> None:
        self.failed += 1
        if self.metrics is not None:
            self.metrics.errored(planned.channel, "ris_output")
        log.warning(
            "ris %s message for order %s to channel %s: %s", planned.kind, planned.order_id, planned.channel, what
        )

    @defer.inlineCallbacks
    def send(self, planned: list[Planned]):
        """Render and ingest each message; fires when all were tried (never fails)."""
        for item in planned:
            try:
                text = render(item, self.config)
            except Exception as exc:  # noqa: BLE001 - a template failing must not undo the RIS change
                self._fail(item, f"template {getattr(item.template, 'name', '?')} failed ({type(exc).__name__})")
                log.debug("ris output template error: %s", exc)
                continue
            if not text:
                continue
            service = self.services.get(item.channel)
            if service is None or not getattr(service, "running", True):
                self._fail(item, "no such channel, or it is not running")
                continue
            try:
                result = yield service.ingest(text.encode("utf-8"), "ris", text=text)
            except Exception as exc:  # noqa: BLE001 - logged and counted, never raised
                self._fail(item, f"ingest failed ({type(exc).__name__})")
                continue
            if getattr(result, "code", "AA") not in ("AA", "CA"):
                self._fail(item, f"channel answered {result.code}")
            else:
                self.sent += 1
