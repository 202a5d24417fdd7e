"""IHE Scheduled Workflow end to end against ``radbridge run``, with real clients only.

python-hl7's ``mllp_send`` registers the patient and places the order; dcmtk ``findscu -W`` finds the
worklist item; pynetdicom reports MPPS in progress and completed; dcmtk ``storescu`` sends the study; an
ORU^R01 final comes from dictation; a downstream MLLP receiver gets the order status updates and the
final report; the archive holds the study under the patient, and an ADT^A40 merge moves it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from tests.integration.dicom import dcmtk, make_study
from tests.integration.helpers import (
    MLLP_SEND,
    DownstreamReceiver,
    EngineProcess,
    free_port,
    parse_mllp_send_output,
    run_cli,
    segments,
    wait_until,
    write_config,
    write_mllp_file,
)

pytestmark = pytest.mark.integration

TODAY = datetime.now().strftime("%Y%m%d")
NOW = datetime.now().strftime("%Y%m%d%H%M%S")


def msh(control_id: str, kind: str, version: str = "2.3.1") -> str:
    """An MSH segment from the HIS."""
    return f"MSH|^~\\&|HIS|HOSP|RIS|RAD|{NOW}||{kind}|{control_id}|P|{version}"


def adt(control_id: str, event: str, patient: str, name: str, merged: str | None = None) -> str:
    """ADT^A04/A08/A40 for one patient (A40: PID is the survivor, MRG-1 the merged id)."""
    segs = [msh(control_id, f"ADT^{event}"), f"EVN|{event}|{NOW}", f"PID|1||{patient}^^^HOSP^MR||{name}||19700101|M"]
    if merged:
        segs.append(f"MRG|{merged}^^^HOSP^MR")
    segs.append("PV1|1|O|RAD^^^HOSP")
    return "\r".join(segs)


def orm(control_id: str, patient: str, accession: str) -> str:
    """ORM^O01 NW (v2.3.1) for a CT, scheduled today at 10:00, with the accession in OBR-18."""
    return "\r".join(
        [
            msh(control_id, "ORM^O01"),
            f"PID|1||{patient}^^^HOSP^MR||DOE^JOHN||19700101|M",
            "PV1|1|O|RAD^^^HOSP||||1234^WELBY^MARCUS",
            f"ORC|NW|PL{accession}^HIS||||||^^^{TODAY}100000^^R||{NOW}|||1234^WELBY^MARCUS",
            f"OBR|1|PL{accession}^HIS||CTHEAD^CT HEAD WITHOUT CONTRAST^L|||{NOW}|||||||||1234^WELBY^MARCUS||"
            f"{accession}|RP{accession}|SPS{accession}||||CT|||^^^{TODAY}100000^^R",
        ]
    )


def oru(control_id: str, patient: str, accession: str, status: str = "F") -> str:
    """ORU^R01 report for the accession (OBR-25 status)."""
    return "\r".join(
        [
            msh(control_id, "ORU^R01", "2.5"),
            f"PID|1||{patient}^^^HOSP^MR||DOE^JOHN||19700101|M",
            f"OBR|1|PL{accession}^HIS||CTHEAD^CT HEAD WITHOUT CONTRAST^L|||{NOW}|||||||||||{accession}||||{NOW}|||{status}",
            f"OBX|1|TX|IMP^Impression||No acute intracranial abnormality.||||||{status}",
        ]
    )


def send_hl7(tmp: Path, port: int, *messages: str) -> list[tuple[str, str]]:
    """Send *messages* with python-hl7's ``mllp_send``; (MSA-1, MSA-2) of each ACK."""
    path = write_mllp_file(tmp / f"batch-{port}-{len(list(tmp.glob('batch-*')))}.mllp", messages)
    done = subprocess.run([MLLP_SEND, "-p", str(port), "-f", str(path), "127.0.0.1"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return parse_mllp_send_output(done.stdout)


def mpps(port: int, sop_uid: str, status: str, accession: str, study_uid: str, *, create: bool) -> int:
    """An MPPS N-CREATE (IN PROGRESS) or N-SET (COMPLETED) from pynetdicom; the status value."""
    ae = AE("CT1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADBRIDGE")
    assert assoc.is_established
    try:
        ds = Dataset()
        ds.PerformedProcedureStepStatus = status
        if create:
            ref = Dataset()
            ref.AccessionNumber, ref.StudyInstanceUID = accession, study_uid
            ref.ScheduledProcedureStepID, ref.RequestedProcedureID = f"SPS{accession}", f"RP{accession}"
            ds.ScheduledStepAttributesSequence = [ref]
            ds.PatientID, ds.PatientName, ds.Modality = "P100", "DOE^JOHN", "CT"
            ds.PerformedStationAETitle = "CT1"
            ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = TODAY, "100500"
            status_ds, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, sop_uid)
        else:
            ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = TODAY, "101500"
            status_ds, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, sop_uid)
        return int(status_ds.Status)
    finally:
        assoc.release()


