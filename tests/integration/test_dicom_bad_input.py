"""Bad DICOM input against ``radbridge run``: each gets a failure status or a reject, nothing partial is archived,
the SCP keeps serving; and a 1 GB instance is streamed to disk without growing the engine's memory."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, SecondaryCaptureImageStorage, Verification

from tests.integration.dicom import dcmtk, dicom_config, metric, rss_mb, scrape, write_big_instance
from tests.integration.helpers import EngineProcess, free_port, wait_until

pytestmark = pytest.mark.integration


class Rig:
    """A running engine with one dicom_scp channel."""

    def __init__(self, tmp: Path, engine: EngineProcess, port: int, metrics_port: int) -> None:
        self.tmp, self.engine, self.port, self.metrics_port = tmp, engine, port, metrics_port
        self.archive = tmp / "data" / "archive"

    def associate(self, *contexts: str) -> object:
        """A pynetdicom association (calling AE PYSCU) with the given storage contexts."""
        ae = AE("PYSCU")
        for cx in contexts or (CTImageStorage,):
            ae.add_requested_context(cx, ExplicitVRLittleEndian)  # the files are sent as they are
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        assoc = ae.associate("127.0.0.1", self.port, ae_title="RADBRIDGE")
        assert assoc.is_established
        return assoc

    def archived(self) -> list[Path]:
        """Instance files in the archive (outside the incoming folder)."""
        return [p for p in self.archive.rglob("*") if p.is_file() and ".incoming" not in p.parts]

    def incoming(self) -> list[Path]:
        """Files in the incoming folder."""
        folder = self.archive / ".incoming"
        return list(folder.iterdir()) if folder.exists() else []

    def echo_ok(self) -> bool:
        """The SCP still answers C-ECHO."""
        return dcmtk("echoscu", "-aec", "RADBRIDGE", "127.0.0.1", str(self.port)).returncode == 0


@pytest.fixture(autouse=True)
def send_files_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom sends a file path's bytes as they are (garbage included) instead of decoding it first."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


@pytest.fixture
def rig(tmp_path: Path, engine_factory: Callable[..., EngineProcess]) -> Iterator[Rig]:
    """The engine, stopped afterwards."""
    port, metrics_port = free_port(), free_port()
    config = tmp_path / "radbridge.yaml"
    config.write_text(dicom_config(tmp_path / "data", port, metrics_port))
    engine = engine_factory(config).start_ready()
    try:
        yield Rig(tmp_path, engine, port, metrics_port)
    finally:
        engine.terminate()


def part10_with(dataset_bytes: bytes, path: Path, sop_uid: str) -> Path:
    """A file with valid File Meta Information (CT, explicit VR LE) followed by *dataset_bytes*."""
    src = dcmread(get_testdata_file("CT_small.dcm"))
    src.SOPInstanceUID = sop_uid
    src.file_meta.MediaStorageSOPInstanceUID = sop_uid
    src.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    meta_len = struct.unpack("<I", raw[140:144])[0]  # (0002,0000) UL value after preamble, DICM, tag, VR, length
    path.write_bytes(raw[: 144 + meta_len] + dataset_bytes)
    return path


def test_garbage_dataset_gets_a_failure_status(rig: Rig, tmp_path: Path) -> None:
    """A dataset that cannot be parsed is refused with a 0xCxxx status, counted, and not archived."""
    path = part10_with(b"\xde\xad\xbe\xef" * 300, tmp_path / "garbage.dcm", generate_uid())
    assoc = rig.associate()
    try:
        status = assoc.send_c_store(path)
    finally:
        assoc.release()
    assert status.Status >> 12 == 0xC, hex(status.Status)
    assert rig.archived() == []
    assert metric(scrape(rig.metrics_port), "radbridge_dicom_instances_failed_total", channel="images") >= 1
    assert rig.echo_ok()


def test_missing_or_mismatched_sop_instance_uid_is_refused(rig: Rig, tmp_path: Path) -> None:
    """A dataset without SOP Instance UID, or with one differing from the request's, is refused."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    del ds.SOPInstanceUID
    missing = tmp_path / "missing.dcm"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(missing, enforce_file_format=True)
    other = dcmread(get_testdata_file("CT_small.dcm"))
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    whole = tmp_path / "other.dcm"
    other.save_as(whole, enforce_file_format=True)
    raw = whole.read_bytes()
    dataset = raw[144 + struct.unpack("<I", raw[140:144])[0] :]
    mismatched = part10_with(dataset, tmp_path / "mismatched.dcm", generate_uid())  # the request carries this UID
    assoc = rig.associate()
    try:
        statuses = [assoc.send_c_store(missing).Status, assoc.send_c_store(mismatched).Status]
    finally:
        assoc.release()
    assert all(s != 0 and s >> 12 != 0xB for s in statuses), [hex(s) for s in statuses]
    assert rig.archived() == []
    assert rig.echo_ok()


