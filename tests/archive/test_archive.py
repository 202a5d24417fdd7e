"""The archive service: receive checks, checksums and places files per policy; index, discard, event payload."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from archive.archive import Archive, ArchiveServiceConfig, build_archive, resolve_root
from archive.header import InvalidInstance
from archive.schema import dicom_instances, dicom_studies
from engine.components import BuildContext
from engine.config.models import ArchiveConfig
from engine.registry import default_registry
from tests.archive.conftest import make_dicom, receive, run_op


def test_receive_places_the_file_under_the_layout(make_archive, incoming_file):
    """A new instance lands at study/series/sop.dcm with its checksum; the temp file is gone."""
    archive = make_archive()
    temp = incoming_file()
    data = temp.read_bytes()
    s = receive(archive, temp)
    assert (s.outcome, s.status, s.placed) == ("stored", 0x0000, True)
    assert s.path == f"{s.attrs['StudyInstanceUID']}/{s.attrs['SeriesInstanceUID']}/{s.sop_instance_uid}.dcm"
    assert archive.abspath(s.path).read_bytes() == data and not temp.exists()
    assert s.size == len(data) and s.sha256 == hashlib.sha256(data).hexdigest()
    assert s.attrs["Modality"] == "CT" and set(s.levels) == {"patient", "study", "series", "instance"}


def test_event_payload(make_archive, incoming_file):
    """The dicom.stored payload names the file, its checksum, the sender and the outcome."""
    archive = make_archive()
    s = receive(archive, incoming_file())
    payload = archive.event_payload(s)
    assert set(payload) == {"path", "sop_class_uid", "sop_instance_uid", "transfer_syntax", "size", "sha256",
                            "calling_ae", "outcome"}  # fmt: skip
    assert payload["outcome"] == "stored" and payload["calling_ae"] == "MODALITY"


def test_keep_first_keeps_the_first_copy_and_warns(make_archive, incoming_file, sqlite_store, clock):
    """keep_first: the same SOP again answers 0xB006, leaves the first file, and the index op keeps it."""
    archive = make_archive()
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    first = receive(archive, incoming_file(study=study, series=series, sop=sop))
    run_op(sqlite_store, clock, archive.index_op(first))
    before = archive.abspath(first.path).read_bytes()
    temp = incoming_file(study=study, series=series, sop=sop, StudyDescription="second copy")
    again = receive(archive, temp)
    assert (again.outcome, again.status, again.placed) == ("duplicate_kept", 0xB006, False)
    assert archive.abspath(first.path).read_bytes() == before and not temp.exists()
    assert again.sha256 == first.sha256
    result = run_op(sqlite_store, clock, archive.index_op(again))
    assert result.outcome == "kept" and not result.discard_file
    assert archive.discard(again) is False and archive.abspath(first.path).exists()


def test_reject_refuses_a_duplicate(make_archive, incoming_file):
    """reject: the same SOP again is duplicate_rejected with 0x0111 and the first file stays."""
    archive = make_archive(duplicates="reject")
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    receive(archive, incoming_file(study=study, series=series, sop=sop))
    again = receive(archive, incoming_file(study=study, series=series, sop=sop))
    assert (again.outcome, again.status) == ("duplicate_rejected", 0x0111)


def test_replace_overwrites_and_the_index_follows(make_archive, incoming_file, sqlite_store, clock):
    """replace: the same SOP again replaces the file (0x0000) and its row's checksum."""
    archive = make_archive(duplicates="replace")
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    run_op(sqlite_store, clock, archive.index_op(receive(archive, incoming_file(study=study, series=series, sop=sop))))
    temp = incoming_file(study=study, series=series, sop=sop, StudyDescription="corrected")
    data = temp.read_bytes()
    s = receive(archive, temp)
    assert (s.outcome, s.status) == ("replaced", 0)
    assert archive.abspath(s.path).read_bytes() == data
    assert run_op(sqlite_store, clock, archive.index_op(s)).outcome == "replaced"
    row = sqlite_store.read_sync(lambda c: c.execute(select(dicom_instances)).one())
    assert row.sha256 == hashlib.sha256(data).hexdigest()


