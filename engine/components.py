"""What connectors promise the engine, and what the engine hands them (``ctx``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

if TYPE_CHECKING:
    from engine.metrics import Metrics
    from engine.store.store import Store


@dataclass(slots=True)
class IngestResult:
    """What a source gets back for one inbound message."""

    code: str
    ack: bytes | None = None
    message_id: int | None = None
    reason: str = ""


Reply = Callable[[IngestResult], None]
#: ``done(ok, value)``: a delivery's outcome (``value`` is the response text, or the exception).
Done = Callable[[bool, Any], None]


class Sink(Protocol):
    """The channel side a source feeds (a ChannelService)."""

    def ingest(self, raw: bytes, origin: str) -> Deferred:
        """Store, process and answer one message; fires with an :class:`IngestResult`."""

    def ingest_cb(self, raw: bytes, origin: str, reply: Reply) -> None:
        """:meth:`ingest` without a Deferred: ``reply(result)`` when answered (the hot path)."""

    def reject(self, raw: bytes, origin: str, reason: str) -> Deferred:
        """Record input that could not even be framed (e.g. oversize); fires with an AR result."""


class Source(Protocol):
    """A source connector: starts listening/polling and feeds a sink."""

    def start(self, sink: Sink) -> Deferred | None:
        """Start (bind, poll); a Deferred may signal readiness."""

    def stop(self) -> Deferred | None:
        """Stop accepting input."""


class DeliveryError(Exception):
    """A delivery attempt failed; ``response`` is the peer's answer if any.

    ``final`` means trying again cannot help (the destination refused the content itself, e.g.
    the RIS rejecting an illegal order transition): the queue sets the delivery to ERROR at once.
    """

    def __init__(self, reason: str, response: str | None = None, code: str = "", *, final: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response
        self.code = code
        self.final = final


@dataclass(slots=True)
class DeliveryInfo:
    """Ids of the delivery being sent (never PHI)."""

    delivery_id: int
    message_id: int
    attempt: int


class Destination(Protocol):
    """A destination connector: sends one payload at a time."""

    def start(self) -> Deferred | None:
        """Prepare (connections are opened lazily)."""

    def stop(self) -> Deferred | None:
        """Close connections."""

    def send(self, content: str, info: DeliveryInfo) -> Deferred:
        """Deliver *content*; fires with the response text (or None), errbacks with DeliveryError.

        A connector may also offer ``send_cb(content, info, done)`` calling ``done(ok, value)``
        (no Deferred per message); the queue prefers it when present.
        """


@dataclass
class BuildContext:
    """Everything a component needs; no module-level singletons."""

    reactor: Any
    channel: str
    component: str
    config_dir: Path
    data_dir: Path
    metrics: Metrics | None = None
    store: Store | None = None
    services: dict[str, Any] = field(default_factory=dict)
    jinja_env: Any = None
    dry_run: bool = False
    archive: Any = None  # the archive service (archive.Archive) when the archive package is installed
    ris: Any = None  # the RIS service (ris_core.service.RisService) when ris_core is installed
