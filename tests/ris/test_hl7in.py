"""Parsing ADT, ORM^O01 v2.3.1, OMI^O23 v2.5.1 and ORU^R01 into the RIS's dataclasses (no database)."""

from __future__ import annotations

import pytest

from engine.hl7.message import HL7Message
from ris_core.hl7in import AdtMessage, OrderMessage, ReportMessage, UnusableMessage, parse
from tests.ris import messages as m


def parsed(text: str, issuer: str | None = None):
    """*text* parsed for the RIS."""
    return parse(HL7Message(text), issuer)


def test_orm_v231_groups_obrs_of_one_accession_into_steps() -> None:
    """Two ORC/OBR groups with one accession are one order with two steps; every mapped field is read."""
    msg = parsed(m.orm(steps=("SPS100", "SPS101")))
    assert isinstance(msg, OrderMessage) and msg.version == "ORM_O01"
    assert msg.header.control_id == "O1" and msg.header.placer_app == "HIS^HOSP"
    (order,) = msg.orders
    assert (order.control, order.placer_number, order.accession) == ("NW", "PL100^HIS", "ACC100")
    assert (order.requested_procedure_id, order.study_uid) == ("RP100", "1.2.826.0.1.3680043.8.498.100")
    assert order.procedure == {"code": "CTHEAD", "text": "CT HEAD WITHOUT CONTRAST", "scheme": "L"}
    assert order.requested_procedure == order.procedure  # no OBR-44: OBR-4.1-3
    assert (order.modality, order.priority, order.start_date, order.start_time) == ("CT", "STAT", "20240305", "100000")
    assert (order.ordering_provider, order.referring_physician) == ("KILDARE^JAMES", "WELBY^MARCUS^^DR")
    assert order.reason == "HEADACHE"
    assert order.attrs["medical_alerts"] == "ALLERGIC TO IODINE" and order.attrs["visit_number"] == "V100"
    assert order.attrs["transport"] == "WALK" and order.attrs["ordering_provider_id"] == "5678"
    assert [s.sps_id for s in order.sps] == ["SPS100", "SPS101"]
    step = order.sps[0]
    assert step.protocol_codes == [{"code": "P1", "text": "HEAD ROUTINE", "scheme": "L"}]  # OBR-4.4-6
    assert (step.description, step.performing_physician, step.station_ae) == ("HEAD ROUTINE", "TECH^TERRY", [])


def test_orm_patient_fields() -> None:
    """PID-3 repetitions, PID-5 as a DICOM PN, birth date, sex, address, phone and account are read."""
    who = parsed(m.orm()).patient
    assert (who.patient_id, who.issuer) == ("P100", "HOSP")
    assert who.other_ids == [{"id": "P100", "issuer": "HOSP", "type": "MR"}, {"id": "99887", "issuer": "NATIONAL",
                                                                               "type": "PI"}]  # fmt: skip
    assert (who.name, who.birth_date, who.sex) == ("DOE^JOHN^Q^^JR MD", "19700101", "M")
    assert who.attrs == {"address": "1 MAIN ST^^SPRINGFIELD^IL^62701^USA", "phone": "(555)555-1234",
                         "account_number": "ACCT1"}  # fmt: skip


def test_default_issuer_picks_the_matching_repetition() -> None:
    """With ``defaults.issuer_of_patient_id`` the PID-3 repetition of that authority is the primary id."""
    who = parsed(m.orm(), "NATIONAL").patient
    assert (who.patient_id, who.issuer) == ("99887", "NATIONAL")


def test_omi_v251_one_step_per_ipc() -> None:
    """OMI^O23: TQ1-7/9 schedule, OBR-44 requested procedure, each IPC one step with its protocols and AEs."""
    msg = parsed(m.omi())
    assert msg.version == "OMI_O23"
    (order,) = msg.orders
    assert (order.accession, order.requested_procedure_id, order.study_uid) == (
        "ACC200", "RP200", "1.2.826.0.1.3680043.8.498.200",
    )  # fmt: skip
    assert (order.start_date, order.start_time, order.priority, order.modality) == ("20240306", "090000", "HIGH", "MR")
    assert order.requested_procedure == {"code": "MRBR", "text": "MRI BRAIN W/O CONTRAST", "scheme": "C4"}
    assert order.procedure["code"] == "MRBRAIN"
    first, second = order.sps
    assert (first.sps_id, first.station_name, first.location, first.station_ae) == (
        "SPS200", "MR1", "ROOM 2", ["MRAE1", "MRAE2"],
    )  # fmt: skip
    assert [p["code"] for p in first.protocol_codes] == ["PROT1", "PROT2"]
    assert first.description == "T1 AXIAL"
    assert (second.sps_id, second.station_ae, second.protocol_codes[0]["text"]) == ("SPS201", ["MRAE3"], "DWI")


