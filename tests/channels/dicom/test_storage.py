"""StorageHandler.store on a real archive and SQLite store: copies of one instance in turn, commit and flush at once."""

from __future__ import annotations

import functools
import queue
import threading
from unittest import mock

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import dimse_messages
from twisted.internet import defer

from channels.dicom.storage import StorageHandler
from tests.archive import conftest as archive_fixtures
from tests.archive.test_repair import assert_clean, row_of, truncate, zero
from tests.engine.conftest import message_values

clock, sqlite_store = archive_fixtures.clock, archive_fixtures.sqlite_store
make_archive, incoming_file = archive_fixtures.make_archive, archive_fixtures.incoming_file
WAIT = 5.0  # seconds: the bound of every wait (a regression fails instead of hanging)


class ThreadReactor:
    """callFromThread runs its calls one by one on a dedicated "reactor" thread, as the real reactor does."""

    def __init__(self) -> None:
        self.calls, self.errors = queue.Queue(), []
        self.thread = threading.Thread(target=self._run, name="reactor", daemon=True)
        self.thread.start()

    def callFromThread(self, f, *args, **kwargs) -> None:
        self.calls.put((f, args, kwargs))

    def _run(self) -> None:
        while (call := self.calls.get()) is not None:
            try:
                call[0](*call[1], **call[2])
            except BaseException as exc:  # noqa: BLE001 - reported by the fixture
                self.errors.append(exc)


class Sink:
    """ingest_event: a message row and *extra_op* in one commit; ``hook(n, commit)`` may delay or fail the n-th."""

    def __init__(self, store, clock) -> None:
        self.store, self.clock, self.calls, self.hook = store, clock, 0, None

    def ingest_event(self, message, source, *, extra_op, sending_app, skip_reason):
        n, self.calls = self.calls, self.calls + 1
        values = message_values(channel="dicom-in", origin=source, sending_app=sending_app, filter_info=skip_reason)

        def op(cur, stmts, _message_id):
            mid, _ = self.store.writer.message_op(values, [])(cur, stmts)
            return mid, [], extra_op(cur, stmts, mid)

        commit = functools.partial(archive_fixtures.run_op, self.store, self.clock, op)
        return self.hook(n, commit) if self.hook else commit()  # a result or a Deferred, as the real one


@pytest.fixture
def reactor(sqlite_store):  # after the store: stopped (and its errors checked) before the store closes
    r = ThreadReactor()
    yield r
    r.calls.put(None)
    r.thread.join(WAIT)
    assert not r.thread.is_alive() and not r.errors, r.errors


@pytest.fixture
def uids():
    return {"study": generate_uid(), "series": generate_uid(), "sop": generate_uid()}


@pytest.fixture
def handler(make_archive, sqlite_store, clock, reactor, monkeypatch):
    """A handler on an archive with fsync on (so that Archive.sync has work to do); pynetdicom restored after."""
    for name in ("NamedTemporaryFile", "create_file_meta", "write_file_meta_info"):
        monkeypatch.setattr(dimse_messages, name, getattr(dimse_messages, name))  # StorageHandler installs its own
    return StorageHandler(make_archive(fsync=True), Sink(sqlite_store, clock), reactor, "dicom-in", mock.Mock())


def store(handler, temp):
    """handler.store with the request values taken from the file itself."""
    ds = pydicom.dcmread(temp, stop_before_pixels=True)
    return handler.store(
        temp, sop_class_uid=str(ds.SOPClassUID), sop_instance_uid=str(ds.SOPInstanceUID),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID), calling_ae="MODALITY", address="10.0.0.9",
    )  # fmt: skip


def final_path(handler, uids):
    return handler.archive.root / uids["study"] / uids["series"] / f"{uids['sop']}.dcm"


