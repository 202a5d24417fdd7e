"""A fast reader of a DICOM Part-10 file's header: the attributes the index needs, nothing more.

pydicom's ``dcmread`` costs ~1 ms for a 39 KB CT (~5 ms once values are touched); the C-STORE
path has ~0.5 ms for all archive work. This walker reads the first few KB with ``struct``,
skips every element it does not want (sequences and items of defined or undefined length,
delimiters, encapsulated data) and stops at the first top-level tag past the last wanted one,
so it never reaches Pixel Data and a 1 GB instance costs a few KB of reads. Explicit and
implicit VR little endian (every transfer syntax but two) are walked here; deflated and
big-endian files go to ``pydicom.dcmread(stop_before_pixels=True)``, as does anything the
walker finds odd (an unknown VR, a meta group in the wrong encoding), so pydicom's leniency
is the fallback and its errors become :class:`InvalidInstance`.

Values are strings as DICOM encodes them (multi-values backslash-separated, trailing spaces
and NULs stripped, person names in ``^``/``=`` form), decoded with the Specific Character Set
through ``pydicom.charset`` only when they are not ASCII. For the index's ``attrs`` columns,
:meth:`Header.level_json` gives the DICOM JSON model (PS3.18 F.2) of a fixed set of top-level
attributes per level (``LEVEL_KEYWORDS``): built from the walked values, not by pydicom, whose
``to_json_dict`` would cost milliseconds per instance.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.multival import MultiValue

from archive.layout import is_uid
from archive.values import _NUMBERS, _fragment, decode_value, normalise_text

CANNOT_UNDERSTAND = 0xC000  # PS3.4 B.2.3 "Error: Cannot understand" (Cxxx): the file cannot be parsed
MISSING_UID = 0xC001  # same class; our sub-code: a required UID is missing or not a valid UID
IMPLICIT_LE, EXPLICIT_LE = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
DEFLATED_LE, EXPLICIT_BE = "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"
CHUNK = 8192
MAX_VALUE = 65536  # a wanted value longer than this (none legitimately is) counts as absent

#: What the index columns and the ``dicom.stored`` event need (keyword → str).
INDEX_KEYWORDS = (
    "PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
    "ReferringPhysicianName", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
    "SeriesDate", "SeriesTime", "BodyPartExamined", "StationName", "SOPInstanceUID", "SOPClassUID",
    "InstanceNumber", "SpecificCharacterSet",
)  # fmt: skip
#: Attributes kept as DICOM JSON per level (the Query/Retrieve model's usual keys). All are at or before
#: (0020,4000): walking on into group 0028 (Rows, Columns ...) past the private groups of a GE CT
#: almost doubled the cost of a header, so image-pixel attributes are left in the file.
LEVEL_KEYWORDS: dict[str, tuple[str, ...]] = {
    "patient": (
        "PatientName", "PatientID", "IssuerOfPatientID", "TypeOfPatientID", "PatientBirthDate",
        "PatientBirthTime", "PatientSex", "OtherPatientIDs", "OtherPatientNames", "EthnicGroup", "PatientComments",
    ),
    "study": (
        "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
        "ReferringPhysicianName", "NameOfPhysiciansReadingStudy", "AdmittingDiagnosesDescription",
        "PatientAge", "PatientSize", "PatientWeight", "AdditionalPatientHistory",
    ),
    "series": (
        "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate", "SeriesTime",
        "BodyPartExamined", "StationName", "Laterality", "ProtocolName", "OperatorsName", "PerformingPhysicianName",
        "Manufacturer", "InstitutionName", "InstitutionalDepartmentName", "ManufacturerModelName",
    ),
    "instance": (
        "SOPInstanceUID", "SOPClassUID", "InstanceNumber", "SpecificCharacterSet", "ImageType",
        "InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime", "AcquisitionDate",
        "AcquisitionTime", "AcquisitionNumber", "ImageComments",
    ),
}  # fmt: skip
REQUIRED_UIDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")

#: tag → (keyword, dictionary VR) of everything decoded.
WANTED: dict[int, tuple[str, str]] = {
    tag_for_keyword(k): (k, dictionary_VR(tag_for_keyword(k)))
    for k in dict.fromkeys([*INDEX_KEYWORDS, *(k for ks in LEVEL_KEYWORDS.values() for k in ks)])
}
STOP_TAG = max(WANTED)
_WANTED_GROUPS = frozenset(tag >> 16 for tag in WANTED)
_LEVEL_TAGS = {level: tuple(sorted(tag_for_keyword(k) for k in ks)) for level, ks in LEVEL_KEYWORDS.items()}
_INDEX_TAGS = tuple((tag_for_keyword(k), k) for k in INDEX_KEYWORDS)

_ALL_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_SHORT_VRS = _ALL_VRS - _LONG_VRS
_SHORT_CODES = frozenset(int.from_bytes(v, "little") for v in _SHORT_VRS)
_LONG_CODES = frozenset(int.from_bytes(v, "little") for v in _LONG_VRS)
_UN_CODE = int.from_bytes(b"UN", "little")
_UNDEF = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_EXPLICIT = struct.Struct("<HH2sH")  # tag, VR, short length
_EXPLICIT_INT = struct.Struct("<HHHH")  # the same with the VR as a number (no bytes object per element)
_IMPLICIT = struct.Struct("<HHL")  # tag, length (also item and delimiter headers)
_UL = struct.Struct("<L")


class InvalidInstance(Exception):
    """A received file the archive refuses; ``status`` is the C-STORE status to answer."""

    def __init__(self, status: int, reason: str, kind: str = "unparseable") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.kind = kind  # the metrics label (radbridge_dicom_instances_failed_total{reason})


class _Odd(Exception):
    """The walker met something it leaves to pydicom."""


class _Truncated(Exception):
    """The file ends inside the header."""


@dataclass(slots=True)
class Header:
    """What :func:`read_header` found: transfer syntax and decoded values by tag."""

    transfer_syntax: str
    values: dict[int, tuple[str, Any]]  # tag → (VR, str value, or tuple of numbers)
    bytes_read: int = 0
    attrs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = self.values
        for tag, keyword in _INDEX_TAGS:
            item = values.get(tag)
            if item is not None and isinstance(item[1], str) and item[1]:
                self.attrs[keyword] = item[1]

    def level_json(self, level: str) -> str:
        """The DICOM JSON model of *level*'s attributes present in the file (``{}`` when none)."""
        values = self.values
        items = tuple((tag, values.get(tag)) for tag in _LEVEL_TAGS[level])
        cached = _level_cache.get(items) if level != "instance" else None
        if cached is not None:
            return cached
        text = "{" + ",".join(_fragment(tag, *item) for tag, item in items if item is not None) + "}"
        if level != "instance":
            if len(_level_cache) > 1024:
                _level_cache.clear()
            _level_cache[items] = text
        return text

    def levels(self) -> dict[str, str]:
        """:meth:`level_json` of every level."""
        return {level: self.level_json(level) for level in LEVEL_KEYWORDS}


