"""The archive destination: HL7 text to a file under hl7_layout, an hl7_archive row, done only after COMMIT."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from twisted.internet import defer

from archive.destination import ArchiveDestination, ArchiveDestinationConfig, control_id
from archive.schema import hl7_archive
from engine.components import BuildContext, DeliveryError, DeliveryInfo
from tests.engine.conftest import flush

MSG = "MSH|^~\\&|RIS|HOSP|PACS|RAD|20240305143000||ORU^R01|CTRL42|P|2.3.1\rPID|1||P1\r"
WHEN = datetime(2026, 12, 1, 10, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def dest(make_archive, sqlite_store, clock, tmp_path):
    """An archive destination on channel ``oru-in`` writing inline."""
    archive = make_archive()
    ctx = BuildContext(clock, "oru-in", "archive", tmp_path, tmp_path, store=sqlite_store, archive=archive)
    d = ArchiveDestination(ArchiveDestinationConfig(), ctx)
    d.run_blocking = lambda f, *a: defer.maybeDeferred(f, *a)
    d.now = lambda: WHEN
    d.start()
    yield d
    d.stop()


def send(dest, clock, store, content=MSG, message_id=7):
    """Send one delivery; (ok, value) once the writer committed."""
    results = []
    dest.send_cb(
        content, DeliveryInfo(delivery_id=1, message_id=message_id, attempt=1), lambda ok, v: results.append((ok, v))
    )
    assert results == [], "done must wait for the commit"
    flush(store, clock)
    return results[0]


def test_a_message_is_archived_with_its_row(dest, clock, sqlite_store):
    """The text goes to hl7/channel/YYYY/MM/DD/id.hl7 and one row records size, checksum and MSH-10."""
    assert send(dest, clock, sqlite_store) == (True, None)
    path = dest.archive.root / "hl7/oru-in/2026/12/01/7.hl7"
    assert path.read_bytes() == MSG.encode()
    row = sqlite_store.read_sync(lambda c: c.execute(select(hl7_archive)).one())
    assert (row.path, row.message_id, row.control_id, row.channel) == (
        "hl7/oru-in/2026/12/01/7.hl7",
        7,
        "CTRL42",
        "oru-in",
    )
    assert (row.size, row.sha256) == (len(MSG), hashlib.sha256(MSG.encode()).hexdigest())


def test_a_redelivery_updates_the_same_row(dest, clock, sqlite_store):
    """Delivering the same message twice (at-least-once) leaves one file and one row."""
    send(dest, clock, sqlite_store)
    send(dest, clock, sqlite_store, MSG.replace("PID|1", "PID|2"))
    rows = sqlite_store.read_sync(lambda c: c.execute(select(hl7_archive)).all())
    assert len(rows) == 1 and rows[0].sha256 == hashlib.sha256(MSG.replace("PID|1", "PID|2").encode()).hexdigest()


def test_unencodable_content_fails_the_delivery(make_archive, sqlite_store, clock, tmp_path):
    """Text the configured codec cannot encode is a DeliveryError, and nothing is written."""
    ctx = BuildContext(clock, "c", "a", tmp_path, tmp_path, store=sqlite_store, archive=make_archive())
    d = ArchiveDestination(ArchiveDestinationConfig(encoding="ascii"), ctx)
    d.run_blocking = lambda f, *a: defer.maybeDeferred(f, *a)
    results = []
    d.send_cb("MSH|^~\\&|é", DeliveryInfo(1, 1, 1), lambda ok, v: results.append((ok, v)))
    assert results[0][0] is False and isinstance(results[0][1], DeliveryError)
    assert not (ctx.archive.root / "hl7").exists()


def test_a_write_failure_is_a_delivery_error(dest, clock, sqlite_store, monkeypatch):
    """A file that cannot be written fails the attempt (the queue retries) and records no row."""
    from archive import files

    def boom(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "write_atomic", boom)
    results = []
    dest.send_cb(MSG, DeliveryInfo(1, 7, 1), lambda ok, v: results.append((ok, v)))
    ok, err = results[0]
    assert ok is False and "No space" in err.reason
    assert sqlite_store.read_sync(lambda c: c.execute(select(hl7_archive)).all()) == []


def test_send_returns_a_deferred(dest, clock, sqlite_store):
    """send() fires with None after the commit."""
    d = dest.send(MSG, DeliveryInfo(1, 9, 1))
    flush(sqlite_store, clock)
    assert d.called and d.result is None


def test_control_id():
    """MSH-10 is read from HL7 text; other content has none."""
    assert control_id(MSG) == "CTRL42"
    assert control_id('{"event": "x"}') is None


def test_the_destination_needs_the_archive(tmp_path, clock):
    """Without the archive service the destination cannot be built."""
    with pytest.raises(RuntimeError):
        ArchiveDestination(ArchiveDestinationConfig(), BuildContext(clock, "c", "a", tmp_path, tmp_path))


def test_rows_on_every_database(make_archive, any_store, clock, tmp_path):
    """The hl7_archive insert-or-update works on SQLite and PostgreSQL alike."""
    archive = make_archive(store=any_store)
    ctx = BuildContext(clock, "oru-in", "archive", tmp_path, tmp_path, store=any_store, archive=archive)
    d = ArchiveDestination(ArchiveDestinationConfig(), ctx)
    d.run_blocking = lambda f, *a: defer.maybeDeferred(f, *a)
    assert send(d, clock, any_store) == (True, None)
    assert send(d, clock, any_store) == (True, None)
    assert len(any_store.read_sync(lambda c: c.execute(select(hl7_archive)).all())) == 1
