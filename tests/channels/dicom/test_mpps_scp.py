"""MPPS N-CREATE / N-SET handlers on an in-process pynetdicom acceptor, driven by a pynetdicom MPPS SCU.

The RIS is a stand-in whose ``mpps_create``/``mpps_set`` return Deferreds, running the real
``ris_core.mpps`` functions on a SQLite store; ``bind(call=...)`` replaces
``blockingCallFromThread`` with a function that takes the Deferred's result (no reactor runs in
pytest). The server is stopped in ``finally``; every DIMSE wait is bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep
from twisted.internet import defer
from twisted.python.failure import Failure

from channels.dicom import mpps as mpps_scp
from engine.store.store import Store
from ris_core import mpps
from tests.channels.dicom.test_qr import Recorder
from tests.engine import conftest as engine_fixtures
from tests.ris.test_mpps import add_order, find_order

clock, sqlite_store = engine_fixtures.clock, engine_fixtures.sqlite_store
NOW = 1_700_000_000.0


class FakeRis:
    """``mpps_create``/``mpps_set`` as the RIS service offers them: Deferreds of the thd functions' results."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.received: list[tuple[str, str, dict[str, Any]]] = []
        self.fail = False

    def mpps_create(self, sop_uid: str, attrs: dict[str, Any]) -> defer.Deferred:
        """Record the step (N-CREATE) in one transaction."""
        self.received.append(("create", sop_uid, attrs))
        if self.fail:
            return defer.fail(RuntimeError("database is gone"))
        return defer.succeed(self.store.transact_sync(mpps.thd_mpps_create, sop_uid, attrs, now=NOW,
                                                      find_order=find_order))  # fmt: skip

    def mpps_set(self, sop_uid: str, attrs: dict[str, Any]) -> defer.Deferred:
        """Apply a modification list (N-SET) in one transaction; the DICOM status only, as an int."""
        self.received.append(("set", sop_uid, attrs))
        return defer.succeed(self.store.transact_sync(mpps.thd_mpps_set, sop_uid, attrs, now=NOW).status)


def call_now(reactor: Any, fn: Any, *args: Any) -> Any:
    """``blockingCallFromThread`` without a reactor: the fired Deferred's result (raising its failure)."""
    result = engine_fixtures.result_of(fn(*args))
    if isinstance(result, Failure):
        result.raiseException()
    return result


@pytest.fixture
def rig(sqlite_store: Store) -> Iterator[SimpleNamespace]:
    """An AE with the MPPS handlers on a free 127.0.0.1 port, and one scheduled order (ACC1); stopped after."""
    order = add_order(sqlite_store)
    ris, metrics = FakeRis(sqlite_store), Recorder()
    ae = AE("RADBRIDGE")
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = 10, 20, 20
    for cx in mpps_scp.contexts():
        ae.add_supported_context(cx.abstract_syntax, cx.transfer_syntax)
    handlers = mpps_scp.bind(ris=ris, reactor=None, channel="mpps", metrics=metrics, call=call_now)
    server = None
    try:
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        yield SimpleNamespace(port=server.server_address[1], ris=ris, metrics=metrics, order=order)
    finally:
        if server is not None:
            server.shutdown()


def associate(rig: SimpleNamespace, responses: list[Dataset] | None = None) -> Any:
    """An MPPS SCU association; the command sets of the responses it receives go to *responses*."""
    ae = AE("MODALITY")
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = 10, 20, 20
    ae.add_requested_context(ModalityPerformedProcedureStep)
    handlers = [(evt.EVT_DIMSE_RECV, lambda event: responses.append(event.message.command_set))] if responses is not None else []  # fmt: skip
    assoc = ae.associate("127.0.0.1", rig.port, ae_title="RADBRIDGE", evt_handlers=handlers)
    assert assoc.is_established
    return assoc


def in_progress(accession: str = "ACC1", status: str = "IN PROGRESS") -> Dataset:
    """An N-CREATE attribute list as a modality sends it."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID = "Müller^Jürgen", "P77"
    ref = Dataset()
    ref.AccessionNumber, ref.StudyInstanceUID, ref.ScheduledProcedureStepID = accession, "1.2.3.4", "SPS1"
    ds.ScheduledStepAttributesSequence = [ref]
    ds.PerformedProcedureStepID, ds.PerformedStationAETitle, ds.Modality = "PPS1", "CT1", "CT"
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20240301", "081500"
    ds.PerformedProcedureStepStatus = status
    ds.PerformedSeriesSequence = []
    return ds


def modification(status: str) -> Dataset:
    """An N-SET modification list setting *status* and the end time."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus, ds.PerformedProcedureStepEndTime = status, "091500"
    return ds


