"""RIS views (orders with state history, worklist, unmatched studies) and archive views (studies, verify)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.admin.conftest import ORM, Env, audit_rows, make_env

EXTRA = """\
  - name: to-ris
    source: {type: memory}
    ack: {mode: after_delivery}
    destinations: [{name: ris, type: ris}]
  - name: to-his
    source: {type: memory}
    destinations: [{name: out, type: memory}]
  - name: to-ehr
    source: {type: memory}
    destinations: [{name: out, type: memory}]
ris:
  status_channel: to-his
  report_channel: to-ehr
  station_aes: {CT: [CT1]}
archive: {fsync: false}
"""


@pytest.fixture
def ris_env(tmp_path: Path) -> Iterator[Env]:
    """The admin test App plus a RIS fed by channel to-ris, and the archive."""
    yield from make_env(tmp_path, EXTRA)


def _order(env: Env) -> None:
    env.inject("to-ris", ORM.format(cid="O1", pid="PAT1", acc="ACC100"))


def test_orders_list_without_names_and_detail_with_history(ris_env: Env) -> None:
    """Orders list ids and states (patient ids only for operators); one order shows its history, audited."""
    _order(ris_env)
    get = ris_env.client.get
    (row,) = get("/api/ris/orders", token=ris_env.tokens["viewer"]).json()
    assert row["accession"] == "ACC100" and "patient_id" not in row
    assert get("/api/ris/orders", token=ris_env.tokens["operator"]).json()[0]["patient_id"] == "PAT1"
    assert get("/api/ris/orders?patient_id=PAT1", token=ris_env.tokens["viewer"]).status == 403
    detail = get("/api/ris/orders/ACC100", token=ris_env.tokens["operator"]).json()
    assert detail["patient"]["name"].startswith("DOE") and detail["state"] == row["state"]
    assert detail["history"] and detail["history"][-1]["to_state"] == detail["state"]
    assert audit_rows(ris_env, action="ris.order.view")[0]["target"] == "order/ACC100"
    assert get("/api/ris/orders/NOPE", token=ris_env.tokens["operator"]).status == 404


def test_worklist_and_unmatched(ris_env: Env) -> None:
    """The worklist lists the scheduled step (patient id for operators only); no study is unmatched yet."""
    _order(ris_env)
    get = ris_env.client.get
    (step,) = get("/api/ris/worklist", token=ris_env.tokens["viewer"]).json()
    assert step["accession"] == "ACC100" and "patient_id" not in step
    assert get("/api/ris/worklist", token=ris_env.tokens["operator"]).json()[0]["patient_id"] == "PAT1"
    assert get("/api/ris/worklist?date=tomorrow", token=ris_env.tokens["viewer"]).status == 400
    assert get("/api/ris/unmatched", token=ris_env.tokens["viewer"]).json() == []


def test_archive_studies_and_verify(ris_env: Env) -> None:
    """An empty archive lists no study and verifies clean; a viewer cannot search studies by patient id."""
    get = ris_env.client.get
    assert get("/api/archive/studies?accession=ACC100", token=ris_env.tokens["operator"]).json() == []
    assert get("/api/archive/studies?patient_id=P", token=ris_env.tokens["viewer"]).status == 403
    resp = ris_env.client.post("/api/archive/verify", {"orphans": True}, token=ris_env.tokens["operator"])
    assert resp.status == 200 and resp.json()["ok"] is True and resp.json()["instances"] == 0
    assert ris_env.client.post("/api/archive/verify", {"orphans": 1}, token=ris_env.tokens["operator"]).status == 400


def _store_instance(env: Env) -> dict[str, str]:
    """Archive pydicom's CT_small (fresh accession) the way the DICOM SCP does: receive, then index with its event."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from engine.event import Event
    from tests.engine.conftest import flush

    src = get_testdata_file("CT_small.dcm")
    ds = dcmread(src)
    ds.AccessionNumber, ds.PatientID = "ACC777", "PAT7"
    temp = env.app.archive.incoming / "upload.dcm"
    ds.save_as(temp)
    stored = env.app.archive.receive(temp, sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID,
                                     transfer_syntax=ds.file_meta.TransferSyntaxUID, calling_ae="CT1", channel="to-ris")  # fmt: skip
    service = env.app.services["to-ris"]
    d = service.ingest_event(Event("dicom.stored", stored.attrs, env.app.archive.event_payload(stored)), "test",
                             extra_op=env.app.archive.index_op(stored), skip_reason="stored only")  # fmt: skip
    done: list = []
    d.addBoth(done.append)
    for _ in range(20):
        if done:
            break
        flush(env.app.store, env.clock)
    assert done and not hasattr(done[0], "raiseException"), done
    return {"study_uid": str(ds.StudyInstanceUID), "patient_name": str(ds.PatientName)}


def test_archive_studies_lists_a_stored_study(ris_env: Env) -> None:
    """A study in the archive is found by accession and patient id (operator); a viewer sees it without PHI."""
    info = _store_instance(ris_env)
    get = ris_env.client.get
    (study,) = get("/api/archive/studies?accession=ACC777", token=ris_env.tokens["operator"]).json()
    assert study["StudyInstanceUID"] == info["study_uid"] and study["PatientID"] == "PAT7"
    assert get("/api/archive/studies?patient_id=PAT7", token=ris_env.tokens["operator"]).json()[0][
        "AccessionNumber"] == "ACC777"  # fmt: skip
    assert get("/api/archive/studies?accession=OTHER", token=ris_env.tokens["operator"]).json() == []
    (seen,) = get("/api/archive/studies", token=ris_env.tokens["viewer"]).json()
    assert seen["StudyInstanceUID"] == info["study_uid"]
    assert "PatientID" not in seen and "PatientName" not in seen and info["patient_name"] not in str(seen)
    assert audit_rows(ris_env, action="archive.studies")
    body = ris_env.client.post("/api/archive/verify", token=ris_env.tokens["operator"]).json()
    assert body["ok"] is True and body["instances"] == 1


def test_archive_verify_reports_a_missing_file(ris_env: Env) -> None:
    """A file the index names but the disk lost makes verify answer ok=false with one missing problem."""
    from sqlalchemy import text

    with ris_env.app.store.engine.begin() as conn:
        conn.execute(text("INSERT INTO hl7_archive (message_id, channel, path, size, sha256, archived_at) "
                          "VALUES (1, 'his', 'hl7/his/x/1.hl7', 3, :h, 0)"), {"h": "0" * 64})  # fmt: skip
    body = ris_env.client.post("/api/archive/verify", token=ris_env.tokens["operator"]).json()
    assert body["ok"] is False and body["missing"] == 1


def test_without_a_ris_or_archive_the_views_are_404(env: Env) -> None:
    """An App holding no RIS (or no archive) answers 404 on those views."""
    env.app.ris = env.app.archive = None
    assert env.client.get("/api/archive/studies", token=env.tokens["viewer"]).status == 404
    assert env.client.get("/api/ris/orders", token=env.tokens["viewer"]).status == 404