#: Patient, study and series JSON repeat for every instance of a series: built once.
_level_cache: dict[tuple, str] = {}


# -- the walker -----------------------------------------------------------------------------------
class _Reader:
    """A window over the file: refilled on demand, skipped over by seeking."""

    __slots__ = ("f", "size", "data", "base", "read")

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size = f, size
        self.data = f.read(CHUNK)
        self.base = 0
        self.read = len(self.data)

    def fill(self, pos: int, n: int) -> None:
        """Make the window start at *pos* and hold at least *n* bytes (fewer at the end of the file)."""
        if pos + n > self.size:
            raise _Truncated
        self.f.seek(pos)
        self.data = self.f.read(max(n, CHUNK))
        self.read += len(self.data)
        self.base = pos


def _walk(r: _Reader, pos: int, explicit: bool, stop: int, out: dict | None, nested: bool) -> int:
    """Walk elements from *pos*; store wanted raw values in *out*; return where it stopped.

    Top level (``nested`` False): stops before the first tag above *stop* or at the end of the
    file. In an item of undefined length: stops after its Item Delimitation. The loops are
    written for speed (a CT header has ~200 elements before the last wanted one).
    """
    if pos < r.base:
        r.fill(pos, min(12, r.size - pos))
    walk = _walk_explicit if explicit else _walk_implicit
    return walk(r, pos, stop >> 16, stop & 0xFFFF, out, nested)


def _refill(r: _Reader, pos: int, nested: bool) -> bool:
    """Move the window to *pos*; False at a clean end of the top-level dataset."""
    size = r.size
    if pos == size and not nested:
        return False
    if pos + 8 > size:
        raise _Truncated
    r.fill(pos, min(12, size - pos))
    return True


