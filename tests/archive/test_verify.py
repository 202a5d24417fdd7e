"""``archive verify``: missing, corrupt and orphan files are found; a clean archive passes; the CLI exits 1 on problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from archive.archive import Archive
from archive.verify import verify
from engine.cli import main
from engine.config.models import ArchiveConfig
from engine.store.store import Store
from tests.archive.conftest import inline, make_dicom, populate, receive

LAYOUT = "hl7/{channel}/{date}/{message_id}.hl7"


def test_a_clean_archive_verifies(make_archive, sqlite_store, clock):
    """Every indexed file present and intact: no problems, counts of instances and HL7 files."""
    archive = make_archive()
    populate(archive, sqlite_store, clock)
    report = verify(sqlite_store, archive.root, hl7_layout=LAYOUT, orphans=True)
    assert report.ok and (report.instances, report.hl7, report.scanned) == (3, 1, 4)


def test_missing_and_corrupt_files_are_found(make_archive, sqlite_store, clock):
    """A deleted instance is missing, a changed byte and a truncated HL7 file are corrupt."""
    archive = make_archive()
    stored = populate(archive, sqlite_store, clock)
    archive.abspath(stored[0].path).unlink()
    p = archive.abspath(stored[1].path)
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    hl7 = next(archive.root.rglob("*.hl7"))
    hl7.write_bytes(hl7.read_bytes()[:-3])
    report = verify(sqlite_store, archive.root, hl7_layout=LAYOUT)
    found = {(p.kind, p.what, p.path) for p in report.problems}
    assert ("missing", "instance", stored[0].path) in found
    assert ("corrupt", "instance", stored[1].path) in found
    assert ("corrupt", "hl7", hl7.relative_to(archive.root).as_posix()) in found
    assert report.count("missing") == 1 and report.count("corrupt") == 2
    assert next(p for p in report.problems if p.kind == "missing").key == stored[0].sop_instance_uid


def test_orphans_are_found(make_archive, sqlite_store, clock):
    """Files no row names (an unindexed instance, an HL7 file, junk) are orphans; .incoming is skipped."""
    archive = make_archive()
    populate(archive, sqlite_store, clock, n=1)
    unindexed = receive(archive, make_dicom(archive.incoming / "u.dcm"))
    (archive.root / "hl7/adt-in/2026/01/01").mkdir(parents=True)
    (archive.root / "hl7/adt-in/2026/01/01/99.hl7").write_text("MSH|")
    (archive.root / "junk.txt").write_text("x")
    (archive.incoming / "in-progress.dcm").write_text("partial")
    report = verify(sqlite_store, archive.root, hl7_layout=LAYOUT, orphans=True)
    orphans = {p.path for p in report.problems if p.kind == "orphan"}
    assert orphans == {unindexed.path, "hl7/adt-in/2026/01/01/99.hl7", "junk.txt"}
    assert report.count("missing") == report.count("corrupt") == 0


def test_verify_reads_in_pages(make_archive, sqlite_store, clock, monkeypatch):
    """Rows are read page by page (no query loads them all)."""
    from archive import verify as verify_module

    monkeypatch.setattr(verify_module, "PAGE", 2)
    archive = make_archive()
    populate(archive, sqlite_store, clock, n=5)
    calls = []
    real = sqlite_store.read_sync
    monkeypatch.setattr(sqlite_store, "read_sync", lambda fn, *a: (calls.append(1), real(fn, *a))[1])
    assert verify(sqlite_store, archive.root, hl7_layout=LAYOUT).instances == 5
    assert len(calls) >= 4  # 3 pages of instances + the empty one, then HL7 pages


@pytest.fixture
def cli_archive(tmp_path: Path, config: Path):
    """An archive and store at the config's default places, populated."""
    clock = Clock()
    store = Store(f"sqlite:///{tmp_path}/data/radbridge.db", clock, writer_mode="inline")
    store.start()
    archive = Archive(tmp_path / "data" / "archive", ArchiveConfig(fsync=False), store, clock, run_blocking=inline)
    archive.start()
    stored = populate(archive, store, clock, n=2)
    yield archive, stored
    d = store.stop()
    clock.advance(0)
    d.addErrback(lambda _: None)


def test_cli_verify_exit_codes_and_json(config, cli_archive, capsys):
    """radbridge archive verify exits 0 on a clean archive and 1 with a missing file, also with --json."""
    archive, stored = cli_archive
    assert main(["archive", "verify", "-c", str(config)]) == 0
    assert "verified 2 instances and 1 HL7 files" in capsys.readouterr().out
    archive.abspath(stored[0].path).unlink()
    assert main(["archive", "verify", "-c", str(config), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["missing"] == 1 and out["problems"][0]["path"] == stored[0].path
    assert main(["archive", "verify", "-c", str(config), "--orphans"]) == 1
    assert "MISSING" in capsys.readouterr().out
