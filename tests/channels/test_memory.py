"""Tests for the in-memory test connectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from channels.memory import (
    MemoryDestination,
    MemoryDestinationConfig,
    MemorySource,
    MemorySourceConfig,
    register,
)
from engine.components import BuildContext, DeliveryError, DeliveryInfo, IngestResult
from engine.registry import Registry


class RecordingSink:
    """A sink recording ingests and answering AA."""

    def __init__(self) -> None:
        self.ingested: list[tuple[bytes, str]] = []

    def ingest(self, raw: bytes, origin: str) -> defer.Deferred:
        """Record the message and answer AA."""
        self.ingested.append((raw, origin))
        return defer.succeed(IngestResult("AA", b"ACK"))

    def reject(self, raw: bytes, origin: str, reason: str) -> defer.Deferred:
        """Answer AR."""
        return defer.succeed(IngestResult("AR", reason=reason))


def ctx(tmp_path: Path) -> BuildContext:
    """A build context on a Clock."""
    return BuildContext(reactor=Clock(), channel="ch", component="c", config_dir=tmp_path, data_dir=tmp_path)


def result_of(d: defer.Deferred) -> Any:
    """The result a fired Deferred holds (its Failure when it failed)."""
    results: list[Any] = []
    d.addBoth(results.append)
    return results[0]


def test_register_adds_both_kinds() -> None:
    """register adds a memory source and a memory destination."""
    reg = Registry()
    register(reg)
    assert reg.get("source", "memory").model is MemorySourceConfig
    assert reg.get("destination", "memory").build is MemoryDestination


def test_source_injects_into_sink(tmp_path: Path) -> None:
    """inject encodes str as UTF-8 and hands it to the sink with its origin."""
    source = MemorySource(MemorySourceConfig(name="in"), ctx(tmp_path))
    sink = RecordingSink()
    source.start(sink)
    result = result_of(source.inject("MSH|Ä", origin="test"))
    assert result.code == "AA"
    assert sink.ingested == [("MSH|Ä".encode(), "test")]
    source.inject(b"MSH|x")
    assert sink.ingested[-1] == (b"MSH|x", "memory")


def test_source_not_running_fails(tmp_path: Path) -> None:
    """inject before start or after stop errbacks."""
    source = MemorySource(MemorySourceConfig(), ctx(tmp_path))
    assert result_of(source.inject(b"MSH|x")).check(RuntimeError)
    source.start(RecordingSink())
    source.stop()
    assert result_of(source.inject(b"MSH|x")).check(RuntimeError)


def test_destination_fails_first_n_then_records(tmp_path: Path) -> None:
    """The first fail_times sends errback DeliveryError; later ones are recorded and answer response."""
    dest = MemoryDestination(MemoryDestinationConfig(fail_times=2, response="ok"), ctx(tmp_path))
    info = DeliveryInfo(delivery_id=1, message_id=2, attempt=1)
    assert result_of(dest.send("a", info)).check(DeliveryError)
    assert result_of(dest.send("a", info)).check(DeliveryError)
    assert result_of(dest.send("a", info)) == "ok"
    assert dest.received == ["a"] and dest.infos == [info] and dest.attempts == 3