def test_copies_of_a_damaged_instance_are_stored_one_after_the_other(handler, incoming_file, uids, monkeypatch):
    """A repairs the damaged file; B, arriving while A's commit is held back, waits for it and is kept.

    (Without the instance lock B "repairs" A's uncommitted file and commits first: A's row over B's file.)
    """
    archive, sink = handler.archive, handler.sink
    assert store(handler, incoming_file(**uids)) == (0x0000, "")
    truncate(final_path(handler, uids))
    b_asked, b_committed, a_entered = threading.Event(), threading.Event(), threading.Event()
    real_lock, statuses, threads = archive.instance_lock, {}, {}

    def instance_lock(sop_uid):
        if a_entered.is_set():  # B
            b_asked.set()
        return real_lock(sop_uid)

    def commit_later(commit, d):  # once B asked for the lock and then committed, or waited 0.5 s
        if b_asked.wait(WAIT):
            b_committed.wait(0.5)
        handler.reactor.callFromThread(lambda: defer.maybeDeferred(commit).chainDeferred(d))

    def hook(n, commit):
        if n == 1:  # A
            d = defer.Deferred()
            threads["commit A"] = threading.Thread(target=commit_later, args=(commit, d), daemon=True)
            threads["commit A"].start()
            a_entered.set()
            return d
        result = commit()  # B (the hook is set after the initial store)
        b_committed.set()
        return result

    monkeypatch.setattr(archive, "instance_lock", instance_lock)
    sink.hook = hook
    copies = {k: incoming_file(**uids, StudyDescription=f"copy {k}") for k in "AB"}
    data = {k: temp.read_bytes() for k, temp in copies.items()}
    for k in "AB":
        threads[k] = threading.Thread(target=lambda k=k: statuses.update({k: store(handler, copies[k])}), daemon=True)
        threads[k].start()
        assert a_entered.wait(WAIT)  # B starts once A's file is placed and its commit pending
    for t in list(threads.values()):
        t.join(2 * WAIT)
        assert not t.is_alive()
    assert b_asked.is_set() and {code for code, _ in statuses.values()} <= {0x0000, 0xB006}, statuses
    assert_clean(archive, sink.store, uids["sop"])  # the row's size and sha256 are the file's; verify is clean
    assert statuses == {"A": (0x0000, ""), "B": (0xB006, "")} and final_path(handler, uids).read_bytes() == data["A"]


@pytest.mark.parametrize("last", ["commit", "sync"])
def test_the_flush_runs_while_the_transaction_commits(handler, incoming_file, monkeypatch, last):
    """Archive.sync runs while ingest_event is pending, and the status comes once both are done (either last)."""
    archive, waits, done, real_sync = handler.archive, [], [], handler.archive.sync
    entered, synced, committed = threading.Event(), threading.Event(), threading.Event()

    def sync(stored):
        entered.set()
        assert stored.unsynced
        waits.append(last != "sync" or committed.wait(WAIT))
        real_sync(stored)
        done.append("sync")
        synced.set()

    def hook(n, commit):
        waits.append(entered.wait(WAIT))  # a commit that waits for the flush to start: they overlap
        waits.append(last != "commit" or synced.wait(WAIT))
        result = commit()
        done.append("commit")
        committed.set()
        return result

    monkeypatch.setattr(archive, "sync", sync)
    handler.sink.hook = hook
    assert store(handler, incoming_file()) == (0x0000, "")
    assert waits == [True] * 3 and done == (["sync", "commit"] if last == "commit" else ["commit", "sync"])
    handler.metrics.instance_stored.assert_called_once()


def test_a_failed_transaction_removes_the_new_file(handler, incoming_file, uids):
    """The sink fails: 0xA700 "instance could not be stored", and neither the file nor a row is left."""
    handler.sink.hook = mock.Mock(side_effect=RuntimeError("database is locked"))
    temp = incoming_file(**uids)
    assert store(handler, temp) == (0xA700, "instance could not be stored")
    assert not final_path(handler, uids).exists() and not temp.exists()
    assert row_of(handler.sink.store, uids["sop"]) is None
    handler.metrics.instance_failed.assert_called_once_with("dicom-in", "store")


def test_a_failed_flush_refuses_the_instance_yet_indexes_it(handler, incoming_file, uids, monkeypatch):
    """sync fails: 0xA700 "instance could not be archived", yet the row is committed; a resend repairs the file."""
    archive, store_ = handler.archive, handler.sink.store
    with monkeypatch.context() as m:
        m.setattr(archive, "sync", mock.Mock(side_effect=OSError(5, "I/O error")))
        temp = incoming_file(**uids)
        data = temp.read_bytes()
        assert store(handler, temp) == (0xA700, "instance could not be archived")
    handler.metrics.instance_failed.assert_called_once_with("dicom-in", "archive")
    assert final_path(handler, uids).read_bytes() == data
    assert_clean(archive, store_, uids["sop"])  # the row is there and names the file
    zero(final_path(handler, uids))  # what a crash after the failed flush may leave
    (resent := archive.incoming / "resent.dcm").write_bytes(data)
    assert store(handler, resent) == (0x0000, "")  # replaced
    assert_clean(archive, store_, uids["sop"])
