"""pynetdicom's received-dataset files: written into the archive's folder, file meta identical to pydicom's."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filewriter import write_file_meta_info as pydicom_write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid
from pynetdicom import dimse_messages
from pynetdicom.dsutils import create_file_meta as pynetdicom_create_file_meta

from channels.dicom import incoming


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, JPEG2000Lossless, "1.2.840.10008.1.2"])
def test_file_meta_bytes_equal_pydicom(ts: str) -> None:
    """The directly encoded File Meta Information is byte for byte what pynetdicom+pydicom write."""
    sop_class, sop = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
    ours = incoming.create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop, transfer_syntax=ts)
    buf = io.BytesIO()
    pydicom_write_file_meta_info(
        buf, pynetdicom_create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop, transfer_syntax=ts)
    )
    assert ours == buf.getvalue()


def test_incoming_file_is_a_readable_part10_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After install, pynetdicom's file factory writes into the folder and the result reads as DICOM."""
    for name in ("NamedTemporaryFile", "create_file_meta", "write_file_meta_info"):
        monkeypatch.setattr(dimse_messages, name, getattr(dimse_messages, name))  # restored after the test
    incoming.install(tmp_path / "in")
    f = dimse_messages.NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")
    assert Path(f.name).parent == tmp_path / "in"
    f.write(b"\x00" * 128)
    f.write(b"DICM")
    sop = generate_uid()
    meta = dimse_messages.create_file_meta(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_instance_uid=sop, transfer_syntax=ExplicitVRLittleEndian
    )
    dimse_messages.write_file_meta_info(f, meta)
    # (0010,0010) PN "DOE^JANE" in Explicit VR Little Endian
    f.write(b"\x10\x00\x10\x00PN\x08\x00DOE^JANE")
    f.file.flush()
    f.close()
    ds = dcmread(f.name)
    assert ds.file_meta.MediaStorageSOPInstanceUID == sop and ds.PatientName == "DOE^JANE"
    other = incoming.IncomingFile(str(tmp_path / "in"))
    other.close()
    assert other.name != f.name  # fresh names
