"""The RIS service: HL7 and events in, generated messages ingested into channels, MPPS bridging, the sweep."""

from __future__ import annotations

import logging
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from twisted.internet.task import Clock

from engine.event import Event
from engine.hl7.message import HL7Message
from engine.metrics import Metrics
from engine.registry import Registry
from engine.store.store import Store
from ris_core import register
from ris_core.config import RisConfig
from ris_core.schema import ris_mpps, ris_orders
from ris_core.service import PROCESSING_FAILURE, RisResult
from tests.ris import messages as m
from tests.ris.conftest import NOW, one, ris_with_outputs, rows, settle


def hl7(service: Any, store: Store, clock: Clock, text: str, mid: int | None = None) -> RisResult:
    """handle_hl7 settled."""
    return settle(service.handle_hl7(text, message_id=mid, origin="test"), store, clock)


def sent(dest: Any) -> list[HL7Message]:
    """What a memory destination received, parsed."""
    return [HL7Message(text) for text in dest.received]


def state(store: Store, accession: str = "ACC100") -> str:
    """The order's state."""
    return one(store, select(ris_orders.c.state).where(ris_orders.c.accession == accession))[0]


@dataclass
class FakeMpps:
    """What ``ris_core.mpps`` functions return."""

    status: int
    order_id: int | None = None
    event: str | None = None
    unscheduled: dict | None = None


def mpps_module(monkeypatch: pytest.MonkeyPatch, create: Any, set_: Any = None) -> types.ModuleType:
    """``ris_core.mpps`` with its thd functions replaced by *create* / *set_*; ``.linked`` records links."""
    from ris_core import mpps

    linked: list[tuple[str, int]] = []
    monkeypatch.setattr(mpps, "thd_mpps_create", create)
    monkeypatch.setattr(mpps, "thd_mpps_set", set_ or create)
    monkeypatch.setattr(
        mpps, "thd_link_order", lambda conn, sop_uid, order_id, *, now: linked.append((sop_uid, order_id))
    )
    return types.SimpleNamespace(linked=linked)


def test_registered_as_service_and_destination() -> None:
    """ris_core.register adds the ``ris`` service (RisConfig) and the ``ris`` destination."""
    registry = Registry()
    register(registry)
    assert registry.get("service", "ris").model is RisConfig
    assert registry.get("destination", "ris").model.model_fields["type"].default == "ris"


def test_config_rejects_unknown_keys_and_long_prefixes() -> None:
    """RisConfig forbids unknown keys, prefixes over 6 characters and bad station AE titles."""
    for bad in ({"nope": 1}, {"accession_prefix": "TOOLONG"}, {"station_aes": {"CT": ["X" * 17]}},
                {"status_message": "ORM_O02"}):  # fmt: skip
        with pytest.raises(ValueError):
            RisConfig(**bad)
    assert RisConfig(study_stable_timeout="30m").study_stable_timeout == 1800


def test_order_status_goes_to_the_placer(sqlite_store: Store, clock: Clock, tmp_path: Path) -> None:
    """A NW is answered AA; the placer's channel gets ORM^O01 ORC-1 SC / ORC-5 SC with accession and Study UID."""
    service, out = ris_with_outputs(sqlite_store, clock, tmp_path)
    result = hl7(service, sqlite_store, clock, m.orm(), 1)
    assert (result.ok, result.code) == (True, "AA") and len(result.order_ids) == 1
    (status,) = sent(out["to-his"])
    assert status.message_type == "ORM^O01" and status["MSH-12"] == "2.3.1"
    assert (status["MSH-3"], status["MSH-5"], status["MSH-6"]) == ("RADBRIDGE", "HIS", "HOSP")
    assert (status["ORC-1"], status["ORC-5"], status["ORC-2"], status["ORC-3"]) == ("SC", "SC", "PL100^HIS",
                                                                                    "ACC100^RADBRIDGE")  # fmt: skip
    assert (status["OBR-18"], status["OBR-20"], status["ZDS-1.1"]) == ("ACC100", "SPS100",
                                                                      "1.2.826.0.1.3680043.8.498.100")  # fmt: skip
    assert (status["PID-3.1"], status["PID-5"]) == ("P100", "DOE^JOHN^Q^JR MD")


