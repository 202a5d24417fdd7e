"""Tests for the ``file_writer`` destination."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from twisted.internet import defer
from twisted.internet.task import Clock

from channels.file.writer import FileWriter, FileWriterConfig, render_filename, sanitize_filename
from engine.components import BuildContext, DeliveryError, DeliveryInfo
from engine.fileio import write_atomic

CONTENT = "MSH|^~\\&|RIS|H|EHR|H|20240101||ORU^R01|C1|P|2.5\rPID|1||123\rOBX|1|TX|||Ä\r"
INFO = DeliveryInfo(delivery_id=7, message_id=42, attempt=1)
NOW = datetime(2024, 3, 5, 14, 7, 9, 123456)


def make_writer(tmp_path: Path, **options: Any) -> FileWriter:
    """A FileWriter writing under *tmp_path*/out whose thread hand-off runs synchronously."""
    config = FileWriterConfig(directory="out", **options)
    ctx = BuildContext(reactor=Clock(), channel="ch", component="files", config_dir=tmp_path, data_dir=tmp_path)
    writer = FileWriter(config, ctx)
    writer._defer_to_thread = lambda f, *args: defer.maybeDeferred(f, *args)
    writer.now = lambda: NOW
    return writer


def result_of(d: defer.Deferred) -> Any:
    """The result a fired Deferred holds (its Failure when it failed)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    return results[0]


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    """write_atomic creates the file, overwrites an existing one and leaves no temp file behind."""
    target = tmp_path / "a.hl7"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["a.hl7"]


def test_write_atomic_failure_cleans_up(tmp_path: Path) -> None:
    """A failed write raises and removes its temp file."""
    (tmp_path / "a.hl7").mkdir()
    with pytest.raises(OSError):
        write_atomic(tmp_path / "a.hl7", b"data")
    assert os.listdir(tmp_path) == ["a.hl7"]


def test_write_atomic_creates_dirs(tmp_path: Path) -> None:
    """With create_dirs the missing parent folders are created."""
    write_atomic(tmp_path / "x" / "y" / "a.hl7", b"data", create_dirs=True)
    assert (tmp_path / "x" / "y" / "a.hl7").read_bytes() == b"data"


def test_render_filename_placeholders() -> None:
    """Every placeholder is substituted from the delivery ids and the time."""
    name = render_filename("{date}/{message_id}_{delivery_id}_{timestamp}.hl7", INFO, NOW)
    assert name == "20240305_42_7_20240305140709123456.hl7"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("../../etc/passwd", ".._.._etc_passwd"), ("a\\b", "a_b"), ("..", "__"), (".", "_"), ("a\0b", "a_b")],
)
def test_sanitize_filename(raw: str, clean: str) -> None:
    """Path separators become _ and names made only of dots are defused."""
    assert sanitize_filename(raw) == clean


def test_unknown_placeholder_rejected() -> None:
    """An unknown placeholder in the filename template is a config validation error."""
    with pytest.raises(ValidationError, match="unknown placeholder {patient}"):
        FileWriterConfig(directory="out", filename="{patient}.hl7")


def test_unknown_encoding_rejected() -> None:
    """An unknown encoding is a config validation error."""
    with pytest.raises(ValidationError, match="unknown encoding"):
        FileWriterConfig(directory="out", encoding="no-such-codec")


def test_send_writes_default_name(tmp_path: Path) -> None:
    """send writes the content with CR separators under the default name and fires with None."""
    writer = make_writer(tmp_path)
    assert result_of(writer.send(CONTENT, INFO)) is None
    assert (tmp_path / "out" / "42-7.hl7").read_bytes() == CONTENT.encode("utf-8")


def test_send_crlf_and_encoding(tmp_path: Path) -> None:
    """The crlf separator and a configured encoding are applied to the written bytes."""
    writer = make_writer(tmp_path, segment_separator="crlf", encoding="latin-1", filename="{message_id}.txt")
    result_of(writer.send(CONTENT, INFO))
    data = (tmp_path / "out" / "42.txt").read_bytes()
    assert data == CONTENT.replace("\r", "\r\n").encode("latin-1")
    assert b"\r\n\n" not in data and data.count(b"\r\n") == 3


def test_send_traversal_sanitised(tmp_path: Path) -> None:
    """A template containing path separators writes inside the directory, never above it."""
    writer = make_writer(tmp_path, filename="../{message_id}.hl7")
    result_of(writer.send(CONTENT, INFO))
    assert (tmp_path / "out" / ".._42.hl7").exists()
    assert not (tmp_path / "42.hl7").exists()


def test_send_redelivery_overwrites(tmp_path: Path) -> None:
    """A redelivery of the same delivery overwrites the earlier file."""
    writer = make_writer(tmp_path)
    result_of(writer.send("old", INFO))
    result_of(writer.send(CONTENT, DeliveryInfo(7, 42, 2)))
    assert os.listdir(tmp_path / "out") == ["42-7.hl7"]
    assert (tmp_path / "out" / "42-7.hl7").read_bytes() == CONTENT.encode("utf-8")


def test_send_failure_is_delivery_error(tmp_path: Path) -> None:
    """A write failure errbacks with a DeliveryError naming the file."""
    writer = make_writer(tmp_path, create_dirs=False)
    failure = result_of(writer.send(CONTENT, INFO))
    assert failure.check(DeliveryError)
    assert "42-7.hl7" in failure.value.reason


def test_send_unencodable_is_delivery_error(tmp_path: Path) -> None:
    """Content the encoding cannot represent errbacks with a DeliveryError."""
    writer = make_writer(tmp_path, encoding="ascii")
    failure = result_of(writer.send(CONTENT, INFO))
    assert failure.check(DeliveryError)
    assert not (tmp_path / "out").exists()


def test_default_thread_handoff_uses_reactor_pool(tmp_path: Path) -> None:
    """Without a test override, the write runs through deferToThreadPool on the reactor's pool."""

    class PoolReactor:
        """A reactor stand-in whose thread pool runs work inline."""

        def getThreadPool(self) -> Any:
            """A pool whose callInThreadWithCallback runs at once."""
            return self

        def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            """Run *f* now and report its outcome."""
            on_result(True, f(*args, **kwargs))

        def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
            """Run *f* now."""
            f(*args, **kwargs)

    ctx = BuildContext(reactor=PoolReactor(), channel="ch", component="f", config_dir=tmp_path, data_dir=tmp_path)
    writer = FileWriter(FileWriterConfig(directory="out"), ctx)
    assert result_of(writer.send(CONTENT, INFO)) is None
    assert (tmp_path / "out" / "42-7.hl7").exists()
