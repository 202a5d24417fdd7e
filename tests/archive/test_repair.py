"""Deferred fsync of a received file (receive(defer_sync=True) then sync) and repair of a damaged archived copy."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from archive import files
from archive.schema import dicom_instances, dicom_studies
from archive.verify import verify
from tests.archive.conftest import receive, run_op


@pytest.fixture
def spies(monkeypatch):
    """Record fsync_file (by inode: the temp and final names share one) and fsync_dir (by folder) calls."""
    calls: dict[str, list] = {"file": [], "dir": []}
    real_file, real_dir = files.fsync_file, files.fsync_dir

    def fsync_file(path: Path) -> None:
        calls["file"].append(os.stat(path).st_ino)
        real_file(path)

    def fsync_dir(directory: Path) -> None:
        calls["dir"].append(Path(directory).resolve())
        real_dir(directory)

    monkeypatch.setattr(files, "fsync_file", fsync_file)
    monkeypatch.setattr(files, "fsync_dir", fsync_dir)
    return calls


@pytest.fixture
def uids():
    """Study, series and SOP Instance UIDs shared by the copies of one instance."""
    return {"study": generate_uid(), "series": generate_uid(), "sop": generate_uid()}


def row_of(store, sop_uid):
    """The dicom_instances row of *sop_uid* (None if there is none)."""
    i = dicom_instances.c
    q = select(i.path, i.size, i.sha256).where(i.sop_uid == sop_uid)
    return store.read_sync(lambda c: c.execute(q).first())


def assert_clean(archive, store, sop_uid):
    """The row matches the file on disk and verify (with the orphan scan) finds nothing wrong."""
    row = row_of(store, sop_uid)
    data = archive.abspath(row.path).read_bytes()
    assert (row.size, row.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    report = verify(store, archive.root, hl7_layout=archive.config.hl7_layout, orphans=True)
    assert report.ok, report.problems
    assert (report.instances, report.scanned) == (1, 1)


def test_defer_sync_leaves_the_flush_to_sync(make_archive, incoming_file, spies):
    """defer_sync: the file is at its final path unflushed; sync flushes it and its folder once, then is a no-op."""
    archive = make_archive(fsync=True)
    temp = incoming_file()
    data = temp.read_bytes()
    s = receive(archive, temp, defer_sync=True)
    final = archive.abspath(s.path)
    ino = os.stat(final).st_ino
    assert (s.outcome, s.status, s.placed, s.unsynced) == ("stored", 0x0000, True, True)
    assert final.read_bytes() == data and not temp.exists()
    assert ino not in spies["file"] and final.parent not in spies["dir"]
    archive.sync(s)
    assert spies["file"].count(ino) == 1 and spies["dir"].count(final.parent) == 1
    assert s.unsynced is False
    archive.sync(s)
    assert spies["file"].count(ino) == 1 and spies["dir"].count(final.parent) == 1


@pytest.mark.parametrize(
    ("config", "defer_sync", "flushes"),
    [({}, False, 1), ({"duplicates": "replace"}, True, 1), ({"duplicates": "replace"}, False, 1),
     ({"fsync": False}, True, 0)],
)  # fmt: skip
def test_receive_flushes_itself_unless_deferred(make_archive, incoming_file, spies, config, defer_sync, flushes):
    """Without defer_sync, or with replace, receive flushes the file and its folder; with fsync off nothing does."""
    archive = make_archive(**{"fsync": True, **config})
    s = receive(archive, incoming_file(), defer_sync=defer_sync)
    final = archive.abspath(s.path)
    assert s.outcome == "stored" and s.unsynced is False
    ino = os.stat(final).st_ino
    assert spies["file"].count(ino) == flushes and spies["dir"].count(final.parent) == flushes
    archive.sync(s)  # nothing left to flush
    assert spies["file"].count(ino) == flushes and spies["dir"].count(final.parent) == flushes


def test_an_intact_duplicate_is_kept_untouched(make_archive, incoming_file, sqlite_store, clock, uids, spies):
    """keep_first: an intact first copy stays (bytes and mtime) and the resend is duplicate_kept, never unsynced."""
    archive = make_archive(fsync=True)
    first = receive(archive, incoming_file(**uids))
    run_op(sqlite_store, clock, archive.index_op(first))
    final = archive.abspath(first.path)
    before, mtime = final.read_bytes(), os.stat(final).st_mtime_ns
    again = receive(archive, incoming_file(**uids, StudyDescription="second copy"), defer_sync=True)
    assert (again.outcome, again.status, again.placed, again.unsynced) == ("duplicate_kept", 0xB006, False, False)
    assert (again.size, again.sha256) == (first.size, first.sha256)
    assert final.read_bytes() == before and os.stat(final).st_mtime_ns == mtime
    assert run_op(sqlite_store, clock, archive.index_op(again)).outcome == "kept"
    assert_clean(archive, sqlite_store, uids["sop"])


def truncate(path: Path) -> None:
    """Cut the file in half (size differs from the row)."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def zero(path: Path) -> None:
    """Overwrite the file with zeros of the same size (only the SHA-256 differs)."""
    path.write_bytes(bytes(path.stat().st_size))


