"""C-FIND attribute matching (PS3.4 C.2.2.2): key values parsed once, applied as SQL or in Python.

A request value becomes a :class:`Key` holding *terms*; an entity matches a key when any term
matches any of its stored values (C.2.2.3), and a key without terms is universal (C.2.2.2.3).
Terms are :class:`Eq` (single value and list of UID matching), :class:`Like` (``*``/``?`` wild
cards, for the VRs C.2.2.2.4 names) and :class:`Range` (DA, TM, DT: ``a-b``, ``-b``, ``a-``; a
single TM or DT value is the range its precision covers, so ``1012`` matches 10:12:00-10:12:59.999999).
Date and time bounds are compared as strings in the index's normal form (``archive/schema.py``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from sqlalchemy import ColumnElement, and_, false, or_

IDENTIFIER_MISMATCH = 0xA900  # "Identifier does not match SOP Class"
UNABLE_TO_PROCESS = 0xC000  # "Unable to process" (an invalid key value)

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
TEXT_VRS = frozenset({"LT", "ST", "UT"})  # one value; a backslash is a character, leading spaces count
NUMBER_VRS = frozenset({"IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"})
ESCAPE = "\\"

Value = str | Sequence[str] | Sequence[Mapping[str, Any]] | None
"""A key's value: DICOM string form (backslash between values), a list of values, sequence items, or None."""

Identifier = Mapping[str, Value]
"""A C-FIND/C-MOVE/C-GET identifier as DICOM keyword → :data:`Value`."""

_TM = re.compile(r"(\d{2})(\d{2}(\d{2}(\.\d{1,6})?)?)?")
_DT = r"\d{4}(?:\d{2}){0,5}(?:\.\d{1,6})?(?:[+-]\d{4})?"
_DT_ONE = re.compile(r"(\d{4}(?:\d{2}){0,5}(?:\.\d{1,6})?)([+-]\d{4})?")
_DT_RANGE = re.compile(rf"({_DT})?-({_DT})?")
_TM_LOW, _TM_HIGH = "000000.000000", "235959.999999"
_DT_LOW, _DT_HIGH = "00000101000000.000000", "99991231235959.999999"


class QueryError(ValueError):
    """A request the SCP refuses: a DIMSE failure status, an error comment and the offending tags."""

    def __init__(self, status: int, comment: str, tags: Sequence[int] = ()) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment
        self.tags = tuple(tags)


@dataclass(frozen=True)
class Eq:
    """Single value (or one UID of a list): equal to *value*."""

    value: str


@dataclass(frozen=True)
class Like:
    """Wild card matching: *pattern* with DICOM ``*`` and ``?``."""

    pattern: str


@dataclass(frozen=True)
class Range:
    """Inclusive bounds in normal form (None: open); *explicit* when the request used ``-``."""

    low: str | None
    high: str | None
    explicit: bool = False
    low_offset: int | None = None  # DT only: minutes east of UTC, when the value gave one
    high_offset: int | None = None


Term = Eq | Like | Range


@dataclass(frozen=True)
class Key:
    """One key attribute of a request, parsed: terms to match (none: universal) or sequence item keys."""

    keyword: str
    tag: int
    vr: str
    terms: tuple[Term, ...] = ()
    items: Mapping[str, Key] | None = None  # SQ: the single item's keys; None: the whole sequence

    @property
    def universal(self) -> bool:
        """True when every entity matches this key (C.2.2.2.3)."""
        if self.vr == "SQ":
            return self.items is None or all(k.universal for k in self.items.values())
        return not self.terms