def _walk_explicit(r: _Reader, pos: int, stop_group: int, stop_elem: int, out: dict | None, nested: bool) -> int:
    unpack, unpack_ul = _EXPLICIT_INT.unpack_from, _UL.unpack_from
    short, long_, wanted = _SHORT_CODES, _LONG_CODES, WANTED
    groups = _WANTED_GROUPS if out is not None else ()
    data, base = r.data, r.base
    off, end = pos - base, len(data) - 12
    while True:
        if off > end:  # (off is never negative: every window starts at or before the position)
            if not _refill(r, base + off, nested):
                return base + off
            data, base = r.data, r.base
            off, end = 0, len(data) - 12
        group, elem, vr, length = unpack(data, off)
        if group >= stop_group and (group > stop_group or elem > stop_elem):
            return base + off
        if vr in short:
            hdr = 8
        elif vr in long_:
            if off + 12 > len(data):
                raise _Truncated
            length = unpack_ul(data, off + 8)[0]
            hdr = 12
            if length == _UNDEF:
                pos = _skip_items(r, base + off + 12, vr != _UN_CODE)  # UN content is implicit VR (PS3.5 6.2.2)
                data, base = r.data, r.base
                off, end = pos - base, len(data) - 12
                continue
        elif group == 0xFFFE and nested and elem == 0xE00D:
            return base + off + 8
        else:
            raise _Odd("invalid VR or unexpected item")
        if group in groups:
            tag = group << 16 | elem
            if tag in wanted and length <= MAX_VALUE:
                file_vr = data[off + 4 : off + 6]
                start = off + hdr
                if start + length > len(data):
                    r.fill(base + start, length)
                    data, base = r.data, r.base
                    start, off, end = 0, -hdr, len(data) - 12
                out[tag] = (file_vr, data[start : start + length])
        off += hdr + length


def _walk_implicit(r: _Reader, pos: int, stop_group: int, stop_elem: int, out: dict | None, nested: bool) -> int:
    unpack, wanted = _IMPLICIT.unpack_from, WANTED
    groups = _WANTED_GROUPS if out is not None else ()
    data, base = r.data, r.base
    off, end = pos - base, len(data) - 12
    while True:
        if off > end:  # (off is never negative: every window starts at or before the position)
            if not _refill(r, base + off, nested):
                return base + off
            data, base = r.data, r.base
            off, end = 0, len(data) - 12
        group, elem, length = unpack(data, off)
        if group >= stop_group and (group > stop_group or elem > stop_elem):
            return base + off
        if group == 0xFFFE:
            if nested and elem == 0xE00D:
                return base + off + 8
            raise _Odd("unexpected item")
        if length == _UNDEF:
            pos = _skip_items(r, base + off + 8, False)
            data, base = r.data, r.base
            off, end = pos - base, len(data) - 12
            continue
        if group in groups:
            tag = group << 16 | elem
            if tag in wanted and length <= MAX_VALUE:
                start = off + 8
                if start + length > len(data):
                    r.fill(base + start, length)
                    data, base = r.data, r.base
                    start, off, end = 0, -8, len(data) - 12
                out[tag] = (None, data[start : start + length])
        off += 8 + length


def _skip_items(r: _Reader, pos: int, explicit: bool) -> int:
    """Skip the items of a sequence (or encapsulated data) of undefined length; return the position after it."""
    unpack = _IMPLICIT.unpack_from
    while True:
        off = pos - r.base
        if off < 0 or off + 8 > len(r.data):
            r.fill(pos, 8)
            off = 0
        group, elem, length = unpack(r.data, off)
        tag = group << 16 | elem
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise _Odd("expected an item")
        if length == _UNDEF:
            pos = _walk(r, pos, explicit, 0xFFFFFFFF, None, True)
        else:
            pos += length
            if pos > r.size:
                raise _Truncated


def _window(r: _Reader, pos: int, n: int) -> int:
    """The offset of *pos* in the reader's window, refilled so that *n* bytes follow it."""
    off = pos - r.base
    if off < 0 or off + n > len(r.data):
        r.fill(pos, n)
        off = 0
    return off


def _meta(r: _Reader) -> tuple[str, int]:
    """(transfer syntax or "", offset of the dataset) from the explicit-VR file meta group."""
    ts = b""
    pos = 132
    while pos + 8 <= r.size:
        off = _window(r, pos, 8)
        group, elem, vr, length = _EXPLICIT.unpack_from(r.data, off)
        if group != 0x0002:
            break
        if vr in _LONG_VRS:
            off = _window(r, pos, 12)
            length = _UL.unpack_from(r.data, off + 8)[0]
            hdr = 12
        elif vr in _ALL_VRS:
            hdr = 8
        else:
            raise _Odd("file meta is not explicit VR")
        if length == _UNDEF:
            raise _Odd("undefined length in file meta")
        if elem == 0x0010:
            off = _window(r, pos + hdr, length)
            ts = r.data[off : off + length]
        pos += hdr + length
        if pos > r.size:
            raise _Truncated
    return ts.decode("latin-1").strip("\0 "), pos


def _looks_explicit(r: _Reader, pos: int) -> bool:
    if pos + 6 > r.size:
        return True
    off = _window(r, pos, 6)
    return r.data[off + 4 : off + 6] in _ALL_VRS


