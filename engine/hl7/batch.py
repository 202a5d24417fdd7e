"""Split a file or stream into HL7 messages: MLLP frames, FHS/BHS batches, or plain text."""

from __future__ import annotations

from engine.hl7.mllp import SB, MLLPDecoder

ENVELOPE_SEGMENTS = (b"FHS", b"BHS", b"BTS", b"FTS")
_BOM = b"\xef\xbb\xbf"


def _is_msh(segment: bytes) -> bool:
    """True when *segment* is an MSH segment header (``MSH`` followed by a field separator)."""
    return len(segment) > 3 and segment[:3] == b"MSH" and not chr(segment[3]).isalnum() and segment[3] not in b" \t"


def split_messages(data: bytes) -> list[bytes]:
    """Split file content into CR-separated HL7 messages (MLLP frames, FHS/BHS batches, plain text)."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if SB in data:
        decoder = MLLPDecoder(max_length=len(data) + 1)
        payloads = decoder.feed(data)
    else:
        payloads = [data]
    messages: list[list[bytes]] = []
    for payload in payloads:
        current: list[bytes] | None = None
        for segment in payload.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r"):
            if not segment.strip() or segment[:3] in ENVELOPE_SEGMENTS:
                continue
            if _is_msh(segment):
                current = [segment]
                messages.append(current)
            elif current is not None:
                current.append(segment)
    return [b"\r".join(segments) + b"\r" for segments in messages]