def find_worklist(tmp: Path, port: int, *keys: str) -> list[Dataset]:
    """``findscu -W`` with *keys*; the response identifiers."""
    out = tmp / f"wl-{len(list(tmp.glob('wl-*')))}"
    out.mkdir()
    args = ["-W", "-aet", "CT1", "-aec", "RADBRIDGE", "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    found = dcmtk("findscu", *args, "127.0.0.1", str(port))
    assert found.returncode == 0, found.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def order_state(config: Path, accession: str) -> dict:
    """``radbridge ris order ACC --json``."""
    proc = run_cli("ris", "order", "-c", str(config), accession, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_scheduled_workflow_end_to_end(tmp_path: Path, engine_factory: Callable[..., EngineProcess],
                                       downstream_factory: Callable[[], DownstreamReceiver]) -> None:  # fmt: skip
    """ADT, order, worklist, MPPS, images, report and merge flow through radbridge to the HIS, EHR and archive."""
    his_out, ehr_out = downstream_factory(), downstream_factory()
    his_port, dict_port, dicom_port = free_port(), free_port(), free_port()
    ris_dest = [{"name": "ris", "type": "ris"}]
    config = write_config(
        tmp_path / "radbridge.yaml",
        {
            "data_dir": str(tmp_path / "data"),
            "metrics": {"host": "127.0.0.1", "port": free_port()},
            "ris": {"status_channel": "to-his", "report_channel": "to-ehr"},
            "channels": [
                {"name": "his", "source": {"type": "mllp_listener", "port": his_port},
                 "ack": {"mode": "after_delivery"}, "destinations": ris_dest},
                {"name": "dictation", "source": {"type": "mllp_listener", "port": dict_port},
                 "ack": {"mode": "after_delivery"}, "destinations": ris_dest},
                {"name": "modality", "source": {"type": "dicom_scp", "ae_title": "RADBRIDGE", "port": dicom_port,
                                                "worklist": True, "mpps": True}, "destinations": ris_dest},
                {"name": "to-his", "source": {"type": "internal"},
                 "destinations": [{"name": "his", "type": "mllp_sender", "host": "127.0.0.1", "port": his_out.port}]},
                {"name": "to-ehr", "source": {"type": "internal"},
                 "destinations": [{"name": "ehr", "type": "mllp_sender", "host": "127.0.0.1", "port": ehr_out.port}]},
            ],
        },
    )  # fmt: skip
    engine = engine_factory(config).start_ready()
    try:
        acks = send_hl7(tmp_path, his_port, adt("A1", "A04", "P100", "DOE^JOHN"), orm("O1", "P100", "ACC100"))
        assert [code for code, _ in acks] == ["AA", "AA"], acks
        wait_until(lambda: his_out.count() >= 1, 20, what="the order status (scheduled) at the HIS")

        items = find_worklist(tmp_path, dicom_port, "ScheduledProcedureStepSequence[0].Modality=CT",
                              "AccessionNumber", "PatientName", "PatientID", "StudyInstanceUID")  # fmt: skip
        assert len(items) == 1
        item = items[0]
        assert (item.AccessionNumber, item.PatientID, str(item.PatientName)) == ("ACC100", "P100", "DOE^JOHN")
        study_uid = item.StudyInstanceUID

        mpps_uid = "1.2.826.0.1.3680043.8.498.77777"
        assert mpps(dicom_port, mpps_uid, "IN PROGRESS", "ACC100", study_uid, create=True) == 0x0000
        files = make_study(tmp_path / "study", 3, series=1, patient_id="P100", patient_name="DOE^JOHN",
                           accession="ACC100")  # fmt: skip
        for f in files:  # the scanner uses the worklist's Study Instance UID
            ds = dcmread(f)
            ds.StudyInstanceUID = study_uid
            ds.save_as(f, enforce_file_format=True)
        stored = dcmtk("storescu", "-aet", "CT1", "-aec", "RADBRIDGE", "127.0.0.1", str(dicom_port), *map(str, files))
        assert stored.returncode == 0, stored.stderr
        assert mpps(dicom_port, mpps_uid, "COMPLETED", "ACC100", study_uid, create=False) == 0x0000
        assert mpps(dicom_port, mpps_uid, "COMPLETED", "ACC100", study_uid, create=False) != 0x0000  # final already

        assert send_hl7(tmp_path, dict_port, oru("R1", "P100", "ACC100", "F"))[0][0] == "AA"
        wait_until(lambda: ehr_out.count() >= 1, 20, what="the final report at the EHR")
        report = segments(ehr_out.messages[-1])
        assert report["MSH"][9].startswith("ORU^R01") and report["OBR"][25] == "F"

        statuses = [segments(m)["ORC"][5] for m in his_out.messages if "ORC" in segments(m)]
        assert "IP" in statuses and "CM" in statuses, statuses
        order = order_state(config, "ACC100")
        assert order["state"] == "FINALIZED"
        assert [h["to_state"] for h in order["history"]][-3:] == ["IN_PROGRESS", "COMPLETED", "FINALIZED"][-3:]

        # The archive has the study under P100; merging P100 into P200 moves it (and the order).
        found = dcmtk("findscu", "-S", "-aec", "RADBRIDGE", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=P100",
                      "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1", str(dicom_port))  # fmt: skip
        assert found.returncode == 0 and study_uid in found.stderr + found.stdout
        acks = send_hl7(tmp_path, his_port, adt("A2", "A04", "P200", "DOE^JOHNNY"),
                        adt("A3", "A40", "P200", "DOE^JOHNNY", merged="P100"))  # fmt: skip
        assert [code for code, _ in acks] == ["AA", "AA"], acks
        out = tmp_path / "merged"
        out.mkdir()
        moved = dcmtk("findscu", "-S", "-aec", "RADBRIDGE", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                      "-k", "PatientID=P200", "-k", "StudyInstanceUID", "127.0.0.1", str(dicom_port))  # fmt: skip
        assert moved.returncode == 0
        assert study_uid in {dcmread(p).StudyInstanceUID for p in out.glob("rsp*.dcm")}
        assert order_state(config, "ACC100")["patient"]["patient_id"] == "P200"
        later = send_hl7(tmp_path, his_port, orm("O2", "P100", "ACC101"))
        assert later[0][0] == "AE", later  # the merged id is no longer accepted
    finally:
        engine.terminate()