def test_create_then_complete_then_refuse_further_updates(rig: SimpleNamespace, caplog: Any) -> None:
    """N-CREATE and N-SET COMPLETED succeed; a later N-SET gets 0x0110; no PHI is logged."""
    uid = generate_uid()
    caplog.set_level(logging.INFO)
    assoc = associate(rig)
    try:
        status, _ = assoc.send_n_create(in_progress(), ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0000
        status, _ = assoc.send_n_set(modification("COMPLETED"), ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0000
        status, _ = assoc.send_n_set(modification("DISCONTINUED"), ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0110 and "ErrorComment" not in status  # a bare int status carries no comment
    finally:
        assoc.release()
    kind, sop_uid, attrs = rig.ris.received[0]
    assert (kind, sop_uid, attrs["PatientName"], attrs["PerformedProcedureStepStatus"]) == (
        "create", uid, "Müller^Jürgen", "IN PROGRESS"
    )  # fmt: skip
    assert attrs["ScheduledStepAttributesSequence"][0]["AccessionNumber"] == "ACC1"
    assert attrs["PerformedSeriesSequence"] == []
    assert rig.metrics.calls == [("mpps", "N-CREATE", "success"), ("mpps", "N-SET", "success"),
                                 ("mpps", "N-SET", "failure")]  # fmt: skip
    assert "Müller" not in caplog.text and "P77" not in caplog.text and uid in caplog.text


def test_create_without_instance_uid_gets_one_assigned(rig: SimpleNamespace) -> None:
    """An N-CREATE without Affected SOP Instance UID is given one, returned in the response and usable by N-SET."""
    responses: list[Dataset] = []
    assoc = associate(rig, responses)
    try:
        status, _ = assoc.send_n_create(in_progress(), ModalityPerformedProcedureStep)
        assert status.Status == 0x0000
        assigned = responses[-1].AffectedSOPInstanceUID
        assert assigned == rig.ris.received[0][1] and len(assigned) > 10
        status, _ = assoc.send_n_set(modification("IN PROGRESS"), ModalityPerformedProcedureStep, assigned)
        assert status.Status == 0x0000
    finally:
        assoc.release()


def test_refusals_duplicate_status_and_unknown_instance(rig: SimpleNamespace) -> None:
    """Duplicate N-CREATE 0x0111, N-CREATE COMPLETED 0x0106 and N-SET of an unknown instance 0x0112."""
    uid = generate_uid()
    assoc = associate(rig)
    try:
        assert assoc.send_n_create(in_progress(), ModalityPerformedProcedureStep, uid)[0].Status == 0x0000
        dup, _ = assoc.send_n_create(in_progress(), ModalityPerformedProcedureStep, uid)
        assert dup.Status == 0x0111 and dup.ErrorComment
        bad, _ = assoc.send_n_create(in_progress(status="COMPLETED"), ModalityPerformedProcedureStep, generate_uid())
        assert bad.Status == 0x0106 and "IN PROGRESS" in bad.ErrorComment
        unknown, _ = assoc.send_n_set(modification("COMPLETED"), ModalityPerformedProcedureStep, generate_uid())
        assert unknown.Status == 0x0112
    finally:
        assoc.release()


def test_a_failing_ris_is_a_processing_failure(rig: SimpleNamespace) -> None:
    """When the RIS's Deferred fails the N-CREATE is answered 0x0110 and counted as a failure."""
    rig.ris.fail = True
    assoc = associate(rig)
    try:
        status, _ = assoc.send_n_create(in_progress(), ModalityPerformedProcedureStep, generate_uid())
        assert status.Status == 0x0110 and status.ErrorComment == "the RIS could not record the step"
    finally:
        assoc.release()
    assert rig.metrics.calls == [("mpps", "N-CREATE", "failure")]


def test_bind_defaults_to_blocking_call_from_thread() -> None:
    """Without *call* the handlers hand work to the reactor with threads.blockingCallFromThread."""
    from twisted.internet import threads

    bound = mpps_scp.bind(ris=None, reactor="reactor", channel="mpps")
    assert [e for e, _ in bound] == [evt.EVT_N_CREATE, evt.EVT_N_SET]
    assert bound[0][1].__self__.call is threads.blockingCallFromThread