def test_generated_ids_go_back_to_the_placer(sqlite_store: Store, clock: Clock, tmp_path: Path) -> None:
    """An order without accession or Study UID gets them generated, and the status message carries them."""
    service, out = ris_with_outputs(sqlite_store, clock, tmp_path)
    hl7(service, sqlite_store, clock, m.orm(accession="", steps=("",), study_uid=None, rp=""))
    order = one(sqlite_store, select(ris_orders))
    (status,) = sent(out["to-his"])
    assert (status["OBR-18"], status["ZDS-1.1"], status["ORC-3.1"]) == (order.accession, order.study_uid,
                                                                       order.accession)  # fmt: skip
    assert status["OBR-20"].startswith("SPS")


def test_omi_status_and_forced_version(sqlite_store: Store, clock: Clock, tmp_path: Path) -> None:
    """An OMI order is answered with OMI^O23 (IPC-1 accession, IPC-3 Study UID); status_message overrides."""
    service, out = ris_with_outputs(sqlite_store, clock, tmp_path)
    hl7(service, sqlite_store, clock, m.omi())
    (status,) = sent(out["to-his"])
    assert status.message_type == "OMI^O23" and status["MSH-12"] == "2.5.1"
    assert (status["IPC-1"], status["IPC-3"], status["IPC[2]-4"], status["ORC-5"]) == (
        "ACC200", "1.2.826.0.1.3680043.8.498.200", "SPS201", "SC",
    )  # fmt: skip
    forced, out2 = ris_with_outputs(sqlite_store, clock, tmp_path, channels=("his2",), status_channel="his2",
                                    status_message="ORM_O01", report_channel=None, charge_channel=None)  # fmt: skip
    hl7(forced, sqlite_store, clock, m.omi("M2", control="XO", start="20240306100000"))
    assert sent(out2["his2"]) == []  # XO keeps the state: no status
    hl7(forced, sqlite_store, clock, m.omi("M3", control="CA"))
    (cancel,) = sent(out2["his2"])
    assert cancel.message_type == "ORM^O01" and cancel["ORC-5"] == "CA"


def test_workflow_outputs(sqlite_store: Store, clock: Clock, tmp_path: Path) -> None:
    """First image → IP; the first report ends the exam (one charge); ORU F and C go out as ORU^R01, P does not."""
    service, out = ris_with_outputs(sqlite_store, clock, tmp_path)
    hl7(service, sqlite_store, clock, m.orm())
    event = Event("dicom.stored", {"AccessionNumber": "ACC100", "StudyInstanceUID": "1.2.3.5"})
    assert settle(service.handle_event(event, message_id=2), sqlite_store, clock).ok
    hl7(service, sqlite_store, clock, m.oru("R1", status="P"))
    hl7(service, sqlite_store, clock, m.oru("R2", status="F", lines=("Final.", "Second line\\F\\with bar")))
    hl7(service, sqlite_store, clock, m.oru("R3", status="C", lines=("Corrected.",)))
    assert [s["ORC-5"] for s in sent(out["to-his"])] == ["SC", "IP"]
    reports = sent(out["to-ehr"])
    assert [(r.message_type, r["OBR-25"], r["OBR-18"]) for r in reports] == [("ORU^R01", "F", "ACC100"),
                                                                             ("ORU^R01", "C", "ACC100")]  # fmt: skip
    assert [reports[0][f"OBX[{i}]-5"] for i in (1, 2)] == ["Final.", "Second line|with bar"]
    assert reports[0]["OBR-32.1.2"] == "RADIOLOGIST"
    # no completion was reported: the exam ends with the first report, and the charge goes out then
    assert [c.message_type for c in sent(out["billing"])] == ["DFT^P03"]


