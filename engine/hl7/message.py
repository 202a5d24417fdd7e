"""A lazily split HL7 v2 message with an accessor for paths such as ``PID-5.1``.

The hot path never runs python-hl7's full parse: segments are split once, and a
segment's fields only when a path asks for them (DESIGN.md §6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PATH_RE = re.compile(
    r"^(?P<seg>[A-Z][A-Z0-9]{2})(?:\[(?P<segrep>\d+)\])?"
    r"(?:-(?P<field>\d+)(?:\[(?P<rep>\d+)\])?(?:\.(?P<comp>\d+)(?:\.(?P<sub>\d+))?)?)?$"
)


class HL7Error(ValueError):
    """The bytes are not an HL7 v2 message we can read."""


class PathError(ValueError):
    """A field path is not of the form ``SEG[n]-F[r].C.S``."""


@dataclass(frozen=True)
class FieldPath:
    """A parsed field path; indexes are 1-based, ``None`` means not given."""

    segment: str
    segment_rep: int = 1
    field: int | None = None
    repetition: int | None = None
    component: int | None = None
    subcomponent: int | None = None

    def __str__(self) -> str:
        out = self.segment
        if self.segment_rep != 1:
            out += f"[{self.segment_rep}]"
        if self.field is not None:
            out += f"-{self.field}"
            if self.repetition is not None:
                out += f"[{self.repetition}]"
            if self.component is not None:
                out += f".{self.component}"
                if self.subcomponent is not None:
                    out += f".{self.subcomponent}"
        return out


_PATH_CACHE: dict[str, FieldPath] = {}


def parse_path(path: str) -> FieldPath:
    """Parse ``PID-5.1``, ``OBX[2]-5``, ``PID-3[2].1`` into a :class:`FieldPath`."""
    cached = _PATH_CACHE.get(path)
    if cached is not None:
        return cached
    m = _PATH_RE.match(path.strip())
    if not m:
        raise PathError(f"invalid HL7 field path {path!r} (expected e.g. PID-5.1, OBX[2]-5, PID-3[2].1)")

    def num(name: str) -> int | None:
        v = m.group(name)
        return int(v) if v is not None else None

    values = [num("segrep") or 1, num("field"), num("rep"), num("comp"), num("sub")]
    if any(v == 0 for v in values if v is not None):
        raise PathError(f"invalid HL7 field path {path!r}: indexes start at 1")
    fp = FieldPath(m.group("seg"), *values)
    if len(_PATH_CACHE) < 4096:
        _PATH_CACHE[path] = fp
    return fp


def unescape(value: str, enc: str = "^~\\&") -> str:
    r"""Decode HL7 escape sequences (\F\ \S\ \T\ \R\ \E\ and \X..\ hex)."""
    esc = enc[2] if len(enc) > 2 else "\\"
    if esc not in value:
        return value
    table = {"F": "|", "S": enc[0], "R": enc[1], "E": esc, "T": enc[3] if len(enc) > 3 else "&"}
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == esc:
            j = value.find(esc, i + 1)
            if j > i + 1:
                code = value[i + 1 : j]
                if code in table:
                    out.append(table[code])
                    i = j + 1
                    continue
                if code[0] in "Xx" and len(code) > 1:
                    try:
                        out.append(bytes.fromhex(code[1:]).decode("latin-1"))
                        i = j + 1
                        continue
                    except ValueError:
                        pass
                if code in (".br", "H", "N"):
                    out.append("\n" if code == ".br" else "")
                    i = j + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


def escape(value: str, field_sep: str = "|", enc: str = "^~\\&") -> str:
    r"""Escape delimiters so *value* can sit inside one HL7 component."""
    esc = enc[2]
    out = value.replace(esc, f"{esc}E{esc}")
    out = out.replace(field_sep, f"{esc}F{esc}").replace(enc[0], f"{esc}S{esc}")
    out = out.replace(enc[1], f"{esc}R{esc}").replace(enc[3], f"{esc}T{esc}")
    return out.replace("\r\n", f"{esc}.br{esc}").replace("\n", f"{esc}.br{esc}").replace("\r", f"{esc}.br{esc}")


class HL7Message:
    """An HL7 v2 message split on demand; ``msg["PID-5.1"]`` returns a string.

    Missing fields read as ``""``; ``get(path, default)`` returns *default* then.
    Segments are separated by CR (LF and CRLF are accepted on input).
    """

    __slots__ = ("text", "field_sep", "enc", "_segments", "_fields", "_index", "_cache")

    def __init__(self, text: str) -> None:
        if not text.startswith("MSH") or len(text) < 8:
            raise HL7Error("message does not start with an MSH segment")
        self.text = text
        self.field_sep = text[3]
        enc_end = text.find(self.field_sep, 4)
        enc = text[4:enc_end] if enc_end > 0 else text[4:8]
        if len(enc) < 4:
            enc = (enc + "^~\\&"[len(enc) :])[:4]
        if self.field_sep.isalnum() or self.field_sep in "\r\n":
            raise HL7Error("MSH-1 field separator is missing or invalid")
        self.enc = enc
        if "\n" in text:
            text = text.replace("\r\n", "\r").replace("\n", "\r")
        segments = text.split("\r")
        if "" in segments:
            segments = [s for s in segments if s]
        self._segments = segments
        self._fields: dict[int, list[str]] = {}
        self._index: dict[str, list[int]] | None = None
        self._cache: dict[tuple[str, bool], str] = {}

    @property
    def segments(self) -> list[str]:
        """Segment strings in order."""
        return self._segments

    def segment_names(self) -> list[str]:
        """Names of the segments in order (``["MSH", "PID", ...]``)."""
        return [s[:3] for s in self._segments]

    def _seg_index(self, name: str, rep: int) -> int | None:
        if self._index is None:
            index: dict[str, list[int]] = {}
            for i, s in enumerate(self._segments):
                index.setdefault(s[:3], []).append(i)
            self._index = index
        positions = self._index.get(name)
        if not positions or rep > len(positions):
            return None
        return positions[rep - 1]

    def _split(self, idx: int) -> list[str]:
        fields = self._fields.get(idx)
        if fields is None:
            seg = self._segments[idx]
            fields = seg.split(self.field_sep)
            if seg.startswith("MSH"):
                # MSH-1 is the separator itself; MSH-2 the encoding characters.
                fields = ["MSH", self.field_sep] + fields[1:]
            self._fields[idx] = fields
        return fields

    def segment_fields(self, name: str, rep: int = 1) -> list[str] | None:
        """The *rep*-th segment *name* split into fields (``[n]`` is field n), or ``None`` when absent."""
        idx = self._seg_index(name, rep)
        return None if idx is None else self._split(idx)

    def count(self, segment: str) -> int:
        """How many segments named *segment* the message holds."""
        self._seg_index(segment, 1)
        assert self._index is not None
        return len(self._index.get(segment, ()))

    def msh_fields(self) -> list[str]:
        """MSH split into fields, numbered as in HL7 (``[n]`` is MSH-n; ``[1]`` is the separator)."""
        return self._split(0)

    def get(self, path: str | FieldPath, default: str = "", *, raw: bool = False) -> str:
        """Value at *path*, unescaped unless *raw*; *default* when absent or empty."""
        if path.__class__ is str:
            # Several steps read the same few header fields: answer repeats from a small cache.
            key = (path, raw)
            value = self._cache.get(key)
            if value is None:
                fp = _PATH_CACHE.get(path) or parse_path(path)  # type: ignore[arg-type]
                value = self._cache[key] = self._lookup(fp, raw)
            return value or default
        if path.__class__ is FieldPath:
            return self._lookup(path, raw) or default  # type: ignore[arg-type]
        return default  # a DICOM keyword path (engine.event.KeywordPath): HL7 has no such field

    def _lookup(self, fp: FieldPath, raw: bool) -> str:
        """The value at *fp* or ``""`` (the hot accessor: index and split inlined)."""
        name = fp.segment
        if name == "MSH" and fp.segment_rep == 1:
            idx = 0
        else:
            index = self._index
            if index is None:
                index = {}
                for i, seg in enumerate(self._segments):
                    index.setdefault(seg[:3], []).append(i)
                self._index = index
            positions = index.get(name)
            if not positions or fp.segment_rep > len(positions):
                return ""
            idx = positions[fp.segment_rep - 1]
        if fp.field is None:
            return self._segments[idx]
        fields = self._fields.get(idx)
        if fields is None:
            fields = self._split(idx)
        if fp.field >= len(fields):
            return ""
        value = fields[fp.field]
        if name == "MSH" and fp.field <= 2:
            return value
        enc = self.enc
        if fp.repetition is not None or fp.component is not None:
            reps = value.split(enc[1]) if enc[1] in value else [value]
            r = (fp.repetition or 1) - 1
            if r >= len(reps):
                return ""
            value = reps[r]
            if fp.component is not None:
                comps = value.split(enc[0])
                if fp.component > len(comps):
                    return ""
                value = comps[fp.component - 1]
                if fp.subcomponent is not None:
                    subs = value.split(enc[3])
                    if fp.subcomponent > len(subs):
                        return ""
                    value = subs[fp.subcomponent - 1]
        if not value or raw or enc[2] not in value:
            return value
        return unescape(value, enc)

    def __getitem__(self, path: str) -> str:
        return self.get(path)

    def __contains__(self, path: str) -> bool:
        return self.get(path, "") != ""

    def exists(self, path: str) -> bool:
        """True when *path* names a present, non-empty value (or a present segment)."""
        return self.get(path, "") != ""

    def __str__(self) -> str:
        return "\r".join(self._segments)

    # Frequently used header values.
    @property
    def control_id(self) -> str:
        """MSH-10."""
        return self.get("MSH-10")

    @property
    def message_type(self) -> str:
        """MSH-9 as ``ORM^O01`` (first two components)."""
        t, e = self.get("MSH-9.1"), self.get("MSH-9.2")
        return f"{t}^{e}" if e else t

    @property
    def charset(self) -> str:
        """MSH-18 first repetition (the HL7 character set name), or ``""``."""
        return self.get("MSH-18[1]")