def keyword_vr(keyword: str) -> tuple[int, str] | None:
    """(tag, VR) of a DICOM keyword from pydicom's dictionary (first VR of ``US or SS``), or None."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    return tag, dictionary_VR(tag).split(" or ")[0]


def parse_identifier(identifier: Identifier) -> dict[str, Key]:
    """Keys of *identifier* by keyword; keywords unknown to the DICOM dictionary are left out."""
    keys: dict[str, Key] = {}
    for keyword, value in identifier.items():
        key = parse_key(keyword, value)
        if key is not None:
            keys[keyword] = key
    return keys


def parse_key(keyword: str, value: Value) -> Key | None:
    """One :class:`Key`; raises :class:`QueryError` on a malformed date, time or number."""
    found = keyword_vr(keyword)
    if found is None:
        return None
    tag, vr = found
    if vr == "SQ":
        items = [i for i in (value or ()) if isinstance(i, Mapping)]
        if len(items) > 1:
            raise QueryError(IDENTIFIER_MISMATCH, f"{keyword}: a sequence key has one item", [tag])
        return Key(keyword, tag, vr, items=parse_identifier(items[0]) if items and items[0] else None)
    values = _split(value, vr)
    if any(v and set(v) == {"*"} for v in values):
        return Key(keyword, tag, vr)  # "*" alone is universal matching (C.2.2.2.4 note 1)
    terms = tuple(_term(keyword, tag, vr, v) for v in values if v)
    return Key(keyword, tag, vr, terms)


def _split(value: Value, vr: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        parts = [value] if vr in TEXT_VRS else value.split("\\")
    else:
        parts = [str(v) for v in value if v is not None]
    if vr in TEXT_VRS or vr == "UC":
        return [p.rstrip(" \x00") for p in parts]
    return [p.strip(" \x00") for p in parts]


def _term(keyword: str, tag: int, vr: str, value: str) -> Term:
    try:
        if vr == "DA":
            return _da_term(value)
        if vr == "TM":
            return _tm_term(value)
        if vr == "DT":
            return _dt_term(value)
    except ValueError:
        raise QueryError(UNABLE_TO_PROCESS, f"{keyword}: invalid {vr} value or range", [tag]) from None
    if vr in WILDCARD_VRS and ("*" in value or "?" in value):
        return Like(value)
    if vr in NUMBER_VRS:
        try:
            float(value)
        except ValueError:
            raise QueryError(UNABLE_TO_PROCESS, f"{keyword}: invalid {vr} value", [tag]) from None
    return Eq(value)


def normal_date(value: str) -> str:
    """``YYYYMMDD`` from a DA value (the ACR-NEMA ``YYYY.MM.DD`` too); ValueError otherwise."""
    value = value.strip()
    if re.fullmatch(r"\d{4}\.\d{2}\.\d{2}", value):
        value = value.replace(".", "")
    if not re.fullmatch(r"\d{8}", value) or not ("01" <= value[4:6] <= "12" and "01" <= value[6:] <= "31"):
        raise ValueError(value)
    return value


def normal_time(value: str, *, high: bool = False) -> str:
    """``HHMMSS.ffffff`` from a TM value, padded low (or *high*: to the end of its precision)."""
    value = value.strip().replace(":", "")
    m = _TM.fullmatch(value)
    if not m or int(value[:2]) > 23 or int(value[2:4] or 0) > 59 or int(value[4:6] or 0) > 60:
        raise ValueError(value)
    return value + (_TM_HIGH if high else _TM_LOW)[len(value) :]


def normal_datetime(value: str, *, high: bool = False) -> tuple[str, int | None]:
    """(``YYYYMMDDHHMMSS.ffffff`` padded low or *high*, UTC offset in minutes or None) of a DT value."""
    m = _DT_ONE.fullmatch(value.strip())
    if not m:
        raise ValueError(value)
    body, offset = m.group(1), m.group(2)
    minutes = None
    if offset:
        sign = -1 if offset[0] == "-" else 1
        minutes = sign * (int(offset[1:3]) * 60 + int(offset[3:5]))
    return body + (_DT_HIGH if high else _DT_LOW)[len(body) :], minutes


def _da_term(value: str) -> Range:
    if "-" not in value:
        day = normal_date(value)
        return Range(day, day)
    low, _, high = (p.strip() for p in value.partition("-"))
    if "-" in high or not (low or high):
        raise ValueError(value)
    return Range(normal_date(low) if low else None, normal_date(high) if high else None, explicit=True)


def _tm_term(value: str) -> Range:
    if "-" not in value:
        return Range(normal_time(value), normal_time(value, high=True))
    low, _, high = (p.strip() for p in value.partition("-"))
    if "-" in high or not (low or high):
        raise ValueError(value)
    return Range(normal_time(low) if low else None, normal_time(high, high=True) if high else None, explicit=True)


def _dt_term(value: str) -> Range:
    value = value.replace(" ", "")
    if "-" not in value:
        (low, off), (high, _) = normal_datetime(value), normal_datetime(value, high=True)
        return Range(low, high, low_offset=off, high_offset=off)
    m = _DT_RANGE.fullmatch(value)
    if not m or not (m.group(1) or m.group(2)):
        raise ValueError(value)
    low, low_off = normal_datetime(m.group(1)) if m.group(1) else (None, None)
    high, high_off = normal_datetime(m.group(2), high=True) if m.group(2) else (None, None)
    return Range(low, high, explicit=True, low_offset=low_off, high_offset=high_off)


def combined_range(date: Key | None, time: Key | None) -> Range | None:
    """One DT range from a DA and a TM key that give the same form of range (C.2.2.2.5.4), else None."""
    if date is None or time is None or len(date.terms) != 1 or len(time.terms) != 1:
        return None
    d, t = date.terms[0], time.terms[0]
    if not (isinstance(d, Range) and isinstance(t, Range) and d.explicit and t.explicit):
        return None
    if (d.low is None) != (t.low is None) or (d.high is None) != (t.high is None):
        return None
    return Range(
        d.low + t.low if d.low and t.low else None, d.high + t.high if d.high and t.high else None, explicit=True
    )


def like_pattern(pattern: str) -> str:
    """SQL LIKE pattern (escape :data:`ESCAPE`) of a DICOM wild card value; ``%`` and ``_`` stay literal."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in ("%", "_", ESCAPE):
            out.append(ESCAPE + ch)
        else:
            out.append(ch)
    return "".join(out)


