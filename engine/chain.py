"""Channels feeding channels: the ``channel`` destination, and the ``internal`` source.

The ``channel`` destination hands a message to another channel of the same engine, durably.
A channel with an ``internal`` source listens to nothing: only other channels (``channel``
destinations) and engine services (the RIS's order status, reports and charges) feed it.
"""

from __future__ import annotations

from typing import Any, Literal

from twisted.internet import defer

from engine.components import BuildContext, DeliveryError, DeliveryInfo
from engine.config.models import ComponentConfig


class ChannelDestinationConfig(ComponentConfig):
    """Chain to another channel by name."""

    type: Literal["channel"] = "channel"
    channel: str


class ChannelDestination:
    """Delivers by ingesting into the target channel; done once the target has committed it."""

    def __init__(self, config: ChannelDestinationConfig, ctx: BuildContext) -> None:
        self.target = config.channel
        self.source_channel = ctx.channel
        self.services: dict[str, Any] = ctx.services

    def start(self) -> None:
        """Nothing to open."""

    def stop(self) -> None:
        """Nothing to close."""

    def send(self, content: str, info: DeliveryInfo) -> defer.Deferred:
        """Ingest *content* into the target channel; AA/CA counts as delivered."""
        service = self.services.get(self.target)
        if service is None or not service.running:
            return defer.fail(DeliveryError(f"channel {self.target!r} is not running"))
        d = service.ingest(
            content.encode("utf-8"), f"channel:{self.source_channel}", text=content, parent_id=info.message_id
        )

        def check(result: Any) -> str | None:
            ack = result.ack.decode("utf-8", "replace") if result.ack else None
            if result.code not in ("AA", "CA"):
                raise DeliveryError(f"channel {self.target} answered {result.code}: {result.reason}", ack, result.code)
            return ack

        return d.addCallback(check)


class InternalSourceConfig(ComponentConfig):
    """No listener: the channel is fed by other channels and engine services."""

    type: Literal["internal"] = "internal"


class InternalSource:
    """The source of a channel only the engine itself feeds."""

    def __init__(self, config: InternalSourceConfig, ctx: BuildContext) -> None:
        self.channel = ctx.channel

    def start(self, sink: Any) -> None:
        """Nothing to bind."""

    def stop(self) -> None:
        """Nothing to close."""


def register(registry: Any) -> None:
    """Register the ``channel`` destination and the ``internal`` source."""
    registry.add("destination", "channel", ChannelDestinationConfig, ChannelDestination, offline=True)
    registry.add("source", "internal", InternalSourceConfig, InternalSource, offline=True)
