"""Query/Retrieve handlers bound to an in-process pynetdicom acceptor, queried by dcmtk and pynetdicom.

The index is built from real files (pydicom's CT_small.dcm with fresh UIDs) under ``tmp_path``.
findscu, movescu (to a dcmtk storescp started here) and getscu talk to it over 127.0.0.1 with
``TCP_NODELAY=1``; pynetdicom as SCU covers cancel, failure statuses and extended negotiation.
Every process is stopped in ``finally`` and every wait is bounded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from archive.schema import dicom_instances, dicom_patients, dicom_series, dicom_studies
from channels.dicom import qr
from engine.store.store import Store
from tests.engine import conftest as engine_fixtures

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
TIMEOUT = 30
NOW = time.time()
clock, sqlite_store = engine_fixtures.clock, engine_fixtures.sqlite_store  # fixtures of tests/engine/conftest.py
STUDIES = [
    # patient id, name, study date, study time, accession, series → number of instances
    ("QR1", "Doe^John", "20240105", "101200", "ACC1", [2, 1]),
    ("QR1", "Doe^John", "20240106", "090000", "ACC2", [1]),
    ("QR2", "Müller^Jürgen", "20240201", "120000", "ACC3", [2]),
]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, deadline: float = 10.0) -> None:
    """Wait (bounded) until something accepts connections on 127.0.0.1:*port*."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port}")


