"""The fast header reader agrees with pydicom, stops before Pixel Data, and refuses what it cannot read."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file, get_testdata_files

from archive import header as H
from archive.header import CANNOT_UNDERSTAND, MISSING_UID, InvalidInstance, read_header, scan_header
from tests.archive.conftest import make_dicom


def _readable() -> list[str]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in sorted(set(get_testdata_files()) | set(get_charset_files())):
            if os.path.isfile(f):
                try:
                    pydicom.dcmread(f, stop_before_pixels=True)
                except Exception:  # noqa: BLE001 - only files pydicom reads are compared
                    continue
                out.append(f)
    return out


READABLE = _readable()
SKIPPED_VRS = ("OB", "OW", "UN", "SQ")


def pydicom_values(path: str) -> dict[int, tuple[str, object]]:
    """What pydicom decodes for the wanted tags, in the reader's string form."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return {
            tag: (ds[tag].VR, H._pydicom_value(ds[tag]))
            for tag in H.WANTED
            if tag in ds and ds[tag].VR not in SKIPPED_VRS
        }


def test_every_readable_pydicom_test_file_decodes_like_pydicom():
    """For each file pydicom reads, every wanted attribute decodes to pydicom's value (charsets included)."""
    assert len(READABLE) > 150
    diffs = []
    for f in READABLE:
        mine = scan_header(Path(f)).values
        theirs = pydicom_values(f)
        if mine != theirs:
            diffs.append((os.path.basename(f), {k: (mine.get(k), theirs.get(k)) for k in mine.keys() | theirs.keys()
                                                if mine.get(k) != theirs.get(k)}))  # fmt: skip
    assert diffs == []


def test_the_walker_handles_all_but_deflated_and_big_endian():
    """Only deflated and big-endian files go to pydicom; the others are walked."""
    slow = []
    for f in READABLE:
        if H._fast(Path(f), None) is None:
            slow.append(str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID))
    assert slow and set(slow) <= {H.DEFLATED_LE, H.EXPLICIT_BE}


def _canon_json(element: dict) -> dict:
    """pydicom keeps insignificant CS spaces and writes "" for empty values in a multi-value: normalise both."""
    if "Value" in element and element["vr"] not in ("PN", "SQ"):
        element = dict(element, Value=[(v.strip() or None) if isinstance(v, str) else v for v in element["Value"]])
    return element


@pytest.mark.parametrize("level", list(H.LEVEL_KEYWORDS))
def test_level_json_matches_pydicoms_json_model(level):
    """The per-level DICOM JSON equals pydicom's to_json_dict for every readable file (modulo null/space rules)."""
    diffs = []
    for f in READABLE:
        mine = json.loads(scan_header(Path(f)).level_json(level))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            for tag in H._LEVEL_TAGS[level]:
                if tag not in ds or ds[tag].VR in SKIPPED_VRS:
                    continue
                try:
                    theirs = ds[tag].to_json_dict(None, 0)
                except ValueError:
                    continue  # pydicom cannot convert an invalid IS/DS either (badVR.dcm)
                if _canon_json(mine.get(f"{tag:08X}", {})) != _canon_json(theirs):
                    diffs.append((os.path.basename(f), ds[tag].keyword, mine.get(f"{tag:08X}"), theirs))
    assert diffs == []


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("MR_small_implicit.dcm", "1.2.840.10008.1.2"),
        ("MR_small.dcm", "1.2.840.10008.1.2.1"),
        ("image_dfl.dcm", "1.2.840.10008.1.2.1.99"),
        ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.2"),
        ("JPEG-lossy.dcm", "1.2.840.10008.1.2.4.51"),
        ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5"),
        ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91"),
    ],
)
def test_transfer_syntaxes(name, syntax):
    """Implicit, explicit, deflated, big-endian, JPEG, RLE and JPEG 2000 files give the UIDs and the syntax."""
    h = read_header(Path(get_testdata_file(name)))
    ds = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True)
    assert h.transfer_syntax == syntax
    assert h.attrs["SOPInstanceUID"] == ds.SOPInstanceUID and h.attrs["StudyInstanceUID"] == ds.StudyInstanceUID


