"""Retention deletes whole old studies (rows, then files) and old HL7 files, in batches, never a recent study."""

from __future__ import annotations

import json
import time

from pydicom.uid import generate_uid
from sqlalchemy import select, update

from archive.retention import prune_sync, remove_files
from archive.schema import dicom_instances, dicom_patients, dicom_series, dicom_studies, hl7_archive
from engine.cli import main
from tests.archive.conftest import make_dicom, populate, receive, run_op

DAY = 86400.0


def add(archive, store, clock, study, series=None, *, age=0.0, **attrs):
    """Receive and index one instance of *study*, as if it arrived *age* seconds ago."""
    s = receive(archive, make_dicom(archive.incoming / f"{generate_uid()}.dcm", study=study, series=series, **attrs))
    s.received_at = time.time() - age
    run_op(store, clock, archive.index_op(s))
    return s


def count(store, table):
    """Rows in *table*."""
    return len(store.read_sync(lambda c: c.execute(select(table.c.id)).all()))


def test_only_old_studies_are_deleted(make_archive, sqlite_store, clock):
    """Studies whose newest instance is older than max_age go (rows and files); others stay whole."""
    archive = make_archive()
    old, recent, mixed = generate_uid(), generate_uid(), generate_uid()
    gone = [add(archive, sqlite_store, clock, old, age=40 * DAY) for _ in range(3)]
    kept = [add(archive, sqlite_store, clock, recent, age=1 * DAY, PatientID="P2")]
    kept += [add(archive, sqlite_store, clock, mixed, age=40 * DAY), add(archive, sqlite_store, clock, mixed, age=0)]
    pruned = prune_sync(sqlite_store, archive.root, 30 * DAY, batch_size=100, fsync=False)
    assert (pruned.studies, pruned.instances, pruned.files) == (1, 3, 3)
    uids = {r for r in sqlite_store.read_sync(lambda c: c.execute(select(dicom_studies.c.study_uid)).scalars().all())}
    assert uids == {recent, mixed}
    assert all(not archive.abspath(s.path).exists() for s in gone)
    assert all(archive.abspath(s.path).exists() for s in kept)
    assert not (archive.root / old).exists()  # emptied study folders are removed
    assert count(sqlite_store, dicom_instances) == 3 and count(sqlite_store, dicom_series) == 3  # a series each


def test_patients_without_studies_are_removed(make_archive, sqlite_store, clock):
    """A patient whose last study went is deleted; one with a study left stays."""
    archive = make_archive()
    add(archive, sqlite_store, clock, generate_uid(), age=40 * DAY, PatientID="GONE")
    add(archive, sqlite_store, clock, generate_uid(), age=40 * DAY, PatientID="STAYS")
    add(archive, sqlite_store, clock, generate_uid(), age=0, PatientID="STAYS")
    prune_sync(sqlite_store, archive.root, 30 * DAY, batch_size=100, fsync=False)
    ids = sqlite_store.read_sync(lambda c: c.execute(select(dicom_patients.c.patient_id)).scalars().all())
    assert ids == ["STAYS"]


def test_batches_cover_everything_old(make_archive, sqlite_store, clock):
    """With batch_size 1, one sweep still deletes every old study, one transaction each."""
    archive = make_archive()
    for _ in range(4):
        add(archive, sqlite_store, clock, generate_uid(), age=40 * DAY)
    assert prune_sync(sqlite_store, archive.root, 30 * DAY, batch_size=1, fsync=False).studies == 4
    assert count(sqlite_store, dicom_studies) == 0


def test_old_hl7_files_are_deleted(make_archive, sqlite_store, clock):
    """Archived HL7 older than max_age goes, row and file."""
    archive = make_archive()
    populate(archive, sqlite_store, clock, n=0)
    path = next(archive.root.rglob("*.hl7"))
    sqlite_store.transact_sync(lambda c: c.execute(update(hl7_archive).values(archived_at=time.time() - 40 * DAY)))
    assert prune_sync(sqlite_store, archive.root, 30 * DAY, batch_size=10, fsync=False).hl7 == 1
    assert count(sqlite_store, hl7_archive) == 0 and not path.exists()


def test_the_service_sweeps_on_its_interval(make_archive, sqlite_store, clock):
    """Archive.start() schedules the sweep with callLater; it deletes old studies and runs again later."""
    archive = make_archive(retention={"max_age": "30d", "interval": "1h"})
    add(archive, sqlite_store, clock, generate_uid(), age=40 * DAY)
    assert archive.retention is not None
    clock.advance(61)
    assert archive.retention.last.studies == 1 and count(sqlite_store, dicom_studies) == 0
    add(archive, sqlite_store, clock, generate_uid(), age=40 * DAY)
    clock.advance(3600)
    assert count(sqlite_store, dicom_studies) == 0
    archive.stop()
    assert not clock.getDelayedCalls()


def test_remove_files_skips_unsafe_paths(tmp_path):
    """A path that would leave the root is never deleted."""
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    root = tmp_path / "root"
    root.mkdir()
    assert remove_files(root, ["../outside.txt", "/etc/hostname"], fsync=False) == 0 and outside.exists()


def test_cli_prune(config, tmp_path, capsys):
    """radbridge archive prune needs an age (config or --older-than) and reports counts."""
    assert main(["archive", "prune", "-c", str(config)]) == 1
    assert main(["archive", "prune", "-c", str(config), "--older-than", "30d", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["studies"] == 0


def test_retention_and_verify_on_every_database(make_archive, any_store, clock):
    """On SQLite and PostgreSQL (foreign keys enforced), retention deletes an old study whole and verify stays clean."""
    from archive.verify import verify

    archive = make_archive(store=any_store)
    study, series = generate_uid(), generate_uid()
    for _ in range(2):
        add(archive, any_store, clock, study, series, age=40 * DAY)
    add(archive, any_store, clock, generate_uid(), age=0)
    pruned = prune_sync(any_store, archive.root, 30 * DAY, batch_size=10, fsync=False)
    assert (pruned.studies, pruned.instances) == (1, 2)
    assert count(any_store, dicom_studies) == 1 and count(any_store, dicom_instances) == 1
    assert verify(any_store, archive.root, hl7_layout="hl7/{channel}/{date}/{message_id}.hl7", orphans=True).ok