def sql_condition(key: Key, column: Any, *, fold: bool = False) -> ColumnElement[bool] | None:
    """The WHERE condition matching *column* against *key* (None when universal).

    *fold*: *column* holds upper-cased values (case-insensitive PN): compare with the key upper-cased.
    """
    if key.universal:
        return None
    conds: list[ColumnElement[bool]] = []
    equal: list[Any] = []
    for term in key.terms:
        if isinstance(term, Eq):
            equal.append(_eq_value(key.vr, term.value.upper() if fold else term.value))
        elif isinstance(term, Like):
            conds.append(column.like(like_pattern(term.pattern.upper() if fold else term.pattern), escape=ESCAPE))
        else:
            conds.append(range_condition(term, column))
    equal = [v for v in equal if v is not None]
    if len(equal) == 1:
        conds.append(column == equal[0])
    elif equal:
        conds.append(column.in_(equal))
    if not conds:
        return false()
    return conds[0] if len(conds) == 1 else or_(*conds)


def _eq_value(vr: str, value: str) -> Any:
    if vr in ("IS", "US", "UL", "SS", "SL", "SV", "UV"):
        number = float(value)
        return int(number) if number.is_integer() else None
    return value


def range_condition(term: Range, column: Any) -> ColumnElement[bool]:
    """``low <= column <= high`` on normal-form strings; an empty stored value never matches."""
    parts = [column != ""]
    if term.low is not None:
        parts.append(column >= term.low)
    if term.high is not None:
        parts.append(column <= term.high)
    return and_(*parts)


def match_values(key: Key, stored: Sequence[str], *, fold: bool = False) -> bool:
    """True when any of the *stored* values matches *key* (the Python twin of :func:`sql_condition`)."""
    if key.universal:
        return True
    for value in stored:
        if value == "" or value is None:
            continue
        if fold:
            value = value.upper()
        for term in key.terms:
            if _match_term(key.vr, term, value, fold):
                return True
    return False


def _match_term(vr: str, term: Term, value: str, fold: bool) -> bool:
    if isinstance(term, Eq):
        want = term.value.upper() if fold else term.value
        if vr in NUMBER_VRS:
            try:
                return float(value) == float(want)
            except ValueError:
                return False
        return value == want
    if isinstance(term, Like):
        return wildcard_regex(term.pattern.upper() if fold else term.pattern).fullmatch(value) is not None
    return _in_range(vr, term, value)