def test_charge_on_completion(sqlite_store: Store, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                              ) -> None:  # fmt: skip
    """MPPS COMPLETED through the service: status CM and one DFT^P03 with the procedure code and accession."""
    service, out = ris_with_outputs(sqlite_store, clock, tmp_path)
    hl7(service, sqlite_store, clock, m.orm())
    oid = one(sqlite_store, select(ris_orders.c.id))[0]
    events = iter(["START", "COMPLETE"])
    mpps_module(monkeypatch, lambda conn, sop, attrs, *, now: FakeMpps(0, oid, next(events)))
    assert settle(service.mpps_create("1.2.3.8", {}), sqlite_store, clock).status == 0
    assert settle(service.mpps_set("1.2.3.8", {}), sqlite_store, clock).status == 0
    assert state(sqlite_store) == "COMPLETED"
    assert [s["ORC-5"] for s in sent(out["to-his"])] == ["SC", "IP", "CM"]
    (charge,) = sent(out["billing"])
    assert (charge["FT1-6"], charge["FT1-7.1"], charge["FT1-2"], charge["OBR-18"], charge["PID-3.1"]) == (
        "CG", "CTHEAD", "ACC100", "ACC100", "P100",
    )  # fmt: skip
    assert charge["FT1-4"] and charge["FT1-25.1"] == "CTHEAD"