class Recorder:
    """A metrics stand-in recording ``dimse_request`` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def dimse_request(self, channel: str, service: str, status: str) -> None:
        """Record one answered request."""
        self.calls.append((channel, service, status))


def build_archive(store: Store, root: Path) -> list[dict[str, Any]]:
    """Write the fixture studies as files under *root* and index them; one dict per study."""
    template = dcmread(get_testdata_file("CT_small.dcm"))
    patients: dict[str, int] = {}
    studies = []
    with store.engine.begin() as conn:
        for pid, name, date, tm, acc, series_counts in STUDIES:
            if pid not in patients:
                patients[pid] = conn.execute(
                    dicom_patients.insert().returning(dicom_patients.c.id),
                    {"patient_key": f"{pid}^", "patient_id": pid, "patient_name": name,
                     "patient_name_upper": name.upper(), "created_at": NOW, "updated_at": NOW},
                ).scalar_one()  # fmt: skip
            study_uid = generate_uid()
            study_id = conn.execute(
                dicom_studies.insert().returning(dicom_studies.c.id),
                {"study_uid": study_uid, "patient_ref": patients[pid], "study_date": date,
                 "study_time": tm + ".000000", "accession": acc, "modalities": "CT", "received_at": NOW,
                 "updated_at": NOW},
            ).scalar_one()  # fmt: skip
            study = {"uid": study_uid, "patient": pid, "series": [], "instances": []}
            for number, count in enumerate(series_counts, 1):
                series_uid = generate_uid()
                series_id = conn.execute(
                    dicom_series.insert().returning(dicom_series.c.id),
                    {"series_uid": series_uid, "study_ref": study_id, "modality": "CT", "series_number": number,
                     "received_at": NOW, "updated_at": NOW},
                ).scalar_one()  # fmt: skip
                study["series"].append(series_uid)
                for n in range(1, count + 1):
                    ds = template.copy()
                    ds.PatientID, ds.PatientName, ds.StudyDate, ds.StudyTime = pid, name, date, tm
                    ds.SpecificCharacterSet = "ISO_IR 192"
                    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
                    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                    ds.InstanceNumber = n
                    rel = f"{study_uid}/{series_uid}/{ds.SOPInstanceUID}.dcm"
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    ds.save_as(root / rel, enforce_file_format=True)
                    conn.execute(
                        dicom_instances.insert(),
                        {"sop_uid": ds.SOPInstanceUID, "series_ref": series_id, "study_uid": study_uid,
                         "sop_class_uid": ds.SOPClassUID, "instance_number": n,
                         "transfer_syntax": ds.file_meta.TransferSyntaxUID, "path": rel,
                         "size": (root / rel).stat().st_size, "sha256": "0" * 64, "received_at": NOW},
                    )  # fmt: skip
                    study["instances"].append(ds.SOPInstanceUID)
            studies.append(study)
    return studies


class Rig(SimpleNamespace):
    """The running acceptor: port, store, archive root, studies, metrics, move destination."""


@pytest.fixture
def rig(sqlite_store: Store, tmp_path: Path) -> Iterator[Rig]:
    """An AE serving the handlers on a free port, a storescp as move destination ``DEST``; both stopped after."""
    root = tmp_path / "archive"
    studies = build_archive(sqlite_store, root)
    dest_dir, dest_port = tmp_path / "dest", free_port()
    dest_dir.mkdir()
    metrics = Recorder()
    ae = AE("RADBRIDGE")
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = 10, 20, 20
    qr.add_contexts(ae)
    handlers = qr.bind_handlers(
        store=sqlite_store,
        archive_root=root,
        channel="qr",
        destinations={"DEST": ("127.0.0.1", dest_port)},
        metrics=metrics,
    )
    storescp = subprocess.Popen(
        ["storescp", "-aet", "DEST", "-od", str(dest_dir), str(dest_port)],
        env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = None
    try:
        server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        wait_listening(dest_port)
        yield Rig(port=server.server_address[1], store=sqlite_store, root=root, studies=studies, metrics=metrics,
                  dest_dir=dest_dir, dest_port=dest_port, tmp=tmp_path)  # fmt: skip
    finally:
        if server is not None:
            server.shutdown()
        storescp.terminate()
        try:
            storescp.wait(timeout=5)
        except subprocess.TimeoutExpired:
            storescp.kill()
            storescp.wait(timeout=5)


def dcmtk(rig: Rig, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk SCU against the rig (calling ``TESTSCU``, called ``RADBRIDGE``), bounded."""
    cmd = [tool, "-aet", "TESTSCU", "-aec", "RADBRIDGE", *args, "127.0.0.1", str(rig.port)]
    return subprocess.run(cmd, env=DCMTK_ENV, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def findscu(rig: Rig, model: str, *keys: str) -> list[Dataset]:
    """Responses of a findscu query (``-P``/``-S``) extracted with ``-X``, in order."""
    out = rig.tmp / f"find-{time.monotonic_ns()}"
    out.mkdir()
    result = dcmtk(rig, "findscu", model, "-X", "-od", str(out), *[a for k in keys for a in ("-k", k)])
    assert result.returncode == 0, result.stderr
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def scu(*contexts: str) -> AE:
    """A pynetdicom SCU proposing *contexts*."""
    ae = AE("PYSCU")
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = 10, 20, 20
    for uid in contexts:
        ae.add_requested_context(uid)
    return ae


def associate(rig: Rig, ae: AE, **kwargs: Any) -> Any:
    """An established association with the rig (fails the test otherwise)."""
    assoc = ae.associate("127.0.0.1", rig.port, ae_title="RADBRIDGE", **kwargs)
    assert assoc.is_established
    return assoc


def test_findscu_study_root_returns_matches_with_computed_keys(rig: Rig) -> None:
    """findscu -S at STUDY level: case-insensitive name wild card, counts and modalities computed."""
    found = findscu(rig, "-S", "QueryRetrieveLevel=STUDY", "PatientName=doe*", "StudyInstanceUID", "AccessionNumber",
                    "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "NumberOfStudyRelatedSeries")  # fmt: skip
    assert [ds.AccessionNumber for ds in found] == ["ACC1", "ACC2"]
    assert [ds.StudyInstanceUID for ds in found] == [s["uid"] for s in rig.studies[:2]]
    assert [(ds.NumberOfStudyRelatedSeries, ds.NumberOfStudyRelatedInstances) for ds in found] == [(2, 3), (1, 1)]
    assert found[0].ModalitiesInStudy == "CT" and found[0].QueryRetrieveLevel == "STUDY"
    assert ("qr", "C-FIND", "success") in rig.metrics.calls


def test_findscu_patient_root_and_non_ascii_names(rig: Rig) -> None:
    """findscu -P at PATIENT level; a non-ASCII name comes back in ISO_IR 192."""
    found = findscu(
        rig, "-P", "QueryRetrieveLevel=PATIENT", "PatientID", "PatientName", "NumberOfPatientRelatedStudies"
    )
    assert [(str(ds.PatientName), ds.NumberOfPatientRelatedStudies) for ds in found] == [
        ("Doe^John", 2),
        ("Müller^Jürgen", 1),
    ]
    assert found[1].SpecificCharacterSet == "ISO_IR 192"
    series = findscu(rig, "-P", "QueryRetrieveLevel=SERIES", "PatientID=QR1", f"StudyInstanceUID={rig.studies[0]['uid']}",
                     "SeriesInstanceUID", "NumberOfSeriesRelatedInstances")  # fmt: skip
    assert [ds.NumberOfSeriesRelatedInstances for ds in series] == [2, 1]
    assert {ds.PatientID for ds in series} == {"QR1"}


def test_findscu_image_level_and_refused_identifier(rig: Rig) -> None:
    """IMAGE level lists the SOP instances; a SERIES query without StudyInstanceUID is refused with 0xA900."""
    study = rig.studies[0]
    images = findscu(rig, "-S", "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study['uid']}",
                     f"SeriesInstanceUID={study['series'][0]}", "SOPInstanceUID", "InstanceNumber")  # fmt: skip
    assert [ds.SOPInstanceUID for ds in images] == study["instances"][:2]
    result = dcmtk(rig, "findscu", "-v", "-S", "-k", "QueryRetrieveLevel=SERIES", "-k", "Modality=CT")
    output = result.stdout + result.stderr
    assert "Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in output, output  # dcmtk's name for 0xA900
    assert ("qr", "C-FIND", "failure") in rig.metrics.calls


# Matches for the cancel tests: enough that answering all of them takes far longer than a C-CANCEL
# takes to arrive (800 were answered in full before the cancel on a fast machine once).
MANY = 20_000


def test_findscu_cancel_after_first_response(rig: Rig) -> None:
    """findscu --cancel 1 over many matches gets a Cancel status before all matches were sent."""
    with rig.store.engine.begin() as conn:
        conn.execute(dicom_patients.insert(), [{"patient_key": f"X{n}^", "patient_id": f"X{n}", "created_at": NOW,
                                                "updated_at": NOW} for n in range(MANY)])  # fmt: skip
    out = rig.tmp / "cancel"
    out.mkdir()
    result = dcmtk(rig, "findscu", "-P", "--cancel", "1", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=PATIENT",
                   "-k", "PatientID")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("rsp*.dcm"))) < MANY
    deadline = time.monotonic() + 10
    while ("qr", "C-FIND", "failure") not in rig.metrics.calls and time.monotonic() < deadline:
        time.sleep(0.05)  # the handler records the cancel after its last yield
    assert ("qr", "C-FIND", "failure") in rig.metrics.calls