def test_non_ascii_names_use_the_specific_character_set():
    """Person names in ISO 2022 (Japanese) and Latin-1 are decoded as pydicom decodes them."""
    files = {os.path.basename(f): f for f in get_charset_files()}
    assert read_header(Path(files["chrH31.dcm"])).attrs["PatientName"] == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert read_header(Path(files["chrFren.dcm"])).attrs["PatientName"] == "Buc^Jérôme"


def test_values_are_stripped_and_multi_values_kept(tmp_path):
    """Trailing spaces and NULs go; multi-values stay backslash-separated."""
    p = make_dicom(tmp_path / "x.dcm", StudyDescription="HEAD  ", ImageType=["ORIGINAL", "PRIMARY"])
    h = read_header(p)
    assert h.attrs["StudyDescription"] == "HEAD"
    assert h.values[0x00080008] == ("CS", "ORIGINAL\\PRIMARY")


def test_a_huge_instance_costs_a_few_kb_of_reads(tmp_path):
    """A 1 GB instance (sparse) is read only up to its header."""
    p = make_dicom(tmp_path / "x.dcm")
    with open(p, "r+b") as f:
        f.truncate(1 << 30)
    h = read_header(p)
    assert h.bytes_read <= 64 * 1024
    assert h.attrs["Modality"] == "CT"


def test_sequences_of_undefined_length_are_skipped(tmp_path):
    """Wanted attributes after nested sequences of undefined length (explicit and implicit) are found."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    for implicit in (False, True):
        inner = Dataset()
        inner.CodeValue = "X"
        item = Dataset()
        item.ConceptNameCodeSequence = Sequence([inner])
        ds = pydicom.dcmread(make_dicom(tmp_path / "seq.dcm"))
        ds.ReferencedStudySequence = Sequence([item, Dataset()])
        out = tmp_path / f"undef-{implicit}.dcm"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for elem in ds.iterall():
                if elem.VR == "SQ":
                    elem.is_undefined_length = True
                    for sq_item in elem.value:
                        sq_item.is_undefined_length_sequence_item = True
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
            ds.save_as(out, enforce_file_format=True)
        assert out.read_bytes().count(b"\xfe\xff\x0d\xe0") >= 3  # item delimiters: undefined-length items
        assert H._fast(out, None) is not None
        assert read_header(out).attrs["SeriesInstanceUID"] == ds.SeriesInstanceUID


@pytest.mark.parametrize("cut", [0, 10, 131, 140, 300, 600, 1200, 2000])
def test_a_file_cut_inside_the_header_is_refused(tmp_path, cut):
    """A file truncated before the last indexed attribute raises InvalidInstance (cannot understand)."""
    data = make_dicom(tmp_path / "x.dcm").read_bytes()
    p = tmp_path / "cut.dcm"
    p.write_bytes(data[:cut])
    with pytest.raises(InvalidInstance) as exc:
        read_header(p)
    assert exc.value.status in (CANNOT_UNDERSTAND, MISSING_UID)


@pytest.mark.parametrize("data", [b"", b"garbage" * 100, b"\0" * 128 + b"DICM" + os.urandom(500), os.urandom(4096)])
def test_garbage_is_refused(tmp_path, data):
    """Empty, random and DICM-prefixed junk files raise InvalidInstance, never something else."""
    p = tmp_path / "junk.dcm"
    p.write_bytes(data)
    with pytest.raises(InvalidInstance):
        read_header(p)


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"])
def test_missing_or_invalid_uids_are_refused(tmp_path, keyword):
    """A required UID that is absent or not a UID raises InvalidInstance with status 0xC001."""
    for value in (None, "1.2.abc"):
        p = make_dicom(tmp_path / f"{keyword}.dcm", **{keyword: value})
        with pytest.raises(InvalidInstance) as exc:
            read_header(p)
        assert exc.value.status == MISSING_UID and exc.value.kind == "missing_uid"
        assert keyword in exc.value.reason