def test_mpps_unscheduled_and_refused(sqlite_store: Store, clock: Clock, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """An unscheduled MPPS creates a reconcile order and links the step; an illegal event answers 0x0110, rolled back."""
    service, out = ris_with_outputs(sqlite_store, clock, tmp_path)
    attrs = {"PatientID": "U9", "PatientName": ["ROE^ROB"], "StudyInstanceUID": "1.2.3.44", "Modality": "MR"}
    module = mpps_module(monkeypatch, lambda conn, sop, a, *, now: FakeMpps(0, None, "START", attrs))
    assert settle(service.mpps_create("1.2.3.9", {}), sqlite_store, clock).status == 0
    order = one(sqlite_store, select(ris_orders))
    assert (order.state, order.reconcile, order.study_uid) == ("IN_PROGRESS", 1, "1.2.3.44")
    assert module.linked == [("1.2.3.9", order.id)]
    assert sent(out["to-his"]) == []  # nobody placed it

    def illegal(conn: Any, sop: str, a: dict, *, now: float) -> FakeMpps:
        conn.execute(insert(ris_mpps).values(sop_instance_uid=sop, status="IN PROGRESS", unscheduled=0,
                                             created_at=now, updated_at=now))  # fmt: skip
        return FakeMpps(0, order.id, "CANCEL")

    mpps_module(monkeypatch, illegal)
    assert settle(service.mpps_create("1.2.3.10", {}), sqlite_store, clock).status == PROCESSING_FAILURE
    assert rows(sqlite_store, select(ris_mpps.c.id)) == []  # rolled back
    mpps_module(monkeypatch, lambda conn, sop, a, *, now: FakeMpps(0x0111))
    assert settle(service.mpps_create("1.2.3.11", {}), sqlite_store, clock).status == 0x0111


def test_refusals(sqlite_store: Store, clock: Clock, tmp_path: Path) -> None:
    """Illegal transitions and unknown orders answer AE, unusable messages AR; the reason names the order."""
    service, _ = ris_with_outputs(sqlite_store, clock, tmp_path)
    refused = hl7(service, sqlite_store, clock, m.orm(control="CA"))
    assert (refused.ok, refused.code, refused.reason) == (
        False, "AE", "order ACC100 is unknown (ORC-1 CA needs an existing order)",
    )  # fmt: skip
    assert hl7(service, sqlite_store, clock, m.msh("SIU^S12", "S1", "2.5")).code == "AR"
    assert hl7(service, sqlite_store, clock, "not hl7").code == "AR"
    event = settle(service.handle_event(Event("mpps.done", {}), message_id=None), sqlite_store, clock)
    assert (event.ok, event.code) == (False, "AR")


def test_output_failures_never_undo_the_change(sqlite_store: Store, clock: Clock, tmp_path: Path) -> None:
    """A missing output channel or a failing template is logged and counted; the order is still created."""
    metrics = Metrics()
    service, _ = ris_with_outputs(sqlite_store, clock, tmp_path, channels=(), metrics=metrics)
    assert hl7(service, sqlite_store, clock, m.orm()).ok
    assert state(sqlite_store) == "SCHEDULED"
    assert service.outputs.failed == 1
    assert b'radbridge_messages_errored_total{channel="to-his",stage="ris_output"} 1.0' in metrics.exposition()
    service2, out = ris_with_outputs(sqlite_store, clock, tmp_path, channels=("his2",), status_channel="his2")
    service2.rt.status = service2.rt.worklist.environment.from_string("{{ nothing.here }}")
    assert hl7(service2, sqlite_store, clock, m.orm("O9", accession="ACC900", placer="PL900")).ok
    assert service2.outputs.failed == 1 and out["his2"].received == []


def test_study_stable_sweep_runs_on_the_clock(sqlite_store: Store, clock: Clock, tmp_path: Path) -> None:
    """With study_stable_timeout the sweep runs every sweep_interval and completes stable studies' orders."""
    service, out = ris_with_outputs(sqlite_store, clock, tmp_path, study_stable_timeout=300, sweep_interval=60)
    hl7(service, sqlite_store, clock, m.orm())
    event = Event("dicom.stored", {"AccessionNumber": "ACC100", "StudyInstanceUID": "1.2.3.6"})
    settle(service.handle_event(event, message_id=3), sqlite_store, clock)
    service.now = lambda: NOW + 301
    clock.advance(60)
    settle(service._lock.run(lambda: None), sqlite_store, clock)  # the sweep's change and outputs are done
    assert state(sqlite_store) == "COMPLETED"
    assert [s["ORC-5"] for s in sent(out["to-his"])] == ["SC", "IP", "CM"]
    assert service._sweep_call is not None  # rescheduled
    settle(service.stop(), sqlite_store, clock)
    assert service._sweep_call is None
    assert all("_sweep_tick" not in repr(call) for call in clock.getDelayedCalls())


def test_worklist_reads_the_store_with_the_pn_option(sqlite_store: Store, clock: Clock, tmp_path: Path) -> None:
    """worklist() answers from the stored steps; ris.case_insensitive_pn decides how PatientName matches."""
    for insensitive, expected in ((False, 0), (True, 1)):
        store_dir = tmp_path / str(insensitive)
        store_dir.mkdir()
        service, _ = ris_with_outputs(sqlite_store, clock, store_dir, case_insensitive_pn=insensitive)
        if not insensitive:
            hl7(service, sqlite_store, clock, m.orm())
        (item,) = list(service.worklist({"AccessionNumber": "ACC100", "PatientName": ""}))
        assert str(item["AccessionNumber"]) == "ACC100"
        assert len(list(service.worklist({"PatientName": "doe^*"}))) == expected
        assert list(service.worklist({"AccessionNumber": "ACC100"}, limit=1)) != []


def test_no_phi_in_logs(sqlite_store: Store, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Neither names, patient ids, birth dates nor report text reach the log at INFO or above."""
    caplog.set_level(logging.DEBUG)
    service, _ = ris_with_outputs(sqlite_store, clock, tmp_path, channels=())
    for text in (m.orm(), m.orm("O2", control="CA"), m.adt("A40", "A1", patient="P200", merged="P100"),
                 m.orm("O3", accession="ACC101", placer="PL101"), m.oru("R1")):  # fmt: skip
        hl7(service, sqlite_store, clock, text)
    loud = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    for phi in ("DOE", "JOHN", "P100", "P200", "19700101", "intracranial"):
        assert phi not in loud, phi
    assert "merged into" in " ".join(r.getMessage() for r in caplog.records)  # at DEBUG only