_VR_NAMES = {v: v.decode("ascii") for v in _ALL_VRS}
_SKIP_VRS = frozenset(("OB", "OW", "OD", "OF", "OL", "OV", "UN", "SQ"))
_decoded: dict[tuple[str, bytes, str], Any] = {}  # values repeat across a study's instances


def _decode_all(raw: dict[int, tuple[bytes | None, bytes]]) -> dict[int, tuple[str, Any]]:
    charset_item = raw.get(0x00080005)
    charset = normalise_text("CS", charset_item[1].decode("latin-1")) if charset_item else ""
    values: dict[int, tuple[str, Any]] = {}
    cache, names, wanted = _decoded, _VR_NAMES, WANTED
    if len(cache) > 4096:
        cache.clear()
    for tag, (file_vr, value) in raw.items():
        vr = wanted[tag][1] if file_vr is None or file_vr == b"UN" else names[file_vr]
        if vr in _SKIP_VRS:
            continue  # a wanted keyword carried as bytes: nothing to decode
        if len(value) > 256:
            values[tag] = (vr, decode_value(vr, value, charset))
            continue
        key = (vr, value, charset)
        decoded = cache.get(key)
        if decoded is None:
            decoded = cache[key] = decode_value(vr, value, charset)
        values[tag] = (vr, decoded)
    return values


def _fast(path: Path, transfer_syntax: str | None) -> Header | None:
    """The walker; ``None`` when the file needs pydicom."""
    with open(path, "rb", buffering=0) as f:
        r = _Reader(f, os.fstat(f.fileno()).st_size)
        if len(r.data) < 132 or r.data[128:132] != b"DICM":
            raise InvalidInstance(CANNOT_UNDERSTAND, "not a DICOM Part-10 file (no DICM prefix)")
        ts, pos = _meta(r)
        ts = ts or (transfer_syntax or "")
        if ts in (DEFLATED_LE, EXPLICIT_BE):
            return None
        explicit = _looks_explicit(r, pos)  # like pydicom: trust the bytes over a wrong transfer syntax
        raw: dict[int, Any] = {}
        _walk(r, pos, explicit, STOP_TAG, raw, False)
        return Header(ts or (EXPLICIT_LE if explicit else IMPLICIT_LE), _decode_all(raw), r.read)


def _pydicom_value(elem: Any) -> Any:
    vr = elem.VR
    if vr in _NUMBERS:
        v = elem.value
        if v is None or v == b"" or v == "":
            return ()
        if isinstance(v, bytes):
            return decode_value(vr, v)
        return (v,) if isinstance(v, int | float) else tuple(v)
    value = elem.value
    if value is None or value == "" or value == b"":
        return ""
    if isinstance(value, bytes):
        return decode_value(vr, value)
    if vr == "AT":
        values = value if isinstance(value, list | tuple | MultiValue) else [value]
        return "\\".join(f"{int(v):08X}" for v in values)
    if isinstance(value, list | tuple | MultiValue):
        return normalise_text(vr, "\\".join("" if v is None else str(v) for v in value))
    return normalise_text(vr, str(value))


def _slow(path: Path) -> Header:
    """pydicom for what the walker leaves alone (deflated, big endian, odd encodings)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(WANTED))
            values = {}
            for tag in WANTED:
                elem = ds.get(tag)
                if elem is not None and elem.VR not in ("OB", "OW", "UN", "SQ"):
                    values[tag] = (elem.VR, _pydicom_value(elem))
    except Exception as exc:  # noqa: BLE001 - whatever pydicom cannot read, the archive refuses
        if isinstance(exc, OSError) and not isinstance(exc, InvalidDicomError):
            raise
        raise InvalidInstance(CANNOT_UNDERSTAND, f"cannot parse the DICOM header: {type(exc).__name__}") from None
    ts = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
    return Header(ts, values, path.stat().st_size)


def scan_header(path: Path, transfer_syntax: str | None = None) -> Header:
    """Read the header of *path* without checking the UIDs; InvalidInstance if it cannot be parsed."""
    try:
        header = _fast(path, transfer_syntax)
    except _Truncated:
        raise InvalidInstance(CANNOT_UNDERSTAND, "the file ends inside the DICOM header") from None
    except (_Odd, struct.error, RecursionError, UnicodeDecodeError):
        header = None
    return header if header is not None else _slow(path)


def read_header(path: Path, transfer_syntax: str | None = None) -> Header:
    """:func:`scan_header`, then InvalidInstance unless the SOP Instance, SOP Class, Study and Series UIDs are valid."""
    header = scan_header(path, transfer_syntax)
    attrs = header.attrs
    for keyword in REQUIRED_UIDS:
        value = attrs.get(keyword, "")
        if not is_uid(value):
            what = "missing" if not value else "not a valid UID"
            raise InvalidInstance(MISSING_UID, f"{keyword} is {what}", "missing_uid")
    return header
