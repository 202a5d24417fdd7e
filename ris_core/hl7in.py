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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from engine.hl7.message import HL7Message, unescape
from mappings.filters import hl7_sex_to_dicom, hl7_to_dicom_date, hl7_to_dicom_time

UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
PRIORITY = {"S": "STAT", "A": "HIGH", "P": "HIGH", "C": "HIGH", "R": "ROUTINE", "T": "MEDIUM"}
ORDER_CONTROLS = ("NW", "XO", "SC", "CA", "DC", "HD", "RL")
UPDATE_EVENTS = ("A01", "A04", "A05", "A08", "A28", "A31")
ADT_EVENTS = (*UPDATE_EVENTS, "A10", "A40")
NULL = '""'


class Rejected(Exception):
    """The RIS refuses a message; ``reason`` names orders and states, never PHI."""

    def __init__(self, reason: str, code: str = "AE") -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code


class UnusableMessage(Rejected):
    """A message the RIS cannot use (wrong type, required field missing)."""


class Seg:
    """One segment's fields with component access (values unescaped, ``""`` when absent)."""

    def __init__(self, fields: list[str], enc: str) -> None:
        self.fields, self.enc = fields, enc

    def raw(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def reps(self, n: int) -> list[str]:
        value = self.raw(n)
        return [r for r in value.split(self.enc[1])] if value else []

    def comps(self, n: int, rep: int = 0) -> list[str]:
        reps = self.reps(n)
        return reps[rep].split(self.enc[0]) if rep < len(reps) else []

    def get(self, n: int, comp: int = 1, sub: int | None = None, rep: int = 0) -> str:
        comps = self.comps(n, rep)
        value = comps[comp - 1] if comp <= len(comps) else ""
        if sub is not None:
            subs = value.split(self.enc[3])
            value = subs[sub - 1] if sub <= len(subs) else ""
        return unescape(value, self.enc).strip() if value else ""

    def text(self, n: int) -> str:
        """Field *n* whole (first repetition), unescaped."""
        reps = self.reps(n)
        return unescape(reps[0], self.enc).strip() if reps else ""


def _pn(parts: list[str]) -> str:
    """DICOM PN from XPN-ordered parts ``family, given, middle, suffix, prefix, degree``."""
    parts = [p.replace("^", " ").replace("=", " ").replace("\\", " ").strip() for p in parts] + [""] * 6
    family, given, middle, suffix, prefix, degree = parts[:6]
    comps = [family, given, middle, prefix, " ".join(p for p in (suffix, degree) if p)]
    while comps and not comps[-1]:
        comps.pop()
    return "^".join(comps)


def xpn(seg: Seg, n: int) -> str:
    """Field *n* (XPN, first repetition) as a DICOM PN; the family name's first subcomponent."""
    return _pn([seg.get(n, 1, 1), *(seg.get(n, c) for c in range(2, 7))])


def xcn(seg: Seg, n: int) -> tuple[str, str]:
    """Field *n* (XCN: id^family^given...) as (id, DICOM PN)."""
    return seg.get(n, 1), _pn([seg.get(n, 2, 1), *(seg.get(n, c) for c in range(3, 8))])


def ndl(seg: Seg, n: int) -> str:
    """Field *n* (NDL: CNN subcomponents id&family&given&middle&suffix&prefix&degree) as a DICOM PN."""
    if seg.get(n, 1, 2):
        return _pn([seg.get(n, 1, s) for s in range(2, 8)])
    return _pn([seg.get(n, 1, 1)])  # a plain name sent without subcomponents


def ei(seg: Seg, n: int) -> str:
    """Field *n* (EI) as ``id^namespace`` (``id`` alone without a namespace)."""
    ident, ns = seg.get(n, 1), seg.get(n, 2)
    return f"{ident}^{ns}" if ident and ns else ident


def code(seg: Seg, n: int, offset: int = 0, rep: int = 0) -> dict[str, str]:
    """A CE/CWE triple from components ``offset+1..offset+3``: code, text, scheme."""
    return {"code": seg.get(n, offset + 1, rep=rep), "text": seg.get(n, offset + 2, rep=rep),
            "scheme": seg.get(n, offset + 3, rep=rep)}  # fmt: skip


def dtm(value: str) -> tuple[str, str]:
    """An HL7 DTM as (DICOM DA, DICOM TM); ``("", "")`` when it is not a date."""
    day = hl7_to_dicom_date(value)
    return (day, hl7_to_dicom_time(value)) if day else ("", "")


def _null(value: str, raw: str) -> str | None:
    """Patient update semantics: ``None`` = not sent, ``""`` = HL7 null (clear), else the value."""
    if raw == NULL:
        return ""
    return value or None


def check_uid(value: str, where: str) -> str:
    """*value* if it is a valid UID (or empty); else :class:`UnusableMessage` naming *where*."""
    if value and (len(value) > 64 or not UID_RE.match(value)):
        raise UnusableMessage(f"{where} is not a valid DICOM UID")
    return value


def check_len(value: str, limit: int, where: str) -> str:
    """*value* if it fits *limit* characters; else :class:`UnusableMessage`."""
    if len(value) > limit:
        raise UnusableMessage(f"{where} is longer than {limit} characters")
    return value


@dataclass
class Header:
    """MSH values the RIS uses."""

    control_id: str
    sending_app: str
    sending_facility: str
    message_type: str
    trigger: str
    version: str

    @property
    def placer_app(self) -> str:
        """``MSH-3.1^MSH-4.1``: where order status goes back to."""
        return f"{self.sending_app}^{self.sending_facility}"

    @property
    def source(self) -> str:
        """The history ``source`` of this message: ``app^facility:MSH-10`` (``""`` without MSH-10)."""
        return f"{self.sending_app[:30]}^{self.sending_facility[:30]}:{self.control_id}"[:80] if self.control_id else ""


@dataclass
class PatientIn:
    """A patient as a message names it (PID, or MRG for the merged one)."""

    patient_id: str
    issuer: str
    other_ids: list[dict[str, str]] = field(default_factory=list)
    name: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class SpsIn:
    """One scheduled procedure step (an ORM OBR group, or an IPC segment)."""

    sps_id: str = ""
    modality: str = ""
    station_ae: list[str] = field(default_factory=list)
    station_name: str = ""
    location: str = ""
    start_date: str = ""
    start_time: str = ""
    description: str = ""
    protocol_codes: list[dict[str, str]] = field(default_factory=list)
    performing_physician: str = ""


@dataclass
class OrderIn:
    """One requested procedure (the RIS's order) from one or more ORC/OBR groups."""

    control: str
    order_status: str = ""
    placer_number: str = ""
    filler_number: str = ""
    accession: str = ""
    requested_procedure_id: str = ""
    study_uid: str = ""
    procedure: dict[str, str] = field(default_factory=dict)
    requested_procedure: dict[str, str] = field(default_factory=dict)
    modality: str = ""
    reason: str = ""
    ordering_provider: str = ""
    referring_physician: str = ""
    priority: str = ""
    start_date: str = ""
    start_time: str = ""
    sps: list[SpsIn] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def has_schedule(self) -> bool:
        """Whether the order (or one of its steps) has a start date."""
        return bool(self.start_date or any(s.start_date for s in self.sps))

    @property
    def label(self) -> str:
        """How reasons name the order: accession, else placer number (ids, never PHI)."""
        return self.accession or self.placer_number.split("^", 1)[0] or self.filler_number.split("^", 1)[0] or "?"


@dataclass
class OrderMessage:
    """ORM^O01 / OMI^O23."""

    header: Header
    patient: PatientIn
    orders: list[OrderIn]
    version: str  # ORM_O01 | OMI_O23


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


def patient(pid: Seg, default_issuer: str | None = None, *, mrg: bool = False) -> PatientIn:
    """The patient named by a PID segment (or, with *mrg*, by MRG-1)."""
    n = 1 if mrg else 3
    ids = []
    for rep in range(len(pid.reps(n))):
        ident = pid.get(n, 1, rep=rep)
        if ident:
            issuer = pid.get(n, 4, 1, rep=rep) or pid.get(n, 4, 2, rep=rep)
            ids.append({"id": ident, "issuer": issuer, "type": pid.get(n, 5, rep=rep)})
    if not ids:
        raise UnusableMessage("MRG-1 (merged patient id) is missing" if mrg else "PID-3 (patient id) is missing")
    primary = next((i for i in ids if default_issuer and i["issuer"] == default_issuer), ids[0])
    pid_value = check_len(primary["id"], 64, "MRG-1.1" if mrg else "PID-3.1")
    issuer = check_len(primary["issuer"] or default_issuer or "", 64, "PID-3.4")
    if mrg:
        return PatientIn(pid_value, issuer, ids)
    attrs = {}
    address = "^".join(pid.get(11, c) for c in range(1, 7)).rstrip("^")
    phone = pid.get(13, 1) or (pid.get(13, 6) + pid.get(13, 7))
    for key, value in (("address", address), ("phone", phone), ("account_number", pid.get(18, 1))):
        if value:
            attrs[key] = value
    birth = pid.text(7)
    return PatientIn(
        pid_value, issuer, ids, name=_null(xpn(pid, 5), pid.raw(5)),
        birth_date=_null(hl7_to_dicom_date(birth), pid.raw(7)), sex=_null(hl7_sex_to_dicom(pid.text(8)), pid.raw(8)),
        attrs=attrs,
    )  # fmt: skip


def parse(msg: HL7Message, default_issuer: str | None = None) -> Parsed:
    """Parse an ADT, ORM^O01, OMI^O23 or ORU^R01 for the RIS; :class:`UnusableMessage` otherwise."""
    head = header(msg)
    kind = head.message_type
    segs = _segments(msg)
    if kind == "ADT":
        return _adt(head, segs, default_issuer)
    if kind in ("ORM", "OMI"):
        return _orders(head, segs, default_issuer)
    if kind == "ORU":
        return _reports(head, segs, default_issuer)
    raise UnusableMessage(f"message type {kind or '?'}^{head.trigger} is not used by the RIS", "AR")


def _first(segs: list[tuple[str, Seg]], name: str) -> Seg | None:
    return next((s for n, s in segs if n == name), None)


def _adt(head: Header, segs: list[tuple[str, Seg]], default_issuer: str | None) -> AdtMessage:
    event = head.trigger or ((_first(segs, "EVN") or Seg([], "^~\\&")).get(1))
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


def _groups(segs: list[tuple[str, Seg]]) -> list[dict[str, Any]]:
    """ORC groups: ``{"orc", "tq1", "obr", "ipc": [...], "zds", "nte": [...]}``."""
    groups: list[dict[str, Any]] = []
    for name, seg in segs:
        if name == "ORC":
            groups.append({"orc": seg, "tq1": None, "obr": None, "ipc": [], "zds": None, "nte": []})
        elif not groups:
            continue
        elif name in ("TQ1", "OBR", "ZDS") and groups[-1][name.lower()] is None:
            groups[-1][name.lower()] = seg
        elif name == "IPC":
            groups[-1]["ipc"].append(seg)
        elif name == "NTE":
            groups[-1]["nte"].append(seg)
    return groups


def _orders(head: Header, segs: list[tuple[str, Seg]], default_issuer: str | None) -> OrderMessage:
    pid = _first(segs, "PID")
    if pid is None:
        raise UnusableMessage("PID segment is missing")
    who = patient(pid, default_issuer)
    pv1 = _first(segs, "PV1") or Seg([], pid.enc)
    groups = _groups(segs)
    if not groups:
        raise UnusableMessage("order message without an ORC segment")
    orders: dict[str, OrderIn] = {}
    for g in groups:
        order, steps = _order(g, pv1)
        key = order.accession or order.placer_number or order.filler_number
        if not key:
            raise UnusableMessage("order without placer number (ORC-2), filler number (ORC-3) or accession")
        if key in orders:
            orders[key].sps.extend(steps)
        else:
            order.sps = steps
            orders[key] = order
    version = "OMI_O23" if head.message_type == "OMI" else "ORM_O01"
    return OrderMessage(head, who, list(orders.values()), version)


def _order(g: dict[str, Any], pv1: Seg) -> tuple[OrderIn, list[SpsIn]]:
    orc: Seg = g["orc"]
    enc = orc.enc
    obr: Seg = g["obr"] or Seg([], enc)
    tq1: Seg = g["tq1"] or Seg([], enc)
    zds: Seg = g["zds"] or Seg([], enc)
    ipcs: list[Seg] = g["ipc"]
    control = orc.get(1).upper()
    if control not in ORDER_CONTROLS:
        raise UnusableMessage(f"ORC-1 order control {control or '(empty)'} is not supported", "AE")
    ipc0 = ipcs[0] if ipcs else Seg([], enc)
    start_dtm = tq1.get(7) or orc.get(7, 4) or obr.get(27, 4)
    start_date, start_time = dtm(start_dtm)
    priority_code = (tq1.get(9) or obr.get(27, 6) or orc.get(7, 6)).upper()
    procedure = code(obr, 4) if obr.get(4) else code(obr, 44)
    requested = code(obr, 44) if obr.get(44) else code(obr, 4)
    ordering_id, ordering = xcn(orc, 12)
    if not ordering:
        ordering_id, ordering = xcn(obr, 16)
    referring_id, referring = xcn(pv1, 8)
    accession = ipc0.get(1) or obr.get(18)
    order = OrderIn(
        control=control,
        order_status=orc.get(5),
        placer_number=check_len(ei(orc, 2) or ei(obr, 2), 64, "ORC-2 placer order number"),
        filler_number=check_len(ei(orc, 3) or ei(obr, 3), 64, "ORC-3 filler order number"),
        accession=check_len(accession, 16, "IPC-1 accession number" if ipcs else "OBR-18 accession number"),
        requested_procedure_id=check_len(ipc0.get(2) or obr.get(19), 16, "requested procedure id (OBR-19/IPC-2)"),
        study_uid=check_uid(ipc0.get(3) or zds.get(1), "the Study Instance UID (ZDS-1/IPC-3)"),
        procedure=procedure,
        requested_procedure=requested,
        modality=check_len(ipc0.get(5) or obr.get(24), 16, "modality (OBR-24/IPC-5)").upper(),
        reason=obr.get(31, 2) or obr.get(31, 1) or orc.get(16, 2) or orc.get(16, 1),
        ordering_provider=ordering,
        referring_physician=referring,
        priority=PRIORITY.get(priority_code[:1], "") if priority_code else "",
        start_date=start_date,
        start_time=start_time,
    )
    order.attrs = {k: v for k, v in {
        "requested_time": obr.get(7), "medical_alerts": obr.text(13), "transport": obr.get(30),
        "priority_code": priority_code, "ordering_provider_id": ordering_id, "referring_physician_id": referring_id,
        "patient_class": pv1.get(2), "location": pv1.text(3).replace(enc[0], " ").strip(), "visit_number": pv1.get(19),
        "entering_organization": orc.get(17, 2) or orc.get(17, 1),
        "comments": "\n".join(n.text(3) for n in g["nte"] if n.text(3)),
    }.items() if v}  # fmt: skip
    technician = ndl(obr, 34)
    if ipcs:
        steps = [_ipc_step(ipc, obr, technician) for ipc in ipcs]
    else:
        alternate = code(obr, 4, 3)
        protocol = alternate if alternate["code"] else code(obr, 4)
        steps = [
            SpsIn(
                sps_id=check_len(obr.get(20), 16, "OBR-20 scheduled procedure step id"),
                modality=order.modality, start_date=start_date, start_time=start_time,
                description=alternate["text"] or procedure.get("text", ""),
                protocol_codes=[protocol] if protocol["code"] else [], performing_physician=technician,
            )
        ]  # fmt: skip
    return order, steps


def _ipc_step(ipc: Seg, obr: Seg, technician: str) -> SpsIn:
    protocols = [code(ipc, 6, rep=r) for r in range(len(ipc.reps(6)))]
    protocols = [p for p in protocols if p["code"]]
    return SpsIn(
        sps_id=check_len(ipc.get(4), 16, "IPC-4 scheduled procedure step id"),
        modality=check_len(ipc.get(5), 16, "IPC-5 modality").upper(),
        station_ae=[ae for r in range(len(ipc.reps(9))) if (ae := ipc.get(9, rep=r))],
        station_name=ipc.get(7),
        location=ipc.get(8),
        description=next((p["text"] for p in protocols if p["text"]), "") or obr.get(4, 2),
        protocol_codes=protocols,
        performing_physician=technician,
    )


def _reports(head: Header, segs: list[tuple[str, Seg]], default_issuer: str | None) -> ReportMessage:
    pid = _first(segs, "PID")
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
