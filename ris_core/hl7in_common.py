"""Shared pieces of inbound HL7 parsing for the RIS (pure: no database).

The refusals (:class:`Rejected`, :class:`UnusableMessage`), segment access (:class:`Seg`), the
field helpers every message type uses (XPN/XCN/NDL names, EI, CE/CWE codes, UID and length
checks), the MSH :class:`Header` and the PID/MRG :class:`PatientIn`. The field mapping is
described in :mod:`ris_core.hl7in`, which re-exports these names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.hl7.message import unescape
from mappings.filters import hl7_sex_to_dicom, hl7_to_dicom_date

UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
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


def first_segment(segs: list[tuple[str, Seg]], name: str) -> Seg | None:
    return next((s for n, s in segs if n == name), None)
