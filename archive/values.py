"""DICOM values as the archive keeps them: decoded strings, and their DICOM JSON form (PS3.18 F.2).

Values are strings as DICOM encodes them (multi-values backslash-separated, trailing spaces
and NULs stripped, person names in ``^``/``=`` form), decoded with the Specific Character Set
through ``pydicom.charset`` only when they are not ASCII; binary numbers are tuples.
"""

from __future__ import annotations

import json
import struct
import warnings
from functools import lru_cache
from typing import Any

_TEXT_VRS = frozenset(("SH", "LO", "ST", "LT", "UC", "UT", "PN"))  # decoded with the Specific Character Set
_SINGLE_VRS = frozenset(("ST", "LT", "UT", "UR"))  # never split on backslash
_STRIP_BOTH = frozenset(("AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"))  # leading spaces insignificant
_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}


# -- DICOM JSON -----------------------------------------------------------------------------------
def _number(vr: str, text: str) -> int | float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text) if vr == "IS" else float(text)
    except ValueError:
        if vr == "IS":
            try:
                f = float(text)  # "12.0": pydicom accepts integral floats for IS
                return int(f) if f.is_integer() else None
            except ValueError:
                return None
        return None


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _fragment(tag: int, vr: str, value: Any) -> str:
    """``"GGGGEEEE":{...}`` for one attribute; a plain single string takes the short way."""
    if value.__class__ is str and value and vr not in _JSON_SPECIAL and (vr in _SINGLE_VRS or "\\" not in value):
        return f'"{tag:08X}":{{"vr":"{vr}","Value":[{_dumps(value)}]}}'
    return f'"{tag:08X}":{_dumps(json_element(vr, value))}'


_JSON_SPECIAL = frozenset(("PN", "IS", "DS"))


def json_element(vr: str, value: Any) -> dict[str, Any]:
    """One attribute in the DICOM JSON model (PS3.18 F.2): ``{"vr": ..., "Value": [...]}``."""
    element: dict[str, Any] = {"vr": vr}
    if isinstance(value, tuple):
        if value:
            element["Value"] = list(value)
        return element
    if value == "":
        return element
    parts = [value] if vr in _SINGLE_VRS else value.split("\\")
    if vr == "PN":
        names: list[Any] = []
        for part in parts:
            groups = part.split("=")
            pn = {k: g for k, g in zip(("Alphabetic", "Ideographic", "Phonetic"), groups) if g}
            names.append(pn or None)
        element["Value"] = names
    elif vr in ("IS", "DS"):
        element["Value"] = [_number(vr, p) for p in parts]
    else:
        element["Value"] = [p if p != "" else None for p in parts]
    return element


# -- decoding -----------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _encodings(charset: str) -> tuple[str, ...]:
    """Python codecs for a Specific Character Set value (pydicom's table; ISO 8859-1 when empty)."""
    from pydicom.charset import convert_encodings

    if not charset:
        return ("iso8859",)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(convert_encodings(charset.split("\\")))


def _decode_text(raw: bytes, charset: str) -> str:
    from pydicom.charset import TEXT_VR_DELIMS, decode_bytes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return decode_bytes(raw, list(_encodings(charset)), TEXT_VR_DELIMS)


def decode_value(vr: str, raw: bytes, charset: str = "") -> Any:
    """A value's string form (or tuple of numbers for binary VRs), as described in the module docstring."""
    code = _NUMBERS.get(vr)
    if code is not None:
        n = len(raw) // struct.calcsize(code)
        return struct.unpack_from(f"<{n}{code}", raw) if n else ()
    if vr == "AT":
        n = len(raw) // 4
        pairs = struct.unpack_from(f"<{2 * n}H", raw) if n else ()
        return "\\".join(f"{pairs[i]:04X}{pairs[i + 1]:04X}" for i in range(0, len(pairs), 2))
    if raw.isascii() and b"\x1b" not in raw:  # ISO 2022 escape sequences are ASCII bytes too
        text = raw.decode("ascii")
    elif vr in _TEXT_VRS:
        text = _decode_text(raw, charset)
    else:
        text = raw.decode("latin-1")
    return normalise_text(vr, text)


def normalise_text(vr: str, text: str) -> str:
    """Strip what DICOM calls insignificant from each value of a decoded string."""
    if vr in _SINGLE_VRS:
        return text.rstrip("\0 ")
    if "\\" not in text:
        text = text.strip("\0 ") if vr in _STRIP_BOTH else text.rstrip("\0 ")
        if vr == "PN" and "=" in text:
            text = "=".join(_trim_groups(text.split("=")))
        return text
    parts = text.rstrip("\0 ").split("\\")
    parts = [p.strip("\0 ") for p in parts] if vr in _STRIP_BOTH else [p.rstrip("\0 ") for p in parts]
    if vr == "PN":
        parts = ["=".join(_trim_groups(p.split("="))) for p in parts]
    return "\\".join(parts)


def _trim_groups(groups: list[str]) -> list[str]:
    while groups and not groups[-1]:
        groups.pop()
    return groups
