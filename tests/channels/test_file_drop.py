"""Tests for the ``file_drop`` source: splitting, polling, moving files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from channels.file.drop import FileDrop, FileDropConfig, split_messages
from engine.components import BuildContext, IngestResult
from engine.hl7.mllp import encode_frame

MSG1 = b"MSH|^~\\&|RIS|H|PACS|H|20240101||ORM^O01|C1|P|2.5\rPID|1||123\rORC|NW\r"
MSG2 = b"MSH|^~\\&|RIS|H|PACS|H|20240101||ORM^O01|C2|P|2.5\rPID|1||456\r"
MSG3 = b"MSH|^~\\&|RIS|H|PACS|H|20240101||ORM^O01|C3|P|2.5\rPID|1||789\r"


class FakeSink:
    """A sink recording calls; answers codes from a list and can fail or hold ingests."""

    def __init__(self, codes: list[str] | None = None, fail_at: int | None = None) -> None:
        self.codes = list(codes or [])
        self.fail_at = fail_at
        self.ingested: list[tuple[bytes, str]] = []
        self.rejected: list[tuple[bytes, str, str]] = []
        self.hold: defer.Deferred | None = None

    def ingest(self, raw: bytes, origin: str) -> defer.Deferred:
        """Record one message and answer the next code (AA by default)."""
        self.ingested.append((raw, origin))
        if self.fail_at is not None and len(self.ingested) == self.fail_at:
            return defer.fail(RuntimeError("store is down"))
        code = self.codes.pop(0) if self.codes else "AA"
        if self.hold is not None:
            return self.hold.addCallback(lambda _: IngestResult(code, b"ACK"))
        return defer.succeed(IngestResult(code, b"ACK"))

    def reject(self, raw: bytes, origin: str, reason: str) -> defer.Deferred:
        """Record a rejection and answer AR."""
        self.rejected.append((raw, origin, reason))
        return defer.succeed(IngestResult("AR", None, reason=reason))


def make_drop(tmp_path: Path, **options: object) -> tuple[FileDrop, Clock]:
    """A FileDrop on an ``in`` folder under *tmp_path*, driven by a Clock."""
    (tmp_path / "in").mkdir(exist_ok=True)
    clock = Clock()
    ctx = BuildContext(reactor=clock, channel="ch", component="source", config_dir=tmp_path, data_dir=tmp_path)
    return FileDrop(FileDropConfig(path="in", **options), ctx), clock


def put(folder: Path, name: str, data: bytes, age: float = 10.0) -> None:
    """Write a file whose modification time lies *age* seconds in the past."""
    path = folder / name
    path.write_bytes(data)
    then = time.time() - age
    os.utime(path, (then, then))


@pytest.mark.parametrize(
    "data",
    [
        MSG1,
        b"\xef\xbb\xbf" + MSG1.replace(b"\r", b"\r\n") + b"\r\n\r\n",
        b"FHS|^~\\&|X\nBHS|^~\\&|X\n" + MSG1.replace(b"\r", b"\n") + b"BTS|1\nFTS|1\n",
    ],
    ids=["plain", "crlf-bom", "lf-envelope"],
)
def test_split_single_message(data: bytes) -> None:
    """One message in CR, CRLF (with BOM) or LF-with-batch-envelope form yields it CR-separated."""
    assert split_messages(data) == [MSG1]


def test_split_mllp_frames() -> None:
    """MLLP-framed content yields one message per frame."""
    data = encode_frame(MSG1) + b"\n" + encode_frame(MSG2.rstrip(b"\r"))
    assert split_messages(data) == [MSG1, MSG2]


def test_single_message_moves_to_done(tmp_path: Path) -> None:
    """A one-message file is ingested with a file origin and moved to done/."""
    drop, _ = make_drop(tmp_path)
    put(tmp_path / "in", "a.hl7", MSG1)
    sink = FakeSink()
    drop.start(sink)
    assert sink.ingested == [(MSG1, "file:a.hl7#1")]
    assert (tmp_path / "in" / "done" / "a.hl7").read_bytes() == MSG1
    assert not (tmp_path / "in" / "a.hl7").exists()


def test_batch_file_ingested_in_order(tmp_path: Path) -> None:
    """A batch file with three messages gives three ingests in order before the file moves."""
    drop, _ = make_drop(tmp_path)
    body = b"".join(m.replace(b"\r", b"\n") for m in (MSG1, MSG2, MSG3))
    put(tmp_path / "in", "batch.hl7", b"FHS|^~\\&\nBHS|^~\\&\n" + body + b"BTS|3\nFTS|1\n")
    sink = FakeSink()
    drop.start(sink)
    assert [origin for _, origin in sink.ingested] == [f"file:batch.hl7#{i}" for i in (1, 2, 3)]
    assert [raw for raw, _ in sink.ingested] == [MSG1, MSG2, MSG3]
    assert (tmp_path / "in" / "done" / "batch.hl7").exists()


def test_mllp_framed_file(tmp_path: Path) -> None:
    """An MLLP-framed file is deframed and moved to done/."""
    drop, _ = make_drop(tmp_path)
    put(tmp_path / "in", "f.hl7", encode_frame(MSG1) + encode_frame(MSG2))
    sink = FakeSink()
    drop.start(sink)
    assert [raw for raw, _ in sink.ingested] == [MSG1, MSG2]
    assert (tmp_path / "in" / "done" / "f.hl7").exists()


def test_rejected_message_moves_to_error(tmp_path: Path) -> None:
    """A file where one message is answered AE is still fully ingested, then moved to error/."""
    drop, _ = make_drop(tmp_path)
    put(tmp_path / "in", "b.hl7", MSG1 + MSG2)
    sink = FakeSink(codes=["AE", "AA"])
    drop.start(sink)
    assert len(sink.ingested) == 2
    assert (tmp_path / "in" / "error" / "b.hl7").exists()
    assert not (tmp_path / "in" / "done").exists()


def test_ingest_failure_leaves_file_and_retries(tmp_path: Path) -> None:
    """A failing ingest leaves the file in place and stops the poll; the next poll retries it."""
    drop, clock = make_drop(tmp_path)
    put(tmp_path / "in", "a.hl7", MSG1 + MSG2, age=20)
    put(tmp_path / "in", "b.hl7", MSG3, age=10)
    sink = FakeSink(fail_at=2)
    drop.start(sink)
    assert [origin for _, origin in sink.ingested] == ["file:a.hl7#1", "file:a.hl7#2"]
    assert (tmp_path / "in" / "a.hl7").exists() and (tmp_path / "in" / "b.hl7").exists()
    clock.advance(1.0)
    assert [origin for _, origin in sink.ingested[2:]] == ["file:a.hl7#1", "file:a.hl7#2", "file:b.hl7#1"]
    assert sorted(os.listdir(tmp_path / "in" / "done")) == ["a.hl7", "b.hl7"]


@pytest.mark.parametrize("data", [b"", b"\n\n", b"hello world\nnot hl7\n", b"MSHX|bad\r"])
def test_no_message_is_rejected(tmp_path: Path, data: bytes) -> None:
    """A file without any HL7 message (empty, blank, garbage) is rejected through the sink and moved to error/."""
    assert split_messages(data) == []
    drop, _ = make_drop(tmp_path)
    put(tmp_path / "in", "x.hl7", data)
    sink = FakeSink()
    drop.start(sink)
    assert sink.ingested == []
    assert sink.rejected == [(data, "file:x.hl7", "no HL7 message found in file")]
    assert (tmp_path / "in" / "error" / "x.hl7").exists()


def test_young_file_skipped_until_old_enough(tmp_path: Path) -> None:
    """A file modified within min_age is skipped until it is old enough."""
    drop, clock = make_drop(tmp_path, min_age="5s")
    put(tmp_path / "in", "new.hl7", MSG1, age=0)
    sink = FakeSink()
    drop.now = lambda: time.time()
    drop.start(sink)
    assert sink.ingested == []
    drop.now = lambda: time.time() + 10
    clock.advance(1.0)
    assert len(sink.ingested) == 1


def test_oldest_first_pattern_and_dotfiles(tmp_path: Path) -> None:
    """Files are taken oldest first; dot-files and names not matching the pattern are ignored."""
    drop, _ = make_drop(tmp_path)
    put(tmp_path / "in", "late.hl7", MSG2, age=10)
    put(tmp_path / "in", "early.hl7", MSG1, age=30)
    put(tmp_path / "in", ".hidden.hl7", MSG3)
    put(tmp_path / "in", "other.txt", MSG3)
    sink = FakeSink()
    drop.start(sink)
    assert [origin for _, origin in sink.ingested] == ["file:early.hl7#1", "file:late.hl7#1"]
    assert (tmp_path / "in" / ".hidden.hl7").exists() and (tmp_path / "in" / "other.txt").exists()


def test_name_collision_gets_suffix(tmp_path: Path) -> None:
    """A file whose name is already in done/ is moved there with a .1, then .2 suffix."""
    drop, clock = make_drop(tmp_path)
    sink = FakeSink()
    drop.start(sink)
    for _ in range(3):
        put(tmp_path / "in", "a.hl7", MSG1)
        clock.advance(1.0)
    assert sorted(os.listdir(tmp_path / "in" / "done")) == ["a.hl7", "a.hl7.1", "a.hl7.2"]


def test_custom_dirs_relative_to_config_dir(tmp_path: Path) -> None:
    """done_dir and error_dir are resolved against the config folder."""
    drop, _ = make_drop(tmp_path, done_dir="archive/ok", error_dir="archive/bad")
    put(tmp_path / "in", "a.hl7", MSG1)
    put(tmp_path / "in", "b.hl7", b"nothing")
    drop.start(FakeSink())
    assert (tmp_path / "archive" / "ok" / "a.hl7").exists()
    assert (tmp_path / "archive" / "bad" / "b.hl7").exists()


def test_stop_waits_for_file_in_progress(tmp_path: Path) -> None:
    """stop() fires only after the file being ingested is finished, and no further file is started."""
    drop, clock = make_drop(tmp_path)
    put(tmp_path / "in", "a.hl7", MSG1, age=20)
    put(tmp_path / "in", "b.hl7", MSG2, age=10)
    sink = FakeSink()
    sink.hold = held = defer.Deferred()
    drop.start(sink)
    stopped = drop.stop()
    assert not stopped.called
    held.callback(None)
    assert stopped.called
    assert [origin for _, origin in sink.ingested] == ["file:a.hl7#1"]
    assert (tmp_path / "in" / "done" / "a.hl7").exists() and (tmp_path / "in" / "b.hl7").exists()
    clock.advance(5.0)
    assert len(sink.ingested) == 1


def test_missing_folder_does_not_break_loop(tmp_path: Path) -> None:
    """A missing folder (create_dirs off) is logged and polling continues until it appears."""
    drop, clock = make_drop(tmp_path, create_dirs=False)
    (tmp_path / "in").rmdir()
    sink = FakeSink()
    drop.start(sink)
    (tmp_path / "in").mkdir()
    put(tmp_path / "in", "a.hl7", MSG1)
    clock.advance(1.0)
    assert len(sink.ingested) == 1


def test_missing_folder_is_created_by_default(tmp_path: Path) -> None:
    """With the default create_dirs, start() creates the polled folder."""
    drop, _clock = make_drop(tmp_path)
    (tmp_path / "in").rmdir()
    drop.start(FakeSink())
    assert (tmp_path / "in").is_dir()
    drop.stop()


def test_failed_move_is_retried_without_reingest(tmp_path: Path) -> None:
    """When the move fails, the next poll retries only the move, not the ingest."""
    drop, clock = make_drop(tmp_path)
    (tmp_path / "in" / "done").write_text("not a folder")
    put(tmp_path / "in", "a.hl7", MSG1)
    sink = FakeSink()
    drop.start(sink)
    assert (tmp_path / "in" / "a.hl7").exists()
    (tmp_path / "in" / "done").unlink()
    clock.advance(1.0)
    assert len(sink.ingested) == 1
    assert (tmp_path / "in" / "done" / "a.hl7").exists()


def test_poll_interval_must_be_positive() -> None:
    """A zero poll interval is a config error."""
    with pytest.raises(ValueError):
        FileDropConfig(path="in", poll_interval=0)
