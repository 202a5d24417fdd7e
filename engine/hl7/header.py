"""The header values every inbound message is indexed by, read in one pass (the hot path)."""

from __future__ import annotations

from typing import Any

from engine.hl7.message import HL7Message, unescape


def _first_component(segment: str | None, n: int, sep: str, enc: str) -> str:
    """Component 1 of the first repetition of field *n* of *segment*, unescaped (``""`` if absent)."""
    if segment is None:
        return ""
    fields = segment.split(sep, n + 1)
    if len(fields) <= n:
        return ""
    value = fields[n].split(enc[1], 1)[0].split(enc[0], 1)[0]
    return unescape(value, enc) if enc[2] in value else value


def header_values(msg: HL7Message) -> dict[str, Any]:
    """Indexed header values (ids only; truncated to the column sizes).

    The same values as ``msg.get("MSH-10")``, ``msg.message_type``, ``msg.get("PID-3[1].1")``
    and ``msg.get("IPC-1.1") or msg.get("OBR-18.1")``, read from one split of MSH and one pass
    over the segments: this runs for every inbound message.
    """
    fields = msg.msh_fields()
    n = len(fields)
    sep, enc = msg.field_sep, msg.enc
    control_id = unescape(fields[10], enc) if n > 10 else ""
    message_type = ""
    if n > 9 and fields[9]:
        parts = fields[9].split(enc[1], 1)[0].split(enc[0], 2)
        message_type = unescape(parts[0], enc)
        if len(parts) > 1 and parts[1]:
            message_type = f"{message_type}^{unescape(parts[1], enc)}"
    pid = ipc = obr = None
    for segment in msg.segments:
        tag = segment[:3]
        if tag == "PID":
            pid = pid or segment
        elif tag == "IPC":
            ipc = ipc or segment
        elif tag == "OBR":
            obr = obr or segment
    accession = _first_component(ipc, 1, sep, enc) or _first_component(obr, 18, sep, enc)
    return {
        "control_id": control_id[:64] or None,
        "sending_app": (fields[3] if n > 3 else "")[:180] or None,
        "sending_facility": (fields[4] if n > 4 else "")[:180] or None,
        "message_type": message_type[:32] or None,
        "patient_id": _first_component(pid, 3, sep, enc)[:64] or None,
        "accession": accession[:64] or None,
    }
