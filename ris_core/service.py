"""The RIS service: one store transaction per inbound message or event, then the generated messages.

:class:`RisService` is the engine's ``ris`` service (built from ``ris:``). Channels hand it HL7
(ADT, ORM^O01, OMI^O23, ORU^R01) and ``dicom.stored`` events through the ``ris`` destination; the
DICOM SCP calls :meth:`RisService.mpps_create`, :meth:`~RisService.mpps_set` and
:meth:`~RisService.worklist`. Changes are serialised (one at a time, in arrival order), each in its
own transaction (``Store.transact``); what they generate is ingested into the output channels
after COMMIT (``ris_core.outputs``). Reasons for refusing a message name orders (accession) and
states; logs carry message ids and control ids only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection
from twisted.internet import defer
from twisted.python.failure import Failure

from engine.event import Event
from engine.hl7.message import HL7Error, HL7Message
from ris_core import hl7in, images, mpps, orders, patients, reports
from ris_core.config import CompiledRis, RisConfig, compile_ris
from ris_core.hl7in import AdtMessage, OrderMessage, Parsed, Rejected, ReportMessage
from ris_core.metrics import ScrapeCounts
from ris_core.orders import Change
from ris_core.outputs import Outputs, Planned, thd_plan
from ris_core.states import InvalidTransition
from ris_core.worklist import paged as worklist_rows

log = logging.getLogger("radbridge.ris")

PROCESSING_FAILURE = 0x0110
Result = tuple[list[Change], list[Planned]]


@dataclass
class RisResult:
    """What the RIS made of one message: AA, or AE/AR with a reason (ids and states, never PHI)."""

    ok: bool
    code: str
    reason: str = ""
    order_ids: list[int] = field(default_factory=list)


def _refresh(conn: Connection, rt: CompiledRis, order_ids: list[int], skip: set[int], now: float) -> None:
    orders.thd_refresh_items(conn, rt, [oid for oid in dict.fromkeys(order_ids) if oid not in skip], now=now)


def thd_hl7(conn: Connection, rt: CompiledRis, parsed: Parsed, *, message_id: int | None, now: float) -> Result:
    """Apply one parsed HL7 message; (changes, planned outputs)."""
    changes: list[Change] = []
    if isinstance(parsed, OrderMessage):
        ref, changed = patients.thd_upsert_patient(conn, parsed.patient, now=now)
        changes = orders.thd_orders(conn, rt, parsed, ref, message_id=message_id, now=now)
        if changed:
            _refresh(conn, rt, orders.thd_open_orders(conn, ref), {c.order_id for c in changes}, now)
    elif isinstance(parsed, ReportMessage):
        ref = patients.thd_check_patient(conn, parsed.patient) if parsed.patient is not None else None
        changes = reports.thd_reports(conn, parsed, patient_ref=ref, message_id=message_id, now=now)
    elif isinstance(parsed, AdtMessage):
        changes = _adt(conn, rt, parsed, message_id, now)
    return changes, thd_plan(conn, rt, changes, now=now)


def _adt(conn: Connection, rt: CompiledRis, msg: AdtMessage, message_id: int | None, now: float) -> list[Change]:
    source = msg.header.source
    if msg.event == "A40":
        for survivor, merged in msg.merges:
            ref, changed = patients.thd_upsert_patient(conn, survivor, now=now)
            moved = patients.thd_merge(conn, ref, merged, now=now)
            _refresh(conn, rt, moved + (orders.thd_open_orders(conn, ref) if changed else []), set(), now)
        return []
    ref, changed = patients.thd_upsert_patient(conn, msg.patients[0], now=now)
    if changed:
        _refresh(conn, rt, orders.thd_open_orders(conn, ref), set(), now)
    if msg.event != "A10":
        return []
    due = orders.thd_arrival(conn, ref, now=now)
    if orders.thd_already_applied(conn, due, source, message_id):
        return []
    changes = []
    for oid in due:
        old, new = orders.thd_apply(conn, oid, "ARRIVE", source=source, message_id=message_id, now=now)
        changes.append(Change(oid, "ARRIVE", old, new))
    return changes


def thd_event(conn: Connection, rt: CompiledRis, event: Event, *, message_id: int | None, now: float) -> Result:
    """Apply one event (``dicom.stored``); (changes, planned outputs)."""
    if event.kind != "dicom.stored":
        raise Rejected(f"event {event.kind} is not used by the RIS", "AR")
    changes = images.thd_image_stored(conn, event.attrs, message_id=message_id, now=now)
    return changes, thd_plan(conn, rt, changes, now=now)


def thd_stable(conn: Connection, rt: CompiledRis, timeout: float, *, now: float) -> Result:
    """The study-stable sweep; (changes, planned outputs)."""
    changes = images.thd_stable(conn, now, timeout)
    return changes, thd_plan(conn, rt, changes, now=now)


def _success(status: int) -> bool:
    return status == 0 or (status & 0xF000) == 0xB000  # success, or a warning


def thd_mpps(conn: Connection, rt: CompiledRis, step: str, sop_uid: str, attrs: dict, *, now: float) -> Any:
    """Record an MPPS N-CREATE/N-SET and apply the order change it asks for; (MppsResult, changes, plan)."""
    result = getattr(mpps, f"thd_mpps_{step}")(conn, sop_uid, attrs, now=now)  # step: create or set
    changes: list[Change] = []
    if _success(result.status):
        order_id, event = result.order_id, result.event
        if result.unscheduled is not None:
            order_id = orders.thd_create_unscheduled(
                conn, result.unscheduled, source=sop_uid, now=now, accession_prefix=rt.config.accession_prefix
            )
            mpps.thd_link_order(conn, sop_uid, order_id, now=now)
            changes += [Change(order_id, ev, old, new) for ev, old, new in orders.UNSCHEDULED_EVENTS]
            event = None if event == "START" else event  # the new order is IN_PROGRESS already
        if order_id is not None and event:
            old, new = orders.thd_apply(conn, order_id, event, source=sop_uid, now=now)
            changes.append(Change(order_id, event, old, new))
    return result, changes, thd_plan(conn, rt, changes, now=now)


class RisService:
    """The RIS core as an engine service: HL7, events, MPPS and worklist queries over the store."""

    def __init__(self, config: RisConfig, ctx: Any) -> None:
        self.config = config
        self.store = ctx.store
        self.reactor = ctx.reactor
        self.metrics = ctx.metrics
        self.services: dict[str, Any] = ctx.services
        self.rt = compile_ris(config, ctx.jinja_env, ctx.config_dir)
        self.outputs = Outputs(ctx.services, config, ctx.metrics)
        self.now: Callable[[], float] = time.time
        self.running = False
        self._lock = defer.DeferredLock()
        self._sweep_call: Any = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        """Check the output channels exist; report the counts on /metrics; schedule the study-stable sweep."""
        self.running = True
        if self.metrics is not None:
            self.metrics.watch_ris(ScrapeCounts(self.store.read_sync, self.metrics))
        for key in ("status_channel", "report_channel", "charge_channel"):
            name = getattr(self.config, key)
            if name and name not in self.services:
                log.warning("ris.%s names no channel %r: those messages will not be sent", key, name)
        if self.config.study_stable_timeout is not None and self.reactor is not None:
            self._sweep_call = self.reactor.callLater(self.config.sweep_interval, self._sweep_tick)

    def stop(self) -> defer.Deferred:
        """Stop the sweep; fires when the change in progress (if any) is done."""
        self.running = False
        if self.metrics is not None:
            self.metrics.watch_ris(None)
        if self._sweep_call is not None and self._sweep_call.active():
            self._sweep_call.cancel()
        self._sweep_call = None
        return self._lock.run(lambda: defer.succeed(None))

    # -- running changes ------------------------------------------------------
    def _run(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> defer.Deferred:
        """``fn(conn, *args, now=...)`` in one transaction (one at a time), then its planned outputs."""

        def locked() -> defer.Deferred:
            d = self.store.transact(fn, *args, now=self.now(), **kw)

            def committed(value: Any) -> defer.Deferred:
                sent = self.outputs.send(value[-1])
                return sent.addCallback(lambda _: value)

            return d.addCallback(committed)

        return self._lock.run(locked)

    def _result(self, d: defer.Deferred, what: str) -> defer.Deferred:
        def done(value: Result) -> RisResult:
            changes = value[0]
            ids = list(dict.fromkeys(c.order_id for c in changes))
            log.debug("ris %s applied: %d change(s)", what, len(changes))
            return RisResult(True, "AA", "" if changes else "nothing changed", ids)

        def refused(failure: Failure) -> RisResult:
            failure.trap(Rejected, InvalidTransition)
            exc = failure.value
            code = exc.code if isinstance(exc, Rejected) else "AE"
            log.info("ris refused %s (%s)", what, code)  # the reason may name a patient id: DEBUG only
            log.debug("ris refused %s: %s", what, exc.reason)
            return RisResult(False, code, exc.reason)

        return d.addCallbacks(done, refused)

    def handle_hl7(self, text: str, *, message_id: int | None, origin: str = "") -> defer.Deferred:
        """Apply one HL7 message; fires with a :class:`RisResult` (fails only on unexpected errors)."""
        what = f"message {message_id}"
        try:
            msg = HL7Message(text)
            what = f"message {message_id} (MSH-10 {msg.control_id})"
            parsed = hl7in.parse(msg, self.config.defaults.issuer_of_patient_id)
        except HL7Error as exc:
            return self._result(defer.fail(Rejected(f"not an HL7 message: {exc}", "AR")), what)
        except Rejected as exc:
            return self._result(defer.fail(exc), what)
        return self._result(self._run(thd_hl7, self.rt, parsed, message_id=message_id), what)

    def handle_event(self, event: Event, *, message_id: int | None) -> defer.Deferred:
        """Apply one event (``dicom.stored``); fires with a :class:`RisResult`."""
        what = f"event {event.kind} (message {message_id})"
        return self._result(self._run(thd_event, self.rt, event, message_id=message_id), what)

    # -- MPPS and worklist (the DICOM SCP) ---------------------------------
    def _mpps(self, step: str, sop_uid: str, attrs: dict) -> defer.Deferred:
        d = self._run(thd_mpps, self.rt, step, sop_uid, attrs)

        def refused(failure: Failure) -> mpps.MppsResult:
            # The order cannot take the step (e.g. it was canceled): nothing is recorded, the modality
            # gets a processing failure whose Error Comment names the order and its state.
            failure.trap(InvalidTransition, Rejected)
            log.info("ris MPPS %s refused: processing failure, nothing changed", sop_uid)
            log.debug("ris MPPS %s refused: %s", sop_uid, failure.value.reason)
            return mpps.MppsResult(PROCESSING_FAILURE, comment=failure.value.reason)

        return d.addCallbacks(lambda value: value[0], refused)

    def mpps_create(self, sop_uid: str, attrs: dict) -> defer.Deferred:
        """MPPS N-CREATE: ``ris_core.mpps.thd_mpps_create`` and the order change it asks for; its MppsResult."""
        return self._mpps("create", sop_uid, attrs)

    def mpps_set(self, sop_uid: str, attrs: dict) -> defer.Deferred:
        """MPPS N-SET: ``ris_core.mpps.thd_mpps_set`` and the order change it asks for; its MppsResult."""
        return self._mpps("set", sop_uid, attrs)

    def worklist(self, identifier: dict, **options: Any) -> Iterator[dict]:
        """Modality Worklist C-FIND rows (``ris_core.worklist``), read in short pages on the caller's thread.

        The DICOM SCP calls this on its association thread and iterates the result; *options*
        (``case_insensitive_pn``, ``limit``) go to ``ris_core.worklist.paged``.
        """
        options.setdefault("case_insensitive_pn", self.config.case_insensitive_pn)
        return worklist_rows(self.store.read_sync, identifier, **options)

    # -- study-stable sweep --------------------------------------------------
    def sweep(self) -> defer.Deferred:
        """Complete the orders whose studies are stable now; fires with how many were completed."""
        d = self._run(thd_stable, self.rt, self.config.study_stable_timeout or 0.0)
        return d.addCallback(lambda value: len(value[0]))

    def _sweep_tick(self) -> None:
        self._sweep_call = None

        def again(result: Any) -> None:
            if isinstance(result, Failure):
                log.warning("ris study-stable sweep failed: %s", result.getErrorMessage())
            if self.running:
                self._sweep_call = self.reactor.callLater(self.config.sweep_interval, self._sweep_tick)

        self.sweep().addBoth(again)


def build_ris(config: RisConfig, ctx: Any) -> RisService:
    """The RIS core: orders, worklist, MPPS, images, reports (top-level ``ris:``)."""
    return RisService(config, ctx)


def register(registry: Any) -> None:
    """Register the ``ris`` service."""
    registry.add("service", "ris", RisConfig, build_ris)