def test_movescu_sends_the_study_to_storescp(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """movescu to DEST: every instance of the study arrives at storescp, over a TCP_NODELAY sub-association."""
    nodelay: list[int] = []

    def spy(sock: Any) -> None:
        """Set TCP_NODELAY as the handler does and record whether the socket has it."""
        real_set_nodelay(sock)
        nodelay.append(sock.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    real_set_nodelay = qr.set_nodelay
    monkeypatch.setattr(qr, "set_nodelay", spy)
    study = rig.studies[0]
    result = dcmtk(rig, "movescu", "-S", "-aem", "DEST", "-k", "QueryRetrieveLevel=STUDY",
                   "-k", f"StudyInstanceUID={study['uid']}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    arrived = {dcmread(p).SOPInstanceUID for p in rig.dest_dir.iterdir()}
    assert arrived == set(study["instances"])
    assert nodelay and all(nodelay)
    assert ("qr", "C-MOVE", "success") in rig.metrics.calls


def test_getscu_retrieves_a_series(rig: Rig) -> None:
    """getscu at SERIES level receives the series' instances over its own association."""
    study = rig.studies[2]
    out = rig.tmp / "got"
    out.mkdir()
    result = dcmtk(rig, "getscu", "-S", "-od", str(out), "-k", "QueryRetrieveLevel=SERIES",
                   "-k", f"StudyInstanceUID={study['uid']}", "-k", f"SeriesInstanceUID={study['series'][0]}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = [dcmread(p) for p in out.iterdir()]
    assert {ds.SOPInstanceUID for ds in got} == set(study["instances"])
    assert str(got[0].PatientName) == "Müller^Jürgen"
    assert ("qr", "C-GET", "success") in rig.metrics.calls


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_pynetdicom_find_failure_statuses_carry_an_error_comment(rig: Rig) -> None:
    """Refused identifiers answer 0xA900 (level, unique key) or 0xC000 (bad date) with a comment."""
    assoc = associate(
        rig, scu(StudyRootQueryRetrieveInformationModelFind, PatientRootQueryRetrieveInformationModelFind)
    )
    try:
        cases = [
            (StudyRootQueryRetrieveInformationModelFind, {"QueryRetrieveLevel": "PATIENT"}, 0xA900),
            (StudyRootQueryRetrieveInformationModelFind, {"QueryRetrieveLevel": "SERIES", "Modality": "CT"}, 0xA900),
            (PatientRootQueryRetrieveInformationModelFind, {"QueryRetrieveLevel": "STUDY", "StudyDate": ""}, 0xA900),
            (
                StudyRootQueryRetrieveInformationModelFind,
                {"QueryRetrieveLevel": "STUDY", "StudyDate": "2024-xx"},
                0xC000,
            ),
        ]
        for model, keys, expected in cases:
            ds = Dataset()
            for keyword, value in keys.items():
                setattr(ds, keyword, value)
            responses = list(assoc.send_c_find(ds, model))
            assert len(responses) == 1, keys
            status, identifier = responses[0]
            assert status.Status == expected and identifier is None
            assert status.ErrorComment
        ok = Dataset()
        ok.QueryRetrieveLevel, ok.StudyInstanceUID = "STUDY", ""
        assert [s.Status for s, _ in assoc.send_c_find(ok, StudyRootQueryRetrieveInformationModelFind)] == [
            0xFF00,
            0xFF00,
            0xFF00,
            0x0000,
        ]
    finally:
        assoc.release()


def test_pynetdicom_cancel_stops_find(rig: Rig) -> None:
    """A C-CANCEL after the first pending response ends the C-FIND with 0xFE00."""
    with rig.store.engine.begin() as conn:
        conn.execute(dicom_patients.insert(), [{"patient_key": f"Y{n}^", "patient_id": f"Y{n}", "created_at": NOW,
                                                "updated_at": NOW} for n in range(MANY)])  # fmt: skip
    assoc = associate(rig, scu(PatientRootQueryRetrieveInformationModelFind))
    try:
        ds = Dataset()
        ds.QueryRetrieveLevel, ds.PatientID = "PATIENT", ""
        statuses = []
        for status, _ in assoc.send_c_find(ds, PatientRootQueryRetrieveInformationModelFind, msg_id=7):
            statuses.append(status.Status)
            if len(statuses) == 1:
                assoc.send_c_cancel(7, query_model=PatientRootQueryRetrieveInformationModelFind)
        assert statuses[-1] == 0xFE00
        assert len(statuses) < MANY
    finally:
        assoc.release()


def test_combined_datetime_follows_extended_negotiation(rig: Rig) -> None:
    """Date and time ranges combine into one interval only when the SCU negotiated it (PS3.4 C.2.2.2.5.4)."""
    ds = Dataset()
    ds.QueryRetrieveLevel, ds.StudyDate, ds.StudyTime, ds.AccessionNumber = (
        "STUDY",
        "20240105-20240106",
        "1000-1800",
        "",
    )
    item = SOPClassExtendedNegotiation()
    item.sop_class_uid = StudyRootQueryRetrieveInformationModelFind
    item.service_class_application_information = b"\x00\x01"
    for ext_neg, expected in (([item], ["ACC1", "ACC2"]), ([], ["ACC1"])):
        assoc = associate(rig, scu(StudyRootQueryRetrieveInformationModelFind), ext_neg=ext_neg)
        try:
            found = [
                i.AccessionNumber for s, i in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind) if i
            ]
            assert found == expected
            if ext_neg:
                accepted = assoc.acceptor.sop_class_extended[StudyRootQueryRetrieveInformationModelFind]
                assert accepted[1] == 1 and accepted[0] == 0
        finally:
            assoc.release()


def test_pynetdicom_move_statuses(rig: Rig) -> None:
    """C-MOVE: unknown destination 0xA801, refused identifier 0xA900, nothing matched Success."""
    assoc = associate(rig, scu(StudyRootQueryRetrieveInformationModelMove))
    try:
        ds = Dataset()
        ds.QueryRetrieveLevel, ds.StudyInstanceUID = "STUDY", rig.studies[0]["uid"]
        model = StudyRootQueryRetrieveInformationModelMove
        assert [s.Status for s, _ in assoc.send_c_move(ds, "NOWHERE", model)] == [0xA801]
        bad = Dataset()
        bad.QueryRetrieveLevel, bad.SeriesInstanceUID = "SERIES", rig.studies[0]["series"][0]
        (status, _), *_ = list(assoc.send_c_move(bad, "DEST", model))
        assert status.Status == 0xA900 and "StudyInstanceUID" in status.ErrorComment
        none = Dataset()
        none.QueryRetrieveLevel, none.StudyInstanceUID = "STUDY", "1.2.3.4.5"
        assert [s.Status for s, _ in assoc.send_c_move(none, "DEST", model)] == [0x0000]
    finally:
        assoc.release()
    assert ("qr", "C-MOVE", "failure") in rig.metrics.calls


def test_pynetdicom_get_counts_a_missing_file_as_a_failed_suboperation(rig: Rig) -> None:
    """C-GET of a study with one file gone: the others arrive, the final status is 0xB000 with 1 failure."""
    study = rig.studies[0]
    missing = next(rig.root.rglob(f"{study['instances'][1]}.dcm"))
    missing.unlink()
    received: list[str] = []

    def on_store(event: Any) -> int:
        """Accept each C-GET sub-operation, noting its SOP instance."""
        received.append(event.request.AffectedSOPInstanceUID)
        return 0x0000

    ae = scu(StudyRootQueryRetrieveInformationModelGet, CTImageStorage)
    assoc = associate(rig, ae, ext_neg=[build_role(CTImageStorage, scp_role=True)],
                      evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
    try:
        ds = Dataset()
        ds.QueryRetrieveLevel, ds.StudyInstanceUID = "STUDY", study["uid"]
        responses = list(assoc.send_c_get(ds, StudyRootQueryRetrieveInformationModelGet))
        final, identifier = responses[-1]
        assert final.Status == 0xB000
        assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
        assert identifier.FailedSOPInstanceUIDList == study["instances"][1]
        assert sorted(received) == sorted(u for u in study["instances"] if u != study["instances"][1])
    finally:
        assoc.release()
    assert ("qr", "C-GET", "warning") in rig.metrics.calls


class FakeEvent(SimpleNamespace):
    """Just enough of a pynetdicom Event for calling a handler directly."""


def test_handler_never_raises_on_a_database_failure() -> None:
    """A failing read becomes 0xC001 with a comment, counted as a failure; nothing escapes the handler."""

    class Broken:
        """A store whose every read fails."""

        def read_sync(self, fn: Any, *args: Any, **kw: Any) -> Any:
            """Fail like a lost database connection."""
            raise RuntimeError("database is gone")

    identifier = Dataset()
    identifier.QueryRetrieveLevel, identifier.PatientName = "STUDY", "DOE*"
    event = FakeEvent(
        identifier=identifier,
        context=SimpleNamespace(abstract_syntax=StudyRootQueryRetrieveInformationModelFind),
        assoc=SimpleNamespace(acceptor=SimpleNamespace(sop_class_extended={})),
        is_cancelled=False,
    )
    metrics = Recorder()
    out = list(qr.handle_find(event, store=Broken(), channel="c", metrics=metrics))
    assert len(out) == 1 and out[0][0].Status == qr.INTERNAL_ERROR and out[0][1] is None
    assert metrics.calls == [("c", "C-FIND", "failure")]
    event.context = SimpleNamespace(abstract_syntax=StudyRootQueryRetrieveInformationModelGet)
    get = list(qr.handle_get(event, store=Broken(), archive_root="/nonexistent", channel="c", metrics=metrics))
    assert get[0] == 1 and get[1][0].Status == qr.INTERNAL_ERROR and get[1][1] is None
    assert metrics.calls[-1] == ("c", "C-GET", "failure")


def test_an_abandoned_find_is_counted_as_a_failure(sqlite_store: Store, tmp_path: Path) -> None:
    """When the association ends mid-response the handler, closed by pynetdicom, counts a failure once."""
    build_archive(sqlite_store, tmp_path)
    identifier = Dataset()
    identifier.QueryRetrieveLevel, identifier.StudyInstanceUID = "STUDY", ""
    event = FakeEvent(
        identifier=identifier,
        context=SimpleNamespace(abstract_syntax=StudyRootQueryRetrieveInformationModelFind),
        assoc=SimpleNamespace(acceptor=SimpleNamespace(sop_class_extended={})),
        is_cancelled=False,
    )
    metrics = Recorder()
    responses = qr.handle_find(event, store=sqlite_store, channel="c", metrics=metrics)
    status, first = next(responses)
    assert status == 0xFF00 and first.QueryRetrieveLevel == "STUDY"
    responses.close()
    assert metrics.calls == [("c", "C-FIND", "failure")]
    done = list(qr.handle_find(event, store=sqlite_store, channel="c", metrics=metrics))
    assert [s for s, _ in done] == [0xFF00] * 3 and metrics.calls[-1] == ("c", "C-FIND", "success")


def test_to_identifier_and_to_dataset_round_trip() -> None:
    """Datasets become keyword mappings (lists for multiple values, item lists for sequences) and back."""
    ds = Dataset()
    ds.QueryRetrieveLevel, ds.ModalitiesInStudy, ds.PatientName = "STUDY", ["CT", "MR"], "Doe^John"
    item = Dataset()
    item.CodeValue = ""
    ds.ProcedureCodeSequence = [item]
    assert qr.to_identifier(ds) == {
        "QueryRetrieveLevel": "STUDY",
        "ModalitiesInStudy": ["CT", "MR"],
        "PatientName": "Doe^John",
        "ProcedureCodeSequence": [{"CodeValue": ""}],
    }
    back = qr.to_dataset({"ModalitiesInStudy": ["CT", "MR"], "NumberOfStudyRelatedInstances": 3, "StudyTime": None,
                          "ProcedureCodeSequence": [{"CodeValue": "X"}]})  # fmt: skip
    assert back.ModalitiesInStudy == ["CT", "MR"] and back.NumberOfStudyRelatedInstances == 3
    assert back["StudyTime"].is_empty and back.ProcedureCodeSequence[0].CodeValue == "X"


def test_store_contexts_one_per_stored_pair() -> None:
    """Sub-association contexts: one per (SOP class, transfer syntax), uncompressed ones with the other LE."""
    located = [
        qr.Located("a", CTImageStorage, "1", "1.2.840.10008.1.2.1"),
        qr.Located("b", CTImageStorage, "2", "1.2.840.10008.1.2.1"),
        qr.Located("c", CTImageStorage, "3", "1.2.840.10008.1.2.4.70"),
    ]
    contexts = qr.store_contexts(located)
    assert [(cx.abstract_syntax, cx.transfer_syntax) for cx in contexts] == [
        (CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]),
        (CTImageStorage, ["1.2.840.10008.1.2.4.70"]),
    ]
    many = [qr.Located("x", f"1.2.3.{n}", str(n), "1.2.840.10008.1.2") for n in range(200)]
    assert len(qr.store_contexts(many)) == qr.MAX_CONTEXTS


def test_extended_negotiation_accepts_only_combined_datetime() -> None:
    """Relational queries, fuzzy PN and timezone adjustment are declined; combined date-time is accepted."""
    reply = qr.sop_extended_response(
        {StudyRootQueryRetrieveInformationModelFind: b"\x01\x01\x01\x01", "1.2.3": b"\x01"}
    )
    assert reply == {StudyRootQueryRetrieveInformationModelFind: b"\x00\x01\x00\x00"}


def test_tally_final_status() -> None:
    """Success when all sub-operations succeed, 0xB000 with some failures, 0xA702 when all failed."""
    ok, bad = Dataset(), Dataset()
    ok.Status, bad.Status = 0x0000, 0xA700
    tally = qr.Tally()
    tally.done = True
    assert tally.status() == 0x0000
    tally.add(ok)
    tally.add(bad)
    assert tally.status() == 0xB000
    failed = qr.Tally()
    failed.add(None)
    assert failed.status() is None  # not finished: the association ended first
    failed.done = True
    assert failed.status() == 0xA702
    failed.final = 0xFE00
    assert failed.status() == 0xFE00
