"""Where things live under the archive root: pure functions from attributes to relative paths.

An instance's path comes from the configured layout (``{StudyInstanceUID}/{SeriesInstanceUID}/
{SOPInstanceUID}.dcm`` by default), whose placeholders are DICOM keywords. Every value put into a
path must be a valid UID or a short safe token, so no attribute a sender controls can name a path
outside the root (``..``, ``/``, an absolute path) or an empty folder name.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from datetime import UTC, datetime

#: Keywords a layout may use: UIDs, plus short coded values (checked as safe tokens when rendered).
UID_KEYWORDS = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"})
TOKEN_KEYWORDS = frozenset({"Modality", "StudyDate", "SeriesDate", "SeriesNumber", "InstanceNumber"})
LAYOUT_KEYWORDS = UID_KEYWORDS | TOKEN_KEYWORDS
HL7_PLACEHOLDERS = frozenset({"channel", "date", "message_id"})
INCOMING = ".incoming"  # the folder of temp files under the root; no layout may render into it

UID_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)*$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9_-])?$")
_FORMATTER = string.Formatter()


def is_uid(value: str) -> bool:
    """True for a syntactically valid UID: digits and single dots, at most 64 characters."""
    return 0 < len(value) <= 64 and UID_RE.match(value) is not None


def _fields(layout: str) -> list[tuple[str, str | None]]:
    """(literal text, placeholder name or None) pairs; ValueError for format specs or conversions."""
    try:
        parsed = list(_FORMATTER.parse(layout))
    except ValueError as exc:
        raise ValueError(f"invalid layout {layout!r}: {exc}") from None
    out = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (spec or conversion):
            raise ValueError(f"layout placeholder {{{name}}} must not have a format spec or conversion")
        if name == "":
            raise ValueError("layout has an empty placeholder {}")
        out.append((literal, name))
    return out


def _check_literals(layout: str, fields: list[tuple[str, str | None]]) -> None:
    """Literal text may hold folder separators but no way out of the root."""
    if not layout or layout.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", layout):
        raise ValueError(f"layout {layout!r} must be a relative path")
    for literal, _ in fields:
        if "\\" in literal or "\0" in literal:
            raise ValueError(f"layout {layout!r} must use '/' as its only separator")
    # Each folder level made only of literals must be a plain name.
    skeleton = "".join(literal + ("\x01" if name else "") for literal, name in fields)
    for part in skeleton.split("/"):
        if part == "" or part in (".", "..") or part.startswith("."):
            raise ValueError(f"layout {layout!r} has an empty, hidden or relative folder level {part!r}")


def check_layout(layout: str) -> None:
    """Validate an instance layout; ValueError naming the bad placeholder or part."""
    fields = _fields(layout)
    names = [name for _, name in fields if name is not None]
    for name in names:
        if name not in LAYOUT_KEYWORDS:
            allowed = ", ".join("{" + k + "}" for k in sorted(LAYOUT_KEYWORDS))
            raise ValueError(f"unknown layout placeholder {{{name}}} (allowed: {allowed})")
    if "SOPInstanceUID" not in names:
        raise ValueError("layout must contain {SOPInstanceUID} (otherwise instances overwrite each other)")
    _check_literals(layout, fields)


def check_hl7_layout(layout: str) -> None:
    """Validate an HL7 layout (``{channel}``, ``{date}``, ``{message_id}``); ValueError if bad."""
    fields = _fields(layout)
    names = [name for _, name in fields if name is not None]
    for name in names:
        if name not in HL7_PLACEHOLDERS:
            allowed = ", ".join("{" + k + "}" for k in sorted(HL7_PLACEHOLDERS))
            raise ValueError(f"unknown hl7_layout placeholder {{{name}}} (allowed: {allowed})")
    if "message_id" not in names:
        raise ValueError("hl7_layout must contain {message_id}")
    _check_literals(layout, fields)


def _safe(name: str, value: str | None) -> str:
    if value is None or value == "":
        raise ValueError(f"empty value for layout placeholder {{{name}}}")
    if name in UID_KEYWORDS:
        if not is_uid(value):
            raise ValueError(f"{name} {value[:80]!r} is not a valid UID")
        return value
    if not TOKEN_RE.match(value):
        raise ValueError(f"{name} {value[:80]!r} cannot be used in a path (letters, digits, '_', '-', '.' only)")
    return value


def _join(parts: list[str], layout: str) -> str:
    path = "".join(parts)
    segments = path.split("/")
    if any(s in ("", ".", "..") for s in segments) or segments[0] == INCOMING:
        raise ValueError(f"layout {layout!r} rendered an unsafe path")
    return path


def instance_path(attrs: Mapping[str, str], layout: str) -> str:
    """The path of an instance relative to the archive root; ValueError for missing or unsafe values."""
    fields = _fields(layout)
    parts: list[str] = []
    for literal, name in fields:
        parts.append(literal)
        if name is not None:
            if name not in LAYOUT_KEYWORDS:
                raise ValueError(f"unknown layout placeholder {{{name}}}")
            parts.append(_safe(name, attrs.get(name)))
    return _join(parts, layout)


def hl7_path(channel: str, message_id: int, when: datetime | float, layout: str) -> str:
    """The path of an archived HL7 message relative to the root; ``{date}`` is ``YYYY/MM/DD`` (UTC)."""
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, UTC)
    elif when.tzinfo is not None:
        when = when.astimezone(UTC)
    if not TOKEN_RE.match(channel or ""):
        raise ValueError(f"channel name {channel!r} cannot be used in a path")
    if isinstance(message_id, bool) or not isinstance(message_id, int) or message_id < 0:
        raise ValueError(f"message id {message_id!r} must be a non-negative integer")
    values = {"channel": channel, "date": when.strftime("%Y/%m/%d"), "message_id": str(message_id)}
    parts: list[str] = []
    for literal, name in _fields(layout):
        parts.append(literal)
        if name is not None:
            if name not in HL7_PLACEHOLDERS:
                raise ValueError(f"unknown hl7_layout placeholder {{{name}}}")
            parts.append(values[name])
    return _join(parts, layout)


def hl7_pattern(layout: str) -> re.Pattern[str]:
    """A regex matching the paths *layout* renders; group ``message_id`` holds the id (for verify)."""
    check_hl7_layout(layout)
    pieces = {"channel": r"(?:[A-Za-z0-9_.-]+)", "date": r"(?:\d{4}/\d{2}/\d{2})", "message_id": r"(?P<message_id>\d+)"}
    seen: set[str] = set()
    out = []
    for literal, name in _fields(layout):
        out.append(re.escape(literal))
        if name is not None:
            # A repeated placeholder matches the same shape again (named groups may appear once).
            out.append(pieces[name] if name not in seen else pieces[name].replace("?P<message_id>", "?:"))
            seen.add(name)
    return re.compile("^" + "".join(out) + "$")
