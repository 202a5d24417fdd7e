"""Split a file or stream into HL7 messages: MLLP frames, FHS/BHS batches, or plain text."""

from __future__ import annotations

import re

from engine.hl7.mllp import EB, SB

_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")
_MSH_START = re.compile(rb"(?:^|\r)(?=MSH)")


def split_messages(data: bytes) -> list[bytes]:
    """Messages in *data* with CR segment separators (envelope segments dropped)."""
    chunks = [c.split(EB, 1)[0] for c in data.split(SB)[1:]] if SB in data else [data]
    out: list[bytes] = []
    for chunk in chunks:
        text = chunk.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        segments = [s for s in text.split(b"\r") if s.strip() and s[:3] not in _ENVELOPE]
        current: list[bytes] = []
        for seg in segments:
            if seg.startswith(b"MSH") and current:
                out.append(b"\r".join(current))
                current = []
            current.append(seg)
        if current:
            out.append(b"\r".join(current))
    return [m for m in out if m.startswith(b"MSH")]
