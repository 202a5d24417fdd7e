"""The ``ris`` destination: RIS refusals are final (AE with the reason in ERR-8), unexpected errors are retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from twisted.internet import defer
from twisted.internet.task import Clock

from engine.components import BuildContext, DeliveryError, DeliveryInfo
from engine.config.models import AckConfig
from engine.event import Event
from engine.hl7.message import HL7Message
from engine.store.schema import ERROR, SENT, deliveries
from engine.store.store import Store
from ris_core.destination import RisDestination, RisDestinationConfig
from ris_core.schema import ris_orders
from ris_core.service import RisResult
from tests.engine.conftest import flush
from tests.engine.test_service import RETRY, make_service
from tests.ris import messages as m
from tests.ris.conftest import ris_with_outputs, rows, settle

INFO = DeliveryInfo(delivery_id=4, message_id=11, attempt=1)


class FakeRis:
    """Answers every call with *answer* (a RisResult, or an exception to fail with)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple] = []

    def _reply(self) -> defer.Deferred:
        return defer.fail(self.answer) if isinstance(self.answer, Exception) else defer.succeed(self.answer)

    def handle_hl7(self, text: str, *, message_id: int | None, origin: str) -> defer.Deferred:
        """Record an HL7 call."""
        self.calls.append(("hl7", text, message_id))
        return self._reply()

    def handle_event(self, event: Event, *, message_id: int | None) -> defer.Deferred:
        """Record an event call."""
        self.calls.append(("event", event.kind, message_id))
        return self._reply()


def destination(ris: Any, tmp_path: Path) -> RisDestination:
    """A ris destination on *ris*."""
    ctx = BuildContext(reactor=None, channel="his", component="ris", config_dir=tmp_path, data_dir=tmp_path, ris=ris)
    return RisDestination(RisDestinationConfig(), ctx)


def outcome(dest: RisDestination, content: str) -> tuple[bool, Any]:
    """The ``done(ok, value)`` a send gives."""
    got: list[tuple[bool, Any]] = []
    dest.send_cb(content, INFO, lambda ok, value: got.append((ok, value)))
    return got[0]


def test_success_and_message_id(tmp_path: Path) -> None:
    """Accepted HL7 is done(True, "AA"); the store message id goes to the RIS; event JSON goes to handle_event."""
    ris = FakeRis(RisResult(True, "AA"))
    dest = destination(ris, tmp_path)
    assert outcome(dest, m.orm()) == (True, "AA")
    assert outcome(dest, Event("dicom.stored", {"StudyInstanceUID": "1.2"}).text) == (True, "AA")
    assert [(c[0], c[2]) for c in ris.calls] == [("hl7", 11), ("event", 11)]


def test_refusal_is_final(tmp_path: Path) -> None:
    """A RIS refusal is a final DeliveryError with the RIS's code and reason."""
    ok, err = outcome(destination(FakeRis(RisResult(False, "AE", "unable to cancel order A1")), tmp_path), m.orm())
    assert not ok and isinstance(err, DeliveryError)
    assert (err.final, err.code, err.reason) == (True, "AE", "unable to cancel order A1")
    ok, err = outcome(destination(FakeRis(RisResult(True, "AA")), tmp_path), '{"not": "an event"}')
    assert not ok and err.final and err.code == "AR"


def test_unexpected_errors_are_retried(tmp_path: Path) -> None:
    """An error inside the RIS (the store down, a bug) is a non-final DeliveryError; no RIS at all likewise."""
    ok, err = outcome(destination(FakeRis(RuntimeError("database is locked")), tmp_path), m.orm())
    assert not ok and not err.final and err.reason == "RIS error: RuntimeError"
    ok, err = outcome(destination(None, tmp_path), m.orm())
    assert not ok and not err.final


def ack_after_delivery(store: Store, clock: Clock, tmp_path: Path) -> Any:
    """A HIS channel with ack after_delivery whose destination is the RIS; (channel, ris service)."""
    ris, _ = ris_with_outputs(store, clock, tmp_path, channels=())
    channel = make_service(store, clock, destination(ris, tmp_path), name="his", flt=None,
                           ack=AckConfig(mode="after_delivery", delivery_timeout=30))  # fmt: skip
    return channel, ris


def send(channel: Any, store: Store, clock: Clock, text: str) -> HL7Message:
    """Ingest *text* into the channel; its ACK once the RIS answered."""
    result = settle(channel.ingest(text.encode(), "test"), store, clock)
    return HL7Message(result.ack.decode())


def test_his_gets_ae_with_the_reason_in_err8(sqlite_store: Store, clock: Clock, tmp_path: Path) -> None:
    """With after_delivery the HIS gets AA for a NW and AE (ERR-8 the RIS's reason) for a refused CA; no retry."""
    channel, _ = ack_after_delivery(sqlite_store, clock, tmp_path)
    assert send(channel, sqlite_store, clock, m.orm())["MSA-1"] == "AA"
    oid = rows(sqlite_store, select(ris_orders.c.id))[0][0]
    from ris_core.orders import thd_apply
    from tests.ris.conftest import NOW

    sqlite_store.transact_sync(thd_apply, oid, "START", source="t", now=NOW)
    ack = send(channel, sqlite_store, clock, m.orm("O2", control="CA"))
    assert (ack["MSA-1"], ack["MSA-2"]) == ("AE", "O2")
    assert ack["ERR-8"] == "unable to cancel order ACC100: it is IN_PROGRESS (the exam has started)"
    flush(sqlite_store, clock)
    d = deliveries.c
    found = [tuple(r) for r in rows(sqlite_store, select(d.status, d.attempts, d.last_error).order_by(d.id))]
    assert found[0][:2] == (SENT, 1)
    assert found[1] == (ERROR, 1, "unable to cancel order ACC100: it is IN_PROGRESS (the exam has started)")


def test_transient_failure_is_retried_then_applied(sqlite_store: Store, clock: Clock, tmp_path: Path) -> None:
    """A delivery failing inside the RIS is retried by the queue and applied once the RIS works again."""
    channel, ris = ack_after_delivery(sqlite_store, clock, tmp_path)
    real = ris.handle_hl7
    failures = iter([RuntimeError("store unavailable")])

    def flaky(text: str, **kw: Any) -> defer.Deferred:
        exc = next(failures, None)
        return defer.fail(exc) if exc is not None else real(text, **kw)

    ris.handle_hl7 = flaky
    d = channel.ingest(m.orm().encode(), "test")
    flush(sqlite_store, clock)
    assert not d.called
    clock.advance(RETRY.delay(1))
    result = settle(d, sqlite_store, clock)
    assert HL7Message(result.ack.decode())["MSA-1"] == "AA"
    assert rows(sqlite_store, select(ris_orders.c.state)) == [("SCHEDULED",)]
    flush(sqlite_store, clock)
    assert rows(sqlite_store, select(deliveries.c.status, deliveries.c.attempts)) == [(SENT, 2)]
