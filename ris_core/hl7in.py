"""Inbound HL7 for the RIS, parsed into dataclasses (pure: no database).

Field choices follow HL7 v2.3.1 / v2.5.1 and IHE RAD TF-2 (RAD-1/2/4/12/13); where they leave a
choice, dcm4chee-arc's stock stylesheets (``hl7-adt2dcm``, ``hl7-orm2dcm``, ``hl7-oru2dcm``) decide.
An empty field means "not sent"; the HL7 null ``""`` means "clear it" (patients only).

Patient (PID, every message): PID-3 every repetition → ``other_ids`` (``{id, issuer, type}``: CX.1,
CX.4 namespace id (else universal id), CX.5); the primary id is the first repetition (or the first
whose authority is ``defaults.issuer_of_patient_id``), its PID-3.4 the IssuerOfPatientID (else the
default). PID-5 (first XPN) → DICOM PN ``family^given^middle^prefix^suffix`` (degree joins the
suffix); PID-7 → DA; PID-8 → M/F/O; ``attrs``: PID-11 address (XAD components joined with ``^``),
PID-13 phone (XTN.1, else XTN.6+XTN.7), PID-18 account number.

ADT: A01/A04/A05/A08 (and A28/A31) create or update the patient (RAD-1, RAD-12); A10 arrival;
A40 merge: each PID (surviving) + MRG (MRG-1 merged id, MRG-1.4 its authority) pair.

Orders, ORM^O01 v2.3.1 (RAD-2/4/13): one ORC with its OBR (ZDS, NTE after it) per group; groups with
the same accession (else placer number) are one order, each group one scheduled procedure step.
ORC-1 control (NW XO SC CA DC HD RL), ORC-2 placer / ORC-3 filler number (EI ``id^namespace``;
OBR-2/OBR-3 when empty), ORC-5 status, ORC-7.4 start and ORC-7.6 priority (when OBR-27 is empty),
ORC-12 ordering provider (XCN; OBR-16 when empty), ORC-16 reason (OBR-31 preferred). OBR-4
universal service id → procedure code/text/scheme (OBR-44 when OBR-4 is empty); the requested
procedure code (RequestedProcedureCodeSequence/Description) is OBR-44 (else OBR-4.1-3); the SPS
protocol code and description are OBR-4.4-6 (alternate identifier, dcm4chee's default), else
OBR-4.1-3. OBR-7 requested time (kept in attrs), OBR-13 medical alerts, OBR-18 accession, OBR-19
requested procedure id, OBR-20 SPS id, OBR-24 modality, OBR-27.4 start, OBR-27.6 priority, OBR-30
transport, OBR-34 technician → scheduled performing physician, PV1-3 location, PV1-8 referring
physician, PV1-19 visit number, ZDS-1.1 Study Instance UID. v2.3.1 has no station AE: it comes
from ``station_aes`` (by modality).

Orders, OMI^O23 v2.5.1: ORC, TQ1 (TQ1-7 start, TQ1-9.1 priority), OBR as above, then IPC segments,
each one SPS: IPC-1 accession, IPC-2 requested procedure id, IPC-3 Study Instance UID, IPC-4 SPS
id, IPC-5 modality, IPC-6 protocol codes (CE, repeating), IPC-7 station name, IPC-8 SPS location,
IPC-9 station AE titles (repeating). Start time precedence (dcm4chee): TQ1-7, ORC-7.4, OBR-27.4.
Priority (dcm4chee): S → STAT; A, P, C → HIGH; R → ROUTINE; T → MEDIUM.

Reports, ORU^R01 (RAD-28 style): per OBR, the order from OBR-18 accession, else OBR-3 / ORC-3
filler number; OBR-25 status P/F/C; OBX-5 of the OBX segments after it (every repetition; FT
line breaks kept) joined with newlines; OBR-32 principal result interpreter (NDL: CNN
subcomponents) → PN; OBR-7 observation time, else OBR-22.

The shared field helpers, the header and the patient are in :mod:`ris_core.hl7in_common`, order
parsing in :mod:`ris_core.hl7in_orders`; their names are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.hl7.message import HL7Message, unescape
from ris_core.hl7in_common import NULL as NULL
from ris_core.hl7in_common import UID_RE as UID_RE
from ris_core.hl7in_common import Header as Header
from ris_core.hl7in_common import PatientIn as PatientIn
from ris_core.hl7in_common import Rejected as Rejected
from ris_core.hl7in_common import Seg as Seg
from ris_core.hl7in_common import UnusableMessage as UnusableMessage
from ris_core.hl7in_common import check_len as check_len
from ris_core.hl7in_common import check_uid as check_uid
from ris_core.hl7in_common import code as code
from ris_core.hl7in_common import ei as ei
from ris_core.hl7in_common import first_segment
from ris_core.hl7in_common import ndl as ndl
from ris_core.hl7in_common import patient as patient
from ris_core.hl7in_common import xcn as xcn
from ris_core.hl7in_common import xpn as xpn
from ris_core.hl7in_orders import ORDER_CONTROLS as ORDER_CONTROLS
from ris_core.hl7in_orders import PRIORITY as PRIORITY
from ris_core.hl7in_orders import OrderIn as OrderIn
from ris_core.hl7in_orders import OrderMessage as OrderMessage
from ris_core.hl7in_orders import SpsIn as SpsIn
from ris_core.hl7in_orders import dtm as dtm
from ris_core.hl7in_orders import parse_orders

UPDATE_EVENTS = ("A01", "A04", "A05", "A08", "A28", "A31")
ADT_EVENTS = (*UPDATE_EVENTS, "A10", "A40")


@dataclass
class ReportIn:
    """One report (an ORU OBR with its OBX)."""

    accession: str
    filler_number: str
    placer_number: str
    status: str
    text: str
    author: str
    observed_at: str
    procedure: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The order as reasons name it."""
        return self.accession or self.filler_number.split("^", 1)[0] or self.placer_number.split("^", 1)[0] or "?"