@pytest.mark.parametrize("policy", ["keep_first", "reject"])
@pytest.mark.parametrize("damage", [truncate, zero])
def test_a_damaged_copy_is_replaced_by_the_resend(
    make_archive, incoming_file, sqlite_store, clock, uids, spies, caplog, policy, damage
):  # fmt: skip
    """A copy whose size or SHA-256 differ from its row is replaced by the resend (0x0000), flushed, re-indexed."""
    archive = make_archive(fsync=True, duplicates=policy)
    first = receive(archive, incoming_file(**uids))
    assert run_op(sqlite_store, clock, archive.index_op(first)).outcome == "inserted"
    final = archive.abspath(first.path)
    damage(final)
    temp = incoming_file(**uids, StudyDescription="resent")
    data = temp.read_bytes()
    with caplog.at_level(logging.WARNING, logger="radbridge.archive"):
        s = receive(archive, temp, defer_sync=True)
    assert (s.outcome, s.status, s.placed, s.unsynced) == ("replaced", 0x0000, True, False)
    assert (s.size, s.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert final.read_bytes() == data and not temp.exists()
    assert os.stat(final).st_ino in spies["file"]  # a repair is flushed inside receive even with defer_sync
    assert any("damaged" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    result = run_op(sqlite_store, clock, archive.index_op(s))
    assert (result.outcome, result.status, result.discard_file) == ("replaced", 0x0000, False)
    assert archive.discard(s) is False and final.exists()
    assert_clean(archive, sqlite_store, uids["sop"])
    assert sqlite_store.read_sync(lambda c: c.execute(select(dicom_studies.c.num_instances)).scalar()) == 1


def test_reject_still_refuses_an_intact_duplicate(make_archive, incoming_file, sqlite_store, clock, uids):
    """reject: an intact indexed copy makes the resend duplicate_rejected (0x0111) and the file stays."""
    archive = make_archive(duplicates="reject")
    first = receive(archive, incoming_file(**uids))
    run_op(sqlite_store, clock, archive.index_op(first))
    before = archive.abspath(first.path).read_bytes()
    again = receive(archive, incoming_file(**uids, StudyDescription="second copy"))
    assert (again.outcome, again.status, again.placed) == ("duplicate_rejected", 0x0111, False)
    assert archive.abspath(first.path).read_bytes() == before
    assert run_op(sqlite_store, clock, archive.index_op(again)).outcome == "rejected"
    assert_clean(archive, sqlite_store, uids["sop"])


@pytest.mark.parametrize("policy", ["keep_first", "reject"])
def test_a_deleted_file_is_restored_by_the_resend(make_archive, incoming_file, sqlite_store, clock, uids, policy):
    """Row present, file gone: the resend is placed again and its index op replaces the row."""
    archive = make_archive(duplicates=policy)
    first = receive(archive, incoming_file(**uids))
    run_op(sqlite_store, clock, archive.index_op(first))
    archive.abspath(first.path).unlink()
    temp = incoming_file(**uids, StudyDescription="resent")
    data = temp.read_bytes()
    s = receive(archive, temp)
    assert (s.outcome, s.status, s.placed) == ("stored", 0x0000, True)
    assert archive.abspath(s.path).read_bytes() == data
    assert run_op(sqlite_store, clock, archive.index_op(s)).outcome == "replaced"
    assert_clean(archive, sqlite_store, uids["sop"])


def test_a_file_vanishing_after_the_link_failed_is_replaced(
    make_archive, incoming_file, sqlite_store, clock, uids, monkeypatch
):  # fmt: skip
    """The final file exists when the link is tried but is gone when checked: the resend is placed (replaced)."""
    archive = make_archive()
    first = receive(archive, incoming_file(**uids))
    run_op(sqlite_store, clock, archive.index_op(first))
    real = files.place_file

    def place_then_vanish(temp: Path, final: Path, **kw):
        result = real(temp, final, **kw)
        if result == files.EXISTS:
            final.unlink()
        return result

    monkeypatch.setattr(files, "place_file", place_then_vanish)
    temp = incoming_file(**uids, StudyDescription="resent")
    data = temp.read_bytes()
    s = receive(archive, temp)
    assert (s.outcome, s.status, s.placed) == ("replaced", 0x0000, True)
    assert archive.abspath(s.path).read_bytes() == data
    assert run_op(sqlite_store, clock, archive.index_op(s)).outcome == "replaced"
    assert_clean(archive, sqlite_store, uids["sop"])


def test_an_unparsable_orphan_is_replaced_and_indexed(make_archive, incoming_file, sqlite_store, clock, uids):
    """Junk at the final path with no row: the resend replaces it and its index op inserts the row."""
    archive = make_archive()
    final = archive.root / uids["study"] / uids["series"] / f"{uids['sop']}.dcm"
    final.parent.mkdir(parents=True)
    final.write_bytes(os.urandom(2000))
    temp = incoming_file(**uids)
    data = temp.read_bytes()
    s = receive(archive, temp)
    assert (s.outcome, s.status, s.placed) == ("replaced", 0x0000, True)
    assert archive.abspath(s.path) == final and final.read_bytes() == data
    assert row_of(sqlite_store, uids["sop"]) is None
    assert run_op(sqlite_store, clock, archive.index_op(s)).outcome == "inserted"
    assert_clean(archive, sqlite_store, uids["sop"])
