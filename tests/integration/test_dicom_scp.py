"""``radbridge run`` as a DICOM SCP with real peers: dcmtk echoscu, storescu, findscu, movescu, getscu."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.integration.dicom import dcmtk, dicom_config, make_study, metric, scrape
from tests.integration.helpers import EngineProcess, free_port, wait_until

pytestmark = pytest.mark.integration

ALLOWED = "[ECHOSCU, STORESCU, FINDSCU, MOVESCU, GETSCU, PYSCU]"


class Rig:
    """One running engine with a dicom_scp channel, and a dcmtk storescp as C-MOVE destination."""

    def __init__(self, tmp: Path, engine: EngineProcess, port: int, metrics_port: int, move_dir: Path,
                 move_proc: subprocess.Popen) -> None:  # fmt: skip
        self.tmp, self.engine, self.port, self.metrics_port = tmp, engine, port, metrics_port
        self.move_dir, self.move_proc = move_dir, move_proc
        self.archive = tmp / "data" / "archive"

    def tool(
        self, tool: str, *args: str, aet: str | None = None, files: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess:
        """Run a dcmtk tool against the engine with calling AE *aet* (default: the tool's name)."""
        return dcmtk(tool, "-aet", aet or tool.upper(), "-aec", "RADBRIDGE", *args, "127.0.0.1", str(self.port), *files)

    def metrics(self) -> str:
        """The /metrics text."""
        return scrape(self.metrics_port)

    def archived(self) -> list[Path]:
        """Every instance file in the archive (not the incoming folder)."""
        return sorted(p for p in self.archive.rglob("*.dcm") if ".incoming" not in p.parts)


@pytest.fixture
def rig(tmp_path: Path, engine_factory: Callable[..., EngineProcess]) -> Iterator[Rig]:
    """The engine with an allow-list and a move destination; storescp for C-MOVE; all stopped afterwards."""
    port, metrics_port, move_port = free_port(), free_port(), free_port()
    move_dir = tmp_path / "moved"
    move_dir.mkdir()
    move_proc = subprocess.Popen(
        ["storescp", "-od", str(move_dir), "-aet", "STORESCP", str(move_port)],
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    extra = f"""      allowed_ae_titles: {ALLOWED}
      move_destinations: {{STORESCP: {{host: 127.0.0.1, port: {move_port}}}}}"""
    config = tmp_path / "radbridge.yaml"
    config.write_text(dicom_config(tmp_path / "data", port, metrics_port, extra_source=extra))
    engine = engine_factory(config).start_ready()
    try:
        yield Rig(tmp_path, engine, port, metrics_port, move_dir, move_proc)
    finally:
        engine.terminate()
        move_proc.terminate()
        move_proc.wait(timeout=10)


def test_echo_store_find_move_get(rig: Rig, tmp_path: Path) -> None:
    """A study stored with storescu is archived with checksums, found with findscu and retrieved by C-MOVE and C-GET."""
    assert rig.tool("echoscu").returncode == 0
    files = make_study(tmp_path / "study", 6, series=2)
    study_uid = dcmread(files[0]).StudyInstanceUID
    sent = rig.tool("storescu", files=tuple(map(str, files)))
    assert sent.returncode == 0, sent.stderr
    archived = rig.archived()
    assert len(archived) == 6
    originals = {dcmread(f).SOPInstanceUID: f for f in files}
    for path in archived:
        ds = dcmread(path)
        assert path.relative_to(rig.archive).parts == (
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            f"{ds.SOPInstanceUID}.dcm",
        )
        assert ds.PixelData == dcmread(originals[ds.SOPInstanceUID]).PixelData  # stored as received
    verify = subprocess.run(
        [*rig_cli(), "archive", "verify", "-c", str(rig.engine.config)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = rig.metrics()
    assert metric(text, "radbridge_dicom_instances_stored_total", channel="images") == 6
    assert metric(text, "radbridge_dicom_stored_bytes_total", channel="images") == sum(
        p.stat().st_size for p in archived
    )
    assert metric(text, "radbridge_dicom_associations_total", channel="images", outcome="accepted") >= 2

    out = tmp_path / "find"
    out.mkdir()
    found = rig.tool("findscu", "-S", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                     "-k", f"StudyInstanceUID={study_uid}", "-k", "PatientName", "-k", "NumberOfStudyRelatedInstances")  # fmt: skip
    assert found.returncode == 0, found.stderr
    responses = [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    assert len(responses) == 1
    assert responses[0].PatientName == "DOE^JANE" and int(responses[0].NumberOfStudyRelatedInstances) == 6

    moved = rig.tool(
        "movescu", "-S", "-aem", "STORESCP", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"
    )
    assert moved.returncode == 0, moved.stderr
    wait_until(lambda: len(list(rig.move_dir.iterdir())) == 6, 20, what="6 moved instances")

    got_dir = tmp_path / "got"
    got_dir.mkdir()
    got = rig.tool(
        "getscu", "-S", "-od", str(got_dir), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"
    )
    assert got.returncode == 0, got.stderr
    got_files = list(got_dir.iterdir())
    assert len(got_files) == 6
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in archived}
    assert {dcmread(p).SOPInstanceUID for p in got_files} == set(originals)
    assert digests  # the archive's own files are untouched by retrieval
    assert {hashlib.sha256(p.read_bytes()).hexdigest() for p in rig.archived()} == digests


def test_unknown_calling_ae_is_rejected_and_service_goes_on(rig: Rig) -> None:
    """An association from an AE title not on the allow-list is rejected; allowed ones still work."""
    refused = rig.tool("echoscu", aet="INTRUDER")
    assert refused.returncode != 0
    assert "Association Rejected" in refused.stderr + refused.stdout
    assert "Calling AE Title Not Recognized" in refused.stderr + refused.stdout
    assert rig.tool("echoscu").returncode == 0
    text = rig.metrics()
    assert metric(text, "radbridge_dicom_associations_total", channel="images", outcome="rejected_ae") == 1


def rig_cli() -> list[str]:
    """The radbridge command line of the tests' interpreter."""
    import sys

    return [sys.executable, "-m", "engine.cli"]


def test_storescu_study_lands_in_index_and_store(rig: Rig, tmp_path: Path) -> None:
    """Each stored instance is one message (dicom.stored) in the store, searchable by patient and accession."""
    files = make_study(tmp_path / "s2", 3, series=1, patient_id="PX9", accession="ACCX9")
    assert rig.tool("storescu", files=tuple(map(str, files))).returncode == 0
    search = subprocess.run(
        [*rig_cli(), "messages", "search", "-c", str(rig.engine.config), "--accession", "ACCX9", "--json"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert search.returncode == 0, search.stderr
    rows = json.loads(search.stdout)
    assert [r["message_type"] for r in rows] == ["dicom.stored"] * 3
    assert {r["control_id"] for r in rows} == {str(dcmread(f).SOPInstanceUID) for f in files}
