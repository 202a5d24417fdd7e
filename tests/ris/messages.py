"""HL7 test messages for the RIS, written from the HL7 v2.3.1 / v2.5.1 field definitions.

Segments are built from ``{field number: value}`` so every value sits in the field the standard
gives it (no counting of pipes).
"""

from __future__ import annotations

from typing import Any

NOW = "20240305143000"


def seg(name: str, fields: dict[int, str]) -> str:
    """A segment with *fields* placed by number (1-based; MSH numbering is handled by ``msh``)."""
    values = [""] * (max(fields) if fields else 0)
    for n, value in fields.items():
        values[n - 1] = value
    return "|".join([name, *values])


def msh(kind: str, cid: str, version: str, app: str = "HIS", facility: str = "HOSP") -> str:
    """MSH-3/4 sender, MSH-5/6 receiver, MSH-7 time, MSH-9 type, MSH-10 control id, MSH-11 P, MSH-12 version."""
    return f"MSH|^~\\&|{app}|{facility}|RIS|RAD|{NOW}||{kind}|{cid}|P|{version}"


def pid(patient: str = "P100", name: str = "DOE^JOHN^Q^JR^^MD", birth: str = "19700101", sex: str = "M",
        issuer: str = "HOSP", more_ids: str = "~99887^^^NATIONAL^PI") -> str:  # fmt: skip
    """PID-3 (CX, repeating), PID-5 XPN, PID-7 birth, PID-8 sex, PID-11 address, PID-13 phone, PID-18 account."""
    return seg("PID", {
        1: "1", 3: f"{patient}^^^{issuer}^MR{more_ids}", 5: name, 7: birth, 8: sex,
        11: "1 MAIN ST^^SPRINGFIELD^IL^62701^USA", 13: "(555)555-1234", 18: "ACCT1",
    })  # fmt: skip


def pv1() -> str:
    """PV1-2 class, PV1-3 location, PV1-8 referring doctor (XCN), PV1-19 visit number."""
    return seg("PV1", {1: "1", 2: "O", 3: "RAD^^^HOSP", 8: "1234^WELBY^MARCUS^^^DR", 19: "V100"})


def orm(cid: str = "O1", *, control: str = "NW", patient: str = "P100", accession: str = "ACC100",
        placer: str = "PL100", steps: tuple[str, ...] = ("SPS100",), start: str = "20240305100000",
        study_uid: str | None = "1.2.826.0.1.3680043.8.498.100", modality: str = "CT", priority: str = "S",
        code: str = "CTHEAD^CT HEAD WITHOUT CONTRAST^L^P1^HEAD ROUTINE^L", rp: str = "RP100",
        filler: str = "", **pid_kw: Any) -> str:  # fmt: skip
    """ORM^O01 v2.3.1 (IHE RAD-2/4): one ORC/OBR/ZDS group per scheduled step of one accession."""
    timing = f"^^^{start}^^{priority}" if start or priority else ""
    segments = [msh("ORM^O01", cid, "2.3.1"), pid(patient, **pid_kw), pv1()]
    for i, sps in enumerate(steps, 1):
        segments.append(seg("ORC", {1: control, 2: f"{placer}^HIS" if placer else "", 3: filler, 7: timing,
                                    9: NOW, 12: "5678^KILDARE^JAMES"}))  # fmt: skip
        segments.append(seg("OBR", {
            1: str(i), 2: f"{placer}^HIS" if placer else "", 3: filler, 4: code, 7: NOW, 13: "ALLERGIC TO IODINE",
            16: "5678^KILDARE^JAMES", 18: accession, 19: rp, 20: sps, 24: modality, 27: timing, 30: "WALK",
            31: "^HEADACHE", 34: "1111&TECH&TERRY",
        }))  # fmt: skip
        if study_uid:
            segments.append(seg("ZDS", {1: f"{study_uid}^HIS^Application^DICOM"}))
    return "\r".join(segments)


def omi(cid: str = "M1", *, control: str = "NW", patient: str = "P100", accession: str = "ACC200",
        placer: str = "PL200", start: str = "20240306090000", priority: str = "A") -> str:  # fmt: skip
    """OMI^O23 v2.5.1 (IHE RAD-4, v2.5.1 option): ORC, TQ1, OBR, then one IPC per scheduled step."""
    uid = "1.2.826.0.1.3680043.8.498.200"
    return "\r".join([
        msh("OMI^O23^OMI_O23", cid, "2.5.1"), pid(patient), pv1(),
        seg("ORC", {1: control, 2: f"{placer}^HIS", 9: NOW, 12: "5678^KILDARE^JAMES"}),
        seg("TQ1", {1: "1", 7: start, 9: priority}),
        seg("OBR", {1: "1", 2: f"{placer}^HIS", 4: "MRBRAIN^MR BRAIN^L", 16: "5678^KILDARE^JAMES",
                    31: "^SEIZURE", 44: "MRBR^MRI BRAIN W/O CONTRAST^C4"}),  # fmt: skip
        seg("IPC", {1: accession, 2: "RP200", 3: uid, 4: "SPS200", 5: "MR", 6: "PROT1^T1 AXIAL^L~PROT2^T2 SAG^L",
                    7: "MR1", 8: "ROOM 2", 9: "MRAE1~MRAE2"}),  # fmt: skip
        seg("IPC", {1: accession, 2: "RP200", 3: uid, 4: "SPS201", 5: "MR", 6: "PROT3^DWI^L", 7: "MR2",
                    8: "ROOM 3", 9: "MRAE3"}),  # fmt: skip
    ])  # fmt: skip


def adt(event: str, cid: str = "A1", *, patient: str = "P100", name: str = "DOE^JOHN^Q^JR^^MD",
        merged: str | None = None, **pid_kw: Any) -> str:  # fmt: skip
    """ADT^Axx v2.5 with EVN and PID (A40: PID is the survivor, MRG-1 the merged id)."""
    segments = [msh(f"ADT^{event}", cid, "2.5"), seg("EVN", {1: event, 2: NOW}), pid(patient, name=name, **pid_kw)]
    if merged:
        segments.append(seg("MRG", {1: f"{merged}^^^HOSP^MR"}))
    segments.append(pv1())
    return "\r".join(segments)


def oru(cid: str = "R1", *, status: str = "F", accession: str = "ACC100", patient: str = "P100",
        lines: tuple[str, ...] = ("No acute intracranial abnormality.",), filler: str = "") -> str:  # fmt: skip
    """ORU^R01 v2.5: OBR-18 accession, OBR-25 status, OBR-32 interpreter (NDL), OBX-5 the text."""
    obx = [
        seg("OBX", {1: str(i), 2: "TX", 3: "IMP^Impression", 5: line, 11: status}) for i, line in enumerate(lines, 1)
    ]
    return "\r".join([
        msh("ORU^R01", cid, "2.5", app="DICT", facility="RAD"), pid(patient),
        seg("OBR", {1: "1", 3: filler, 4: "CTHEAD^CT HEAD^L", 7: "20240305120000", 18: accession,
                    22: "20240305130000", 25: status, 32: "2222&RADIOLOGIST&RUTH"}),  # fmt: skip
        *obx,
    ])  # fmt: skip