@dataclass
class ReportMessage:
    """ORU^R01."""

    header: Header
    patient: PatientIn | None
    reports: list[ReportIn]


@dataclass
class AdtMessage:
    """ADT: patients to create/update, an arrival, or merges (surviving, merged)."""

    header: Header
    event: str
    patients: list[PatientIn]
    merges: list[tuple[PatientIn, PatientIn]] = field(default_factory=list)


Parsed = OrderMessage | ReportMessage | AdtMessage


def _segments(msg: HL7Message) -> list[tuple[str, Seg]]:
    counts: dict[str, int] = {}
    out = []
    for name in msg.segment_names():
        counts[name] = counts.get(name, 0) + 1
        fields = msg.segment_fields(name, counts[name]) or []
        out.append((name, Seg(fields, msg.enc)))
    return out


def header(msg: HL7Message) -> Header:
    """The MSH values of *msg*."""
    return Header(
        msg.get("MSH-10"), msg.get("MSH-3.1"), msg.get("MSH-4.1"), msg.get("MSH-9.1"), msg.get("MSH-9.2"),
        msg.get("MSH-12.1"),
    )  # fmt: skip


def parse(msg: HL7Message, default_issuer: str | None = None) -> Parsed:
    """Parse an ADT, ORM^O01, OMI^O23 or ORU^R01 for the RIS; :class:`UnusableMessage` otherwise."""
    head = header(msg)
    kind = head.message_type
    segs = _segments(msg)
    if kind == "ADT":
        return _adt(head, segs, default_issuer)
    if kind in ("ORM", "OMI"):
        return parse_orders(head, segs, default_issuer)
    if kind == "ORU":
        return _reports(head, segs, default_issuer)
    raise UnusableMessage(f"message type {kind or '?'}^{head.trigger} is not used by the RIS", "AR")


def _adt(head: Header, segs: list[tuple[str, Seg]], default_issuer: str | None) -> AdtMessage:
    event = head.trigger or ((first_segment(segs, "EVN") or Seg([], "^~\\&")).get(1))
    if event not in ADT_EVENTS:
        raise UnusableMessage(f"ADT^{event or '?'} is not used by the RIS", "AR")
    pids = [s for n, s in segs if n == "PID"]
    if not pids:
        raise UnusableMessage("PID segment is missing")
    if event != "A40":
        return AdtMessage(head, event, [patient(pids[0], default_issuer)])
    merges = []
    current: PatientIn | None = None
    for name, seg in segs:
        if name == "PID":
            current = patient(seg, default_issuer)
        elif name == "MRG" and current is not None:
            merges.append((current, patient(seg, default_issuer, mrg=True)))
    if not merges:
        raise UnusableMessage("ADT^A40 without an MRG segment")
    return AdtMessage(head, event, [m[0] for m in merges], merges)


def _reports(head: Header, segs: list[tuple[str, Seg]], default_issuer: str | None) -> ReportMessage:
    pid = first_segment(segs, "PID")
    who = patient(pid, default_issuer) if pid is not None and pid.get(3) else None
    reports: list[ReportIn] = []
    orc: Seg | None = None
    lines: list[str] = []
    for name, seg in segs:
        if name == "ORC":
            orc = seg
        elif name == "OBR":
            lines = []
            reports.append(_report(seg, orc))
        elif name == "OBX" and reports:
            for value in seg.reps(5):
                lines.append(unescape(value.replace(seg.enc[0], " "), seg.enc).rstrip())
            reports[-1].text = "\n".join(lines).strip("\n")
    if not reports:
        raise UnusableMessage("ORU^R01 without an OBR segment")
    return ReportMessage(head, who, reports)


def _report(obr: Seg, orc: Seg | None) -> ReportIn:
    orc = orc or Seg([], obr.enc)
    status = obr.get(25).upper()
    return ReportIn(
        accession=check_len(obr.get(18), 16, "OBR-18 accession number"),
        filler_number=ei(obr, 3) or ei(orc, 3),
        placer_number=ei(obr, 2) or ei(orc, 2),
        status=status,
        text="",
        author=ndl(obr, 32),
        observed_at=(obr.get(7) or obr.get(22))[:26],
        procedure=code(obr, 4),
    )
