"""In-memory test connectors: a ``memory`` source fed by ``inject`` and a ``memory`` destination that records."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from twisted.internet import defer

from engine.components import BuildContext, DeliveryError, DeliveryInfo, Sink
from engine.config.models import ComponentConfig


class MemorySourceConfig(ComponentConfig):
    """A source fed by test code."""

    type: Literal["memory"] = "memory"
    name: str = Field("", description="free label to tell memory sources apart in tests")


class MemorySource:
    """Source fed by ``inject()``; for tests and examples."""

    def __init__(self, config: MemorySourceConfig, ctx: BuildContext) -> None:
        self.name = config.name
        self.channel = ctx.channel
        self.sink: Sink | None = None
        self.running = False

    def start(self, sink: Sink) -> None:
        """Remember the sink that ``inject`` feeds."""
        self.sink = sink
        self.running = True

    def stop(self) -> None:
        """Stop accepting injected messages."""
        self.running = False

    def inject(self, raw: bytes | str, origin: str = "memory") -> defer.Deferred:
        """Ingest *raw* (str is UTF-8 encoded) through the sink; fires with an IngestResult."""
        if self.sink is None or not self.running:
            return defer.fail(RuntimeError(f"memory source of channel {self.channel!r} is not running"))
        data = raw.encode("utf-8") if isinstance(raw, str) else raw
        return self.sink.ingest(data, origin)


class MemoryDestinationConfig(ComponentConfig):
    """A destination that records what it is sent."""

    type: Literal["memory"] = "memory"
    fail_times: int = Field(0, ge=0, description="the first N sends fail with a DeliveryError")
    response: str | None = Field(None, description="text every successful send answers with")


class MemoryDestination:
    """Destination recording every delivered payload in ``received`` (and its ids in ``infos``)."""

    def __init__(self, config: MemoryDestinationConfig, ctx: BuildContext) -> None:
        self.fail_times = config.fail_times
        self.response = config.response
        self.channel = ctx.channel
        self.component = ctx.component
        self.received: list[str] = []
        self.infos: list[DeliveryInfo] = []
        self.attempts = 0
        self.failures = 0
        self.running = False

    def start(self) -> None:
        """Mark the destination running."""
        self.running = True

    def stop(self) -> None:
        """Mark the destination stopped."""
        self.running = False

    def send(self, content: str, info: DeliveryInfo) -> defer.Deferred:
        """Record *content* and answer ``response``; the first ``fail_times`` calls errback instead."""
        self.attempts += 1
        if self.failures < self.fail_times:
            self.failures += 1
            return defer.fail(DeliveryError(f"memory destination failure {self.failures}/{self.fail_times}"))
        self.received.append(content)
        self.infos.append(info)
        return defer.succeed(self.response)


def register(registry: Any) -> None:
    """Register the ``memory`` source and destination types."""
    registry.add("source", "memory", MemorySourceConfig, MemorySource)
    registry.add("destination", "memory", MemoryDestinationConfig, MemoryDestination)
