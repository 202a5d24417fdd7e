"""Inbound placer orders for the RIS, ORM^O01 / OMI^O23, parsed into dataclasses (pure: no database).

ORC groups into :class:`OrderIn` requested procedures with their :class:`SpsIn` steps, and the
timing (TQ1/ORC-7/OBR-27) and priority helpers. The field mapping is described in
:mod:`ris_core.hl7in`, whose ``parse()`` calls :func:`parse_orders` (and re-exports these names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mappings.filters import hl7_to_dicom_date, hl7_to_dicom_time
from ris_core.hl7in_common import (
    Header,
    PatientIn,
    Seg,
    UnusableMessage,
    check_len,
    check_uid,
    code,
    ei,
    first_segment,
    ndl,
    patient,
    xcn,
)

PRIORITY = {"S": "STAT", "A": "HIGH", "P": "HIGH", "C": "HIGH", "R": "ROUTINE", "T": "MEDIUM"}
ORDER_CONTROLS = ("NW", "XO", "SC", "CA", "DC", "HD", "RL")


def dtm(value: str) -> tuple[str, str]:
    """An HL7 DTM as (DICOM DA, DICOM TM); ``("", "")`` when it is not a date."""
    day = hl7_to_dicom_date(value)
    return (day, hl7_to_dicom_time(value)) if day else ("", "")


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


def parse_orders(head: Header, segs: list[tuple[str, Seg]], default_issuer: str | None) -> OrderMessage:
    pid = first_segment(segs, "PID")
    if pid is None:
        raise UnusableMessage("PID segment is missing")
    who = patient(pid, default_issuer)
    pv1 = first_segment(segs, "PV1") or Seg([], pid.enc)
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
