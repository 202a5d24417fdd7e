"""Structured log lines (``ts level logger message``, or JSON); Twisted's log goes to the same place.

A :class:`RedactingFilter` on the handler masks what looks like PHI in records at INFO and above,
a last line of defence behind the rule that such records never carry PHI (DESIGN.md §4). It runs
only for records that are emitted, so a log call below the level costs nothing extra.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import TextIO

from twisted.logger import STDLibLogObserver, globalLogBeginner

MASK = "***"
# An HL7 segment: three-character id then the field separator; everything up to the segment end goes.
_SEGMENT = re.compile(r"(?<![A-Za-z0-9])([A-Z][A-Z0-9]{2})\|[^\r\n]*")
# A quoted value holding a caret (a person name, an HL7 composite): the whole quoted value goes.
_QUOTED = re.compile(r"""'[^'\r\n]*\^[^'\r\n]*'|"[^"\r\n]*\^[^"\r\n]*\"""")
# A bare caret composite: a DICOM PN or HL7 XPN (DOE^JOHN), an HL7 CX (42^^^HOSP^MR). Message types
# (ADT^A01, ORM^O01^ORM_O01) are kept: they name no one and say what a line is about.
_COMPOSITE = re.compile(r"(?<![\w^])\w[\w'.\-]*(?:\^[\w'.\-]*)+")
_MESSAGE_TYPE = re.compile(r"[A-Z]{3}\^[A-Z][0-9A-Z]{2}(?:\^[A-Z]{3}_[A-Z][0-9A-Z]{2})?")
# A patient attribute named in the text (pydicom's "(0010,0010) Patient's Name PN: ...", PatientID=...).
_ATTRIBUTE = re.compile(
    r"(Patient'?s?\s?(?:Name|ID|Birth\s?Date)|Other\s?Patient\s?IDs|PatientBirthDate)"
    r"(\s*(?:[A-Z]{2}:)?\s*[=:]?\s*)('[^']*'|\"[^\"]*\"|[^\s,;)\]}]+)",
    re.IGNORECASE,
)
_HINTS = ("|", "^", "atient")  # a record without any of these has nothing the patterns would mask


def redact(text: str) -> str:
    """*text* with HL7 segments, caret-joined names and named patient attributes masked."""
    if not any(hint in text for hint in _HINTS):
        return text
    text = _SEGMENT.sub(lambda m: f"{m.group(1)}|{MASK}", text)
    text = _ATTRIBUTE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _QUOTED.sub(lambda m: f"{m.group(0)[0]}{MASK}{m.group(0)[0]}", text)
    return _COMPOSITE.sub(_composite, text)


def _composite(match: re.Match[str]) -> str:
    return match.group(0) if _MESSAGE_TYPE.fullmatch(match.group(0)) else MASK


class RedactingFilter(logging.Filter):
    """Masks PHI-looking text in the message and traceback of every record at ``level`` or above."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__()
        self.level = level
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite *record* in place (message rendered once, arguments dropped); never drops a record."""
        if record.levelno < self.level:
            return True
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` (and ``exc`` with a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise *record*."""
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger (PHI masked at INFO and above) and route Twisted's logs into it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactingFilter(logging.INFO))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom logs every DIMSE exchange at INFO ("Sending Store Request" per instance): keep it to warnings.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, root.level))
    globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")], redirectStandardIO=False)