def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """A compiled regex for a DICOM wild card value (``*`` any run, ``?`` one character)."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL)


def _in_range(vr: str, term: Range, value: str) -> bool:
    try:
        if vr == "DA":
            low = high = normal_date(value)
        elif vr == "TM":
            low, high = normal_time(value), normal_time(value)
        elif vr == "DT":
            (low, off), (high, _) = normal_datetime(value), normal_datetime(value)
            return _dt_in_range(term, low, off)
        else:
            low = high = value
    except ValueError:
        return False
    return (term.low is None or low >= term.low) and (term.high is None or high <= term.high)


def _dt_in_range(term: Range, value: str, offset: int | None) -> bool:
    if term.low is not None and _utc(value, offset, term.low_offset) < _utc(term.low, term.low_offset, offset):
        return False
    return term.high is None or _utc(value, offset, term.high_offset) <= _utc(term.high, term.high_offset, offset)


def _utc(value: str, offset: int | None, other: int | None) -> str:
    """*value* moved to UTC when both sides of a comparison carry an offset; as given otherwise."""
    if offset is None or other is None or offset == 0:
        return value
    try:
        moment = dt.datetime.strptime(value, "%Y%m%d%H%M%S.%f") - dt.timedelta(minutes=offset)
    except (ValueError, OverflowError):
        return value
    return moment.strftime("%Y%m%d%H%M%S.%f")


# --- stored values in the DICOM JSON model (PS3.18 F.2), as the index's ``attrs`` holds them ---

_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def json_strings(element: Mapping[str, Any] | None) -> list[str]:
    """The values of a DICOM JSON element as strings to match (PN groups joined with ``=``)."""
    if not element:
        return []
    out = []
    for value in element.get("Value") or ():
        if isinstance(value, Mapping):
            out.append("=".join(str(value.get(g, "")) for g in _PN_GROUPS).rstrip("="))
        elif value is not None:
            out.append(str(value))
    return out


def json_value(element: Mapping[str, Any] | None) -> Any:
    """A DICOM JSON element as a return value: None (empty or bulk data), a value, a list, or items."""
    if not element or "Value" not in element:
        return None
    if element.get("vr") == "SQ":
        return [json_item(item) for item in element["Value"] or ()]
    values = [
        json_strings({"Value": [v]})[0] if isinstance(v, Mapping) else v for v in element["Value"] if v is not None
    ]
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def json_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A sequence item in DICOM JSON as keyword → return value (private and unknown tags left out)."""
    out = {}
    for tag, element in item.items():
        keyword = keyword_for_tag(int(tag, 16))
        if keyword:
            out[keyword] = json_value(element)
    return out


def match_items(key: Key, element: Mapping[str, Any] | None, fold: bool) -> list[dict[str, Any]] | None:
    """Sequence matching (C.2.2.2.6): the stored items matching *key*'s item keys, holding only them.

    None when no item matches a key with item keys that are not all universal. A key without item
    keys returns the whole sequence.
    """
    stored = (element or {}).get("Value") or []
    if key.items is None:
        return [json_item(item) for item in stored]
    out = []
    for item in stored:
        values: dict[str, Any] | None = {}
        for keyword, sub in key.items.items():
            got = item.get(f"{sub.tag:08X}")
            if sub.vr == "SQ":
                items = match_items(sub, got, fold)
                if items is None:
                    values = None
                    break
                values[keyword] = items
            elif match_values(sub, json_strings(got), fold=fold and sub.vr == "PN"):
                values[keyword] = json_value(got)
            else:
                values = None
                break
        if values is not None:
            out.append(values)
    if not out and not key.universal:
        return None
    return out


def trim_time(value: str | None) -> str | None:
    """A TM in normal form (``HHMMSS.ffffff``) without trailing fraction zeros: ``101200.500000`` → ``101200.5``."""
    if not value:
        return None
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value
