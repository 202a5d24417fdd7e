"""Jinja filters and globals for HL7 v2 <-> DICOM mappings (DESIGN.md §3.10).

Every filter is a small pure function: ``None`` or unreadable input gives ``""``
rather than an exception, so a template can map optional fields without guards.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime

from pydicom.uid import generate_uid

from engine.hl7.message import escape, unescape

_HL7_DTM = re.compile(
    r"^(?P<date>\d{4}(?:\d{2}(?:\d{2})?)?)"
    r"(?P<time>\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?"
    r"(?P<tz>[+-]\d{4})?$"
)
_DICOM_TM = re.compile(r"^\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?$")
_SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_HL7_TO_DICOM_SEX = {"M": "M", "F": "F", "O": "O", "A": "O"}


def _text(value: object) -> str:
    """Return *value* as a stripped string, ``""`` for ``None``."""
    return "" if value is None else str(value).strip()


def _valid_date(digits: str) -> bool:
    """True when *digits* (YYYY, YYYYMM or YYYYMMDD) names a real calendar date."""
    try:
        date(int(digits[:4]), int(digits[4:6] or 1), int(digits[6:8] or 1))
    except ValueError:
        return False
    return True


def _valid_time(digits: str) -> bool:
    """True when *digits* (HH[MM[SS[.F]]]) is a time of day."""
    hh, mm, ss = digits[:2], digits[2:4] or "0", digits[4:6] or "0"
    return int(hh) < 24 and int(mm) < 60 and int(ss) < 60


def _valid_offset(tz: str) -> bool:
    """True when *tz* is empty or a UTC offset ``+HHMM``/``-HHMM`` within ±14:00."""
    return not tz or (int(tz[1:3]) <= 14 and int(tz[3:5]) < 60)


def _split_hl7_dtm(value: object) -> tuple[str, str, str] | None:
    """Split an HL7 DT/DTM/TS into (date, time, offset), or ``None`` if invalid."""
    text = _text(value).split("^", 1)[0]  # TS: a DTM with an optional ^precision
    m = _HL7_DTM.match(text)
    if not m:
        return None
    day, time, tz = m.group("date"), m.group("time") or "", m.group("tz") or ""
    if time and len(day) < 8:
        return None
    if not (_valid_date(day) and (not time or _valid_time(time)) and _valid_offset(tz)):
        return None
    return day, time, tz


def hl7_escape(value: object, field_sep: str = "|", enc: str = "^~\\&") -> str:
    """Escape HL7 delimiters in *value* so it fits inside one component."""
    return "" if value is None else escape(str(value), field_sep, enc)


def hl7_unescape(value: object, enc: str = "^~\\&") -> str:
    r"""Decode HL7 escape sequences (``\F\``, ``\S\`` …) in *value*."""
    return "" if value is None else unescape(str(value), enc)


def hl7_to_dicom_date(value: object) -> str:
    """HL7 DT/DTM (``20240131123045+0100``) to DICOM DA (``20240131``); ``""`` if not a full date."""
    parts = _split_hl7_dtm(value)
    return parts[0] if parts and len(parts[0]) == 8 else ""


def hl7_to_dicom_time(value: object) -> str:
    """HL7 DTM (``20240131123045.123``) to DICOM TM (``123045.123``); the offset is dropped."""
    parts = _split_hl7_dtm(value)
    return parts[1] if parts else ""


def hl7_to_dicom_datetime(value: object) -> str:
    """HL7 DTM to DICOM DT (same digits, fraction and ``+HHMM`` offset kept); ``""`` if invalid."""
    parts = _split_hl7_dtm(value)
    return "".join(parts) if parts else ""


def dicom_to_hl7_date(value: object) -> str:
    """DICOM DA (``20240131``, legacy ``2024.01.31`` accepted) to HL7 DT; ``""`` if invalid."""
    text = _text(value)
    if len(text) == 10 and text[4] == text[7] == ".":
        text = text.replace(".", "")
    if len(text) != 8 or not text.isdigit() or not _valid_date(text):
        return ""
    return text


def dicom_to_hl7_datetime(da: object, tm: object = "") -> str:
    """DICOM DA + TM to HL7 DTM (``20240131123045``); fractions cut to 4 digits, bad TM dropped."""
    day = dicom_to_hl7_date(da)
    if not day:
        return ""
    time = _text(tm).replace(":", "")  # ACR-NEMA legacy HH:MM:SS
    if not _DICOM_TM.match(time) or not _valid_time(time):
        return day
    whole, _, fraction = time.partition(".")
    return day + whole + (f".{fraction[:4]}" if fraction else "")


def _strip_trailing(components: list[str]) -> str:
    """Join components with ``^`` after dropping empty ones at the end."""
    while components and not components[-1]:
        components.pop()
    return "^".join(components)


def hl7_name_to_dicom(value: object) -> str:
    """HL7 XPN ``family^given^middle^suffix^prefix^degree`` to DICOM PN ``family^given^middle^prefix^suffix``.

    Only the first repetition is used, the family name loses its ``&`` subcomponents,
    and a degree is appended to the DICOM suffix (``JR MD``) as PS3.5 allows.
    """
    first = _text(value).split("~", 1)[0]
    parts = [p.strip() for p in first.split("^")] + [""] * 6
    family, given, middle, suffix, prefix, degree = parts[:6]
    family = family.split("&", 1)[0]
    suffix = " ".join(p for p in (suffix, degree) if p)
    return _strip_trailing([family, given, middle, prefix, suffix])


def dicom_name_to_hl7(value: object) -> str:
    """DICOM PN ``family^given^middle^prefix^suffix`` to HL7 XPN ``family^given^middle^suffix^prefix``.

    Only the alphabetic group (before the first ``=``) is used.
    """
    alphabetic = _text(value).split("=", 1)[0]
    parts = [p.strip() for p in alphabetic.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    return _strip_trailing([family, given, middle, suffix, prefix])


def hl7_sex_to_dicom(value: object) -> str:
    """HL7 table 0001 sex (M/F/O/A/U/N) to DICOM Patient's Sex (M/F/O or ``""``)."""
    return _HL7_TO_DICOM_SEX.get(_text(value).upper(), "")


