"""HL7 v2 acknowledgements: build ACKs, decide whether to send one, read one back.

Original mode answers AA/AE/AR; enhanced mode (MSH-15 valued) answers the accept
acknowledgement CA/CE/CR, and only when MSH-15 asks for it (AL, ER, SU; NE never).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import datetime

from engine.hl7.message import HL7Error, HL7Message, escape, unescape

#: HL7 table 0357 (message error condition codes).
TABLE_0357: dict[str, str] = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}

ERROR_CODES = frozenset({"AE", "AR", "CE", "CR"})
ACK_CODES = frozenset({"AA", "CA"}) | ERROR_CODES

_DEFAULT_ENC = "^~\\&"
_MSA3_MAX = 80  # MSA-3 is ST(80) in v2.3
_counter = itertools.count()


def new_control_id() -> str:
    """A fresh MSH-10 for an outbound message: 13 digits of epoch ms + a 5-digit counter (18 chars)."""
    return str(time.time_ns() // 1_000_000 * 100_000 + next(_counter) % 100_000)


def _join(sep: str, fields: list[str]) -> str:
    while len(fields) > 1 and fields[-1] == "":
        fields.pop()
    return sep.join(fields)


def _printable(value: str) -> str:
    return "".join(c for c in value if c.isprintable())


def _salvage(raw_header: str) -> tuple[str, str, dict[int, str]]:
    """Separator, encoding characters and MSH-3..6/MSH-10 read from a raw header, best effort."""
    if not raw_header.startswith("MSH") or len(raw_header) < 4:
        return "|", _DEFAULT_ENC, {}
    sep = raw_header[3]
    if sep.isalnum() or sep.isspace():
        return "|", _DEFAULT_ENC, {}
    seg = raw_header.replace("\n", "\r").split("\r", 1)[0]
    fields = seg.split(sep)  # fields[k] is MSH-(k+1)
    enc = fields[1] if len(fields) > 1 else ""
    if len(enc) < 4 or len(set(enc[:4])) < 4 or sep in enc or any(c.isalnum() or c.isspace() for c in enc[:4]):
        enc = _DEFAULT_ENC
    values = {n: _printable(fields[n - 1]) for n in (3, 4, 5, 6, 10) if n - 1 < len(fields)}
    return sep, enc, values


_TS_CACHE: list = [0, ""]


def _timestamp() -> str:
    """Local time as YYYYMMDDHHMMSS, formatted at most once per second."""
    second = int(time.time())
    if _TS_CACHE[0] != second:
        _TS_CACHE[:] = [second, time.strftime("%Y%m%d%H%M%S", time.localtime(second))]
    return _TS_CACHE[1]


def build_ack(
    msg: HL7Message | None,
    code: str,
    *,
    reason: str = "",
    error_code: str = "207",
    control_id: str | None = None,
    now: datetime | None = None,
    raw_header: str | None = None,
    location: str = "",
) -> str:
    """Build an ACK for *msg* (or a generic one when it is ``None``); CR-separated, no trailing CR.

    *code* is AA/AE/AR or CA/CE/CR. Error codes add MSA-3 (v2.3, at most 80 chars) and
    an ERR segment with ERR-2 *location* (``MSH^1^10`` style), ERR-3 *error_code* from
    table 0357 and ERR-8 *reason*. All text is HL7-escaped.
    """
    if code not in ACK_CODES:
        raise ValueError(f"unknown acknowledgement code {code!r} (expected one of {sorted(ACK_CODES)})")
    ts = (now or datetime.now()).strftime("%Y%m%d%H%M%S") if now is not None else _timestamp()
    ack_id = control_id or new_control_id()
    if msg is not None:
        sep, enc = msg.field_sep, msg.enc
        fields = msg.msh_fields()
        if len(fields) < 19:
            fields = fields + [""] * (19 - len(fields))
        msg_type = fields[9].split(enc[1], 1)[0].split(enc[0], 2)  # MSH-9, first repetition
        trigger = msg_type[1] if len(msg_type) > 1 else ""  # MSH-9.2 as sent
        msh = [
            "MSH", fields[2] or enc, fields[5], fields[6], fields[3], fields[4], ts, "",
            f"ACK{enc[0]}{trigger}{enc[0]}ACK" if trigger else "ACK", ack_id, fields[11] or "P", fields[12] or "2.5",
        ]  # fmt: skip
        if fields[18]:
            msh += ["", "", "", "", "", fields[18]]
        ref_id = fields[10]
    else:
        sep, enc, old = _salvage(raw_header or "")
        msh = ["MSH", enc, old.get(5, ""), old.get(6, ""), old.get(3, ""), old.get(4, ""), ts, ""]
        msh += ["ACK", ack_id, "P", "2.5"]
        ref_id = old.get(10, "")

    def esc(text: str) -> str:
        return escape(text, sep, enc)

    is_error = code in ERROR_CODES
    table_text = TABLE_0357.get(error_code, "")
    msa3 = reason or (table_text if is_error else "")
    msa = f"MSA{sep}{code}{sep}{ref_id}" + (f"{sep}{esc(msa3[:_MSA3_MAX])}" if msa3 else "")
    segments = [_join(sep, msh), msa.rstrip(sep) if not msa3 else msa]
    if is_error:
        err3 = enc[0].join([esc(error_code), esc(table_text), "HL70357"])
        err2 = enc[0].join(esc(part) for part in location.split("^")) if location else ""
        segments.append(_join(sep, ["ERR", "", err2, err3, "E", "", "", "", esc(reason)]))
    return "\r".join(segments)


_ORIGINAL_CODES = {"accept": "AA", "error": "AE", "reject": "AR"}
_ENHANCED_CODES = {"accept": "CA", "error": "CE", "reject": "CR"}


@dataclass(frozen=True)
class AckPolicy:
    """How an inbound message wants to be acknowledged (MSH-15 accept, MSH-16 application)."""

    enhanced: bool
    accept: str = ""
    application: str = ""

    def should_send(self, success: bool) -> bool:
        """Whether to send the (accept) ACK: always in original mode, else per MSH-15 AL/NE/ER/SU."""
        if not self.enhanced:
            return True
        if self.accept == "NE":
            return False
        if self.accept == "ER":
            return not success
        if self.accept == "SU":
            return success
        return True  # AL, and unknown values, are safest answered

    def code_for(self, outcome: str) -> str:
        """Map ``accept``/``error``/``reject`` to AA/AE/AR (original) or CA/CE/CR (enhanced)."""
        code = (_ENHANCED_CODES if self.enhanced else _ORIGINAL_CODES).get(outcome)
        if code is None:
            raise ValueError(f"unknown ACK outcome {outcome!r} (expected accept, error or reject)")
        return code


ORIGINAL_MODE = AckPolicy(enhanced=False)


def ack_policy(msg: HL7Message) -> AckPolicy:
    """Read MSH-15/16: enhanced mode when MSH-15 is valued, original mode otherwise."""
    fields = msg.msh_fields()
    n, enc = len(fields), msg.enc
    accept = unescape(fields[15], enc).strip().upper() if n > 15 else ""
    application = unescape(fields[16], enc).strip().upper() if n > 16 else ""
    if not accept and not application:
        return ORIGINAL_MODE  # the common case: original acknowledgement mode
    return AckPolicy(enhanced=bool(accept), accept=accept, application=application)


def ack_required(msg: HL7Message, success: bool) -> tuple[str | None, bool]:
    """Shortcut: (ACK code to send or ``None`` when none is wanted, enhanced mode?)."""
    policy = ack_policy(msg)
    if not policy.should_send(success):
        return None, policy.enhanced
    return policy.code_for("accept" if success else "error"), policy.enhanced


def parse_ack(text: str) -> tuple[str, str, str]:
    """Return (MSA-1 code, MSA-2 control id, reason from ERR-8, MSA-3 or ERR-3.2); ValueError if no MSA."""
    try:
        msg = HL7Message(text.lstrip("\r\n\t "))
    except HL7Error as e:
        raise ValueError(f"response is not an HL7 ACK: {e}") from e
    msa = msg.segment_fields("MSA")
    if msa is None:
        raise ValueError("response is not an HL7 ACK: it has no MSA segment")
    enc = msg.enc
    n = len(msa)
    code = unescape(msa[1], enc).strip() if n > 1 else ""
    acked = unescape(msa[2], enc) if n > 2 else ""
    reason = ""
    if msg.segment_fields("ERR") is not None:
        reason = msg.get("ERR-8")
    if not reason and n > 3:
        reason = unescape(msa[3], enc)
    if not reason and msg.segment_fields("ERR") is not None:
        reason = msg.get("ERR-3.2")
    return code, acked, reason