def test_two_associations_storing_the_same_sop_keep_one(make_archive, incoming_file):
    """Concurrent receives of one SOP Instance with keep_first: one stored, the others kept duplicates."""
    archive = make_archive()
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    temps = [incoming_file(study=study, series=series, sop=sop, StudyDescription=f"copy {i}") for i in range(6)]
    contents = {t.read_bytes() for t in temps}
    outcomes: list[str] = []
    barrier = threading.Barrier(len(temps))

    def run(t: Path) -> None:
        barrier.wait()
        outcomes.append(receive(archive, t).outcome)

    threads = [threading.Thread(target=run, args=(t,)) for t in temps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["duplicate_kept"] * 5 + ["stored"]
    final = next(archive.root.rglob("*.dcm"))
    assert final.read_bytes() in contents and len(list(archive.root.rglob("*.dcm"))) == 1


@pytest.mark.parametrize(
    ("override", "status", "kind"),
    [({"sop_instance_uid": "1.2.3.999"}, 0xA900, "sop_mismatch"), ({"sop_class_uid": "1.2.840.10008.5.1.4.1.1.4"}, 0xA900, "sop_mismatch")],
)  # fmt: skip
def test_a_file_that_does_not_match_the_request_is_refused(make_archive, incoming_file, override, status, kind):
    """A SOP Instance or Class UID differing from the C-STORE request: 0xA900, temp deleted, nothing archived."""
    archive = make_archive()
    temp = incoming_file()
    with pytest.raises(InvalidInstance) as exc:
        receive(archive, temp, **override)
    assert (exc.value.status, exc.value.kind) == (status, kind)
    assert not temp.exists() and list(archive.root.rglob("*.dcm")) == []


def test_garbage_and_missing_uids_are_refused(make_archive, tmp_path):
    """Junk answers 0xC000 and a file without a Series UID 0xC001; neither leaves anything behind."""
    archive = make_archive()
    junk = archive.incoming / "junk.dcm"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(InvalidInstance) as exc:
        archive.receive(junk, sop_class_uid="1.2", sop_instance_uid="1.3", transfer_syntax="1.2.840.10008.1.2.1",
                        calling_ae="X", channel="c")  # fmt: skip
    assert exc.value.status == 0xC000 and not junk.exists()
    temp = make_dicom(archive.incoming / "t.dcm", SeriesInstanceUID=None)
    with pytest.raises(InvalidInstance) as exc:
        receive(archive, temp)
    assert exc.value.status == 0xC001 and not temp.exists()
    assert list(archive.root.rglob("*.dcm")) == []


def test_a_layout_value_unfit_for_a_path_is_refused(make_archive, incoming_file):
    """With {Modality} in the layout, an unusable Modality is refused with 0xC001."""
    archive = make_archive(layout="{Modality}/{SOPInstanceUID}.dcm")
    with pytest.raises(InvalidInstance) as exc:
        receive(archive, incoming_file(Modality="../x"))
    assert exc.value.status == 0xC001


def test_discard_removes_only_a_file_this_call_placed(make_archive, incoming_file):
    """discard deletes a newly stored file (its transaction failed), and is a no-op otherwise."""
    archive = make_archive()
    s = receive(archive, incoming_file())
    assert archive.discard(s) is True and not archive.abspath(s.path).exists()
    assert archive.discard(s) is False


def test_index_and_event_commit_together(make_archive, incoming_file, sqlite_store, clock):
    """The index op commits the instance with the message id it is given."""
    archive = make_archive()
    s = receive(archive, incoming_file())
    result = run_op(sqlite_store, clock, archive.index_op(s), message_id=42)
    assert result.outcome == "inserted" and result.status == 0
    row = sqlite_store.read_sync(lambda c: c.execute(select(dicom_instances)).one())
    assert (row.message_id, row.path, row.sha256) == (42, s.path, s.sha256)


def test_an_unindexed_first_copy_is_adopted_with_its_own_checksum(make_archive, incoming_file, sqlite_store, clock):
    """A file already at the path but with no row (crash before commit) is indexed with that file's checksum."""
    archive = make_archive()
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    first = receive(archive, incoming_file(study=study, series=series, sop=sop))  # never indexed
    again = receive(archive, incoming_file(study=study, series=series, sop=sop, StudyDescription="other"))
    assert again.outcome == "duplicate_kept" and again.sha256 == first.sha256
    assert run_op(sqlite_store, clock, archive.index_op(again)).outcome == "inserted"
    assert sqlite_store.read_sync(lambda c: c.execute(select(dicom_instances.c.sha256)).scalar()) == first.sha256


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../x", "", "a\0b", "."])
def test_abspath_refuses_paths_outside_the_root(make_archive, rel):
    """abspath refuses anything resolving outside the root (or the root itself)."""
    with pytest.raises(ValueError):
        make_archive().abspath(rel)


def test_abspath_refuses_a_symlink_out_of_the_root(make_archive, tmp_path):
    """A symlink inside the archive pointing outside is refused."""
    archive = make_archive()
    (archive.root / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError):
        archive.abspath("link/x")
    assert archive.abspath("1.2/3.dcm") == archive.root / "1.2" / "3.dcm"


def test_start_removes_stale_incoming_files(make_archive, tmp_path):
    """start() deletes .incoming files older than an hour and keeps fresh ones."""
    incoming = tmp_path / "archive" / ".incoming"
    incoming.mkdir(parents=True)
    old, fresh = incoming / "old.dcm", incoming / "fresh.dcm"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    make_archive()
    assert not old.exists() and fresh.exists()


def test_build_archive_resolves_the_root(tmp_path, sqlite_store, clock):
    """root is relative to the config folder; without it the archive lives in <data_dir>/archive."""
    ctx = BuildContext(clock, "", "archive", tmp_path / "conf", tmp_path / "data", store=sqlite_store)
    assert build_archive(ArchiveConfig(), ctx).root == (tmp_path / "data" / "archive").resolve()
    assert build_archive(ArchiveConfig(root="store"), ctx).root == (tmp_path / "conf" / "store").resolve()
    assert resolve_root(ArchiveConfig(root="/abs/x"), tmp_path, tmp_path) == Path("/abs/x")


def test_the_service_and_destination_are_registered():
    """The archive registers its service (with layout checks) and its destination type."""
    reg = default_registry()
    service = reg.get("service", "archive")
    assert service.model is ArchiveServiceConfig
    with pytest.raises(ValueError, match="PatientName"):
        ArchiveServiceConfig(layout="{PatientName}/{SOPInstanceUID}.dcm")
    assert reg.get("destination", "archive")


def test_a_bad_layout_fails_at_build_time(tmp_path, sqlite_store, clock):
    """An Archive with a layout that could escape the root cannot be built."""
    with pytest.raises(ValueError):
        Archive(tmp_path, ArchiveConfig(layout="../{SOPInstanceUID}"), sqlite_store, clock)


def test_fsync_on_works(make_archive, incoming_file, sqlite_store, clock):
    """With fsync on (the default outside tests), a receive still places and indexes the file."""
    archive = make_archive(fsync=True)
    s = receive(archive, incoming_file())
    run_op(sqlite_store, clock, archive.index_op(s))
    assert sqlite_store.read_sync(lambda c: c.execute(select(dicom_studies.c.num_instances)).scalar()) == 1