def test_duplicate_keeps_the_first_with_a_warning(rig: Rig, tmp_path: Path) -> None:
    """The same SOP Instance UID twice: success, then a warning status; one file, the first one."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    first = tmp_path / "first.dcm"
    ds.save_as(first, enforce_file_format=True)
    ds.PatientName = "CHANGED^NAME"
    second = tmp_path / "second.dcm"
    ds.save_as(second, enforce_file_format=True)
    assoc = rig.associate()
    try:
        statuses = [assoc.send_c_store(first).Status, assoc.send_c_store(second).Status]
    finally:
        assoc.release()
    assert statuses[0] == 0x0000 and statuses[1] >> 12 == 0xB, [hex(s) for s in statuses]
    files = rig.archived()
    assert len(files) == 1 and dcmread(files[0]).PatientName == dcmread(first).PatientName


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the aborting client's own DUL
def test_aborted_association_leaves_no_partial_file(rig: Rig, tmp_path: Path) -> None:
    """An association aborted in the middle of a 200 MB dataset leaves nothing in the archive or incoming folder."""
    big = tmp_path / "big.dcm"
    write_big_instance(big, 200 * 1024 * 1024)
    assoc = rig.associate(SecondaryCaptureImageStorage)
    sender = threading.Thread(target=lambda: assoc.send_c_store(big), daemon=True)
    sender.start()
    wait_until(lambda: any(p.stat().st_size > 10_000_000 for p in rig.incoming()), 30, what="a partial incoming file")
    assoc.abort()
    sender.join(timeout=30)
    wait_until(lambda: rig.incoming() == [], 10, what="the partial file to be deleted")
    assert rig.archived() == []
    assert rig.echo_ok()
    text = scrape(rig.metrics_port)
    assert metric(text, "radbridge_dicom_instances_failed_total", channel="images", reason="incomplete") == 1


def test_one_gigabyte_instance_is_streamed(rig: Rig, tmp_path: Path) -> None:
    """A 1 GB instance sent with storescu is archived intact while the engine's RSS grows by less than 50 MB."""
    big = tmp_path / "1g.dcm"
    sop = write_big_instance(big, 1024 * 1024 * 1024)
    pid = rig.engine.proc.pid
    before = rss_mb(pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        sent = dcmtk("storescu", "-aet", "STORESCU", "-aec", "RADBRIDGE", "127.0.0.1", str(rig.port), str(big),
                     timeout=600)  # fmt: skip
    finally:
        done.set()
        sampler.join(timeout=5)
    assert sent.returncode == 0, sent.stderr
    (stored,) = [p for p in rig.archived() if p.name == f"{sop}.dcm"]
    # The receiver writes its own File Meta Information (as every SCP does); the dataset is as sent.
    assert _dataset_part(stored) == _dataset_part(big)
    growth = peak[0] - before
    assert growth < 50, f"RSS grew by {growth:.1f} MB"


def _dataset_part(path: Path) -> tuple[int, bytes, bytes]:
    """(length, first MiB, last MiB) of the dataset after the File Meta Information."""
    with open(path, "rb") as fh:
        head = fh.read(144)
        start = 144 + struct.unpack("<I", head[140:144])[0]
        size = path.stat().st_size - start
        fh.seek(start)
        first = fh.read(1 << 20)
        fh.seek(-(1 << 20), 2)
        last = fh.read(1 << 20)
    return size, first, last
