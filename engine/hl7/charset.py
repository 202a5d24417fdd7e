"""HL7 character sets: MSH-18 names (table 0211, plus DICOM spellings) to Python codecs.

The MSH segment is read from the raw bytes before decoding, which works for every
ASCII-compatible encoding (not for UTF-16/32, which must be the channel default).
"""

from __future__ import annotations

import codecs


class CharsetError(ValueError):
    """A message cannot be decoded or encoded with its character set."""


class UnknownCharset(CharsetError):
    """An MSH-18 (or DICOM) character set name we have no codec for."""


def _key(name: str) -> str:
    return "".join(name.upper().replace("_", " ").split())


_CODECS: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "ISO IR100": "latin-1",
    "ISO_IR 100": "latin-1",
    "ISO_IR 101": "iso8859-2",
    "ISO_IR 109": "iso8859-3",
    "ISO_IR 110": "iso8859-4",
    "ISO_IR 144": "iso8859-5",
    "ISO_IR 127": "iso8859-6",
    "ISO_IR 126": "iso8859-7",
    "ISO_IR 138": "iso8859-8",
    "ISO_IR 148": "iso8859-9",
    "ISO_IR 203": "iso8859-15",
    "ISO_IR 192": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UNICODE": "utf-16",
    "UNICODE UTF-16": "utf-16",
    "UNICODE UTF-32": "utf-32",
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp",
    "GB 18030-2000": "gb18030",
    "GB18030": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
    **{f"8859/{n}": f"iso8859-{n}" for n in (*range(1, 10), 15)},
}
_BY_KEY = {_key(name): codec for name, codec in _CODECS.items()}
_UNSUPPORTED = {_key("CNS 11643-1992")}


def codec_for(hl7_name: str) -> str:
    """The Python codec for an HL7 MSH-18 (or DICOM) character set name; raises UnknownCharset."""
    key = _key(hl7_name)
    if key in _UNSUPPORTED:
        raise UnknownCharset(f"character set {hl7_name!r} is not supported (no Python codec)")
    try:
        return _BY_KEY[key]
    except KeyError:
        raise UnknownCharset(f"unknown HL7 character set {hl7_name!r}") from None


def sniff_charset(raw: bytes) -> str:
    """MSH-18 (first repetition, stripped) read from the raw bytes, or ``""`` when absent."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    if not raw.startswith(b"MSH") or len(raw) < 4:
        return ""
    sep = raw[3:4]
    end = len(raw)
    for terminator in (b"\r", b"\n"):
        i = raw.find(terminator, 0, end)
        if i >= 0:
            end = i
    fields = raw[:end].split(sep, 18)
    if len(fields) < 18:
        return ""
    rep = fields[1][1:2] or b"~"
    return fields[17].split(rep, 1)[0].decode("latin-1").strip()


_CANONICAL: dict[str, str] = {}  # codec name as configured -> Python's canonical name


def decode_message(raw: bytes, default: str) -> tuple[str, str]:
    """Decode *raw* with MSH-18's charset, else the channel's *default* codec; return (text, codec)."""
    name = sniff_charset(raw)
    if name:
        try:
            codec = codec_for(name)
        except UnknownCharset as e:
            raise UnknownCharset(f"MSH-18 {e}") from None
        source = f"MSH-18 {name!r}"
    else:
        codec = default
        source = f"channel default {default!r}, MSH-18 is empty"
    canonical = _CANONICAL.get(codec)
    if canonical is None:
        try:
            canonical = codecs.lookup(codec).name
        except LookupError:
            raise UnknownCharset(f"unknown codec {codec!r} ({source})") from None
        if len(_CANONICAL) < 256:
            _CANONICAL[codec] = canonical
    codec = canonical
    if codec == "utf-8" and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode(codec), codec
    except UnicodeDecodeError as e:
        raise CharsetError(f"message is not valid {codec} ({source}): bad byte(s) at offset {e.start}") from None


def encode_message(text: str, codec: str, errors: str = "strict") -> bytes:
    """Encode *text* with *codec*; raises CharsetError for characters the codec cannot hold."""
    try:
        return text.encode(codec, errors)
    except UnicodeEncodeError as e:
        raise CharsetError(f"cannot encode character {e.object[e.start]!r} in {codec} at offset {e.start}") from None
    except LookupError:
        raise UnknownCharset(f"unknown codec {codec!r}") from None