def dicom_sex_to_hl7(value: object) -> str:
    """DICOM Patient's Sex (M/F/O or empty) to HL7 table 0001 (M/F/O, else U)."""
    sex = _text(value).upper()
    return sex if sex in ("M", "F", "O") else "U"


def now(fmt: str = "%Y%m%d%H%M%S") -> str:
    """The local time now, formatted with *fmt* (default: an HL7 DTM to the second)."""
    return datetime.now().strftime(fmt)


def uid(prefix: str | None = "1.2.826.0.1.3680043.8.498.") -> str:
    """A new DICOM UID under *prefix* (pydicom's root by default; ``None`` gives a ``2.25.`` UUID UID)."""
    return str(generate_uid(prefix=prefix))


def _field(value: object, field_sep: str, enc: str) -> str:
    """One field for :func:`hl7_segment`: a list/tuple becomes escaped ``^`` components."""
    if isinstance(value, list | tuple):
        return enc[0].join(hl7_escape(v, field_sep, enc) for v in value)
    return hl7_escape(value, field_sep, enc)


def hl7_segment(name: str, *fields: object) -> str:
    """Build ``NAME|f1|f2…`` with each field escaped; a list/tuple field gives ``^``-joined components.

    ``None`` reads as an empty field. MSH is refused: its first two fields are delimiters.
    """
    if not _SEGMENT_NAME.match(str(name)) or name == "MSH":
        raise ValueError(f"hl7_segment: invalid segment name {name!r} (expected e.g. PID, OBX; not MSH)")
    return "|".join([name, *(_field(f, "|", "^~\\&") for f in fields)])


FILTERS: dict[str, Callable[..., str]] = {
    "hl7_escape": hl7_escape,
    "hl7_unescape": hl7_unescape,
    "hl7_to_dicom_date": hl7_to_dicom_date,
    "hl7_to_dicom_time": hl7_to_dicom_time,
    "hl7_to_dicom_datetime": hl7_to_dicom_datetime,
    "dicom_to_hl7_date": dicom_to_hl7_date,
    "dicom_to_hl7_datetime": dicom_to_hl7_datetime,
    "hl7_name_to_dicom": hl7_name_to_dicom,
    "dicom_name_to_hl7": dicom_name_to_hl7,
    "hl7_sex_to_dicom": hl7_sex_to_dicom,
    "dicom_sex_to_hl7": dicom_sex_to_hl7,
}

GLOBALS: dict[str, Callable[..., str]] = {
    "now": now,
    "uid": uid,
    "hl7_segment": hl7_segment,
}
