"""Events: the non-HL7 messages a channel carries (a stored DICOM instance, later MPPS and RIS events).

An :class:`Event` goes through the same pipeline as an HL7 message: filters read its attributes
by DICOM keyword (``Modality == "CT"``), templates see it as ``msg`` (``msg["StudyInstanceUID"]``,
``msg.payload["path"]``), and without a transformer its JSON text is what destinations receive.

The JSON text (stored as the message's raw content) is::

    {"event": "dicom.stored", "attrs": {"StudyInstanceUID": "1.2...", ...}, <payload keys>}

``attrs`` maps DICOM keywords to string values (multi-valued ones backslash-separated, person
names in their DICOM ``^`` form); the payload carries what the event's producer adds (for a
stored instance: the archive-relative ``path``, ``sop_class_uid``, ``sop_instance_uid``,
``transfer_syntax``, ``size``, ``sha256``, ``calling_ae``).
"""

from __future__ import annotations

import json
import re
from typing import Any

#: What a filter path that is a DICOM keyword looks like (``Modality``, ``StudyInstanceUID``).
KEYWORD_RE = re.compile(r"^[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*$")  # CamelCase, at least one lower-case letter


class KeywordPath(str):
    """A filter path naming an attribute by keyword (an :class:`Event` answers it; HL7 reads ``""``)."""

    __slots__ = ()


class Event:
    """An event message: a kind, DICOM-keyword attributes and a JSON payload."""

    __slots__ = ("kind", "attrs", "payload", "_text")

    def __init__(self, kind: str, attrs: dict[str, str], payload: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self.attrs = attrs
        self.payload = dict(payload or {})
        self._text: str | None = None

    @classmethod
    def from_text(cls, text: str) -> Event:
        """Rebuild an event from its JSON text; ``ValueError`` if it is not one."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not an event: {exc.msg}") from None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("event"), str)
            or not isinstance(data.get("attrs"), dict)
        ):
            raise ValueError("not an event: expected an object with 'event' and 'attrs'")
        kind, attrs = data.pop("event"), data.pop("attrs")
        event = cls(kind, {str(k): "" if v is None else str(v) for k, v in attrs.items()}, data)
        event._text = text
        return event

    @property
    def text(self) -> str:
        """The JSON text (what is stored and, without a transformer, delivered)."""
        if self._text is None:
            self._text = json.dumps({"event": self.kind, "attrs": self.attrs, **self.payload}, separators=(",", ":"))
        return self._text

    def get(self, path: Any, default: str = "", *, raw: bool = False) -> str:
        """The attribute named by keyword *path*; *default* when absent or empty (HL7 paths read empty)."""
        value = self.attrs.get(path) if isinstance(path, str) else None
        return value or default

    def __getitem__(self, keyword: str) -> str:
        return self.get(keyword)

    def __contains__(self, keyword: str) -> bool:
        return bool(self.attrs.get(keyword))

    @property
    def control_id(self) -> str:
        """The id logged for this event (the SOP Instance UID for instances)."""
        return self.attrs.get("SOPInstanceUID") or self.payload.get("sop_instance_uid") or ""

    @property
    def message_type(self) -> str:
        """The stored message type: the event kind."""
        return self.kind

    def __repr__(self) -> str:
        return f"Event({self.kind!r}, {self.control_id!r})"
