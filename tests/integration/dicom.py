"""Helpers for DICOM integration tests: generated instances, dcmtk tools, radbridge configs, metrics."""

from __future__ import annotations

import os
import struct
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # Debian's dcmtk leaves Nagle on otherwise


def scu_associate(port: int, contexts: tuple[str, ...], *, aet: str = "PYSCU", max_pdu: int = 16384) -> Any:
    """An established pynetdicom association with the engine (contexts in Explicit VR LE, as the files are),
    with TCP_NODELAY set (pynetdicom leaves Nagle on: each small PDU would wait ~40 ms)."""
    from pynetdicom import AE, evt

    from channels.dicom.common import set_nodelay

    ae = AE(aet)
    ae.maximum_pdu_size = max_pdu
    for uid in contexts:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    nodelay = [(evt.EVT_CONN_OPEN, lambda event: set_nodelay(event.assoc.dul.socket.socket))]
    assoc = ae.associate("127.0.0.1", port, ae_title="RADBRIDGE", evt_handlers=nodelay)
    assert assoc.is_established
    return assoc


def make_study(folder: Path, n: int, *, series: int = 2, patient_id: str = "P1", patient_name: str = "DOE^JANE",
               accession: str = "ACC1", study_date: str = "20240315", modality: str = "CT") -> list[Path]:  # fmt: skip
    """*n* CT_small instances of one new study spread over *series* series; returns the file paths."""
    folder.mkdir(parents=True, exist_ok=True)
    src = dcmread(get_testdata_file("CT_small.dcm"))
    study = generate_uid()
    series_uids = [generate_uid() for _ in range(series)]
    paths = []
    for i in range(n):
        ds = src.copy()
        ds.PatientID, ds.PatientName, ds.AccessionNumber = patient_id, patient_name, accession
        ds.StudyDate, ds.Modality = study_date, modality
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series_uids[i % series]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        path = folder / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_big_instance(path: Path, size: int) -> str:
    """A Secondary Capture instance whose Pixel Data is *size* bytes of zeros, written without holding it.

    Returns its SOP Instance UID.
    """
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "BIG1", "BIG^ONE", "OT"
    assert size % 65536 == 0, "size must be a multiple of 64 KiB"
    ds.Rows, ds.Columns = size // 65536, 32768  # 16-bit pixels
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    chunk = b"\0" * (1 << 20)
    with open(path, "ab") as fh:
        fh.write(struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OW", size))
        left = size
        while left:
            n = min(left, len(chunk))
            fh.write(chunk[:n])
            left -= n
    return str(ds.SOPInstanceUID)


def dcmtk(tool: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run a dcmtk tool with TCP_NODELAY set; output captured as text."""
    return subprocess.run([tool, *args], env=DCMTK_ENV, capture_output=True, text=True, timeout=timeout)


def dicom_config(data_dir: Path, port: int, metrics_port: int, *, extra_source: str = "",
                 destinations: str = "", archive: str = "") -> str:  # fmt: skip
    """A radbridge config with one ``dicom_scp`` channel named ``images``."""
    return f"""\
data_dir: {data_dir}
metrics: {{host: 127.0.0.1, port: {metrics_port}}}
logging: {{level: INFO}}
{archive}
channels:
  - name: images
    source:
      type: dicom_scp
      ae_title: RADBRIDGE
      host: 127.0.0.1
      port: {port}
{extra_source}
{destinations}
"""


def scrape(metrics_port: int) -> str:
    """The engine's /metrics text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a /metrics text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        key, _, value = line.rpartition(" ")
        if key == name or key == f"{name}{{{want}}}" or (key.startswith(name + "{") and _labels_match(key, labels)):
            return float(value)
    return 0.0


def _labels_match(key: str, labels: dict[str, Any]) -> bool:
    inner = key[key.index("{") + 1 : -1]
    got = dict(part.split("=", 1) for part in inner.split(",") if part)
    return all(got.get(k) == f'"{v}"' for k, v in labels.items())


def rss_hwm_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of *pid* in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def rss_mb(pid: int) -> float:
    """Current resident memory (VmRSS) of *pid* in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")