def test_orm_without_schedule_or_ids() -> None:
    """No timing, accession, SPS id or ZDS: the order has no schedule and empty ids (the RIS generates them)."""
    (order,) = parsed(m.orm(accession="", steps=("",), start="", priority="", study_uid=None, rp="")).orders
    assert not order.has_schedule
    assert (order.accession, order.study_uid, order.requested_procedure_id, order.sps[0].sps_id) == ("", "", "", "")
    assert order.label == "PL100"


@pytest.mark.parametrize("event", ["A01", "A04", "A05", "A08", "A10"])
def test_adt_updates(event: str) -> None:
    """ADT^A01/A04/A05/A08/A10 name one patient with its demographics."""
    msg = parsed(m.adt(event, name="DOE^JANE", sex="F"))
    assert isinstance(msg, AdtMessage) and msg.event == event
    assert (msg.patients[0].patient_id, msg.patients[0].name, msg.patients[0].sex) == ("P100", "DOE^JANE", "F")


def test_adt_a40_pairs_survivor_and_merged() -> None:
    """ADT^A40: PID is the surviving patient, MRG-1 (with MRG-1.4) the merged one."""
    msg = parsed(m.adt("A40", patient="P200", merged="P100"))
    ((survivor, merged),) = msg.merges
    assert (survivor.patient_id, merged.patient_id, merged.issuer) == ("P200", "P100", "HOSP")


def test_hl7_null_clears_and_empty_keeps() -> None:
    """An empty PID field is "not sent" (None); the HL7 null ``""`` clears the value ("")."""
    who = parsed(m.adt("A08", birth='""', sex="")).patients[0]
    assert who.birth_date == "" and who.sex is None


@pytest.mark.parametrize("status", ["P", "F", "C"])
def test_oru_report(status: str) -> None:
    """ORU^R01: accession OBR-18, OBR-25 status, OBX-5 lines joined, OBR-32 author as a PN, OBR-7 time."""
    msg = parsed(m.oru(status=status, lines=("Line one.", "Line two.")))
    assert isinstance(msg, ReportMessage)
    (report,) = msg.reports
    assert (report.accession, report.status, report.text) == ("ACC100", status, "Line one.\nLine two.")
    assert (report.author, report.observed_at) == ("RADIOLOGIST^RUTH", "20240305120000")


def test_oru_formatted_text_keeps_line_breaks() -> None:
    """An FT value's ``\\.br\\`` escapes become line breaks; repetitions are lines too."""
    text = m.oru().replace("No acute intracranial abnormality.", "First\\.br\\Second~Third")
    assert parsed(text).reports[0].text == "First\nSecond\nThird"


def test_oru_falls_back_to_filler_number() -> None:
    """Without OBR-18 the report names its order by the filler number (OBR-3)."""
    report = parsed(m.oru(accession="", filler="ACC100^RADBRIDGE")).reports[0]
    assert (report.accession, report.filler_number, report.label) == ("", "ACC100^RADBRIDGE", "ACC100")


@pytest.mark.parametrize(
    ("text", "code", "words"),
    [
        (m.msh("SIU^S12", "X", "2.5") + "\rPID|1||P1", "AR", "not used by the RIS"),
        (m.msh("ADT^A99", "X", "2.5") + "\rPID|1||P1", "AR", "ADT^A99"),
        (m.adt("A08").replace("P100^^^HOSP^MR~99887^^^NATIONAL^PI", ""), "AE", "PID-3"),
        (m.orm(control="ZZ"), "AE", "ORC-1"),
        (m.orm(accession="A" * 17), "AE", "longer than 16"),
        (m.orm(study_uid="1.2.abc"), "AE", "not a valid DICOM UID"),
        (m.orm(placer="", accession=""), "AE", "placer number"),
    ],
)
def test_unusable_messages(text: str, code: str, words: str) -> None:
    """Messages the RIS cannot use are refused with a code and a reason naming the field."""
    with pytest.raises(UnusableMessage) as info:
        parsed(text)
    assert info.value.code == code and words in info.value.reason
